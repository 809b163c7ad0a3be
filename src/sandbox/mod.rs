//! The isolation layers a local pod is built from: namespaces and the pod filesystem (`setup`),
//! cgroups v1 and v2 (`cgroup`), the system-call filter (`seccomp`) and landlock (`landlock`).

pub mod cgroup;
pub mod fdpass;
pub mod landlock;
pub mod seccomp;
pub mod setup;

use std::os::fd::{FromRawFd, OwnedFd};

/// A pipe whose ends close on exec; whoever needs an end in a child dup2s it there.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
