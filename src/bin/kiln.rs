//! `kiln`: the command line. Thin: parses arguments and calls the library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", about = "Runs untrusted programs in isolated, pre-warmed sandboxes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure Kiln against the bare-spawn floor and print a Markdown report.
    Bench {
        #[arg(long, default_value_t = 200)]
        runs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Bench { runs } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let registry = kiln::languages::Registry::load(None).map_err(anyhow::Error::msg)?;
                let mut read_only = kiln::pods::local::LocalSettings::default_read_only();
                read_only.extend(registry.mounts());
                let runner = std::env::current_exe()?.with_file_name("kiln-runner");
                let backend = kiln::pods::local::LocalBackend::new(kiln::pods::local::LocalSettings {
                    runner,
                    tmpfs_bytes: 256 << 20,
                    read_only,
                    masked: kiln::pods::local::LocalSettings::default_masked(),
                    sandbox_user: (65534, 65534),
                })?;
                let figures = kiln::bench::engine(&backend, &registry, runs).await.map_err(anyhow::Error::msg)?;
                println!("{}", kiln::bench::report_engine(&figures));
                Ok(())
            })
        }
    }
}
