//! `kiln`: the command line. Thin: parses arguments and calls the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Runs untrusted programs in isolated, pre-warmed sandboxes"
)]
struct Cli {
    /// Configuration file (TOML); KILN_* environment variables override it.
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the API, the scheduler, the embedded queue and local standby pods in one process.
    Serve {
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `embedded` (default) or `kafka` (also `queue`, KILN_QUEUE).
        #[arg(long)]
        queue: Option<String>,
        /// Kafka's bootstrap servers, with `--queue kafka`.
        #[arg(long)]
        brokers: Option<String>,
        /// `local` (default) or `kubernetes` (also `pods`, KILN_PODS).
        #[arg(long)]
        pods: Option<String>,
    },
    /// The HTTP API alone, in Kafka mode: submissions to the submissions topic, answers from the
    /// results topic. Run schedulers beside it.
    Api {
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long)]
        listen: Option<String>,
        /// Where this API keeps the results it has read.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the scheduler against Kafka: consume submissions, run them, publish results.
    Scheduler {
        /// Bootstrap servers (also `kafka.brokers`, KILN_KAFKA__BROKERS).
        #[arg(long)]
        brokers: Option<String>,
        /// Where /healthz, /readyz and /metrics answer.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// This instance's stable transactional id (default `kiln-<hostname>`; also
        /// KILN_KAFKA__TRANSACTIONAL_ID). Two live instances must not share one.
        #[arg(long)]
        transactional_id: Option<String>,
        /// `local` (default) or `kubernetes` (also `pods`, KILN_PODS).
        #[arg(long)]
        pods: Option<String>,
    },
    /// Kafka topics Kiln uses.
    Topics {
        #[command(subcommand)]
        action: TopicsCmd,
    },
    /// Run one file and print its output; exits with the program's exit code.
    Run {
        file: PathBuf,
        /// Language name or alias (default: from the file's extension).
        #[arg(long, short)]
        language: Option<String>,
        /// File whose content is the program's stdin.
        #[arg(long)]
        stdin: Option<PathBuf>,
        /// A running Kiln (e.g. http://127.0.0.1:8080); without it an embedded one is started.
        #[arg(long)]
        server: Option<String>,
        /// Arguments for the program.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List the languages this host can run, and the ones it cannot with the reason.
    Runtimes,
    /// Measure Kiln against the bare-spawn floor and print a Markdown report.
    Bench {
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
    },
}

#[derive(Subcommand)]
enum TopicsCmd {
    /// Create the submissions, results and dead-letter topics (those missing).
    Create {
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

fn settings(cli: &Cli) -> anyhow::Result<kiln::config::Settings> {
    let mut s = kiln::config::Settings::load(cli.config.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(f) = &cli.log_format {
        s.log_format = f
            .parse()
            .map_err(|e| anyhow::anyhow!("--log-format: {e}"))?;
    }
    Ok(s)
}

fn main() {
    // Where `kiln-runner` was not built (`cargo run --bin kiln` builds only this binary), kiln
    // starts its pods with itself under that name.
    let mut args = std::env::args();
    if args
        .next()
        .is_some_and(|a| a.rsplit('/').next() == Some("kiln-runner"))
    {
        std::process::exit(kiln::runner::main(&args.collect::<Vec<_>>()));
    }
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kiln: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    let mut s = settings(&cli)?;
    let level = if matches!(
        cli.command,
        Cmd::Serve { .. } | Cmd::Scheduler { .. } | Cmd::Api { .. }
    ) {
        "info"
    } else {
        "warn"
    };
    kiln::commands::startup::init_logging(s.log_format, level);
    match cli.command {
        Cmd::Serve {
            listen,
            data_dir,
            queue,
            brokers,
            pods,
        } => {
            set_pods(&mut s, pods)?;
            if let Some(l) = listen {
                s.listen = l;
            }
            if let Some(d) = data_dir {
                s.data_dir = d;
            }
            if let Some(q) = queue {
                s.queue = q.parse().map_err(|e| anyhow::anyhow!("--queue: {e}"))?;
            }
            if let Some(b) = brokers {
                s.kafka.brokers = b;
            }
            kiln::commands::serve::run(s, cli.config.as_deref())?;
            Ok(0)
        }
        Cmd::Api {
            brokers,
            listen,
            data_dir,
        } => {
            if let Some(b) = brokers {
                s.kafka.brokers = b;
            }
            if let Some(l) = listen {
                s.listen = l;
            }
            if let Some(d) = data_dir {
                s.data_dir = d;
            }
            kiln::commands::serve::run_api(s)?;
            Ok(0)
        }
        Cmd::Scheduler {
            brokers,
            listen,
            transactional_id,
            pods,
        } => {
            set_pods(&mut s, pods)?;
            if let Some(b) = brokers {
                s.kafka.brokers = b;
            }
            if let Some(t) = transactional_id {
                s.kafka.transactional_id = Some(t);
            }
            s.listen = listen;
            kiln::commands::scheduler::run(s)?;
            Ok(0)
        }
        Cmd::Topics {
            action:
                TopicsCmd::Create {
                    brokers,
                    partitions,
                    replication,
                },
        } => {
            if let Some(b) = brokers {
                s.kafka.brokers = b;
            }
            let rt = tokio::runtime::Runtime::new()?;
            let lines = rt
                .block_on(kiln::queue::kafka::create_topics(
                    &s.kafka,
                    partitions,
                    replication,
                ))
                .map_err(anyhow::Error::msg)?;
            for line in lines {
                println!("{line}");
            }
            Ok(0)
        }
        Cmd::Run {
            file,
            language,
            stdin,
            server,
            args,
        } => kiln::commands::run::run_file(s, &file, language, stdin, server, args),
        Cmd::Runtimes => {
            let registry = kiln::languages::Registry::load(s.languages_file.as_deref())
                .map_err(anyhow::Error::msg)?;
            for l in &registry.available {
                let compiled = if l.compile.is_some() {
                    "compiled"
                } else {
                    "interpreted"
                };
                println!(
                    "{:<12} {:<10} {:<12} aliases: {}",
                    l.name,
                    l.version,
                    compiled,
                    l.aliases.join(", ")
                );
            }
            for (name, why) in &registry.unavailable {
                println!("{name:<12} unavailable: {why}");
            }
            Ok(0)
        }
        Cmd::Bench {
            runs,
            http,
            concurrency,
            site_imports,
            kafka,
            kubernetes,
            languages,
            test_sets,
            queue,
            neighbour,
        } => {
            if queue {
                let exe = std::env::current_exe().context("finding the kiln binary")?;
                let report = kiln::bench::queue::run(&exe, runs).map_err(anyhow::Error::msg)?;
                println!("{report}");
                return Ok(0);
            }
            if test_sets {
                let exe = std::env::current_exe().context("finding the kiln binary")?;
                let report =
                    kiln::bench::test_sets::run(&exe, runs, 3).map_err(anyhow::Error::msg)?;
                println!("{report}");
                return Ok(0);
            }
            if kubernetes {
                let report = kiln::bench::kubernetes::run(&s, runs).map_err(anyhow::Error::msg)?;
                println!("{report}");
                return Ok(0);
            }
            if let Some(brokers) = kafka {
                let report = actix::System::new()
                    .block_on(kiln::bench::kafka::run(&brokers, &s, runs))
                    .map_err(anyhow::Error::msg)?;
                println!("{report}");
                return Ok(0);
            }
            if http {
                let exe = std::env::current_exe().context("finding the kiln binary")?;
                let options = kiln::bench::http::Options {
                    runs,
                    concurrency,
                    site_imports,
                };
                let report = kiln::bench::http::run(&exe, &options).map_err(anyhow::Error::msg)?;
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
                    let report = kiln::bench::neighbour::run(&backend, &registry, runs)
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
                    let report = kiln::bench::languages::run(&*backend, &registry, dir, runs)
                        .await
                        .map_err(anyhow::Error::msg)?;
                    println!("{report}");
                    return Ok(0);
                }
                let figures = kiln::bench::engine(&backend, &registry, runs)
                    .await
                    .map_err(anyhow::Error::msg)?;
                println!("{}", kiln::bench::report_engine(&figures));
                Ok(0)
            })
        }
    }
}

/// `--pods`: which pod backend, checked.
fn set_pods(s: &mut kiln::config::Settings, pods: Option<String>) -> anyhow::Result<()> {
    if let Some(p) = pods {
        s.pods = p.parse().map_err(|e| anyhow::anyhow!("--pods: {e}"))?;
    }
    Ok(())
}
