//! The isolation layers a local pod is built from: namespaces and the pod filesystem (`setup`),
//! cgroups v1 and v2 (`cgroup`), and the system-call filter (`seccomp`).

pub mod cgroup;
pub mod seccomp;
pub mod setup;
