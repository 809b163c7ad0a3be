//! The integration tests that need no outside infrastructure and can share a host with each
//! other, in one test binary (one link of actix, kube and rdkafka instead of one per file).
//! Each file is a module; the helpers of `common/` are modules beside them. Tests that look at
//! the whole host (host_clean, zygotes, cpu_share), the VM, and the Kafka and Kubernetes suites
//! keep binaries of their own (listed in Cargo.toml), so nothing else runs while they look.

mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/tools.rs"]
mod tools;

mod admission;
mod api;
mod cli;
mod compile_cache;
mod engine;
mod fork_server;
mod judge0;
mod languages;
mod piston;
mod piston_ws;
mod playground;
mod resilience;
mod runner_direct;
mod runtimes_script;
mod test_sets;
