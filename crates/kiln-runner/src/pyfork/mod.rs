//! The Python fork server: one CPython per host that has done its start-up once (about 8 ms of
//! CPU, most of a `print(1)` job) and forks a process for each run instead.
//!
//! Kiln starts `python3 -B main.py` (the exact command a run would exec) in a mount namespace
//! laid out like a pod's (launch.rs), with PYTHONUSERBASE pointing at a directory of that root
//! holding `usercustomize.py` (next to this file) and this library as `_kiln_pyfork.so`.
//! `site` imports usercustomize last thing before the script would run; it imports
//! `_kiln_pyfork`, whose init function (`PyInit__kiln_pyfork`, server.rs) is the server's loop and
//! never returns in the server. For each request, sent by a pod's runner on a connection Kiln
//! opened for that pod:
//!
//! - the server forks a child into the pod's pid namespace; it enters the pod's mount, UTS, IPC
//!   and network namespaces and forks again: once its parent has exited, that process is a
//!   child of the pod's pid 1 (the runner), as a local zygote is;
//! - that process is the program's process, a zygote like the runner's own (zygote.rs): it
//!   moves itself into the pod's cgroup, says ready with its pid, waits for the command, and
//!   locks itself down with the same code (`lock_down`: stdio, rlimits, capabilities, uid,
//!   landlock, seccomp). Then, instead of exec'ing, it closes every other descriptor and returns
//!   from the init function by raising ImportError; usercustomize removes its traces and the
//!   interpreter runs the pod's /work/main.py as the command it was started with would.
//! - when the program ends, the interpreter's teardown is replaced by the part of it a program
//!   can observe (finish.rs): the server's start-up state is not freed page by page.

mod finish;
mod launch;
mod python;
mod server;

use std::os::fd::RawFd;

pub use kiln_wire::setup::{ForkedCommand, ServerSetup};

pub use launch::launch_server;
pub use server::PyInit__kiln_pyfork;

/// The listening socket's descriptor in the server.
pub const LISTEN_FD: RawFd = 3;
/// The descriptor a pod's runner finds its fork-server connection on.
pub const POD_CONNECTION_FD: RawFd = 3;
/// What the server prints on stdout once it waits for requests.
pub const READY_LINE: &str = "kiln fork server ready";
