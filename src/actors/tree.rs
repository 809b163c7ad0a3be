//! ActorTree: starts every actor under a supervisor and hands each the others' addresses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Supervisor;

use super::dispatcher::{Dispatcher, InFlight};
use super::pool_keeper::PoolKeeper;
use super::queue_consumer::{Pause, QueueConsumer};
use super::result_publisher::ResultPublisher;
use super::timeout_watchdog::TimeoutWatchdog;
use super::{Connect, Peers, TreeParts};

/// The running actor tree. Dropping it does not stop the actors; `drain` does.
pub struct ActorTree {
    pub peers: Peers,
    pub parts: Arc<TreeParts>,
}

impl ActorTree {
    /// Starts the actor tree on the current actix system.
    pub fn start(parts: Arc<TreeParts>) -> ActorTree {
        let s = parts.clone();
        let publisher = Supervisor::start(move |_| ResultPublisher::new(s));
        let s = parts.clone();
        let watchdog = Supervisor::start(move |_| TimeoutWatchdog::new(s));
        let s = parts.clone();
        let dispatcher = Supervisor::start(move |_| Dispatcher::new(s));
        let s = parts.clone();
        let consumer = Supervisor::start(move |_| QueueConsumer::new(s));
        let s = parts.clone();
        let pool = Supervisor::start(move |_| PoolKeeper::new(s));
        let peers = Peers {
            consumer,
            dispatcher,
            pool,
            watchdog,
            publisher,
        };
        peers.publisher.do_send(Connect(peers.clone()));
        peers.watchdog.do_send(Connect(peers.clone()));
        peers.dispatcher.do_send(Connect(peers.clone()));
        peers.consumer.do_send(Connect(peers.clone()));
        peers.pool.do_send(Connect(peers.clone()));
        ActorTree { peers, parts }
    }

    /// Stops taking work and waits up to `grace` for running jobs to finish. Jobs still running
    /// after that stay in the queue's journal and run again after restart.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.peers.consumer.do_send(Pause);
        let until = Instant::now() + grace;
        loop {
            let left = self.peers.dispatcher.send(InFlight).await.unwrap_or(0);
            if left == 0 || Instant::now() >= until {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
