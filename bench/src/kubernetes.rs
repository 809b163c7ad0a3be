//! `kiln bench --kubernetes`: a job on a warm standby pod (claim + exec + outcome) against the
//! naive path measured in the same run (create a pod for the job, wait for Ready, exec, delete)
//! and against `kiln serve`'s local pods on this machine, interleaved so that noise hits all
//! alike; where a warm job's time goes, API requests per job, claims per second, and the node's
//! pod churn (pods made Ready per second and the CPU each costs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kiln::config::Settings;
use kiln::job::Job;
use kiln::languages::Registry;
use kiln::metrics::Metrics;
use kiln::outcome::Status;
use kiln::pods::kubernetes::{KubeBackend, KubeSettings, PoolSettings, Transport};
use kiln::pods::PodBackend;
use kiln::submission::{LimitPolicy, Submission};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::{ms, Summary};

fn backend(
    base: &KubeSettings,
    namespace: &str,
    instance: &str,
    size: usize,
) -> Result<KubeBackend, String> {
    backend_with(base, namespace, instance, size, Arc::new(Metrics::new()))
}

fn backend_with(
    base: &KubeSettings,
    namespace: &str,
    instance: &str,
    size: usize,
    metrics: Arc<Metrics>,
) -> Result<KubeBackend, String> {
    let mut k = base.clone();
    k.namespace = namespace.to_string();
    k.instance = Some(instance.to_string());
    k.pools = vec![PoolSettings {
        name: "bench".into(),
        min: size,
        max: size,
        ..Default::default()
    }];
    KubeBackend::start(k, metrics).map_err(|e| format!("{e:#}"))
}

fn wait_standby(b: &KubeBackend, n: usize) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(120);
    while b.ready_standby() < n {
        if Instant::now() > until {
            return Err(format!("{n} standby pods never became Ready"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Runs the measurements in a namespace of their own, removed afterwards.
pub fn run(settings: &Settings, runs: usize) -> Result<(String, Figures), String> {
    let mut k = settings.kubernetes.clone();
    if k.runner_command == KubeSettings::default().runner_command && k.pod_template.is_none() {
        // On a kwok cluster the exec'd command runs on this host: this build's runner. (A pod
        // template names a real node's image, whose runner is the one exec'd.)
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let runner: PathBuf = exe.with_file_name("kiln-runner");
        k.runner_command = vec![runner.display().to_string(), "exec".into()];
        // kwok's pods have no network of their own: the exec path, on this host.
        k.transport = Transport::Exec;
    }
    let namespace = format!("kiln-bench-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = rt.block_on(async {
        let config = match &k.kubeconfig {
            Some(p) => {
                let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| e.to_string())?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => kube::Config::infer().await.map_err(|e| e.to_string())?,
        };
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))
            .map_err(|e| e.to_string())?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| format!("creating namespace {namespace}: {e}"))?;
        // Pods are refused until the namespace's default ServiceAccount exists.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &namespace);
        for _ in 0..300 {
            if sa.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<Client, String>(client)
    })?;
    let result = measure(&k, &namespace, runs);
    rt.block_on(async {
        let _ = Api::<Namespace>::all(client)
            .delete(&namespace, &DeleteParams::default())
            .await;
    });
    result
}

/// CPU time the whole machine has spent so far (every core, all but idle and iowait).
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|cpu| {
            cpu.split_whitespace()
                .skip(1)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// The sums of the backend's job phase histogram, by phase (the connect and transfer of
/// whichever path the backend takes).
fn phases(metrics: &Metrics) -> [f64; 6] {
    [
        "claim",
        "exec_connect",
        "runner",
        "exec_transfer",
        "direct_connect",
        "direct_transfer",
    ]
    .map(|p| {
        metrics
            .k8s_job_phase
            .with_label_values(&[p])
            .get_sample_sum()
    })
}

fn measure(k: &KubeSettings, namespace: &str, runs: usize) -> Result<(String, Figures), String> {
    let registry = Registry::load(None)?;
    let sub = Submission {
        language: "python".into(),
        source: Some("print(1)".into()),
        ..Default::default()
    };
    let job = sub
        .resolve("bench", &registry, &LimitPolicy::default())
        .map_err(|e| e.0)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // `kiln serve`'s local pods on this machine, for the same job.
    let local = kiln::commands::startup::local_backend(&Settings::default(), &registry)
        .map_err(|e| format!("{e:#}"))?;

    // (1) Warm standby pods (by the direct path and by exec, when the cluster's pods can be
    // reached directly), a pod made for the job, and a local pod, interleaved.
    let direct = k.transport == Transport::Direct;
    let mut warm_paths = Vec::new();
    if direct {
        warm_paths.push(WarmPath::start(k, namespace, "bench-direct")?);
    }
    let exec = KubeSettings {
        transport: Transport::Exec,
        ..k.clone()
    };
    warm_paths.push(WarmPath::start(&exec, namespace, "bench-exec")?);
    let (mut cold, mut on_local) = (Vec::new(), Vec::new());
    for i in 0..runs + 1 {
        for path in warm_paths.iter_mut() {
            path.once(&rt, &job, i > 0)?;
        }
        let pool = &warm_paths[0].pool;
        let t2 = Instant::now();
        let outcome = pool
            .run_cold(job.clone())
            .map_err(|e| e.to_string())?
            .outcome;
        let cold_took = t2.elapsed();
        if outcome.status != Status::Accepted {
            return Err(format!("the cold run answered {outcome:?}"));
        }
        let standby = rt.block_on(local.create(0)).map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        let outcome = rt
            .block_on(standby.run(job.clone()))
            .map_err(|e| e.to_string())?
            .outcome;
        let local_took = t3.elapsed();
        if outcome.status != Status::Accepted || outcome.stdout.as_utf8() != Some("1\n") {
            return Err(format!("the local run answered {outcome:?}"));
        }
        if i > 0 {
            cold.push(cold_took);
            on_local.push(local_took);
        }
    }
    for path in &warm_paths {
        path.pool.shutdown();
    }
    local.shutdown();

    // (2) Claims per second: 16 Ready standby pods claimed as fast as one scheduler can.
    let claims = backend(k, namespace, "bench-claims", 16)?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        wait_standby(&claims, 16)?;
        let took = claims.claim_many(16, 4)?;
        rates.push(16.0 / took.as_secs_f64());
    }
    claims.shutdown();
    rates.sort_by(|a, b| a.total_cmp(b));

    // (3) Pod churn: 12 pods asked for at once, created and made Ready; the machine's CPU
    // meanwhile (the node's kubelet, containerd, runc and shims, and the control plane beside
    // them on this machine), per pod.
    let (t, cpu) = (Instant::now(), machine_busy());
    let churn = backend(k, namespace, "bench-churn", 12)?;
    wait_standby(&churn, 12)?;
    let (churn_took, churn_cpu) = (t.elapsed(), machine_busy().saturating_sub(cpu));
    churn.shutdown();
    let churn_rate = 12.0 / churn_took.as_secs_f64();
    let churn_cpu_ms = churn_cpu.as_secs_f64() * 1000.0 / 12.0;

    let (c, l) = (Summary::of(cold), Summary::of(on_local));
    let mean_ms = |sum: f64| sum * 1000.0 / runs as f64;
    let mut report = format!(
        "kubernetes: one job (python print(1)) on a warm standby pod, on a pod created for it, and on a local pod of this machine, {runs} runs each, interleaved\n"
    );
    let exec_p50 = warm_paths.last().map(|p| Summary::of(p.took.clone()).p50);
    for path in &warm_paths {
        let w = Summary::of(path.took.clone());
        let s = &path.split;
        let (connect, transfer, way) = match path.transport {
            Transport::Direct => (
                s[4],
                s[5],
                "job through the pod network, opened on standby, with the claim beside it",
            ),
            Transport::Exec => (
                s[1],
                s[3],
                "claim, then job through the exec stream opened on standby",
            ),
        };
        report += &format!(
            "  warm standby, {:?} path ({way}; outcome): p50 {}  p99 {}  mean {}\n\
             \x20   its time (means): claim {:.2} ms, connecting {:.2} ms, runner {:.2} ms, rest of the round trip {:.2} ms; API requests per job {:.1}\n\
             \x20   ratio per-job pod / this: p50 {:.1}x; this / local pod: p50 {:.1}x{}\n",
            path.transport,
            ms(w.p50),
            ms(w.p99),
            ms(w.mean),
            mean_ms(s[0]),
            mean_ms(connect),
            mean_ms(s[2]),
            mean_ms(transfer),
            path.requests as f64 / runs as f64,
            c.p50.as_secs_f64() / w.p50.as_secs_f64(),
            w.p50.as_secs_f64() / l.p50.as_secs_f64(),
            match (path.transport, exec_p50) {
                (Transport::Direct, Some(e)) =>
                    format!("; exec path / this: p50 {:.1}x", e.as_secs_f64() / w.p50.as_secs_f64()),
                _ => String::new(),
            },
        );
    }
    report += &format!(
        "  pod made per job (create + Ready + job + outcome): p50 {}  p99 {}  mean {}\n\
         \x20 local pod (kiln serve's, this machine): p50 {}  p99 {}  mean {}\n\
         \x20 claims per second, one scheduler, 4 at a time: median {:.0}/s (of 3 rounds of 16: {:.0}, {:.0}, {:.0})\n\
         \x20 pod churn: 12 pods created to Ready in {} ({churn_rate:.1} pods/s), {churn_cpu_ms:.0} ms of machine CPU per pod",
        ms(c.p50),
        ms(c.p99),
        ms(c.mean),
        ms(l.p50),
        ms(l.p99),
        ms(l.mean),
        rates[1],
        rates[0],
        rates[1],
        rates[2],
        ms(churn_took),
    );
    let figures = Figures {
        warm_direct_p50_ms: warm_paths
            .iter()
            .find(|p| p.transport == Transport::Direct)
            .map(|p| Summary::of(p.took.clone()).p50.as_secs_f64() * 1000.0),
        warm_exec_p50_ms: exec_p50.map(|d| d.as_secs_f64() * 1000.0),
        api_requests_per_job_one_job_pods: warm_paths
            .first()
            .map(|p| p.requests as f64 / runs as f64),
    };
    Ok((report, figures))
}

/// The figures `kiln bench --kubernetes --json FILE` writes.
#[derive(Debug, serde::Serialize)]
pub struct Figures {
    pub warm_direct_p50_ms: Option<f64>,
    pub warm_exec_p50_ms: Option<f64>,
    pub api_requests_per_job_one_job_pods: Option<f64>,
}

/// A pool of warm standby pods reached one way, and what its jobs took.
struct WarmPath {
    transport: Transport,
    pool: KubeBackend,
    metrics: Arc<Metrics>,
    took: Vec<Duration>,
    requests: u64,
    split: [f64; 6],
}

impl WarmPath {
    fn start(k: &KubeSettings, namespace: &str, instance: &str) -> Result<WarmPath, String> {
        let metrics = Arc::new(Metrics::new());
        let pool = backend_with(k, namespace, instance, 2, metrics.clone())?;
        wait_standby(&pool, 1)?;
        Ok(WarmPath {
            transport: k.transport,
            pool,
            metrics,
            took: Vec::new(),
            requests: 0,
            split: [0.0; 6],
        })
    }

    /// One job on a reserved standby pod; counted unless it is the warm-up.
    fn once(&mut self, rt: &tokio::runtime::Runtime, job: &Job, count: bool) -> Result<(), String> {
        let pool = &self.pool;
        wait_standby(pool, 1)?;
        let before = pool.api_requests();
        let pod = rt.block_on(pool.create(0)).map_err(|e| e.to_string())?;
        // As a pod runner's reserved pod does, it waits a moment for its job: meanwhile its
        // connection is opened (and on the exec path its runner started).
        std::thread::sleep(Duration::from_millis(300));
        let phases_before = phases(&self.metrics);
        let t = Instant::now();
        let outcome = rt
            .block_on(pod.run(job.clone()))
            .map_err(|e| e.to_string())?
            .outcome;
        let took = t.elapsed();
        let phases_after = phases(&self.metrics);
        if outcome.status != Status::Accepted || outcome.stdout.as_utf8() != Some("1\n") {
            return Err(format!(
                "the warm run ({:?}) answered {outcome:?}",
                self.transport
            ));
        }
        // The replacement pod and the used pod's deletion are this job's cost too.
        wait_standby(pool, 2)?;
        if count {
            self.took.push(took);
            self.requests += pool.api_requests() - before;
            for (s, (a, b)) in self
                .split
                .iter_mut()
                .zip(phases_after.iter().zip(phases_before))
            {
                *s += a - b;
            }
        }
        Ok(())
    }
}
