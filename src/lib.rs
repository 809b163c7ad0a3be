//! Kiln runs untrusted programs in pre-warmed, isolated pods and returns one result each.
//!
//! Where things are: a submission enters through `api` (HTTP) or a `queue`; the actors in
//! `actors` hold it until a pod from `pods` runs it with `kiln-runner` (`runner`), and the
//! result leaves through the queue's results side.

pub mod actors;
pub mod api;
pub mod bench;
pub mod bytes;
pub mod callback;
pub mod cli;
pub mod compile_cache;
pub mod config;
pub mod entry_point;
pub mod events;
pub mod job;
pub mod judge0;
pub mod languages;
pub mod metrics;
pub mod outcome;
pub mod pods;
pub mod queue;
pub mod result;
pub mod runner;
pub mod sandbox;
pub mod scheduler;
pub mod serve;
pub mod sessions;
pub mod submission;
pub mod warm;
