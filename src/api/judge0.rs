//! Judge0 CE's API over Kiln's queue and actors (no second execution path), under `/judge0` and,
//! with `compat.judge0_at_root`, at the root: a Judge0 client works by changing its URL. See
//! docs/compatibility.md for how each endpoint and field maps.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{accept, authorize, check_callback, submit_and_wait, ApiError, ApiState, Waited};
use crate::judge0::{self as j0, Lookup, Standing};
use crate::queue::SubmissionState;
use crate::submission::{CallbackFormat, RequestedLimits, Submission, SubmittedFile};

/// Judge0's endpoints, relative to where they are mounted.
pub fn endpoints(cfg: &mut web::ServiceConfig) {
    cfg.route("/submissions", web::post().to(create))
        .route("/submissions/batch", web::post().to(create_batch))
        .route("/submissions/batch", web::get().to(get_batch))
        .route("/submissions/{token}", web::get().to(get))
        .route("/submissions/{token}", web::delete().to(delete))
        .route("/languages", web::get().to(languages))
        .route("/languages/all", web::get().to(all_languages))
        .route("/languages/{id}", web::get().to(language))
        .route("/statuses", web::get().to(statuses))
        .route("/about", web::get().to(about))
        .route("/config_info", web::get().to(config_info))
        .route("/system_info", web::get().to(system_info))
        .route("/workers", web::get().to(workers));
}

type Query = web::Query<HashMap<String, String>>;

fn flag(q: &Query, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// The `?fields=` asked for, or Judge0's 400 naming the unknown ones.
fn fields_of(q: &Query) -> Result<Vec<&'static str>, HttpResponse> {
    j0::parse_fields(q.get("fields").map(String::as_str))
        .map_err(|m| error(actix_web::http::StatusCode::BAD_REQUEST, m))
}

/// Judge0's `{"error": "..."}` with a status.
fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.into()}))
}

/// Per-field messages, Judge0's 422 body.
type FieldErrors = BTreeMap<String, Vec<String>>;

fn unprocessable(errors: FieldErrors) -> HttpResponse {
    HttpResponse::UnprocessableEntity().json(errors)
}

/// The server's maxima in Judge0's units (seconds, kilobytes).
struct Maxima {
    cpu_s: f64,
    wall_s: f64,
    memory_kb: u64,
    processes: u32,
    file_kb: u64,
}

fn maxima(state: &ApiState) -> Maxima {
    let m = &state.policy.maximum;
    Maxima {
        cpu_s: m.cpu_time_ms as f64 / 1000.0,
        wall_s: m.wall_time_ms as f64 / 1000.0,
        memory_kb: m.memory_bytes / 1024,
        processes: m.processes,
        file_kb: m.file_size_bytes / 1024,
    }
}

/// Most runs Judge0 lets one submission ask for.
const MAX_NUMBER_OF_RUNS: u64 = 20;

/// Reads a Judge0 submission's JSON into a Kiln submission, or says what is wrong with each field.
fn to_submission(state: &ApiState, body: &Value, base64: bool) -> Result<Submission, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut err = |field: &str, msg: String| errors.entry(field.into()).or_default().push(msg);
    let Some(obj) = body.as_object() else {
        err("submission", "must be a JSON object".into());
        return Err(errors);
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err("must be a string".into()),
        }
    };
    let number = |name: &str| -> Result<Option<f64>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| "is not a number".to_string()),
            Some(_) => Err("is not a number".into()),
        }
    };
    let boolean = |name: &str| -> Result<Option<bool>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => Err("must be true or false".into()),
        }
    };
    let decode = |s: &str| -> Result<Vec<u8>, String> {
        if base64 {
            let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map_err(|e| format!("is not valid base64 ({e})"))
        } else {
            Ok(s.as_bytes().to_vec())
        }
    };
    // Text the program reads (stdin, expected output): bytes that must be UTF-8.
    let utf8 = |b: Vec<u8>| -> Result<String, String> {
        String::from_utf8(b).map_err(|_| "must be UTF-8 text".to_string())
    };

    let language_id = match number("language_id") {
        Ok(None) => {
            err("language_id", "can't be blank".into());
            None
        }
        Ok(Some(n)) if n.fract() == 0.0 && n > 0.0 => Some(n as u32),
        Ok(Some(_)) | Err(_) => {
            err("language_id", "is not a number".into());
            None
        }
    };
    let language = language_id.and_then(|id| match j0::lookup(&state.registry, id) {
        Lookup::Served(l) => Some((id, l.name.clone())),
        Lookup::NotServed(why) => {
            err(
                "language_id",
                format!("language with id {id} is not available on this server ({why})"),
            );
            None
        }
        Lookup::Unknown => {
            err(
                "language_id",
                format!("language with id {id} doesn't exist"),
            );
            None
        }
    });
    let multi_file = language.as_ref().is_some_and(|(id, _)| *id == 89);

    let mut files = Vec::new();
    let mut source_given = false;
    match text("source_code") {
        Ok(Some(s)) if !(multi_file && obj.get("additional_files").is_some()) => match decode(s) {
            Ok(bytes) => {
                source_given = !bytes.is_empty();
                files.push(SubmittedFile {
                    name: None,
                    content: base64::engine::general_purpose::STANDARD.encode(&bytes),
                    encoding: crate::submission::Encoding::Base64,
                });
            }
            Err(e) => err("source_code", e),
        },
        Ok(_) => {}
        Err(e) => err("source_code", e),
    }
    match text("additional_files") {
        Ok(Some(s)) => {
            let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(clean) {
                Err(e) => err("additional_files", format!("is not valid base64 ({e})")),
                Ok(zip) => match j0::unzip(
                    &zip,
                    state.policy.max_submission_bytes,
                    state.policy.max_files,
                ) {
                    Err(e) => err("additional_files", e),
                    Ok(entries) => {
                        files.extend(entries.into_iter().map(|(name, content)| SubmittedFile {
                            name: Some(name),
                            content: base64::engine::general_purpose::STANDARD.encode(content),
                            encoding: crate::submission::Encoding::Base64,
                        }))
                    }
                },
            }
        }
        Ok(None) => {}
        Err(e) => err("additional_files", e),
    }
    if !source_given && !(multi_file && files.len() > 0) {
        err("source_code", "can't be blank".into());
    }

    let stdin = match text("stdin").map(|s| s.map(decode)) {
        Ok(None) => String::new(),
        Ok(Some(Ok(b))) => utf8(b).unwrap_or_else(|e| {
            err("stdin", e);
            String::new()
        }),
        Ok(Some(Err(e))) | Err(e) => {
            err("stdin", e);
            String::new()
        }
    };
    let expected_output = match text("expected_output").map(|s| s.map(decode)) {
        Ok(None) => None,
        Ok(Some(Ok(b))) => match utf8(b) {
            Ok(s) => Some(s),
            Err(e) => {
                err("expected_output", e);
                None
            }
        },
        Ok(Some(Err(e))) | Err(e) => {
            err("expected_output", e);
            None
        }
    };

    let max = maxima(state);
    let mut limits = RequestedLimits::default();
    // A limit in seconds: above 0, at most the server's maximum.
    let mut seconds = |name: &str, max_s: f64| -> Option<u64> {
        match number(name) {
            Ok(None) => None,
            Ok(Some(v)) if v <= 0.0 => {
                err(name, "must be greater than 0".into());
                None
            }
            Ok(Some(v)) if v > max_s => {
                err(name, format!("must be less than or equal to {max_s}"));
                None
            }
            Ok(Some(v)) => Some((v * 1000.0).round().max(1.0) as u64),
            Err(e) => {
                err(name, e);
                None
            }
        }
    };
    limits.cpu_time_ms = seconds("cpu_time_limit", max.cpu_s);
    limits.wall_time_ms = seconds("wall_time_limit", max.wall_s);
    // Kiln stops a program at its CPU limit; Judge0's extra time before the kill is accepted
    // within Judge0's bounds and otherwise not used.
    let _ = seconds("cpu_extra_time", 5.0);
    // A whole number within bounds.
    let mut whole = |name: &str, min: u64, max_v: u64| -> Option<u64> {
        match number(name) {
            Ok(None) => None,
            Ok(Some(v)) if v.fract() != 0.0 => {
                err(name, "must be an integer".into());
                None
            }
            Ok(Some(v)) if v < min as f64 => {
                err(name, format!("must be greater than or equal to {min}"));
                None
            }
            Ok(Some(v)) if v > max_v as f64 => {
                err(name, format!("must be less than or equal to {max_v}"));
                None
            }
            Ok(Some(v)) => Some(v as u64),
            Err(e) => {
                err(name, e);
                None
            }
        }
    };
    limits.memory_bytes = whole("memory_limit", 4096, max.memory_kb).map(|kb| kb * 1024);
    // The stack lives within the memory limit, which bounds it.
    let _ = whole("stack_limit", 0, max.memory_kb);
    limits.processes =
        whole("max_processes_and_or_threads", 1, max.processes as u64).map(|v| v as u32);
    limits.file_size_bytes = whole("max_file_size", 0, max.file_kb).map(|kb| kb * 1024);
    let _ = whole("number_of_runs", 1, MAX_NUMBER_OF_RUNS);

    let mut flag_of = |name: &str| -> bool {
        match boolean(name) {
            Ok(v) => v.unwrap_or(false),
            Err(e) => {
                err(name, e);
                false
            }
        }
    };
    let redirect = flag_of("redirect_stderr_to_stdout");
    // Limits hold for the whole pod (every process and thread together), which is at least as
    // strict as per process; both settings are accepted.
    let _ = flag_of("enable_per_process_and_thread_time_limit");
    let _ = flag_of("enable_per_process_and_thread_memory_limit");
    if flag_of("enable_network") && !state.policy.default.network {
        err(
            "enable_network",
            "network is not allowed on this server: its pods have no network".into(),
        );
    }

    let words = |name: &str| -> Result<Vec<String>, String> {
        match text(name)? {
            None => Ok(Vec::new()),
            Some(s) => j0::split_words(s).map_err(|e| format!("cannot be split into words: {e}")),
        }
    };
    let args = words("command_line_arguments").unwrap_or_else(|e| {
        err("command_line_arguments", e);
        Vec::new()
    });
    let compiler_options = words("compiler_options").unwrap_or_else(|e| {
        err("compiler_options", e);
        Vec::new()
    });
    let callback_url = text("callback_url").unwrap_or_else(|e| {
        err("callback_url", e);
        None
    });

    if !errors.is_empty() {
        return Err(errors);
    }
    let (_, language) = language.expect("checked above");
    Ok(Submission {
        language,
        files,
        stdin,
        args,
        expected_output,
        limits,
        callback_url: callback_url.map(str::to_string),
        callback_format: CallbackFormat::Judge0,
        redirect_stderr_to_stdout: redirect,
        compiler_options,
        ..Default::default()
    })
}

/// A Kiln refusal of an otherwise well-formed submission in Judge0's shapes: its per-field 422,
/// or its 503 when the queue cannot take it (full, too many bytes, a full disk).
fn refusal(e: ApiError) -> Result<HttpResponse, ApiError> {
    match e {
        ApiError::Unprocessable(m) | ApiError::BadRequest(m) => {
            let field = [
                "compiler_options",
                "callback_url",
                "limits.wall_time_ms",
                "limits.cpu_time_ms",
                "limits.memory_bytes",
            ]
            .iter()
            .find(|f| m.starts_with(*f))
            .map(|f| f.trim_start_matches("limits."))
            .unwrap_or("submission");
            Ok(unprocessable(FieldErrors::from([(
                field.to_string(),
                vec![m],
            )])))
        }
        ApiError::QueueFull(_) => Ok(unavailable("queue is full")),
        e @ (ApiError::InsufficientStorage(_) | ApiError::Unavailable(_)) => {
            Ok(unavailable(e.to_string()))
        }
        other => Err(other),
    }
}

/// Judge0's 503 `{"error"}`, with when to try again.
fn unavailable(message: impl Into<String>) -> HttpResponse {
    let mut r = error(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("1"),
    );
    r
}

/// The JSON of a submission, or Judge0's 400 when output is not UTF-8 and base64 is off.
fn render(
    state: &ApiState,
    token: &str,
    s: Standing<'_>,
    fields: &[&str],
    base64: bool,
) -> Result<Value, HttpResponse> {
    j0::submission(token, s, fields, base64, &state.registry)
        .map_err(|m| error(actix_web::http::StatusCode::BAD_REQUEST, m))
}

fn standing(s: &SubmissionState) -> Option<Standing<'_>> {
    match s {
        SubmissionState::Queued => Some(Standing::Queued),
        SubmissionState::Running => Some(Standing::Running),
        SubmissionState::Done(r) => Some(Standing::Done(r)),
        SubmissionState::Evicted { .. } => None,
    }
}

macro_rules! or_respond {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return Ok(response),
        }
    };
}

async fn create(
    req: HttpRequest,
    payload: web::Payload,
    q: Query,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let base64 = flag(&q, "base64_encoded");
    let fields = or_respond!(fields_of(&q));
    // The API's reader: its 400 and 413 are Judge0's `{"error"}` shape already.
    let body: Value = super::read_json(payload, state.settings.max_body_bytes).await?;
    let sub = or_respond!(to_submission(&state, &body, base64).map_err(unprocessable));
    let env = match accept(&state, sub) {
        Ok(env) => env,
        Err(e) => return refusal(e),
    };
    if let Err(e) = check_callback(&state, &env).await {
        return refusal(e);
    }
    let token = env.id.clone();
    if !flag(&q, "wait") {
        if let Err(e) = state.queue.admit(vec![env]).await {
            return refusal(e);
        }
        state.wake();
        return Ok(HttpResponse::Created().json(json!({"token": token})));
    }
    let waited = match submit_and_wait(&state, env).await {
        Ok(w) => w,
        Err(e) => return refusal(e),
    };
    let body = match waited {
        Waited::Done(r) => render(&state, &token, Standing::Done(&r), &fields, base64),
        Waited::Pending(_, s) => match standing(&s) {
            Some(st) => render(&state, &token, st, &fields, base64),
            None => render(&state, &token, Standing::Queued, &fields, base64),
        },
    };
    Ok(HttpResponse::Created().json(or_respond!(body)))
}

async fn get(
    req: HttpRequest,
    token: web::Path<String>,
    q: Query,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let fields = or_respond!(fields_of(&q));
    let base64 = flag(&q, "base64_encoded");
    match state.queue.state(&token)? {
        None => Ok(error(actix_web::http::StatusCode::NOT_FOUND, "Not Found")),
        Some(SubmissionState::Evicted { at_ms }) => Err(super::evicted(&state, &token, at_ms)),
        Some(s) => {
            let st = standing(&s).expect("not evicted");
            Ok(HttpResponse::Ok().json(or_respond!(render(&state, &token, st, &fields, base64))))
        }
    }
}

async fn delete(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    // As Judge0 with `enable_submission_delete` off: results go when max_results_bytes or
    // result_retention_secs says so.
    Ok(error(
        actix_web::http::StatusCode::BAD_REQUEST,
        "delete not allowed",
    ))
}

async fn create_batch(
    req: HttpRequest,
    payload: web::Payload,
    q: Query,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let base64 = flag(&q, "base64_encoded");
    // The API's reader: its 400 and 413 are Judge0's `{"error"}` shape already.
    let body: Value = super::read_json(payload, state.settings.max_body_bytes).await?;
    let Some(items) = body.get("submissions").and_then(Value::as_array) else {
        return Ok(unprocessable(FieldErrors::from([(
            "submissions".to_string(),
            vec!["must be an array of submissions".to_string()],
        )])));
    };
    let max = state.settings.max_batch;
    if items.is_empty() || items.len() > max {
        return Ok(error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!("number of submissions in a batch should be between 1 and {max}"),
        ));
    }
    // Each item: its token, or its errors (Judge0 answers per item).
    let mut answers: Vec<Result<crate::queue::Envelope, Value>> = Vec::new();
    for item in items {
        let env = match to_submission(&state, item, base64) {
            Err(errors) => Err(json!(errors)),
            Ok(sub) => match accept(&state, sub) {
                Err(e) => Err(refusal_json(e)),
                Ok(env) => match check_callback(&state, &env).await {
                    Err(e) => Err(refusal_json(e)),
                    Ok(()) => Ok(env),
                },
            },
        };
        answers.push(env);
    }
    let good: Vec<crate::queue::Envelope> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().cloned())
        .collect();
    if let Err(e) = state.queue.admit(good).await {
        return refusal(e);
    }
    state.wake();
    let body: Vec<Value> = answers
        .into_iter()
        .map(|a| match a {
            Ok(env) => json!({"token": env.id}),
            Err(errors) => errors,
        })
        .collect();
    Ok(HttpResponse::Created().json(body))
}

fn refusal_json(e: ApiError) -> Value {
    json!({"submission": [e.to_string()]})
}

async fn get_batch(
    req: HttpRequest,
    q: Query,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let fields = or_respond!(fields_of(&q));
    let base64 = flag(&q, "base64_encoded");
    let tokens: Vec<&str> = q
        .get("tokens")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if tokens.is_empty() || tokens.len() > state.settings.max_batch {
        return Ok(error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!(
                "tokens must name 1 to {} submissions, comma-separated",
                state.settings.max_batch
            ),
        ));
    }
    let mut out = Vec::with_capacity(tokens.len());
    for token in tokens {
        let v = match state.queue.state(token)? {
            Some(s) => match standing(&s) {
                Some(st) => or_respond!(render(&state, token, st, &fields, base64)),
                None => Value::Null,
            },
            None => Value::Null,
        };
        out.push(v);
    }
    Ok(HttpResponse::Ok().json(json!({"submissions": out})))
}

/// The served ids, each with its Kiln language.
fn served(state: &ApiState) -> Vec<(u32, &crate::languages::Language)> {
    j0::LANGUAGES
        .iter()
        .filter_map(|(id, _, _)| match j0::lookup(&state.registry, *id) {
            Lookup::Served(l) => Some((*id, l)),
            _ => None,
        })
        .collect()
}

async fn languages(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let list: Vec<Value> = served(&state)
        .into_iter()
        .map(|(id, l)| json!({"id": id, "name": j0::display_name(id, l)}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn all_languages(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let list: Vec<Value> = j0::LANGUAGES
        .iter()
        .map(|(id, name, _)| match j0::lookup(&state.registry, *id) {
            Lookup::Served(l) => {
                json!({"id": id, "name": j0::display_name(*id, l), "is_archived": false})
            }
            _ => json!({"id": id, "name": name, "is_archived": true}),
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn language(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let not_found = || {
        Ok(error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("language with id {id} doesn't exist"),
        ))
    };
    let Ok(n) = id.parse::<u32>() else {
        return not_found();
    };
    match j0::lookup(&state.registry, n) {
        Lookup::Served(l) => Ok(HttpResponse::Ok().json(json!({
            "id": n,
            "name": j0::display_name(n, l),
            "is_archived": false,
            "source_file": l.entry,
            "compile_cmd": l.compile.as_ref().map(|c| c.join(" ")),
            "run_cmd": l.run.join(" "),
        }))),
        Lookup::NotServed(why) => Ok(error(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("language with id {n} is not available on this server ({why})"),
        )),
        Lookup::Unknown => not_found(),
    }
}

async fn statuses(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let list: Vec<Value> = j0::STATUSES
        .iter()
        .map(|(id, d)| json!({"id": id, "description": d}))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

async fn about(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    Ok(HttpResponse::Ok().json(json!({
        // Clients pick their table of language ids by this.
        "version": j0::VERSION,
        "homepage": "https://github.com/kiln-dev/kiln",
        "source_code": "https://github.com/kiln-dev/kiln",
        "maintainer": "Kiln, speaking Judge0 CE's API",
        "kiln_version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn config_info(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let (d, max) = (&state.policy.default, maxima(&state));
    let compile_options_languages: Vec<String> = served(&state)
        .into_iter()
        .filter(|(_, l)| {
            l.compile.as_ref().is_some_and(|c| {
                let base = c[0].rsplit('/').next().unwrap_or(&c[0]);
                !matches!(base, "sh" | "bash" | "dash" | "env")
            })
        })
        .map(|(id, l)| j0::display_name(id, l))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "maintenance_mode": false,
        "enable_wait_result": true,
        "enable_compiler_options": true,
        "allowed_languages_for_compile_options": compile_options_languages,
        "enable_command_line_arguments": true,
        "enable_submission_delete": false,
        "enable_callbacks": true,
        "callbacks_max_tries": 3,
        "callbacks_timeout": 10.0,
        "enable_additional_files": true,
        "max_queue_size": state.settings.max_queue_depth,
        "cpu_time_limit": d.cpu_time_ms as f64 / 1000.0,
        "max_cpu_time_limit": max.cpu_s,
        "cpu_extra_time": 0.0,
        "max_cpu_extra_time": 5.0,
        "wall_time_limit": d.wall_time_ms as f64 / 1000.0,
        "max_wall_time_limit": max.wall_s,
        "memory_limit": d.memory_bytes / 1024,
        "max_memory_limit": max.memory_kb,
        "stack_limit": d.memory_bytes / 1024,
        "max_stack_limit": max.memory_kb,
        "max_processes_and_or_threads": d.processes,
        "max_max_processes_and_or_threads": max.processes,
        "enable_per_process_and_thread_time_limit": true,
        "allow_enable_per_process_and_thread_time_limit": true,
        "enable_per_process_and_thread_memory_limit": true,
        "allow_enable_per_process_and_thread_memory_limit": true,
        "max_file_size": d.file_size_bytes / 1024,
        "max_max_file_size": max.file_kb,
        "number_of_runs": 1,
        "max_number_of_runs": MAX_NUMBER_OF_RUNS,
        "redirect_stderr_to_stdout": false,
        "max_extract_size": state.policy.max_submission_bytes / 1024,
        "enable_batched_submissions": true,
        "max_submission_batch_size": state.settings.max_batch,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": false,
        "allow_enable_network": state.policy.default.network,
        "enable_network": state.policy.default.network,
    })))
}

async fn system_info(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("Architecture".into(), json!(std::env::consts::ARCH));
    m.insert("CPU(s)".into(), json!(cpus.to_string()));
    m.insert("Model name".into(), json!(model));
    m.insert("Mem".into(), json!(mem_kb));
    Ok(HttpResponse::Ok().json(Value::Object(m)))
}

async fn workers(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let (available, total) = match &state.tree {
        Some(s) => (
            s.parts.standby.load(Ordering::Relaxed),
            s.parts.settings.pool_size,
        ),
        None => (0, 0),
    };
    Ok(HttpResponse::Ok().json(json!([{
        "queue": j0::VERSION,
        "size": state.queue.depth(),
        "available": available,
        "idle": available,
        "working": total.saturating_sub(available),
        "paused": 0,
        "failed": 0,
    }])))
}
