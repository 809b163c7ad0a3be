//! The pod seam: where jobs run. A `PodBackend` makes standby pods ahead of time; a `StandbyPod`
//! runs exactly one job and is then destroyed. Local namespaces today, Kubernetes next to it.

pub mod cores;
pub mod fork_server;
pub mod local;
pub mod noop;

use std::future::Future;
use std::pin::Pin;

use crate::job::Job;
use crate::outcome::Outcome;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a pod could not be made or could not finish its job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PodError {
    /// Making the pod failed at a named step (which namespace, which mount, which cgroup file).
    #[error("creating a sandbox failed at step '{step}': {error}")]
    Create { step: String, error: String },
    /// The pod went away while it held a job (killed, crashed, timed out).
    #[error("the sandbox was lost during the job: {0}")]
    Lost(String),
}

/// Makes standby pods.
pub trait PodBackend: Send + Sync + 'static {
    fn create(&self) -> BoxFuture<'static, Result<Box<dyn StandbyPod>, PodError>>;
    /// Lines for the start-up report: which isolation layers are in force and which are weaker.
    fn describe(&self) -> Vec<String>;
    /// Kills every pod this backend made that is still alive and waits until they are gone
    /// (process exit: nothing may outlive Kiln).
    fn shutdown(&self);
}

/// A pod that is ready and waits for its one job.
pub trait StandbyPod: Send + 'static {
    fn id(&self) -> &str;
    /// A handle that kills the pod from elsewhere (the timeout watchdog).
    fn killer(&self) -> PodKiller;
    /// Runs the job and retires the pod.
    fn run(self: Box<Self>, job: Job) -> BoxFuture<'static, Result<Outcome, PodError>>;
    /// Retires the pod unused.
    fn destroy(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Kills one pod, whatever it is doing.
#[derive(Clone)]
pub struct PodKiller(std::sync::Arc<dyn Fn() + Send + Sync>);

impl PodKiller {
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> PodKiller {
        PodKiller(std::sync::Arc::new(f))
    }

    pub fn kill(&self) {
        (self.0)()
    }
}
