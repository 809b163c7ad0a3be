//! QueueConsumer: takes submissions from the queue only as fast as pods free up. The Dispatcher
//! grants one credit per idle pod runner; with no credit nothing is taken, so a saturated pool
//! leaves work in the queue (backpressure) instead of piling it up in memory.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;

use super::dispatcher::Dispatch;
use super::{guard, Connect, Peers, TreeParts};
use crate::queue::QueueError;

pub struct QueueConsumer {
    parts: Arc<TreeParts>,
    peers: Option<Peers>,
    credits: usize,
    fetching: bool,
    paused: bool,
}

/// New work may be in the queue (sent by the API after a submit).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// `n` more pod runners are idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Credit(pub usize);

/// Stop taking work (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

#[derive(Message)]
#[rtype(result = "()")]
struct Fetched(Result<Vec<crate::queue::Delivery>, QueueError>, usize);

impl QueueConsumer {
    pub fn new(parts: Arc<TreeParts>) -> QueueConsumer {
        QueueConsumer {
            parts,
            peers: None,
            credits: 0,
            fetching: false,
            paused: false,
        }
    }

    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.fetching || self.paused || self.credits == 0 || self.peers.is_none() {
            return;
        }
        self.fetching = true;
        let want = self.credits;
        let take = self.parts.queue.take(want);
        let me = ctx.address();
        actix::spawn(async move {
            let r = AssertUnwindSafe(take).catch_unwind().await;
            let r = r.unwrap_or(Err(QueueError::Panicked("taking from the queue")));
            me.do_send(Fetched(r, want));
        });
    }
}

impl Actor for QueueConsumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.parts
            .queue
            .on_ready(Box::new(move || me.do_send(Wake)));
        // A safety net: work that arrived without a Wake (restart, redelivery) is still found.
        // (The queue-depth gauge is read at scrape time by /metrics, not here.)
        ctx.run_interval(Duration::from_millis(50), |this, ctx| this.fill(ctx));
    }
}

impl actix::Supervised for QueueConsumer {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.count_restart("queue_consumer");
        self.fetching = false;
    }
}

impl Handler<Connect> for QueueConsumer {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.peers = Some(msg.0);
    }
}

impl Handler<Wake> for QueueConsumer {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        guard(self, ctx, "queue_consumer", |this, ctx| this.fill(ctx));
    }
}

impl Handler<Credit> for QueueConsumer {
    type Result = ();
    fn handle(&mut self, msg: Credit, ctx: &mut Context<Self>) {
        guard(self, ctx, "queue_consumer", |this, ctx| {
            this.credits += msg.0;
            this.fill(ctx)
        });
    }
}

impl Handler<Pause> for QueueConsumer {
    type Result = ();
    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        self.paused = true;
    }
}

impl Handler<Fetched> for QueueConsumer {
    type Result = ();
    fn handle(&mut self, msg: Fetched, ctx: &mut Context<Self>) {
        guard(self, ctx, "queue_consumer", |this, ctx| {
            this.fetching = false;
            match msg.0 {
                Ok(deliveries) => {
                    let got = deliveries.len();
                    this.credits -= got.min(this.credits);
                    if let Some(peers) = &this.peers {
                        for d in deliveries {
                            peers.dispatcher.do_send(Dispatch(d));
                        }
                    }
                    if got == msg.1 {
                        this.fill(ctx);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "taking submissions from the queue failed; retrying")
                }
            }
        });
    }
}
