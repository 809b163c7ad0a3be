//! A real `kiln serve` process for the API tests, on an ephemeral port with its own data dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_harness::{KilnProcess, Spec, Stderr};

use serde_json::Value;

pub struct Server {
    pub base: String,
    pub data_dir: PathBuf,
    process: Option<KilnProcess>,
    env: Vec<(String, String)>,
}

fn unique_dir(name: &str) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "kiln-test-{name}-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

impl Server {
    /// Starts `kiln serve` with `KILN_*` settings from `env` and waits until it is ready.
    pub fn start(name: &str, env: &[(&str, &str)]) -> Server {
        let mut s = Server::unstarted(name, env);
        s.boot();
        s
    }

    /// Starts `kiln serve` after `prepare` has readied its (empty, existing) data dir, e.g. by
    /// mounting a small filesystem there.
    pub fn start_prepared(name: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Server {
        let mut s = Server::unstarted(name, env);
        std::fs::create_dir_all(&s.data_dir).expect("data dir");
        prepare(&s.data_dir);
        s.boot();
        s
    }

    /// Starts `kiln serve` without waiting for a standby pod.
    pub fn start_unready(name: &str, env: &[(&str, &str)]) -> Server {
        let mut s = Server::unstarted(name, env);
        s.spawn();
        s
    }

    fn unstarted(name: &str, env: &[(&str, &str)]) -> Server {
        let data_dir = unique_dir(name);
        let _ = std::fs::remove_dir_all(&data_dir);
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server {
            base: String::new(),
            data_dir,
            process: None,
            env,
        }
    }

    /// (Re)starts the process on the same data dir and waits until it is ready.
    pub fn boot(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    fn spawn(&mut self) {
        let process = Spec::new(env!("CARGO_BIN_EXE_kiln"), "kiln serve")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            // The harness turns warm-cache filling off (Go's takes ~35 s of CPU); the test about
            // warm caches turns it on, into a dir of this server's own.
            .env("KILN_WARM_CACHE_DIR", self.data_dir.join("warm"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(if std::env::var_os("KILN_TEST_LOGS").is_some() {
                Stderr::Inherit
            } else {
                // Kept beside the data dir (which a test may have made a tiny filesystem) and
                // shown only when the process ends before it listens.
                Stderr::File(self.stderr_path())
            })
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = process
            .first_line()
            .strip_prefix("kiln listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", process.first_line()));
        self.base = addr.to_string();
        self.process = Some(process);
    }

    fn stderr_path(&self) -> PathBuf {
        self.data_dir.with_extension("stderr")
    }

    /// Waits for /readyz to say 200: the queue open and a standby pod ready (a Kubernetes pool's
    /// first pods on a busy node can take most of a minute).
    pub fn wait_ready(&self) {
        let process = self.process.as_ref().expect("running");
        if let Err(e) = process.wait_ready(Instant::now(), Duration::from_secs(120)) {
            panic!("{e}");
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().and_then(KilnProcess::pid).unwrap()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// SIGTERM and wait for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut p = self.process.take().expect("running");
        p.terminate().expect("exits")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST JSON; returns status and body (errors included).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        respond(
            ureq::post(&self.url(path))
                .timeout(Duration::from_secs(120))
                .send_json(body.clone()),
        )
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        respond(
            ureq::post(&self.url(path))
                .set("Content-Type", "application/json")
                .send_bytes(body),
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        respond(ureq::get(&self.url(path)).call())
    }

    pub fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .expect("GET works")
            .into_string()
            .expect("text")
    }

    /// Polls GET /v1/submissions/{id} until it has a final status.
    pub fn wait_result(&self, id: &str, timeout: Duration) -> Value {
        let until = Instant::now() + timeout;
        loop {
            let (code, v) = self.get(&format!("/v1/submissions/{id}"));
            if code == 200 && !matches!(v["status"].as_str(), Some("queued" | "running")) {
                return v;
            }
            assert!(
                Instant::now() < until,
                "no result for {id} in time: {code} {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn respond(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(resp) => {
            let code = resp.status();
            (code, resp.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("request failed: {e}"),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file(self.stderr_path());
    }
}

/// A one-request HTTP server on loopback: returns what it received.
pub fn catch_one_request() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        (&stream)
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        format!("{}{}", request_line, String::from_utf8(body).unwrap())
    });
    (url, handle)
}
