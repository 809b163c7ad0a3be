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
    /// Measure Kiln against the bare-spawn floor and print a Markdown report: runs the
    /// kiln-bench binary built beside this one (`kiln bench --help` lists the measurements).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
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
        Cmd::Bench { args } => bench(&cli.config, &cli.log_format, args),
    }
}

/// `kiln bench`: the measurements live in the kiln-bench binary (they are not part of the
/// server), which this replaces itself with, telling it which kiln to measure.
fn bench(
    config: &Option<PathBuf>,
    log_format: &Option<String>,
    args: Vec<std::ffi::OsString>,
) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt as _;
    let kiln = std::env::current_exe().context("finding the kiln binary")?;
    let bench = kiln.with_file_name("kiln-bench");
    anyhow::ensure!(
        bench.is_file(),
        "kiln bench runs {}, which is not built (cargo build --release -p kiln-bench)",
        bench.display()
    );
    let mut cmd = std::process::Command::new(&bench);
    cmd.arg("--kiln").arg(&kiln);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    if let Some(f) = log_format {
        cmd.arg("--log-format").arg(f);
    }
    let err = cmd.args(args).exec();
    Err(anyhow::Error::new(err).context(format!("running {}", bench.display())))
}

/// `--pods`: which pod backend, checked.
fn set_pods(s: &mut kiln::config::Settings, pods: Option<String>) -> anyhow::Result<()> {
    if let Some(p) = pods {
        s.pods = p.parse().map_err(|e| anyhow::anyhow!("--pods: {e}"))?;
    }
    Ok(())
}
