//! `kiln-bench` (also run as `kiln bench`): measures Kiln against the floor measured in the same
//! run and prints a Markdown report for docs/benchmarks.md.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "kiln-bench",
    version,
    about = "Measure Kiln against the bare-spawn floor and print a Markdown report"
)]
struct Cli {
    /// The kiln binary the measurements that start `kiln serve` run (default: the one beside
    /// this binary).
    #[arg(long)]
    kiln: Option<PathBuf>,
    /// Configuration file (TOML); KILN_* environment variables override it.
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Measure the HTTP API end to end (starts `kiln serve` as a child process).
    #[arg(long)]
    http: bool,
    /// Requests in flight for the HTTP throughput measurement (default: one per core).
    #[arg(long)]
    concurrency: Option<usize>,
    /// With --http: Python from a virtualenv whose site start-up imports a few packages,
    /// for Kiln and the floor alike.
    #[arg(long)]
    site_imports: bool,
    /// Measure Kiln over Kafka on these brokers (e.g. 127.0.0.1:9092 from scripts/kafka).
    #[arg(long)]
    kafka: Option<String>,
    /// Measure Kubernetes standby pods against pods made per job, on the cluster of the
    /// `[kubernetes]` settings (e.g. `kubernetes.kubeconfig` from scripts/k8s).
    #[arg(long)]
    kubernetes: bool,
    /// With --kubernetes: also write its figures as JSON to this file (warm_direct_p50_ms,
    /// warm_exec_p50_ms, api_requests_per_job_one_job_pods).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Each language's program in this directory (e.g. tests/languages) through a standby
    /// pod against the bare toolchain on the host.
    #[arg(long)]
    languages: Option<PathBuf>,
    /// A C++ solution judged on N tests (`--runs` = N): one submission with `tests`, N
    /// submissions, and N bare compiles and runs on the host.
    #[arg(long)]
    test_sets: bool,
    /// The embedded queue with `--runs` submissions queued: accept rate, memory per queued
    /// submission, and `/readyz` after `kill -9`.
    #[arg(long)]
    queue: bool,
    /// A single-threaded C job's wall time alone and beside a program keeping sixteen
    /// processes busy, `--runs` / 10 rounds of five runs each side, as a ratio with its
    /// spread (`tests/cpu_share.rs` checks the quota and the pinning behind it).
    #[arg(long)]
    neighbour: bool,
}

fn main() {
    match real_main(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kiln-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    let mut s = kiln::config::Settings::load(cli.config.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(f) = &cli.log_format {
        s.log_format = f
            .parse()
            .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    }
    kiln::commands::startup::init_logging(s.log_format, "warn");
    let kiln = match cli.kiln {
        Some(k) => k,
        None => std::env::current_exe()?.with_file_name("kiln"),
    };
    let Cli {
        runs,
        http,
        concurrency,
        site_imports,
        kafka,
        kubernetes,
        json,
        languages,
        test_sets,
        queue,
        neighbour,
        ..
    } = cli;
    if queue {
        let report = kiln_bench::queue::run(&kiln, runs).map_err(anyhow::Error::msg)?;
        println!("{report}");
        return Ok(0);
    }
    if test_sets {
        let report = kiln_bench::test_sets::run(&kiln, runs, 3).map_err(anyhow::Error::msg)?;
        println!("{report}");
        return Ok(0);
    }
    if kubernetes {
        let (report, figures) =
            kiln_bench::kubernetes::run(&s, runs).map_err(anyhow::Error::msg)?;
        println!("{report}");
        if let Some(path) = &json {
            std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(0);
    }
    if let Some(brokers) = kafka {
        let report = actix::System::new()
            .block_on(kiln_bench::kafka::run(&brokers, &s, runs))
            .map_err(anyhow::Error::msg)?;
        println!("{report}");
        return Ok(0);
    }
    if http {
        let options = kiln_bench::http::Options {
            runs,
            concurrency,
            site_imports,
        };
        let report = kiln_bench::http::run(&kiln, &options).map_err(anyhow::Error::msg)?;
        println!("{report}");
        return Ok(0);
    }
    // Pods driven the way `kiln serve` drives them: from the actor system's thread,
    // whose own event loop hears the runner (no hand-over between threads).
    actix::System::new().block_on(async {
        let registry = kiln::languages::Registry::load(s.languages_file.as_deref())
            .map_err(anyhow::Error::msg)?;
        let backend = kiln::commands::startup::local_backend(&s, &registry)?;
        if neighbour {
            let report = kiln_bench::neighbour::run(&backend, &registry, runs)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            return Ok(0);
        }
        if let Some(dir) = &languages {
            // The warm caches `kiln serve` lays into pods (filled ones only).
            let backend = std::sync::Arc::new(backend);
            let root = s
                .warm_cache_dir
                .clone()
                .unwrap_or_else(kiln::warm::default_root);
            kiln::warm::start(
                std::sync::Arc::new(registry.clone()),
                root,
                backend.clone(),
                false,
            );
            let report = kiln_bench::languages::run(&*backend, &registry, dir, runs)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{report}");
            return Ok(0);
        }
        let figures = kiln_bench::engine(&backend, &registry, runs)
            .await
            .map_err(anyhow::Error::msg)?;
        println!("{}", kiln_bench::report_engine(&figures));
        Ok(0)
    })
}
