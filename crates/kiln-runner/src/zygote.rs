//! The zygote: the program's process, forked while the pod is on standby. It moves itself into
//! the pod's cgroup at once (a cgroup v1 move costs ~8 ms of RCU grace periods, which a job should
//! not wait for), then waits for the command, locks itself down (stdio, rlimits, capabilities,
//! uid, landlock, seccomp) and execs it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::execute::{wait4, Isolation};
use kiln_sandbox::pipe;
use kiln_sandbox::seccomp::SyscallFilter;

/// A process forked ahead of time that has already moved itself into the pod's cgroup and waits
/// for a command to exec. Moving a process between cgroup v1 hierarchies costs ~8 ms (an RCU
/// grace period per hierarchy); a zygote pays that while the pod is on standby, not during a job.
pub struct Zygote {
    pub(crate) pid: i32,
    control: Option<OwnedFd>,
    status: OwnedFd,
    /// The runner's ends of the program's stdio pipes, taken when it runs.
    pub(crate) stdio: Option<[OwnedFd; 3]>,
    ready: bool,
    /// Made by a fork server (runner/pyfork/): it says its pid when ready.
    pub(crate) remote: bool,
    /// Already under the seccomp filter of a job without network (and without capabilities
    /// to regain): it cannot run a command that needs network.
    pub(crate) offline: bool,
}

/// What a zygote needs to become the program.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    pub rlimits: Vec<(u32, u64)>,
    pub user: Option<(u32, u32)>,
    pub network: bool,
    pub merged: bool,
    pub no_stdin: bool,
}

/// A program's process's ends of its pipes to the runner.
pub(crate) struct ChildEnds {
    /// The command arrives here.
    pub control: OwnedFd,
    /// Ready, and what went wrong before the program started; closes when it has.
    pub status: OwnedFd,
    pub stdio: [OwnedFd; 3],
}

impl ChildEnds {
    /// In the order a fork server receives them.
    pub fn raw(&self) -> [i32; 5] {
        let [stdin, stdout, stderr] = &self.stdio;
        [&self.control, &self.status, stdin, stdout, stderr].map(|f| f.as_raw_fd())
    }

    pub fn from_array([control, status, stdin, stdout, stderr]: [OwnedFd; 5]) -> ChildEnds {
        ChildEnds {
            control,
            status,
            stdio: [stdin, stdout, stderr],
        }
    }
}

impl Zygote {
    /// A zygote not yet there: the runner's ends of its pipes, and the process's ends apart.
    fn with_pipes(remote: bool, offline: bool) -> io::Result<(Zygote, ChildEnds)> {
        let (control_r, control_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let zygote = Zygote {
            pid: 0,
            control: Some(control_w),
            status: status_r,
            stdio: Some([stdin_w, stdout_r, stderr_r]),
            ready: false,
            remote,
            offline,
        };
        let child = ChildEnds {
            control: control_r,
            status: status_w,
            stdio: [stdin_r, stdout_w, stderr_w],
        };
        Ok((zygote, child))
    }

    /// Forks the zygote for a command with or without `network`. The runner is single-threaded,
    /// so the child may allocate.
    pub fn fork(isolation: &Isolation, network: bool) -> io::Result<Zygote> {
        let (mut zygote, child) = Zygote::with_pipes(false, !network)?;
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(zygote); // the runner's ends (pid 0: nothing is killed)
            zygote_main(isolation, child, network);
        }
        zygote.pid = pid;
        Ok(zygote)
    }

    /// Asks a fork server, over `server` (a connection Kiln opened for this pod), for a process
    /// forked from its initialised interpreter. The server's child enters this pod's namespaces
    /// and forks the zygote into its pid namespace, where the runner adopts it; the zygote moves
    /// itself into the cgroup and says ready with its pid.
    pub fn from_fork_server(server: &OwnedFd, isolation: &Isolation) -> io::Result<Zygote> {
        // The server's processes lock down for a job without network while they wait.
        let (zygote, child) = Zygote::with_pipes(true, true)?;
        let namespaces = ["mnt", "uts", "ipc", "net", "pid"]
            .iter()
            .map(|ns| std::fs::File::open(format!("/proc/self/ns/{ns}")).map(OwnedFd::from))
            .collect::<io::Result<Vec<_>>>()?;
        let procs = isolation.cgroup.as_ref().map(|c| c.procs()).unwrap_or(&[]);
        let mut fds: Vec<i32> = namespaces.iter().map(|f| f.as_raw_fd()).collect();
        fds.extend(procs.iter().map(|f| f.as_raw_fd()));
        fds.extend(child.raw());
        let header = [namespaces.len() as u8, procs.len() as u8];
        kiln_sandbox::fdpass::send_with_fds(server.as_raw_fd(), &header, &fds)?;
        Ok(zygote)
    }

    /// Blocks until the zygote sits in its cgroup, ready to exec.
    pub fn wait_ready(&mut self) -> io::Result<()> {
        if self.ready {
            return Ok(());
        }
        if self.remote {
            // A fork server that stopped answering must not hold the pod up.
            let mut pfd = libc::pollfd {
                fd: self.status.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            if unsafe { libc::poll(&mut pfd, 1, 10_000) } != 1 {
                return Err(io::Error::other(
                    "the fork server did not answer within 10 s",
                ));
            }
        }
        let mut b = [0u8; 1];
        let n = unsafe { libc::read(self.status.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n == 1 && b[0] == b'R' {
            if self.remote {
                // A fork server's process says where it is in the pod's pid namespace.
                let mut pid = [0u8; 4];
                let n = unsafe { libc::read(self.status.as_raw_fd(), pid.as_mut_ptr().cast(), 4) };
                if n != 4 {
                    return Err(io::Error::other(
                        "the fork server's process did not say its pid",
                    ));
                }
                self.pid = i32::from_le_bytes(pid);
            }
            self.ready = true;
            return Ok(());
        }
        let rest = read_all(&self.status);
        Err(io::Error::other(format!(
            "the program's process could not be prepared: {}",
            String::from_utf8_lossy(&rest)
        )))
    }

    /// Sends the command; returns once it was exec'd (or why it could not be).
    pub(crate) fn launch(&mut self, spec: &ExecSpec) -> io::Result<()> {
        self.wait_ready()?;
        let control = self.control.take().expect("a zygote launches once");
        let mut file = std::fs::File::from(control);
        kiln_wire::frame::write_frame(&mut file, spec)?;
        drop(file);
        let err = read_all(&self.status);
        if err.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(String::from_utf8_lossy(&err).into_owned()))
        }
    }
}

impl Zygote {
    /// Kills unused zygotes, all at once so that their exits overlap, and waits until they are
    /// gone.
    pub fn end_all(zygotes: Vec<Zygote>) {
        let mut killed = Vec::new();
        for mut z in zygotes {
            if z.control.is_some() && z.pid > 0 {
                unsafe { libc::kill(z.pid, libc::SIGKILL) };
                z.control = None;
                killed.push(z.pid);
            }
            // Dropped: a fork server's process that never said ready ends with its control pipe.
        }
        for pid in killed {
            let _ = wait4(pid);
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if self.control.is_some() {
            // Never launched: it would wait forever on its control pipe.
            if self.pid > 0 {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                // A pod's pid 1 reaps it after the stage (`reap_orphans`) instead of waiting here
                // for its exit: a fork server's process takes milliseconds to tear its image down.
                let mut status = 0;
                let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
                if reaped == 0 && std::process::id() != 1 {
                    let _ = wait4(self.pid);
                }
            } else {
                // A fork server's process that never said ready ends when its control pipe closes.
                self.control = None;
            }
        }
    }
}

fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            out.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return out;
        }
    }
}

/// The zygote's life: lock down what does not depend on the command, wait for the command,
/// lock down the rest, exec.
fn zygote_main(isolation: &Isolation, child: ChildEnds, network: bool) -> ! {
    let procs = isolation.cgroup.as_ref().map(|c| c.procs()).unwrap_or(&[]);
    // Forked from the runner, it holds copies of the runner's descriptors, other zygotes' pipe
    // ends among them: a program would never see the end of its input while another zygote
    // kept its stdin's write end open. Only its own are kept.
    let own: Vec<i32> = child
        .raw()
        .into_iter()
        .chain(procs.iter().map(|f| f.as_raw_fd()))
        .collect();
    close_all_but(&own);
    let filter = match SyscallFilter::new(network) {
        Ok(f) => f,
        Err(e) => fail(&child.status, "building the seccomp filter", &e),
    };
    if let Err(e) = prelock(&filter, Some(&isolation.work_dir)) {
        fail(&child.status, "locking down", &e);
    }
    let spec = await_command(procs, &child.status, child.control, false);
    if spec.network != network {
        let e = format!("the process was locked down for network: {network}");
        fail(&child.status, "checking the command", &e);
    }
    if let Err(e) = become_program(&spec, &child.stdio, &isolation.work_dir) {
        fail(
            &child.status,
            &format!(
                "starting {}",
                spec.argv.first().map(String::as_str).unwrap_or("")
            ),
            &e,
        );
    }
    unreachable!("become_program returns only on error")
}

/// Closes every descriptor from 3 up but `keep`.
fn close_all_but(keep: &[i32]) {
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            unsafe { libc::close(fd) };
        }
    }
}

/// The part of the lock-down that does not depend on the command, done while a program's
/// process waits for it (the zygote's and a fork server's alike), off the job's path: an empty
/// capability bounding set, landlock for programs starting in `work_dir`, and the seccomp
/// filter. None of them stands in the way of the rest (stdio, rlimits, uid, exec).
pub(crate) fn prelock(filter: &SyscallFilter, work_dir: Option<&Path>) -> io::Result<()> {
    // With the bounding set empty, not even an exec of a setuid or root-owned file can give
    // capabilities back.
    for cap in 0..64 {
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    if let Some(dir) = work_dir {
        confine(dir)?;
    }
    filter.install()
}

/// Landlock: read and execute anything visible, write only below `work_dir`, /tmp and /dev.
fn confine(work_dir: &Path) -> io::Result<()> {
    let writable = [work_dir, Path::new("/tmp"), Path::new("/dev")];
    kiln_sandbox::landlock::confine(&writable).map_err(io::Error::other)?;
    Ok(())
}

/// The first part of a program's process's life, the runner's zygote's and a fork server's
/// alike: a process group of its own, the pod's cgroup, "ready" (with its pid when the runner
/// cannot know it: `say_pid`), then the command. Exits when the runner drops it unused.
pub(crate) fn await_command(
    procs: &[OwnedFd],
    status: &OwnedFd,
    control: OwnedFd,
    say_pid: bool,
) -> ExecSpec {
    unsafe { libc::setpgid(0, 0) };
    if let Err(e) = kiln_sandbox::cgroup::enter(procs) {
        fail(status, "joining the pod's cgroup", &e);
    }
    let mut hello = vec![b'R'];
    if say_pid {
        hello.extend_from_slice(&unsafe { libc::getpid() }.to_le_bytes());
    }
    unsafe { libc::write(status.as_raw_fd(), hello.as_ptr().cast(), hello.len()) };
    let mut control = std::fs::File::from(control);
    match kiln_wire::frame::read_frame(&mut control) {
        Ok(Some(spec)) => spec,
        Ok(None) => unsafe { libc::_exit(0) },
        Err(e) => fail(status, "reading the command", &e),
    }
}

/// Reports on the status pipe (the runner reads it) why the program's process could not be
/// prepared.
pub(crate) fn report(status: &OwnedFd, what: &str, e: &dyn std::fmt::Display) {
    let msg = format!("{what}: {e}");
    unsafe { libc::write(status.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
}

/// Reports, then exits.
pub(crate) fn fail(status: &OwnedFd, what: &str, e: &dyn std::fmt::Display) -> ! {
    report(status, what, e);
    unsafe { libc::_exit(127) }
}

fn become_program(spec: &ExecSpec, stdio: &[OwnedFd; 3], confined: &Path) -> io::Result<()> {
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let program = resolve_program(&spec.argv[0], &spec.env, &spec.cwd)?;
    unsafe {
        // What an exec'd program expects to inherit: default SIGPIPE, nothing blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    lock_down(spec, stdio, Some(confined))?;
    // Only stdio goes through the exec (the status pipe closes with it, telling the runner).
    kiln_sandbox::close_from(3, true);
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    unsafe { libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    Err(io::Error::last_os_error())
}

/// The rest of what makes the calling process the program's, short of exec, after `prelock`:
/// its stdio, work dir, rlimits, the sandbox uid, and landlock unless `prelock` confined it to
/// `confined` already (which must then be the command's work dir). Shared by the zygote (which
/// execs next) and by a fork server's process (which runs the program in the same image).
pub(crate) fn lock_down(
    spec: &ExecSpec,
    [stdin, stdout, stderr]: &[OwnedFd; 3],
    confined: Option<&Path>,
) -> io::Result<()> {
    if confined.is_some_and(|dir| dir != spec.cwd) {
        return Err(io::Error::other(format!(
            "the process was confined to {} as its work dir, not {}",
            confined.unwrap_or(Path::new("")).display(),
            spec.cwd.display()
        )));
    }
    let check = |r: i32| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    unsafe {
        if spec.no_stdin {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            check(null)?;
            check(libc::dup2(null, 0))?;
            libc::close(null);
        } else {
            check(libc::dup2(stdin.as_raw_fd(), 0))?;
        }
        check(libc::dup2(stdout.as_raw_fd(), 1))?;
        check(libc::dup2(
            if spec.merged {
                stdout.as_raw_fd()
            } else {
                stderr.as_raw_fd()
            },
            2,
        ))?;
    }
    std::env::set_current_dir(&spec.cwd)?;
    for &(resource, value) in &spec.rlimits {
        let hard = if resource == libc::RLIMIT_CPU {
            value + 1
        } else {
            value
        };
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: hard,
        };
        check(unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &lim) })?;
    }
    if let Some((uid, gid)) = spec.user {
        unsafe {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
    }
    // Changing uid made the process undumpable (its /proc files root's); an exec would make it
    // dumpable again, a fork server's process does not exec.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    match confined {
        Some(_) => Ok(()),
        None => confine(&spec.cwd),
    }
}

/// A command with a slash runs as given; a bare name is looked up on the job's PATH.
fn resolve_program(name: &str, env: &[(String, String)], cwd: &Path) -> io::Result<CString> {
    if name.contains('/') {
        return Ok(CString::new(name)?);
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    for dir in path.split(':') {
        let candidate = cwd.join(dir).join(name);
        if candidate.is_file() {
            return Ok(CString::new(candidate.as_os_str().as_encoded_bytes())?);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{name} not found on PATH {path}"),
    ))
}
