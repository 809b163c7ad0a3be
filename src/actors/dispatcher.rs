//! Dispatcher: the in-flight ledger. It pairs ready submissions with idle pod runners of a pool
//! that serves their language, remembers which runner holds which job, and when a runner is lost
//! (crashed actor, dead pod) puts the job back with attempt + 1, up to the configured maximum. A
//! job the watchdog had to stop ends as `time_limit_exceeded`.

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
    pub pool: usize,
    pub addr: Addr<PodRunner>,
}

/// The watchdog stopped runner `runner`'s job `key`: it ran past its wall limits plus the grace.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Overran {
    pub runner: usize,
    pub key: JobKey,
    pub after_ms: u64,
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
    pool: usize,
}

/// Which pool a submitted language name goes to.
#[derive(Clone)]
enum Route {
    Pool(usize),
    /// The registry does not know it: `resolve` rejects it with its own message.
    Unknown,
    /// Known, but no pool serves it.
    Unserved(String),
}

pub struct Dispatcher {
    shared: Arc<Shared>,
    peers: Option<Peers>,
    /// Idle runners: (runner, pool, address).
    idle: VecDeque<(usize, usize, Addr<PodRunner>)>,
    ledger: HashMap<usize, Held>,
    /// Jobs whose runner was lost, served before new work.
    retry: VecDeque<Delivery>,
    waiting: VecDeque<Delivery>,
    /// Credits granted to the consumer and not yet used.
    granted: usize,
    /// Runners that cannot make pods, with the last error. When every runner is failing, work is
    /// answered with internal_error and that error instead of waiting forever.
    failing: HashMap<usize, String>,
    routes: HashMap<String, Route>,
    /// (running, waiting) per pool as last told to the backend.
    demand: Vec<(usize, usize)>,
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
            routes: HashMap::new(),
            demand: Vec::new(),
        }
    }

    fn route(&mut self, language: &str) -> Route {
        if let Some(r) = self.routes.get(language) {
            return r.clone();
        }
        let route = match self.shared.registry.find(language, None) {
            Err(_) => Route::Unknown,
            Ok(lang) => match self.shared.pools.iter().position(|p| p.serves(&lang.name)) {
                Some(p) => Route::Pool(p),
                None => Route::Unserved(format!(
                    "no pod pool here serves {} (pools: {})",
                    lang.name,
                    self.shared
                        .pools
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        };
        if self.routes.len() < 4096 {
            self.routes.insert(language.to_string(), route.clone());
        }
        route
    }

    /// Tells the backend how many jobs each pool runs and how many wait for it.
    fn report_demand(&mut self) {
        let mut now = vec![(0usize, 0usize); self.shared.pools.len()];
        for held in self.ledger.values() {
            now[held.pool].0 += 1;
        }
        let languages: Vec<String> = self
            .retry
            .iter()
            .chain(self.waiting.iter())
            .map(|d| d.envelope.submission.language.clone())
            .collect();
        for language in languages {
            if let Route::Pool(p) = self.route(&language) {
                now[p].1 += 1;
            }
        }
        if now != self.demand {
            for (pool, (running, waiting)) in now.iter().enumerate() {
                self.shared.backend.demand(pool, *running, *waiting);
            }
            self.demand = now;
        }
    }

    fn assign(&mut self) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        // Jobs whose pool has no idle runner now keep their place for the next round.
        let (mut blocked_retry, mut blocked) = (VecDeque::new(), VecDeque::new());
        while !self.idle.is_empty() && self.ledger.len() < self.shared.max_parallel_jobs {
            let (delivery, from_retry) = match self.retry.pop_front() {
                Some(d) => (d, true),
                None => match self.waiting.pop_front() {
                    Some(d) => (d, false),
                    None => break,
                },
            };
            let pool = match self.route(&delivery.envelope.submission.language) {
                Route::Pool(p) => Some(p),
                Route::Unknown => None,
                Route::Unserved(why) => {
                    let language = delivery.envelope.submission.language.clone();
                    self.publish(
                        &peers,
                        delivery,
                        language,
                        Outcome::failed(Status::Rejected, why),
                    );
                    continue;
                }
            };
            let slot = match pool {
                Some(p) => self.idle.iter().position(|(_, pool, _)| *pool == p),
                None => Some(0), // resolve rejects it below without using a runner
            };
            let Some(slot) = slot else {
                if from_retry {
                    blocked_retry.push_back(delivery);
                } else {
                    blocked.push_back(delivery);
                }
                continue;
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
            let (runner, pool, addr) = self.idle.remove(slot).expect("slot is in range");
            let key = JobKey {
                id: env.id.clone(),
                attempt: delivery.attempt,
            };
            tracing::debug!(runner, pool, "dispatching");
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
                    pool,
                },
            );
        }
        while let Some(d) = blocked_retry.pop_back() {
            self.retry.push_front(d);
        }
        while let Some(d) = blocked.pop_back() {
            self.waiting.push_front(d);
        }
        self.report_demand();
        if self.idle.is_empty()
            && self.ledger.is_empty()
            && self.failing.len() >= self.shared.total_runners()
        {
            let error = self.failing.values().next().cloned().unwrap_or_default();
            while let Some(delivery) = self.retry.pop_front().or_else(|| self.waiting.pop_front()) {
                let language = delivery.envelope.submission.language.clone();
                let message = format!("no sandbox can be made right now: {error}");
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
        // What still waits here could not use the idle runners (they serve other pools), so it
        // does not hold their credit back; the total held waiting stays bounded all the same.
        let held = self.waiting.len() + self.retry.len();
        let want = if held < 2 * self.shared.total_runners() + 16 {
            free.saturating_sub(self.granted)
        } else {
            0
        };
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
            this.idle.retain(|(r, _, _)| *r != msg.runner);
            this.idle.push_back((msg.runner, msg.pool, msg.addr));
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

impl Handler<Overran> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: Overran, ctx: &mut Context<Self>) {
        guard(self, ctx, "dispatcher", |this, _| {
            if this.ledger.get(&msg.runner).map(|h| &h.key) != Some(&msg.key) {
                return;
            }
            let held = this.ledger.remove(&msg.runner).expect("checked present");
            let message = format!(
                "the job was still running {} ms after it started, past its wall limits and the \
                 watchdog's grace; its pod was deleted",
                msg.after_ms
            );
            if let Some(peers) = this.peers.clone() {
                let mut outcome = Outcome::failed(Status::TimeLimitExceeded, message);
                outcome.wall_time_ms = msg.after_ms;
                this.publish(&peers, held.delivery, held.language, outcome);
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
