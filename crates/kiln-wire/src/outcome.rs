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

/// A failure that a reader of the outcome acts on: the compile cache keeps a compiler's own
/// refusal (the same on every run), Judge0 gives a program file the kernel would not execute
/// its own status. The runner writes it into [`Outcome::message`] and readers get it back with
/// [`Outcome::failure`], so the words and their reading are one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The compiler ran and exited with this code.
    CompilerExited(i32),
    /// The kernel refused to execute the program (or compiler) file: ENOEXEC.
    NotExecutable,
}

/// What ENOEXEC reads as (std's text for the errno), in a "could not start" message.
const NOT_EXECUTABLE: &str = "Exec format error";
const COMPILER_EXITED: &str = "compiler exited with code ";

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::CompilerExited(code) => write!(f, "{COMPILER_EXITED}{code}"),
            Failure::NotExecutable => write!(f, "{NOT_EXECUTABLE} (os error {})", libc::ENOEXEC),
        }
    }
}

impl Failure {
    /// `step` ("program", "compiler") could not start because of `error`: the message, which
    /// names ENOEXEC the way [`Outcome::failure`] reads it.
    pub fn could_not_start(step: &str, error: &std::io::Error) -> String {
        if error.raw_os_error() == Some(libc::ENOEXEC) {
            format!("{step} could not start: {}", Failure::NotExecutable)
        } else {
            format!("{step} could not start: {error}")
        }
    }

    fn of(message: &str) -> Option<Failure> {
        if let Some(code) = message.strip_prefix(COMPILER_EXITED) {
            return code.parse().ok().map(Failure::CompilerExited);
        }
        message
            .contains(NOT_EXECUTABLE)
            .then_some(Failure::NotExecutable)
    }
}

impl Outcome {
    /// The failure its message names, for the statuses that carry one (a compile error, an
    /// internal error).
    pub fn failure(&self) -> Option<Failure> {
        match self.status {
            Status::CompileError | Status::InternalError => {
                self.message.as_deref().and_then(Failure::of)
            }
            _ => None,
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

    #[test]
    fn a_failure_written_into_the_message_is_read_back_and_only_for_its_statuses() {
        let exited = Outcome::failed(Status::CompileError, Failure::CompilerExited(1).to_string());
        assert_eq!(
            exited.message.as_deref(),
            Some("compiler exited with code 1")
        );
        assert_eq!(exited.failure(), Some(Failure::CompilerExited(1)));
        let enoexec = std::io::Error::from_raw_os_error(libc::ENOEXEC);
        let message = Failure::could_not_start("program", &enoexec);
        assert_eq!(message, format!("program could not start: {enoexec}"));
        let refused = Outcome::failed(Status::InternalError, message);
        assert_eq!(refused.failure(), Some(Failure::NotExecutable));
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        let gone = Outcome::failed(
            Status::InternalError,
            Failure::could_not_start("program", &missing),
        );
        assert_eq!(gone.failure(), None);
        // A program's own words are not a failure of Kiln's.
        let said = Outcome::failed(Status::RuntimeError, "compiler exited with code 1");
        assert_eq!(said.failure(), None);
        let limit = Outcome::failed(Status::CompileError, "compilation exceeded its time limit");
        assert_eq!(limit.failure(), None);
    }
}
