//! In-process notifications of a submission's progress, for `?wait=true` and server-sent events.

use std::sync::Arc;

use crate::result::RunResult;

/// Something happened to submission `id`.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
}

#[derive(Clone, Debug)]
pub enum EventKind {
    /// A pod took it.
    Running,
    /// Its result is published (durably stored).
    Finished(Arc<RunResult>),
}

/// The bus: every API worker subscribes; the actors send.
pub type EventBus = tokio::sync::broadcast::Sender<Event>;

pub fn bus() -> EventBus {
    tokio::sync::broadcast::channel(65536).0
}
