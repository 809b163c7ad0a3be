//! Interactive sessions (Piston's `/api/v2/connect`): a job whose stdin is fed while it runs and
//! whose output is streamed as it is written, found by its submission id. The WebSocket opens a
//! session, then submits the job through the queue like any other; the local pod that gets the
//! job takes the session's ends and relays frames between them and its runner.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::Locked as _;

pub use kiln_wire::session::{Chunk, Input};

/// The pod's ends of a session.
pub struct PodEnds {
    pub inputs: UnboundedReceiver<Input>,
    pub outputs: UnboundedSender<Chunk>,
}

fn sessions() -> &'static Mutex<HashMap<String, PodEnds>> {
    static SESSIONS: OnceLock<Mutex<HashMap<String, PodEnds>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

/// Opens a session for submission `id`: the client's ends.
pub fn open(id: &str) -> (UnboundedSender<Input>, UnboundedReceiver<Chunk>) {
    let (input_tx, input_rx) = unbounded_channel();
    let (output_tx, output_rx) = unbounded_channel();
    sessions().locked().insert(
        id.to_string(),
        PodEnds {
            inputs: input_rx,
            outputs: output_tx,
        },
    );
    (input_tx, output_rx)
}

/// The pod's ends of `id`'s session, once (a rerun after a lost pod runs without them).
pub fn take(id: &str) -> Option<PodEnds> {
    sessions().locked().remove(id)
}

/// Forgets a session no pod took.
pub fn close(id: &str) {
    take(id);
}
