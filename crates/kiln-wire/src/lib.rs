//! The contract between Kiln's host and its runners, and nothing else: what a runner is given
//! (`setup::PodSetup`, then one `job::Job`), what it says back (`report::RunnerReport`, carrying
//! an `outcome::Outcome`), the bytes they carry (`bytes::Bytes`), the input of an interactive
//! run (`session::Input`), the greeting of the direct path into a Kubernetes pod (`direct`), and
//! the one frame format every side reads and writes (`frame`).
//!
//! The layouts here are also what journals and results topics hold; earlier layouts that are
//! still read live beside the current ones (`outcome::FirstOutcome`).

pub mod bytes;
pub mod direct;
pub mod frame;
pub mod job;
pub mod outcome;
pub mod report;
pub mod rules;
pub mod session;
pub mod setup;
