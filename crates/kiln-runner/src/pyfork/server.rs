//! The server's loop and the processes it forks, inside the interpreter's process.

use std::ffi::{c_void, CStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use super::python::Python;
use super::{LISTEN_FD, READY_LINE};
use crate::zygote::{await_command, fail, lock_down, prelock, report, ChildEnds};
use kiln_sandbox::fdpass::recv_with_fds;
use kiln_sandbox::seccomp::SyscallFilter;
use kiln_sandbox::setup::WORK_DIR;

/// The message an ImportError carries back to usercustomize.py in a program's process.
const PROGRAM_MARK: &CStr = c"kiln: program process";
/// A request: the pod's namespaces, its cgroup.procs handles, then these pipes.
const PIPES: usize = 5;

/// The server's loop, entered when usercustomize.py imports `_kiln_pyfork`. Returns only in a
/// program's process, with ImportError("kiln: program process") set.
///
/// # Safety
/// Called by CPython's import machinery, with the GIL held, in a single-threaded interpreter.
#[no_mangle]
pub unsafe extern "C" fn PyInit__kiln_pyfork() -> *mut c_void {
    let python = match Python::find() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kiln fork server: this interpreter lacks the C API it needs: {e}");
            libc::_exit(3)
        }
    };
    let own_argv: Vec<String> = std::fs::read("/proc/self/cmdline")
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let pid_ns = match std::fs::File::open("/proc/self/ns/pid") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            eprintln!("kiln fork server: opening its own pid namespace: {e}");
            libc::_exit(3)
        }
    };
    // Built once here rather than in every program's process.
    let server = Server {
        pid_ns,
        filter: SyscallFilter::new(false),
        python,
        argv: own_argv,
    };
    super::finish::prepare();
    let ready = format!("{READY_LINE}\n");
    libc::write(1, ready.as_ptr().cast(), ready.len());
    serve(&server);
    // In the program's process now, where every descriptor is already closed.
    let Server { python, pid_ns, .. } = server;
    std::mem::forget(pid_ns);
    python.raise_import_error(PROGRAM_MARK);
    std::ptr::null_mut()
}

/// What every fork of the server shares.
struct Server {
    python: Python,
    /// The server's own pid namespace, to return to after forking into a pod's.
    pid_ns: OwnedFd,
    /// The server's own command line, which must be the program's.
    argv: Vec<String>,
    /// The seccomp filter of a job without network (its processes serve no other).
    filter: Result<SyscallFilter, kiln_sandbox::seccomp::FilterTooLong>,
}

/// Accepts connections from Kiln and serves one request on each. Returns in a program's
/// process only.
unsafe fn serve(server: &Server) {
    let euid = libc::geteuid();
    let parent = libc::getppid();
    let mut pending: Vec<OwnedFd> = Vec::new();
    loop {
        let mut status = 0;
        while libc::waitpid(-1, &mut status, libc::WNOHANG) > 0 {}
        // Kiln is gone (even by kill -9): so is the server.
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        let mut fds: Vec<libc::pollfd> = std::iter::once(LISTEN_FD)
            .chain(pending.iter().map(|c| c.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if libc::poll(fds.as_mut_ptr(), fds.len() as _, 1000) < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            libc::_exit(1);
        }
        if fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            libc::_exit(0);
        }
        let ready: Vec<bool> = fds[1..].iter().map(|p| p.revents != 0).collect();
        let mut keep = Vec::with_capacity(pending.len());
        let mut served = Vec::new();
        for (conn, ready) in pending.drain(..).zip(ready) {
            if ready {
                served.push(conn);
            } else {
                keep.push(conn);
            }
        }
        pending = keep;
        if fds[0].revents & libc::POLLIN != 0 {
            let c = libc::accept4(
                LISTEN_FD,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            );
            if c >= 0 {
                let conn = OwnedFd::from_raw_fd(c);
                // Only Kiln (the same user as this server) may ask for a process.
                if peer_uid(&conn) == Some(euid) {
                    pending.push(conn);
                }
            }
        }
        let mut served = served.into_iter();
        while let Some(conn) = served.next() {
            let Ok(Some((header, fds))) = recv_with_fds(conn.as_raw_fd()) else {
                continue;
            };
            if fork_for(server, &pending, conn, &header, fds) {
                // The program's process has closed every descriptor already.
                std::mem::forget(pending);
                served.for_each(std::mem::forget);
                return;
            }
        }
    }
}

/// Forks a process into the pod for one request. True in the program's process, false in the
/// server.
unsafe fn fork_for(
    server: &Server,
    pending: &[OwnedFd],
    conn: OwnedFd,
    header: &[u8],
    fds: Vec<OwnedFd>,
) -> bool {
    let [n_ns, n_cg] = header else { return false };
    let (n_ns, n_cg) = (*n_ns as usize, *n_cg as usize);
    if fds.len() != n_ns + n_cg + PIPES {
        return false;
    }
    let mut fds = fds.into_iter();
    let namespaces: Vec<OwnedFd> = fds.by_ref().take(n_ns).collect();
    let procs: Vec<OwnedFd> = fds.by_ref().take(n_cg).collect();
    let child = ChildEnds::from_array(fds.collect::<Vec<_>>().try_into().expect("counted above"));
    let status = &child.status;
    // The pod's pid namespace comes last. Entering it affects only the children the server forks
    // from now on, and the server goes back to its own at once: the child is born in the pod.
    let Some((pid_ns, others)) = namespaces.split_last() else {
        return false;
    };
    if libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
        report(
            status,
            "entering the pod's pid namespace",
            &io::Error::last_os_error(),
        );
        return false;
    }
    let python = &server.python;
    (python.before_fork)();
    let pid = libc::fork();
    if pid != 0 {
        if libc::setns(server.pid_ns.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
            // Its next child would land in this pod: better no server than that.
            libc::_exit(1);
        }
        (python.after_fork_parent)();
        // That child only forks the program's process and exits: reaping it at once keeps its
        // zombie from holding up the pod's end (a pid namespace ends when all of it is reaped).
        if pid > 0 {
            let _ = crate::execute::wait4(pid);
        }
        return false; // the server: drops its copies of the request's descriptors
    }
    // The first process in the pod: nothing of the server's is needed here. It joins the pod's
    // other namespaces and forks the program's process, then exits: orphaned in the pod's pid
    // namespace, the program's process is adopted by the pod's pid 1, the runner, which can
    // then wait for it like for its own zygote (and the program sees a parent, as when exec'd).
    libc::close(LISTEN_FD);
    for c in pending {
        libc::close(c.as_raw_fd());
    }
    drop(conn);
    for ns in others {
        if libc::setns(ns.as_raw_fd(), 0) != 0 {
            fail(
                status,
                "entering the pod's namespaces",
                &io::Error::last_os_error(),
            );
        }
    }
    drop(namespaces);
    match libc::fork() {
        -1 => fail(status, "forking into the pod", &io::Error::last_os_error()),
        0 => {}
        _ => libc::_exit(0),
    }
    // Until the runner has adopted it, the process is nobody's to wait for.
    for _ in 0..100_000 {
        if libc::getppid() == 1 {
            break;
        }
        libc::usleep(50);
    }
    (python.after_fork_child)();
    program(server, procs, child);
    true
}

/// The program's process, in the pod's namespaces: the zygote's life (zygote.rs), ending in the
/// interpreter instead of an exec.
unsafe fn program(server: &Server, procs: Vec<OwnedFd>, child: ChildEnds) {
    let ChildEnds {
        control,
        status,
        stdio,
    } = child;
    // Locked down for a job without network while it waits (the runner sends a job with
    // network to a process of its own).
    match &server.filter {
        Ok(filter) => {
            if let Err(e) = prelock(filter, Some(Path::new(WORK_DIR))) {
                fail(&status, "locking down", &e);
            }
        }
        Err(e) => fail(&status, "building the seccomp filter", e),
    }
    let spec = await_command(&procs, &status, control, true);
    drop(procs);
    if spec.network {
        let e = "the process was locked down for a job without network";
        fail(&status, "checking the command", &e);
    }
    let own_argv = &server.argv;
    if &spec.argv != own_argv {
        fail(
            &status,
            "checking the command",
            &format!("the fork server runs {own_argv:?}, not {:?}", spec.argv),
        );
    }
    super::finish::install();
    if let Err(e) = lock_down(&spec, &stdio, Some(Path::new(WORK_DIR))) {
        fail(&status, "locking down the program's process", &e);
    }
    // Nothing but stdio may reach the program. Closing the status pipe tells the runner the
    // program started, as an exec would.
    for fd in stdio {
        let _ = fd.into_raw_fd();
    }
    let _ = status.into_raw_fd();
    kiln_sandbox::close_from(3, false);
}

fn peer_uid(conn: &OwnedFd) -> Option<u32> {
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}
