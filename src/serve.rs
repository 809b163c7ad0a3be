//! `kiln serve`: API + scheduler + embedded queue + local pods in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::actors::scheduler_root::SchedulerRoot;
use crate::actors::Shared;
use crate::api::{routes, Admission, ApiState};
use crate::config::{LogFormat, PodsKind, QueueKind, Settings};
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::pods::local::{LocalBackend, LocalSettings};
use crate::pods::PodBackend;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::kafka_intake::KafkaIntake;
use crate::queue::Intake;

/// A started instance.
pub struct Instance {
    pub addr: SocketAddr,
    pub server: actix_web::dev::ServerHandle,
    pub scheduler: SchedulerRoot,
    pub registry: Arc<Registry>,
    pub backend_lines: Vec<String>,
    pub settings: Settings,
}

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
pub fn shared_parts(
    settings: &Settings,
    queue: Arc<dyn crate::queue::Queue>,
    backend: Arc<dyn PodBackend>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Shared>> {
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
    Ok(Arc::new(Shared {
        compile_cache,
        queue,
        backend,
        pools,
        registry,
        policy: settings.limits.clone(),
        metrics,
        events: crate::events::bus(),
        pool_size: settings.effective_pool_size(),
        max_parallel_jobs,
        max_attempts: settings.max_attempts,
        watchdog_grace_ms: settings.watchdog_grace_ms,
        inject_panic_probability: settings.inject_panic_probability,
        callbacks: Arc::new(
            crate::callback::Targets::from_settings(&settings.callback_allowed_networks)
                .map_err(anyhow::Error::msg)?,
        ),
        standby: AtomicUsize::new(0),
    }))
}

/// The embedded queue's store in the data dir (in Kafka mode: the API's store of results).
fn open_store(settings: &Settings) -> anyhow::Result<EmbeddedQueue> {
    EmbeddedQueue::open(
        &settings.data_dir,
        crate::queue::embedded::Bounds {
            retention: Duration::from_secs(settings.result_retention_secs),
            max_results_bytes: settings.max_results_bytes,
            min_free_bytes: settings.min_free_bytes,
        },
    )
    .context("opening the embedded queue")
}

/// Kafka mode's intake, retrying while the brokers do not answer.
async fn connect_intake(
    settings: &Settings,
    store: Arc<EmbeddedQueue>,
    events: crate::events::EventBus,
) -> anyhow::Result<KafkaIntake> {
    let group = format!(
        "{}.api.{}",
        settings.kafka.group,
        settings.kafka.transactional_id()
    );
    let kafka = settings.kafka.clone();
    crate::queue::kafka::connect_with_backoff(move || {
        KafkaIntake::start(kafka.clone(), store.clone(), events.clone(), group.clone())
    })
    .await
}

/// Serves the API on `listen` as a spawned task.
fn serve_http(
    state: ApiState,
    listen: &str,
) -> anyhow::Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let judge0_at_root = state.settings.compat.judge0_at_root;
    let state = actix_web::web::Data::new(state);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .configure(routes)
            .configure(|cfg| {
                if judge0_at_root {
                    crate::api::judge0::endpoints(cfg);
                }
            })
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(listen)
    .with_context(|| format!("listening on {listen}"))?;
    let addr = *server
        .addrs()
        .first()
        .context("the server bound no address")?;
    let server = server.run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the HTTP server failed");
        }
    });
    Ok((addr, handle))
}

/// `kiln api`: the HTTP API alone, in Kafka mode. Submissions go to the submissions topic;
/// answers come from the results topic. Several can run beside any number of schedulers.
pub fn run_api(settings: Settings) -> anyhow::Result<()> {
    actix::System::new().block_on(async move {
        let registry = Arc::new(
            Registry::load(settings.languages_file.as_deref()).map_err(anyhow::Error::msg)?,
        );
        let store = Arc::new(open_store(&settings)?);
        let events = crate::events::bus();
        let intake = connect_intake(&settings, store, events.clone()).await?;
        let describe = intake.describe();
        let metrics = Arc::new(Metrics::new());
        let state = ApiState {
            queue: Admission::new(Arc::new(intake), &settings, metrics.clone()),
            registry: registry.clone(),
            policy: settings.limits.clone(),
            metrics,
            events,
            callbacks: Arc::new(
                crate::callback::Targets::from_settings(&settings.callback_allowed_networks)
                    .map_err(anyhow::Error::msg)?,
            ),
            scheduler: None,
            settings: settings.clone(),
        };
        let (addr, handle) = serve_http(state, &settings.listen)?;
        println!("kiln api listening on http://{addr}");
        println!("{describe}");
        println!(
            "languages accepted (this host's registry): {}",
            registry
                .available
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        until_terminated().await?;
        handle.stop(true).await;
        actix::System::current().stop();
        Ok(())
    })
}

/// Starts everything on the current actix system; the HTTP server runs as a spawned task.
pub async fn start(settings: Settings) -> anyhow::Result<Instance> {
    let registry =
        Arc::new(Registry::load(settings.languages_file.as_deref()).map_err(anyhow::Error::msg)?);
    let metrics = Arc::new(Metrics::new());
    let backend = pod_backend(&settings, &registry, &metrics)?;
    let mut backend_lines = backend.describe();
    let store = Arc::new(open_store(&settings)?);
    let (shared, intake): (Arc<Shared>, Arc<dyn Intake>) = if settings.queue == QueueKind::Kafka {
        // The scheduler consumes the submissions topic; the API produces to it and answers from
        // the results topic, kept in the store.
        let queue = Arc::new(crate::scheduler::connect(&settings, metrics.clone()).await?);
        let mut lines = vec![queue.describe()];
        lines.append(&mut backend_lines);
        backend_lines = lines;
        let shared = shared_parts(&settings, queue, backend, registry.clone(), metrics)?;
        let intake = connect_intake(&settings, store, shared.events.clone()).await?;
        (shared, Arc::new(intake))
    } else {
        let shared = shared_parts(&settings, store.clone(), backend, registry.clone(), metrics)?;
        (shared, store)
    };
    let scheduler = SchedulerRoot::start(shared.clone());
    let state = ApiState {
        queue: Admission::new(intake, &settings, shared.metrics.clone()),
        registry: registry.clone(),
        policy: settings.limits.clone(),
        metrics: shared.metrics.clone(),
        events: shared.events.clone(),
        callbacks: shared.callbacks.clone(),
        scheduler: Some(crate::api::LocalScheduler {
            shared,
            consumer: scheduler.peers.consumer.clone(),
        }),
        settings: settings.clone(),
    };
    let (addr, handle) = serve_http(state, &settings.listen)?;
    Ok(Instance {
        addr,
        server: handle,
        scheduler,
        registry,
        backend_lines,
        settings,
    })
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully: stop accepting, let running jobs
/// finish (up to a grace period), leave the rest journaled for the next start.
pub fn run(settings: Settings, config_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let data_dir: PathBuf = settings.data_dir.clone();
    let config_file = config_file.map(|f| f.to_path_buf());
    actix::System::new().block_on(async move {
        let instance = start(settings).await?;
        let pool = instance.scheduler.shared.total_runners();
        println!("kiln listening on http://{}", instance.addr);
        let names: Vec<String> = instance
            .registry
            .available
            .iter()
            .map(|l| format!("{} {}", l.name, l.version))
            .collect();
        println!("runtimes: {}", names.join(", "));
        for (name, why) in &instance.registry.unavailable {
            println!("unavailable: {name}: {why}");
        }
        for line in &instance.backend_lines {
            println!("{line}");
        }
        println!("pool: {pool} pod runners; data dir {}", data_dir.display());
        for warning in crate::config::exposed_secrets(&instance.settings, config_file.as_deref()) {
            println!("{warning}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();

        until_terminated().await?;
        tracing::info!("shutting down: no new submissions; finishing running jobs");
        instance.server.stop(true).await;
        let left = instance.scheduler.drain(Duration::from_secs(30)).await;
        if left > 0 {
            tracing::warn!(
                left,
                "jobs still running at shutdown stay journaled and run after restart"
            );
        }
        // Let the last results reach the journal.
        tokio::time::sleep(Duration::from_millis(100)).await;
        instance.scheduler.shared.backend.shutdown();
        actix::System::current().stop();
        Ok(())
    })
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
