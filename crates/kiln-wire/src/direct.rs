//! The direct path into a Kubernetes runner pod: a scheduler hands the pod its one job over the
//! pod network instead of exec through the API server and the kubelet.
//!
//! The runner (`kiln-runner standby` with [`TOKEN_ENV`] set) listens on [`PORT`] (or
//! [`PORT_ENV`]). A connection's first frame is a [`Hello`] carrying the pod's token, which the
//! scheduler that made the pod put in its spec: schedulers read it from the pod object; runner
//! pods have no service-account token, so no other pod can. The runner answers with an
//! [`Answer`]; once `Ready`, the next frame is the `Job` and the runner's reply the frames of a
//! `Finished` (timing, then the outcome), as on the exec path. A runner runs one job, the first
//! to come, whichever scheduler sends it: a later greeting is answered `Taken`, a later job
//! `SetupFailed` at [`TAKEN_STEP`] (it never ran), so a scheduler may send its job as it claims
//! the pod rather than after. A wrong token is refused and the refusal written to the runner's
//! standard error (the pod's log). A connection that closes before its job leaves the pod
//! waiting for the next.

use serde::{Deserialize, Serialize};

/// The runner's port unless [`PORT_ENV`] says otherwise.
pub const PORT: u16 = 7070;
/// The pod's token, in the runner container's environment.
pub const TOKEN_ENV: &str = "KILN_RUNNER_TOKEN";
pub const PORT_ENV: &str = "KILN_RUNNER_PORT";

/// A connection's first frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub token: String,
}

/// The runner's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Send the job.
    Ready,
    /// Not from this connection: the reason (a wrong token).
    Refused(String),
    /// The pod has taken a job already (the first to come): send yours to another pod.
    Taken,
}

/// The step a runner names in `RunnerReport::SetupFailed` for a job it did not run because
/// another connection's job came first: the job never started, and another pod may take it.
pub const TAKEN_STEP: &str = "take the job";

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};

    #[test]
    fn tokens_match_only_whole_and_the_greeting_travels_as_frames() {
        assert!(same_token("a1b2", "a1b2"));
        assert!(!same_token("a1b2", "a1b3"));
        assert!(!same_token("a1b2", "a1b"));
        assert!(!same_token("", "x"));
        let frame = encode(&Hello { token: "t".into() }).unwrap();
        let hello: Hello = decode(&frame[4..]).unwrap();
        assert_eq!(hello.token, "t");
        let answer = Answer::Refused("wrong credential".into());
        let frame = encode(&answer).unwrap();
        assert_eq!(decode::<Answer>(&frame[4..]).unwrap(), answer);
    }
}
