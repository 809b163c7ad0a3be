//! PoolKeeper: starts one supervised PodRunner per standby pod of each pool and keeps count of how many pods
//! are ready. Each runner replaces its own pod after every job; the keeper holds their addresses,
//! which is what lets the supervisor restart a runner that stopped.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;

use super::pod_runner::PodRunner;
use super::{Connect, Shared};

/// A runner's pod became ready (`standby`) or was taken or lost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PodStatus {
    pub runner: usize,
    pub standby: bool,
}

pub struct PoolKeeper {
    shared: Arc<Shared>,
    runners: Vec<Addr<PodRunner>>,
    standby: HashSet<usize>,
}

impl PoolKeeper {
    pub fn new(shared: Arc<Shared>) -> PoolKeeper {
        PoolKeeper {
            shared,
            runners: Vec::new(),
            standby: HashSet::new(),
        }
    }
}

impl Actor for PoolKeeper {
    type Context = Context<Self>;
}

impl actix::Supervised for PoolKeeper {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.shared.count_restart("pool_keeper");
    }
}

impl Handler<Connect> for PoolKeeper {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if !self.runners.is_empty() {
            return;
        }
        self.shared
            .metrics
            .pool_size
            .set(self.shared.total_runners() as i64);
        for pool in 0..self.shared.pools.len() {
            for _ in 0..self.shared.runners_in(pool) {
                let id = self.runners.len();
                let (shared, peers) = (self.shared.clone(), msg.0.clone());
                self.runners.push(actix::Supervisor::start(move |_| {
                    PodRunner::new(id, pool, shared, peers)
                }));
            }
        }
    }
}

impl Handler<PodStatus> for PoolKeeper {
    type Result = ();
    fn handle(&mut self, msg: PodStatus, _: &mut Context<Self>) {
        if msg.standby {
            self.standby.insert(msg.runner);
        } else {
            self.standby.remove(&msg.runner);
        }
        self.shared
            .standby
            .store(self.standby.len(), Ordering::Relaxed);
        self.shared
            .metrics
            .pool_standby
            .set(self.standby.len() as i64);
    }
}
