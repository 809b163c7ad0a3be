//! The `kiln` commands that start something: `kiln serve` (everything in one process),
//! `kiln api` and `kiln scheduler` (the two halves over Kafka), `kiln run` (one file, printed);
//! `startup` is what they build in common.

pub mod run;
pub mod scheduler;
pub mod serve;
pub mod startup;
