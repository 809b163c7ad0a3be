//! `kiln-loadtest`: how much Kiln takes, and proof that it loses nothing. Open-loop load at a
//! fixed rate (latency from the intended send time) or closed-loop clients, over HTTP or Kafka,
//! against a running Kiln or one it starts itself (and kills and restarts during the run), with
//! the floor (the same programs spawned bare) measured in the same run.

mod ledger;
mod pods;
mod report;
mod spawn;
mod targets;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use ledger::Ledger;
use report::{Ratios, Report};
use targets::Target;
use workload::{Mix, WorkloadFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Http,
    Kafka,
    /// Half over HTTP (spread over the APIs), half straight to Kafka.
    Both,
    /// The programs spawned bare on this host: what Kiln is compared with.
    Floor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Topology {
    /// One `kiln serve` (HTTP) or one `kiln scheduler` with local pods (Kafka).
    Single,
    /// The project's broker and kwok cluster, `--apis` × `kiln api`, `--schedulers` ×
    /// `kiln scheduler --pods kubernetes`.
    KafkaK8s,
}

#[derive(Parser, Debug)]
#[command(
    name = "kiln-loadtest",
    version,
    about = "Load and chaos harness for Kiln"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "http")]
    target: TargetKind,
    /// Kiln's HTTP API (repeat for several; load is spread over them).
    #[arg(long)]
    url: Vec<String>,
    /// Kafka bootstrap servers (with --target kafka and a running Kiln).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic names' prefix for a running Kiln (default: kiln.submissions, kiln.results, ...).
    #[arg(long, default_value = "kiln")]
    topic_prefix: String,
    /// Open loop: submissions per second, sent at their intended times whatever the answers do.
    #[arg(long, conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Open loop with Poisson arrivals instead of evenly spaced ones.
    #[arg(long)]
    poisson: bool,
    /// Closed loop: this many clients, each sending its next submission when the last is answered.
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to send (e.g. 30s); or use --count.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// How many submissions to send.
    #[arg(long)]
    count: Option<u64>,
    /// The first part of the run, left out of the figures.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    warmup: Duration,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/default.toml"))]
    workload: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    html: Option<PathBuf>,
    /// Write the report's two charts as SVG files (latency.svg, throughput.svg) into this dir.
    #[arg(long)]
    charts: Option<PathBuf>,
    /// Fail (exit 1) when p99 latency is above this.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Fail (exit 1) when throughput is below this (results per second).
    #[arg(long)]
    min_throughput: Option<f64>,
    /// Start Kiln (and its broker and cluster) here, and stop it afterwards.
    #[arg(long)]
    spawn: bool,
    #[arg(long, value_enum, default_value = "single")]
    topology: Topology,
    /// With --spawn: a setting for the kiln processes started (repeatable), e.g.
    /// KILN_WARM_CACHES=false.
    #[arg(long, value_parser = parse_env)]
    kiln_env: Vec<(String, String)>,
    /// With --topology kafka-k8s: `kiln api` processes.
    #[arg(long, default_value_t = 2)]
    apis: usize,
    /// With --topology kafka-k8s: `kiln scheduler --pods kubernetes` processes.
    #[arg(long, default_value_t = 2)]
    schedulers: usize,
    /// With --spawn: SIGKILL and restart a scheduler (or `kiln serve`) this often.
    #[arg(long, value_parser = humantime::parse_duration)]
    chaos_kill_every: Option<Duration>,
    /// With --topology kafka-k8s: delete one standby runner pod from outside, mid-run.
    #[arg(long)]
    chaos_delete_pod: bool,
    /// Do not measure the floor beside Kiln.
    #[arg(long)]
    no_floor: bool,
    /// Requests in flight at most (open loop): threads sending.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// How long to wait for the last results after sending stops.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    result_timeout: Duration,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Kafka partitions of the topics a spawned deployment creates.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    quiet: bool,
}

/// How one phase (Kiln, or the floor) is driven.
struct Drive {
    rate: Option<f64>,
    poisson: bool,
    concurrency: usize,
    duration: Option<Duration>,
    count: Option<u64>,
    max_in_flight: usize,
    result_timeout: Duration,
    quiet: bool,
    seed: u64,
}

/// Sends the mix to `target` as `drive` says and waits for the results.
fn drive(
    target: Arc<dyn Target>,
    ledger: Arc<Ledger>,
    mix: Mix,
    d: &Drive,
    label: &str,
    sending_done: &AtomicBool,
) {
    let run = format!("{label}-{:x}", kiln::result::now_ms() & 0xffffff);
    let mix = Arc::new(Mutex::new(mix));
    let seq = Arc::new(AtomicU64::new(0));
    let stop_at = d.duration.map(|t| ledger.start + t);
    let more = {
        let seq = seq.clone();
        let count = d.count;
        move || {
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let in_time = stop_at.is_none_or(|t| Instant::now() < t);
            let in_count = count.is_none_or(|c| n < c);
            (in_time && in_count).then_some(n)
        }
    };
    let bar = if d.quiet {
        ProgressBar::hidden()
    } else {
        let bar = match d.count {
            Some(c) => ProgressBar::new(c),
            None => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label.to_string());
        bar
    };
    let one = |n: u64, intended: Duration| {
        let item = mix.lock().unwrap().draw();
        let id = format!("{run}-{n}");
        ledger.sent(&id, item, intended, target.via_kafka(n));
        target.send(&ledger, &id, item, n);
        bar.inc(1);
        id
    };
    std::thread::scope(|s| {
        if let Some(rate) = d.rate {
            // Open loop: a pacer hands (seq, intended time) to the senders; a send that starts
            // late still counts from its intended time.
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Duration)>(d.max_in_flight * 4);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..d.max_in_flight {
                let rx = rx.clone();
                let one = &one;
                s.spawn(move || loop {
                    let next = rx.lock().unwrap().recv();
                    match next {
                        Ok((n, intended)) => {
                            one(n, intended);
                        }
                        Err(_) => return,
                    }
                });
            }
            let mut rng = Mix::new(Vec::new(), d.seed ^ 0x5eed);
            let mut at = ledger.start.elapsed();
            while let Some(n) = more() {
                let gap = if d.poisson {
                    -(1.0 - rng.next_f64()).ln() / rate
                } else {
                    1.0 / rate
                };
                at += Duration::from_secs_f64(gap);
                let now = ledger.start.elapsed();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send((n, at)).is_err() {
                    break;
                }
            }
            drop(tx);
        } else {
            // Closed loop: each client waits for its result before the next.
            for _ in 0..d.concurrency {
                let (one, more, ledger) = (&one, &more, &ledger);
                s.spawn(move || {
                    while let Some(n) = more() {
                        let id = one(n, ledger.start.elapsed());
                        let until = Instant::now() + d.result_timeout;
                        while !ledger.has_result(&id) && Instant::now() < until {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                });
            }
        }
    });
    target.finish();
    sending_done.store(true, Ordering::Relaxed);
    let until = Instant::now() + d.result_timeout;
    while ledger.outstanding() > 0 && Instant::now() < until {
        bar.set_message(format!("waiting for {} results", ledger.outstanding()));
        std::thread::sleep(Duration::from_millis(50));
    }
    // A moment more, so that a duplicate result would still show.
    if target.via_kafka(1) {
        std::thread::sleep(Duration::from_secs(2));
    }
    bar.finish_and_clear();
}

fn languages(urls: &[String]) -> Vec<String> {
    let from_api = urls.first().and_then(|u| {
        let v: serde_json::Value = ureq::get(&format!("{u}/v1/runtimes"))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|r| r["language"].as_str().map(String::from))
                .collect::<Vec<_>>(),
        )
    });
    from_api.unwrap_or_else(|| {
        kiln::languages::Registry::load(None)
            .map(|r| r.available.iter().map(|l| l.name.clone()).collect())
            .unwrap_or_default()
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn main() {
    let cli = Cli::parse();
    spawn::set_extra_env(cli.kiln_env.clone());
    match run(cli) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kiln-loadtest: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    if cli.duration.is_none() && cli.count.is_none() {
        bail!("say how much: --duration or --count");
    }
    if cli.chaos_kill_every.is_some() && !cli.spawn {
        bail!("--chaos-kill-every needs --spawn: the harness can only kill what it started");
    }
    let workload_text = std::fs::read_to_string(&cli.workload)
        .with_context(|| format!("reading {}", cli.workload.display()))?;
    let workload = WorkloadFile::parse(&workload_text).map_err(anyhow::Error::msg)?;
    let d = Drive {
        rate: cli.rate,
        poisson: cli.poisson,
        concurrency: cli.concurrency.unwrap_or(2),
        duration: cli.duration,
        count: cli.count,
        max_in_flight: cli.max_in_flight,
        result_timeout: cli.result_timeout,
        quiet: cli.quiet,
        seed: cli.seed,
    };
    let mode = match (cli.rate, cli.concurrency) {
        (Some(r), _) => format!(
            "open loop, {r}/s{}",
            if cli.poisson { " Poisson" } else { "" }
        ),
        (None, c) => format!("closed loop, {} clients", c.unwrap_or(2)),
    };

    // What to send to.
    let deployment = if cli.spawn {
        Some(match (cli.topology, cli.target) {
            (Topology::KafkaK8s, _) => spawn::kafka_k8s(cli.apis, cli.schedulers, cli.partitions)?,
            (Topology::Single, TargetKind::Http) => spawn::single_http()?,
            (Topology::Single, TargetKind::Kafka) => spawn::single_kafka(cli.partitions)?,
            (Topology::Single, t) => {
                bail!("--spawn with --target {t:?} needs --topology kafka-k8s")
            }
        })
    } else {
        None
    };
    let urls = match &deployment {
        Some(dep) if !dep.apis.is_empty() => dep.apis.clone(),
        _ => cli
            .url
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect(),
    };
    let topics = match &deployment {
        Some(dep) => dep.topics.clone(),
        None => cli.brokers.clone().map(|b| targets::Topics {
            brokers: b,
            submissions: format!("{}.submissions", cli.topic_prefix),
            results: format!("{}.results", cli.topic_prefix),
            dead_letter: format!("{}.dead-letter", cli.topic_prefix),
        }),
    };
    let items = workload
        .items(&languages(&urls))
        .map_err(anyhow::Error::msg)?;
    let floor_items: Vec<_> = items.iter().filter(|i| i.floor).cloned().collect();

    let target: Arc<dyn Target> = match cli.target {
        TargetKind::Http => {
            anyhow::ensure!(!urls.is_empty(), "--target http needs --url (or --spawn)");
            Arc::new(targets::Http::new(urls.clone(), cli.result_timeout))
        }
        TargetKind::Kafka => {
            let t = topics
                .clone()
                .context("--target kafka needs --brokers (or --spawn)")?;
            Arc::new(targets::Kafka::new(t)?)
        }
        TargetKind::Both => {
            let t = topics.clone().context("--target both needs Kafka")?;
            anyhow::ensure!(!urls.is_empty(), "--target both needs HTTP APIs");
            Arc::new(targets::Both {
                http: targets::Http::new(urls.clone(), cli.result_timeout),
                kafka: targets::Kafka::new(t)?,
            })
        }
        TargetKind::Floor => Arc::new(targets::Floor::new()?),
    };
    let target_items = if cli.target == TargetKind::Floor {
        floor_items.clone()
    } else {
        items
    };
    let ledger = Arc::new(Ledger::new(target_items.clone(), cli.warmup));

    // Readers of the results and dead-letter topics (started before anything is sent).
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    if let (Some(t), true) = (&topics, cli.target != TargetKind::Floor) {
        if cli.target != TargetKind::Http || deployment.as_ref().is_some_and(|d| d.topics.is_some())
        {
            readers.push(targets::read_topic(
                &t.brokers,
                &t.results,
                false,
                ledger.clone(),
                stop.clone(),
            )?);
            readers.push(targets::read_topic(
                &t.brokers,
                &t.dead_letter,
                true,
                ledger.clone(),
                stop.clone(),
            )?);
        }
    }
    let pods = match deployment.as_ref().and_then(|d| d.k8s.clone()) {
        Some((kcfg, ns)) => Some(pods::PodWatch::start(&kcfg, &ns)?),
        None => None,
    };

    // Chaos, while the load runs.
    let chaos_log: Arc<Mutex<Vec<String>>> = Arc::default();
    let chaos_stop = Arc::new(AtomicBool::new(false));
    let chaos = deployment.as_ref().map(|dep| {
        let victim = dep.victims.first().cloned();
        let k8s = dep.k8s.clone();
        let every = cli.chaos_kill_every;
        let delete_pod = cli.chaos_delete_pod;
        let half = cli
            .duration
            .map(|t| t / 2)
            .unwrap_or(Duration::from_secs(3));
        let (log, stop, start) = (chaos_log.clone(), chaos_stop.clone(), ledger.start);
        std::thread::spawn(move || {
            let mut next_kill = every.map(|e| start + e);
            let mut pod_at = delete_pod.then(|| start + half);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                let now = Instant::now();
                if let (Some(at), Some(v)) = (next_kill, &victim) {
                    if now >= at {
                        let mut p = v.lock().unwrap();
                        p.kill9();
                        std::thread::sleep(Duration::from_millis(300));
                        let restarted = p.restart();
                        log.lock().unwrap().push(format!(
                            "t={:.1}s: SIGKILLed {} and started it again{}",
                            start.elapsed().as_secs_f64(),
                            p.name,
                            restarted
                                .err()
                                .map(|e| format!(" (FAILED: {e})"))
                                .unwrap_or_default()
                        ));
                        next_kill = every.map(|e| Instant::now() + e);
                    }
                }
                if let (Some(at), Some((kcfg, ns))) = (pod_at, &k8s) {
                    if now >= at {
                        // A standby pod can be claimed (and deleted after its job) between
                        // the listing and the deletion: try another one then.
                        let mut line = "found no standby pod to delete".to_string();
                        for _ in 0..10 {
                            let standby = spawn::kubectl(
                                kcfg,
                                &[
                                    "get",
                                    "pods",
                                    "-n",
                                    ns,
                                    "-l",
                                    "kiln.dev/role=runner,!kiln.dev/claimed-by",
                                    "-o",
                                    "jsonpath={.items[0].metadata.name}",
                                ],
                            );
                            let Ok(name) = standby else { continue };
                            if name.is_empty() {
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                            let deleted = spawn::kubectl(
                                kcfg,
                                &[
                                    "delete",
                                    "pod",
                                    "-n",
                                    ns,
                                    &name,
                                    "--grace-period=0",
                                    "--wait=false",
                                ],
                            );
                            match deleted {
                                Ok(_) => {
                                    line = format!("deleted standby pod {name} from outside");
                                    break;
                                }
                                Err(e) => line = format!("deleting pod {name} failed: {e}"),
                            }
                        }
                        log.lock()
                            .unwrap()
                            .push(format!("t={:.1}s: {line}", start.elapsed().as_secs_f64()));
                        pod_at = None;
                    }
                }
            }
        })
    });

    let mix = Mix::new(target_items, cli.seed);
    // Chaos stops with the sending; the results still outstanding are then waited for.
    drive(
        target,
        ledger.clone(),
        mix,
        &d,
        &format!("{:?}", cli.target).to_lowercase(),
        &chaos_stop,
    );
    if let Some(c) = chaos {
        let _ = c.join();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.join();
    }
    let figures = ledger.figures();
    // Like for like: the programs the floor runs too.
    let comparable = ledger.figures_of(|i| i.floor);
    let pod_figures = pods.as_ref().map(|p| p.figures());
    drop(pods);
    drop(deployment);

    // The floor: the same benign programs spawned bare, same concurrency (or rate), same run.
    let floor = if cli.target != TargetKind::Floor && !cli.no_floor && !floor_items.is_empty() {
        // The target first: the run's clock starts with its ledger.
        let floor_target = Arc::new(targets::Floor::new()?);
        let floor_ledger = Arc::new(Ledger::new(floor_items.clone(), cli.warmup));
        let floor_drive = Drive {
            quiet: cli.quiet,
            ..d
        };
        drive(
            floor_target,
            floor_ledger.clone(),
            Mix::new(floor_items, cli.seed),
            &floor_drive,
            "floor",
            &AtomicBool::new(false),
        );
        Some(floor_ledger.figures())
    } else {
        None
    };
    let ratios = floor.as_ref().map(|f| Ratios {
        throughput: comparable.throughput_per_s / f.throughput_per_s.max(1e-9),
        p50: comparable.latency_ms.p50 / f.latency_ms.p50.max(1e-9),
        p99: comparable.latency_ms.p99 / f.latency_ms.p99.max(1e-9),
        comparable_sent: comparable.sent,
    });
    let mut missed = Vec::new();
    if let Some(max) = cli.max_p99_ms {
        if figures.latency_ms.p99 > max {
            missed.push(format!(
                "p99 {:.1} ms is over --max-p99-ms {max}",
                figures.latency_ms.p99
            ));
        }
    }
    if let Some(min) = cli.min_throughput {
        if figures.throughput_per_s < min {
            missed.push(format!(
                "throughput {:.1}/s is under --min-throughput {min}",
                figures.throughput_per_s
            ));
        }
    }
    let report = Report {
        target: format!(
            "{:?}{}",
            cli.target,
            match (cli.spawn, cli.topology) {
                (true, Topology::KafkaK8s) => format!(
                    " (spawned: Kafka + Kubernetes, {} APIs, {} schedulers)",
                    cli.apis, cli.schedulers
                ),
                (true, Topology::Single) => " (spawned: single)".into(),
                (false, _) => String::new(),
            }
        )
        .to_lowercase(),
        mode,
        workload: cli.workload.display().to_string(),
        sent: figures.sent,
        results: figures.results,
        lost: figures.lost,
        duplicated: figures.duplicated,
        wrong_status: figures.wrong_status,
        throughput_per_s: figures.throughput_per_s,
        latency_ms: figures.latency_ms.clone(),
        floor,
        ratios,
        chaos: chaos_log.lock().unwrap().clone(),
        pods: pod_figures,
        thresholds_missed: missed,
        details: figures,
    };
    println!("{}", report.table());
    if let Some(p) = &cli.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(p) = &cli.html {
        std::fs::write(p, report.html())?;
    }
    if let Some(dir) = &cli.charts {
        std::fs::create_dir_all(dir)?;
        let floor = report.floor.as_ref();
        std::fs::write(
            dir.join("latency.svg"),
            report::latency_chart(
                &report.details.distribution,
                floor.map(|f| f.distribution.as_slice()),
            ),
        )?;
        std::fs::write(
            dir.join("throughput.svg"),
            report::throughput_chart(
                &report.details.throughput_over_time,
                floor.map(|f| f.throughput_over_time.as_slice()),
            ),
        )?;
    }
    Ok(report.ok())
}
