//! TimeoutWatchdog: the backstop behind the runner's own limits. Every running job has a deadline
//! (its wall limits plus a grace); a job still running past it has a hung runner or pod, so the
//! watchdog kills the pod (a Kubernetes pod is deleted with grace period 0) and the job ends as
//! `time_limit_exceeded`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::dispatcher::Overran;
use super::{Connect, JobKey, Peers, TreeParts};
use crate::pods::PodKiller;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub runner: usize,
    pub key: JobKey,
    pub killer: PodKiller,
    pub deadline: Instant,
    pub started: Instant,
}

/// The runner's job ended (or, with `key: None`, whatever it held is gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    pub runner: usize,
    pub key: Option<JobKey>,
}

pub struct TimeoutWatchdog {
    parts: Arc<TreeParts>,
    peers: Option<Peers>,
    deadlines: HashMap<usize, Deadline>,
}

struct Deadline {
    key: JobKey,
    killer: PodKiller,
    at: Instant,
    started: Instant,
}

impl TimeoutWatchdog {
    pub fn new(parts: Arc<TreeParts>) -> TimeoutWatchdog {
        TimeoutWatchdog {
            parts,
            peers: None,
            deadlines: HashMap::new(),
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let overdue: Vec<usize> = self
            .deadlines
            .iter()
            .filter(|(_, d)| d.at <= now)
            .map(|(r, _)| *r)
            .collect();
        for runner in overdue {
            if let Some(d) = self.deadlines.remove(&runner) {
                tracing::warn!(id = %d.key.id, attempt = d.key.attempt, runner, "job overran its deadline; the watchdog kills its pod");
                self.parts.metrics.watchdog_kills.inc();
                d.killer.kill();
                if let Some(peers) = &self.peers {
                    peers.dispatcher.do_send(Overran {
                        runner,
                        key: d.key,
                        after_ms: now.duration_since(d.started).as_millis() as u64,
                    });
                }
            }
        }
    }
}

impl Actor for TimeoutWatchdog {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(100), |this, _| this.sweep());
    }
}

impl actix::Supervised for TimeoutWatchdog {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.count_restart("timeout_watchdog");
    }
}

impl Handler<Connect> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.peers = Some(msg.0);
    }
}

impl Handler<Watch> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        self.deadlines.insert(
            msg.runner,
            Deadline {
                key: msg.key,
                killer: msg.killer,
                at: msg.deadline,
                started: msg.started,
            },
        );
    }
}

impl Handler<Unwatch> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, msg: Unwatch, _: &mut Context<Self>) {
        let matches = match (&msg.key, self.deadlines.get(&msg.runner)) {
            (None, _) => true,
            (Some(k), Some(d)) => *k == d.key,
            (Some(_), None) => false,
        };
        if matches {
            self.deadlines.remove(&msg.runner);
        }
    }
}
