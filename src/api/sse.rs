//! Server-sent events for one submission: `queued`, `running`, then `result` (the final Result),
//! after which the stream ends. A client that connects late gets the current state first.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream;
use tokio::sync::broadcast::error::RecvError;

use super::{authorize, state_json, ApiError, ApiState};
use crate::events::EventKind;
use crate::queue::SubmissionState;

fn frame(event: &str, data: &serde_json::Value) -> web::Bytes {
    web::Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

pub async fn events(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let id = id.into_inner();
    let rx = state.events.subscribe();
    let current = state
        .queue
        .state(&id)?
        .ok_or_else(|| ApiError::NotFound(state.queue.not_found(&id)))?;
    let first = match &current {
        SubmissionState::Queued => frame("queued", &state_json(&id, &current)),
        SubmissionState::Running => frame("running", &state_json(&id, &current)),
        SubmissionState::Done(_) => frame("result", &state_json(&id, &current)),
        SubmissionState::Evicted { at_ms } => return Err(super::evicted(&state, &id, *at_ms)),
    };
    let done = matches!(current, SubmissionState::Done(_));
    let rest = stream::unfold(
        (rx, done, id, state),
        |(mut rx, done, id, state)| async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(e) if e.id == id => {
                        return Some(match e.kind {
                            EventKind::Running => {
                                let v = serde_json::json!({"id": id, "status": "running"});
                                (
                                    Ok::<_, actix_web::Error>(frame("running", &v)),
                                    (rx, false, id, state),
                                )
                            }
                            EventKind::Finished(r) => {
                                let v = serde_json::to_value(r.view()).unwrap_or_default();
                                (Ok(frame("result", &v)), (rx, true, id, state))
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        if let Ok(Some(s @ SubmissionState::Done(_))) = state.queue.state(&id) {
                            let v = state_json(&id, &s);
                            return Some((Ok(frame("result", &v)), (rx, true, id, state)));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    let body = stream::once(async move { Ok::<_, actix_web::Error>(first) });
    use futures_util::StreamExt;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body.chain(rest)))
}
