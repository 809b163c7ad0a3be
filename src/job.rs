//! The unit of work `kiln-runner` receives: a submission already resolved against the language
//! registry and the server's limits, so the runner never interprets a language itself.

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;

/// The limits one stage (compile or run) executes under. Every field is concrete: defaults and
/// server maxima were applied before the job left the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub wall_time_ms: u64,
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
    /// Processes and threads together (a pids cgroup counts both).
    pub processes: u32,
    /// Cap per stream (stdout and stderr each).
    pub output_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u32,
    pub network: bool,
    /// Cores' worth of CPU time the stage may use at once (a CFS quota on its cgroup), so that
    /// a program with many busy processes cannot slow the pods beside it.
    #[serde(default = "one_cpu")]
    pub cpus: u32,
}

fn one_cpu() -> u32 {
    1
}

/// One file of the submission, written into the work dir before anything runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFile {
    pub name: String,
    pub content: Bytes,
}

/// A command line with its own limits: the compile step or the run step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    pub argv: Vec<String>,
    pub limits: Limits,
}

/// Everything the runner needs to run one submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub language: String,
    pub files: Vec<JobFile>,
    pub compile: Option<Stage>,
    pub run: Stage,
    pub env: Vec<(String, String)>,
    pub stdin: Bytes,
    /// When set, an exit 0 whose stdout differs (ignoring trailing whitespace) is WrongAnswer.
    pub expected_output: Option<Bytes>,
    /// The program's stderr goes into stdout, interleaved as written.
    #[serde(default)]
    pub merge_stderr: bool,
}
