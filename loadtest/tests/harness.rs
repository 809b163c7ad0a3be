//! kiln-loadtest driving real Kiln deployments it starts itself, with chaos: the reports must
//! show nothing lost, nothing duplicated, every status right (never a timing). And the accounting
//! must catch loss when there is some.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn loadtest(args: &[&str], name: &str) -> (i32, Value, String) {
    let json =
        std::env::temp_dir().join(format!("kiln-loadtest-{name}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-loadtest"))
        .args(args)
        // The suite's programs need no warm toolchain cache; filling Go's costs ~35 s of CPU.
        .args(["--kiln-env", "KILN_WARM_CACHES=false", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("kiln-loadtest runs");
    let stdout =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_file(&json);
    (out.status.code().unwrap_or(-1), report, stdout)
}

fn workload(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name)
        .display()
        .to_string()
}

fn assert_clean(report: &Value, output: &str, sent: u64) {
    assert_eq!(report["sent"], sent, "{output}");
    assert_eq!(report["results"], sent, "{output}");
    assert_eq!(report["lost"], 0, "{output}");
    assert_eq!(report["duplicated"], 0, "{output}");
    assert_eq!(report["wrong_status"], 0, "{output}");
}

#[test]
fn http_under_sigkill_loses_and_duplicates_nothing() {
    let (code, report, output) = loadtest(
        &[
            "--target",
            "http",
            "--spawn",
            "--rate",
            "30",
            "--duration",
            "6s",
            "--workload",
            &workload("smoke.toml"),
            "--chaos-kill-every",
            "2s",
        ],
        "http",
    );
    assert_eq!(code, 0, "{output}");
    let sent = report["sent"].as_u64().unwrap();
    assert!(sent >= 150, "{output}");
    assert_clean(&report, &output, sent);
    let kills = report["chaos"].as_array().unwrap();
    assert!(
        kills.len() >= 2,
        "kiln serve was killed during the run: {output}"
    );
    // The floor ran beside it, with like-for-like ratios.
    assert!(report["floor"]["results"].as_u64().unwrap() > 0, "{output}");
    assert!(report["ratios"]["p50"].as_f64().unwrap() > 0.0, "{output}");
}

#[test]
fn the_whole_distributed_shape_under_chaos_loses_nothing_and_uses_no_pod_twice() {
    // The project's broker and kwok cluster, two kiln api, two kiln scheduler --pods kubernetes;
    // half the load over HTTP, half straight to Kafka; scheduler #0 SIGKILLed and restarted, a
    // standby pod deleted from outside.
    let (code, report, output) = loadtest(
        &[
            "--spawn",
            "--topology",
            "kafka-k8s",
            "--apis",
            "2",
            "--schedulers",
            "2",
            "--target",
            "both",
            "--rate",
            "30",
            "--count",
            "300",
            "--workload",
            &workload("smoke.toml"),
            "--chaos-kill-every",
            "4s",
            "--chaos-delete-pod",
            "--no-floor",
        ],
        "distributed",
    );
    assert_eq!(code, 0, "{output}");
    assert_clean(&report, &output, 300);
    let pods = &report["pods"];
    assert_eq!(pods["used_twice"], 0, "{output}");
    assert!(pods["ran_a_job"].as_u64().unwrap() >= 200, "{output}");
    let chaos: Vec<String> = report["chaos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(
        chaos
            .iter()
            .any(|c| c.contains("SIGKILLed kiln scheduler #0")),
        "{chaos:?}"
    );
    assert!(
        chaos.iter().any(|c| c.contains("deleted standby pod")),
        "{chaos:?}"
    );
    // Both paths carried load: HTTP refusals (4xx) and Kafka ones (rejected results).
    let programs = report["details"]["programs"].as_array().unwrap();
    let unknown = programs
        .iter()
        .find(|p| p["program"] == "unknown-language")
        .expect("the mix has invalid submissions");
    assert!(
        unknown["statuses"]["http_4xx"].as_u64().unwrap_or(0) > 0,
        "{output}"
    );
    assert!(
        unknown["statuses"]["rejected"].as_u64().unwrap_or(0) > 0,
        "{output}"
    );
}

#[test]
fn lost_submissions_are_counted_and_fail_the_run() {
    // Nothing listens there: every submission is lost, and the harness says so and exits 1.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (code, report, output) = loadtest(
        &[
            "--target",
            "http",
            "--url",
            &url,
            "--concurrency",
            "2",
            "--count",
            "4",
            "--workload",
            &workload("smoke.toml"),
            "--result-timeout",
            "1s",
            "--no-floor",
        ],
        "lost",
    );
    assert_eq!(code, 1, "{output}");
    assert_eq!(report["sent"], 4, "{output}");
    assert_eq!(report["lost"], 4, "{output}");
    assert!(output.contains("verdict: FAILED"), "{output}");
}

#[test]
fn a_missed_threshold_fails_the_run() {
    let (code, report, output) = loadtest(
        &[
            "--target",
            "http",
            "--spawn",
            "--concurrency",
            "2",
            "--count",
            "10",
            "--workload",
            &workload("smoke.toml"),
            "--min-throughput",
            "1000000",
            "--no-floor",
        ],
        "threshold",
    );
    assert_eq!(code, 1, "{output}");
    assert_eq!(report["lost"], 0, "{output}");
    assert!(
        report["thresholds_missed"][0]
            .as_str()
            .unwrap()
            .contains("--min-throughput"),
        "{output}"
    );
}
