//! What came of running a job: the final status and the measurements, as the runner reports it.

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
    pub const ALL: [Status; 10] = [
        Status::Accepted,
        Status::WrongAnswer,
        Status::CompileError,
        Status::RuntimeError,
        Status::Signaled,
        Status::TimeLimitExceeded,
        Status::MemoryLimitExceeded,
        Status::OutputLimitExceeded,
        Status::Rejected,
        Status::InternalError,
    ];

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
        }
    }
}
