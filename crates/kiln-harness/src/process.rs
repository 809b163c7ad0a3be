//! A `kiln` process started as a child (`kiln serve`, `kiln scheduler`, `kiln api`): the one way
//! the integration tests, `kiln-bench` and the load tester start Kiln.
//!
//! Every kiln command prints one line before anything else, ending with the URL it answers on
//! ("kiln listening on http://127.0.0.1:40123", "kiln scheduler: ... on http://..."). The
//! process is started quiet (`RUST_LOG=warn`, no warm-cache filling, which would take CPU from
//! whatever is measured), its further output is drained so it never blocks on a full pipe, and
//! dropping it stops it: SIGTERM, then SIGKILL after ten seconds.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where a started process's standard error goes.
#[derive(Clone, Debug)]
pub enum Stderr {
    Null,
    Inherit,
    /// Kept in this file, whose end a start-up failure quotes.
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} ended before it printed its address ({status}){stderr}")]
    Ended {
        name: String,
        status: String,
        /// The end of its standard error, when it was kept.
        stderr: String,
    },
    #[error("{name} never answered 200 on {url}/readyz within {timeout:?}")]
    NotReady {
        name: String,
        url: String,
        timeout: Duration,
    },
}

/// What to start: the binary, its arguments and environment. The same spec starts the process
/// again after a kill.
#[derive(Clone, Debug)]
pub struct Spec {
    name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stderr: Stderr,
}

impl Spec {
    /// `name` is what errors call it ("kiln serve", "kiln scheduler #0").
    pub fn new(binary: impl AsRef<Path>, name: &str) -> Spec {
        Spec {
            name: name.to_string(),
            binary: binary.as_ref().to_path_buf(),
            args: Vec::new(),
            env: vec![
                ("RUST_LOG".into(), "warn".into()),
                ("KILN_WARM_CACHES".into(), "false".into()),
            ],
            stderr: Stderr::Null,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Spec {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set after the defaults, so it overrides them.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Spec {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Spec
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    pub fn stderr(mut self, stderr: Stderr) -> Spec {
        self.stderr = stderr;
        self
    }

    /// Starts the process and waits for its first line (not for readiness: see
    /// [`KilnProcess::wait_ready`]).
    pub fn start(self) -> Result<KilnProcess, Error> {
        let mut p = KilnProcess {
            spec: self,
            child: None,
            first_line: String::new(),
        };
        p.spawn()?;
        Ok(p)
    }
}

/// A running kiln process; stopped when dropped.
pub struct KilnProcess {
    spec: Spec,
    child: Option<Child>,
    first_line: String,
}

impl KilnProcess {
    fn spawn(&mut self) -> Result<(), Error> {
        let spec = &self.spec;
        let stderr = match &spec.stderr {
            Stderr::Null => Stdio::null(),
            Stderr::Inherit => Stdio::inherit(),
            Stderr::File(path) => std::fs::File::create(path)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        };
        let mut child = Command::new(&spec.binary)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: spec.name.clone(),
                source,
            })?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let Some(Ok(first)) = lines.next() else {
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(Error::Ended {
                name: spec.name.clone(),
                status,
                stderr: self.stderr_tail(),
            });
        };
        std::thread::spawn(move || for _ in lines {});
        self.first_line = first;
        self.child = Some(child);
        Ok(())
    }

    /// The last twenty lines of a kept standard error, as a paragraph to append to a message.
    fn stderr_tail(&self) -> String {
        let Stderr::File(path) = &self.spec.stderr else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("; its stderr ends:\n{}", tail.join("\n"))
    }

    /// What it printed first.
    pub fn first_line(&self) -> &str {
        &self.first_line
    }

    /// The URL its first line ends with.
    pub fn url(&self) -> &str {
        self.first_line.rsplit(' ').next().unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and has not been seen to exit (looking reaps it if it has).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Waits until `/readyz` answers 200; returns how long that took from `since`.
    pub fn wait_ready(&self, since: Instant, timeout: Duration) -> Result<Duration, Error> {
        wait_ready(self.url(), since, timeout).map_err(|()| Error::NotReady {
            name: self.spec.name.clone(),
            url: self.url().to_string(),
            timeout,
        })
    }

    /// SIGKILL: none of the process's own shutdown runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the process to exit however long it takes.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().ok()
    }

    /// Starts it again the same way (after a kill, or killing it first).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill9();
        self.spawn()
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for KilnProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// Polls `url/readyz` until it answers 200 or `timeout` has passed since `since`; how long it
/// took from `since`.
pub fn wait_ready(url: &str, since: Instant, timeout: Duration) -> Result<Duration, ()> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    while since.elapsed() < timeout {
        if let Ok(r) = agent.get(&format!("{url}/readyz")).call() {
            if r.status() == 200 {
                return Ok(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in "kiln": `sh -c body`, whose own arguments follow `--` (no script file is
    /// written: exec'ing a file just written races other tests' forks, ETXTBSY).
    fn shell(body: &str, name: &str) -> Spec {
        Spec::new("/bin/sh", name).args(["-c", body, "--"])
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-process-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_url_is_the_end_of_the_first_line_and_arguments_and_environment_arrive() {
        let mut p = shell(
            "echo \"kiln scheduler: $1 $KILN_X on http://127.0.0.1:9\"; exec sleep 30",
            "fake",
        )
        .arg("first")
        .env("KILN_X", "x")
        .start()
        .unwrap();
        assert_eq!(
            p.first_line(),
            "kiln scheduler: first x on http://127.0.0.1:9"
        );
        assert_eq!(p.url(), "http://127.0.0.1:9");
        let pid = p.pid().unwrap();
        p.kill9();
        assert!(!p.is_running());
        // Reaped: no such process any more.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_process_that_ends_before_its_first_line_is_an_error_quoting_its_stderr() {
        let dir = temp("ended");
        let Err(e) = shell("echo 'no such setting' >&2; exit 3", "kiln serve")
            .stderr(Stderr::File(dir.join("stderr")))
            .start()
        else {
            panic!("started");
        };
        let text = e.to_string();
        assert!(
            text.starts_with("kiln serve ended before it printed its address"),
            "{text}"
        );
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with("no such setting"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn dropping_stops_it_with_sigterm_first() {
        let dir = temp("drop");
        let marker = dir.join("terminated");
        let body = format!(
            "trap 'touch {}; exit 0' TERM; echo 'kiln listening on http://x'; \
             while true; do sleep 0.05; done",
            marker.display()
        );
        let p = shell(&body, "fake").start().unwrap();
        drop(p);
        assert!(marker.exists(), "the process did not hear SIGTERM");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn readiness_waits_for_a_200() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            for (i, stream) in listener.incoming().take(3).enumerate() {
                let mut s = stream.unwrap();
                let mut buf = [0; 1024];
                let _ = s.read(&mut buf);
                let status = if i < 2 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        wait_ready(&url, Instant::now(), Duration::from_secs(10)).unwrap();
        server.join().unwrap();
        let closed = "http://127.0.0.1:9";
        assert!(wait_ready(closed, Instant::now(), Duration::from_millis(50)).is_err());
    }
}
