//! Dispatcher: the in-flight ledger. It pairs ready submissions with idle pod runners, remembers
//! which runner holds which job, and when a runner is lost (crashed actor, dead pod, watchdog
//! kill) puts the job back with attempt + 1, up to the configured maximum.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use tracing::{info_span, warn};

use super::pod_runner::{PodRunner, RunJob};
use super::queue_consumer::Credit;
use super::result_publisher::Publish;
use super::{guard, Connect, JobKey, Peers, Shared};
use crate::events::{Event, EventKind};
use crate::outcome::{Outcome, Status};
use crate::pods::PodError;
use crate::queue::Delivery;
use crate::result::{now_ms, RunResult};

/// A submission taken from the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch(pub Delivery);

/// A pod runner has a standby pod and no job.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunnerReady {
    pub runner: usize,
    pub addr: Addr<PodRunner>,
}

/// A pod runner finished (or lost) the job `key`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JobDone {
    pub runner: usize,
    pub key: JobKey,
    pub result: Result<Outcome, PodError>,
}

/// A pod runner has failed to make a pod several times in a row.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunnerFailing {
    pub runner: usize,
    pub error: String,
}

/// How many jobs pods hold right now (for shutdown).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct InFlight;

struct Held {
    delivery: Delivery,
    key: JobKey,
    language: String,
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    peers: Option<Peers>,
    idle: VecDeque<(usize, Addr<PodRunner>)>,
    ledger: HashMap<usize, Held>,
    /// Jobs whose runner was lost, served before new work.
    retry: VecDeque<Delivery>,
    waiting: VecDeque<Delivery>,
    /// Credits granted to the consumer and not yet used.
    granted: usize,
    /// Runners that cannot make pods, with the last error. When every runner is failing, work is
    /// answered with internal_error and that error instead of waiting forever.
    failing: HashMap<usize, String>,
}

impl Dispatcher {
    pub fn new(shared: Arc<Shared>) -> Dispatcher {
        Dispatcher {
            shared,
            peers: None,
            idle: VecDeque::new(),
            ledger: HashMap::new(),
            retry: VecDeque::new(),
            waiting: VecDeque::new(),
            granted: 0,
            failing: HashMap::new(),
        }
    }

    fn assign(&mut self) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        while !self.idle.is_empty() && self.ledger.len() < self.shared.max_parallel_jobs {
            let Some(delivery) = self.retry.pop_front().or_else(|| self.waiting.pop_front()) else {
                break;
            };
            let env = &delivery.envelope;
            let _span =
                info_span!("submission", id = %env.id, attempt = delivery.attempt).entered();
            let job =
                match env
                    .submission
                    .resolve(&env.id, &self.shared.registry, &self.shared.policy)
                {
                    Ok(job) => job,
                    Err(invalid) => {
                        let language = env.submission.language.clone();
                        self.publish(
                            &peers,
                            delivery,
                            language,
                            Outcome::failed(Status::Rejected, invalid.0),
                        );
                        continue;
                    }
                };
            let (runner, addr) = self.idle.pop_front().expect("checked non-empty");
            let key = JobKey {
                id: env.id.clone(),
                attempt: delivery.attempt,
            };
            tracing::debug!(runner, "dispatching");
            let _ = self.shared.events.send(Event {
                id: key.id.clone(),
                kind: EventKind::Running,
            });
            let language = job.language.clone();
            addr.do_send(RunJob {
                job,
                key: key.clone(),
            });
            self.ledger.insert(
                runner,
                Held {
                    delivery,
                    key,
                    language,
                },
            );
        }
        if self.idle.is_empty()
            && self.ledger.is_empty()
            && self.failing.len() >= self.shared.pool_size
        {
            let error = self.failing.values().next().cloned().unwrap_or_default();
            while let Some(delivery) = self.retry.pop_front().or_else(|| self.waiting.pop_front()) {
                let language = delivery.envelope.submission.language.clone();
                let message = format!("no sandbox can be made on this host right now: {error}");
                self.publish(
                    &peers,
                    delivery,
                    language,
                    Outcome::failed(Status::InternalError, message),
                );
            }
            if self.granted < 16 {
                peers.consumer.do_send(Credit(16 - self.granted));
                self.granted = 16;
            }
            return;
        }
        self.shared.metrics.in_flight.set(self.ledger.len() as i64);
        let free = self.idle.len().min(
            self.shared
                .max_parallel_jobs
                .saturating_sub(self.ledger.len()),
        );
        let want = free.saturating_sub(self.granted + self.waiting.len() + self.retry.len());
        if want > 0 {
            self.granted += want;
            peers.consumer.do_send(Credit(want));
        }
    }

    fn publish(&self, peers: &Peers, delivery: Delivery, language: String, outcome: Outcome) {
        let result = RunResult {
            id: delivery.envelope.id.clone(),
            language,
            outcome,
            attempts: delivery.attempt,
            created_at_ms: delivery.envelope.created_at_ms,
            finished_at_ms: now_ms(),
        };
        peers.publisher.do_send(Publish { delivery, result });
    }

    /// The runner holding `held` is gone: run the job again, or give up after the maximum.
    fn lost(&mut self, held: Held, reason: String) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let mut delivery = held.delivery;
        warn!(id = %held.key.id, attempt = delivery.attempt, %reason, "a run was lost");
        self.shared
            .metrics
            .redeliveries
            .with_label_values(&[reason_label(&reason)])
            .inc();
        if delivery.attempt >= self.shared.max_attempts {
            let message = format!(
                "gave up after {} attempts; the last one failed because {reason}",
                delivery.attempt
            );
            self.publish(
                &peers,
                delivery,
                held.language,
                Outcome::failed(Status::InternalError, message),
            );
        } else {
            delivery.attempt += 1;
            self.retry.push_back(delivery);
        }
    }
}

fn reason_label(reason: &str) -> &'static str {
    if reason.contains("restarted") {
        "runner_restarted"
    } else if reason.contains("watchdog") {
        "watchdog"
    } else {
        "pod_lost"
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl actix::Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.shared.count_restart("dispatcher");
    }
}

impl Handler<Connect> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.peers = Some(msg.0);
        self.assign();
    }
}

impl Handler<Dispatch> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Dispatch, ctx: &mut Context<Self>) {
        guard(self, ctx, "dispatcher", |this, _| {
            this.granted = this.granted.saturating_sub(1);
            this.waiting.push_back(msg.0);
            this.assign();
        });
    }
}

impl Handler<RunnerReady> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: RunnerReady, ctx: &mut Context<Self>) {
        guard(self, ctx, "dispatcher", |this, _| {
            // A runner that reports ready while the ledger says it holds a job was restarted
            // mid-job: that job must run again.
            if let Some(held) = this.ledger.remove(&msg.runner) {
                this.lost(held, "its pod runner crashed and was restarted".into());
            }
            this.failing.remove(&msg.runner);
            this.idle.retain(|(r, _)| *r != msg.runner);
            this.idle.push_back((msg.runner, msg.addr));
            this.assign();
        });
    }
}

impl Handler<JobDone> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: JobDone, ctx: &mut Context<Self>) {
        guard(self, ctx, "dispatcher", |this, _| {
            let current = this
                .ledger
                .get(&msg.runner)
                .map(|h| h.key == msg.key)
                .unwrap_or(false);
            if !current {
                return; // a late report from a run that was already given up on
            }
            let held = this.ledger.remove(&msg.runner).expect("checked present");
            match msg.result {
                Ok(outcome) => {
                    if let Some(peers) = this.peers.clone() {
                        this.publish(&peers, held.delivery, held.language, outcome);
                    }
                }
                Err(e) => this.lost(held, e.to_string()),
            }
            this.assign();
        });
    }
}

impl Handler<RunnerFailing> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: RunnerFailing, ctx: &mut Context<Self>) {
        guard(self, ctx, "dispatcher", |this, _| {
            this.failing.insert(msg.runner, msg.error);
            this.assign();
        });
    }
}

impl Handler<InFlight> for Dispatcher {
    type Result = usize;
    fn handle(&mut self, _: InFlight, _: &mut Context<Self>) -> usize {
        self.ledger.len() + self.retry.len() + self.waiting.len()
    }
}
