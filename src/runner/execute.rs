//! Runs one command under limits and watches it: feeds stdin, captures stdout and stderr up to
//! their caps, enforces wall and CPU time, and ends the whole process tree when it is done.
//! One thread and `poll(2)` on a pidfd and the pipes: nothing to synchronise, nothing to leak.
//! The program's process is a `Zygote` forked before the job arrived.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::job::Limits;
use crate::sandbox::cgroup::Cgroup;
use crate::sandbox::pipe;
use crate::sandbox::seccomp::SyscallFilter;

/// Where the runner executes: what isolation it has to work with.
pub struct Isolation {
    pub cgroup: Option<Arc<Cgroup>>,
    /// The runner is pid 1 of a pid namespace of its own: `kill(-1)` ends every process but it.
    pub owns_pid_namespace: bool,
    /// Identity to switch to before exec (root runners); `None` keeps the current one.
    pub sandbox_user: Option<(u32, u32)>,
}

/// Which limit ended a command early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breach {
    WallTime,
    CpuTime,
    Output,
}

/// What one command did.
#[derive(Debug, Default)]
pub struct Execution {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall_time_ms: u64,
    pub cpu_time_ms: u64,
    pub memory_bytes: u64,
    pub oom_killed: bool,
    pub breach: Option<Breach>,
}

/// How a command's output is collected.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// stdout and stderr apart, each capped at `Limits::output_bytes`.
    Separate,
    /// stderr joined to stdout in the order written (compiler diagnostics).
    Merged,
}

const CPU_CHECK_EVERY: Duration = Duration::from_millis(50);

/// A process forked ahead of time that has already moved itself into the pod's cgroup and waits
/// for a command to exec. Moving a process between cgroup v1 hierarchies costs ~8 ms (an RCU
/// grace period per hierarchy); a zygote pays that while the pod is on standby, not during a job.
pub struct Zygote {
    pid: i32,
    control: Option<OwnedFd>,
    status: OwnedFd,
    /// The runner's ends of the program's stdio pipes, taken when it runs.
    stdio: Option<[OwnedFd; 3]>,
    ready: bool,
}

/// What a zygote needs to become the program.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExecSpec {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: std::path::PathBuf,
    rlimits: Vec<(u32, u64)>,
    user: Option<(u32, u32)>,
    network: bool,
    merged: bool,
    no_stdin: bool,
}

impl Zygote {
    /// Forks the zygote. The runner is single-threaded, so the child may allocate.
    pub fn fork(isolation: &Isolation) -> io::Result<Zygote> {
        let (control_r, control_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop((control_w, status_r, stdin_w, stdout_r, stderr_r));
            zygote_main(
                isolation.cgroup.as_deref(),
                control_r,
                status_w,
                stdin_r,
                stdout_w,
                stderr_w,
            );
        }
        Ok(Zygote {
            pid,
            control: Some(control_w),
            status: status_r,
            stdio: Some([stdin_w, stdout_r, stderr_r]),
            ready: false,
        })
    }

    /// Blocks until the zygote sits in its cgroup, ready to exec.
    pub fn wait_ready(&mut self) -> io::Result<()> {
        if self.ready {
            return Ok(());
        }
        let mut b = [0u8; 1];
        let n = unsafe { libc::read(self.status.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n == 1 && b[0] == b'R' {
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
    fn launch(&mut self, spec: &ExecSpec) -> io::Result<()> {
        self.wait_ready()?;
        let control = self.control.take().expect("a zygote launches once");
        let mut file = std::fs::File::from(control);
        crate::runner::protocol::write_frame(&mut file, spec)?;
        drop(file);
        let err = read_all(&self.status);
        if err.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(String::from_utf8_lossy(&err).into_owned()))
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        if self.control.is_some() {
            // Never launched: it would wait forever on its control pipe.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = wait4(self.pid);
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

/// The zygote's life: join the cgroup, say ready, wait for the command, lock itself down, exec.
fn zygote_main(
    cgroup: Option<&Cgroup>,
    control: OwnedFd,
    status: OwnedFd,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> ! {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        let msg = format!("{what}: {e}");
        unsafe {
            libc::write(status.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    unsafe { libc::setpgid(0, 0) };
    if let Some(cg) = cgroup {
        if let Err(e) = cg.enter_self() {
            fail("joining the pod's cgroup", &e);
        }
    }
    // Built now, while the pod waits, for the usual case of a job without network.
    let offline_filter = SyscallFilter::new(false).ok();
    unsafe { libc::write(status.as_raw_fd(), b"R".as_ptr().cast(), 1) };
    let mut control = std::fs::File::from(control);
    let spec: ExecSpec = match crate::runner::protocol::read_frame(&mut control) {
        Ok(Some(s)) => s,
        Ok(None) => unsafe { libc::_exit(0) },
        Err(e) => fail("reading the command", &e),
    };
    let filter = match (spec.network, offline_filter) {
        (false, Some(f)) => Ok(f),
        _ => SyscallFilter::new(spec.network),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => fail("building the seccomp filter", &e),
    };
    if let Err(e) = become_program(&spec, &filter, &stdin, &stdout, &stderr) {
        fail(
            &format!(
                "starting {}",
                spec.argv.first().map(String::as_str).unwrap_or("")
            ),
            &e,
        );
    }
    unreachable!("become_program returns only on error")
}

fn become_program(
    spec: &ExecSpec,
    filter: &SyscallFilter,
    stdin: &OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> io::Result<()> {
    let check = |r: i32| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
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
        if spec.no_stdin {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            check(null)?;
            check(libc::dup2(null, 0))?;
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
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    std::env::set_current_dir(&spec.cwd)?;
    for &(resource, value) in &spec.rlimits {
        let hard = if resource == libc::RLIMIT_CPU as u32 {
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
    // With the bounding set empty, not even an exec of a setuid or root-owned file can give
    // capabilities back.
    for cap in 0..64 {
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    if let Some((uid, gid)) = spec.user {
        unsafe {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(gid, gid, gid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
    }
    let writable = [spec.cwd.as_path(), Path::new("/tmp"), Path::new("/dev")];
    crate::sandbox::landlock::confine(&writable).map_err(io::Error::other)?;
    filter.install()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    unsafe { libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    Err(io::Error::last_os_error())
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

/// Runs one command in `zygote` and watches it to the end.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    mut zygote: Zygote,
    argv: &[String],
    env: &[(String, String)],
    work_dir: &Path,
    stdin: &[u8],
    limits: &Limits,
    capture: Capture,
    isolation: &Isolation,
) -> io::Result<Execution> {
    zygote.wait_ready()?;
    if let Some(cg) = &isolation.cgroup {
        cg.apply(limits.memory_bytes, limits.processes)?;
    }
    let oom_before = isolation
        .cgroup
        .as_ref()
        .map(|c| c.oom_kills())
        .unwrap_or(0);
    let cpu_before = isolation
        .cgroup
        .as_ref()
        .map(|c| c.cpu_usage_ns())
        .unwrap_or(0);
    let spec = ExecSpec {
        argv: argv.to_vec(),
        env: env.to_vec(),
        cwd: work_dir.to_path_buf(),
        rlimits: rlimits_for(limits, isolation.cgroup.is_some()),
        user: isolation.sandbox_user,
        network: limits.network,
        merged: capture == Capture::Merged,
        no_stdin: stdin.is_empty(),
    };

    let started = Instant::now();
    zygote.launch(&spec)?;
    let pid = zygote.pid;
    let pidfd = pidfd_open(pid)?;
    let [stdin_fd, out_read, err_read] = zygote.stdio.take().expect("stdio is taken once");

    let mut watch = Watch {
        stdin: (!stdin.is_empty()).then_some(stdin_fd),
        stdin_data: stdin,
        stdin_pos: 0,
        streams: [
            Some(out_read),
            (capture == Capture::Separate).then_some(err_read),
        ],
        buffers: [Vec::new(), Vec::new()],
        cap: limits.output_bytes as usize,
        breach: None,
    };
    for fd in watch.stdin.iter().chain(watch.streams.iter().flatten()) {
        set_nonblocking(fd.as_raw_fd())?;
    }

    let deadline = started + Duration::from_millis(limits.wall_time_ms);
    let cpu_limit_ns = limits.cpu_time_ms.saturating_mul(1_000_000);
    loop {
        let now = Instant::now();
        if now >= deadline {
            watch.breach.get_or_insert(Breach::WallTime);
        }
        if let Some(cg) = &isolation.cgroup {
            if cg.cpu_usage_ns().saturating_sub(cpu_before) > cpu_limit_ns {
                watch.breach.get_or_insert(Breach::CpuTime);
            }
        }
        if watch.breach.is_some() {
            break;
        }
        let wait = deadline.saturating_duration_since(now).min(CPU_CHECK_EVERY);
        if watch.poll_once(&pidfd, wait)? {
            break;
        }
    }

    // The program, or its limit, has ended: nothing it started may outlive it.
    end_process_tree(pid, isolation);
    let (status, rusage) = wait4(pid)?;
    let wall = started.elapsed();
    watch.stdin = None;
    watch.drain();
    if isolation.owns_pid_namespace {
        reap_orphans();
    }

    let cpu_time_ms = match &isolation.cgroup {
        Some(cg) => cg.cpu_usage_ns().saturating_sub(cpu_before) / 1_000_000,
        None => rusage_cpu_ms(&rusage),
    };
    let memory_bytes = match &isolation.cgroup {
        Some(cg) => cg.memory_peak(),
        None => (rusage.ru_maxrss as u64) * 1024,
    };
    let oom_killed = isolation
        .cgroup
        .as_ref()
        .map(|c| c.oom_kills() > oom_before)
        .unwrap_or(false);
    let [stdout, stderr] = watch.buffers;
    Ok(Execution {
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout,
        stderr,
        wall_time_ms: wall.as_millis() as u64,
        cpu_time_ms,
        memory_bytes,
        oom_killed,
        breach: watch.breach,
    })
}

/// The pipes of a running command and what has come through them.
struct Watch<'a> {
    stdin: Option<OwnedFd>,
    stdin_data: &'a [u8],
    stdin_pos: usize,
    streams: [Option<OwnedFd>; 2],
    buffers: [Vec<u8>; 2],
    cap: usize,
    breach: Option<Breach>,
}

impl Watch<'_> {
    /// Waits up to `wait` for something to happen; true when the program has exited.
    fn poll_once(&mut self, pidfd: &OwnedFd, wait: Duration) -> io::Result<bool> {
        let mut fds = vec![libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for s in self.streams.iter().flatten() {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(s) = &self.stdin {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as _,
                wait.as_millis().max(1) as i32,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        for i in 0..2 {
            if self.streams[i].is_some() {
                self.read_stream(i);
            }
        }
        if self.stdin.is_some() {
            self.feed_stdin();
        }
        Ok(fds[0].revents & libc::POLLIN != 0)
    }

    /// Reads what is available on one stream, keeping bytes up to the cap. Output past the cap
    /// ends the program; the bytes before it are kept.
    fn read_stream(&mut self, i: usize) {
        let mut chunk = [0u8; 65536];
        loop {
            let Some(fd) = &self.streams[i] else { return };
            let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n == 0 {
                self.streams[i] = None;
                return;
            }
            if n < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return;
                }
                continue;
            }
            let buf = &mut self.buffers[i];
            let room = self.cap.saturating_sub(buf.len());
            let n = n as usize;
            buf.extend_from_slice(&chunk[..n.min(room)]);
            if n > room {
                self.breach.get_or_insert(Breach::Output);
                self.streams[i] = None;
                return;
            }
        }
    }

    fn feed_stdin(&mut self) {
        while let Some(fd) = &self.stdin {
            let rest = &self.stdin_data[self.stdin_pos..];
            if rest.is_empty() {
                self.stdin = None; // EOF for the program
                return;
            }
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len().min(1 << 16),
                )
            };
            if n < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) => continue,
                    _ => self.stdin = None, // EPIPE: the program stopped reading, which is its right
                }
            } else {
                self.stdin_pos += n as usize;
            }
        }
    }

    /// After every writer is gone: take what is still in the pipes.
    fn drain(&mut self) {
        for i in 0..2 {
            if self.streams[i].is_some() {
                self.read_stream(i);
            }
            self.streams[i] = None;
        }
    }
}

fn rlimits_for(limits: &Limits, has_cgroup: bool) -> Vec<(u32, u64)> {
    let cpu_secs = limits.cpu_time_ms.div_ceil(1000) + 1;
    let mut v = vec![
        (libc::RLIMIT_CPU, cpu_secs),
        (libc::RLIMIT_FSIZE, limits.file_size_bytes),
        (libc::RLIMIT_NOFILE, limits.open_files as u64),
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_STACK, limits.memory_bytes.min(256 << 20)),
    ];
    if !has_cgroup {
        // Without a cgroup these are the only brakes. RLIMIT_AS counts reserved address space,
        // which JVMs and V8 reserve generously: such programs need a memory cgroup.
        v.push((libc::RLIMIT_AS, limits.memory_bytes));
        v.push((libc::RLIMIT_NPROC, limits.processes as u64));
    }
    v.into_iter().map(|(r, n)| (r as u32, n)).collect()
}

fn end_process_tree(pid: i32, isolation: &Isolation) {
    unsafe {
        if isolation.owns_pid_namespace {
            libc::kill(-1, libc::SIGKILL);
        } else {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
    if let Some(cg) = &isolation.cgroup {
        cg.kill_all();
    }
}

fn reap_orphans() {
    let mut status = 0;
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

fn wait4(pid: i32) -> io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok((status, rusage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn rusage_cpu_ms(r: &libc::rusage) -> u64 {
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(r.ru_utime) + ms(r.ru_stime)
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
