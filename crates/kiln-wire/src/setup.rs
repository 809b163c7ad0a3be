//! What the host tells a runner about the pod it is to build, before any job: mounts, cgroup,
//! identity, warm caches, and the fork server whose connection it holds; and what the fork
//! server itself is started with.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The directories of one pod's cgroup, as handed to the runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPaths {
    pub version: u8,
    /// v1: memory, pids, cpuacct, then cpu when it is a hierarchy of its own (in that order);
    /// v2: the one directory. (Pods are pinned to cores by affinity, not by a cpuset group.)
    pub dirs: Vec<PathBuf>,
}

/// What the host tells a new pod about itself, sent as the first frame on the runner's stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodSetup {
    pub cgroup: Option<CgroupPaths>,
    /// Size of the tmpfs that holds the work dir and /tmp.
    pub tmpfs_bytes: u64,
    /// Host paths made visible, read-only, at the same place (system dirs, toolchains, and the
    /// allow-listed entries of /etc).
    pub read_only: Vec<PathBuf>,
    /// Files and folders hidden behind empty ones even though their parent is visible.
    pub masked: Vec<PathBuf>,
    pub hostname: String,
    /// The unprivileged identity programs run as; `None` when the pod runs in a user namespace
    /// that maps only the invoking user.
    pub sandbox_user: Option<(u32, u32)>,
    /// Warm caches: (host directory, path inside the pod). The pod sees the host directory
    /// read-only with a writable layer of its own on top.
    pub overlays: Vec<(PathBuf, PathBuf)>,
    /// The command of the fork server whose connection the runner finds on fd 3, if any.
    pub fork_server: Option<ForkedCommand>,
    /// How many of the runner's own zygotes to fork while on standby: none when a forked
    /// process is coming and recent jobs were all served by such (a job that needs the
    /// runner's own then forks it, its cgroup move then on that job's path), two while recent
    /// jobs compiled (one per step).
    pub local_zygotes: u8,
}

/// The directory programs start in, inside the pod.
pub const WORK_DIR: &str = "/work";

/// The command a fork server runs, as the pod's runner needs to know it: a job is served by the
/// fork server when its run command is exactly `argv` (so no arguments for the program: the
/// process's /proc/self/cmdline could not show them), it has no compile step, and its
/// environment is `env`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ForkedCommand {
    pub fn serves(&self, job: &crate::job::Job) -> bool {
        job.compile.is_none()
            && !job.run.limits.network
            && job.run.argv == self.argv
            && job.env == self.env
    }
}

/// What `kiln-runner fork-server` needs to start the server.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerSetup {
    /// The mount layout of the server's namespace: a pod's.
    pub pod: PodSetup,
    pub command: ForkedCommand,
    /// `major.minor` of the interpreter, which names its user site directory.
    pub python_version: String,
    /// The runner's library (`libkiln_runner.so`, the fork server's native half), laid into
    /// the user site as `_kiln_pyfork.so`.
    pub library: std::path::PathBuf,
}
