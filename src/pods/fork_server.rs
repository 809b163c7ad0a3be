//! Kiln's side of the Python fork server (runner/pyfork/): starts it, opens one connection per
//! pod for the pod's runner, starts it again when it has died, and ends it with the backend.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runner::pyfork::{LISTEN_FD, READY_LINE};
use crate::Locked as _;
use kiln_wire::frame as protocol;
use kiln_wire::setup::{ForkedCommand, PodSetup, ServerSetup};

/// A language whose runs are forked from a resident interpreter (`fork_server = true`).
#[derive(Clone, Debug)]
pub struct ForkServerSpec {
    pub language: String,
    /// `major.minor`, which names the interpreter's user site directory.
    pub python_version: String,
    pub command: ForkedCommand,
}

/// A running fork server.
pub struct ForkServer {
    pub spec: ForkServerSpec,
    /// Abstract UNIX socket name (no file: nothing to clean up, nothing to guess from disk).
    name: Vec<u8>,
    library: PathBuf,
    runner: PathBuf,
    setup: PodSetup,
    state: Mutex<State>,
}

struct State {
    child: Option<Child>,
    started: Instant,
    stopped: bool,
}

/// Starting the server again is tried at most this often.
const RESTART_EVERY: Duration = Duration::from_secs(5);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl ForkServer {
    /// Starts the server in a mount namespace laid out as `setup` (the pods' layout), with
    /// `library` (Kiln's cdylib) as its native half.
    pub fn start(
        spec: ForkServerSpec,
        runner: &Path,
        library: &Path,
        mut setup: PodSetup,
    ) -> Result<ForkServer, String> {
        setup.cgroup = None;
        setup.fork_server = None;
        setup.overlays.clear();
        let server = ForkServer {
            name: format!(
                "kiln-pyfork-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                uuid::Uuid::new_v4().simple()
            )
            .into_bytes(),
            spec,
            library: library.to_path_buf(),
            runner: runner.to_path_buf(),
            setup,
            state: Mutex::new(State {
                child: None,
                started: Instant::now(),
                stopped: false,
            }),
        };
        let (mut child, startup) = server.spawn().map_err(|e| format!("starting it: {e}"))?;
        if let Err(why) = startup.wait(Duration::from_secs(20)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(why);
        }
        server.state.locked().child = Some(child);
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        let state = self.state.locked();
        state.child.as_ref().map(|c| c.id())
    }

    /// A connection for one pod's runner, or `None` when the server is not there (the pod then
    /// execs the interpreter as usual). A dead server is started again, at most every 5 s.
    pub fn connect(&self) -> Option<OwnedFd> {
        match connect_abstract(&self.name) {
            Ok(fd) => Some(fd),
            Err(e) => {
                let mut state = self.state.locked();
                let dead = !matches!(state.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
                if dead && !state.stopped && state.started.elapsed() >= RESTART_EVERY {
                    tracing::warn!(error = %e, "python fork server is gone; starting it again");
                    state.started = Instant::now();
                    state.child = self.spawn().ok().map(|(child, _)| child);
                }
                None
            }
        }
    }

    fn spawn(&self) -> std::io::Result<(Child, Startup)> {
        let listen = listen_abstract(&self.name)?;
        let listen_fd = listen.as_raw_fd();
        let mut cmd = Command::new(&self.runner);
        cmd.arg0("kiln-runner")
            .arg("fork-server")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        unsafe {
            cmd.pre_exec(move || {
                let r = if listen_fd == LISTEN_FD {
                    libc::fcntl(LISTEN_FD, libc::F_SETFD, 0)
                } else {
                    libc::dup2(listen_fd, LISTEN_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // Only the server holds the socket now: when it dies, waiting connections fail at once.
        drop(listen);
        let setup = ServerSetup {
            pod: self.setup.clone(),
            command: self.spec.command.clone(),
            python_version: self.spec.python_version.clone(),
            library: self.library.clone(),
        };
        let frame = protocol::encode(&setup).map_err(std::io::Error::other)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&frame)?;
        }
        // The server says READY_LINE on stdout once it waits for requests; everything else it
        // prints goes to the log, and its stderr is the reason when it never gets there.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr_text = std::sync::Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let text = stderr_text.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    tracing::warn!("python fork server: {line}");
                    let mut text = text.locked();
                    if text.len() < 4096 {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    match ready.take() {
                        Some(tx) if line == READY_LINE => {
                            let _ = tx.send(());
                        }
                        r => {
                            ready = r;
                            tracing::warn!("python fork server: {line}");
                        }
                    }
                }
            });
        }
        let pid = child.id();
        Ok((
            child,
            Startup {
                ready: ready_rx,
                stderr: stderr_text,
                pid,
            },
        ))
    }
}

/// A just-spawned server's way of saying it got to its loop, or why not.
struct Startup {
    ready: std::sync::mpsc::Receiver<()>,
    stderr: std::sync::Arc<Mutex<String>>,
    pid: u32,
}

impl Startup {
    /// Waits for the server to be ready; its error output when it ended first.
    fn wait(self, timeout: Duration) -> Result<(), String> {
        match self.ready.recv_timeout(timeout) {
            Ok(()) => Ok(()),
            Err(_) => {
                // Give its last words a moment to reach the log.
                std::thread::sleep(Duration::from_millis(50));
                let text = self.stderr.locked();
                Err(if text.trim().is_empty() {
                    format!("the server (pid {}) never said it was ready", self.pid)
                } else {
                    text.trim().to_string()
                })
            }
        }
    }
}

impl ForkServer {
    /// Ends the server for good (Kiln's shutdown); pods made afterwards exec the interpreter.
    pub fn stop(&self) {
        let mut state = self.state.locked();
        if let Some(mut child) = state.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        state.stopped = true;
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn abstract_address(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in name.iter().take(addr.sun_path.len() - 1).enumerate() {
        addr.sun_path[i + 1] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len().min(106);
    (addr, len as libc::socklen_t)
}

fn seqpacket_socket() -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn listen_abstract(name: &[u8]) -> std::io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (addr, len) = abstract_address(name);
    unsafe {
        if libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
            || libc::listen(sock.as_raw_fd(), 1024) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(sock)
}

fn connect_abstract(name: &[u8]) -> std::io::Result<OwnedFd> {
    let sock = seqpacket_socket()?;
    let (addr, len) = abstract_address(name);
    if unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}
