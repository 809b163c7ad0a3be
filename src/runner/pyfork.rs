//! The Python fork server: one CPython per host that has done its start-up once (about 8 ms of
//! CPU, most of a `print(1)` job) and forks a process for each run instead.
//!
//! Kiln starts `python3 -B main.py` (the exact command a run would exec) in a mount namespace
//! laid out like a pod's, with PYTHONUSERBASE pointing at a private directory holding
//! `usercustomize.py` (usercustomize.py next to this file) and this library as `_kiln_pyfork.so`.
//! `site` imports usercustomize last thing before the script would run; it imports
//! `_kiln_pyfork`, whose init function (`PyInit__kiln_pyfork`, below) is the server's loop and
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

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::zygote::{lock_down, ExecSpec};
use crate::sandbox::seccomp::SyscallFilter;
use crate::sandbox::setup::PodSetup;

/// The listening socket's descriptor in the server.
pub const LISTEN_FD: RawFd = 3;
/// The descriptor a pod's runner finds its fork-server connection on.
pub const POD_CONNECTION_FD: RawFd = 3;
/// What the server prints on stdout once it waits for requests.
pub const READY_LINE: &str = "kiln fork server ready";
/// The message an ImportError carries back to usercustomize.py in a program's process.
const PROGRAM_MARK: &CStr = c"kiln: program process";
/// A request: the pod's namespaces, its cgroup.procs handles, then these pipes.
const PIPES: usize = 5;
const MAX_FDS: usize = 64;

/// The command a fork server runs, as the pod's runner needs to know it: a job is served by the
/// fork server when its run command starts with `argv` (the rest are the program's arguments),
/// it has no compile step, and its environment is `env`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ForkedCommand {
    pub fn serves(&self, argv: &[String], env: &[(String, String)], compiles: bool) -> bool {
        !compiles && argv.starts_with(&self.argv) && env == self.env.as_slice()
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
    /// Kiln's library (`libkiln.so`), laid into the user site as `_kiln_pyfork.so`.
    pub library: std::path::PathBuf,
}

/// PYTHONUSERBASE of the server: a directory of its own private root, seen by nothing else.
const USER_BASE: &str = "/.kiln-pyfork";

/// `kiln-runner fork-server`: reads a `ServerSetup` on stdin, enters a mount namespace laid out
/// like a pod's (the interpreter must resolve its paths as a program in a pod would) and execs
/// the interpreter with the listening socket on fd 3.
pub fn launch_server() -> i32 {
    let setup: ServerSetup = match super::protocol::read_frame(&mut io::stdin().lock()) {
        Ok(Some(s)) => s,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("kiln-runner fork-server: reading the setup: {e}");
            return 2;
        }
    };
    // Opened before the host's filesystem goes away (the library may live under /tmp, where
    // the pod's root is staged).
    let library = match std::fs::File::open(&setup.library) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "kiln-runner fork-server: opening {}: {e}",
                setup.library.display()
            );
            return 2;
        }
    };
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) } != 0 {
        eprintln!(
            "kiln-runner fork-server: unshare: {}",
            io::Error::last_os_error()
        );
        return 2;
    }
    if let Err(e) = crate::sandbox::setup::enter_pod(&setup.pod) {
        eprintln!("kiln-runner fork-server: {e}");
        return 2;
    }
    if let Err(e) = lay_out_user_site(&setup.python_version, library) {
        eprintln!("kiln-runner fork-server: preparing {USER_BASE}: {e}");
        return 2;
    }
    let cstrings = |v: Vec<String>| -> Result<Vec<CString>, std::ffi::NulError> {
        v.into_iter().map(CString::new).collect()
    };
    let mut env: Vec<String> = setup
        .command
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("PYTHONUSERBASE={USER_BASE}"));
    let (Ok(argv), Ok(env)) = (cstrings(setup.command.argv), cstrings(env)) else {
        eprintln!("kiln-runner fork-server: NUL byte in the command");
        return 2;
    };
    let Some(program) = argv.first() else {
        eprintln!("kiln-runner fork-server: empty command");
        return 2;
    };
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const c_char> = env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    unsafe {
        // The interpreter starts as a program in a pod would: default signals, nothing blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
    }
    eprintln!(
        "kiln-runner fork-server: exec {}: {}",
        program.to_string_lossy(),
        io::Error::last_os_error()
    );
    127
}

/// Writes usercustomize.py into the server's user site and links the library next to it,
/// through a descriptor the interpreter inherits (its file may be out of the root's sight).
fn lay_out_user_site(python_version: &str, library: std::fs::File) -> io::Result<()> {
    let site = std::path::Path::new(USER_BASE)
        .join("lib")
        .join(format!("python{python_version}"))
        .join("site-packages");
    std::fs::create_dir_all(&site)?;
    std::fs::write(
        site.join("usercustomize.py"),
        include_str!("usercustomize.py"),
    )?;
    let fd = library.into_raw_fd();
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::os::unix::fs::symlink(format!("/proc/self/fd/{fd}"), site.join("_kiln_pyfork.so"))
}

/// The CPython functions the server calls, found in the running interpreter.
struct Python {
    before_fork: unsafe extern "C" fn(),
    after_fork_parent: unsafe extern "C" fn(),
    after_fork_child: unsafe extern "C" fn(),
    set_string: unsafe extern "C" fn(*mut c_void, *const c_char),
    import_error: *mut *mut c_void,
    sys_get: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    decode: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    list_append: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    dec_ref: unsafe extern "C" fn(*mut c_void),
}

impl Python {
    fn find() -> Result<Python, String> {
        unsafe fn sym(name: &CStr) -> Result<*mut c_void, String> {
            let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
            if p.is_null() {
                Err(format!("{} not found", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        }
        unsafe {
            Ok(Python {
                before_fork: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_BeforeFork",
                )?),
                after_fork_parent: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_AfterFork_Parent",
                )?),
                after_fork_child: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_AfterFork_Child",
                )?),
                set_string: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *const c_char),
                >(sym(c"PyErr_SetString")?),
                import_error: sym(c"PyExc_ImportError")?.cast(),
                sys_get: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*const c_char) -> *mut c_void,
                >(sym(c"PySys_GetObject")?),
                decode: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*const c_char) -> *mut c_void,
                >(sym(c"PyUnicode_DecodeFSDefault")?),
                list_append: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
                >(sym(c"PyList_Append")?),
                dec_ref: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(
                    sym(c"Py_DecRef")?,
                ),
            })
        }
    }

    /// Appends the program's arguments to `sys.argv` and `sys.orig_argv`.
    unsafe fn append_args(&self, args: &[String]) {
        for list in [c"argv", c"orig_argv"] {
            let list = (self.sys_get)(list.as_ptr());
            if list.is_null() {
                continue;
            }
            for a in args {
                let Ok(c) = CString::new(a.as_bytes()) else {
                    continue;
                };
                let s = (self.decode)(c.as_ptr());
                if !s.is_null() {
                    (self.list_append)(list, s);
                    (self.dec_ref)(s);
                }
            }
        }
    }
}

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
        filters: [SyscallFilter::new(false), SyscallFilter::new(true)],
        python,
        argv: own_argv,
    };
    let ready = format!("{READY_LINE}\n");
    libc::write(1, ready.as_ptr().cast(), ready.len());
    let args = serve(&server);
    // In the program's process now, where every descriptor is already closed.
    let Server { python, pid_ns, .. } = server;
    std::mem::forget(pid_ns);
    python.append_args(&args);
    (python.set_string)(*python.import_error, PROGRAM_MARK.as_ptr());
    std::ptr::null_mut()
}

/// Accepts connections from Kiln and serves one request on each. Returns the program's
/// arguments, in a program's process only.
/// What every fork of the server shares.
struct Server {
    python: Python,
    /// The server's own pid namespace, to return to after forking into a pod's.
    pid_ns: OwnedFd,
    /// The server's own command line, which the program's command must start with.
    argv: Vec<String>,
    /// seccomp filters without and with network access.
    filters: [Result<SyscallFilter, String>; 2],
}

unsafe fn serve(server: &Server) -> Vec<String> {
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
            if let Some(args) = fork_for(server, &pending, conn, &header, fds) {
                // The program's process has closed every descriptor already.
                std::mem::forget(pending);
                served.for_each(std::mem::forget);
                return args;
            }
        }
    }
}

/// Forks a process into the pod for one request. Returns the program's arguments in the
/// program's process; `None` in the server.
unsafe fn fork_for(
    server: &Server,
    pending: &[OwnedFd],
    conn: OwnedFd,
    header: &[u8],
    fds: Vec<OwnedFd>,
) -> Option<Vec<String>> {
    let [n_ns, n_cg] = header else { return None };
    let (n_ns, n_cg) = (*n_ns as usize, *n_cg as usize);
    if fds.len() != n_ns + n_cg + PIPES {
        return None;
    }
    let mut fds = fds.into_iter();
    let namespaces: Vec<OwnedFd> = fds.by_ref().take(n_ns).collect();
    let procs: Vec<OwnedFd> = fds.by_ref().take(n_cg).collect();
    let [control, status, stdin, stdout, stderr]: [OwnedFd; PIPES] =
        fds.collect::<Vec<_>>().try_into().expect("counted above");
    // The pod's pid namespace comes last. Entering it affects only the children the server forks
    // from now on, and the server goes back to its own at once: the child is born in the pod.
    let (pid_ns, others) = namespaces.split_last()?;
    if libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) != 0 {
        report(
            &status,
            "entering the pod's pid namespace",
            &io::Error::last_os_error(),
        );
        return None;
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
            let _ = super::execute::wait4(pid);
        }
        return None; // the server: drops its copies of the request's descriptors
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
                &status,
                "entering the pod's namespaces",
                &io::Error::last_os_error(),
            );
        }
    }
    drop(namespaces);
    match libc::fork() {
        -1 => fail(&status, "forking into the pod", &io::Error::last_os_error()),
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
    Some(program(
        server,
        procs,
        control,
        status,
        [stdin, stdout, stderr],
    ))
}

/// The program's process, in the pod's namespaces: the zygote's life (zygote.rs), ending in the
/// interpreter instead of an exec.
unsafe fn program(
    server: &Server,
    procs: Vec<OwnedFd>,
    control: OwnedFd,
    status: OwnedFd,
    stdio: [OwnedFd; 3],
) -> Vec<String> {
    libc::setpgid(0, 0);
    for fd in &procs {
        if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
            fail(
                &status,
                "joining the pod's cgroup",
                &io::Error::last_os_error(),
            );
        }
    }
    drop(procs);
    let mut hello = vec![b'R'];
    hello.extend_from_slice(&libc::getpid().to_le_bytes());
    libc::write(status.as_raw_fd(), hello.as_ptr().cast(), hello.len());
    let mut control = std::fs::File::from(control);
    let spec: ExecSpec = match super::protocol::read_frame(&mut control) {
        Ok(Some(s)) => s,
        Ok(None) => libc::_exit(0),
        Err(e) => fail(&status, "reading the command", &e),
    };
    drop(control);
    let own_argv = &server.argv;
    if !spec.argv.starts_with(own_argv) {
        fail(
            &status,
            "checking the command",
            &format!("the fork server runs {own_argv:?}, not {:?}", spec.argv),
        );
    }
    let filter = match &server.filters[usize::from(spec.network)] {
        Ok(f) => f,
        Err(e) => fail(&status, "building the seccomp filter", e),
    };
    let [stdin, stdout, stderr] = &stdio;
    if let Err(e) = lock_down(&spec, filter, [stdin, stdout, stderr]) {
        fail(&status, "locking down the program's process", &e);
    }
    // Nothing but stdio may reach the program. Closing the status pipe tells the runner the
    // program started, as an exec would.
    for fd in stdio {
        let _ = fd.into_raw_fd();
    }
    let _ = status.into_raw_fd();
    close_from(3);
    spec.argv[own_argv.len()..].to_vec()
}

/// Reports why the request failed on the status pipe (the runner reads it).
fn report(status: &OwnedFd, what: &str, e: &dyn std::fmt::Display) {
    let msg = format!("{what}: {e}");
    unsafe { libc::write(status.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
}

/// Reports why the request failed and exits.
fn fail(status: &OwnedFd, what: &str, e: &dyn std::fmt::Display) -> ! {
    report(status, what, e);
    unsafe { libc::_exit(127) }
}

/// Closes every descriptor from `first` on.
fn close_from(first: u32) {
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if r != 0 {
        for fd in first..4096 {
            unsafe { libc::close(fd as c_int) };
        }
    }
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

/// A message of one buffer with room for `fd_bytes` of descriptors in `control`.
fn message(iov: &mut libc::iovec, control: &mut Vec<u64>, fd_bytes: usize) -> libc::msghdr {
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    *control = vec![0u64; space.div_ceil(8)];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    msg
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) as one message.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors for one request"));
    }
    let bytes = std::mem::size_of_val(fds);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut c_void,
        iov_len: data.len(),
    };
    let mut control = Vec::new();
    let msg = message(&mut iov, &mut control, bytes);
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fds.len(),
        );
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one message and the descriptors attached to it; `None` at end of stream.
pub fn recv_with_fds(sock: RawFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = Vec::new();
    let mut msg = message(&mut iov, &mut control, MAX_FDS * 4);
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..len / 4 {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off"));
    }
    Ok(Some((data[..n as usize].to_vec(), fds)))
}

/// Reads everything a child wrote to a pipe (the server's own output, for the log).
pub fn read_to_end(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}
