//! Local pods: each standby pod is a `kiln-runner` that is pid 1 of its own pid, mount, network,
//! IPC and UTS namespaces (plus a user namespace when Kiln runs unprivileged), with a cgroup of
//! its own for the program. The pod is built before any job needs it; a job costs only its own
//! program.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use super::cores::Cores;
use super::fork_server::{ForkServer, ForkServerSpec};
use super::{BoxFuture, Finished, Lost, PodBackend, PodError, PodKiller, StandbyPod};
use crate::job::Job;
use crate::languages::Registry;
use crate::sandbox::cgroup::{CgroupLayout, RemoveGroup};
use crate::{Locked as _, RwLocked as _};
use kiln_wire::frame::{encode, read_frame_async};
use kiln_wire::report::RunnerReport;
use kiln_wire::setup::{CgroupPaths, ForkedCommand, PodSetup};

/// Settings of the local backend.
#[derive(Clone, Debug)]
pub struct LocalSettings {
    pub runner: PathBuf,
    pub tmpfs_bytes: u64,
    /// Host paths every pod sees read-only (system dirs plus the toolchains found at start).
    pub read_only: Vec<PathBuf>,
    /// Entries of the host's /etc that pods see, read-only (the allow-list, resolved); the rest
    /// of a pod's /etc is written by Kiln.
    pub etc: Vec<PathBuf>,
    pub masked: Vec<PathBuf>,
    /// Unprivileged identity for programs when Kiln runs as root.
    pub sandbox_user: (u32, u32),
    /// Operator's choice to let programs use the host's network; off, pods get an empty network
    /// namespace.
    pub network: bool,
    /// A language whose runs are forked from a resident interpreter, when it is available.
    pub fork_server: Option<ForkServerSpec>,
}

impl LocalSettings {
    /// System directories a program needs; the toolchains outside them are added by the caller.
    /// Not /etc: pods get an /etc of their own (sandbox/etc.rs).
    pub fn default_read_only() -> Vec<PathBuf> {
        [
            "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
        ]
        .iter()
        .map(PathBuf::from)
        .collect()
    }

    /// What pods see of the host for these languages: the system dirs and toolchains, and the
    /// /etc entries of `pod_etc` plus those the languages name.
    pub fn host_view(registry: &Registry, pod_etc: &[String]) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut read_only = LocalSettings::default_read_only();
        read_only.extend(registry.mounts());
        let mut patterns = pod_etc.to_vec();
        patterns.extend(registry.etc_patterns());
        let etc = crate::sandbox::etc::resolve(std::path::Path::new("/etc"), &patterns);
        (read_only, etc)
    }

    /// Hidden even when an operator's allow-list or a toolchain mount would show them.
    pub fn default_masked() -> Vec<PathBuf> {
        [
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers",
            "/etc/ssh",
            "/usr/local/etc",
        ]
        .iter()
        .map(PathBuf::from)
        .collect()
    }
}

/// The last 32 jobs, one bit each: which ones the fork server could serve (`forked`), which
/// ones it could not (`execd`) and which ones had a compile step (`compiled`); all set at start.
/// Pods ask the server for a process only while some recent job could use it, fork the runner's
/// own zygote only while some recent job needed that, and a second one for the run step only
/// while some recent job compiled: a workload of one kind does not pay for the other kind's
/// processes in every pod.
pub struct JobHistory {
    forked: std::sync::atomic::AtomicU32,
    execd: std::sync::atomic::AtomicU32,
    compiled: std::sync::atomic::AtomicU32,
}

impl Default for JobHistory {
    fn default() -> JobHistory {
        JobHistory {
            forked: std::sync::atomic::AtomicU32::new(u32::MAX),
            execd: std::sync::atomic::AtomicU32::new(u32::MAX),
            compiled: std::sync::atomic::AtomicU32::new(u32::MAX),
        }
    }
}

impl JobHistory {
    fn record(&self, forkable: bool, compiled: bool) {
        let push = |bits: &std::sync::atomic::AtomicU32, bit: bool| {
            let _ = bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some((h << 1) | u32::from(bit))
            });
        };
        push(&self.forked, forkable);
        push(&self.execd, !forkable);
        push(&self.compiled, compiled);
    }

    fn recent(bits: &std::sync::atomic::AtomicU32) -> bool {
        bits.load(Ordering::Relaxed) != 0
    }
}

/// Makes local standby pods.
pub struct LocalBackend {
    settings: LocalSettings,
    cgroups: CgroupLayout,
    rootless: bool,
    live: LivePods,
    /// One empty network namespace that all pods join, when it is safe to share: making and
    /// tearing down a network namespace per pod is a quarter of a pod's cost. Pods in it have no
    /// interface up, no inet or netlink sockets (seccomp), and cannot reach each other's abstract
    /// UNIX sockets (landlock ABI 6 scoping); without landlock ABI 6, each pod gets its own.
    shared_netns: Option<Arc<std::fs::File>>,
    /// Warm caches laid into pods made from now on: (host directory, path inside the pod).
    overlays: std::sync::RwLock<Vec<(PathBuf, PathBuf)>>,
    /// The Python fork server, or why there is none; `None` when none was asked for.
    fork_server: Option<Result<ForkServer, String>>,
    /// What the last 32 jobs needed, to give standby pods the processes likely used.
    job_history: Arc<JobHistory>,
    /// Cores running jobs are pinned to: those this process may run on.
    cores: Option<Arc<Cores>>,
}

/// Makes an empty network namespace and returns a handle that keeps it alive.
fn offline_network_namespace() -> std::io::Result<std::fs::File> {
    // unshare(CLONE_NEWNET) moves only the calling thread: do it on a thread of its own.
    std::thread::spawn(|| {
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::File::open("/proc/thread-self/ns/net")
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Pods not yet retired, by runner pid, so that shutdown can end them all.
type LivePods = Arc<Mutex<std::collections::HashMap<i32, Option<CgroupPaths>>>>;

/// Pod names are unique per process, however many backends it makes.
static NEXT_POD: AtomicU64 = AtomicU64::new(0);

impl LocalBackend {
    /// Detects what this host offers, removes pods left by an earlier crash, and checks that the
    /// runner binary exists. Fails with the step that did not work.
    pub fn new(settings: LocalSettings) -> Result<LocalBackend, PodError> {
        if !settings.runner.is_file() {
            return Err(PodError::Create {
                step: "find kiln-runner".into(),
                error: format!(
                    "{} does not exist; build it with `cargo build --bins`",
                    settings.runner.display()
                ),
            });
        }
        let rootless = unsafe { libc::geteuid() } != 0;
        let mut cgroups = CgroupLayout::detect();
        if !matches!(cgroups, CgroupLayout::Unavailable { .. }) {
            // Prove that pod groups can really be made here (an unprivileged user usually cannot).
            let probe = format!(
                "pod-{}-probe{}",
                std::process::id(),
                NEXT_POD.fetch_add(1, Ordering::Relaxed)
            );
            let usable = cgroups
                .prepare()
                .and_then(|()| cgroups.create_pod_group(&probe))
                .and_then(|g| match g {
                    Some(g) => g.remove(),
                    None => Ok(()),
                });
            if let Err(e) = usable {
                cgroups = CgroupLayout::Unavailable {
                    reason: format!("cannot create cgroups for pods: {e}"),
                };
            }
        }
        for stale in cgroups.leftover_pod_groups() {
            let _ = stale.remove();
        }
        let shared_netns =
            if rootless || settings.network || crate::sandbox::landlock::abi_version() < 6 {
                None
            } else {
                offline_network_namespace().ok().map(Arc::new)
            };
        let cores = Cores::of_this_process();
        let mut backend = LocalBackend {
            settings,
            cores,
            cgroups,
            rootless,
            live: LivePods::default(),
            shared_netns,
            overlays: Default::default(),
            fork_server: None,
            job_history: Arc::new(JobHistory::default()),
        };
        backend.fork_server = backend
            .settings
            .fork_server
            .clone()
            .map(|spec| backend.start_fork_server(spec));
        Ok(backend)
    }

    /// The fork server needs root (it enters pods' namespaces) and Kiln's library next to the
    /// runner (`libkiln_runner.so`, built with it).
    fn start_fork_server(&self, spec: ForkServerSpec) -> Result<ForkServer, String> {
        if self.rootless {
            return Err("needs root".into());
        }
        // Cargo leaves the library in deps/ when only a binary was asked for (`cargo run`).
        let beside = self.settings.runner.with_file_name("libkiln_runner.so");
        let library = [
            beside.clone(),
            self.settings
                .runner
                .with_file_name("deps")
                .join("libkiln_runner.so"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{} does not exist; build it with `cargo build --release`",
                beside.display()
            )
        })?;
        ForkServer::start(spec, &self.settings.runner, &library, self.setup_for(None))
    }

    /// The fork server's pid while it runs (pods then get a process forked from it).
    pub fn fork_server_pid(&self) -> Option<u32> {
        self.running_fork_server().and_then(|s| s.pid())
    }

    fn running_fork_server(&self) -> Option<&ForkServer> {
        self.fork_server.as_ref().and_then(|r| r.as_ref().ok())
    }

    pub fn cgroups(&self) -> &CgroupLayout {
        &self.cgroups
    }

    /// Lays `host_dir` (read-only, with a private writable layer) at `pod_path` in every pod made
    /// from now on. Only for root: overlays in user namespaces are not used.
    pub fn add_overlay(&self, host_dir: PathBuf, pod_path: PathBuf) -> bool {
        if self.rootless {
            return false;
        }
        self.overlays.write_locked().push((host_dir, pod_path));
        true
    }

    fn setup_for(&self, cgroup: Option<CgroupPaths>) -> PodSetup {
        PodSetup {
            cgroup,
            tmpfs_bytes: self.settings.tmpfs_bytes,
            read_only: [&self.settings.read_only[..], &self.settings.etc[..]].concat(),
            masked: self.settings.masked.clone(),
            hostname: "kiln".into(),
            sandbox_user: (!self.rootless).then_some(self.settings.sandbox_user),
            overlays: self.overlays.read_locked().clone(),
            fork_server: None,
            local_zygotes: 1,
        }
    }
}

impl PodBackend for LocalBackend {
    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "local pods: namespaces pid, mount, ipc, uts{}{}; seccomp; landlock; rlimits; {}",
            if self.settings.network {
                ""
            } else {
                ", network"
            },
            if self.rootless { ", user" } else { "" },
            self.cgroups.describe()
        )];
        if let Some(weaker) =
            crate::sandbox::landlock::weaker(crate::sandbox::landlock::abi_version())
        {
            lines.push(weaker);
        }
        let host_etc: Vec<String> = self
            .settings
            .etc
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        lines.push(format!(
            "pods' /etc: written by Kiln: {}; from the host, read-only: {}",
            crate::sandbox::etc::SYNTHESIZED.join(", "),
            if host_etc.is_empty() {
                "nothing".to_string()
            } else {
                host_etc.join(", ")
            }
        ));
        if self.settings.network {
            lines.push("NETWORK ENABLED: programs share the host's network (limits.default.network = true)".into());
        } else if self.shared_netns.is_some() {
            lines.push("network: one shared namespace with no interface up; pods kept apart by seccomp and landlock scoping".into());
        }
        match (&self.fork_server, &self.settings.fork_server) {
            (Some(Ok(server)), _) => lines.push(format!(
                "{}: runs fork from a resident interpreter (fork server pid {})",
                server.spec.language,
                server.pid().unwrap_or(0)
            )),
            (Some(Err(why)), Some(spec)) => lines.push(format!(
                "{}: no fork server ({why}); each run starts the interpreter",
                spec.language
            )),
            _ => {}
        }
        if self.rootless {
            lines.push("running unprivileged: programs run as the mapped user of a user namespace, not as a separate uid".into());
        }
        if let CgroupLayout::Unavailable { reason } = &self.cgroups {
            lines.push(format!(
                "WEAKER LIMITS: {reason}. Memory is capped with RLIMIT_AS (JVM and V8 programs may fail to start), \
                 processes with RLIMIT_NPROC (per user, shared by all pods), CPU with RLIMIT_CPU per process"
            ));
        }
        lines
    }

    fn shutdown(&self) {
        if let Some(server) = self.running_fork_server() {
            server.stop();
        }
        let pods: Vec<(i32, Option<CgroupPaths>)> = self.live.locked().drain().collect();
        for (pid, _) in &pods {
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        for (pid, cgroup) in pods {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if let Some(c) = cgroup {
                let _ = c.remove();
            }
        }
    }

    fn create(&self, _pool: usize) -> BoxFuture<'static, Result<Box<dyn StandbyPod>, PodError>> {
        let n = NEXT_POD.fetch_add(1, Ordering::Relaxed);
        let id = format!("pod-{}-{n}", std::process::id());
        let cgroup = match self.cgroups.create_pod_group(&id) {
            Ok(c) => c,
            Err(e) => {
                let error = PodError::Create {
                    step: "create the pod's cgroup".into(),
                    error: e.to_string(),
                };
                return Box::pin(async move { Err(error) });
            }
        };
        let mut setup = self.setup_for(cgroup.clone());
        let history = &self.job_history;
        let wanted = JobHistory::recent(&history.forked);
        let fork_conn = self
            .running_fork_server()
            .filter(|_| wanted)
            .and_then(|server| {
                let conn = server.connect()?;
                setup.fork_server = Some(server.spec.command.clone());
                Some(conn)
            });
        // With a forked process coming, the runner's own is made only while some recent job
        // needed one (a job that needs one and finds none forks it then); a second one for the
        // run step while some recent job compiled.
        let own = fork_conn.is_none() || JobHistory::recent(&history.execd);
        setup.local_zygotes = match (own, JobHistory::recent(&history.compiled)) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        let net = match (&self.shared_netns, self.settings.network) {
            (_, true) => Network::Host,
            (Some(ns), false) => Network::Join(ns.clone()),
            (None, false) => Network::Own,
        };
        let runner = self.settings.runner.clone();
        let rootless = self.rootless;
        let live = self.live.clone();
        let forkable = self.running_fork_server().map(|s| s.spec.command.clone());
        let history = self.job_history.clone();
        let cores = self.cores.clone();
        Box::pin(async move {
            let spawned = spawn_in_namespaces(&runner, rootless, &net, fork_conn).map_err(|e| {
                if let Some(c) = &cgroup {
                    let _ = c.remove();
                }
                PodError::Create {
                    step: "clone into new namespaces".into(),
                    error: e.to_string(),
                }
            })?;
            live.locked().insert(spawned.pid, cgroup.clone());
            let mut pod = LocalPod {
                id,
                pid: spawned.pid,
                to_runner: spawned.to_runner,
                from_runner: spawned.from_runner,
                cgroup,
                reaped: Arc::new(Mutex::new(false)),
                live,
                forkable,
                history,
                cores,
            };
            match pod.handshake(&setup).await {
                Ok(()) => Ok(Box::new(pod) as Box<dyn StandbyPod>),
                Err(e) => {
                    pod.retire().await;
                    Err(e)
                }
            }
        })
    }
}

/// One local standby pod.
pub struct LocalPod {
    id: String,
    pid: i32,
    to_runner: pipe::Sender,
    from_runner: pipe::Receiver,
    cgroup: Option<CgroupPaths>,
    /// Set once the runner is being reaped: from then on its pid may belong to someone else, so
    /// a `PodKiller` must no longer signal it.
    reaped: Arc<Mutex<bool>>,
    live: LivePods,
    /// The fork server's command.
    forkable: Option<ForkedCommand>,
    /// The backend's history of recent jobs.
    history: Arc<JobHistory>,
    /// The host's cores, to pin this pod to its share of them while its job runs.
    cores: Option<Arc<Cores>>,
}

impl LocalPod {
    async fn handshake(&mut self, setup: &PodSetup) -> Result<(), PodError> {
        let fail = |step: &str, e: String| PodError::Create {
            step: step.into(),
            error: e,
        };
        let frame = encode(setup).map_err(|e| fail("encode the pod setup", e.to_string()))?;
        self.to_runner
            .write_all(&frame)
            .await
            .map_err(|e| fail("send the pod setup to kiln-runner", e.to_string()))?;
        match self.read_report().await {
            Ok(RunnerReport::Ready) => Ok(()),
            Ok(RunnerReport::SetupFailed { step, error }) => Err(PodError::Create { step, error }),
            Ok(other) => Err(fail(
                "wait for the pod to be ready",
                format!("unexpected report {other:?}"),
            )),
            Err(e) => Err(fail("wait for the pod to be ready", e.to_string())),
        }
    }

    /// Sends a session's input to the runner, on a writer of its own (a dup of the job pipe), as
    /// it comes; ends with the job.
    fn relay_inputs(
        &self,
        mut inputs: tokio::sync::mpsc::UnboundedReceiver<crate::sessions::Input>,
    ) -> Result<tokio::task::JoinHandle<()>, PodError> {
        use std::os::fd::AsFd;
        let fd = self.to_runner.as_fd().try_clone_to_owned().map_err(|e| {
            PodError::Lost(Lost::Internal(format!("duplicating the job pipe: {e}")))
        })?;
        let mut writer = pipe::Sender::from_owned_fd(fd).map_err(|e| {
            PodError::Lost(Lost::Internal(format!("the job pipe's duplicate: {e}")))
        })?;
        Ok(tokio::spawn(async move {
            while let Some(input) = inputs.recv().await {
                let Ok(frame) = encode(&input) else {
                    continue;
                };
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            // The client is gone: the program's stdin ends.
            if let Ok(frame) = encode(&crate::sessions::Input::CloseStdin) {
                let _ = writer.write_all(&frame).await;
            }
        }))
    }

    /// The runner's next report; a closed or broken pipe is the connection lost, a frame that
    /// does not read as a report the protocol broken.
    async fn read_report(&mut self) -> Result<RunnerReport, Lost> {
        use kiln_wire::frame::FrameError;
        read_frame_async(&mut self.from_runner)
            .await
            .map_err(|e| match e {
                e if e.is_closed() => {
                    Lost::Connection(format!("kiln-runner closed its output ({e})"))
                }
                FrameError::TooBig(len) => {
                    Lost::Protocol(format!("kiln-runner sent a frame of {len} bytes"))
                }
                e @ FrameError::Io(_) => Lost::Connection(e.to_string()),
                e => Lost::Protocol(e.to_string()),
            })
    }

    /// Kills the runner (and with it the whole pod), reaps it and removes the cgroup.
    async fn retire(&mut self) {
        if !std::mem::replace(&mut *self.reaped.locked(), true) {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let pid = self.pid;
            let _ = tokio::task::spawn_blocking(move || {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
            })
            .await;
        }
        if let Some(c) = self.cgroup.take() {
            let _ = tokio::task::spawn_blocking(move || c.remove()).await;
        }
        self.live.locked().remove(&self.pid);
    }
}

impl StandbyPod for LocalPod {
    fn id(&self) -> &str {
        &self.id
    }

    fn killer(&self) -> PodKiller {
        let pid = self.pid;
        let reaped = self.reaped.clone();
        PodKiller::new(move || {
            let reaped = reaped.locked();
            if !*reaped {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    }

    fn run(mut self: Box<Self>, job: Job) -> BoxFuture<'static, Result<Finished, PodError>> {
        let forkable = self.forkable.as_ref().is_some_and(|c| c.serves(&job));
        self.history.record(forkable, job.compiles());
        Box::pin(async move {
            let result = async {
                // Held until the outcome is back: these cores count this job as theirs.
                // The runner is pinned (one system call, no cgroup write that would wait on pods
                // being made); it pins each step's process to its own cores before the exec.
                let _pinned = self.cores.as_ref().map(|cores| {
                    let wanted = job
                        .run
                        .limits
                        .cpus
                        .max(job.compile.as_ref().map_or(1, |c| c.limits.cpus));
                    let pinned = cores.take(wanted);
                    if let Err(error) = crate::sandbox::affinity::set(self.pid, &pinned.taken) {
                        // Not fatal: the job then runs on shared cores.
                        tracing::warn!(pid = self.pid, %error, "pinning a pod's runner");
                    }
                    pinned
                });
                // An interactive session for this submission: its input goes to the runner after
                // the job frame, its output comes back in Output frames before the outcome.
                let session = crate::sessions::take(&job.id);
                let mut job = job;
                job.interactive = session.is_some();
                let frame = encode(&job).map_err(|e| {
                    PodError::Lost(Lost::Internal(format!("encoding the job: {e}")))
                })?;
                self.to_runner.write_all(&frame).await.map_err(|e| {
                    PodError::Lost(Lost::Connection(format!("sending the job: {e}")))
                })?;
                let (outputs, relay) = match session {
                    Some(ends) => (Some(ends.outputs), Some(self.relay_inputs(ends.inputs)?)),
                    None => (None, None),
                };
                let mut timing = None;
                let outcome = loop {
                    match self.read_report().await {
                        Ok(RunnerReport::Output { stream, data }) => {
                            if let Some(o) = &outputs {
                                let _ = o.send((stream, data));
                            }
                        }
                        Ok(RunnerReport::Timing(t)) => timing = Some(t),
                        Ok(report) => {
                            break report.into_finished(timing).map_err(|other| {
                                PodError::Lost(Lost::Protocol(format!(
                                    "unexpected report {other:?}"
                                )))
                            })
                        }
                        Err(lost) => break Err(PodError::Lost(lost)),
                    }
                };
                if let Some(relay) = relay {
                    relay.abort();
                }
                outcome
            }
            .await;
            // The outcome goes back now; tearing the pod down is nobody's latency.
            tokio::spawn(async move { self.retire().await });
            result
        })
    }

    fn destroy(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.retire().await })
    }
}

impl Drop for LocalPod {
    fn drop(&mut self) {
        if !std::mem::replace(&mut *self.reaped.locked(), true) {
            // Dropped without retire (a panicking owner): kill and reap on a helper thread.
            let pid = self.pid;
            let cgroup = self.cgroup.take();
            let live = self.live.clone();
            unsafe { libc::kill(pid, libc::SIGKILL) };
            std::thread::spawn(move || {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if let Some(c) = cgroup {
                    let _ = c.remove();
                }
                live.locked().remove(&pid);
            });
        }
    }
}

/// Which network namespace a new pod gets.
enum Network {
    /// The host's (the operator enabled networking).
    Host,
    /// A new, empty one of its own.
    Own,
    /// The shared empty one.
    Join(Arc<std::fs::File>),
}

struct Spawned {
    pid: i32,
    to_runner: pipe::Sender,
    from_runner: pipe::Receiver,
}

/// What the cloned child needs, prepared by the parent: between clone and exec the child shares
/// the parent's memory (CLONE_VM) and only makes system calls.
struct ChildArgs {
    path: CString,
    argv: [*const libc::c_char; 3],
    envp: [*const libc::c_char; 2],
    uid_map: Option<(Vec<u8>, Vec<u8>)>,
    job_read: i32,
    report_write: i32,
    /// A network namespace to join, or -1.
    netns: i32,
    /// A connection to the fork server, given to the runner as fd 3, or -1.
    fork_conn: i32,
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    unsafe {
        let a = &*(arg as *const ChildArgs);
        if let Some((uid_map, gid_map)) = &a.uid_map {
            write_proc_file(c"/proc/self/setgroups", b"deny");
            write_proc_file(c"/proc/self/uid_map", uid_map);
            write_proc_file(c"/proc/self/gid_map", gid_map);
        }
        if a.netns >= 0 && libc::setns(a.netns, libc::CLONE_NEWNET) != 0 {
            libc::_exit(125);
        }
        if libc::dup2(a.job_read, 0) < 0 || libc::dup2(a.report_write, 1) < 0 {
            libc::_exit(126);
        }
        if a.fork_conn >= 0 {
            // dup2 onto itself would keep close-on-exec.
            let fd = crate::runner::pyfork::POD_CONNECTION_FD;
            let r = if a.fork_conn == fd {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(a.fork_conn, fd)
            };
            if r < 0 {
                libc::_exit(126);
            }
        }
        libc::execve(a.path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
        libc::_exit(127)
    }
}

/// Clones a child into new namespaces and execs `kiln-runner pod` in it. Like posix_spawn, the
/// child borrows the parent's memory until it execs (CLONE_VM | CLONE_VFORK): copying the page
/// tables of a large multi-threaded server for every pod would cost more than the pod itself.
fn spawn_in_namespaces(
    runner: &std::path::Path,
    rootless: bool,
    network: &Network,
    fork_conn: Option<std::os::fd::OwnedFd>,
) -> std::io::Result<Spawned> {
    let (job_read, job_write) = crate::sandbox::pipe()?;
    let (report_read, report_write) = crate::sandbox::pipe()?;

    let argv0 = CString::new("kiln-runner").expect("no NUL");
    let argv1 = CString::new("pod").expect("no NUL");
    let env0 = CString::new("PATH=/usr/local/bin:/usr/bin:/bin").expect("no NUL");
    let uid = unsafe { libc::geteuid() };
    let gid = unsafe { libc::getegid() };
    let args = ChildArgs {
        path: crate::sandbox::setup::c_path(runner)?,
        argv: [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()],
        envp: [env0.as_ptr(), std::ptr::null()],
        uid_map: rootless.then(|| {
            (
                format!("0 {uid} 1").into_bytes(),
                format!("0 {gid} 1").into_bytes(),
            )
        }),
        job_read: job_read.as_raw_fd(),
        report_write: report_write.as_raw_fd(),
        netns: match network {
            Network::Join(ns) => ns.as_raw_fd(),
            _ => -1,
        },
        fork_conn: fork_conn.as_ref().map(|c| c.as_raw_fd()).unwrap_or(-1),
    };

    let mut flags = libc::CLONE_VM
        | libc::CLONE_VFORK
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    if !matches!(network, Network::Own) {
        flags &= !libc::CLONE_NEWNET;
    }
    let mut stack = vec![0u8; 64 * 1024];
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = ((top as usize) & !15) as *mut libc::c_void;
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            flags | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(stack); // CLONE_VFORK: the child has exec'd (or exited) by now
    drop(job_read);
    drop(report_write);
    Ok(Spawned {
        pid,
        to_runner: pipe::Sender::from_owned_fd(job_write)?,
        from_runner: pipe::Receiver::from_owned_fd(report_read)?,
    })
}

unsafe fn write_proc_file(path: &std::ffi::CStr, content: &[u8]) {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
    if fd >= 0 {
        libc::write(fd, content.as_ptr().cast(), content.len());
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_of_process_is_kept_ready_only_while_one_of_the_last_32_jobs_used_it() {
        let h = JobHistory::default();
        // At start every kind counts as recent.
        assert!(JobHistory::recent(&h.forked) && JobHistory::recent(&h.execd));
        for _ in 0..31 {
            h.record(true, false);
        }
        // 31 forkable jobs: the start's bits are not all pushed out yet.
        assert!(JobHistory::recent(&h.execd) && JobHistory::recent(&h.compiled));
        h.record(true, false);
        assert!(JobHistory::recent(&h.forked));
        assert!(
            !JobHistory::recent(&h.execd),
            "32 forkable jobs: no exec'd one among them"
        );
        assert!(!JobHistory::recent(&h.compiled));
        h.record(false, true);
        assert!(JobHistory::recent(&h.execd) && JobHistory::recent(&h.compiled));
        assert!(JobHistory::recent(&h.forked));
    }
}
