//! A real Kafka broker (scripts/kafka) and real `kiln scheduler` processes for the Kafka tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_harness::{KilnProcess, Spec, Stderr};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The broker's address, started by `scripts/kafka up` when it is not running. Under CI a broker
/// that cannot be started fails the test; elsewhere the test is skipped with the reason.
pub fn broker() -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let running = Command::new(script)
        .arg("status")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !running {
        let up = Command::new(script).arg("up").status();
        if !up.is_ok_and(|s| s.success()) {
            assert!(
                std::env::var("CI").is_err(),
                "CI: the Kafka broker could not be started (scripts/kafka up)"
            );
            eprintln!("skipping: no Kafka broker (run scripts/kafka up)");
            return None;
        }
    }
    Some("127.0.0.1:9092".into())
}

/// Three topics of its own for one test, and the settings that name them.
pub struct Topics {
    pub brokers: String,
    pub prefix: String,
}

impl Topics {
    pub fn create(brokers: &str, name: &str, partitions: i32) -> Topics {
        let prefix = format!("t-{name}-{}-{}", std::process::id(), kiln::result::now_ms());
        let t = Topics {
            brokers: brokers.into(),
            prefix,
        };
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["topics", "create", "--brokers", brokers, "--partitions"])
            .arg(partitions.to_string())
            .envs(t.env())
            .output()
            .expect("kiln topics create runs");
        assert!(
            out.status.success(),
            "kiln topics create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub fn submissions(&self) -> String {
        format!("{}.submissions", self.prefix)
    }
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }
    pub fn dead_letter(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// The `KILN_KAFKA__*` settings for these topics and a group of their own.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KILN_KAFKA__SUBMISSIONS_TOPIC".into(), self.submissions()),
            ("KILN_KAFKA__RESULTS_TOPIC".into(), self.results()),
            ("KILN_KAFKA__DEAD_LETTER_TOPIC".into(), self.dead_letter()),
            ("KILN_KAFKA__GROUP".into(), format!("{}.group", self.prefix)),
        ]
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// Produces one message to the submissions topic.
    pub fn send(&self, p: &BaseProducer, key: &str, payload: &[u8], content_type: Option<&str>) {
        let topic = self.submissions();
        let mut headers = OwnedHeaders::new();
        if let Some(ct) = content_type {
            headers = headers.insert(Header {
                key: "content-type",
                value: Some(ct),
            });
        }
        loop {
            let record = BaseRecord::to(&topic)
                .key(key)
                .payload(payload)
                .headers(headers.clone());
            match p.send(record) {
                Ok(()) => return,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }

    /// Every committed message of `topic` (read_committed), read until `want` have come or
    /// `timeout` passes, then for `quiet` more so that duplicates would show: (key, headers,
    /// payload) in order of arrival.
    pub fn read_all(
        &self,
        topic: &str,
        want: usize,
        timeout: Duration,
        quiet: Duration,
    ) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set(
                "group.id",
                format!("{}.reader-{}", self.prefix, kiln::result::now_ms()),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut quiet_until: Option<Instant> = None;
        loop {
            if out.len() >= want && quiet_until.is_none() {
                quiet_until = Some(Instant::now() + quiet);
            }
            let now = Instant::now();
            if now >= deadline || quiet_until.is_some_and(|q| now >= q) {
                return out;
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    headers,
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
    }

    /// Committed results by id, as JSON.
    pub fn results_by_id(&self, want: usize, timeout: Duration) -> HashMap<String, Vec<Value>> {
        let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
        for (key, _, payload) in
            self.read_all(&self.results(), want, timeout, Duration::from_secs(3))
        {
            let v: Value = serde_json::from_slice(&payload).expect("a JSON result");
            by_id.entry(key).or_default().push(v);
        }
        by_id
    }
}

/// Starts a `kiln` process on `topics` (quiet, no warm caches); its first line is its start-up
/// report.
fn spawn_kiln(name: &str, spec: Spec, topics: &Topics) -> KilnProcess {
    spec.envs(topics.env())
        .stderr(if std::env::var_os("KILN_TEST_LOGS").is_some() {
            Stderr::Inherit
        } else {
            Stderr::Null
        })
        .start()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A `kiln scheduler` process.
pub struct Scheduler {
    process: KilnProcess,
    /// Where its /healthz, /readyz and /metrics answer.
    pub ops: String,
}

impl Scheduler {
    pub fn start(topics: &Topics, transactional_id: &str, extra: &[(&str, &str)]) -> Scheduler {
        let spec = Spec::new(env!("CARGO_BIN_EXE_kiln"), "kiln scheduler")
            .args([
                "scheduler",
                "--brokers",
                &topics.brokers,
                "--listen",
                "127.0.0.1:0",
            ])
            .env("KILN_KAFKA__TRANSACTIONAL_ID", transactional_id)
            .envs(extra.iter().copied());
        let process = spawn_kiln("kiln scheduler", spec, topics);
        let first = process.first_line();
        assert!(first.starts_with("kiln scheduler:"), "{first}");
        let ops = process.url().to_string();
        Scheduler { process, ops }
    }

    /// The value of the first metric line starting with `prefix`, or 0.
    pub fn metric(&self, prefix: &str) -> f64 {
        ureq::get(&format!("{}/metrics", self.ops))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with(prefix))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `kiln api` (or `kiln serve --queue kafka`) process: the HTTP API in Kafka mode.
pub struct Api {
    process: KilnProcess,
    pub base: String,
    data_dir: std::path::PathBuf,
}

impl Api {
    /// `args`: `["api"]` or `["serve", "--queue", "kafka"]`.
    pub fn start(topics: &Topics, args: &[&str], instance: &str) -> Api {
        let data_dir =
            std::env::temp_dir().join(format!("kiln-test-{instance}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let spec = Spec::new(env!("CARGO_BIN_EXE_kiln"), "kiln api")
            .args(args)
            .args([
                "--brokers",
                &topics.brokers,
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data_dir)
            .env("KILN_KAFKA__TRANSACTIONAL_ID", instance);
        let process = spawn_kiln("kiln api", spec, topics);
        let first = process.first_line();
        let base = first
            .strip_prefix("kiln api listening on ")
            .or_else(|| first.strip_prefix("kiln listening on "))
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Api {
            process,
            base,
            data_dir,
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        match ureq::post(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(120))
            .send_json(body.clone())
        {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        match ureq::get(&format!("{}{path}", self.base)).call() {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.process.kill9();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
