//! Nothing accepted is lost: injected actor panics, `kill -9` of the whole process, SIGTERM.

use crate::server;

use std::time::Duration;

use serde_json::{json, Value};
use server::Server;

fn numbered(i: usize) -> Value {
    json!({"id": format!("job-{i}"), "language": "python", "source": format!("print({i} * 2)")})
}

/// Submits `n` numbered programs in batches of 20 without waiting.
fn submit_all(s: &Server, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        let batch: Vec<Value> = chunk.iter().map(|&i| numbered(i)).collect();
        let (code, r) = s.post("/v1/submissions/batch", &json!(batch));
        assert_eq!(code, 202, "{r}");
        assert!(
            r.as_array().unwrap().iter().all(|x| x["error"].is_null()),
            "{r}"
        );
    }
}

fn assert_all_correct(s: &Server, n: usize) {
    for i in 0..n {
        let r = s.wait_result(&format!("job-{i}"), Duration::from_secs(120));
        assert_eq!(r["status"], "accepted", "job-{i}: {r}");
        assert_eq!(r["stdout"], format!("{}\n", i * 2), "job-{i}: {r}");
    }
}

#[test]
fn with_20_percent_injected_panics_500_submissions_all_get_their_result() {
    let s = Server::start(
        "panics",
        &[
            ("KILN_INJECT_PANIC_PROBABILITY", "0.2"),
            ("KILN_MAX_ATTEMPTS", "20"),
            ("KILN_MAX_BATCH", "20"),
        ],
    );
    submit_all(&s, 500);
    assert_all_correct(&s, 500);
    let metrics = s.get_text("/metrics");
    let restarts: u64 = metrics
        .lines()
        .find(|l| l.starts_with("kiln_actor_restarts_total{actor=\"pod_runner\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        restarts >= 50,
        "about 100 restarts expected, metrics say {restarts}"
    );
    let redelivered = metrics
        .lines()
        .any(|l| l.starts_with("kiln_redeliveries_total{reason=\"runner_restarted\"}"));
    assert!(redelivered, "redeliveries show in metrics");
}

#[test]
fn kill_9_during_200_submissions_loses_none() {
    let mut s = Server::start("kill9", &[("KILN_MAX_BATCH", "20")]);
    submit_all(&s, 200);
    // Some have finished, some are running, most are queued.
    std::thread::sleep(Duration::from_millis(400));
    s.kill9();
    s.boot();
    assert_all_correct(&s, 200);
}

#[test]
fn sigterm_finishes_the_running_job_and_keeps_queued_ones() {
    let mut s = Server::start("sigterm", &[("KILN_MAX_PARALLEL_JOBS", "1")]);
    let (_, r) = s.post("/v1/submissions", &json!({"id": "slow", "language": "python", "source": "import time; time.sleep(1); print('slow done')"}));
    assert_eq!(r["status"], "queued");
    let (_, r) = s.post(
        "/v1/submissions",
        &json!({"id": "next", "language": "python", "source": "print('next done')"}),
    );
    assert_eq!(r["status"], "queued");
    std::thread::sleep(Duration::from_millis(300));
    let status = s.terminate();
    assert!(status.success(), "clean exit: {status:?}");
    s.boot();
    let slow = s.wait_result("slow", Duration::from_secs(30));
    assert_eq!(slow["stdout"], "slow done\n");
    let next = s.wait_result("next", Duration::from_secs(30));
    assert_eq!(next["stdout"], "next done\n");
}

#[test]
fn a_job_whose_runner_always_crashes_ends_as_internal_error_with_the_reason() {
    let s = Server::start(
        "give-up",
        &[
            ("KILN_INJECT_PANIC_PROBABILITY", "1.0"),
            ("KILN_MAX_ATTEMPTS", "2"),
        ],
    );
    let (code, r) = s.post("/v1/submissions?wait=true", &numbered(1));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "internal_error", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("gave up after 2 attempts") && message.contains("crashed"),
        "{message}"
    );
}
