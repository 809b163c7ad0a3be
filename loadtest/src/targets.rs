//! Where submissions go: Kiln's HTTP API, its Kafka submissions topic, or the floor (the same
//! programs spawned bare on this host with the toolchains Kiln resolves).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::ledger::Ledger;
use crate::workload::Body;

pub trait Target: Send + Sync {
    /// Sends submission `id` of item `item`. HTTP and the floor record the result before they
    /// return; Kafka returns once the message is handed to the producer.
    fn send(&self, ledger: &Ledger, id: &str, item: usize, seq: u64);
    /// Flushes what is buffered.
    fn finish(&self) {}
    /// Whether submission `seq` goes through Kafka (its result comes from the results topic).
    fn via_kafka(&self, _seq: u64) -> bool {
        false
    }
}

/// Kiln's HTTP API: `POST /v1/submissions?wait=true` with a client-chosen id, polling by id when
/// the answer is not final; a refused request is `http_4xx`. Over several URLs, round robin.
pub struct Http {
    pub urls: Vec<String>,
    next: AtomicUsize,
    agent: ureq::Agent,
    timeout: Duration,
}

impl Http {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Http {
        Http {
            urls,
            next: AtomicUsize::new(0),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(90))
                .max_idle_connections_per_host(1024)
                .build(),
            timeout,
        }
    }

    fn final_status(v: &Value) -> Option<(String, Option<String>)> {
        let status = v["status"].as_str()?;
        if status == "queued" || status == "running" {
            return None;
        }
        Some((status.to_string(), v["stdout"].as_str().map(String::from)))
    }
}

impl Target for Http {
    fn send(&self, ledger: &Ledger, id: &str, item: usize, _seq: u64) {
        let payload = ledger.item(item).payload(id);
        let deadline = Instant::now() + self.timeout;
        let mut base =
            self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()].clone();
        let mut posted = false;
        while Instant::now() < deadline {
            let response = if posted {
                self.agent
                    .get(&format!("{base}/v1/submissions/{id}?wait=true"))
                    .call()
            } else {
                self.agent
                    .post(&format!("{base}/v1/submissions?wait=true"))
                    .set("Content-Type", "application/json")
                    .send_bytes(&payload)
            };
            match response {
                Ok(r) => {
                    posted = true;
                    if let Ok(v) = r.into_json::<Value>() {
                        if let Some((status, stdout)) = Http::final_status(&v) {
                            ledger.got(id, &status, stdout);
                            return;
                        }
                    }
                }
                Err(ureq::Error::Status(code, r)) => match code {
                    400 | 413 | 415 | 422 => {
                        if posted {
                            // A GET refused: the id is not one (cannot happen for ours).
                            ledger.got(id, &format!("http_{code}"), None);
                        } else {
                            let _ = r.into_string();
                            ledger.got(id, "http_4xx", None);
                        }
                        return;
                    }
                    // Not (yet, or any more) known there: submit again, same id (idempotent).
                    404 => posted = false,
                    // Backpressure or a restarting server: wait and try again.
                    _ => std::thread::sleep(Duration::from_millis(50)),
                },
                Err(_) => {
                    // The server is away (killed, restarting): try again, another API if any.
                    std::thread::sleep(Duration::from_millis(100));
                    base = self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()]
                        .clone();
                    posted = false;
                }
            }
        }
    }
}

/// Topic names, as `kiln topics create` and the schedulers see them.
#[derive(Clone, Debug)]
pub struct Topics {
    pub brokers: String,
    pub submissions: String,
    pub results: String,
    pub dead_letter: String,
}

/// Kiln's submissions topic: key and `id` = the submission id; JSON with its content-type header,
/// malformed ones without.
pub struct Kafka {
    topics: Topics,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl Kafka {
    pub fn new(topics: Topics) -> anyhow::Result<Kafka> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &topics.brokers)
            .set("linger.ms", "2")
            .set("enable.idempotence", "true")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        Ok(Kafka { topics, producer })
    }
}

impl Target for Kafka {
    fn send(&self, ledger: &Ledger, id: &str, item: usize, _seq: u64) {
        let it = ledger.item(item);
        let payload = it.payload(id);
        let json = matches!(it.body, Body::Json(_));
        loop {
            let mut record = BaseRecord::to(&self.topics.submissions)
                .key(id)
                .payload(&payload);
            if json {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                }));
            }
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn finish(&self) {
        let _ = self.producer.flush(Duration::from_secs(30));
    }

    fn via_kafka(&self, _seq: u64) -> bool {
        true
    }
}

/// Half of the submissions over HTTP (spread over the APIs), half straight to Kafka.
pub struct Both {
    pub http: Http,
    pub kafka: Kafka,
}

impl Target for Both {
    fn send(&self, ledger: &Ledger, id: &str, item: usize, seq: u64) {
        if seq % 2 == 0 {
            self.http.send(ledger, id, item, seq)
        } else {
            self.kafka.send(ledger, id, item, seq)
        }
    }

    fn finish(&self) {
        self.kafka.finish()
    }

    fn via_kafka(&self, seq: u64) -> bool {
        seq % 2 == 1
    }
}

/// Reads a topic with read_committed from its end at start-up, until `stop`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    dead_letters: bool,
    ledger: Arc<Ledger>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("kiln-loadtest-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    anyhow::ensure!(
        partitions > 0,
        "topic {topic} has no partitions (does it exist?)"
    );
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        list.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&list)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let Some(id) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                continue;
            };
            if dead_letters {
                ledger.got(&id, "dead_letter", None);
                continue;
            }
            let v: Value = m
                .payload()
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null);
            ledger.read_on_topic(
                &id,
                v["status"].as_str().unwrap_or("undecodable"),
                v["stdout"].as_str().map(String::from),
            );
        }
    }))
}

/// The floor: each program compiled and run bare on this host, with the toolchain commands Kiln
/// resolves (the same interpreter and compiler binaries), in a fresh directory, under the same
/// wall limits. No sandbox: hostile programs are left out of it (`floor = false`).
pub struct Floor {
    registry: kiln::languages::Registry,
    policy: kiln::submission::LimitPolicy,
}

impl Floor {
    pub fn new() -> anyhow::Result<Floor> {
        Ok(Floor {
            registry: kiln::languages::Registry::load(None).map_err(anyhow::Error::msg)?,
            policy: Default::default(),
        })
    }

    /// Runs `argv` in `dir` with `stdin` and a wall limit: (exit code or None on timeout, stdout).
    fn spawn(
        argv: &[String],
        env: &[(String, String)],
        dir: &std::path::Path,
        stdin: &[u8],
        wall: Duration,
    ) -> (Option<i32>, Vec<u8>) {
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return (Some(127), Vec::new());
        };
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let until = Instant::now() + wall;
        let code = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.code().or(Some(128)),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        (code, reader.join().unwrap_or_default())
    }
}

impl Target for Floor {
    fn send(&self, ledger: &Ledger, id: &str, item: usize, _seq: u64) {
        let it = ledger.item(item);
        let Body::Json(body) = &it.body else {
            ledger.got(id, "http_4xx", None);
            return;
        };
        let sub: kiln::submission::Submission = match serde_json::from_value(body.clone()) {
            Ok(s) => s,
            Err(_) => return ledger.got(id, "http_4xx", None),
        };
        let job = match sub.resolve(id, &self.registry, &self.policy) {
            Ok(j) => j,
            Err(_) => return ledger.got(id, "rejected", None),
        };
        let dir = std::env::temp_dir().join(format!("kiln-floor-{id}"));
        let _ = std::fs::create_dir_all(&dir);
        for f in &job.files {
            let _ = std::fs::write(dir.join(&f.name), &f.content.0);
        }
        let mut status = None;
        if let Some(c) = &job.compile {
            let (code, _) = Floor::spawn(
                &c.argv,
                &job.env,
                &dir,
                b"",
                Duration::from_millis(c.limits.wall_time_ms),
            );
            if code != Some(0) {
                status = Some(("compile_error".to_string(), None));
            }
        }
        let (status, stdout) = status.unwrap_or_else(|| {
            let (code, out) = Floor::spawn(
                &job.run.argv,
                &job.env,
                &dir,
                &job.stdin.0,
                Duration::from_millis(job.run.limits.wall_time_ms),
            );
            let status = match code {
                None => "time_limit_exceeded",
                Some(0) => "accepted",
                Some(_) => "runtime_error",
            };
            (
                status.to_string(),
                Some(String::from_utf8_lossy(&out).into_owned()),
            )
        });
        let _ = std::fs::remove_dir_all(&dir);
        ledger.got(id, &status, stdout);
    }
}
