//! The pod seam: where jobs run. A `PodBackend` makes standby pods ahead of time; a `StandbyPod`
//! runs exactly one job and is then destroyed. Local namespaces on one machine, Kubernetes pods
//! across many; the actor tree is the same for both.

pub mod cores;
pub mod fork_server;
pub mod kubernetes;
pub mod local;

use crate::job::Job;
pub use kiln_wire::report::Finished;

pub use crate::BoxFuture;

/// Why a pod could not be made or could not finish its job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PodError {
    /// Making the pod failed at a named step (which namespace, which mount, which cgroup file).
    #[error("creating a sandbox failed at step '{step}': {error}")]
    Create { step: String, error: String },
    /// The pod went away while it held a job (killed, crashed, timed out).
    #[error("the sandbox was lost during the job: {0}")]
    Lost(Lost),
}

/// How a pod was lost while it held a job. The words say what happened; the kind is what
/// metrics count (`metric_label`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Lost {
    /// The connection to its runner broke or closed before the outcome (a pipe, an exec stream).
    #[error("{0}")]
    Connection(String),
    /// The runner answered with something other than its outcome.
    #[error("{0}")]
    Protocol(String),
    /// The pod was killed or deleted under the job (by the node, an operator, or a crash).
    #[error("{0}")]
    Gone(String),
    /// The timeout watchdog killed the pod.
    #[error("the watchdog deleted the pod")]
    Watchdog,
    /// Kiln's own part that ran the pod failed (a panic, a task that did not finish).
    #[error("{0}")]
    Internal(String),
}

impl Lost {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Lost::Connection(_) => "connection",
            Lost::Protocol(_) => "protocol",
            Lost::Gone(_) => "gone",
            Lost::Watchdog => "watchdog",
            Lost::Internal(_) => "internal",
        }
    }
}

impl PodError {
    /// The label `kiln_pod_failures_total` counts a pod that could not be made by: the step.
    pub fn metric_label(&self) -> &str {
        match self {
            PodError::Create { step, .. } => step,
            PodError::Lost(_) => "lost",
        }
    }
}

/// A set of alike pods: which languages they serve and how many pod runners hold them.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    /// Canonical language names this pool serves; `None` serves every language.
    pub languages: Option<Vec<String>>,
    /// Pod runners for this pool (`None`: the scheduler's `pool_size`).
    pub runners: Option<usize>,
}

impl Pool {
    pub fn serves(&self, language: &str) -> bool {
        self.languages
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == language))
    }
}

/// Makes standby pods.
pub trait PodBackend: Send + Sync + 'static {
    /// The pools this backend makes pods for; one pool serving every language unless configured.
    fn pools(&self) -> Vec<Pool> {
        vec![Pool {
            name: "default".into(),
            languages: None,
            runners: None,
        }]
    }
    /// A ready pod of pool `pool` (an index into `pools()`).
    fn create(&self, pool: usize) -> BoxFuture<'static, Result<Box<dyn StandbyPod>, PodError>>;
    /// The dispatcher's view of a pool's demand: jobs running on it and jobs waiting for it.
    /// Backends that size their pools by demand use it; the default ignores it.
    fn demand(&self, _pool: usize, _running: usize, _waiting: usize) {}
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
    /// Runs the job and retires the pod: its outcome, and what the runner sent beside it.
    fn run(self: Box<Self>, job: Job) -> BoxFuture<'static, Result<Finished, PodError>>;
    /// `run`, calling `started` when the job's program is about to start: the watchdog's clock
    /// starts then, not while a remote pod is still being claimed and reached.
    fn run_watched(
        self: Box<Self>,
        job: Job,
        started: Box<dyn FnOnce() + Send>,
    ) -> BoxFuture<'static, Result<Finished, PodError>> {
        started();
        self.run(job)
    }
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
