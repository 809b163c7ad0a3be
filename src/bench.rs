//! `kiln bench`: Kiln's costs side by side with the floor measured in the same run, as ratios,
//! because shared machines are noisy and only ratios compare across runs.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::languages::Registry;
use crate::pods::PodBackend;
use crate::submission::{LimitPolicy, Submission};

/// Median, p99 and mean of a set of samples.
#[derive(Clone, Debug)]
pub struct Summary {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort();
        let n = samples.len().max(1);
        let at = |q: f64| samples.get(((n as f64 * q).ceil() as usize).saturating_sub(1).min(n - 1)).copied().unwrap_or_default();
        let mean = samples.iter().sum::<Duration>() / n as u32;
        Summary { n: samples.len(), p50: at(0.5), p99: at(0.99), mean }
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The floor: `python3 -c 'print(1)'` spawned bare with the interpreter Kiln uses.
pub fn floor_python(python: &str, runs: usize) -> Summary {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(python).args(["-c", "print(1)"]).output().expect("python3 runs");
        samples.push(t.elapsed());
        assert_eq!(out.stdout, b"1\n");
    }
    Summary::of(samples)
}

/// What the engine benchmark measured.
pub struct EngineFigures {
    pub floor: Summary,
    pub sandboxed: Summary,
    pub create: Summary,
    pub idle_pss_bytes: u64,
    pub idle_host_bytes: i64,
    pub idle_pods: usize,
}

/// Floor spawns, runs through claimed standby pods, and pod creation, interleaved so that noise
/// hits all three alike.
pub async fn engine(backend: &dyn PodBackend, registry: &Registry, runs: usize) -> Result<EngineFigures, String> {
    let python = registry.find("python", None)?.run[0].clone();
    let policy = LimitPolicy::default();
    let sub = Submission { language: "python".into(), source: Some("print(1)".into()), ..Default::default() };
    let job = sub.resolve("bench", registry, &policy).map_err(|e| e.0)?;

    // Warm the page cache and the code paths once.
    floor_python(&python, 3);
    let pod = backend.create().await.map_err(|e| e.to_string())?;
    pod.run(job.clone()).await.map_err(|e| e.to_string())?;

    let mut floor = Vec::new();
    let mut sandboxed = Vec::new();
    let mut create = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let pod = backend.create().await.map_err(|e| e.to_string())?;
        create.push(t.elapsed());
        // Let the pod settle into standby, as the pool's pods do before a job arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        let outcome = pod.run(job.clone()).await.map_err(|e| e.to_string())?;
        sandboxed.push(t.elapsed());
        if outcome.stdout.0 != b"1\n" {
            return Err(format!("sandboxed run printed {:?}", outcome));
        }
        floor.push(floor_python(&python, 1).p50);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Idle standby memory: many pods at once; PSS of their runners, and the host's view.
    let idle_pods = 50;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = mem_available();
    let mut pods = Vec::new();
    for _ in 0..idle_pods {
        pods.push(backend.create().await.map_err(|e| e.to_string())?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = mem_available();
    let idle_pss_bytes = pss_of_runners() / idle_pods as u64;
    for pod in pods {
        pod.destroy().await;
    }
    Ok(EngineFigures {
        floor: Summary::of(floor),
        sandboxed: Summary::of(sandboxed),
        create: Summary::of(create),
        idle_pss_bytes,
        idle_host_bytes: (before - after) / idle_pods as i64,
        idle_pods,
    })
}

fn mem_available() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<i64>().ok()))
        .unwrap_or(0)
        * 1024
}

/// Sum of the proportional set size of every `kiln-runner pod` process that is our child.
fn pss_of_runners() -> u64 {
    let me = std::process::id().to_string();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { continue };
        let after_comm = stat.rsplit(')').next().unwrap_or("");
        let ppid = after_comm.split_whitespace().nth(1).unwrap_or("");
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if ppid != me || !cmdline.starts_with(b"kiln-runner\0pod") {
            continue;
        }
        let rollup = std::fs::read_to_string(dir.join("smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:").and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()))
            .unwrap_or(0)
            * 1024;
    }
    total
}

/// Prints the engine figures as a Markdown table for docs/benchmarks.md.
pub fn report_engine(f: &EngineFigures) -> String {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    format!(
        "| measurement | n | p50 | p99 | p50 ratio to floor |\n|---|---|---|---|---|\n\
         | floor: bare `python3 -c 'print(1)'` | {} | {} | {} | 1.00 |\n\
         | claimed standby pod: send job, run, outcome back | {} | {} | {} | {:.2} |\n\
         | make one standby pod (clone, namespaces, cgroup, mounts, ready) | {} | {} | {} | {:.2} |\n\n\
         Idle standby pod: {:.2} MB proportional set size of its runner; {:.2} MB of host memory per pod \
         (MemAvailable before and after making {} pods).\n",
        f.floor.n, ms(f.floor.p50), ms(f.floor.p99),
        f.sandboxed.n, ms(f.sandboxed.p50), ms(f.sandboxed.p99), ratio(f.sandboxed.p50, f.floor.p50),
        f.create.n, ms(f.create.p50), ms(f.create.p99), ratio(f.create.p50, f.floor.p50),
        f.idle_pss_bytes as f64 / 1e6, f.idle_host_bytes as f64 / 1e6, f.idle_pods,
    )
}

