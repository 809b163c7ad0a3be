//! Kiln's side of the Python fork server (runner/pyfork.rs): starts it, opens one connection per
//! pod for the pod's runner, starts it again when it has died, and ends it with the backend.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::runner::protocol;
use crate::runner::pyfork::{ForkedCommand, ServerSetup, LISTEN_FD};
use crate::sandbox::setup::PodSetup;

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
    user_base: PathBuf,
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
    /// Lays out the server's private user base (usercustomize.py, and `library` linked as
    /// `_kiln_pyfork.so`) and starts it. `setup` is the pods' mount layout.
    pub fn start(
        spec: ForkServerSpec,
        runner: &Path,
        library: &Path,
        mut setup: PodSetup,
    ) -> Result<ForkServer, String> {
        let root = crate::warm::default_root()
            .parent()
            .map(|p| p.join("pyfork"))
            .unwrap_or_else(|| PathBuf::from("/var/cache/kiln/pyfork"));
        remove_stale(&root);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let user_base = root.join(&id);
        let site = user_base
            .join("lib")
            .join(format!("python{}", spec.python_version))
            .join("site-packages");
        std::fs::create_dir_all(&site)
            .and_then(|()| {
                std::fs::write(
                    site.join("usercustomize.py"),
                    include_str!("../runner/usercustomize.py"),
                )
            })
            .and_then(|()| std::os::unix::fs::symlink(library, site.join("_kiln_pyfork.so")))
            .map_err(|e| format!("preparing {}: {e}", user_base.display()))?;
        setup.cgroup = None;
        setup.fork_server = None;
        setup.overlays.clear();
        setup.read_only.push(user_base.clone());
        setup.read_only.push(library.to_path_buf());
        let server = ForkServer {
            name: format!("kiln-pyfork-{id}-{}", uuid::Uuid::new_v4().simple()).into_bytes(),
            spec,
            user_base,
            runner: runner.to_path_buf(),
            setup,
            state: Mutex::new(State {
                child: None,
                started: Instant::now(),
                stopped: false,
            }),
        };
        let child = server.spawn().map_err(|e| format!("starting it: {e}"))?;
        server.state.lock().unwrap_or_else(|p| p.into_inner()).child = Some(child);
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.child.as_ref().map(|c| c.id())
    }

    /// A connection for one pod's runner, or `None` when the server is not there (the pod then
    /// execs the interpreter as usual). A dead server is started again, at most every 5 s.
    pub fn connect(&self) -> Option<OwnedFd> {
        match connect_abstract(&self.name) {
            Ok(fd) => Some(fd),
            Err(e) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let dead = !matches!(state.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
                if dead && !state.stopped && state.started.elapsed() >= RESTART_EVERY {
                    tracing::warn!(error = %e, "python fork server is gone; starting it again");
                    state.started = Instant::now();
                    state.child = self.spawn().ok();
                }
                None
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
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
            user_base: self.user_base.display().to_string(),
        };
        let frame = protocol::encode(&setup).map_err(std::io::Error::other)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&frame)?;
        }
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    tracing::warn!("python fork server: {line}");
                }
            });
        }
        Ok(child)
    }
}

impl ForkServer {
    /// Ends the server for good (Kiln's shutdown); pods made afterwards exec the interpreter.
    pub fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = state.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        state.stopped = true;
        let _ = std::fs::remove_dir_all(&self.user_base);
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes user bases left by Kiln processes that no longer run.
fn remove_stale(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next()?.parse::<i32>().ok());
        if let Some(pid) = pid {
            if unsafe { libc::kill(pid, 0) } != 0 {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
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
