//! `--spawn`: the harness starts Kiln itself (and, for Kafka and Kubernetes, the project's broker
//! and kwok cluster), so that it can kill and restart parts of it during the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kiln_harness::{KilnProcess, Spec, Stderr};

use crate::targets::Topics;

/// The repository's scripts (scripts/kafka, scripts/k8s).
pub fn scripts_dir() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    if compiled.is_dir() {
        compiled
    } else {
        PathBuf::from("scripts")
    }
}

/// The `kiln` binary next to this one (both are built into the same target directory).
pub fn kiln_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let kiln = me.with_file_name("kiln");
    anyhow::ensure!(
        kiln.is_file(),
        "no kiln binary next to {} (build the workspace)",
        me.display()
    );
    Ok(kiln)
}

/// Runs a project script; its last line of output is what it prints for callers.
pub fn script(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(scripts_dir().join(name))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running scripts/{name}"))?;
    if !out.status.success() {
        bail!("scripts/{name} {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// `--kiln-env KEY=VALUE` settings for every spawned kiln process.
static EXTRA_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

pub fn set_extra_env(env: Vec<(String, String)>) {
    let _ = EXTRA_ENV.set(env);
}

fn extra_env() -> Vec<(String, String)> {
    EXTRA_ENV.get().cloned().unwrap_or_default()
}

/// One kiln process the harness can kill and start again the same way.
pub struct Proc {
    pub name: String,
    process: KilnProcess,
}

impl Proc {
    pub fn start(name: &str, args: &[String], env: &[(String, String)]) -> anyhow::Result<Proc> {
        let process = Spec::new(kiln_binary()?, name)
            .args(args)
            // Kiln as operators run it: warm caches fill in the background.
            .env("KILN_WARM_CACHES", "true")
            .envs(extra_env())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(if std::env::var_os("KILN_LOADTEST_LOGS").is_some() {
                Stderr::Inherit
            } else {
                Stderr::Null
            })
            .start()?;
        Ok(Proc {
            name: name.to_string(),
            process,
        })
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        Ok(self.process.restart()?)
    }

    /// The URL it serves (from "kiln listening on http://..." or "kiln scheduler: ... on http://...").
    pub fn url(&self) -> String {
        self.process.url().to_string()
    }
}

pub fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    if kiln_harness::process::wait_ready(url, Instant::now(), timeout).is_err() {
        bail!("{url} never became ready")
    }
    Ok(())
}

/// What the harness started.
pub struct Deployment {
    /// HTTP APIs to send to.
    pub apis: Vec<String>,
    pub topics: Option<Topics>,
    /// Processes chaos may kill: the first is the victim.
    pub victims: Vec<Arc<Mutex<Proc>>>,
    pub others: Vec<Proc>,
    /// Kubernetes: the kubeconfig and the runner pods' namespace.
    pub k8s: Option<(PathBuf, String)>,
    dirs: Vec<PathBuf>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.victims.clear();
        self.others.clear();
        if let Some((kcfg, ns)) = &self.k8s {
            let _ = kubectl(kcfg, &["delete", "namespace", ns, "--wait=false"]);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn run_id() -> String {
    format!(
        "lt{}-{}",
        std::process::id(),
        kiln::result::now_ms() % 1_000_000
    )
}

fn topic_env(t: &Topics, group: &str) -> Vec<(String, String)> {
    vec![
        (
            "KILN_KAFKA__SUBMISSIONS_TOPIC".into(),
            t.submissions.clone(),
        ),
        ("KILN_KAFKA__RESULTS_TOPIC".into(), t.results.clone()),
        (
            "KILN_KAFKA__DEAD_LETTER_TOPIC".into(),
            t.dead_letter.clone(),
        ),
        ("KILN_KAFKA__GROUP".into(), group.to_string()),
    ]
}

fn create_topics(t: &Topics, group: &str, partitions: u32) -> anyhow::Result<()> {
    let out = Command::new(kiln_binary()?)
        .args([
            "topics",
            "create",
            "--brokers",
            &t.brokers,
            "--partitions",
            &partitions.to_string(),
        ])
        .envs(topic_env(t, group))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kiln topics create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let out = Command::new(PathBuf::from(home).join(".cache/kiln/k8s/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl from scripts/k8s")?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free local address, fixed for the run, so that a restarted process is found where it was.
fn free_address() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// `kiln serve` on a data dir of its own (the victim of chaos).
pub fn single_http() -> anyhow::Result<Deployment> {
    let dir = std::env::temp_dir().join(format!("kiln-loadtest-{}", run_id()));
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        free_address()?,
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    let serve = Proc::start("kiln serve", &args, &[])?;
    let url = serve.url();
    wait_ready(&url, Duration::from_secs(60))?;
    Ok(Deployment {
        apis: vec![url],
        topics: None,
        victims: vec![Arc::new(Mutex::new(serve))],
        others: Vec::new(),
        k8s: None,
        dirs: vec![dir],
    })
}

/// The project's broker, topics of this run's own, and `kiln scheduler` with local pods.
pub fn single_kafka(partitions: u32) -> anyhow::Result<Deployment> {
    script("kafka", &["up"])?;
    let id = run_id();
    let t = Topics {
        brokers: "127.0.0.1:9092".into(),
        submissions: format!("{id}.submissions"),
        results: format!("{id}.results"),
        dead_letter: format!("{id}.dead-letter"),
    };
    let group = format!("{id}.group");
    create_topics(&t, &group, partitions)?;
    let mut env = topic_env(&t, &group);
    env.push(("KILN_KAFKA__TRANSACTIONAL_ID".into(), format!("{id}-s0")));
    let args: Vec<String> = [
        "scheduler",
        "--brokers",
        &t.brokers,
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    let s = Proc::start("kiln scheduler #0", &args, &env)?;
    wait_ready(&s.url(), Duration::from_secs(60))?;
    Ok(Deployment {
        apis: Vec::new(),
        topics: Some(t),
        victims: vec![Arc::new(Mutex::new(s))],
        others: Vec::new(),
        k8s: None,
        dirs: Vec::new(),
    })
}

/// The whole distributed shape: the project's broker and kwok cluster, `apis` × `kiln api`, and
/// `schedulers` × `kiln scheduler --pods kubernetes` in one consumer group sharing the pools.
pub fn kafka_k8s(apis: usize, schedulers: usize, partitions: u32) -> anyhow::Result<Deployment> {
    script("kafka", &["up"])?;
    let kubeconfig = PathBuf::from(script("k8s", &["up"])?);
    let id = run_id();
    let ns = format!("kiln-{id}");
    kubectl(&kubeconfig, &["create", "namespace", &ns])?;
    let until = Instant::now() + Duration::from_secs(30);
    while kubectl(
        &kubeconfig,
        &["get", "serviceaccount", "default", "-n", &ns],
    )
    .is_err()
    {
        anyhow::ensure!(
            Instant::now() < until,
            "namespace {ns} got no default ServiceAccount"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Topics {
        brokers: "127.0.0.1:9092".into(),
        submissions: format!("{id}.submissions"),
        results: format!("{id}.results"),
        dead_letter: format!("{id}.dead-letter"),
    };
    let group = format!("{id}.group");
    create_topics(&t, &group, partitions)?;
    let dir = std::env::temp_dir().join(format!("kiln-loadtest-{id}"));
    std::fs::create_dir_all(&dir)?;
    let runner = kiln_binary()?.with_file_name("kiln-runner");
    let config = dir.join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            // kwok runs each exec on this host and slows down when the machine is loaded: the
            // watchdog waits longer than a production deployment would.
            "pods = \"kubernetes\"\nwatchdog_grace_ms = 60000\n[kubernetes]\nnamespace = \"{ns}\"\nkubeconfig = \"{}\"\ntransport = \"exec\"\nrunner_command = [\"{}\", \"exec\"]\nready_timeout_secs = 30\n[[kubernetes.pools]]\nname = \"default\"\nmin = 2\nmax = 6\n",
            kubeconfig.display(),
            runner.display()
        ),
    )?;
    let mut victims = Vec::new();
    for i in 0..schedulers {
        let mut env = topic_env(&t, &group);
        env.push(("KILN_CONFIG".into(), config.display().to_string()));
        env.push(("KILN_KAFKA__TRANSACTIONAL_ID".into(), format!("{id}-s{i}")));
        env.push(("KILN_KUBERNETES__INSTANCE".into(), format!("{id}-s{i}")));
        let args: Vec<String> = [
            "scheduler",
            "--brokers",
            &t.brokers,
            "--listen",
            "127.0.0.1:0",
            "--pods",
            "kubernetes",
        ]
        .map(String::from)
        .to_vec();
        let s = Proc::start(&format!("kiln scheduler #{i}"), &args, &env)?;
        wait_ready(&s.url(), Duration::from_secs(90))?;
        victims.push(Arc::new(Mutex::new(s)));
    }
    let mut others = Vec::new();
    let mut urls = Vec::new();
    for i in 0..apis {
        let mut env = topic_env(&t, &group);
        env.push(("KILN_KAFKA__TRANSACTIONAL_ID".into(), format!("{id}-a{i}")));
        let data = dir.join(format!("api{i}"));
        let args: Vec<String> = vec![
            "api".into(),
            "--brokers".into(),
            t.brokers.clone(),
            "--listen".into(),
            free_address()?,
            "--data-dir".into(),
            data.display().to_string(),
        ];
        let a = Proc::start(&format!("kiln api #{i}"), &args, &env)?;
        urls.push(a.url());
        others.push(a);
    }
    for u in &urls {
        wait_ready(u, Duration::from_secs(60))?;
    }
    Ok(Deployment {
        apis: urls,
        topics: Some(t),
        victims,
        others,
        k8s: Some((kubeconfig, ns)),
        dirs: vec![dir],
    })
}
