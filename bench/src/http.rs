//! `kiln bench --http`: `kiln serve` (a child process, defaults) against bare spawns of the same
//! interpreter, in the same run: sequential latency, then throughput and host CPU per job with
//! 1 to 4 requests in flight per core, and where Kiln's CPU goes. `--site-imports` does it all
//! with a virtualenv whose site start-up imports a few packages (a `.pth`), for Kiln and floor
//! alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln::languages::Registry;
use kiln_harness::host::{busy as host_busy, rss_of};

use super::{floor_python, ms, ServeChild, Summary};

pub struct Options {
    pub runs: usize,
    /// Only this many requests in flight, instead of 1 to 4 per core.
    pub concurrency: Option<usize>,
    pub site_imports: bool,
}

/// What the `.pth` of the `--site-imports` virtualenv imports at every start-up.
const SITE_IMPORTS: &str = "import json, decimal, email.message, email.parser, urllib.parse";

/// CPU time of one process from /proc/<pid>/stat: its own, and its reaped children's.
fn proc_cpu(pid: u32) -> Option<(String, u32, Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = stat[stat.find('(')? + 1..close].to_string();
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let d = |t: u64| Duration::from_micros(t * 1_000_000 / hz);
    // Fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    Some((
        comm,
        tick(1) as u32,
        d(tick(11) + tick(12)),
        d(tick(13) + tick(14)),
    ))
}

/// CPU used so far by `kiln serve` and everything under it, by part. A process that exited
/// counts in its parent's reaped-children time, so live processes plus their reaped children
/// cover the whole tree.
#[derive(Clone, Copy, Default)]
struct TreeCpu {
    serve: Duration,
    pods: Duration,
    fork_server: Duration,
}

fn tree_cpu(root: u32, fork_server: Option<u32>) -> TreeCpu {
    let mut procs: HashMap<u32, (String, u32, Duration, Duration)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            if let Some(p) = proc_cpu(pid) {
                procs.insert(pid, p);
            }
        }
    }
    let mut cpu = TreeCpu::default();
    let Some((_, _, own, reaped)) = procs.get(&root).cloned() else {
        return cpu;
    };
    cpu.serve = own;
    // Reaped children of `kiln serve` are pods (runners with their programs and zygotes).
    cpu.pods = reaped;
    for (&pid, (_, _, own, reaped)) in &procs {
        let mut up = pid;
        let mut top = None;
        while let Some((_, ppid, _, _)) = procs.get(&up) {
            if *ppid == root {
                top = Some(up);
                break;
            }
            up = *ppid;
        }
        match top {
            Some(t) if Some(t) == fork_server => cpu.fork_server += *own + *reaped,
            Some(_) => cpu.pods += *own + *reaped,
            None => {}
        }
    }
    cpu
}

fn self_cpu() -> Duration {
    proc_cpu(std::process::id())
        .map(|(_, _, own, _)| own)
        .unwrap_or_default()
}

/// The virtualenv of `--site-imports` (cached under ~/.cache/kiln), made from `base`, with
/// system site-packages as a pyenv or Debian interpreter has them; its interpreter's path.
fn site_venv(base: &str) -> Result<PathBuf, String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let dir = Path::new(&home).join(".cache/kiln/bench-site-venv");
    let python = dir.join("bin/python3");
    if !python.exists() {
        let made = Command::new(base)
            .args(["-m", "venv", "--without-pip", "--system-site-packages"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("making a virtualenv with {base}: {e}"))?;
        if !made.success() {
            return Err(format!("{base} -m venv {} failed", dir.display()));
        }
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let site = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::write(
        site.join("kiln_bench_site.pth"),
        format!("{SITE_IMPORTS}\n"),
    )
    .map_err(|e| format!("writing the .pth in {}: {e}", site.display()))?;
    // Made world-readable: programs in pods run as an unprivileged user.
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&dir)
        .status();
    Ok(python)
}

/// A languages file whose `python` is `interpreter`, forked as the shipped entry is.
fn languages_file(interpreter: &Path, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("languages.toml");
    std::fs::write(
        &path,
        format!(
            "[[language]]\nname = \"python\"\naliases = [\"python3\", \"py\"]\n\
             binaries = [\"python3\"]\npaths = {{ python3 = \"{}\" }}\n\
             version = [\"{{python3}}\", \"-c\", \"import platform; print(platform.python_version())\"]\n\
             entry = \"main.py\"\nrun = [\"{{python3}}\", \"-B\", \"{{entry}}\"]\nfork_server = true\n",
            interpreter.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(path)
}

/// Rounds of floor and Kiln, alternating, at each number in flight.
const ROUNDS: usize = 4;

/// Jobs done, wall time, host CPU and the benchmark's own CPU over throughput runs; for Kiln,
/// the CPU of its process tree by part.
#[derive(Default)]
struct Load {
    jobs: usize,
    wall: Duration,
    host: Duration,
    client: Duration,
    tree: Option<TreeCpu>,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.jobs += other.jobs;
        self.wall += other.wall;
        self.host += other.host;
        self.client += other.client;
        if let Some(t) = other.tree {
            let mine = self.tree.get_or_insert_with(TreeCpu::default);
            mine.serve += t.serve;
            mine.pods += t.pods;
            mine.fork_server += t.fork_server;
        }
    }

    fn per_s(&self) -> f64 {
        self.jobs as f64 / self.wall.as_secs_f64()
    }
    /// Host CPU per job, the benchmark's own process left out (its HTTP client for Kiln; for
    /// the floor, the parent's share of spawning, which makes the floor cheaper).
    fn cpu_per_job(&self) -> Duration {
        self.host.saturating_sub(self.client) / self.jobs as u32
    }
}

fn measure_load(
    threads: usize,
    per_thread: usize,
    tree: Option<(u32, Option<u32>)>,
    job: impl Fn() -> Result<(), String> + Sync,
) -> Result<Load, String> {
    let before = (host_busy(), self_cpu(), tree.map(|(r, f)| tree_cpu(r, f)));
    let t = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let job = &job;
                s.spawn(move || {
                    (0..per_thread)
                        .filter_map(|_| job().err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = t.elapsed();
    if let Some(e) = errors.first() {
        return Err(e.clone());
    }
    Ok(Load {
        jobs: threads * per_thread,
        wall,
        host: host_busy().saturating_sub(before.0),
        client: self_cpu().saturating_sub(before.1),
        tree: tree.and_then(|(r, f)| {
            before.2.map(|b| {
                let a = tree_cpu(r, f);
                TreeCpu {
                    serve: a.serve.saturating_sub(b.serve),
                    pods: a.pods.saturating_sub(b.pods),
                    fork_server: a.fork_server.saturating_sub(b.fork_server),
                }
            })
        }),
    })
}

pub fn run(kiln: &Path, o: &Options) -> Result<String, String> {
    let registry = Registry::load(None)?;
    let base = registry
        .find("python", None)
        .map_err(|e| e.to_string())?
        .run[0]
        .clone();
    let scratch = std::env::temp_dir().join(format!("kiln-bench-http-{}", std::process::id()));
    let mut env = Vec::new();
    let python = if o.site_imports {
        let venv = site_venv(&base)?;
        env.push((
            "KILN_LANGUAGES_FILE",
            languages_file(&venv, &scratch)?.display().to_string(),
        ));
        venv.display().to_string()
    } else {
        base
    };
    let result = (|| {
        let server = ServeChild::start(kiln, &env)?;
        measure(&server, &python, o)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let (table, note) = result?;
    let mut head = format!("Interpreter: `{python}`");
    if o.site_imports {
        head += &format!(" (a virtualenv whose `.pth` runs `{SITE_IMPORTS}` at start-up)");
    }
    Ok(format!("{head}\n\n{table}{note}"))
}

fn measure(server: &ServeChild, python: &str, o: &Options) -> Result<(String, String), String> {
    let base = server.addr.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let body = serde_json::json!({"language": "python", "source": "print(1)"});
    let program_cpu = std::sync::atomic::AtomicU64::new(0);
    let submit = |agent: &ureq::Agent| -> Result<Duration, String> {
        let t = Instant::now();
        let r: serde_json::Value = agent
            .post(&format!("{base}/v1/submissions?wait=true"))
            .send_json(body.clone())
            .map_err(|e| e.to_string())?
            .into_json()
            .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        if r["stdout"] != "1\n" {
            return Err(format!("unexpected result {r}"));
        }
        program_cpu.fetch_add(
            r["cpu_time_ms"].as_u64().unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(took)
    };
    server.wait_ready(Instant::now())?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_of(server.pid());
    let fork_server = fork_server_of(server.pid());
    for _ in 0..20 {
        submit(&agent)?;
    }
    floor_python(python, 5);

    let mut floor = Vec::new();
    let mut e2e = Vec::new();
    for _ in 0..o.runs {
        e2e.push(submit(&agent)?);
        floor.push(floor_python(python, 1).p50);
    }
    let (floor, e2e) = (Summary::of(floor), Summary::of(e2e));

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let levels: Vec<usize> = match o.concurrency {
        Some(c) => vec![c],
        None => (1..=4).map(|k| k * cores).collect(),
    };
    let mut rows = String::new();
    let mut peak = (0.0f64, 0.0f64, 0usize, 0usize);
    let mut at_cores = None;
    let mut breakdown = None;
    for &c in &levels {
        // Floor and Kiln alternate in rounds, so that the shared machine's ups and downs fall
        // on both alike.
        let per_thread = (o.runs.max(c * ROUNDS) / c / ROUNDS).max(1);
        program_cpu.store(0, std::sync::atomic::Ordering::Relaxed);
        let (mut f, mut k) = (Load::default(), Load::default());
        for _ in 0..ROUNDS {
            f.add(measure_load(c, per_thread, None, || {
                floor_python(python, 1);
                Ok(())
            })?);
            k.add(measure_load(
                c,
                per_thread,
                Some((server.pid(), fork_server)),
                || submit(&agent).map(|_| ()),
            )?);
        }
        let program = Duration::from_millis(program_cpu.load(std::sync::atomic::Ordering::Relaxed))
            / k.jobs as u32;
        rows += &format!(
            "| {c} | {:.1}/s | {:.1}/s | {:.2} | {} | {} | {:.2} |\n",
            f.per_s(),
            k.per_s(),
            k.per_s() / f.per_s(),
            ms(f.cpu_per_job()),
            ms(k.cpu_per_job()),
            k.cpu_per_job().as_secs_f64() / f.cpu_per_job().as_secs_f64(),
        );
        if f.per_s() > peak.0 {
            (peak.0, peak.2) = (f.per_s(), c);
        }
        if k.per_s() > peak.1 {
            (peak.1, peak.3) = (k.per_s(), c);
        }
        if c == cores || at_cores.is_none() {
            at_cores = Some((c, k.per_s() / f.per_s()));
            breakdown = Some((c, k, f, program));
        }
    }

    let mut table = format!(
        "| measurement | n | p50 | p99 | p50 ratio to floor |\n|---|---|---|---|---|\n\
         | floor: bare `python3 -c 'print(1)'` | {} | {} | {} | 1.00 |\n\
         | `POST /v1/submissions?wait=true` (`print(1)`), sequential | {} | {} | {} | {:.2} |\n\n\
         | in flight | floor | Kiln | ratio | host CPU per job: floor | Kiln | ratio |\n\
         |---|---|---|---|---|---|---|\n{rows}",
        floor.n,
        ms(floor.p50),
        ms(floor.p99),
        e2e.n,
        ms(e2e.p50),
        ms(e2e.p99),
        e2e.p50.as_secs_f64() / floor.p50.as_secs_f64(),
    );
    if levels.len() > 1 {
        table += &format!(
            "| peak | {:.1}/s (at {}) | {:.1}/s (at {}) | {:.2} | | | |\n",
            peak.0,
            peak.2,
            peak.1,
            peak.3,
            peak.1 / peak.0
        );
    }
    let mut note = format!(
        "\n`kiln serve` idle RSS (before any job, pool warm): {:.1} MB.\n",
        idle_rss as f64 / 1e6
    );
    if let Some((c, k, f, program)) = breakdown {
        if let Some(tree) = k.tree {
            let n = k.jobs as u32;
            let serve = tree.serve / n;
            let pods = tree.pods / n;
            let fork = tree.fork_server / n;
            let total = k.cpu_per_job();
            let rest = total.saturating_sub(serve + pods + fork);
            let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
            note += &format!(
                "\nWhere Kiln's host CPU per job goes at {c} in flight ({} in all, floor {}; from \
                 /proc, the benchmark's own client left out):\n\n\
                 | part | CPU per job | share |\n|---|---|---|\n\
                 | `kiln serve` (HTTP, JSON, journal, actors, making and retiring pods: clone, cgroups) | {} | {:.0} % |\n\
                 | pods: runners, zygotes and the program | {} | {:.0} % |\n\
                 | of which the program's own process (its cgroup, `cpu_time_ms`) | {} | {:.0} % |\n\
                 | the fork server (forking into pods) | {} | {:.0} % |\n\
                 | kernel threads and the rest of the host (cgroup teardown, RCU, softirq) | {} | {:.0} % |\n",
                ms(total),
                ms(f.cpu_per_job()),
                ms(serve),
                share(serve),
                ms(pods),
                share(pods),
                ms(program),
                share(program),
                ms(fork),
                share(fork),
                ms(rest),
                share(rest),
            );
        }
    }
    if let Some((c, r)) = at_cores {
        note += &format!("\nThroughput at {c} in flight: {r:.2}x the floor.\n");
    }
    Ok((table, note))
}

/// The fork server: the child of `kiln serve` that is not a pod's runner.
fn fork_server_of(serve: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            proc_cpu(pid)
                .is_some_and(|(comm, ppid, _, _)| ppid == serve && !comm.starts_with("kiln-runner"))
        })
}
