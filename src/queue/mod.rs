//! The queue seam: where submissions wait and where results leave. Embedded (journaled
//! in-process) or Kafka (partitions, a consumer group, transactions).

pub mod embedded;
pub mod kafka;
pub mod kafka_intake;
pub mod offsets;
pub mod result_files;

use crate::result::RunResult;
use crate::BoxFuture;

pub use crate::submission::Envelope;

/// One taken submission; the queue knows it by `token` until it is completed.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    pub token: u64,
    /// Runs so far, including the one about to start.
    pub attempt: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("the queue's store failed: {0}")]
    Store(String),
    /// The disk under the store is (nearly) full: nothing more can be accepted until space
    /// returns. The message names the directory and the free space.
    #[error("{0}")]
    NoSpace(String),
    #[error("the queue is shut down")]
    Closed,
    /// A call into the queue panicked (caught, so the actor that made it lives on).
    #[error("{0} panicked")]
    Panicked(&'static str),
}

/// What the scheduler needs from a queue.
pub trait Queue: Send + Sync + 'static {
    /// Up to `max` submissions that are ready, without waiting (may be none).
    fn take(&self, max: usize) -> BoxFuture<'static, Result<Vec<Delivery>, QueueError>>;
    /// Publishes results and acknowledges their submissions, atomically: afterwards they are
    /// never delivered again, and a result already published for an id is kept, not replaced.
    fn complete(
        &self,
        done: Vec<(Delivery, RunResult)>,
    ) -> BoxFuture<'static, Result<(), QueueError>>;
    /// Submissions accepted and not yet completed.
    fn depth(&self) -> usize;
    /// Why the queue cannot do its work now (a full disk, brokers that do not answer), for
    /// `/readyz`; `None` while it can.
    fn trouble(&self) -> Option<String> {
        None
    }
    /// Asks to be called when new work becomes ready (Kafka's consumer thread calls it); a
    /// queue fed only through the API, which wakes the consumer itself, may ignore it.
    fn on_ready(&self, _wake: Box<dyn Fn() + Send + Sync>) {}
}

/// How submitting one envelope went.
#[derive(Debug)]
pub enum Submitted {
    Accepted,
    /// The id was submitted before: this is where it stands.
    Existing(SubmissionState),
}

/// What the HTTP API needs: where it puts submissions and where it finds how they stand. The
/// embedded queue is both ends itself; in Kafka mode the API produces to the submissions topic
/// and reads the results topic (kafka_intake.rs).
pub trait Intake: Send + Sync + 'static {
    /// Accepts new submissions durably; ids known already answer where they stand.
    fn submit(&self, envelopes: Vec<Envelope>)
        -> BoxFuture<'_, Result<Vec<Submitted>, QueueError>>;
    /// Where a submission stands; `None` for an id this intake does not know.
    fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError>;
    /// Accepted and not yet finished, as far as this intake knows.
    fn depth(&self) -> usize;
    /// Bytes those carry.
    fn queued_bytes(&self) -> usize;
    /// Refuses `adding` more bytes while the disk under the intake's store is nearly full.
    fn check_space(&self, adding: u64) -> Result<(), QueueError>;
    /// Why the intake cannot take submissions now; `None` while it can.
    fn failure(&self) -> Option<QueueError>;
    /// The bound on kept results, for messages about evicted ones.
    fn max_results_bytes(&self) -> u64;
    /// What to tell a client asking for an id this intake does not know.
    fn not_found(&self, id: &str) -> String {
        format!("no submission with id {id:?}")
    }
}

/// Where a submission stands, for GET and events.
#[derive(Clone, Debug)]
pub enum SubmissionState {
    Queued,
    Running,
    Done(Box<RunResult>),
    /// Its result was dropped, oldest first, to keep the results store under its bound in bytes
    /// (`max_results_bytes`), at this time (milliseconds since the epoch).
    Evicted {
        at_ms: u64,
    },
}
