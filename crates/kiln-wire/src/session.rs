//! What the host sends a runner during an interactive run, after the job frame.

use serde::{Deserialize, Serialize};

/// One input frame of an interactive run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Signal(i32),
}

/// Output as the program writes it: stream 1 is stdout, 2 stderr.
pub type Chunk = (u8, Vec<u8>);
