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
use super::test_set::TestSet;
use super::{guard, Connect, JobKey, Peers, TreeParts};
use crate::events::{Event, EventKind};
use crate::outcome::{Outcome, Status};
use crate::pods::{Finished, Lost, PodError};
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
    pub result: Result<Finished, PodError>,
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
    work: Work,
    key: JobKey,
    language: String,
    pool: usize,
}

/// What a runner holds: a whole submission, or one test of a test-case set (the set keeps the
/// delivery).
enum Work {
    Whole(Delivery),
    Test { id: String, index: usize },
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
    parts: Arc<TreeParts>,
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
    /// Test-case sets in flight by submission id, and the order they came in.
    sets: HashMap<String, TestSet>,
    set_order: VecDeque<String>,
}

impl Dispatcher {
    pub fn new(parts: Arc<TreeParts>) -> Dispatcher {
        Dispatcher {
            parts,
            peers: None,
            idle: VecDeque::new(),
            ledger: HashMap::new(),
            retry: VecDeque::new(),
            waiting: VecDeque::new(),
            granted: 0,
            failing: HashMap::new(),
            routes: HashMap::new(),
            demand: Vec::new(),
            sets: HashMap::new(),
            set_order: VecDeque::new(),
        }
    }

    fn route(&mut self, language: &str) -> Route {
        if let Some(r) = self.routes.get(language) {
            return r.clone();
        }
        let route = match self.parts.registry.find(language, None) {
            Err(_) => Route::Unknown,
            Ok(lang) => match self.parts.pools.iter().position(|p| p.serves(&lang.name)) {
                Some(p) => Route::Pool(p),
                None => Route::Unserved(format!(
                    "no pod pool here serves {} (pools: {})",
                    lang.name,
                    self.parts
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
        let mut now = vec![(0usize, 0usize); self.parts.pools.len()];
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
                self.parts.backend.demand(pool, *running, *waiting);
            }
            self.demand = now;
        }
    }

    fn assign(&mut self) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        // Tests of sets in flight go first: their submissions are already running.
        self.assign_tests();
        // Jobs whose pool has no idle runner now keep their place for the next round.
        let (mut blocked_retry, mut blocked) = (VecDeque::new(), VecDeque::new());
        while !self.idle.is_empty() && self.ledger.len() < self.parts.settings.max_parallel_jobs {
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
            if !env.submission.tests.is_empty() {
                let jobs = env.submission.resolve_tests(
                    &env.id,
                    &self.parts.registry,
                    &self.parts.settings.policy,
                );
                let language = env.submission.language.clone();
                match (jobs, pool) {
                    (Ok(jobs), Some(pool)) => self.start_set(delivery, language, pool, jobs),
                    (Ok(_), None) => unreachable!("a known language has a route"),
                    (Err(invalid), _) => self.publish(
                        &peers,
                        delivery,
                        language,
                        Outcome::failed(Status::Rejected, invalid.0),
                    ),
                }
                continue;
            }
            let job = match env.submission.resolve(
                &env.id,
                &self.parts.registry,
                &self.parts.settings.policy,
            ) {
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
                test: None,
            };
            tracing::debug!(runner, pool, "dispatching");
            let _ = self.parts.events.send(Event {
                id: key.id.clone(),
                kind: EventKind::Running,
            });
            let language = job.language.clone();
            self.give(
                runner,
                &addr,
                job,
                key,
                Work::Whole(delivery),
                language,
                pool,
            );
        }
        // A set that came in this round starts now, if a runner is left.
        self.assign_tests();
        while let Some(d) = blocked_retry.pop_back() {
            self.retry.push_front(d);
        }
        while let Some(d) = blocked.pop_back() {
            self.waiting.push_front(d);
        }
        self.report_demand();
        if self.idle.is_empty()
            && self.ledger.is_empty()
            && self.failing.len() >= self.parts.total_runners()
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
        self.parts.metrics.in_flight.set(self.ledger.len() as i64);
        let free = self.idle.len().min(
            self.parts
                .settings
                .max_parallel_jobs
                .saturating_sub(self.ledger.len()),
        );
        // What still waits here could not use the idle runners (they serve other pools), so it
        // does not hold their credit back; the total held waiting stays bounded all the same.
        let held = self.waiting.len() + self.retry.len();
        let want = if held < 2 * self.parts.total_runners() + 16 {
            free.saturating_sub(self.granted)
        } else {
            0
        };
        if want > 0 {
            self.granted += want;
            peers.consumer.do_send(Credit(want));
        }
    }

    /// Sends `job` to `runner` and records in the ledger that the runner holds it.
    #[allow(clippy::too_many_arguments)]
    fn give(
        &mut self,
        runner: usize,
        addr: &Addr<PodRunner>,
        job: crate::job::Job,
        key: JobKey,
        work: Work,
        language: String,
        pool: usize,
    ) {
        addr.do_send(RunJob {
            job,
            key: key.clone(),
        });
        self.ledger.insert(
            runner,
            Held {
                work,
                key,
                language,
                pool,
            },
        );
    }

    fn start_set(
        &mut self,
        delivery: Delivery,
        language: String,
        pool: usize,
        jobs: Vec<crate::job::Job>,
    ) {
        let id = delivery.envelope.id.clone();
        let set = TestSet::new(delivery, language, pool, jobs);
        let _ = self.parts.events.send(Event {
            id: id.clone(),
            kind: EventKind::Running,
        });
        self.set_order.push_back(id.clone());
        self.sets.insert(id, set);
    }

    /// Gives idle runners the next tests of the sets in flight: a set's first test alone (it
    /// compiles), then the rest as runners of its pool come free.
    fn assign_tests(&mut self) {
        for id in self.set_order.clone() {
            loop {
                if self.ledger.len() >= self.parts.settings.max_parallel_jobs {
                    return;
                }
                let Some(set) = self.sets.get_mut(&id) else {
                    break;
                };
                if !set.compiled && set.running > 0 {
                    break; // the build comes from the first test
                }
                let Some(&index) = set.pending.front() else {
                    break;
                };
                if index >= set.needed() {
                    set.pending.clear();
                    break;
                }
                let Some(slot) = self.idle.iter().position(|(_, p, _)| *p == set.pool) else {
                    break;
                };
                set.pending.pop_front();
                set.running += 1;
                let mut job = set.jobs[index].clone();
                if let Some(built) = &set.built {
                    job.prebuilt = Some(built.clone());
                }
                let key = JobKey {
                    id: id.clone(),
                    attempt: set.attempts[index],
                    test: Some(index),
                };
                let (language, pool) = (set.language.clone(), set.pool);
                let (runner, _, addr) = self.idle.remove(slot).expect("slot is in range");
                let work = Work::Test {
                    id: id.clone(),
                    index,
                };
                self.give(runner, &addr, job, key, work, language, pool);
            }
        }
    }

    /// A test of set `id` came back (or was lost: `Err`, run again up to `max_attempts`).
    fn test_done(&mut self, id: &str, index: usize, result: Result<Finished, Redelivery>) {
        let max_attempts = self.parts.settings.max_attempts;
        let Some(set) = self.sets.get_mut(id) else {
            return;
        };
        set.record(index, result, max_attempts);
        if set.complete() {
            let set = self.sets.remove(id).expect("present");
            self.set_order.retain(|s| s != id);
            self.finish_set(set);
        }
    }

    /// One result for a whole set: the first test that is not accepted (in test order) gives
    /// the status and the top-level output, every test's run is in `tests`.
    fn finish_set(&self, set: TestSet) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let (delivery, language, outcome) =
            set.into_result(self.parts.settings.policy.max_tests_output_bytes);
        self.publish(&peers, delivery, language, outcome);
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
    fn lost(&mut self, held: Held, reason: Redelivery) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let mut delivery = match held.work {
            Work::Whole(d) => d,
            Work::Test { id, index } => {
                warn!(%id, test = index, %reason, "a test's run was lost");
                self.test_done(&id, index, Err(reason));
                return;
            }
        };
        warn!(id = %held.key.id, attempt = delivery.attempt, %reason, "a run was lost");
        self.parts
            .metrics
            .redeliveries
            .with_label_values(&[reason.metric_label()])
            .inc();
        if delivery.attempt >= self.parts.settings.max_attempts {
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

/// Why a job is run again: what the metrics count it by, and the words its result gives when it
/// is given up on.
#[derive(Debug, thiserror::Error)]
pub enum Redelivery {
    #[error("its pod runner crashed and was restarted")]
    RunnerRestarted,
    #[error(transparent)]
    Pod(#[from] PodError),
}

impl Redelivery {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Redelivery::RunnerRestarted => "runner_restarted",
            Redelivery::Pod(PodError::Lost(Lost::Watchdog)) => "watchdog",
            Redelivery::Pod(_) => "pod_lost",
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl actix::Supervised for Dispatcher {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.count_restart("dispatcher");
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
                this.lost(held, Redelivery::RunnerRestarted);
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
            match (held.work, msg.result) {
                (Work::Test { id, index }, Ok(finished)) => {
                    this.test_done(&id, index, Ok(finished))
                }
                (Work::Whole(delivery), Ok(finished)) => {
                    if let Some(peers) = this.peers.clone() {
                        this.publish(&peers, delivery, held.language, finished.outcome);
                    }
                }
                (work, Err(e)) => this.lost(
                    Held {
                        work,
                        key: held.key,
                        language: held.language,
                        pool: held.pool,
                    },
                    Redelivery::Pod(e),
                ),
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
            let mut outcome = Outcome::failed(Status::TimeLimitExceeded, message);
            outcome.wall_time_ms = msg.after_ms;
            match held.work {
                Work::Test { id, index } => this.test_done(&id, index, Ok(Finished::of(outcome))),
                Work::Whole(delivery) => {
                    if let Some(peers) = this.peers.clone() {
                        this.publish(&peers, delivery, held.language, outcome);
                    }
                }
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
        self.ledger.len() + self.retry.len() + self.waiting.len() + self.sets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_is_counted_by_its_cause() {
        let lost = |l| Redelivery::Pod(PodError::Lost(l));
        assert_eq!(
            Redelivery::RunnerRestarted.metric_label(),
            "runner_restarted"
        );
        assert_eq!(lost(Lost::Watchdog).metric_label(), "watchdog");
        assert_eq!(
            lost(Lost::Connection("eof".into())).metric_label(),
            "pod_lost"
        );
        assert_eq!(
            lost(Lost::Gone("deleted".into())).metric_label(),
            "pod_lost"
        );
        assert_eq!(
            Redelivery::RunnerRestarted.to_string(),
            "its pod runner crashed and was restarted"
        );
        assert_eq!(
            lost(Lost::Watchdog).to_string(),
            "the sandbox was lost during the job: the watchdog deleted the pod"
        );
    }
}
