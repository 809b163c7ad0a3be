//! The isolation layers a local pod is built from: namespaces and the pod filesystem (`setup`,
//! with the allow-listed `/etc` of `etc`), cgroups v1 and v2 (`cgroup`), the system-call filter
//! (`seccomp`) and landlock (`landlock`).

pub mod affinity;
pub mod cgroup;
pub mod etc;
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

/// Closes every descriptor from `first` on, or, with `on_exec`, marks them close-on-exec (so
/// that a failed exec can still report on one of them).
pub fn close_from(first: u32, on_exec: bool) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let flags = if on_exec { CLOSE_RANGE_CLOEXEC } else { 0 };
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) } == 0 {
        return;
    }
    // Kernels before 5.9 (5.11 for the flag).
    for fd in first..4096 {
        unsafe {
            if on_exec {
                libc::fcntl(fd as i32, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd as i32);
            }
        }
    }
}
