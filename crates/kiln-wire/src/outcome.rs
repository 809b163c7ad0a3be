//! What came of running a job: the final status and the measurements, as the runner reports it
//! and results publish it. What only the host's own parts use travels beside it
//! (`report::Finished`).

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;

/// The final status of a submission. Each maps onto one Judge0 status id and one Piston status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    WrongAnswer,
    CompileError,
    RuntimeError,
    Signaled,
    TimeLimitExceeded,
    MemoryLimitExceeded,
    OutputLimitExceeded,
    Rejected,
    InternalError,
}

impl Status {
    /// The wire name, as in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::WrongAnswer => "wrong_answer",
            Status::CompileError => "compile_error",
            Status::RuntimeError => "runtime_error",
            Status::Signaled => "signaled",
            Status::TimeLimitExceeded => "time_limit_exceeded",
            Status::MemoryLimitExceeded => "memory_limit_exceeded",
            Status::OutputLimitExceeded => "output_limit_exceeded",
            Status::Rejected => "rejected",
            Status::InternalError => "internal_error",
        }
    }

    /// Judge0's status id for this status (signal decides among its runtime-error ids).
    pub fn judge0_id(self, signal: Option<i32>) -> u8 {
        match self {
            Status::Accepted => 3,
            Status::WrongAnswer => 4,
            Status::TimeLimitExceeded => 5,
            Status::CompileError => 6,
            Status::Signaled => match signal {
                Some(libc::SIGSEGV) => 7,
                Some(libc::SIGXFSZ) => 8,
                Some(libc::SIGFPE) => 9,
                Some(libc::SIGABRT) => 10,
                _ => 12,
            },
            Status::RuntimeError => 11,
            Status::MemoryLimitExceeded | Status::OutputLimitExceeded => 12,
            Status::Rejected | Status::InternalError => 13,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runner's report on one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub compile_output: Bytes,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    /// Why the status is what it is, in words, when that is not obvious (which limit, which step).
    pub message: Option<String>,
    /// The program's process was forked from a resident interpreter (the fork server) instead
    /// of exec'd. Not part of the API's result; counted in the metrics.
    #[serde(default)]
    pub forked: bool,
    /// A test-case set's runs, in test order (empty for a submission without `tests`).
    #[serde(default)]
    pub tests: Vec<TestOutcome>,
}

/// One test's run in a test-case set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestOutcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    pub message: Option<String>,
}

impl TestOutcome {
    pub fn of(o: &Outcome) -> TestOutcome {
        TestOutcome {
            status: o.status,
            exit_code: o.exit_code,
            signal: o.signal,
            stdout: o.stdout.clone(),
            stderr: o.stderr.clone(),
            cpu_time_ms: o.cpu_time_ms,
            wall_time_ms: o.wall_time_ms,
            memory_bytes: o.memory_bytes,
            message: o.message.clone(),
        }
    }
}

/// An outcome as bincode held it before `tests` (journals and results topics of that time).
#[derive(Deserialize, Serialize)]
pub struct FirstOutcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub compile_output: Bytes,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub memory_bytes: u64,
    pub message: Option<String>,
    pub forked: bool,
}

impl From<FirstOutcome> for Outcome {
    fn from(f: FirstOutcome) -> Outcome {
        Outcome {
            status: f.status,
            exit_code: f.exit_code,
            signal: f.signal,
            stdout: f.stdout,
            stderr: f.stderr,
            compile_output: f.compile_output,
            cpu_time_ms: f.cpu_time_ms,
            wall_time_ms: f.wall_time_ms,
            memory_bytes: f.memory_bytes,
            message: f.message,
            forked: f.forked,
            tests: Vec::new(),
        }
    }
}

impl Outcome {
    /// An outcome for a job that never ran its program.
    pub fn failed(status: Status, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            exit_code: None,
            signal: None,
            stdout: Bytes::default(),
            stderr: Bytes::default(),
            compile_output: Bytes::default(),
            cpu_time_ms: 0,
            wall_time_ms: 0,
            memory_bytes: 0,
            message: Some(message.into()),
            forked: false,
            tests: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_judge0_ids() {
        assert_eq!(Status::Accepted.judge0_id(None), 3);
        assert_eq!(Status::WrongAnswer.judge0_id(None), 4);
        assert_eq!(Status::TimeLimitExceeded.judge0_id(None), 5);
        assert_eq!(Status::CompileError.judge0_id(None), 6);
        assert_eq!(Status::Signaled.judge0_id(Some(libc::SIGSEGV)), 7);
        assert_eq!(Status::Signaled.judge0_id(Some(libc::SIGXFSZ)), 8);
        assert_eq!(Status::Signaled.judge0_id(Some(libc::SIGFPE)), 9);
        assert_eq!(Status::Signaled.judge0_id(Some(libc::SIGABRT)), 10);
        assert_eq!(Status::RuntimeError.judge0_id(None), 11);
        assert_eq!(Status::InternalError.judge0_id(None), 13);
    }

    #[test]
    fn statuses_serialize_as_their_wire_names() {
        let json = serde_json::to_string(&Status::OutputLimitExceeded).unwrap();
        assert_eq!(json, "\"output_limit_exceeded\"");
        assert_eq!(
            Status::OutputLimitExceeded.as_str(),
            "output_limit_exceeded"
        );
    }
}
