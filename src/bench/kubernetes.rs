//! `kiln bench --kubernetes`: a job on a warm standby pod (claim + exec + outcome) against the
//! naive path measured in the same run (create a pod for the job, wait for Ready, exec, delete),
//! interleaved so that noise hits both alike; then claims per second and API requests per job.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::{ms, Summary};
use crate::config::Settings;
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::outcome::Status;
use crate::pods::kubernetes::{KubeBackend, KubeSettings, PoolSettings};
use crate::pods::PodBackend;
use crate::submission::{LimitPolicy, Submission};

fn backend(
    base: &KubeSettings,
    namespace: &str,
    instance: &str,
    size: usize,
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
    KubeBackend::start(k, Arc::new(Metrics::new())).map_err(|e| format!("{e:#}"))
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
pub fn run(settings: &Settings, runs: usize) -> Result<String, String> {
    let mut k = settings.kubernetes.clone();
    if k.runner_command == KubeSettings::default().runner_command {
        // On a kwok cluster the exec'd command runs on this host: this build's runner.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let runner: PathBuf = exe.with_file_name("kiln-runner");
        k.runner_command = vec![runner.display().to_string(), "exec".into()];
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

fn measure(k: &KubeSettings, namespace: &str, runs: usize) -> Result<String, String> {
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

    // (1) Warm standby pod against a pod made for the job, interleaved.
    let pool = backend(k, namespace, "bench-warm", 2)?;
    wait_standby(&pool, 1)?;
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut requests = 0u64;
    for i in 0..runs + 1 {
        wait_standby(&pool, 1)?;
        let pod = rt.block_on(pool.create(0)).map_err(|e| e.to_string())?;
        let before = pool.api_requests();
        let t = Instant::now();
        let outcome = rt
            .block_on(pod.run(job.clone()))
            .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        if outcome.status != Status::Accepted || outcome.stdout.as_utf8() != Some("1\n") {
            return Err(format!("the warm run answered {outcome:?}"));
        }
        // The replacement pod and the used pod's deletion are this job's cost too.
        wait_standby(&pool, 2)?;
        let t2 = Instant::now();
        let outcome = pool.run_cold(job.clone()).map_err(|e| e.to_string())?;
        let cold_took = t2.elapsed();
        if outcome.status != Status::Accepted {
            return Err(format!("the cold run answered {outcome:?}"));
        }
        if i > 0 {
            warm.push(took);
            cold.push(cold_took);
            requests += pool.api_requests() - before;
        }
    }
    // The cold runs' requests: create, claim, exec, delete (4), counted above with the warm
    // ones; report the warm path's alone by subtracting them.
    let per_job = requests as f64 / runs as f64 - 4.0;
    pool.shutdown();

    // (2) Claims per second: 32 Ready standby pods claimed as fast as one scheduler can.
    let claims = backend(k, namespace, "bench-claims", 32)?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        wait_standby(&claims, 32)?;
        let took = claims.claim_many(32, 4)?;
        rates.push(32.0 / took.as_secs_f64());
    }
    claims.shutdown();
    rates.sort_by(|a, b| a.total_cmp(b));

    let (w, c) = (Summary::of(warm), Summary::of(cold));
    Ok(format!(
        "kubernetes: one job (python print(1)) on a warm standby pod vs a pod created for it, {runs} runs each, interleaved\n\
         \x20 warm standby (claim + exec + outcome): p50 {}  p99 {}  mean {}\n\
         \x20 pod made per job (create + Ready + exec + outcome): p50 {}  p99 {}  mean {}\n\
         \x20 ratio cold/warm: p50 {:.1}x  mean {:.1}x\n\
         \x20 API requests per warm job: {per_job:.1} (claim, exec, delete, and the replacement's create)\n\
         \x20 claims per second, one scheduler, 4 at a time: median {:.0}/s (of 3 rounds of 32: {:.0}, {:.0}, {:.0})",
        ms(w.p50),
        ms(w.p99),
        ms(w.mean),
        ms(c.p50),
        ms(c.p99),
        ms(c.mean),
        c.p50.as_secs_f64() / w.p50.as_secs_f64(),
        c.mean.as_secs_f64() / w.mean.as_secs_f64(),
        rates[1],
        rates[0],
        rates[1],
        rates[2],
    ))
}
