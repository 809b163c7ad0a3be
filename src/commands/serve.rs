//! `kiln serve`: API + actor tree + embedded queue + local pods in one process; and `kiln api`, the
//! API alone over Kafka (the same HTTP server and admission, with no actor tree beside it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::actors::tree::ActorTree;
use crate::actors::TreeParts;
use crate::api::{routes, Admission, ApiState};
use crate::config::{QueueKind, Settings};
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::kafka_intake::KafkaIntake;
use crate::queue::Intake;

use super::startup::{pod_backend, tree_parts, until_terminated};

/// A started instance.
pub struct Instance {
    pub addr: SocketAddr,
    pub server: actix_web::dev::ServerHandle,
    pub tree: ActorTree,
    pub registry: Arc<Registry>,
    pub backend_lines: Vec<String>,
    pub settings: Settings,
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
            tree: None,
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
    let (parts, intake): (Arc<TreeParts>, Arc<dyn Intake>) = if settings.queue == QueueKind::Kafka {
        // The scheduler consumes the submissions topic; the API produces to it and answers from
        // the results topic, kept in the store.
        let queue = Arc::new(crate::commands::startup::connect(&settings, metrics.clone()).await?);
        let mut lines = vec![queue.describe()];
        lines.append(&mut backend_lines);
        backend_lines = lines;
        let parts = tree_parts(&settings, queue, backend, registry.clone(), metrics)?;
        let intake = connect_intake(&settings, store, parts.events.clone()).await?;
        (parts, Arc::new(intake))
    } else {
        let parts = tree_parts(&settings, store.clone(), backend, registry.clone(), metrics)?;
        (parts, store)
    };
    let tree = ActorTree::start(parts.clone());
    let state = ApiState {
        queue: Admission::new(intake, &settings, parts.metrics.clone()),
        registry: registry.clone(),
        policy: settings.limits.clone(),
        metrics: parts.metrics.clone(),
        events: parts.events.clone(),
        callbacks: parts.callbacks.clone(),
        tree: Some(crate::api::LocalTree {
            parts,
            consumer: tree.peers.consumer.clone(),
        }),
        settings: settings.clone(),
    };
    let (addr, handle) = serve_http(state, &settings.listen)?;
    Ok(Instance {
        addr,
        server: handle,
        tree,
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
        let pool = instance.tree.parts.total_runners();
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
        let left = instance.tree.drain(Duration::from_secs(30)).await;
        if left > 0 {
            tracing::warn!(
                left,
                "jobs still running at shutdown stay journaled and run after restart"
            );
        }
        // Let the last results reach the journal.
        tokio::time::sleep(Duration::from_millis(100)).await;
        instance.tree.parts.backend.shutdown();
        actix::System::current().stop();
        Ok(())
    })
}
