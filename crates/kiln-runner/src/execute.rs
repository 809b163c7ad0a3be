//! Runs one command under limits and watches it: feeds stdin, captures stdout and stderr up to
//! their caps, enforces wall and CPU time, and ends the whole process tree when it is done.
//! One thread and `poll(2)` on a pidfd and the pipes: nothing to synchronise, nothing to leak.
//! The program's process is a `Zygote` (zygote.rs) forked before the job arrived.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::zygote::{ExecSpec, Zygote};
use kiln_sandbox::cgroup::Cgroup;
use kiln_wire::job::Limits;

/// Where the runner executes: what isolation it has to work with.
pub struct Isolation {
    pub cgroup: Option<Arc<Cgroup>>,
    /// The runner is pid 1 of a pid namespace of its own: `kill(-1)` ends every process but it.
    pub owns_pid_namespace: bool,
    /// Identity to switch to before exec (root runners); `None` keeps the current one.
    pub sandbox_user: Option<(u32, u32)>,
    /// A Kubernetes pod's own limits bound memory and processes: no RLIMIT_AS (it counts
    /// reserved address space, which JVMs, V8 and Go reserve generously) and no RLIMIT_NPROC
    /// (it counts every process of the uid on the node, other pods' too).
    pub pod_bounds: bool,
    /// Where programs start: the one directory below which they may write (with /tmp, /dev).
    pub work_dir: std::path::PathBuf,
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
    /// When the step was entered, its command exec'd, its program's exit seen, and its tree
    /// ended with its figures read.
    pub times: Option<[Instant; 4]>,
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

/// Runs one command in `zygote` and watches it to the end. When it ends, every other process in
/// the pod is killed except `keep` (the next stage's zygote).
/// An interactive run's link to the host: input frames (`kiln_wire::session::Input`) arrive on the
/// runner's stdin after the job frame, output goes out as `RunnerReport::Output` frames on its
/// stdout as the program writes it.
pub struct Live {
    input: RawFd,
    output: RawFd,
    pending: kiln_wire::frame::FrameBuffer,
    /// The host said stdin is done (or went away).
    closed: bool,
}

impl Live {
    /// On the runner's own stdin and stdout (read unbuffered, so no frame sits in a buffer).
    pub fn stdio() -> io::Result<Live> {
        set_nonblocking(0)?;
        Ok(Live {
            input: 0,
            output: 1,
            pending: Default::default(),
            closed: false,
        })
    }

    fn send(&self, stream: u8, data: &[u8]) {
        let report = kiln_wire::report::RunnerReport::Output {
            stream,
            data: data.to_vec(),
        };
        if let Ok(frame) = kiln_wire::frame::encode(&report) {
            let mut at = 0;
            while at < frame.len() {
                let n = unsafe {
                    libc::write(self.output, frame[at..].as_ptr().cast(), frame.len() - at)
                };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                at += n as usize;
            }
        }
    }

    /// Reads what the host sent; returns the whole input frames in it.
    fn receive(&mut self) -> Vec<kiln_wire::session::Input> {
        let mut chunk = [0u8; 65536];
        loop {
            let n = unsafe { libc::read(self.input, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n == 0 {
                self.closed = true; // the host is gone: no more input
                break;
            }
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            self.pending.push(&chunk[..n as usize]);
        }
        let mut out = Vec::new();
        // A frame that does not decode is skipped; the ones after it are still read.
        while let Some(frame) = self.pending.next() {
            out.extend(frame.ok());
        }
        out
    }
}

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
    keep: Option<i32>,
    live: Option<Live>,
) -> io::Result<Execution> {
    let entered = Instant::now();
    zygote.wait_ready()?;
    pin_like_me(zygote.pid);
    if let Some(cg) = &isolation.cgroup {
        cg.apply(limits.memory_bytes, limits.processes, limits.cpus)?;
    }
    let oom_before = isolation
        .cgroup
        .as_ref()
        .map(|c| c.oom_kills())
        .unwrap_or(0);
    // In a Kubernetes pod the container's own cgroup bounds memory, and its OOM killer is the one
    // that ends a program over it.
    let pod_oom_before = isolation
        .pod_bounds
        .then(super::layers::container_oom_kills)
        .flatten();
    let cpu_before = isolation
        .cgroup
        .as_ref()
        .map(|c| c.cpu_usage_ns())
        .unwrap_or(0);
    let spec = ExecSpec {
        argv: argv.to_vec(),
        env: env.to_vec(),
        cwd: work_dir.to_path_buf(),
        rlimits: rlimits_for(limits, isolation.cgroup.is_some() || isolation.pod_bounds),
        user: isolation.sandbox_user,
        network: limits.network,
        merged: capture == Capture::Merged,
        no_stdin: stdin.is_empty() && live.is_none(),
    };

    let started = Instant::now();
    zygote.launch(&spec)?;
    let launched = Instant::now();
    let pid = zygote.pid;
    let pidfd = pidfd_open(pid)?;
    let [stdin_fd, out_read, err_read] = zygote.stdio.take().expect("stdio is taken once");

    let mut watch = Watch {
        stdin: (!stdin.is_empty() || live.is_some()).then_some(stdin_fd),
        stdin_data: stdin.to_vec(),
        stdin_pos: 0,
        pid,
        live,
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
    let ended = Instant::now();
    end_process_tree(pid, isolation, keep);
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
        Some(cg) => cg.memory_peak((rusage.ru_maxrss as u64) * 1024),
        None => (rusage.ru_maxrss as u64) * 1024,
    };
    let oom_killed = isolation
        .cgroup
        .as_ref()
        .map(|c| c.oom_kills() > oom_before)
        .unwrap_or(false)
        || pod_oom_before
            .zip(super::layers::container_oom_kills())
            .is_some_and(|(before, after)| after > before);
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
        times: Some([entered, launched, ended, Instant::now()]),
    })
}

/// The pipes of a running command and what has come through them.
struct Watch {
    stdin: Option<OwnedFd>,
    stdin_data: Vec<u8>,
    stdin_pos: usize,
    pid: i32,
    live: Option<Live>,
    streams: [Option<OwnedFd>; 2],
    buffers: [Vec<u8>; 2],
    cap: usize,
    breach: Option<Breach>,
}

impl Watch {
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
        // Stdin is watched only while there is something to write (an interactive run keeps
        // it open, empty, between inputs).
        if let Some(s) = &self.stdin {
            if self.stdin_pos < self.stdin_data.len() {
                fds.push(libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
        }
        if let Some(live) = self.live.as_ref().filter(|l| !l.closed) {
            fds.push(libc::pollfd {
                fd: live.input,
                events: libc::POLLIN,
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
        if self.live.as_ref().is_some_and(|l| !l.closed) {
            self.take_input();
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

    /// An interactive run's input: more stdin, its end, or a signal for the program.
    fn take_input(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        for input in live.receive() {
            match input {
                kiln_wire::session::Input::Stdin(data) => self.stdin_data.extend_from_slice(&data),
                kiln_wire::session::Input::CloseStdin => live.closed = true,
                kiln_wire::session::Input::Signal(sig) => unsafe {
                    libc::kill(-self.pid, sig);
                    libc::kill(self.pid, sig);
                },
            }
        }
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
            if let Some(live) = &self.live {
                live.send(i as u8 + 1, &chunk[..n.min(room)]);
            }
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
                if self.live.as_ref().is_some_and(|l| !l.closed) {
                    return; // more may come
                }
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

fn rlimits_for(limits: &Limits, bounded_elsewhere: bool) -> Vec<(u32, u64)> {
    let cpu_secs = limits.cpu_time_ms.div_ceil(1000) + 1;
    let mut v = vec![
        (libc::RLIMIT_CPU, cpu_secs),
        (libc::RLIMIT_FSIZE, limits.file_size_bytes),
        (libc::RLIMIT_NOFILE, limits.open_files as u64),
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_STACK, limits.memory_bytes.min(256 << 20)),
    ];
    if !bounded_elsewhere {
        // Without a cgroup these are the only brakes. RLIMIT_AS counts reserved address space,
        // which JVMs and V8 reserve generously: such programs need a memory cgroup.
        v.push((libc::RLIMIT_AS, limits.memory_bytes));
        v.push((libc::RLIMIT_NPROC, limits.processes as u64));
    }
    v
}

fn end_process_tree(pid: i32, isolation: &Isolation, keep: Option<i32>) {
    match (isolation.owns_pid_namespace, keep) {
        (true, None) => unsafe {
            libc::kill(-1, libc::SIGKILL);
        },
        (true, Some(keep)) => {
            // The step's own process first (still running when a limit ended it); a group
            // holding just it and the kept process then leaves nothing to look for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let alone = isolation.cgroup.as_ref().and_then(|c| c.tasks()) == Some(2);
            if !alone {
                kill_all_but(keep);
            }
        }
        // The zygote put the program in a process group of its own (and `keep` in another).
        (false, _) => unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        },
    }
    if let (Some(cg), None) = (&isolation.cgroup, keep) {
        cg.kill_all();
    }
}

/// As pid 1 of the pod: kills every process but itself and `keep`, until none is left (a
/// process forked during one pass is caught by the next), and waits until they are all dead,
/// so that the next stage starts in a pod holding only its own process. Each is killed once: a
/// process with SIGKILL pending can neither run nor fork again, it only has to finish exiting.
fn kill_all_but(keep: i32) {
    // (pid, start time): a pid alone could be reused by a process forked after the kill.
    let mut killed: Vec<(i32, u64)> = Vec::new();
    for _ in 0..1000 {
        let mut more = false;
        for (pid, state, started) in pod_processes() {
            if pid == keep || state == 'Z' || killed.contains(&(pid, started)) {
                continue;
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.push((pid, started));
            more = true;
        }
        if !more {
            break;
        }
    }
    // Zombies are dead: they are reaped after the stage.
    for _ in 0..100_000 {
        if killed.is_empty() {
            return;
        }
        let dying = pod_processes()
            .into_iter()
            .any(|(pid, state, started)| state != 'Z' && killed.contains(&(pid, started)));
        if !dying {
            return;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// (pid, state, start time) of every process in the pod but pid 1.
fn pod_processes() -> Vec<(i32, char, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let started = fields.nth(18).and_then(|t| t.parse().ok()).unwrap_or(0);
        out.push((pid, state, started));
    }
    out
}

fn reap_orphans() {
    let mut status = 0;
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

pub(crate) fn wait4(pid: i32) -> io::Result<(i32, libc::rusage)> {
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

/// Pins the program's process to the cores the runner was pinned to for this job (the host
/// pins the runner as the job starts; a waiting zygote was forked before). What it starts
/// inherits them, and the seccomp filter refuses `sched_setaffinity`: the program cannot take
/// more cores than its job was given. Where the kernel refuses, the program runs unpinned.
fn pin_like_me(pid: i32) {
    if let Ok(cores) = kiln_sandbox::affinity::of(0) {
        let _ = kiln_sandbox::affinity::set(pid, &cores);
    }
}
