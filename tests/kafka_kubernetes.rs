//! The deployment's combination: `kiln scheduler` reading Kafka and running jobs in Kubernetes
//! pods (a real broker from scripts/kafka, a real API server from scripts/k8s). The actor tree is
//! the same one as with the embedded queue and local pods.

#[path = "common/k8s.rs"]
mod k8s;
#[path = "common/kafka.rs"]
mod kafka;

use std::time::Duration;

use kafka::{broker, Scheduler, Topics};
use serde_json::json;

#[test]
fn a_kafka_scheduler_runs_each_submission_once_in_kubernetes_pods() {
    let Some(brokers) = broker() else { return };
    let Some(kcfg) = k8s::cluster() else { return };
    let ns = k8s::Namespace::new(&kcfg, "kiln-kafka");
    let log = k8s::PodLog::start(&ns);
    let config = ns.config(
        "kafka-0",
        "[[kubernetes.pools]]\nname = \"default\"\nmin = 2\nmax = 4\n",
        "",
    );
    let topics = Topics::create(&brokers, "k8s", 4);
    let _scheduler = Scheduler::start(
        &topics,
        &format!("{}-a", topics.prefix),
        &[
            ("KILN_CONFIG", config.to_str().unwrap()),
            ("KILN_PODS", "kubernetes"),
        ],
    );
    let producer = topics.producer();
    let n = 40;
    for i in 0..n {
        let id = format!("k8s-{i}");
        let body = json!({"id": id, "language": "python", "source": "print(int(input()) * 3)", "stdin": i.to_string()});
        topics.send(
            &producer,
            &id,
            body.to_string().as_bytes(),
            Some("application/json"),
        );
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).unwrap();
    let results = topics.results_by_id(n, Duration::from_secs(120));
    assert_eq!(results.len(), n, "a result for every submission");
    for i in 0..n {
        let got = &results[&format!("k8s-{i}")];
        assert_eq!(got.len(), 1, "exactly one result for k8s-{i}: {got:?}");
        assert_eq!(got[0]["status"], "accepted", "{}", got[0]);
        assert_eq!(got[0]["stdout"], format!("{}\n", i * 3));
    }
    let by_id = log.jobs_by_id();
    for i in 0..n {
        // Once, or again after a lost run; jobs_by_id has checked no pod ran two jobs.
        let runs = by_id.get(&format!("k8s-{i}")).copied().unwrap_or(0);
        assert!((1..=3).contains(&runs), "k8s-{i} ran in {runs} pods");
    }
}
