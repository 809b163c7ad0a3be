//! PodRunner: owns one standby pod at a time. It makes the pod, reports ready, runs the one job
//! it is handed, reports the outcome, and makes the next pod. A pod is never reused.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;

use super::dispatcher::{JobDone, RunnerFailing, RunnerReady};
use super::pool_keeper::PodStatus;
use super::timeout_watchdog::{Unwatch, Watch};
use super::{guard, JobKey, Peers, TreeParts};
use crate::job::Job;
use crate::pods::{Finished, Lost, PodError, StandbyPod};

/// Run this job on your standby pod.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunJob {
    pub job: Job,
    pub key: JobKey,
}

#[derive(Message)]
#[rtype(result = "()")]
struct PodMade {
    generation: u64,
    pod: Result<Box<dyn StandbyPod>, PodError>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Ran {
    key: JobKey,
    result: Result<Finished, PodError>,
}

pub struct PodRunner {
    id: usize,
    pool: usize,
    parts: Arc<TreeParts>,
    peers: Peers,
    pod: Option<Box<dyn StandbyPod>>,
    /// Bumped on restart, so a pod made for the previous life is not mistaken for this one's.
    generation: u64,
    current: Option<JobKey>,
    /// The compile cache key of the running job, when its build is to be kept.
    cache_key: Option<String>,
    /// The cached build laid into the running job.
    laid_in: Option<crate::job::Artifact>,
    failures: u32,
    rng: u64,
}

impl PodRunner {
    pub fn new(id: usize, pool: usize, parts: Arc<TreeParts>, peers: Peers) -> PodRunner {
        let seed = crate::result::now_ms() ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        PodRunner {
            id,
            pool,
            parts,
            cache_key: None,
            laid_in: None,
            peers,
            pod: None,
            generation: 0,
            current: None,
            failures: 0,
            rng: seed | 1,
        }
    }

    fn make_pod(&mut self, ctx: &mut Context<Self>) {
        let generation = self.generation;
        let create = self.parts.backend.create(self.pool);
        let me = ctx.address();
        actix::spawn(async move {
            let pod = match AssertUnwindSafe(create).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(PodError::Create {
                    step: "create".into(),
                    error: "the pod backend panicked".into(),
                }),
            };
            me.do_send(PodMade { generation, pod });
        });
    }

    /// xorshift: enough randomness for fault injection, no dependency.
    fn chance(&mut self, p: f64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn release_pod(&mut self) {
        if let Some(pod) = self.pod.take() {
            actix::spawn(pod.destroy());
        }
    }
}

impl Actor for PodRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.make_pod(ctx);
    }
}

impl actix::Supervised for PodRunner {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.count_restart("pod_runner");
        self.generation += 1;
        self.current = None;
        self.release_pod();
        self.peers.watchdog.do_send(Unwatch {
            runner: self.id,
            key: None,
        });
        self.peers.pool.do_send(PodStatus {
            runner: self.id,
            standby: false,
        });
    }
}

impl Handler<PodMade> for PodRunner {
    type Result = ();
    fn handle(&mut self, msg: PodMade, ctx: &mut Context<Self>) {
        guard(self, ctx, "pod_runner", |this, ctx| {
            if msg.generation != this.generation || this.pod.is_some() {
                if let Ok(pod) = msg.pod {
                    actix::spawn(pod.destroy());
                }
                return;
            }
            match msg.pod {
                Ok(pod) => {
                    this.failures = 0;
                    this.pod = Some(pod);
                    this.peers.pool.do_send(PodStatus {
                        runner: this.id,
                        standby: true,
                    });
                    this.peers.dispatcher.do_send(RunnerReady {
                        runner: this.id,
                        pool: this.pool,
                        addr: ctx.address(),
                    });
                }
                Err(e) => {
                    this.failures += 1;
                    this.parts
                        .metrics
                        .pod_failures
                        .with_label_values(&[e.metric_label()])
                        .inc();
                    let backoff = Duration::from_millis((50u64 << this.failures.min(7)).min(5_000));
                    tracing::error!(runner = this.id, error = %e, ?backoff, "could not make a standby pod");
                    if this.failures >= 3 {
                        this.peers.dispatcher.do_send(RunnerFailing {
                            runner: this.id,
                            error: e.to_string(),
                        });
                    }
                    ctx.run_later(backoff, |this, ctx| this.make_pod(ctx));
                }
            }
        });
    }
}

impl Handler<RunJob> for PodRunner {
    type Result = ();
    fn handle(&mut self, msg: RunJob, ctx: &mut Context<Self>) {
        guard(self, ctx, "pod_runner", |this, ctx| {
            let p = this.parts.settings.inject_panic_probability;
            if p > 0.0 && this.chance(p) {
                panic!("injected pod runner panic (inject_panic_probability = {p})");
            }
            let key = msg.key;
            let job = msg.job;
            this.cache_key = None;
            this.laid_in = None;
            let cache_key = this.parts.compile_cache.as_ref().and_then(|_| {
                let version = this
                    .parts
                    .registry
                    .available
                    .iter()
                    .find(|l| l.name == job.language)
                    .map(|l| l.version.as_str())
                    .unwrap_or("");
                job.prebuilt
                    .is_none()
                    .then(|| crate::compile_cache::CompileCache::key(&job, version))
                    .flatten()
            });
            match (this.parts.compile_cache.clone(), cache_key) {
                (Some(cache), Some(k)) => {
                    // The entry (megabytes for a JVM build) is read off the actors' thread; the
                    // job is this runner's meanwhile, so a restart hands it back.
                    this.current = Some(key.clone());
                    let generation = this.generation;
                    let lookup = tokio::task::spawn_blocking(move || {
                        let cached = cache.get(&k);
                        (k, cached)
                    });
                    ctx.spawn(actix::fut::wrap_future(lookup).map(
                        move |looked_up, this: &mut PodRunner, ctx| {
                            if this.generation != generation || this.current.as_ref() != Some(&key)
                            {
                                return;
                            }
                            this.current = None;
                            // A lookup that panicked runs the job without the cache.
                            let cached = looked_up.ok();
                            guard(this, ctx, "pod_runner", |this, ctx| {
                                this.start(key, job, cached, ctx)
                            });
                        },
                    ));
                }
                _ => this.start(key, job, None, ctx),
            }
        });
    }
}

impl PodRunner {
    /// Runs `job` on this runner's standby pod, after its compile-cache lookup (`cached`: the
    /// key and what the cache holds for it; `None` when the cache is off or the job has no
    /// build to cache): a compile error answers at once, a build is laid in, a miss asks the
    /// pod for what the compile step makes.
    fn start(
        &mut self,
        key: JobKey,
        mut job: Job,
        cached: Option<(String, Option<crate::compile_cache::Cached>)>,
        ctx: &mut Context<Self>,
    ) {
        if let Some((k, cached)) = cached {
            match cached {
                Some(crate::compile_cache::Cached::Built(a)) => {
                    // A test-case set's first test hands the build back with its
                    // outcome, as if just built, for the set's other tests.
                    if key.test.is_some() {
                        self.laid_in = Some(a.clone());
                    }
                    job.prebuilt = Some(a);
                }
                Some(failed) => {
                    self.peers.dispatcher.do_send(JobDone {
                        runner: self.id,
                        key,
                        result: Ok(Finished::of(failed.failed_outcome().expect("a failure"))),
                    });
                    // The standby pod was not used: this runner is ready again (after
                    // the JobDone, which the dispatcher reads first).
                    if self.pod.is_some() {
                        self.peers.dispatcher.do_send(RunnerReady {
                            runner: self.id,
                            pool: self.pool,
                            addr: ctx.address(),
                        });
                    }
                    return;
                }
                None => {
                    job.keep_artifact = true;
                    self.cache_key = Some(k);
                }
            }
        }
        let Some(pod) = self.pod.take() else {
            self.peers.dispatcher.do_send(JobDone {
                runner: self.id,
                key,
                result: Err(PodError::Lost(Lost::Internal(
                    "the runner had no standby pod".into(),
                ))),
            });
            return;
        };
        self.peers.pool.do_send(PodStatus {
            runner: self.id,
            standby: false,
        });
        let limits = &job.run.limits;
        let compile_ms = job
            .compile
            .as_ref()
            .map(|c| c.limits.wall_time_ms)
            .unwrap_or(0);
        let budget = Duration::from_millis(
            limits.wall_time_ms + compile_ms + self.parts.settings.watchdog_grace_ms,
        );
        let (watchdog, runner, killer) = (self.peers.watchdog.clone(), self.id, pod.killer());
        let watched = key.clone();
        let started = Box::new(move || {
            let now = Instant::now();
            watchdog.do_send(Watch {
                runner,
                key: watched,
                killer,
                deadline: now + budget,
                started: now,
            });
        });
        self.current = Some(key.clone());
        let me = ctx.address();
        let run = pod.run_watched(job, started);
        actix::spawn(async move {
            let result = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(PodError::Lost(Lost::Internal(
                    "running the pod panicked".into(),
                ))),
            };
            me.do_send(Ran { key, result });
        });
    }
}

impl Handler<Ran> for PodRunner {
    type Result = ();
    fn handle(&mut self, msg: Ran, ctx: &mut Context<Self>) {
        guard(self, ctx, "pod_runner", |this, ctx| {
            this.peers.watchdog.do_send(Unwatch {
                runner: this.id,
                key: Some(msg.key.clone()),
            });
            if this.current.as_ref() != Some(&msg.key) {
                return; // from before a restart; the dispatcher has already moved the job on
            }
            this.current = None;
            let mut result = msg.result;
            if let (Ok(finished), Some(a)) = (&mut result, this.laid_in.take()) {
                finished.artifact.get_or_insert(a);
            }
            if let Ok(finished) = &mut result {
                // Only a test-case set's first test needs its build back (for the set's other
                // tests); otherwise the cache's copy is the only one.
                let leave = msg.key.test.is_some();
                let keep = this.cache_key.take().and_then(|k| {
                    Some((
                        k,
                        crate::compile_cache::Cached::from_finished(finished, leave)?,
                    ))
                });
                if let (Some(cache), Some((k, entry))) = (this.parts.compile_cache.clone(), keep) {
                    // Off the actors' thread: an entry can be megabytes.
                    tokio::task::spawn_blocking(move || cache.put(&k, &entry));
                }
            }
            this.peers.dispatcher.do_send(JobDone {
                runner: this.id,
                key: msg.key,
                result,
            });
            this.make_pod(ctx);
        });
    }
}
