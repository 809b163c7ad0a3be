//! `kiln bench` (the `kiln-bench` binary): Kiln's costs side by side with the floor measured in the same run, as ratios,
//! because shared machines are noisy and only ratios compare across runs.

pub mod http;
pub mod kafka;
pub mod kubernetes;
pub mod languages;
pub mod neighbour;
pub mod noop;
pub mod queue;
pub mod test_sets;

use std::process::Command;
use std::time::{Duration, Instant};

use kiln::languages::Registry;
use kiln::pods::PodBackend;
use kiln::submission::{LimitPolicy, Submission};

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
        let at = |q: f64| {
            samples
                .get(
                    ((n as f64 * q).ceil() as usize)
                        .saturating_sub(1)
                        .min(n - 1),
                )
                .copied()
                .unwrap_or_default()
        };
        let mean = samples.iter().sum::<Duration>() / n as u32;
        Summary {
            n: samples.len(),
            p50: at(0.5),
            p99: at(0.99),
            mean,
        }
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
        let out = Command::new(python)
            .args(["-c", "print(1)"])
            .output()
            .expect("python3 runs");
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
    /// Host CPU time (all cores, kernel included) to make and retire one unused pod.
    pub lifecycle_cpu: Duration,
    /// A compiled language: bare `gcc` + run, and the same through a pod.
    pub c_floor: Summary,
    pub c_sandboxed: Summary,
}

const C_HELLO: &str = "#include <stdio.h>\nint main(void) { printf(\"1\\n\"); return 0; }\n";

/// The floor for C: compile with the same command line the registry uses, then run, bare.
fn floor_c(gcc_argv: &[String], dir: &std::path::Path) -> Duration {
    std::fs::write(dir.join("main.c"), C_HELLO).expect("write main.c");
    let t = Instant::now();
    let ok = Command::new(&gcc_argv[0])
        .args(&gcc_argv[1..])
        .current_dir(dir)
        .status()
        .map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "gcc compiles hello world");
    let out = Command::new(dir.join("main")).output().expect("runs");
    let took = t.elapsed();
    assert_eq!(out.stdout, b"1\n");
    took
}

/// Floor spawns, runs through claimed standby pods, and pod creation, interleaved so that noise
/// hits all three alike.
pub async fn engine(
    backend: &dyn PodBackend,
    registry: &Registry,
    runs: usize,
) -> Result<EngineFigures, String> {
    let python = registry
        .find("python", None)
        .map_err(|e| e.to_string())?
        .run[0]
        .clone();
    let policy = LimitPolicy::default();
    let sub = Submission {
        language: "python".into(),
        source: Some("print(1)".into()),
        ..Default::default()
    };
    let job = sub.resolve("bench", registry, &policy).map_err(|e| e.0)?;

    // Warm the page cache and the code paths once.
    floor_python(&python, 3);
    let pod = backend.create(0).await.map_err(|e| e.to_string())?;
    pod.run(job.clone())
        .await
        .map_err(|e| e.to_string())?
        .outcome;

    let mut floor = Vec::new();
    let mut sandboxed = Vec::new();
    let mut create = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let pod = backend.create(0).await.map_err(|e| e.to_string())?;
        create.push(t.elapsed());
        // Let the pod settle into standby, as the pool's pods do before a job arrives.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        let outcome = pod
            .run(job.clone())
            .await
            .map_err(|e| e.to_string())?
            .outcome;
        sandboxed.push(t.elapsed());
        if outcome.stdout.0 != b"1\n" {
            return Err(format!("sandboxed run printed {:?}", outcome));
        }
        floor.push(floor_python(&python, 1).p50);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Idle standby memory: many pods at once; PSS of their runners, and the host's view.
    // C: compile and run, bare and through a pod, interleaved.
    let c_job = Submission {
        language: "c".into(),
        source: Some(C_HELLO.into()),
        ..Default::default()
    }
    .resolve("bench-c", registry, &policy)
    .map_err(|e| e.0)?;
    let gcc_argv = c_job
        .compile
        .as_ref()
        .map(|c| c.argv.clone())
        .ok_or("c has no compile step")?;
    let dir = std::env::temp_dir().join(format!("kiln-bench-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (mut c_floor, mut c_sandboxed) = (Vec::new(), Vec::new());
    for _ in 0..(runs / 10).max(5) {
        let pod = backend.create(0).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        let outcome = pod
            .run(c_job.clone())
            .await
            .map_err(|e| e.to_string())?
            .outcome;
        c_sandboxed.push(t.elapsed());
        if outcome.stdout.0 != b"1\n" {
            return Err(format!("sandboxed C printed {outcome:?}"));
        }
        c_floor.push(floor_c(&gcc_argv, &dir));
    }
    let _ = std::fs::remove_dir_all(&dir);

    let idle_pods = 50;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = kiln_harness::host::mem_available();
    let mut pods = Vec::new();
    for _ in 0..idle_pods {
        pods.push(backend.create(0).await.map_err(|e| e.to_string())?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = kiln_harness::host::mem_available();
    let idle_pss_bytes = pss_of_runners() / idle_pods as u64;
    for pod in pods {
        pod.destroy().await;
    }
    let cycles = 100;
    let busy_before = kiln_harness::host::busy();
    for _ in 0..cycles {
        backend
            .create(0)
            .await
            .map_err(|e| e.to_string())?
            .destroy()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lifecycle_cpu = (kiln_harness::host::busy() - busy_before) / cycles;
    Ok(EngineFigures {
        c_floor: Summary::of(c_floor),
        c_sandboxed: Summary::of(c_sandboxed),
        lifecycle_cpu,
        floor: Summary::of(floor),
        sandboxed: Summary::of(sandboxed),
        create: Summary::of(create),
        idle_pss_bytes,
        idle_host_bytes: (before - after) / idle_pods as i64,
        idle_pods,
    })
}

/// Sum of the proportional set size of every `kiln-runner pod` process that is our child.
fn pss_of_runners() -> u64 {
    let me = std::process::id().to_string();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let after_comm = stat.rsplit(')').next().unwrap_or("");
        let ppid = after_comm.split_whitespace().nth(1).unwrap_or("");
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if ppid != me || !cmdline.starts_with(b"kiln-runner\0pod") {
            continue;
        }
        total += kiln_harness::host::kb_field(&dir.join("smaps_rollup").to_string_lossy(), "Pss:");
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
         | C hello world, compile (`gcc -O2`) and run | n | p50 | p99 | p50 ratio to floor |\n|---|---|---|---|---|\n\
         | floor: bare gcc, then the binary | {} | {} | {} | 1.00 |\n\
         | claimed standby pod: compile and run in it | {} | {} | {} | {:.2} |\n\n\
         Idle standby pod: {:.2} MB proportional set size of its runner; {:.2} MB of host memory per pod \
         (MemAvailable before and after making {} pods). Making and retiring one pod costs {} of host CPU \
         (all cores, kernel included, from /proc/stat).\n",
        f.floor.n, ms(f.floor.p50), ms(f.floor.p99),
        f.sandboxed.n, ms(f.sandboxed.p50), ms(f.sandboxed.p99), ratio(f.sandboxed.p50, f.floor.p50),
        f.create.n, ms(f.create.p50), ms(f.create.p99), ratio(f.create.p50, f.floor.p50),
        f.c_floor.n, ms(f.c_floor.p50), ms(f.c_floor.p99),
        f.c_sandboxed.n, ms(f.c_sandboxed.p50), ms(f.c_sandboxed.p99), ratio(f.c_sandboxed.p50, f.c_floor.p50),
        f.idle_pss_bytes as f64 / 1e6, f.idle_host_bytes as f64 / 1e6, f.idle_pods, ms(f.lifecycle_cpu),
    )
}

/// `kiln serve` as a child process on a port of its own and a data dir, stopped when dropped
/// (and the dir removed, unless it was given).
pub struct ServeChild {
    pub addr: String,
    process: kiln_harness::KilnProcess,
    dir: std::path::PathBuf,
    /// The dir outlives this server (another one is started on it later).
    keep_dir: bool,
}

impl ServeChild {
    pub fn start(kiln: &std::path::Path, env: &[(&str, String)]) -> Result<ServeChild, String> {
        let dir = std::env::temp_dir().join(format!("kiln-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = ServeChild::start_in(kiln, &dir, env)?;
        server.keep_dir = false;
        Ok(server)
    }

    /// Starts on `dir` (kept when stopped) with `env` added to the defaults.
    pub fn start_in(
        kiln: &std::path::Path,
        dir: &std::path::Path,
        env: &[(&str, String)],
    ) -> Result<ServeChild, String> {
        let process = kiln_harness::Spec::new(kiln, "kiln serve")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(kiln_harness::Stderr::Inherit)
            .start()
            .map_err(|e| e.to_string())?;
        let addr = process
            .first_line()
            .strip_prefix("kiln listening on ")
            .ok_or(format!("unexpected first line {:?}", process.first_line()))?
            .to_string();
        Ok(ServeChild {
            addr,
            process,
            dir: dir.to_path_buf(),
            keep_dir: true,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// Waits for `/readyz` to answer 200 (the pool is warm); how long that took from `since`.
    pub fn wait_ready(&self, since: Instant) -> Result<Duration, String> {
        self.process
            .wait_ready(since, Duration::from_secs(60))
            .map_err(|e| e.to_string())
    }

    /// `kill -9`: nothing of the server's own shutdown runs.
    pub fn kill9(mut self) {
        self.process.kill9();
        self.keep_dir = true;
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.process.stop(Duration::from_secs(10));
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
