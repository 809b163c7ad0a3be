//! What every command builds as it starts: the pod backend (local or Kubernetes), the parts the
//! actor tree shares, the Kafka queue, logging, and the wait for SIGTERM.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::Context as _;

use crate::actors::{TreeParts, TreeSettings};
use crate::config::{LogFormat, PodsKind, Settings};
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::pods::local::{LocalBackend, LocalSettings};
use crate::pods::PodBackend;
use crate::queue::kafka::KafkaQueue;

/// The local pod backend for these settings and this registry's toolchains.
pub fn local_backend(settings: &Settings, registry: &Registry) -> anyhow::Result<LocalBackend> {
    let runner = match &settings.runner_path {
        Some(p) => p.clone(),
        None => {
            let exe = std::env::current_exe().context("finding the kiln binary")?;
            let runner = exe.with_file_name("kiln-runner");
            // The smaller binary when it was built; kiln itself (which runs as the runner when
            // started under that name) otherwise.
            if runner.is_file() {
                runner
            } else {
                exe
            }
        }
    };
    let (read_only, etc) = LocalSettings::host_view(registry, &settings.pod_etc);
    Ok(LocalBackend::new(LocalSettings {
        runner,
        tmpfs_bytes: settings.tmpfs_bytes,
        read_only,
        etc,
        masked: LocalSettings::default_masked(),
        sandbox_user: (settings.sandbox_uid, settings.sandbox_gid),
        network: settings.limits.default.network,
        fork_server: registry.fork_server().filter(|_| settings.fork_server),
    })?)
}

/// The pod backend `settings.pods` names: local namespace pods (with their warm caches filled in
/// the background) or Kubernetes pods.
pub fn pod_backend(
    settings: &Settings,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<dyn PodBackend>> {
    if settings.pods == PodsKind::Kubernetes {
        let backend = crate::pods::kubernetes::KubeBackend::start(
            settings.kubernetes.clone(),
            metrics.clone(),
        )
        .context("starting the Kubernetes pod backend")?;
        return Ok(Arc::new(backend));
    }
    let backend = Arc::new(local_backend(settings, registry)?);
    crate::warm::start(
        registry.clone(),
        settings
            .warm_cache_dir
            .clone()
            .unwrap_or_else(crate::warm::default_root),
        backend.clone(),
        settings.warm_caches,
    );
    Ok(backend)
}

/// What every actor shares, for one queue and one pod backend: the same tree runs over the
/// embedded queue and over Kafka.
pub fn tree_parts(
    settings: &Settings,
    queue: Arc<dyn crate::queue::Queue>,
    backend: Arc<dyn PodBackend>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<TreeParts>> {
    let pools = backend.pools();
    let runners: usize = pools
        .iter()
        .map(|p| p.runners.unwrap_or(settings.effective_pool_size()))
        .sum();
    // Remote pods do not share this host's cores: by default every runner may hold a job.
    let max_parallel_jobs =
        if settings.pods == PodsKind::Kubernetes && settings.max_parallel_jobs == 0 {
            runners
        } else {
            settings.effective_max_parallel_jobs()
        };
    let compile_cache = if settings.compile_cache_bytes == 0 {
        None
    } else {
        let dir = settings
            .compile_cache_dir
            .clone()
            .unwrap_or_else(|| settings.data_dir.join("compile-cache"));
        // Without its cache Kiln still runs every job, compiling each: say so and go on.
        match crate::compile_cache::CompileCache::open(
            &dir,
            settings.compile_cache_bytes,
            metrics.clone(),
        ) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the compile cache cannot be opened: every job compiles");
                None
            }
        }
    };
    Ok(Arc::new(TreeParts {
        compile_cache,
        queue,
        backend,
        pools,
        registry,
        metrics,
        events: crate::events::bus(),
        callbacks: Arc::new(
            crate::callback::Targets::from_settings(&settings.callback_allowed_networks)
                .map_err(anyhow::Error::msg)?,
        ),
        standby: AtomicUsize::new(0),
        settings: TreeSettings {
            policy: settings.limits.clone(),
            pool_size: settings.effective_pool_size(),
            max_parallel_jobs,
            max_attempts: settings.max_attempts,
            watchdog_grace_ms: settings.watchdog_grace_ms,
            inject_panic_probability: settings.inject_panic_probability,
        },
    }))
}

/// Connects to Kafka, retrying with backoff while the brokers do not answer; fails at once when
/// the operator must act (missing topics).
pub(crate) async fn connect(
    settings: &Settings,
    metrics: Arc<Metrics>,
) -> anyhow::Result<KafkaQueue> {
    let kafka = settings.kafka.clone();
    crate::queue::kafka::connect_with_backoff(move || {
        KafkaQueue::connect(kafka.clone(), metrics.clone())
    })
    .await
}

/// Returns at SIGTERM or SIGINT.
pub(crate) async fn until_terminated() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// Logs to stderr, as text or JSON lines; `RUST_LOG` filters (default: `default_level`).
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        let _ = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init();
    } else {
        let _ = builder.try_init();
    }
}
