//! Kiln runs untrusted programs in pre-warmed, isolated pods and returns one result each.
//!
//! Where things are: a submission enters through `api` (HTTP) or a `queue`; the actors in
//! `actors` hold it until a pod from `pods` runs it with `kiln-runner` (`runner`), and the
//! result leaves through the queue's results side.

// The contract, the sandbox and the runner are crates of their own (crates/); they keep their
// paths here.
pub use kiln_runner as runner;
pub use kiln_sandbox as sandbox;
pub use kiln_wire::{bytes, job, outcome};

pub mod actors;
pub mod api;
pub mod callback;
pub mod commands;
pub mod compile_cache;
pub mod config;
pub mod entry_point;
pub mod events;
pub mod judge0;
pub mod languages;
pub mod metrics;
pub mod pods;
pub mod queue;
pub mod result;
pub mod sessions;
pub mod submission;
pub mod warm;

/// A boxed future, as the two seams' traits (`pods::PodBackend`, `queue::Queue`) return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Kiln's one policy for a poisoned lock: take it over. Every panic in Kiln is caught where it
/// happens (an actor's handler restarts the actor, a spawned task's panic becomes its error) and
/// the rest goes on, so a lock is never left for dead; the code holding one keeps its data
/// consistent at every point where it could panic.
pub trait Locked<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> Locked<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// [`Locked`] for a read-write lock.
pub trait RwLocked<T> {
    fn read_locked(&self) -> std::sync::RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> std::sync::RwLockWriteGuard<'_, T>;
}

impl<T> RwLocked<T> for std::sync::RwLock<T> {
    fn read_locked(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_locked(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
