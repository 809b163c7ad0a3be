//! Shared by the integration tests: real local pods running the real `kiln-runner`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::languages::Registry;
use kiln::outcome::Outcome;
use kiln::pods::local::{LocalBackend, LocalSettings};
use kiln::pods::PodBackend;
use kiln::submission::{LimitPolicy, Submission};

pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry::load(None).expect("the built-in registry loads"))
}

pub fn runner_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln-runner"))
}

pub fn backend() -> LocalBackend {
    backend_with_fork_server(true)
}

/// A backend with or without the Python fork server (runs then exec the interpreter).
pub fn backend_with_fork_server(fork_server: bool) -> LocalBackend {
    backend_with(fork_server, false)
}

/// A backend with or without the fork server, and with or without the host's network.
pub fn backend_with(fork_server: bool, network: bool) -> LocalBackend {
    let mut settings = local_settings();
    settings.network = network;
    settings.fork_server = settings.fork_server.filter(|_| fork_server);
    LocalBackend::new(settings).expect("local backend starts")
}

/// The settings `kiln serve` would use here, for tests to change.
pub fn local_settings() -> LocalSettings {
    let (read_only, etc) =
        LocalSettings::host_view(registry(), &kiln::config::Settings::default().pod_etc);
    LocalSettings {
        runner: runner_path(),
        tmpfs_bytes: 512 << 20,
        read_only,
        etc,
        masked: LocalSettings::default_masked(),
        sandbox_user: (65534, 65534),
        network: false,
        fork_server: registry().fork_server(),
    }
}

/// Runs a submission in a fresh standby pod and returns what the runner reported.
pub async fn run(sub: Submission) -> Outcome {
    run_with(sub, &LimitPolicy::default()).await
}

/// Runs a submission in a new pod of `backend` (pods of one backend share what the backend shares).
pub async fn run_on(backend: &LocalBackend, sub: Submission) -> Outcome {
    let job = sub
        .resolve("test", registry(), &LimitPolicy::default())
        .expect("valid submission");
    let pod = backend.create(0).await.expect("standby pod");
    pod.run(job).await.expect("pod finished the job").outcome
}

/// Same, under a policy other than the default.
pub async fn run_with(sub: Submission, policy: &LimitPolicy) -> Outcome {
    let job = sub
        .resolve("test", registry(), policy)
        .expect("valid submission");
    let pod = backend().create(0).await.expect("standby pod");
    pod.run(job).await.expect("pod finished the job").outcome
}

pub fn source(language: &str, source: &str) -> Submission {
    Submission {
        language: language.into(),
        source: Some(source.into()),
        ..Default::default()
    }
}
