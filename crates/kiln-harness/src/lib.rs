//! What the integration tests, `kiln-bench` and the load tester share: a `kiln` process started
//! as a child ([`process`]) and the host figures a measurement reads ([`host`]).

pub mod host;
pub mod process;

pub use process::{KilnProcess, Spec, Stderr};
