//! Prometheus metrics: what an operator watches (queue depth, in-flight jobs, pool size, runs by
//! status and language, latency, actor restarts).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric Kiln exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    pub pool_standby: IntGauge,
    pub pool_size: IntGauge,
    pub runs: IntCounterVec,
    pub runs_forked: IntCounterVec,
    pub latency: HistogramVec,
    pub actor_restarts: IntCounterVec,
    pub pod_failures: IntCounterVec,
    pub redeliveries: IntCounterVec,
    pub watchdog_kills: IntGauge,
    pub rejected_requests: IntCounterVec,
    pub callbacks: IntCounterVec,
    /// Compile cache lookups by outcome (`hit`, `hit_failed`, `miss`) and evictions.
    pub compile_cache: IntCounterVec,
    pub compile_cache_bytes: IntGauge,
    /// Kafka mode: messages behind the newest, per partition of the submissions topic.
    pub kafka_lag: IntGaugeVec,
    pub kafka_paused_partitions: IntGauge,
    pub kafka_transactions: IntCounterVec,
    pub kafka_dead_letters: IntCounterVec,
    /// Kubernetes mode: standby pods each pool aims for, and has.
    pub k8s_pool_target: IntGaugeVec,
    pub k8s_pool_standby: IntGaugeVec,
    pub k8s_claims: IntCounterVec,
    pub k8s_pods_created: IntCounterVec,
    pub k8s_pods_deleted: IntCounterVec,
    pub k8s_api_requests: IntCounterVec,
    pub k8s_api_errors: IntCounterVec,
    pub k8s_job_phase: HistogramVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_submission_latency_seconds",
                "From acceptance to published result",
            )
            .buckets(vec![
                0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["language"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        let kafka_lag = IntGaugeVec::new(
            Opts::new(
                "kiln_kafka_consumer_lag",
                "Submissions not yet consumed, per partition (from librdkafka's statistics)",
            ),
            &["partition"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(kafka_lag.clone()))
            .expect("unique metric");
        let k8s_job_phase = HistogramVec::new(
            HistogramOpts::new(
                "kiln_k8s_job_phase_seconds",
                "Where a job's time goes on a Kubernetes runner pod: claim (the API server's patch), exec_connect or direct_connect (reaching the runner: the exec stream through the API server and kubelet, or the pod network), runner (the runner's own work, by its clock), exec_transfer or direct_transfer (the rest of the round trip)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["phase"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(k8s_job_phase.clone()))
            .expect("unique metric");
        Metrics {
            k8s_job_phase,
            kafka_lag,
            kafka_paused_partitions: gauge(
                "kiln_kafka_paused_partitions",
                "Submission partitions paused because enough work is buffered",
            ),
            kafka_transactions: counter(
                "kiln_kafka_transactions_total",
                "Transactions of results and offsets, by outcome",
                &["outcome"],
            ),
            kafka_dead_letters: counter(
                "kiln_kafka_dead_letters_total",
                "Messages that could not be decoded, sent to the dead-letter topic",
                &["topic"],
            ),
            queue_depth: gauge("kiln_queue_depth", "Accepted submissions not yet finished"),
            in_flight: gauge("kiln_in_flight", "Jobs held by pod runners"),
            pool_standby: gauge("kiln_pool_standby_pods", "Standby pods ready for a job"),
            pool_size: gauge("kiln_pool_size", "Configured pod runners"),
            runs: counter(
                "kiln_runs_total",
                "Finished submissions",
                &["status", "language"],
            ),
            runs_forked: counter(
                "kiln_runs_forked_total",
                "Finished submissions whose program was forked from a resident interpreter",
                &["language"],
            ),
            latency,
            actor_restarts: counter(
                "kiln_actor_restarts_total",
                "Actor restarts by the supervisor",
                &["actor"],
            ),
            pod_failures: counter(
                "kiln_pod_failures_total",
                "Pods that could not be made or were lost",
                &["reason"],
            ),
            redeliveries: counter(
                "kiln_redeliveries_total",
                "Jobs put back after their runner was lost",
                &["reason"],
            ),
            watchdog_kills: gauge("kiln_watchdog_kills", "Runs killed by the timeout watchdog"),
            compile_cache: counter(
                "kiln_compile_cache_total",
                "Compile cache events: hit (a build laid in), hit_failed (a compile error answered from the cache), miss, stored, eviction",
                &["event"],
            ),
            compile_cache_bytes: gauge(
                "kiln_compile_cache_bytes",
                "Bytes of compiled artifacts in the compile cache",
            ),
            callbacks: counter(
                "kiln_callbacks_total",
                "Result callbacks by outcome",
                &["outcome"],
            ),
            rejected_requests: counter(
                "kiln_rejected_requests_total",
                "HTTP requests refused",
                &["reason"],
            ),
            k8s_pool_target: gauges(
                "kiln_k8s_pool_target",
                "Standby pods a Kubernetes pool aims to keep (from demand, between its min and max)",
                &["pool"],
            ),
            k8s_pool_standby: gauges(
                "kiln_k8s_pool_standby",
                "Ready, unclaimed pods of a pool that this scheduler made",
                &["pool"],
            ),
            k8s_claims: counter(
                "kiln_k8s_claims_total",
                "Pod claims: ok, or conflict when another scheduler claimed the pod first",
                &["result"],
            ),
            k8s_pods_created: counter(
                "kiln_k8s_pods_created_total",
                "Runner pods created",
                &["pool"],
            ),
            k8s_pods_deleted: counter(
                "kiln_k8s_pods_deleted_total",
                "Runner pods deleted, by reason",
                &["reason"],
            ),
            k8s_api_requests: counter(
                "kiln_k8s_api_requests_total",
                "Requests to the Kubernetes API server, by operation",
                &["op"],
            ),
            k8s_api_errors: counter(
                "kiln_k8s_api_errors_total",
                "Failed requests to the Kubernetes API server, by operation",
                &["op"],
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
