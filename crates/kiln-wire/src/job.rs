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
    /// A compile cache hit: what the compile step made, laid into the work dir instead of
    /// compiling (the compile step is skipped).
    #[serde(default)]
    pub prebuilt: Option<Artifact>,
    /// A compile cache miss: send back what the compile step made, for the cache.
    #[serde(default)]
    pub keep_artifact: bool,
    /// An interactive session (`crate::sessions`): the run's stdin stays open for input frames
    /// after the job frame, and its output is sent as it comes.
    #[serde(default)]
    pub interactive: bool,
    /// The language's warm cache (Go's standard library build), for a runner whose image carries
    /// it filled: where the job sees it. Local pods get it as an overlay from the host instead.
    #[serde(default)]
    pub warm_cache: Option<WarmUse>,
}

/// A warm cache a runner image carries: `/var/cache/kiln/warm/<dir>`, laid at `path` (the
/// language's cache variable, e.g. GOCACHE=/tmp/go-cache) with a writable layer per job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WarmUse {
    pub dir: String,
    pub path: String,
}

impl Job {
    /// The job has a compile step to run (it has one, and the compile cache did not answer it).
    pub fn compiles(&self) -> bool {
        self.compile.is_some() && self.prebuilt.is_none()
    }
}

/// What a compile step made: the files it added to (or changed in) the work dir, and the
/// compiler's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub files: Vec<JobFile>,
    pub compile_output: Bytes,
}

impl Artifact {
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| (f.name.len() + f.content.len()) as u64)
            .sum::<u64>()
            + self.compile_output.len() as u64
    }
}

/// `value` with every `/tmp` path in it (at its start, or after `=` or `:`, as in
/// `--nimcache:/tmp/nimcache`) moved under `tmp`: for runs without a private /tmp of their own.
pub fn move_tmp(value: &str, tmp: &std::path::Path) -> String {
    let tmp = tmp.display().to_string();
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut at_start = true;
    while !rest.is_empty() {
        if at_start && rest.starts_with("/tmp") {
            let after = &rest[4..];
            if after.is_empty() || after.starts_with('/') || after.starts_with(':') {
                out.push_str(&tmp);
                rest = after;
                at_start = false;
                continue;
            }
        }
        let c = rest.chars().next().expect("not empty");
        out.push(c);
        at_start = c == '=' || c == ':';
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod move_tmp_tests {
    use super::move_tmp;
    use std::path::Path;

    #[test]
    fn tmp_paths_move_and_others_stay() {
        let t = Path::new("/work/j/.tmp");
        assert_eq!(move_tmp("/tmp", t), "/work/j/.tmp");
        assert_eq!(move_tmp("/tmp/go-cache", t), "/work/j/.tmp/go-cache");
        assert_eq!(
            move_tmp("--nimcache:/tmp/nimcache", t),
            "--nimcache:/work/j/.tmp/nimcache"
        );
        assert_eq!(
            move_tmp("A=/tmp/x:/tmp/y", t),
            "A=/work/j/.tmp/x:/work/j/.tmp/y"
        );
        assert_eq!(move_tmp("/tmpfoo", t), "/tmpfoo");
        assert_eq!(move_tmp("/usr/tmp/x", t), "/usr/tmp/x");
    }
}
