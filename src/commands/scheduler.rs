//! `kiln scheduler`: the actor tree against Kafka. Submissions come from the submissions topic
//! in a consumer group, results leave on the results topic; several schedulers in one group split
//! the partitions. A small HTTP server answers `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use anyhow::Context as _;
use serde_json::json;

use crate::actors::tree::ActorTree;
use crate::actors::TreeParts;
use crate::config::Settings;
use crate::languages::Registry;
use crate::metrics::Metrics;

use super::startup::connect;

/// Runs until SIGTERM or SIGINT, then lets running jobs finish (their results are published;
/// what is left is redone by the partitions' next owner).
pub fn run(settings: Settings) -> anyhow::Result<()> {
    actix::System::new().block_on(async move {
        let registry = Arc::new(
            Registry::load(settings.languages_file.as_deref()).map_err(anyhow::Error::msg)?,
        );
        // The ops endpoints answer from the start: /readyz says 503 while Kafka is connected to.
        let metrics = Arc::new(Metrics::new());
        let backend = crate::commands::startup::pod_backend(&settings, &registry, &metrics)?;
        let ops = web::Data::new(Ops {
            parts: OnceLock::new(),
            metrics: metrics.clone(),
            brokers: settings.kafka.brokers.clone(),
        });
        let server_ops = ops.clone();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(server_ops.clone())
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
                )
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(render_metrics))
        })
        .workers(1)
        .disable_signals()
        .bind(&settings.listen)
        .with_context(|| format!("listening on {}", settings.listen))?;
        let addr = *server
            .addrs()
            .first()
            .context("the server bound no address")?;
        let server = server.run();
        let handle = server.handle();
        actix::spawn(server);
        println!("kiln scheduler: /healthz, /readyz and /metrics on http://{addr}");

        let queue = Arc::new(connect(&settings, metrics.clone()).await?);
        let parts = crate::commands::startup::tree_parts(
            &settings,
            queue.clone(),
            backend.clone(),
            registry.clone(),
            metrics,
        )?;
        let scheduler = ActorTree::start(parts.clone());
        let _ = ops.parts.set(parts.clone());
        println!("{}", queue.describe());
        for line in backend.describe() {
            println!("{line}");
        }
        println!(
            "pool: {} pod runners, {} parallel jobs",
            parts.total_runners(),
            parts.settings.max_parallel_jobs
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();

        crate::commands::startup::until_terminated().await?;
        tracing::info!("shutting down: finishing running jobs");
        let left = scheduler.drain(Duration::from_secs(30)).await;
        if left > 0 {
            tracing::warn!(
                left,
                "jobs still running at shutdown are redone by the next owner of their partitions"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.stop(true).await;
        parts.backend.shutdown();
        actix::System::current().stop();
        Ok(())
    })
}

/// What the ops endpoints see: the scheduler once it is connected.
struct Ops {
    parts: OnceLock<Arc<TreeParts>>,
    metrics: Arc<Metrics>,
    brokers: String,
}

async fn readyz(ops: web::Data<Ops>) -> HttpResponse {
    let Some(parts) = ops.parts.get() else {
        let error = format!("connecting to Kafka at {}", ops.brokers);
        return HttpResponse::ServiceUnavailable().json(json!({"error": error}));
    };
    let standby = parts.standby.load(Ordering::Relaxed);
    let trouble = parts.queue.trouble();
    let body =
        json!({"standby_pods": standby, "queue_depth": parts.queue.depth(), "error": trouble});
    if standby > 0 && trouble.is_none() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn render_metrics(ops: web::Data<Ops>) -> HttpResponse {
    if let Some(parts) = ops.parts.get() {
        ops.metrics.queue_depth.set(parts.queue.depth() as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(ops.metrics.render())
}
