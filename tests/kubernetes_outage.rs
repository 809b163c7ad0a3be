//! An API server outage in the middle of a run: the kube-apiserver of a private kwok cluster
//! (scripts/k8s with KILN_K8S_CLUSTER) is stopped for a few seconds while jobs run, then started
//! again.

#[path = "common/k8s.rs"]
mod k8s;
#[path = "common/server.rs"]
mod server;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s::{cluster_named, Namespace, SCRIPT};
use serde_json::json;
use server::Server;

const CLUSTER: &str = "kiln-outage";

fn script(action: &str) {
    let status = Command::new(SCRIPT)
        .arg(action)
        .env("KILN_K8S_CLUSTER", CLUSTER)
        .status()
        .expect("scripts/k8s runs");
    assert!(status.success(), "scripts/k8s {action} failed");
}

/// The private cluster, deleted when the test ends however it ends.
struct Private;

impl Drop for Private {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT)
            .arg("down")
            .env("KILN_K8S_CLUSTER", CLUSTER)
            .status();
    }
}

#[test]
fn jobs_finish_when_the_api_server_goes_away_and_comes_back() {
    // A fresh cluster: one left by an earlier run may have lost its controllers.
    drop(Private);
    let Some(kcfg) = cluster_named(CLUSTER) else {
        return;
    };
    let _private = Private;
    let ns = Namespace::new(&kcfg, "kiln-outage");
    let config = ns.config(
        "outage-0",
        "[[kubernetes.pools]]\nname = \"default\"\nmin = 2\nmax = 4\n",
        "",
    );
    let server = Server::start(
        "k8s-outage",
        &[
            ("KILN_CONFIG", config.to_str().unwrap()),
            ("RUST_LOG", "kiln=info"),
        ],
    );
    let ids: Vec<String> = (0..24)
        .map(|i| {
            let body = json!({"language": "python", "source": format!("import time\ntime.sleep(0.3)\nprint({i})")});
            let (code, v) = server.post("/v1/submissions", &body);
            assert_eq!(code, 202, "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    // Some jobs done, the rest queued or running: the API server goes away for 4 s.
    let until = Instant::now() + Duration::from_secs(60);
    while server.get(&format!("/v1/submissions/{}", ids[2])).1["status"] == "queued"
        || server.get(&format!("/v1/submissions/{}", ids[2])).1["status"] == "running"
    {
        assert!(Instant::now() < until, "the first jobs never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    script("apiserver-stop");
    std::thread::sleep(Duration::from_secs(4));
    script("apiserver-start");
    for (i, id) in ids.iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(120);
        let r = loop {
            let (_, r) = server.get(&format!("/v1/submissions/{id}?wait=true"));
            if !matches!(r["status"].as_str(), Some("queued" | "running")) {
                break r;
            }
            assert!(Instant::now() < until, "job {i} never finished: {r}");
        };
        assert_eq!(r["status"], "accepted", "job {i}: {r}");
        assert_eq!(r["stdout"], format!("{i}\n"), "job {i}: {r}");
    }
    let metrics = server.get_text("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kiln_k8s_api_errors_total") && !l.ends_with(" 0")),
        "the outage is in the metrics: {metrics}"
    );
}
