//! Kubernetes pods behind the `PodBackend` seam. Each pool keeps standby runner pods made from a
//! pod template; a watcher (not polling) keeps this scheduler's view of them. A pod runner
//! reserves a Ready, unclaimed pod; when its job comes it claims the pod with a patch that carries
//! the resourceVersion it saw (the API server refuses it with 409 if anyone changed the pod
//! since, so two schedulers never run two jobs in one pod), hands the runner its one job frame
//! (over the pod network with the pod's own token, `kiln_wire::direct`; or, with `transport =
//! "exec"`, by exec'ing `kiln-runner exec` over the exec WebSocket), reads its report frames, and
//! deletes the pod. Pods carry an ownerReference to this scheduler's own Pod (in-cluster) or to a
//! ConfigMap per scheduler instance, so Kubernetes removes a dead scheduler's pods; a scheduler
//! also removes, at start, what an earlier life of itself left.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    AttachParams, AttachedProcess, DeleteParams, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{BoxFuture, Lost, PodBackend, PodError, PodKiller, Pool, StandbyPod};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::Locked as _;
use kiln_wire::frame::{encode, read_frame_async};
use kiln_wire::report::{Finished, RunnerReport};

pub const LABEL_ROLE: &str = "kiln.dev/role";
pub const LABEL_POOL: &str = "kiln.dev/pool";
pub const LABEL_INSTANCE: &str = "kiln.dev/instance";
pub const LABEL_CLAIMED_BY: &str = "kiln.dev/claimed-by";
pub const ANNOTATION_JOB: &str = "kiln.dev/job";

/// `[kubernetes]` in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct KubeSettings {
    /// Where runner pods live; the scheduler needs rights on pods there only.
    pub namespace: String,
    /// A kubeconfig file; unset: `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This scheduler's stable name (a StatefulSet pod name). Default: the host name.
    pub instance: Option<String>,
    /// How a job reaches its runner pod: `direct` (over the pod network, no API request) or
    /// `exec` (through the API server's exec WebSocket and the kubelet).
    pub transport: Transport,
    /// The port runners listen on for the direct path.
    pub runner_port: u16,
    /// What is exec'd in a runner pod on the exec path; it reads one job frame and writes one
    /// report frame.
    pub runner_command: Vec<String>,
    /// Runner image and its pull policy, for pools that do not name their own.
    pub image: String,
    pub image_pull_policy: String,
    /// A RuntimeClass for runner pods (gVisor's `gvisor`, Kata's `kata`), unset for the default.
    pub runtime_class: Option<String>,
    /// A Pod object as JSON to start runner pods from; Kiln adds its labels, owner and name, and
    /// always turns off the service account token. Unset: the hardened default in `pod_spec`.
    pub pod_template: Option<PathBuf>,
    /// Runner container resources (requests = limits), for pools that do not name their own.
    pub cpu: String,
    pub memory: String,
    /// The emptyDir work dir's sizeLimit.
    pub work_dir_size: String,
    /// A pod not Ready this long after it was created is deleted and replaced.
    pub ready_timeout_secs: u64,
    /// Pools; empty means one pool `default` serving every language.
    pub pools: Vec<PoolSettings>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            namespace: "kiln".into(),
            kubeconfig: None,
            instance: None,
            transport: Transport::Direct,
            runner_port: kiln_wire::direct::PORT,
            runner_command: vec!["kiln-runner".into(), "exec".into()],
            image: "kiln-runner:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            runtime_class: None,
            pod_template: None,
            cpu: "1".into(),
            memory: "512Mi".into(),
            work_dir_size: "256Mi".into(),
            ready_timeout_secs: 120,
            pools: Vec::new(),
        }
    }
}

/// How a job reaches its runner pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Straight to the runner over the pod network (`kiln_wire::direct`): the pod's token in
    /// its spec proves the scheduler; no API request and no stream through the kubelet.
    Direct,
    /// `kiln-runner exec` over the API server's exec WebSocket (through the kubelet): for
    /// clusters whose network keeps schedulers from reaching pods.
    Exec,
}

/// One pool: `[[kubernetes.pools]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolSettings {
    pub name: String,
    /// Canonical language names served; empty serves every language.
    pub languages: Vec<String>,
    /// Standby pods kept when idle, and the most kept when jobs wait.
    pub min: usize,
    pub max: usize,
    pub image: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            name: "default".into(),
            languages: Vec::new(),
            min: 2,
            max: 8,
            image: None,
            cpu: None,
            memory: None,
        }
    }
}

impl KubeSettings {
    pub fn pools(&self) -> Vec<PoolSettings> {
        if self.pools.is_empty() {
            vec![PoolSettings::default()]
        } else {
            self.pools.clone()
        }
    }

    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "host".into());
            dns_label(&host)
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for p in self.pools() {
            if p.max == 0 || p.min > p.max {
                return Err(format!(
                    "kubernetes pool {}: min ({}) must be at most max ({}), and max at least 1",
                    p.name, p.min, p.max
                ));
            }
            if dns_label(&p.name) != p.name {
                return Err(format!(
                    "kubernetes pool name {:?} must be a DNS label (a-z, 0-9, -)",
                    p.name
                ));
            }
            if !names.insert(p.name.clone()) {
                return Err(format!("kubernetes pool {} is named twice", p.name));
            }
        }
        if self.transport == Transport::Exec && self.runner_command.is_empty() {
            return Err("kubernetes.runner_command is empty".into());
        }
        if self.transport == Transport::Direct && self.runner_port == 0 {
            return Err("kubernetes.runner_port must be a port (1 to 65535)".into());
        }
        let instance = self.instance();
        if instance.is_empty() || instance.len() > 63 || dns_label(&instance) != instance {
            return Err(format!(
                "kubernetes.instance {instance:?} must be a DNS label of at most 63 characters"
            ));
        }
        Ok(())
    }
}

/// `s` lowercased with anything outside a-z, 0-9 and '-' replaced, trimmed to 63 characters.
pub fn dns_label(s: &str) -> String {
    let mapped: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped.trim_matches('-').to_string()
}

/// Pods to create (pool, how many) and pods to delete (name, reason).
type Plan = (Vec<(usize, usize)>, Vec<(String, &'static str)>);

/// What this scheduler knows of one runner pod, from the watch.
#[derive(Clone, Debug)]
struct PodView {
    pool: String,
    instance: String,
    claimed_by: Option<String>,
    ready: bool,
    deleting: bool,
    ended: bool,
    resource_version: String,
    created: Option<std::time::SystemTime>,
    /// Where the direct path reaches its runner, once the pod has an address.
    ip: Option<std::net::IpAddr>,
    /// The token its runner asks of the direct path (from the pod's spec).
    token: Option<String>,
}

impl PodView {
    fn of(pod: &Pod) -> Option<(String, PodView)> {
        let meta = &pod.metadata;
        let name = meta.name.clone()?;
        let labels = meta.labels.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
        Some((
            name,
            PodView {
                pool: labels.get(LABEL_POOL).cloned().unwrap_or_default(),
                instance: labels.get(LABEL_INSTANCE).cloned().unwrap_or_default(),
                claimed_by: labels.get(LABEL_CLAIMED_BY).cloned(),
                ready: ready && phase == "Running",
                deleting: meta.deletion_timestamp.is_some(),
                ended: phase == "Succeeded" || phase == "Failed",
                resource_version: meta.resource_version.clone().unwrap_or_default(),
                created: meta.creation_timestamp.as_ref().map(|t| {
                    std::time::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64)
                }),
                ip: status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok()),
                token: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.env.as_ref())
                    .and_then(|env| env.iter().find(|e| e.name == kiln_wire::direct::TOKEN_ENV))
                    .and_then(|e| e.value.clone()),
            },
        ))
    }

    fn standby(&self) -> bool {
        self.claimed_by.is_none() && !self.deleting && !self.ended
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<String, PodView>,
    /// The watch has listed everything once.
    synced: bool,
    /// Pods a pod runner of this scheduler holds (reserved, or claimed and running a job).
    reserved: HashSet<String>,
    /// Pods being created, per pool.
    creating: Vec<usize>,
    /// (running, waiting) per pool from the dispatcher, and the standby target from it.
    demand: Vec<(usize, usize)>,
    target: Vec<usize>,
    last_shrink: Vec<Option<Instant>>,
    /// Why pods of a pool cannot be made, when the API server refuses them (not when it is away).
    refused: Vec<Option<String>>,
    /// The last error talking to the API server, cleared by the next success.
    api_error: Option<String>,
    layers_told: bool,
}

struct Inner {
    /// Requests with short timeouts.
    pods: Api<Pod>,
    /// The watch and exec streams.
    streams: Api<Pod>,
    settings: KubeSettings,
    pools: Vec<PoolSettings>,
    instance: String,
    owner: OwnerReference,
    template: serde_json::Value,
    state: Mutex<State>,
    /// Woken on every change the watch sees.
    changed: Notify,
    /// Wakes the pool maintainer.
    maintain: Notify,
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
}

/// The Kubernetes pod backend.
pub struct KubeBackend {
    inner: Arc<Inner>,
    /// Taken only when the backend is dropped.
    rt: std::mem::ManuallyDrop<tokio::runtime::Runtime>,
}

impl KubeBackend {
    /// Connects, makes sure this instance's owner object exists, removes pods an earlier life of
    /// this instance left, and starts the watch and the pool maintainer.
    pub fn start(settings: KubeSettings, metrics: Arc<Metrics>) -> anyhow::Result<KubeBackend> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-kube")
            .enable_all()
            .build()?;
        // Started from inside the actor system's runtime: connect from another thread.
        let connected = block_on_elsewhere(rt.handle(), Inner::connect(settings, metrics))
            .unwrap_or_else(|| Err(anyhow::anyhow!("connecting to the API server panicked")));
        let inner = match connected {
            Ok(inner) => inner,
            Err(e) => {
                rt.shutdown_background();
                return Err(e);
            }
        };
        let inner = Arc::new(inner);
        rt.spawn(inner.clone().watch());
        rt.spawn(inner.clone().maintain_pools());
        Ok(KubeBackend {
            inner,
            rt: std::mem::ManuallyDrop::new(rt),
        })
    }

    /// Runs `job` on a pod made for it (create, wait for Ready, exec, delete): the naive path
    /// `kiln bench --kubernetes` compares standby pods with.
    pub fn run_cold(&self, job: Job) -> Result<Finished, PodError> {
        block_on_elsewhere(self.rt.handle(), self.inner.clone().run_cold(job)).unwrap_or_else(
            || {
                Err(PodError::Lost(Lost::Internal(
                    "the cold run panicked".into(),
                )))
            },
        )
    }

    /// How long claiming `n` standby pods takes, `parallel` claims at a time.
    pub fn claim_many(&self, n: usize, parallel: usize) -> Result<Duration, String> {
        block_on_elsewhere(self.rt.handle(), self.inner.clone().claim_many(n, parallel))
            .unwrap_or_else(|| Err("claiming panicked".into()))
    }

    /// Requests this backend has sent to the API server so far.
    pub fn api_requests(&self) -> u64 {
        ["create", "claim", "exec", "delete"]
            .iter()
            .map(|op| {
                self.inner
                    .metrics
                    .k8s_api_requests
                    .with_label_values(&[op])
                    .get()
            })
            .sum()
    }

    /// Ready standby pods of pool 0 that no pod runner holds.
    pub fn ready_standby(&self) -> usize {
        let state = self.inner.state.locked();
        let pool = &self.inner.pools[0].name;
        state
            .pods
            .iter()
            .filter(|(n, v)| {
                v.pool == *pool && v.ready && v.standby() && !state.reserved.contains(*n)
            })
            .count()
    }

    /// The instance name pods are labelled with.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Runner pods this backend's watch sees, by name: (pool, claimed by, ready).
    pub fn snapshot(&self) -> Vec<(String, String, Option<String>, bool)> {
        let state = self.inner.state.locked();
        state
            .pods
            .iter()
            .map(|(n, v)| (n.clone(), v.pool.clone(), v.claimed_by.clone(), v.ready))
            .collect()
    }
}

/// Two clients: one for requests, with short timeouts (an API server that went away mid-request
/// must not hold a claim for minutes), and one for the watch and exec streams, which stay open.
/// Runs `fut` to completion on the backend's runtime from a thread of its own: callers sit inside
/// the actor system's runtime, where blocking on another runtime is not allowed. `None` if it
/// panicked.
fn block_on_elsewhere<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let handle = handle.clone();
    std::thread::spawn(move || handle.block_on(fut)).join().ok()
}

async fn clients_for(settings: &KubeSettings) -> anyhow::Result<(Client, Client)> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let mut short = config.clone();
    short.connect_timeout = Some(REQUEST_TIMEOUT);
    short.read_timeout = Some(REQUEST_TIMEOUT);
    short.write_timeout = Some(REQUEST_TIMEOUT);
    Ok((Client::try_from(short)?, Client::try_from(config)?))
}

/// The longest a single request (create, patch, delete) or an exec's connection may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no pod of a pool can be reserved for a pod runner.
#[derive(Debug, thiserror::Error)]
enum Unreservable {
    /// The API server refuses to make the pool's pods (a quota, an admission policy): its words.
    #[error("{0}")]
    Refused(String),
    #[error("the scheduler is stopping")]
    Stopping,
}

impl Inner {
    async fn connect(settings: KubeSettings, metrics: Arc<Metrics>) -> anyhow::Result<Inner> {
        let (client, streaming) = clients_for(&settings).await?;
        let ns = settings.namespace.clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let streams: Api<Pod> = Api::namespaced(streaming, &ns);
        let instance = settings.instance();
        let owner = owner_for(&client, &ns, &instance).await?;
        // What an earlier life of this instance left: its standby pods and the pods it claimed.
        for selector in [
            format!("{LABEL_ROLE}=runner,{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_ROLE}=runner,{LABEL_CLAIMED_BY}={instance}"),
        ] {
            delete_matching(&pods, &selector).await.map_err(|e| {
                anyhow::anyhow!("removing pods left by an earlier run ({selector}): {e}")
            })?;
        }
        let template = match &settings.pod_template {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading the pod template {}: {e}", path.display())
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("the pod template {} is not a JSON Pod: {e}", path.display())
                })?
            }
            None => serde_json::Value::Null,
        };
        let pools = settings.pools();
        let n = pools.len();
        let state = State {
            creating: vec![0; n],
            demand: vec![(0, 0); n],
            target: pools.iter().map(|p| p.min).collect(),
            last_shrink: vec![None; n],
            refused: vec![None; n],
            ..State::default()
        };
        Ok(Inner {
            pods,
            streams,
            settings,
            pools,
            instance,
            owner,
            template,
            state: Mutex::new(state),
            changed: Notify::new(),
            maintain: Notify::new(),
            metrics,
            stopping: AtomicBool::new(false),
        })
    }

    fn count(&self, op: &str, ok: bool) {
        self.metrics.k8s_api_requests.with_label_values(&[op]).inc();
        if !ok {
            self.metrics.k8s_api_errors.with_label_values(&[op]).inc();
        }
    }

    /// Keeps `state.pods` equal to the runner pods in the namespace.
    async fn watch(self: Arc<Self>) {
        let config = watcher::Config::default().labels(&format!("{LABEL_ROLE}=runner"));
        let stream = watcher::watcher(self.streams.clone(), config).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listing: Option<HashMap<String, PodView>> = None;
        while let Some(event) = stream.next().await {
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            {
                let mut state = self.state.locked();
                match event {
                    Ok(Event::Init) => listing = Some(HashMap::new()),
                    Ok(Event::InitApply(pod)) => {
                        if let (Some(list), Some((name, view))) =
                            (listing.as_mut(), PodView::of(&pod))
                        {
                            list.insert(name, view);
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(list) = listing.take() {
                            state.pods = list;
                        }
                        state.synced = true;
                        state.api_error = None;
                    }
                    Ok(Event::Apply(pod)) => {
                        if let Some((name, view)) = PodView::of(&pod) {
                            state.pods.insert(name, view);
                        }
                        state.api_error = None;
                    }
                    Ok(Event::Delete(pod)) => {
                        if let Some(name) = pod.metadata.name {
                            state.pods.remove(&name);
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .k8s_api_errors
                            .with_label_values(&["watch"])
                            .inc();
                        tracing::warn!(error = %e, "watching runner pods failed; retrying with backoff");
                        state.api_error = Some(format!("watching runner pods: {e}"));
                    }
                }
            }
            self.changed.notify_waiters();
            self.maintain.notify_one();
        }
    }

    /// Keeps each pool's standby pods at its target: creates what is missing, deletes what is
    /// over, replaces pods that never became Ready or ended, and removes claimed pods nobody here
    /// runs a job in.
    async fn maintain_pools(self: Arc<Self>) {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.maintain.notified()).await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            let (create, delete) = self.plan();
            for (pool, n) in create {
                for _ in 0..n {
                    let me = self.clone();
                    tokio::spawn(async move { me.create_pod(pool).await });
                }
            }
            for (name, reason) in delete {
                let me = self.clone();
                // A standby pod is deleted only as the watch last saw it: if another scheduler
                // claimed it since, its resourceVersion changed and the API server refuses (409).
                let seen = (reason != "claimed_unused")
                    .then(|| {
                        let state = self.state.locked();
                        state.pods.get(&name).map(|v| v.resource_version.clone())
                    })
                    .flatten();
                tokio::spawn(async move { me.delete_pod_as_seen(&name, reason, seen).await });
            }
        }
    }

    /// What the maintainer should do now: pods to create per pool, pods to delete with why.
    fn plan(&self) -> Plan {
        let mut state = self.state.locked();
        if !state.synced {
            return (Vec::new(), Vec::new());
        }
        let now = std::time::SystemTime::now();
        let ready_timeout = Duration::from_secs(self.settings.ready_timeout_secs);
        let mut create = Vec::new();
        let mut delete = Vec::new();
        for (name, view) in &state.pods {
            if view.deleting {
                continue;
            }
            let mine = view.instance == self.instance;
            if view.claimed_by.as_deref() == Some(self.instance.as_str())
                && !state.reserved.contains(name)
            {
                delete.push((name.clone(), "claimed_unused"));
            } else if mine && view.claimed_by.is_none() && view.ended {
                delete.push((name.clone(), "ended"));
            } else if mine
                && view.claimed_by.is_none()
                && !view.ready
                && view
                    .created
                    .and_then(|c| now.duration_since(c).ok())
                    .is_some_and(|age| age > ready_timeout)
            {
                delete.push((name.clone(), "never_ready"));
            }
        }
        for (i, pool) in self.pools.iter().enumerate() {
            let (running, waiting) = state.demand[i];
            // Demand now: as many standby pods as jobs running and waiting (each running job's
            // pod is replaced when it ends), between min and max; grows at once, shrinks by one
            // pod per 10 s.
            let want = (running + waiting).clamp(pool.min, pool.max);
            let target = state.target[i];
            let target = if want >= target {
                want
            } else if state.last_shrink[i].is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                state.last_shrink[i] = Some(Instant::now());
                target - 1
            } else {
                target
            };
            state.target[i] = target;
            self.metrics
                .k8s_pool_target
                .with_label_values(&[pool.name.as_str()])
                .set(target as i64);
            let own: Vec<(&String, &PodView)> = state
                .pods
                .iter()
                .filter(|(n, v)| {
                    v.pool == pool.name
                        && v.instance == self.instance
                        && v.standby()
                        && !delete.iter().any(|(d, _)| d == *n)
                })
                .collect();
            self.metrics
                .k8s_pool_standby
                .with_label_values(&[pool.name.as_str()])
                .set(own.iter().filter(|(_, v)| v.ready).count() as i64);
            let have = own.len() + state.creating[i];
            if have < target {
                create.push((i, target - have));
            } else if own.len() > target {
                let mut spare: Vec<&String> = own
                    .iter()
                    .filter(|(n, _)| !state.reserved.contains(*n))
                    .map(|(n, _)| *n)
                    .collect();
                spare.sort_by_key(|n| state.pods[*n].ready);
                for n in spare.into_iter().take(own.len() - target) {
                    delete.push((n.clone(), "pool_shrink"));
                }
            }
        }
        for (pool, n) in &create {
            state.creating[*pool] += n;
        }
        (create, delete)
    }

    async fn create_pod(self: Arc<Self>, pool: usize) {
        let pod = self.pod_object(pool);
        let result = self.pods.create(&PostParams::default(), &pod).await;
        self.count("create", result.is_ok());
        let mut state = self.state.locked();
        state.creating[pool] -= 1;
        match result {
            Ok(made) => {
                state.refused[pool] = None;
                state.api_error = None;
                self.metrics
                    .k8s_pods_created
                    .with_label_values(&[self.pools[pool].name.as_str()])
                    .inc();
                if let Some((name, view)) = PodView::of(&made) {
                    state.pods.entry(name).or_insert(view);
                }
            }
            Err(kube::Error::Api(status)) if !matches!(status.code, 409 | 429 | 500..=599) => {
                let why = format!(
                    "the API server refused a runner pod for pool {}: {} ({})",
                    self.pools[pool].name, status.message, status.code
                );
                tracing::error!("{why}");
                state.refused[pool] = Some(why);
                drop(state);
                self.changed.notify_waiters();
            }
            Err(e) => {
                tracing::warn!(error = %e, "creating a runner pod failed; retrying");
                state.api_error = Some(format!("creating a runner pod: {e}"));
            }
        }
    }

    async fn delete_pod(&self, name: &str, reason: &'static str) {
        self.delete_pod_as_seen(name, reason, None).await
    }

    /// Deletes `name`; with `seen`, only if its resourceVersion is still that one (a pod claimed
    /// meanwhile is left alone: 409).
    async fn delete_pod_as_seen(&self, name: &str, reason: &'static str, seen: Option<String>) {
        let mut params = DeleteParams::default().grace_period(0);
        if seen.is_some() {
            params.preconditions = Some(kube::api::Preconditions {
                resource_version: seen,
                uid: None,
            });
        }
        let result = self.pods.delete(name, &params).await;
        if matches!(&result, Err(kube::Error::Api(s)) if s.code == 409) {
            self.count("delete", true);
            tracing::debug!(
                pod = name,
                reason,
                "left a pod that changed since it was seen"
            );
            return;
        }
        let gone = match &result {
            Ok(_) => true,
            Err(kube::Error::Api(s)) => s.code == 404,
            Err(_) => false,
        };
        self.count("delete", gone);
        if gone {
            self.metrics
                .k8s_pods_deleted
                .with_label_values(&[reason])
                .inc();
            tracing::debug!(pod = name, reason, "deleted a runner pod");
        } else if let Err(e) = result {
            tracing::warn!(pod = name, error = %e, "deleting a runner pod failed; the maintainer retries");
        }
    }

    /// The Pod to create for `pool`: the template (or the hardened default) with Kiln's labels,
    /// owner and name.
    fn pod_object(&self, pool: usize) -> Pod {
        let p = &self.pools[pool];
        let mut pod = if self.template.is_null() {
            self.default_pod(p)
        } else {
            self.template.clone()
        };
        let meta = &mut pod["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["generateName"] = json!(format!("kiln-{}-", p.name));
        meta["namespace"] = json!(self.settings.namespace);
        if meta.get("name").is_some() {
            meta.as_object_mut().unwrap().remove("name");
        }
        let labels = meta["labels"].as_object().cloned().unwrap_or_default();
        let mut labels: BTreeMap<String, serde_json::Value> = labels.into_iter().collect();
        labels.insert("app.kubernetes.io/managed-by".into(), json!("kiln"));
        labels.insert(LABEL_ROLE.into(), json!("runner"));
        labels.insert(LABEL_POOL.into(), json!(p.name));
        labels.insert(LABEL_INSTANCE.into(), json!(self.instance));
        labels.remove(LABEL_CLAIMED_BY);
        meta["labels"] = json!(labels);
        meta["ownerReferences"] = json!([self.owner]);
        pod["spec"]["automountServiceAccountToken"] = json!(false);
        if self.settings.transport == Transport::Direct {
            // A token of this pod's own: whoever has it may hand the runner its job.
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            if let Some(container) = pod["spec"]["containers"].get_mut(0) {
                let env = &mut container["env"];
                if !env.is_array() {
                    *env = json!([]);
                }
                let env = env.as_array_mut().expect("an array");
                env.retain(|e| {
                    e["name"] != kiln_wire::direct::TOKEN_ENV
                        && e["name"] != kiln_wire::direct::PORT_ENV
                });
                env.push(json!({"name": kiln_wire::direct::TOKEN_ENV, "value": token}));
                env.push(json!({
                    "name": kiln_wire::direct::PORT_ENV,
                    "value": self.settings.runner_port.to_string()
                }));
            }
        }
        serde_json::from_value(pod).expect("a runner pod object is a Pod")
    }

    fn default_pod(&self, p: &PoolSettings) -> serde_json::Value {
        let s = &self.settings;
        let cpu = p.cpu.clone().unwrap_or_else(|| s.cpu.clone());
        let memory = p.memory.clone().unwrap_or_else(|| s.memory.clone());
        let mut spec = json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "fsGroup": 65534,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "runner",
                "image": p.image.clone().unwrap_or_else(|| s.image.clone()),
                "imagePullPolicy": s.image_pull_policy,
                "command": ["kiln-runner", "standby"],
                "env": [{"name": "TMPDIR", "value": "/work"}, {"name": "HOME", "value": "/work"}],
                "workingDir": "/work",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "privileged": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory},
                    "limits": {"cpu": cpu, "memory": memory}
                },
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            }],
            "volumes": [{"name": "work", "emptyDir": {"sizeLimit": s.work_dir_size}}]
        });
        if let Some(class) = &s.runtime_class {
            spec["runtimeClassName"] = json!(class);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": spec})
    }

    /// Reserves a Ready, unclaimed pod of `pool` for a pod runner (this scheduler's own pods
    /// first: another scheduler's are claimed only when ours are all held).
    fn reserve(&self, pool: usize) -> Result<Option<(String, String)>, Unreservable> {
        let mut state = self.state.locked();
        let name = &self.pools[pool].name;
        let pick = state
            .pods
            .iter()
            .filter(|(n, v)| {
                v.pool == *name && v.ready && v.standby() && !state.reserved.contains(*n)
            })
            .min_by_key(|(_, v)| v.instance != self.instance)
            .map(|(n, v)| (n.clone(), v.resource_version.clone()));
        if let Some((n, rv)) = pick {
            state.reserved.insert(n.clone());
            return Ok(Some((n, rv)));
        }
        if let Some(why) = &state.refused[pool] {
            return Err(Unreservable::Refused(why.clone()));
        }
        Ok(None)
    }

    /// Waits for a pod of `pool` to reserve. It waits as long as pods are on their way (or the
    /// API server is away); it fails only when the API server refuses to make them.
    async fn wait_reserve(&self, pool: usize) -> Result<(String, String), Unreservable> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = self.reserve(pool)? {
                return Ok(found);
            }
            if self.stopping.load(Ordering::Relaxed) {
                return Err(Unreservable::Stopping);
            }
            self.maintain.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(2), notified).await;
        }
    }

    fn release(&self, name: &str) {
        self.state.locked().reserved.remove(name);
        self.changed.notify_waiters();
        self.maintain.notify_one();
    }

    /// Claims `name` for `job` if its resourceVersion is still `rv`. `Ok(false)`: someone else
    /// claimed or deleted it first.
    async fn claim(&self, name: &str, rv: &str, job: &str) -> Result<bool, kube::Error> {
        let patch = json!({
            "metadata": {
                "resourceVersion": rv,
                "labels": {LABEL_CLAIMED_BY: self.instance},
                "annotations": {ANNOTATION_JOB: job}
            }
        });
        let result = self
            .pods
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match result {
            Ok(_) => {
                self.count("claim", true);
                self.metrics.k8s_claims.with_label_values(&["ok"]).inc();
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                self.count("claim", true);
                self.metrics
                    .k8s_claims
                    .with_label_values(&["conflict"])
                    .inc();
                Ok(false)
            }
            Err(e) => {
                self.count("claim", false);
                Err(e)
            }
        }
    }

    /// The pod is gone or going (deleted, evicted, ended) by the watch's account.
    fn pod_lost(&self, name: &str) -> Option<String> {
        let state = self.state.locked();
        if !state.synced {
            return None;
        }
        match state.pods.get(name) {
            None => Some(format!("pod {name} was deleted while it ran the job")),
            Some(v) if v.deleting => {
                Some(format!("pod {name} is being deleted while it ran the job"))
            }
            Some(v) if v.ended => Some(format!(
                "pod {name} ended (evicted or failed) while it ran the job"
            )),
            _ => None,
        }
    }

    /// Claims a pod (the reserved one, or another when it was taken), execs the runner in it and
    /// returns the outcome. The pod is deleted afterwards, whatever happened.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        self: Arc<Self>,
        pool: usize,
        mut name: String,
        mut rv: String,
        job: Job,
        started: Box<dyn FnOnce() + Send>,
        cancel: Arc<Cancel>,
        mut early: Option<tokio::task::JoinHandle<Option<Early>>>,
    ) -> Result<Finished, PodError> {
        if self.settings.transport == Transport::Direct {
            return self
                .run_direct_job(pool, name, rv, job, started, cancel, early)
                .await;
        }
        let label = format!("{}/{}", job.id, self.instance);
        let t0 = Instant::now();
        // Claim: conflicts move on to another pod; an unreachable API server is waited out.
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(why) = cancel.why() {
                self.release(&name);
                return Err(PodError::Lost(why));
            }
            match self.claim(&name, &rv, &label).await {
                Ok(true) => break,
                Ok(false) => {
                    // Another scheduler has the pod: the stream opened into it is dropped.
                    if let Some(e) = early.take() {
                        e.abort();
                    }
                    self.release(&name);
                    (name, rv) = self
                        .wait_reserve(pool)
                        .await
                        .map_err(|e| PodError::Create {
                            step: "reserve another pod after a claim conflict".into(),
                            error: e.to_string(),
                        })?;
                    cancel.set_pod(&name);
                }
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, ?backoff, "claiming a pod failed; the API server may be away, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    // The pod may have changed meanwhile (it was never claimed by us: the claim
                    // failed); take the watch's newest version.
                    if let Some(v) = self.state.locked().pods.get(&name) {
                        if v.claimed_by.is_none() {
                            rv = v.resource_version.clone();
                        }
                    }
                }
            }
        }
        let claimed = t0.elapsed();
        self.metrics
            .k8s_job_phase
            .with_label_values(&["claim"])
            .observe(claimed.as_secs_f64());
        let outcome = self.exec(&name, &job, started, &cancel, early).await;
        tracing::debug!(pod = %name, ?claimed, total = ?t0.elapsed(), "ran a job");
        // The outcome goes back at once; the used pod is deleted behind it (and, should that
        // fail, by the maintainer: a pod claimed here that nothing holds).
        let me = self.clone();
        tokio::spawn(async move {
            me.delete_pod(&name, "used").await;
            me.release(&name);
        });
        outcome
    }

    /// What a design without standby pods does for each job: create a pod, wait for it to be
    /// Ready, exec the job, delete the pod. For `kiln bench --kubernetes` only.
    async fn run_cold(self: Arc<Self>, job: Job) -> Result<Finished, PodError> {
        let mut pod = self.pod_object(0);
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(LABEL_POOL.into(), "bench-cold".into());
        pod.metadata.generate_name = Some("kiln-cold-".into());
        let made = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| PodError::Create {
                step: "create a pod".into(),
                error: e.to_string(),
            })?;
        self.count("create", true);
        let name = made.metadata.name.unwrap_or_default();
        let until = Instant::now() + Duration::from_secs(60);
        let rv = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.state.locked().pods.get(&name) {
                if v.ready {
                    break v.resource_version.clone();
                }
            }
            if Instant::now() > until {
                return Err(PodError::Create {
                    step: "wait for Ready".into(),
                    error: name,
                });
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        };
        self.state.locked().reserved.insert(name.clone());
        let cancel = Arc::new(Cancel::default());
        self.run(0, name, rv, job, Box::new(|| {}), cancel, None)
            .await
    }

    /// Claims `n` Ready standby pods of pool 0 back to back, `parallel` at a time, and says how
    /// long that took. The claimed pods are then deleted. For `kiln bench --kubernetes` only.
    async fn claim_many(self: Arc<Self>, n: usize, parallel: usize) -> Result<Duration, String> {
        let mut held = Vec::new();
        while held.len() < n {
            held.push(self.wait_reserve(0).await.map_err(|e| e.to_string())?);
        }
        let started = Instant::now();
        let mut queue = held.clone();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..parallel {
            let mine: Vec<(String, String)> = queue
                .drain(..queue.len().min(n.div_ceil(parallel)))
                .collect();
            let me = self.clone();
            tasks.spawn(async move {
                for (name, rv) in mine {
                    if !me
                        .claim(&name, &rv, "bench/claim")
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        return Err(format!("pod {name} was claimed by someone else"));
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        let took = started.elapsed();
        for (name, _) in held {
            self.delete_pod(&name, "used").await;
            self.release(&name);
        }
        Ok(took)
    }

    /// Opens the runner's exec stream in `name` once, ahead of its job: the runner starts and
    /// waits for the job frame while the pod is still on standby. None when it cannot be opened
    /// now (the job then connects on its own).
    async fn open_early(self: Arc<Self>, name: String) -> Option<Early> {
        if self.settings.transport == Transport::Direct {
            return self.connect_direct(&name).await.ok().map(Early::Direct);
        }
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.streams
                .exec(&name, self.settings.runner_command.clone(), &exec_params(0)),
        )
        .await;
        self.count("exec", matches!(r, Ok(Ok(_))));
        let mut attached = r.ok()?.ok()?;
        let ended = Box::pin(attached.take_status()?);
        Some(Early::Exec { attached, ended })
    }

    /// Connects to the runner of pod `name` over the pod network and gives it the pod's token;
    /// `Lost::Protocol` when the runner refuses it (retrying would not help), `Taken` when it has
    /// taken another job.
    async fn connect_direct(&self, name: &str) -> Result<tokio::net::TcpStream, DirectError> {
        use kiln_wire::direct::{Answer, Hello};
        let (ip, token) = {
            let state = self.state.locked();
            let view = state.pods.get(name);
            (view.and_then(|v| v.ip), view.and_then(|v| v.token.clone()))
        };
        let Some(token) = token else {
            return Err(DirectError::Lost(Lost::Protocol(format!(
                "pod {name} has no {} in its spec (made for the exec path)",
                kiln_wire::direct::TOKEN_ENV
            ))));
        };
        let ip = ip.ok_or_else(|| Lost::Connection(format!("pod {name} has no IP yet")))?;
        let addr = std::net::SocketAddr::new(ip, self.settings.runner_port);
        let greet = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            stream.write_all(&encode(&Hello { token })?).await?;
            let answer = read_frame_async::<Answer, _>(&mut stream).await?;
            Ok::<_, kiln_wire::frame::FrameError>((stream, answer))
        };
        let lost = match tokio::time::timeout(REQUEST_TIMEOUT, greet).await {
            Ok(Ok((stream, Answer::Ready))) => return Ok(stream),
            Ok(Ok((_, Answer::Taken))) => return Err(DirectError::Taken),
            Ok(Ok((_, Answer::Refused(why)))) => Lost::Protocol(format!(
                "the runner in pod {name} refused the connection: {why}"
            )),
            Ok(Err(e)) => Lost::Connection(format!(
                "connecting to the runner in pod {name} at {addr}: {e}"
            )),
            Err(_) => Lost::Connection(format!(
                "the runner in pod {name} at {addr} did not answer within {REQUEST_TIMEOUT:?}"
            )),
        };
        Err(DirectError::Lost(lost))
    }

    /// The direct path: the job frame over the connection to the runner, its reports back.
    /// `started` is called once the job is sent (and left for the next pod when this one's runner
    /// had taken another job before).
    async fn run_direct(
        &self,
        name: &str,
        frame: &[u8],
        started: &mut Option<Box<dyn FnOnce() + Send>>,
        cancel: &Cancel,
        early: Option<tokio::net::TcpStream>,
    ) -> Result<Finished, DirectError> {
        let connecting = Instant::now();
        let mut stream = match early {
            Some(s) => s,
            None => {
                // The pod may not have its address in our view yet, or its runner may not
                // listen yet: retried a while (the job has not started).
                let mut backoff = Duration::from_millis(20);
                loop {
                    if let Some(why) = cancel.why().or_else(|| self.pod_lost(name).map(Lost::Gone))
                    {
                        return Err(why.into());
                    }
                    match self.connect_direct(name).await {
                        Ok(s) => break s,
                        Err(DirectError::Lost(e @ Lost::Connection(_)))
                            if backoff < Duration::from_secs(10) =>
                        {
                            tracing::debug!(pod = name, error = %e, "the runner is not reachable yet; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff *= 2;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let connected = connecting.elapsed();
        if let Err(e) = stream.write_all(frame).await {
            return Err(Lost::Connection(format!("sending the job to pod {name}: {e}")).into());
        }
        if let Some(started) = started.take() {
            started();
        }
        let sent = Instant::now();
        let read = async {
            let mut timing = None;
            loop {
                match read_frame_async::<RunnerReport, _>(&mut stream).await? {
                    RunnerReport::Timing(t) => timing = Some(t),
                    report => return Ok::<_, kiln_wire::frame::FrameError>((report, timing)),
                }
            }
        };
        tokio::pin!(read);
        let (report, timing) = loop {
            tokio::select! {
                r = &mut read => break r.map_err(|e| Lost::Connection(format!(
                    "reading the outcome from the runner in pod {name}: {e}"
                )))?,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(why) = cancel.why().or_else(|| self.pod_lost(name).map(Lost::Gone)) {
                        return Err(why.into());
                    }
                }
            }
        };
        self.record_phases("direct", connected, sent.elapsed(), timing.as_ref());
        match report.into_finished(timing) {
            Ok(finished) => Ok(finished),
            Err(RunnerReport::SetupFailed { step, .. })
                if step == kiln_wire::direct::TAKEN_STEP =>
            {
                Err(DirectError::Taken)
            }
            Err(other) => Err(Lost::Protocol(format!(
                "the runner in pod {name} reported {other:?} instead of an outcome"
            ))
            .into()),
        }
    }

    /// A job on the direct path. The runner runs one job, the first to come, so the claim that
    /// labels the pod ours in every scheduler's view goes alongside the job instead of before
    /// it; a pod whose runner had taken another's job (the job never started there) is let go
    /// undeleted (its job's scheduler deletes it) and the job goes to another.
    #[allow(clippy::too_many_arguments)]
    async fn run_direct_job(
        self: Arc<Self>,
        pool: usize,
        mut name: String,
        mut rv: String,
        job: Job,
        started: Box<dyn FnOnce() + Send>,
        cancel: Arc<Cancel>,
        mut early: Option<tokio::task::JoinHandle<Option<Early>>>,
    ) -> Result<Finished, PodError> {
        let label = format!("{}/{}", job.id, self.instance);
        let frame = encode(&job).map_err(|e| PodError::Create {
            step: "encode the job".into(),
            error: e.to_string(),
        })?;
        let mut started = Some(started);
        loop {
            if let Some(why) = cancel.why() {
                self.release(&name);
                return Err(PodError::Lost(why));
            }
            let claim = tokio::spawn(self.clone().claim_alongside(
                name.clone(),
                rv.clone(),
                label.clone(),
            ));
            let stream = match early.take() {
                Some(task) => match task.await.ok().flatten() {
                    Some(Early::Direct(s)) => Some(s),
                    _ => None,
                },
                None => None,
            };
            match self
                .run_direct(&name, &frame, &mut started, &cancel, stream)
                .await
            {
                Err(DirectError::Taken) => {
                    claim.abort();
                    tracing::debug!(pod = %name, "the pod's runner had taken another job; trying another pod");
                    self.release(&name);
                    (name, rv) = self
                        .wait_reserve(pool)
                        .await
                        .map_err(|e| PodError::Create {
                            step: "reserve another pod after the runner had another job".into(),
                            error: e.to_string(),
                        })?;
                    cancel.set_pod(&name);
                }
                result => {
                    // The outcome goes back at once; the used pod is deleted behind it (after
                    // its claim, so that the patch does not meet a pod being deleted).
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = claim.await;
                        me.delete_pod(&name, "used").await;
                        me.release(&name);
                    });
                    return result.map_err(|e| match e {
                        DirectError::Lost(lost) => PodError::Lost(lost),
                        DirectError::Taken => unreachable!("matched above"),
                    });
                }
            }
        }
    }

    /// Claims pod `name` for `label` beside its job: waits out an unreachable API server a while;
    /// a conflict means another scheduler claimed it first, whose job the runner refuses if ours
    /// came first.
    async fn claim_alongside(self: Arc<Self>, name: String, mut rv: String, label: String) {
        let t = Instant::now();
        let mut backoff = Duration::from_millis(100);
        while backoff < Duration::from_secs(30) {
            match self.claim(&name, &rv, &label).await {
                Ok(true) => {
                    self.metrics
                        .k8s_job_phase
                        .with_label_values(&["claim"])
                        .observe(t.elapsed().as_secs_f64());
                    return;
                }
                Ok(false) => {
                    tracing::debug!(pod = %name, "another scheduler claimed the pod; its runner takes the first job that comes");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, ?backoff, "claiming a pod failed; the API server may be away, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    if let Some(v) = self.state.locked().pods.get(&name) {
                        if v.claimed_by.is_none() {
                            rv = v.resource_version.clone();
                        }
                    }
                }
            }
        }
    }

    async fn exec(
        &self,
        name: &str,
        job: &Job,
        started: Box<dyn FnOnce() + Send>,
        cancel: &Cancel,
        early: Option<tokio::task::JoinHandle<Option<Early>>>,
    ) -> Result<Finished, PodError> {
        let frame = encode(job).map_err(|e| PodError::Create {
            step: "encode the job".into(),
            error: e.to_string(),
        })?;
        let early = match early {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        let params = exec_params(frame.len());
        let connecting = Instant::now();
        // The stream opened on standby, when it is there and has not ended; the job has not been
        // sent, so a stream that broke meanwhile costs only a new one.
        let early = match early {
            Some(Early::Exec {
                attached,
                mut ended,
            }) => {
                use futures_util::FutureExt;
                ended
                    .as_mut()
                    .now_or_never()
                    .is_none()
                    .then_some((attached, ended))
            }
            _ => None,
        };
        // Reaching the pod: retried while the API server is away (the job has not started).
        let mut backoff = Duration::from_millis(100);
        let (mut attached, ended) = match early {
            Some((attached, ended)) => (attached, Some(ended)),
            None => (
                self.connect_exec(name, &params, cancel, &mut backoff)
                    .await?,
                None,
            ),
        };
        let connected = connecting.elapsed();
        tracing::debug!(pod = name, ?connected, "exec connected");
        self.exchange(
            name,
            &frame,
            &mut attached,
            ended,
            started,
            cancel,
            connected,
        )
        .await
    }

    /// Connects the runner's exec stream in `name`, retrying while the API server is away.
    async fn connect_exec(
        &self,
        name: &str,
        params: &AttachParams,
        cancel: &Cancel,
        backoff: &mut Duration,
    ) -> Result<AttachedProcess, PodError> {
        loop {
            if let Some(why) = cancel.why() {
                return Err(PodError::Lost(why));
            }
            if let Some(why) = self.pod_lost(name) {
                return Err(PodError::Lost(Lost::Gone(why)));
            }
            let r = tokio::time::timeout(
                REQUEST_TIMEOUT,
                self.streams
                    .exec(name, self.settings.runner_command.clone(), params),
            )
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!("no answer within {REQUEST_TIMEOUT:?}").into(),
                ))
            });
            self.count("exec", r.is_ok());
            match r {
                Ok(a) => return Ok(a),
                Err(e) if *backoff < Duration::from_secs(30) => {
                    tracing::warn!(pod = name, error = %e, "exec into the pod failed; retrying");
                    tokio::time::sleep(*backoff).await;
                    *backoff *= 2;
                }
                Err(e) => {
                    return Err(PodError::Lost(Lost::Connection(format!(
                        "exec into pod {name} failed: {e}"
                    ))));
                }
            }
        }
    }

    /// Sends the job frame on a connected exec stream and reads the runner's report.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        name: &str,
        frame: &[u8],
        attached: &mut AttachedProcess,
        ended: Option<EndedStream>,
        started: Box<dyn FnOnce() + Send>,
        cancel: &Cancel,
        connected: Duration,
    ) -> Result<Finished, PodError> {
        let mut stdin = attached.stdin().expect("stdin was asked for");
        let mut stdout = attached.stdout().expect("stdout was asked for");
        let mut stderr = attached.stderr().expect("stderr was asked for");
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let collect = diagnostics.clone();
        let mut drain = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut d = collect.locked();
                if d.len() < 16 << 10 {
                    d.extend_from_slice(&buf[..n]);
                }
            }
        });
        if let Err(e) = stdin.write_all(frame).await {
            drain.abort();
            return Err(PodError::Lost(Lost::Connection(format!(
                "sending the job to pod {name}: {e}"
            ))));
        }
        let _ = stdin.flush().await;
        started();
        let sent = Instant::now();
        let read = async {
            let mut timing = None;
            loop {
                match read_frame_async::<RunnerReport, _>(&mut stdout)
                    .await
                    .map_err(std::io::Error::from)?
                {
                    RunnerReport::Timing(t) => timing = Some(t),
                    report => return Ok::<_, std::io::Error>((report, timing)),
                }
            }
        };
        tokio::pin!(read);
        // The exec stream's end: its status, or nothing when the connection broke. kube's stream
        // does not close stdout when the connection breaks, so a broken one shows only here.
        let mut ended = match ended {
            Some(e) => e,
            None => Box::pin(attached.take_status().expect("status is taken once")),
        };
        let report = loop {
            tokio::select! {
                r = &mut read => break r,
                status = &mut ended => {
                    // What the runner wrote before it exited is already buffered.
                    match tokio::time::timeout(Duration::from_secs(1), &mut read).await {
                        Ok(r) => break r,
                        Err(_) => {
                            drain.abort();
                            let why = status
                                .and_then(|s| s.message)
                                .unwrap_or_else(|| "the connection broke".into());
                            return Err(PodError::Lost(Lost::Connection(format!(
                                "the exec stream to pod {name} ended without an outcome: {why}"
                            ))));
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(why) = cancel.why().or_else(|| self.pod_lost(name).map(Lost::Gone)) {
                        attached.abort();
                        drain.abort();
                        return Err(PodError::Lost(why));
                    }
                }
            }
        };
        let answered = sent.elapsed();
        let (report, timing) = match report {
            Ok((report, timing)) => (Ok(report), timing),
            Err(e) => (Err(e), None),
        };
        attached.abort();
        self.record_phases("exec", connected, answered, timing.as_ref());
        // The runner's stderr came before its outcome; the stream need not end for it (an aborted
        // exec's stderr may stay open). Only a failed read waits a moment for the last words.
        if report.is_err() {
            let _ = tokio::time::timeout(Duration::from_millis(100), &mut drain).await;
        }
        drain.abort();
        let diagnostics = String::from_utf8_lossy(&diagnostics.locked()).into_owned();
        self.tell_layers(&diagnostics);
        match report.map(|r| r.into_finished(timing)) {
            Ok(Ok(finished)) => Ok(finished),
            Ok(Err(other)) => Err(PodError::Lost(Lost::Protocol(format!(
                "the runner in pod {name} reported {other:?} instead of an outcome"
            )))),
            Err(e) => Err(PodError::Lost(Lost::Connection(format!(
                "reading the outcome from pod {name}: {e}; runner said: {}",
                diagnostics.trim()
            )))),
        }
    }

    /// Where a job's time went on path `path` (`exec`, `direct`): reaching the pod, the runner's
    /// own work (by its clock), and the rest of the round trip (`answered`, from the job sent to
    /// its outcome, less the runner's part: the network, and on the exec path the API server, the
    /// kubelet and the runtime).
    fn record_phases(
        &self,
        path: &str,
        connected: Duration,
        answered: Duration,
        timing: Option<&kiln_wire::report::Timing>,
    ) {
        let runner = timing
            .map(|t| Duration::from_micros(t.done_us))
            .unwrap_or_default();
        let phase = |name: &str, d: Duration| {
            self.metrics
                .k8s_job_phase
                .with_label_values(&[name])
                .observe(d.as_secs_f64())
        };
        phase(&format!("{path}_connect"), connected);
        phase("runner", runner);
        phase(&format!("{path}_transfer"), answered.saturating_sub(runner));
    }

    /// Logs once what the runner says of its layers in the pods.
    fn tell_layers(&self, diagnostics: &str) {
        let Some(line) = diagnostics
            .lines()
            .find_map(|l| l.strip_prefix("kiln-runner: layers "))
        else {
            return;
        };
        let mut state = self.state.locked();
        if !state.layers_told {
            state.layers_told = true;
            tracing::info!(
                "runner pods' layers, as the runner found them: {}",
                line.trim()
            );
        }
    }
}

/// Deletes the pods `selector` matches, one by one (the scheduler's role has no deletecollection).
async fn delete_matching(pods: &Api<Pod>, selector: &str) -> Result<(), kube::Error> {
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    for pod in list.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        match pods
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The owner runner pods point at: this scheduler's own Pod when it runs in the runner namespace
/// (`KILN_POD_NAME`, `KILN_POD_UID` from the downward API), else a ConfigMap for this instance.
async fn owner_for(client: &Client, ns: &str, instance: &str) -> anyhow::Result<OwnerReference> {
    let in_ns = std::env::var("KILN_POD_NAMESPACE").is_ok_and(|n| n == ns);
    if let (true, Ok(name), Ok(uid)) = (
        in_ns,
        std::env::var("KILN_POD_NAME"),
        std::env::var("KILN_POD_UID"),
    ) {
        return Ok(OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name,
            uid,
            block_owner_deletion: Some(false),
            controller: Some(false),
        });
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let name = format!("kiln-scheduler-{instance}");
    let map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "kiln", LABEL_INSTANCE: instance}
        },
        "data": {"about": "Owner of the runner pods of Kiln scheduler instance; deleting it deletes them."}
    }))?;
    let made = match maps.create(&PostParams::default(), &map).await {
        Ok(m) => m,
        Err(kube::Error::Api(s)) if s.code == 409 => maps.get(&name).await?,
        Err(e) => {
            return Err(anyhow::anyhow!(
                "making the owner object configmaps/{name} in namespace {ns}: {e}"
            ))
        }
    };
    Ok(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name,
        uid: made.metadata.uid.unwrap_or_default(),
        block_owner_deletion: Some(false),
        controller: Some(false),
    })
}

/// Stops a run from elsewhere (the watchdog).
#[derive(Default)]
struct Cancel {
    why: Mutex<Option<Lost>>,
    pod: Mutex<String>,
}

impl Cancel {
    fn why(&self) -> Option<Lost> {
        self.why.locked().clone()
    }

    fn set_pod(&self, name: &str) {
        *self.pod.locked() = name.to_string();
    }
}

struct KubePod {
    inner: Arc<Inner>,
    pool: usize,
    handle: tokio::runtime::Handle,
    name: String,
    rv: String,
    cancel: Arc<Cancel>,
    /// The way into the runner (exec stream or direct connection), opened while the pod waits
    /// for its job.
    early: Option<tokio::task::JoinHandle<Option<Early>>>,
}

/// How an exec stream ends: its status, or None when the connection broke.
type EndedStream = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
            > + Send,
    >,
>;

/// Why a job did not finish on the direct path's pod.
enum DirectError {
    /// The pod's runner had taken another job: this one never started there.
    Taken,
    Lost(Lost),
}

impl From<Lost> for DirectError {
    fn from(lost: Lost) -> DirectError {
        DirectError::Lost(lost)
    }
}

/// The way into a runner pod, opened ahead of its job: an exec stream with the future of its
/// end, or a direct connection whose runner has taken the pod's token.
enum Early {
    Exec {
        attached: AttachedProcess,
        ended: EndedStream,
    },
    Direct(tokio::net::TcpStream),
}

/// The exec stream's settings: stdin, stdout and stderr, with room for a job frame of `frame`
/// bytes (writes wait for room beyond it).
fn exec_params(frame: usize) -> AttachParams {
    AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(frame.max(1 << 20))
}

impl PodBackend for KubeBackend {
    fn pools(&self) -> Vec<Pool> {
        self.inner
            .pools
            .iter()
            .map(|p| Pool {
                name: p.name.clone(),
                languages: (!p.languages.is_empty()).then(|| p.languages.clone()),
                runners: Some(p.max),
            })
            .collect()
    }

    fn create(&self, pool: usize) -> BoxFuture<'static, Result<Box<dyn StandbyPod>, PodError>> {
        let inner = self.inner.clone();
        let handle = self.rt.handle().clone();
        let task = self.rt.spawn(async move {
            let (name, rv) = inner
                .wait_reserve(pool)
                .await
                .map_err(|e| PodError::Create {
                    step: "get a Ready runner pod".into(),
                    error: e.to_string(),
                })?;
            let cancel = Arc::new(Cancel::default());
            cancel.set_pod(&name);
            let early = Some(tokio::spawn(inner.clone().open_early(name.clone())));
            Ok(Box::new(KubePod {
                inner,
                pool,
                handle,
                name,
                rv,
                cancel,
                early,
            }) as Box<dyn StandbyPod>)
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(PodError::Create {
                    step: "get a Ready runner pod".into(),
                    error: e.to_string(),
                })
            })
        })
    }

    fn demand(&self, pool: usize, running: usize, waiting: usize) {
        let mut state = self.inner.state.locked();
        if let Some(d) = state.demand.get_mut(pool) {
            *d = (running, waiting);
        }
        drop(state);
        self.inner.maintain.notify_one();
    }

    fn describe(&self) -> Vec<String> {
        let s = &self.inner.settings;
        let mut lines = vec![format!(
            "kubernetes pods: namespace {}, instance {}, owner {}/{}; runner command {:?}",
            s.namespace,
            self.inner.instance,
            self.inner.owner.kind,
            self.inner.owner.name,
            s.runner_command
        )];
        for p in &self.inner.pools {
            lines.push(format!(
                "  pool {}: {} to {} standby pods, languages {}",
                p.name,
                p.min,
                p.max,
                if p.languages.is_empty() {
                    "all".to_string()
                } else {
                    p.languages.join(", ")
                }
            ));
        }
        lines.push(if s.pod_template.is_some() {
            "  runner pods from the pod template (service account token always off)".into()
        } else {
            format!(
                "  runner pods: no service account token, runAsNonRoot, all capabilities dropped, read-only root, seccomp RuntimeDefault, emptyDir /work of {}{}",
                s.work_dir_size,
                s.runtime_class
                    .as_ref()
                    .map(|c| format!(", runtimeClassName {c}"))
                    .unwrap_or_default()
            )
        });
        lines
    }

    fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.inner.changed.notify_waiters();
        let inner = self.inner.clone();
        let _ = block_on_elsewhere(self.rt.handle(), async move {
            for selector in [
                format!("{LABEL_ROLE}=runner,{LABEL_INSTANCE}={}", inner.instance),
                format!("{LABEL_ROLE}=runner,{LABEL_CLAIMED_BY}={}", inner.instance),
            ] {
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    delete_matching(&inner.pods, &selector),
                )
                .await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::warn!(selector, "could not remove this scheduler's runner pods at shutdown; their owner object's garbage collection or the next start removes them");
                }
            }
        });
    }
}

impl StandbyPod for KubePod {
    fn id(&self) -> &str {
        &self.name
    }

    fn killer(&self) -> PodKiller {
        let (inner, cancel, handle) =
            (self.inner.clone(), self.cancel.clone(), self.handle.clone());
        PodKiller::new(move || {
            *cancel.why.locked() = Some(Lost::Watchdog);
            let name = cancel.pod.locked().clone();
            let inner = inner.clone();
            handle.spawn(async move { inner.delete_pod(&name, "watchdog").await });
        })
    }

    fn run(self: Box<Self>, job: Job) -> BoxFuture<'static, Result<Finished, PodError>> {
        self.run_watched(job, Box::new(|| {}))
    }

    fn run_watched(
        self: Box<Self>,
        job: Job,
        started: Box<dyn FnOnce() + Send>,
    ) -> BoxFuture<'static, Result<Finished, PodError>> {
        let KubePod {
            inner,
            pool,
            handle,
            name,
            rv,
            cancel,
            early,
        } = *self;
        let task = handle.spawn(inner.run(pool, name, rv, job, started, cancel, early));
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(PodError::Lost(Lost::Internal(format!(
                    "the run task failed: {e}"
                ))))
            })
        })
    }

    fn destroy(self: Box<Self>) -> BoxFuture<'static, ()> {
        // Its runner, if started, reads the end of its input and exits.
        if let Some(early) = &self.early {
            early.abort();
        }
        self.inner.release(&self.name);
        Box::pin(async {})
    }
}

impl Drop for KubeBackend {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        // Dropped from inside the actor system (a scheduler that failed to start, say), a runtime
        // may not wait for its threads: it is let go without waiting.
        let rt = unsafe { std::mem::ManuallyDrop::take(&mut self.rt) };
        rt.shutdown_background();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert_eq!(dns_label("Kiln_Host.example"), "kiln-host-example");
        assert_eq!(dns_label("-a-"), "a");
        assert_eq!(dns_label(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn pool_settings_are_checked() {
        let mut s = KubeSettings {
            instance: Some("kiln-0".into()),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        s.pools = vec![PoolSettings {
            min: 3,
            max: 2,
            ..Default::default()
        }];
        assert!(s.validate().unwrap_err().contains("min (3)"));
        s.pools = vec![PoolSettings::default(), PoolSettings::default()];
        assert!(s.validate().unwrap_err().contains("named twice"));
        s.pools = vec![PoolSettings {
            name: "Big Pool".into(),
            ..Default::default()
        }];
        assert!(s.validate().unwrap_err().contains("DNS label"));
    }
}
