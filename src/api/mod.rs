//! The HTTP API (actix-web). Submissions enter here: they are checked, admitted to the queue
//! (admission.rs, the one way in for every door), and answered at once (202) or when their result
//! is published (`?wait=true`).

mod admission;
mod error;
pub mod judge0;
mod piston;
mod piston_ws;
mod sse;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::actors::queue_consumer::{QueueConsumer, Wake};
use crate::actors::TreeParts;
use crate::callback::Targets;
use crate::config::Settings;
use crate::events::{EventBus, EventKind};
use crate::languages::Registry;
use crate::metrics::Metrics;
use crate::queue::{Envelope, SubmissionState, Submitted};
use crate::result::now_ms;
use crate::submission::{LimitPolicy, Submission};
pub use admission::Admission;
pub use error::ApiError;

/// What every request handler needs.
pub struct ApiState {
    /// Where submissions go, through the queue's bounds, and where their state is found.
    pub queue: Admission,
    pub registry: Arc<Registry>,
    pub policy: LimitPolicy,
    pub metrics: Arc<Metrics>,
    /// Results as they are published (for `?wait=true` and server-sent events).
    pub events: EventBus,
    pub callbacks: Arc<Targets>,
    /// The actor tree running in this process (`kiln serve`); `kiln api` has none.
    pub tree: Option<LocalTree>,
    pub settings: Settings,
}

/// The actor tree beside the API in one process: its pods make the API ready, and a new
/// submission wakes its consumer.
pub struct LocalTree {
    pub parts: Arc<TreeParts>,
    pub consumer: Addr<QueueConsumer>,
}

impl ApiState {
    fn wake(&self) {
        if let Some(s) = &self.tree {
            s.consumer.do_send(Wake);
        }
    }
}

/// The OpenAPI description served at /openapi.json.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Mounts every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    piston::routes(cfg);
    cfg.route("/api/v2/connect", web::get().to(piston_ws::connect));
    cfg.service(web::scope("/judge0").configure(judge0::endpoints));
    cfg.route("/", web::get().to(playground))
        .route("/playground", web::get().to(playground));
    cfg.route("/v1/submissions", web::post().to(submit))
        .route("/v1/submissions/batch", web::post().to(submit_batch))
        .route("/v1/submissions/{id}", web::get().to(get_submission))
        .route("/v1/submissions/{id}/events", web::get().to(sse::events))
        .route("/v1/runtimes", web::get().to(runtimes))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route(
            "/openapi.json",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(OPENAPI)
            }),
        )
        .default_service(web::to(|| async {
            ApiError::NotFound("no such endpoint; see /openapi.json".into()).response()
        }));
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: bool,
}

/// The playground: one self-contained page (no CDN, no build step) that runs programs through
/// `/v1/submissions` and shows the pool, queue and throughput from `/metrics`. The page itself is
/// public; its requests carry the token typed into it.
const PLAYGROUND: &str = include_str!("playground.html");

async fn playground() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(PLAYGROUND)
}

fn authorize(req: &HttpRequest, state: &ApiState) -> Result<(), ApiError> {
    let Some(token) = &state.settings.auth_token else {
        return Ok(());
    };
    // `Authorization: Bearer <token>`, or Judge0's `X-Auth-Token: <token>` for its clients.
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            req.headers()
                .get("X-Auth-Token")
                .and_then(|v| v.to_str().ok())
        });
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json<T: serde::de::DeserializeOwned>(
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(ApiError::BadRequest(format!(
                "reading the body failed: {e}"
            )))
        }
        Err(_) => return Err(ApiError::TooLarge(limit)),
    };
    if std::str::from_utf8(&body).is_err() {
        return Err(ApiError::BadRequest(
            "the body is not valid UTF-8 (use \"encoding\": \"base64\" for binary files)".into(),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// Checks a submission completely (language, limits, files) before it is accepted, so that a bad
/// one gets a 4xx now rather than a rejected result later.
fn accept(state: &ApiState, sub: Submission) -> Result<Envelope, ApiError> {
    if let Some(id) = &sub.id {
        if !crate::submission::valid_id(id) {
            return Err(ApiError::BadRequest(
                "id must be 1 to 128 characters of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
    }
    if sub
        .schema_version
        .is_some_and(|v| v != crate::submission::WIRE_VERSION)
    {
        return Err(ApiError::BadRequest(format!(
            "schema_version {} is not supported; this Kiln reads {}",
            sub.schema_version.unwrap_or_default(),
            crate::submission::WIRE_VERSION
        )));
    }
    let id = sub
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    sub.resolve(&id, &state.registry, &state.policy)
        .map_err(|e| ApiError::Unprocessable(e.0))?;
    if !sub.tests.is_empty() {
        sub.resolve_tests(&id, &state.registry, &state.policy)
            .map_err(|e| ApiError::Unprocessable(e.0))?;
    }
    Ok(Envelope {
        id,
        submission: sub,
        created_at_ms: now_ms(),
    })
}

/// A callback aimed inward is refused now, while the submitter is still listening.
async fn check_callback(state: &ApiState, env: &Envelope) -> Result<(), ApiError> {
    match &env.submission.callback_url {
        Some(url) => state
            .callbacks
            .check_url(url)
            .await
            .map_err(|e| ApiError::Unprocessable(e.to_string())),
        None => Ok(()),
    }
}

fn state_json(id: &str, s: &SubmissionState) -> serde_json::Value {
    match s {
        SubmissionState::Queued => json!({"id": id, "status": "queued"}),
        SubmissionState::Running => json!({"id": id, "status": "running"}),
        SubmissionState::Done(r) => serde_json::to_value(r.view()).unwrap_or_default(),
        SubmissionState::Evicted { .. } => json!({"id": id, "status": "evicted"}),
    }
}

/// What a client asking for an evicted result is told: when, and why.
fn evicted(state: &ApiState, id: &str, at_ms: u64) -> ApiError {
    let when =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at_ms));
    ApiError::Gone(format!(
        "the result of {id:?} was evicted at {when}: Kiln keeps at most {} bytes of results \
         (max_results_bytes) and drops the oldest first; read results sooner, use callback_url, \
         or raise the bound",
        state.queue.max_results_bytes()
    ))
}

async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<WaitQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let sub: Submission = read_json(payload, state.settings.max_body_bytes).await?;
    let env = accept(&state, sub)?;
    check_callback(&state, &env).await?;
    if !query.wait {
        let id = env.id.clone();
        let submitted = state.queue.admit(vec![env]).await?;
        return Ok(match submitted.into_iter().next() {
            Some(Submitted::Existing(SubmissionState::Done(r))) => {
                HttpResponse::Ok().json(r.view())
            }
            Some(Submitted::Existing(SubmissionState::Running)) => {
                HttpResponse::Accepted().json(json!({"id": id, "status": "running"}))
            }
            Some(Submitted::Existing(_)) => {
                HttpResponse::Accepted().json(json!({"id": id, "status": "queued"}))
            }
            _ => {
                state.wake();
                HttpResponse::Accepted().json(json!({"id": id, "status": "queued"}))
            }
        });
    }
    Ok(match submit_and_wait(&state, env).await? {
        Waited::Done(r) => HttpResponse::Ok().json(r.view()),
        Waited::Pending(id, s) => HttpResponse::Accepted().json(state_json(&id, &s)),
    })
}

/// What a submission came to within `max_wait_ms`.
pub(crate) enum Waited {
    Done(Arc<crate::result::RunResult>),
    Pending(String, SubmissionState),
}

/// Admits an accepted envelope and waits (up to `max_wait_ms`) for its result.
pub(crate) async fn submit_and_wait(state: &ApiState, env: Envelope) -> Result<Waited, ApiError> {
    let id = env.id.clone();
    let _span = tracing::info_span!("submission", id = %id).entered();
    // Subscribe before submitting, so the result cannot slip past between the two.
    let mut events = state.events.subscribe();
    let submitted = state.queue.admit(vec![env]).await?;
    match submitted.into_iter().next() {
        Some(Submitted::Existing(SubmissionState::Done(r))) => {
            return Ok(Waited::Done(Arc::new(*r)))
        }
        Some(Submitted::Existing(_)) => {}
        _ => {
            tracing::debug!("accepted");
            state.wake();
        }
    }
    let wait = Duration::from_millis(state.settings.max_wait_ms);
    let finished = tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(e) if e.id == id => {
                    if let EventKind::Finished(r) = e.kind {
                        return Some(r);
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(Some(SubmissionState::Done(r))) = state.queue.state(&id) {
                        return Some(Arc::new(*r));
                    }
                }
                Err(_) => return None,
            }
        }
    })
    .await;
    Ok(match finished {
        Ok(Some(r)) => Waited::Done(r),
        _ => match state
            .queue
            .state(&id)
            .ok()
            .flatten()
            .unwrap_or(SubmissionState::Queued)
        {
            SubmissionState::Done(r) => Waited::Done(Arc::new(*r)),
            other => Waited::Pending(id, other),
        },
    })
}

async fn submit_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let subs: Vec<Submission> = read_json(payload, state.settings.max_body_bytes).await?;
    if subs.is_empty() || subs.len() > state.settings.max_batch {
        return Err(ApiError::BadRequest(format!(
            "a batch holds 1 to {} submissions, not {}",
            state.settings.max_batch,
            subs.len()
        )));
    }
    let mut checked: Vec<Result<Envelope, ApiError>> = Vec::with_capacity(subs.len());
    for sub in subs {
        let env = match accept(&state, sub) {
            Ok(env) => check_callback(&state, &env).await.map(|()| env),
            Err(e) => Err(e),
        };
        checked.push(env);
    }
    let good: Vec<Envelope> = checked
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut outcomes = state.queue.admit(good).await?.into_iter();
    state.wake();
    let body: Vec<serde_json::Value> = checked
        .iter()
        .map(|r| match r {
            Ok(env) => match outcomes.next() {
                Some(Submitted::Existing(s)) => state_json(&env.id, &s),
                _ => json!({"id": env.id, "status": "queued"}),
            },
            Err(e) => json!({"error": e.to_string()}),
        })
        .collect();
    Ok(HttpResponse::Accepted().json(body))
}

async fn get_submission(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    match state.queue.state(&id)? {
        Some(SubmissionState::Evicted { at_ms }) => Err(evicted(&state, &id, at_ms)),
        Some(s) => Ok(HttpResponse::Ok().json(state_json(&id, &s))),
        None => Err(ApiError::NotFound(state.queue.not_found(&id))),
    }
}

async fn runtimes(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let list: Vec<serde_json::Value> = state
        .registry
        .available
        .iter()
        .map(|l| json!({"language": l.name, "version": l.version, "aliases": l.aliases, "compiled": l.compile.is_some()}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Alive and able to keep what it accepts: fails while the journal cannot be written (a full
/// disk), so that a supervisor sees it; comes back by itself when writes work again.
async fn healthz(state: web::Data<ApiState>) -> HttpResponse {
    match state.queue.failure() {
        None => HttpResponse::Ok().json(json!({"status": "ok"})),
        Some(e) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "failing", "error": e.to_string()})),
    }
}

async fn readyz(state: web::Data<ApiState>) -> HttpResponse {
    let failure = state.queue.failure().map(|e| e.to_string());
    let (body, standby) = match &state.tree {
        Some(s) => {
            let standby = s.parts.standby.load(Ordering::Relaxed);
            let trouble = s.parts.queue.trouble();
            let error = failure.or(trouble);
            (
                json!({"standby_pods": standby, "pool_size": s.parts.settings.pool_size, "queue_depth": state.queue.depth(), "error": error}),
                standby > 0 && error.is_none(),
            )
        }
        // The API alone is ready when it can take submissions.
        None => (
            json!({"queue_depth": state.queue.depth(), "error": failure}),
            failure.is_none(),
        ),
    };
    if standby {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    state.metrics.queue_depth.set(state.queue.depth() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
