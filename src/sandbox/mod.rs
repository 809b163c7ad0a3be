//! The isolation layers a local pod is built from: namespaces and the pod filesystem (`setup`),
//! cgroups v1 and v2 (`cgroup`), the system-call filter (`seccomp`) and landlock (`landlock`).

pub mod cgroup;
pub mod landlock;
pub mod seccomp;
pub mod setup;
