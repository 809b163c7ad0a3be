//! ResultPublisher: the only way out for results. It batches results that arrive while a write is
//! under way and publishes them with their acknowledgements in one atomic step (embedded: one
//! journal transaction; Kafka: one producer transaction), then tells waiting clients.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{Connect, TreeParts};
use crate::events::{Event, EventKind};
use crate::queue::{Delivery, QueueError};
use crate::result::{now_ms, RunResult};

#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub delivery: Delivery,
    pub result: RunResult,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Flushed(Result<(), QueueError>, Vec<(Delivery, RunResult)>);

pub struct ResultPublisher {
    parts: Arc<TreeParts>,
    buffer: Vec<(Delivery, RunResult)>,
    flushing: bool,
}

impl ResultPublisher {
    pub fn new(parts: Arc<TreeParts>) -> ResultPublisher {
        ResultPublisher {
            parts,
            buffer: Vec::new(),
            flushing: false,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.buffer.is_empty() {
            return;
        }
        self.flushing = true;
        let batch = std::mem::take(&mut self.buffer);
        let write = self.parts.queue.complete(batch.clone());
        let me = ctx.address();
        actix::spawn(async move {
            me.do_send(Flushed(write.await, batch));
        });
    }
}

impl Actor for ResultPublisher {
    type Context = Context<Self>;
}

impl actix::Supervised for ResultPublisher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.count_restart("result_publisher");
        self.flushing = false;
    }
}

impl Handler<Connect> for ResultPublisher {
    type Result = ();
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) {}
}

impl Handler<Publish> for ResultPublisher {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.buffer.push((msg.delivery, msg.result));
        self.flush(ctx);
    }
}

impl Handler<Flushed> for ResultPublisher {
    type Result = ();
    fn handle(&mut self, msg: Flushed, ctx: &mut Context<Self>) {
        self.flushing = false;
        match msg.0 {
            Ok(()) => {
                let now = now_ms();
                for (delivery, result) in msg.1 {
                    if let Some(url) = delivery.envelope.submission.callback_url.clone() {
                        crate::callback::deliver(
                            url,
                            result.id.clone(),
                            crate::callback::body_for(
                                &result,
                                delivery.envelope.submission.callback_format,
                            ),
                            self.parts.metrics.clone(),
                            self.parts.callbacks.clone(),
                        );
                    }
                    let m = &self.parts.metrics;
                    // Label values come from the registry only: a producer's made-up language
                    // names must not grow the metrics without bound.
                    let known = self
                        .parts
                        .registry
                        .available
                        .iter()
                        .any(|l| l.name == result.language);
                    let language = if known {
                        result.language.as_str()
                    } else {
                        "other"
                    };
                    m.runs
                        .with_label_values(&[result.outcome.status.as_str(), language])
                        .inc();
                    if result.outcome.forked {
                        m.runs_forked.with_label_values(&[language]).inc();
                    }
                    let secs = now.saturating_sub(result.created_at_ms) as f64 / 1000.0;
                    m.latency.with_label_values(&[language]).observe(secs);
                    tracing::info!(id = %result.id, status = %result.outcome.status, attempts = result.attempts, "result published");
                    let _ = self.parts.events.send(Event {
                        id: result.id.clone(),
                        kind: EventKind::Finished(Arc::new(result)),
                    });
                }
                self.flush(ctx);
            }
            Err(e) => {
                tracing::error!(error = %e, "publishing results failed; retrying");
                let mut batch = msg.1;
                batch.append(&mut self.buffer);
                self.buffer = batch;
                ctx.run_later(Duration::from_millis(200), |this, ctx| this.flush(ctx));
            }
        }
    }
}
