//! TimeoutWatchdog: the backstop behind the runner's own limits. Every running job has a deadline
//! (its wall limits plus a grace); a job still running past it has a hung runner or pod, so the
//! watchdog kills the pod and the job is redelivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{Connect, JobKey, Shared};
use crate::pods::PodKiller;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub runner: usize,
    pub key: JobKey,
    pub killer: PodKiller,
    pub deadline: Instant,
}

/// The runner's job ended (or, with `key: None`, whatever it held is gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unwatch {
    pub runner: usize,
    pub key: Option<JobKey>,
}

pub struct TimeoutWatchdog {
    shared: Arc<Shared>,
    deadlines: HashMap<usize, (JobKey, PodKiller, Instant)>,
}

impl TimeoutWatchdog {
    pub fn new(shared: Arc<Shared>) -> TimeoutWatchdog {
        TimeoutWatchdog {
            shared,
            deadlines: HashMap::new(),
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let overdue: Vec<usize> = self
            .deadlines
            .iter()
            .filter(|(_, (_, _, at))| *at <= now)
            .map(|(r, _)| *r)
            .collect();
        for runner in overdue {
            if let Some((key, killer, _)) = self.deadlines.remove(&runner) {
                tracing::warn!(id = %key.id, attempt = key.attempt, runner, "job overran its deadline; the watchdog kills its pod");
                self.shared.metrics.watchdog_kills.inc();
                killer.kill();
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
        self.shared.count_restart("timeout_watchdog");
    }
}

impl Handler<Connect> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, _: Connect, _: &mut Context<Self>) {}
}

impl Handler<Watch> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        self.deadlines
            .insert(msg.runner, (msg.key, msg.killer, msg.deadline));
    }
}

impl Handler<Unwatch> for TimeoutWatchdog {
    type Result = ();
    fn handle(&mut self, msg: Unwatch, _: &mut Context<Self>) {
        let matches = match (&msg.key, self.deadlines.get(&msg.runner)) {
            (None, _) => true,
            (Some(k), Some((held, _, _))) => k == held,
            (Some(_), None) => false,
        };
        if matches {
            self.deadlines.remove(&msg.runner);
        }
    }
}
