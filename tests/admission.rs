//! Every door into the queue applies the same admission against a real `kiln serve`: `/v1`
//! (single and batch), Judge0 (single and batch), Piston's execute and its WebSocket each refuse a
//! full queue, a full disk and too many bytes, in their own API's shape, and queue nothing.

use crate::server;

use std::time::Duration;

use serde_json::{json, Value};
use server::Server;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

/// Long enough that a submission queued by mistake is still counted when the test looks.
const SLOW: &str = "import time; time.sleep(1); print('slept')";

/// A status, its Retry-After header and its JSON body.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

fn post(s: &Server, path: &str, body: &Value) -> Reply {
    let r = match ureq::post(&s.url(path))
        .timeout(Duration::from_secs(60))
        .send_json(body.clone())
    {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path} failed: {e}"),
    };
    Reply {
        status: r.status(),
        retry_after: r.header("Retry-After").map(str::to_string),
        body: r.into_json().unwrap_or(Value::Null),
    }
}

fn kiln(id: &str, stdin: &str) -> Value {
    json!({"id": id, "language": "python", "source": SLOW, "stdin": stdin})
}

fn judge0(stdin: &str) -> Value {
    json!({"language_id": 71, "source_code": SLOW, "stdin": stdin})
}

fn piston(stdin: &str) -> Value {
    json!({"language": "python", "version": "*", "files": [{"content": SLOW}], "stdin": stdin})
}

/// Piston's WebSocket: the frame answering `init`, and how the socket closed.
fn piston_ws(s: &Server, stdin: &str) -> (Value, u16) {
    let url = s.url("/api/v2/connect").replacen("http://", "ws://", 1);
    let (mut ws, _) = tungstenite::connect(url).expect("the WebSocket opens");
    if let MaybeTlsStream::Plain(t) = ws.get_ref() {
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    }
    let mut init = piston(stdin);
    init["type"] = json!("init");
    ws.send(Message::text(init.to_string())).unwrap();
    let mut frame = Value::Null;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if frame.is_null() => {
                frame = serde_json::from_str(t.as_str()).unwrap()
            }
            Ok(Message::Close(Some(f))) => return (frame, f.code.into()),
            Ok(_) => {}
            Err(e) => panic!("the WebSocket ended without a close frame: {e}"),
        }
    }
}

/// The value of a metric line of `/metrics` (0 when absent).
fn metric(s: &Server, line_start: &str) -> f64 {
    s.get_text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Nothing is queued or running: the queue's depth as `/metrics` and Judge0's `/workers` show it,
/// and the given `/v1` ids are unknown.
fn assert_nothing_queued(s: &Server, door: &str, ids: &[&str]) {
    assert_eq!(
        metric(s, "kiln_queue_depth "),
        0.0,
        "{door} queued something"
    );
    let (_, workers) = s.get("/judge0/workers");
    assert_eq!(workers[0]["size"], 0, "{door} queued something: {workers}");
    for id in ids {
        let (code, r) = s.get(&format!("/v1/submissions/{id}"));
        assert_eq!(code, 404, "{door} queued {id}: {r}");
    }
}

/// Asks every door to queue a slow program with `stdin`, and checks each refusal with `check`
/// (the door's name and what it answered); afterwards nothing is queued.
fn at_every_door(s: &Server, stdin: &str, check: impl Fn(&str, Reply)) {
    check("/v1", post(s, "/v1/submissions", &kiln("one", stdin)));
    assert_nothing_queued(s, "/v1", &["one"]);

    let batch = json!([kiln("first", stdin), kiln("second", stdin)]);
    check("/v1 batch", post(s, "/v1/submissions/batch", &batch));
    assert_nothing_queued(s, "/v1 batch", &["first", "second"]);

    check("Judge0", post(s, "/judge0/submissions", &judge0(stdin)));
    assert_nothing_queued(s, "Judge0", &[]);

    let batch = json!({"submissions": [judge0(stdin), judge0(stdin)]});
    check("Judge0 batch", post(s, "/judge0/submissions/batch", &batch));
    assert_nothing_queued(s, "Judge0 batch", &[]);

    check("Piston", post(s, "/api/v2/execute", &piston(stdin)));
    assert_nothing_queued(s, "Piston", &[]);

    let (frame, close) = piston_ws(s, stdin);
    assert_eq!(close, 4002, "Piston's Notified Error after {frame}");
    assert_eq!(frame["type"], "error", "{frame}");
    check(
        "Piston WebSocket",
        Reply {
            status: close,
            retry_after: None,
            body: frame,
        },
    );
    assert_nothing_queued(s, "Piston WebSocket", &[]);
}

/// The refusal's message: Kiln's and Judge0's `error`, Piston's `message`.
fn message<'a>(door: &str, r: &'a Reply) -> &'a str {
    let field = if door.starts_with("Piston") {
        "message"
    } else {
        "error"
    };
    r.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{door}: no {field} in {}", r.body))
}

#[test]
fn a_full_queue_is_refused_at_every_door_in_its_own_shape() {
    let s = Server::start("admit-full", &[("KILN_MAX_QUEUE_DEPTH", "0")]);
    at_every_door(&s, "", |door, r| {
        match door {
            "/v1" | "/v1 batch" | "Piston" => {
                assert_eq!(r.status, 429, "{door}: {}", r.body);
                assert_eq!(r.retry_after.as_deref(), Some("1"), "{door}");
            }
            "Judge0" | "Judge0 batch" => {
                assert_eq!(r.status, 503, "{door}: {}", r.body);
                assert_eq!(r.body, json!({"error": "queue is full"}), "{door}");
                return;
            }
            _ => {}
        }
        assert!(
            message(door, &r).contains("retry later"),
            "{door}: {}",
            r.body
        );
    });
    assert_eq!(
        metric(&s, "kiln_rejected_requests_total{reason=\"queue_full\"} "),
        6.0
    );
}

#[test]
fn too_many_bytes_are_refused_at_every_door_in_its_own_shape() {
    let s = Server::start("admit-bytes", &[("KILN_MAX_QUEUE_BYTES", "100")]);
    // Each submission alone carries more than the queue may hold.
    let stdin = "x".repeat(200);
    at_every_door(&s, &stdin, |door, r| match door {
        "Judge0" | "Judge0 batch" => {
            assert_eq!(r.status, 503, "{door}: {}", r.body);
            assert_eq!(r.body, json!({"error": "queue is full"}), "{door}");
        }
        _ => {
            if door != "Piston WebSocket" {
                assert_eq!(r.status, 429, "{door}: {}", r.body);
                assert_eq!(r.retry_after.as_deref(), Some("1"), "{door}");
            }
            assert!(
                message(door, &r).contains("bytes of submissions"),
                "{door}: {}",
                r.body
            );
        }
    });
    assert_eq!(
        metric(&s, "kiln_rejected_requests_total{reason=\"queue_full\"} "),
        6.0
    );
}

#[test]
fn a_full_disk_is_refused_at_every_door_in_its_own_shape() {
    // More free space than any disk has: the data dir's disk counts as full.
    let s = Server::start(
        "admit-disk",
        &[("KILN_MIN_FREE_BYTES", "1152921504606846976")],
    );
    let dir = s.data_dir.display().to_string();
    at_every_door(&s, "", |door, r| {
        match door {
            "/v1" | "/v1 batch" => assert_eq!(r.status, 507, "{door}: {}", r.body),
            "Judge0" | "Judge0 batch" | "Piston" => {
                assert_eq!(r.status, 503, "{door}: {}", r.body)
            }
            _ => {}
        }
        if door != "Piston WebSocket" {
            assert_eq!(r.retry_after.as_deref(), Some("1"), "{door}");
        }
        let m = message(door, &r);
        assert!(m.contains(&dir) && m.contains("bytes free"), "{door}: {m}");
    });
    assert_eq!(
        metric(&s, "kiln_rejected_requests_total{reason=\"disk_full\"} "),
        6.0
    );
}

/// The defect this pins: Piston's execute skipped the bound, so 40 concurrent runs against a
/// queue of 3 were all accepted.
#[test]
fn concurrent_piston_executes_past_the_bound_get_429() {
    let s = Server::start(
        "admit-piston-burst",
        &[
            ("KILN_MAX_QUEUE_DEPTH", "3"),
            ("KILN_MAX_PARALLEL_JOBS", "1"),
        ],
    );
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..40)
            .map(|_| scope.spawn(|| post(&s, "/api/v2/execute", &piston(""))))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut ran = 0;
    let mut refused = 0;
    for r in &replies {
        match r.status {
            200 => {
                assert_eq!(r.body["run"]["stdout"], "slept\n", "{}", r.body);
                ran += 1;
            }
            429 => {
                let m = r.body["message"].as_str().unwrap_or_default();
                assert!(m.contains("retry later"), "{}", r.body);
                refused += 1;
            }
            other => panic!("expected 200 or 429, got {other}: {}", r.body),
        }
    }
    assert!(ran >= 1, "some ran");
    assert!(
        refused >= 30,
        "most of 40 were refused by a queue of 3 ({ran} ran, {refused} refused)"
    );
}
