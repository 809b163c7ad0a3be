//! PoolKeeper: starts one supervised PodRunner per standby pod of each pool and keeps count of how many pods
//! are ready. Each runner replaces its own pod after every job; the keeper holds their addresses,
//! which is what lets the supervisor restart a runner that stopped.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;

use super::pod_runner::PodRunner;
use super::{Connect, TreeParts};

/// A runner's pod became ready (`standby`) or was taken or lost.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PodStatus {
    pub runner: usize,
    pub standby: bool,
}

pub struct PoolKeeper {
    parts: Arc<TreeParts>,
    runners: Vec<Addr<PodRunner>>,
    standby: HashSet<usize>,
}

impl PoolKeeper {
    pub fn new(parts: Arc<TreeParts>) -> PoolKeeper {
        PoolKeeper {
            parts,
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
        self.parts.count_restart("pool_keeper");
    }
}

impl Handler<Connect> for PoolKeeper {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if !self.runners.is_empty() {
            return;
        }
        self.parts
            .metrics
            .pool_size
            .set(self.parts.total_runners() as i64);
        for pool in 0..self.parts.pools.len() {
            for _ in 0..self.parts.runners_in(pool) {
                let id = self.runners.len();
                let (parts, peers) = (self.parts.clone(), msg.0.clone());
                self.runners.push(actix::Supervisor::start(move |_| {
                    PodRunner::new(id, pool, parts, peers)
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
        self.parts
            .standby
            .store(self.standby.len(), Ordering::Relaxed);
        self.parts
            .metrics
            .pool_standby
            .set(self.standby.len() as i64);
    }
}
