//! What a runner finds of the isolation around it, and what it adds for the program.
//!
//! In a Kubernetes pod the container runtime builds the boundary (seccomp profile, capabilities,
//! user, read-only root, the container's cgroup) and the runner can only add to it from inside.
//! `kiln-runner layers` prints this report as JSON; an exec'd runner writes it as the first line
//! of its stderr, which the host logs once per pool. Every field is read from the kernel
//! (`/proc/self/status`, `statvfs`, the container's own cgroup files), none is assumed.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where the container's own cgroup is seen from inside it (runc mounts it at the hierarchy's
/// root: per controller on cgroup v1, unified on v2).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layers {
    /// The runner's own uid and gid, as the runtime started it.
    pub uid: u32,
    pub gid: u32,
    /// Effective capabilities, as `/proc/self/status` prints them (hex).
    pub capabilities: String,
    /// no_new_privs was already set around the runner (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
    /// The seccomp mode around the runner: "disabled", "strict" or "filter" (a runtime profile).
    pub seccomp: String,
    /// `/` is mounted read-only.
    pub read_only_root: bool,
    /// The landlock ABI the kernel offers (0: none).
    pub landlock_abi: i32,
    /// The container's memory limit in bytes, read from its cgroup (None: unlimited or unseen).
    pub memory_limit_bytes: Option<u64>,
    /// The container's process limit, read from its cgroup (None: unlimited or unseen).
    pub pids_limit: Option<u64>,
    /// What the runner adds for each program here.
    pub in_force: Vec<String>,
    /// What it cannot add here, and what bounds the program instead.
    pub not_in_force: Vec<String>,
}

impl Layers {
    /// Reads the layers around this process now.
    pub fn here() -> Layers {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        let seccomp = match field("Seccomp:").as_str() {
            "0" => "disabled",
            "1" => "strict",
            "2" => "filter",
            _ => "unknown",
        };
        let root = unsafe { libc::geteuid() } == 0;
        let landlock_abi = kiln_sandbox::landlock::abi_version();
        let mut in_force = vec!["rlimits (cpu, file size, open files, stack, no core)".to_string()];
        in_force.push("no_new_privs".into());
        in_force.push("seccomp filter of Kiln's own".into());
        let mut not_in_force = vec![
            "a cgroup of its own, RLIMIT_AS and RLIMIT_NPROC: the container's memory limit and the node's pod pids limit bound the program".to_string(),
        ];
        if landlock_abi > 0 {
            in_force.push(format!("landlock (ABI {landlock_abi})"));
        } else {
            not_in_force.push("landlock (the kernel has none)".into());
        }
        if root {
            in_force.push("uid 65534 for the program".into());
        } else {
            not_in_force.push("a uid switch (already not root: the pod's runAsUser)".into());
        }
        if std::process::id() != 1 {
            not_in_force.push(
                "a pid namespace of its own (the pod's is shared with its standby process)".into(),
            );
        }
        Layers {
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            capabilities: field("CapEff:"),
            no_new_privs: field("NoNewPrivs:") == "1",
            seccomp: seccomp.into(),
            read_only_root: read_only(Path::new("/")),
            landlock_abi,
            memory_limit_bytes: container_memory_limit(),
            pids_limit: container_pids_limit(),
            in_force,
            not_in_force,
        }
    }

    /// The report on one line, for logs.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn read_only(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
}

/// The first of `files` (under the cgroup root) that exists, as text.
fn cgroup_file(files: &[&str]) -> Option<String> {
    files
        .iter()
        .find_map(|f| std::fs::read_to_string(Path::new(CGROUP_ROOT).join(f)).ok())
}

/// A cgroup limit: a number, or None for "max" and for v1's "no limit" (a page-rounded i64::MAX).
fn limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n < (1u64 << 62))
}

/// The container's memory limit (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`).
pub fn container_memory_limit() -> Option<u64> {
    cgroup_file(&["memory.max", "memory/memory.limit_in_bytes"]).and_then(|t| limit(&t))
}

fn container_pids_limit() -> Option<u64> {
    cgroup_file(&["pids.max", "pids/pids.max"]).and_then(|t| limit(&t))
}

/// How many times the container's OOM killer has killed a process in it (v2 `memory.events`, v1
/// `memory.oom_control`); None when the container's cgroup is not visible.
pub fn container_oom_kills() -> Option<u64> {
    let text = cgroup_file(&["memory.events", "memory/memory.oom_control"])?;
    text.lines().find_map(|l| {
        l.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_numbers_and_unlimited_as_none() {
        assert_eq!(limit("536870912\n"), Some(536870912));
        assert_eq!(limit("max\n"), None);
        assert_eq!(limit("9223372036854771712\n"), None);
    }

    #[test]
    fn the_report_describes_this_process() {
        let here = Layers::here();
        assert_eq!(here.uid, unsafe { libc::getuid() });
        assert!(!here.capabilities.is_empty(), "{here:?}");
        let back: Layers = serde_json::from_str(&here.line()).unwrap();
        assert_eq!(back, here);
    }
}
