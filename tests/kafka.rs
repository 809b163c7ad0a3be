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
    let _scheduler = Scheduler::start(&topics, &format!("{}-a", topics.prefix), &[]);
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
}
