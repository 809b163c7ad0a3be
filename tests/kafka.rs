//! Kiln over a real Apache Kafka broker (scripts/kafka): partitioned submissions in, exactly one
//! committed result out, whatever happens to the scheduler, and poison messages dead-lettered.

#[path = "common/kafka.rs"]
mod kafka;

use std::collections::HashMap;
use std::time::Duration;

use kafka::{broker, Scheduler, Topics};
use rdkafka::producer::Producer;
use serde_json::{json, Value};

fn submission(id: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"id": id, "language": "python", "source": format!("print({n} * 2)")}),
    )
    .unwrap()
}

/// Produces `n` numbered submissions, `id-<i>` printing `2 i`.
fn produce(topics: &Topics, prefix: &str, range: std::ops::Range<usize>) {
    let p = topics.producer();
    for i in range {
        let id = format!("{prefix}-{i}");
        topics.send(&p, &id, &submission(&id, i), None);
    }
    p.flush(Duration::from_secs(30)).expect("flushed");
}

/// Every id has exactly one committed result, with the right output.
fn assert_exactly_once(by_id: &HashMap<String, Vec<Value>>, prefix: &str, n: usize) {
    let mut missing = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        match by_id.get(&id).map(Vec::as_slice) {
            None | Some([]) => missing.push(id),
            Some([r]) => {
                assert_eq!(r["status"], "accepted", "{id}: {r}");
                assert_eq!(r["stdout"], format!("{}\n", i * 2), "{id}: {r}");
            }
            Some(several) => panic!("{id} has {} committed results", several.len()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} ids have no result, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(by_id.len(), n, "results for ids never submitted");
}

#[test]
fn five_thousand_submissions_over_eight_partitions_get_one_result_each() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "5k", 8);
    let _scheduler = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    produce(&topics, "s", 0..5000);
    let by_id = topics.results_by_id(5000, Duration::from_secs(300));
    assert_exactly_once(&by_id, "s", 5000);
}

#[test]
fn a_scheduler_killed_three_times_loses_and_duplicates_nothing() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "kill9", 4);
    let tid = format!("{}-a", topics.prefix);
    let n = 600;
    produce(&topics, "k", 0..n);
    // Each time: wait until this instance has committed something, then kill it mid-stream.
    let mut committed = 0;
    for pause_ms in [150, 400, 50] {
        let mut s = Scheduler::start(&topics, &tid, &[]);
        let seen = topics
            .read_all(
                &topics.results(),
                committed + 1,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .len();
        assert!(
            seen > committed,
            "the scheduler made progress before it was killed"
        );
        std::thread::sleep(Duration::from_millis(pause_ms));
        s.kill9();
        committed = topics
            .read_all(&topics.results(), n, Duration::from_secs(2), Duration::ZERO)
            .len();
        assert!(committed < n, "killed before the end: make n larger");
    }
    let _last = Scheduler::start(&topics, &tid, &[]);
    let by_id = topics.results_by_id(n, Duration::from_secs(300));
    assert_exactly_once(&by_id, "k", n);
}

#[test]
fn poison_messages_are_dead_lettered_with_their_reason_and_good_ones_complete() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "poison", 2);
    let scheduler = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let p = topics.producer();
    let poisons: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        (
            "garbage",
            vec![0xff, 0x00, 0x13, 0x37],
            None,
            "not valid UTF-8",
        ),
        (
            "truncated",
            vec![1, 2, 3],
            Some("application/x-kiln-bincode"),
            "malformed bincode",
        ),
        (
            "no-id",
            br#"{"language": "python", "source": "print(1)"}"#.to_vec(),
            None,
            "needs an \"id\"",
        ),
        (
            "odd-type",
            b"print(1)".to_vec(),
            Some("text/x-python"),
            "unknown content-type",
        ),
        (
            "bad-json",
            b"{\"id\": ".to_vec(),
            Some("application/json"),
            "malformed JSON",
        ),
    ];
    for (i, (key, payload, ct, _)) in poisons.iter().enumerate() {
        let id = format!("g-{i}");
        topics.send(&p, &id, &submission(&id, i), None);
        topics.send(&p, key, payload, *ct);
    }
    // A decodable but invalid submission gets a rejected result, not a dead letter.
    let invalid = json!({"id": "unknown-language", "language": "cobol-1959", "source": "x"});
    topics.send(&p, "unknown-language", invalid.to_string().as_bytes(), None);
    p.flush(Duration::from_secs(30)).unwrap();

    let by_id = topics.results_by_id(poisons.len() + 1, Duration::from_secs(120));
    for i in 0..poisons.len() {
        let r = &by_id[&format!("g-{i}")];
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["stdout"], format!("{}\n", i * 2));
    }
    let rejected = &by_id["unknown-language"][0];
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert!(rejected["message"].as_str().unwrap().contains("cobol-1959"));

    let dead = topics.read_all(
        &topics.dead_letter(),
        poisons.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    assert_eq!(
        dead.len(),
        poisons.len(),
        "each poison message once: {dead:?}"
    );
    for (key, payload, _, reason) in &poisons {
        let (_, headers, body) = dead
            .iter()
            .find(|(k, _, _)| k == key)
            .unwrap_or_else(|| panic!("{key} was not dead-lettered"));
        assert_eq!(body, payload, "{key}: the original bytes are kept");
        assert!(
            headers["kiln-reason"].contains(reason),
            "{key}: {headers:?}"
        );
        assert_eq!(headers["kiln-source-topic"], topics.submissions());
        assert!(
            headers["kiln-source-offset"].parse::<i64>().is_ok(),
            "{headers:?}"
        );
    }
    let counted = scheduler.metric("kiln_kafka_dead_letters_total");
    assert_eq!(counted, poisons.len() as f64, "dead letters are counted");
    assert!(scheduler.metric("kiln_kafka_transactions_total{outcome=\"committed\"}") >= 1.0);
}

#[test]
fn two_schedulers_share_the_partitions_and_one_killed_mid_run_duplicates_nothing() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "pair", 8);
    let n = 800;
    produce(&topics, "p", 0..n);
    let _a = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let mut b = Scheduler::start(&topics, &format!("{}-b", topics.prefix), &[]);
    let seen = topics
        .read_all(
            &topics.results(),
            50,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .len();
    assert!(seen >= 50, "both at work");
    b.kill9();
    let by_id = topics.results_by_id(n, Duration::from_secs(300));
    assert_exactly_once(&by_id, "p", n);
}

#[test]
fn injected_actor_panics_still_give_one_correct_result_each() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "panics", 4);
    let s = Scheduler::start(
        &topics,
        &format!("{}-a", topics.prefix),
        &[
            ("KILN_INJECT_PANIC_PROBABILITY", "0.2"),
            ("KILN_MAX_ATTEMPTS", "20"),
        ],
    );
    produce(&topics, "x", 0..300);
    let by_id = topics.results_by_id(300, Duration::from_secs(300));
    assert_exactly_once(&by_id, "x", 300);
    let restarts = s.metric("kiln_actor_restarts_total{actor=\"pod_runner\"}");
    assert!(
        restarts >= 20.0,
        "about 60 restarts expected, metrics say {restarts}"
    );
}

#[test]
fn bincode_submissions_from_a_rust_producer_get_bincode_results() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "bincode", 2);
    let _s = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let p = topics.producer();
    for i in 0..20 {
        let sub = kiln::submission::Submission {
            id: Some(format!("b-{i}")),
            language: "python".into(),
            source: Some(format!(
                "import sys\nsys.stdout.buffer.write(bytes([{i}, 255]))"
            )),
            ..Default::default()
        };
        let bytes = bincode::serde::encode_to_vec(&sub, bincode::config::standard()).unwrap();
        topics.send(
            &p,
            &format!("b-{i}"),
            &bytes,
            Some(kiln::queue::kafka::BINCODE),
        );
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let results = topics.read_all(
        &topics.results(),
        20,
        Duration::from_secs(120),
        Duration::from_secs(2),
    );
    assert_eq!(results.len(), 20);
    for (key, headers, payload) in results {
        assert_eq!(headers["content-type"], kiln::queue::kafka::BINCODE);
        let (r, _): (kiln::result::RunResult, usize) =
            bincode::serde::decode_from_slice(&payload, bincode::config::standard()).unwrap();
        let i: u8 = key.strip_prefix("b-").unwrap().parse().unwrap();
        assert_eq!(r.id, key);
        assert_eq!(r.outcome.stdout.0, [i, 255], "bytes, not text, round-trip");
    }
}

/// A broker of this test's own (another port), so that killing it disturbs no other test.
struct PrivateBroker {
    port: u16,
}

impl PrivateBroker {
    fn script(&self, action: &str) -> std::process::ExitStatus {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
            .arg(action)
            .env("KILN_KAFKA_PORT", self.port.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("scripts/kafka runs")
    }

    fn kill9(&self) {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let pidfile = format!("{home}/.cache/kiln/kafka/run-{}/broker.pid", self.port);
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.script("down");
    }
}

#[test]
fn one_message_with_tests_gives_one_result_with_all_of_them() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "sets", 2);
    let _scheduler = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let p = topics.producer();
    for id in ["set-0", "set-1"] {
        let body = json!({"id": id, "language": "c",
            "source": "#include <stdio.h>\nint main(void) { int x; scanf(\"%d\", &x); printf(\"%d\\n\", x + 1); return 0; }",
            "tests": [{"stdin": "1", "expected_output": "2"}, {"stdin": "2", "expected_output": "3"}, {"stdin": "3", "expected_output": "5"}]});
        topics.send(&p, id, &serde_json::to_vec(&body).unwrap(), None);
    }
    p.flush(Duration::from_secs(30)).expect("flushed");
    let by_id = topics.results_by_id(2, Duration::from_secs(120));
    for id in ["set-0", "set-1"] {
        let results = &by_id[id];
        assert_eq!(results.len(), 1, "{id}: one committed result");
        let r = &results[0];
        assert_eq!(r["status"], "wrong_answer", "{r}");
        let statuses: Vec<&str> = r["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["accepted", "accepted", "wrong_answer"]);
        assert_eq!(r["tests"][2]["stdout"], "4\n");
    }
}

#[test]
fn a_broker_killed_and_restarted_mid_run_loses_nothing() {
    if broker().is_none() {
        return;
    }
    let private = PrivateBroker { port: 19092 };
    assert!(private.script("up").success(), "a second broker starts");
    let topics = Topics::create(&format!("127.0.0.1:{}", private.port), "broker-restart", 4);
    let n = 400;
    produce(&topics, "r", 0..n);
    let _s = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let seen = topics
        .read_all(
            &topics.results(),
            20,
            Duration::from_secs(60),
            Duration::ZERO,
        )
        .len();
    assert!(seen >= 20, "work started before the broker died");
    private.kill9();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        private.script("up").success(),
        "the broker comes back on its data"
    );
    let by_id = topics.results_by_id(n, Duration::from_secs(300));
    assert_exactly_once(&by_id, "r", n);
}

#[test]
fn kiln_api_answers_wait_true_from_a_scheduler_in_another_process() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "api", 4);
    let _scheduler = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let api = kafka::Api::start(&topics, &["api"], &format!("{}-api", topics.prefix));
    let (code, r) = api.post(
        "/v1/submissions?wait=true",
        &json!({"language": "python", "source": "print(input()[::-1])", "stdin": "kiln"}),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["stdout"], "nlik\n", "{r}");
    let id = r["id"].as_str().unwrap();
    let (code, again) = api.get(&format!("/v1/submissions/{id}"));
    assert_eq!((code, &again["stdout"]), (200, &r["stdout"]));
    // Without waiting: queued, then done; and the id is the key of exactly one result.
    let (code, q) = api.post(
        "/v1/submissions",
        &json!({"id": "api-queued-1", "language": "python", "source": "print(7)"}),
    );
    assert_eq!((code, q["status"].as_str()), (202, Some("queued")), "{q}");
    // A client retrying before the result exists: not produced again.
    let (code, q) = api.post(
        "/v1/submissions",
        &json!({"id": "api-queued-1", "language": "python", "source": "print(7)"}),
    );
    assert_eq!((code, q["status"].as_str()), (202, Some("queued")), "{q}");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, s) = api.get("/v1/submissions/api-queued-1");
        assert_eq!(code, 200, "{s}");
        if s["status"] == "accepted" {
            assert_eq!(s["stdout"], "7\n");
            break;
        }
        assert!(std::time::Instant::now() < until, "never finished: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, e) = api.post(
        "/v1/submissions",
        &json!({"language": "cobol-1959", "source": "x"}),
    );
    assert_eq!(
        code, 422,
        "bad input is refused before it reaches Kafka: {e}"
    );
    let by_id = topics.results_by_id(2, Duration::from_secs(30));
    assert_eq!(by_id["api-queued-1"].len(), 1);
}

#[test]
fn kiln_serve_with_the_kafka_queue_is_api_and_scheduler_in_one_process() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "serve-kafka", 2);
    let serve = kafka::Api::start(
        &topics,
        &["serve", "--queue", "kafka"],
        &format!("{}-serve", topics.prefix),
    );
    let (code, r) = serve.post(
        "/v1/submissions?wait=true",
        &json!({"id": "one-process", "language": "python", "source": "print('both')"}),
    );
    assert_eq!((code, r["stdout"].as_str()), (200, Some("both\n")), "{r}");
    let by_id = topics.results_by_id(1, Duration::from_secs(30));
    assert_eq!(
        by_id["one-process"].len(),
        1,
        "published on the results topic once"
    );
}

#[test]
fn the_same_id_produced_again_while_pending_runs_and_answers_once() {
    let Some(brokers) = broker() else { return };
    let topics = Topics::create(&brokers, "dup", 2);
    let p = topics.producer();
    // Produced before the scheduler starts, so that all copies are pending together.
    for _ in 0..3 {
        topics.send(&p, "twice", &submission("twice", 21), None);
    }
    for i in 0..10 {
        let id = format!("d-{i}");
        topics.send(&p, &id, &submission(&id, i), None);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let _s = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
    let by_id = topics.results_by_id(11, Duration::from_secs(120));
    assert_eq!(
        by_id["twice"].len(),
        1,
        "one result for the id: {:?}",
        by_id["twice"]
    );
    assert_eq!(by_id["twice"][0]["stdout"], "42\n");
    for i in 0..10 {
        assert_eq!(by_id[&format!("d-{i}")].len(), 1);
    }
}

#[test]
fn a_scheduler_whose_brokers_do_not_answer_waits_and_says_so_in_readyz() {
    // Nothing listens on port 1 of loopback.
    let mut scheduler = kiln_harness::Spec::new(env!("CARGO_BIN_EXE_kiln"), "kiln scheduler")
        .args([
            "scheduler",
            "--brokers",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "error")
        .start()
        .unwrap();
    let ops = scheduler.url().to_string();
    std::thread::sleep(Duration::from_secs(2));
    let r = ureq::get(&format!("{ops}/readyz")).call();
    let still_running = scheduler.is_running();
    scheduler.kill9();
    assert!(still_running, "it keeps trying instead of exiting");
    match r {
        Err(ureq::Error::Status(503, body)) => {
            let v: Value = body.into_json().unwrap();
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("connecting to Kafka at 127.0.0.1:1"),
                "{v}"
            );
        }
        other => panic!("/readyz should be 503 while connecting: {other:?}"),
    }
}
