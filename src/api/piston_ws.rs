//! Piston's interactive WebSocket, `/api/v2/connect`: `init` starts a job (through the queue and
//! actors like any other), `data` frames feed its stdin while it runs, its stdout and stderr come
//! back as they are written, a `signal` frame signals it, and `exit` ends the session. The session
//! relays through `crate::sessions` to the local pod that runs the job.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use serde_json::{json, Value};

use super::piston::{to_submission, Execute};
use super::{accept, authorize, ApiState};
use crate::events::EventKind;
use crate::sessions::Input;

/// Piston's close codes.
const ALREADY_INITIALIZED: u16 = 4000;
const INIT_TIMEOUT: u16 = 4001;
const NOTIFIED_ERROR: u16 = 4002;
const NOT_INITIALIZED: u16 = 4003;
const ONLY_STDIN: u16 = 4004;
const INVALID_SIGNAL: u16 = 4005;
const JOB_COMPLETED: u16 = 4999;

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, actix_web::Error> {
    authorize(&req, &state)?;
    let (response, session, messages) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(run(state, session, messages));
    Ok(response)
}

async fn close(ws: Session, code: u16, why: &str) {
    let _ = ws
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(why.to_string()),
        }))
        .await;
}

/// The next text frame (answering pings on the way); None when the client is gone.
async fn next_text(ws: &mut Session, messages: &mut MessageStream) -> Option<String> {
    loop {
        match messages.recv().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(p)) => {
                let _ = ws.pong(&p).await;
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn signal_number(v: &Value) -> Option<i32> {
    if let Some(n) = v.as_i64() {
        return (1..=64).contains(&n).then_some(n as i32);
    }
    kiln_wire::rules::signal_by_name(v.as_str()?)
}

/// A `data` frame of the program's output (stream 2 is stderr).
fn data_frame(stream: u8, data: &[u8]) -> String {
    let stream = if stream == 2 { "stderr" } else { "stdout" };
    json!({"type": "data", "stream": stream, "data": String::from_utf8_lossy(data)}).to_string()
}

async fn run(state: web::Data<ApiState>, mut ws: Session, mut messages: MessageStream) {
    let init = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        next_text(&mut ws, &mut messages),
    )
    .await;
    let init: Value = match init {
        Err(_) => return close(ws, INIT_TIMEOUT, "Initialization Timeout").await,
        Ok(None) => return,
        Ok(Some(t)) => serde_json::from_str(&t).unwrap_or(Value::Null),
    };
    if init["type"] != "init" {
        return close(ws, NOT_INITIALIZED, "Not yet Initialized").await;
    }
    // Sessions live in this process: its own actor tree and local pods run the job.
    if state.tree.is_none() || state.settings.pods != crate::config::PodsKind::Local {
        let _ = ws
            .text(json!({"type": "error", "message": "interactive runs need kiln serve with local pods"}).to_string())
            .await;
        return close(ws, NOTIFIED_ERROR, "Notified Error").await;
    }
    let started = serde_json::from_value::<Execute>(init)
        .map_err(|e| format!("invalid init: {e}"))
        .and_then(|ex| to_submission(&state, ex));
    let (mut sub, lang) = match started {
        Ok(x) => x,
        Err(m) => {
            let _ = ws
                .text(json!({"type": "error", "message": m}).to_string())
                .await;
            return close(ws, NOTIFIED_ERROR, "Notified Error").await;
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    sub.id = Some(id.clone());
    let (inputs, mut outputs) = crate::sessions::open(&id);
    let mut events = state.events.subscribe();
    let submitted = match accept(&state, sub) {
        Ok(env) => state.queue.admit(vec![env]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = submitted {
        crate::sessions::close(&id);
        let _ = ws
            .text(json!({"type": "error", "message": e.to_string()}).to_string())
            .await;
        return close(ws, NOTIFIED_ERROR, "Notified Error").await;
    }
    state.wake();
    let compiled = lang.compile.is_some();
    let _ = ws
        .text(
            json!({"type": "runtime", "language": lang.name, "version": lang.version}).to_string(),
        )
        .await;
    let first_stage = if compiled { "compile" } else { "run" };
    let _ = ws
        .text(json!({"type": "stage", "stage": first_stage}).to_string())
        .await;
    let mut in_run = !compiled;
    let mut client_gone = false;
    loop {
        tokio::select! {
            message = next_text(&mut ws, &mut messages), if !client_gone => {
                let Some(text) = message else {
                    // The client left: the program is killed, its result kept as usual.
                    let _ = inputs.send(Input::Signal(libc::SIGKILL));
                    client_gone = true;
                    continue;
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let refused = match v["type"].as_str() {
                    Some("init") => Some((ALREADY_INITIALIZED, "Already Initialized")),
                    Some("data") if v["stream"] == "stdin" => {
                        let data = v["data"].as_str().unwrap_or("").as_bytes().to_vec();
                        let _ = inputs.send(Input::Stdin(data));
                        None
                    }
                    Some("data") => Some((ONLY_STDIN, "Can only write to stdin")),
                    Some("signal") => match signal_number(&v["signal"]) {
                        Some(sig) => {
                            let _ = inputs.send(Input::Signal(sig));
                            None
                        }
                        None => Some((INVALID_SIGNAL, "Invalid Signal")),
                    },
                    _ => None,
                };
                if let Some((code, why)) = refused {
                    // The session ends, and with it the program.
                    let _ = inputs.send(Input::Signal(libc::SIGKILL));
                    crate::sessions::close(&id);
                    return close(ws, code, why).await;
                }
            }
            chunk = outputs.recv() => {
                if let Some((stream, data)) = chunk {
                    if !in_run {
                        in_run = true;
                        let _ = ws.text(json!({"type": "stage", "stage": "run"}).to_string()).await;
                    }
                    let _ = ws.text(data_frame(stream, &data)).await;
                }
            }
            event = events.recv() => {
                let r = match event {
                    Ok(e) if e.id == id => match e.kind {
                        EventKind::Finished(r) => r,
                        _ => continue,
                    },
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match state.queue.state(&id) {
                        Ok(Some(crate::queue::SubmissionState::Done(r))) => std::sync::Arc::new(*r),
                        _ => continue,
                    },
                    Err(_) => break,
                };
                // Output still in the channel goes first.
                while let Ok((stream, data)) = outputs.try_recv() {
                    let _ = ws.text(data_frame(stream, &data)).await;
                }
                let o = &r.outcome;
                if o.status == crate::outcome::Status::CompileError {
                    let out = String::from_utf8_lossy(&o.compile_output.0).into_owned();
                    let _ = ws.text(json!({"type": "data", "stream": "stderr", "data": out}).to_string()).await;
                    let _ = ws.text(json!({"type": "exit", "stage": "compile", "code": 1, "signal": null}).to_string()).await;
                } else {
                    if !in_run {
                        let _ = ws.text(json!({"type": "stage", "stage": "run"}).to_string()).await;
                    }
                    let signal = o.signal.map(kiln_wire::rules::signal_name);
                    let _ = ws.text(json!({"type": "exit", "stage": "run", "code": o.exit_code, "signal": signal, "status": r.view().status, "message": o.message}).to_string()).await;
                }
                break;
            }
        }
    }
    crate::sessions::close(&id);
    close(ws, JOB_COMPLETED, "Job Completed").await;
}
