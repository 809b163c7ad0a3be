//! The scheduler: a supervisor tree of actix actors. A submission is taken from the queue by the
//! `QueueConsumer`, held in the `Dispatcher`'s ledger while a `PodRunner` (one per standby pod,
//! kept by the `PoolKeeper`) runs it, watched by the `TimeoutWatchdog`, and its result leaves
//! through the `ResultPublisher`. `ActorTree` starts and wires them.
//!
//! actix restarts a supervised actor only when it stops itself; a panic in a handler would kill it
//! for good. So every handler that does real work runs inside `guard`, which turns a panic into
//! `ctx.stop()`, and the supervisor restarts the actor.

pub mod dispatcher;
pub mod pod_runner;
pub mod pool_keeper;
pub mod queue_consumer;
pub mod result_publisher;
mod test_set;
pub mod timeout_watchdog;
pub mod tree;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::{Actor, ActorContext, Addr, Context};

use crate::events::EventBus;
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::pods::PodBackend;
use crate::queue::Queue;
use crate::submission::LimitPolicy;

/// What every actor of the tree reads: the services it calls and its settings.
pub struct TreeParts {
    pub queue: Arc<dyn Queue>,
    pub backend: Arc<dyn PodBackend>,
    /// The backend's pools, in its order (`PodBackend::create` takes an index into this).
    pub pools: Vec<crate::pods::Pool>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub events: EventBus,
    /// Where result callbacks may go.
    pub callbacks: Arc<crate::callback::Targets>,
    /// Compiled programs by the hash of what decides them; None when turned off.
    pub compile_cache: Option<Arc<crate::compile_cache::CompileCache>>,
    /// Standby pods ready now (for /readyz).
    pub standby: AtomicUsize,
    pub settings: TreeSettings,
}

/// The actor tree's settings, fixed when it starts.
#[derive(Clone, Debug)]
pub struct TreeSettings {
    /// Limits a submission may ask for, and what it gets when it asks for none.
    pub policy: LimitPolicy,
    /// Standby pods (pod runners) per pool unless the pool says otherwise.
    pub pool_size: usize,
    pub max_parallel_jobs: usize,
    /// Runs of one job before its result is `internal_error`.
    pub max_attempts: u32,
    pub watchdog_grace_ms: u64,
    /// Chaos testing: the chance that an actor panics in a handler.
    pub inject_panic_probability: f64,
}

impl TreeParts {
    /// Pod runners for pool `pool`.
    pub fn runners_in(&self, pool: usize) -> usize {
        self.pools[pool].runners.unwrap_or(self.settings.pool_size)
    }

    /// Pod runners in every pool together.
    pub fn total_runners(&self) -> usize {
        (0..self.pools.len()).map(|p| self.runners_in(p)).sum()
    }

    /// Counts a supervisor's restart of `actor` (`kiln_actor_restarts_total`).
    pub fn count_restart(&self, actor: &str) {
        self.metrics
            .actor_restarts
            .with_label_values(&[actor])
            .inc();
    }
}

/// The addresses of the scheduler's actors, handed to each once all are started.
#[derive(Clone)]
pub struct Peers {
    pub consumer: Addr<queue_consumer::QueueConsumer>,
    pub dispatcher: Addr<dispatcher::Dispatcher>,
    pub pool: Addr<pool_keeper::PoolKeeper>,
    pub watchdog: Addr<timeout_watchdog::TimeoutWatchdog>,
    pub publisher: Addr<result_publisher::ResultPublisher>,
}

/// Sent to every actor once all exist.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Connect(pub Peers);

/// A job's identity for one run: the same submission's second attempt is another key, so a late
/// report from a lost run is recognised and ignored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub id: String,
    pub attempt: u32,
    /// Which test of a test-case set this run is (None: the whole submission).
    pub test: Option<usize>,
}

/// Runs a handler body; a panic in it stops the actor so that its supervisor restarts it.
pub fn guard<A>(
    actor: &mut A,
    ctx: &mut Context<A>,
    name: &'static str,
    f: impl FnOnce(&mut A, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
{
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| f(actor, ctx))) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(actor = name, panic = %why, "actor panicked; stopping it so its supervisor restarts it");
        ctx.stop();
    }
}
