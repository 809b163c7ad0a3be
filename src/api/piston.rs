//! Piston's v2 API over Kiln's queue and actors (no second execution path): `GET
//! /api/v2/runtimes` and `POST /api/v2/execute`, so that a Piston client works by changing its
//! URL. See docs/compatibility.md for how each field maps.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{accept, authorize, read_json, submit_and_wait, ApiError, ApiState, Waited};
use crate::result::ResultView;
use crate::submission::{RequestedLimits, Submission, SubmittedFile};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v2/runtimes", web::get().to(runtimes))
        .route("/api/v2/execute", web::post().to(execute))
        .route("/api/v2/packages", web::get().to(packages))
        .route("/api/v2/packages", web::post().to(manage_packages))
        .route("/api/v2/packages", web::delete().to(manage_packages));
}

/// Piston's error shape: 400 with `{"message"}`.
fn refuse(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"message": message.into()}))
}

/// A Kiln refusal of a request in Piston's `{"message"}` shape: 400 for the request itself, 429
/// when the queue is full (in submissions or bytes), 503 when it cannot take work now (a full
/// disk, a store that fails), each of the last two with when to try again.
fn refusal(e: ApiError) -> Result<HttpResponse, ApiError> {
    let mut busy = match e {
        ApiError::BadRequest(m) | ApiError::Unprocessable(m) => return Ok(refuse(m)),
        ApiError::QueueFull(_) => HttpResponse::TooManyRequests(),
        ApiError::InsufficientStorage(_) | ApiError::Unavailable(_) => {
            HttpResponse::ServiceUnavailable()
        }
        other => return Err(other),
    };
    Ok(busy
        .insert_header(("Retry-After", "1"))
        .json(json!({"message": e.to_string()})))
}

async fn runtimes(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let list: Vec<Value> = state
        .registry
        .available
        .iter()
        .map(|l| json!({"language": l.name, "version": l.version, "aliases": l.aliases, "runtime": l.name}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// Piston's package list: every language this host has is installed; the ones whose toolchain is
/// missing are listed as not installed.
async fn packages(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let installed = state
        .registry
        .available
        .iter()
        .map(|l| json!({"language": l.name, "language_version": l.version, "installed": true}));
    let missing =
        state.registry.unavailable.iter().map(
            |(name, _)| json!({"language": name, "language_version": null, "installed": false}),
        );
    Ok(HttpResponse::Ok().json(installed.chain(missing).collect::<Vec<Value>>()))
}

/// Installing and removing packages is the operator's, on the host: Piston's 400 saying so.
async fn manage_packages(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    Ok(refuse(
        "Kiln's toolchains are installed on the host with scripts/runtimes install <language>, not through the API",
    ))
}

#[derive(Deserialize)]
struct PistonFile {
    name: Option<String>,
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Execute {
    language: String,
    #[serde(default)]
    version: Option<String>,
    files: Vec<PistonFile>,
    #[serde(default)]
    stdin: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    run_timeout: Option<i64>,
    #[serde(default)]
    compile_timeout: Option<i64>,
    #[serde(default)]
    run_memory_limit: Option<i64>,
    #[serde(default)]
    compile_memory_limit: Option<i64>,
    #[serde(default)]
    run_cpu_time: Option<i64>,
    #[serde(default)]
    compile_cpu_time: Option<i64>,
}

/// Piston's status letters for a run that did not end normally.
fn status_code(status: &str) -> Option<&'static str> {
    Some(match status {
        "runtime_error" => "RE",
        "signaled" => "SG",
        "time_limit_exceeded" => "TO",
        "output_limit_exceeded" => "OL",
        "memory_limit_exceeded" => "SG",
        "internal_error" => "XX",
        _ => return None,
    })
}

fn stage(
    stdout: &str,
    stderr: &str,
    code: Option<i32>,
    signal: Option<&str>,
    v: &ResultView,
) -> Value {
    json!({
        "stdout": stdout,
        "stderr": stderr,
        // Piston interleaves the two as written; Kiln keeps them apart, so output is stdout then stderr.
        "output": format!("{stdout}{stderr}"),
        "code": code,
        "signal": signal,
        "message": v.message,
        "status": status_code(v.status.as_str()),
        "cpu_time": v.cpu_time_ms,
        "wall_time": v.wall_time_ms,
        "memory": v.memory_bytes,
    })
}

/// A Piston request (execute, or a WebSocket's init) as a Kiln submission, with its language;
/// Err is Piston's message for a request it refuses.
pub(super) fn to_submission(
    state: &ApiState,
    ex: Execute,
) -> Result<(Submission, crate::languages::Language), String> {
    // Piston asks for a version; "*" or a prefix of the one here is accepted.
    let version = ex.version.filter(|v| !v.is_empty() && v != "*");
    let lang = match state.registry.find(&ex.language, version.as_deref()) {
        Ok(l) => l,
        Err(_) => {
            return Err(format!(
                "{}-{} runtime is unknown",
                ex.language,
                version.as_deref().unwrap_or("*")
            ))
        }
    };
    if ex.files.is_empty() {
        return Err("files is required as an array of at least one file".into());
    }
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    let sub = Submission {
        language: lang.name.clone(),
        files: ex
            .files
            .into_iter()
            .map(|f| SubmittedFile {
                name: f.name,
                content: f.content,
                encoding: match f.encoding.as_deref() {
                    Some("base64") => crate::submission::Encoding::Base64,
                    _ => crate::submission::Encoding::Utf8,
                },
            })
            .collect(),
        stdin: ex.stdin,
        args: ex.args,
        limits: RequestedLimits {
            wall_time_ms: positive(ex.run_timeout),
            memory_bytes: positive(ex.run_memory_limit),
            cpu_time_ms: positive(ex.run_cpu_time),
            ..Default::default()
        },
        ..Default::default()
    };
    // The compile step keeps Kiln's compile limits.
    let _ = (
        ex.compile_timeout,
        ex.compile_memory_limit,
        ex.compile_cpu_time,
    );
    Ok((sub, lang.clone()))
}

async fn execute(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body: Value = read_json(payload, state.settings.max_body_bytes).await?;
    let ex: Execute = match serde_json::from_value(body) {
        Ok(e) => e,
        Err(e) => return Ok(refuse(format!("invalid request: {e}"))),
    };
    let (sub, lang) = match to_submission(&state, ex) {
        Ok(x) => x,
        Err(m) => return Ok(refuse(m)),
    };
    let env = match accept(&state, sub) {
        Ok(env) => env,
        Err(e) => return refusal(e),
    };
    let waited = match submit_and_wait(&state, env).await {
        Ok(w) => w,
        Err(e) => return refusal(e),
    };
    let r = match waited {
        Waited::Done(r) => r,
        Waited::Pending(id, _) => {
            return Ok(HttpResponse::GatewayTimeout().json(json!({
                "message": format!("submission {id} did not finish within max_wait_ms; GET /v1/submissions/{id} has it later")
            })))
        }
    };
    let v = r.view();
    let signal = v.signal.map(kiln_wire::rules::signal_name);
    let mut out = json!({"language": lang.name, "version": lang.version});
    if lang.compile.is_some() {
        let failed = v.status.as_str() == "compile_error";
        out["compile"] = json!({
            "stdout": v.compile_output, "stderr": "", "output": v.compile_output,
            "code": if failed { 1 } else { 0 }, "signal": null,
            "message": if failed { v.message.clone() } else { None },
            "status": if failed { Some("RE") } else { None },
        });
        if failed {
            return Ok(HttpResponse::Ok().json(out));
        }
    }
    out["run"] = stage(&v.stdout, &v.stderr, v.exit_code, signal, &v);
    Ok(HttpResponse::Ok().json(out))
}
