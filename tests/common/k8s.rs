//! A real Kubernetes API server (scripts/k8s: kube-apiserver, etcd, kwok) for the Kubernetes
//! tests: a namespace per test, `kiln serve --pods kubernetes` processes, and a record of every
//! runner pod's life taken from a watch.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s");

pub fn bin(name: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/kiln/k8s/bin").join(name)
}

/// The kubeconfig of the cluster `name` (default `kiln`), started by `scripts/k8s up` when it
/// does not answer. Under CI a cluster that cannot be started fails the test; elsewhere the test
/// is skipped with the reason.
pub fn cluster_named(name: &str) -> Option<PathBuf> {
    let out = Command::new(SCRIPT)
        .arg("up")
        .env("KILN_K8S_CLUSTER", name)
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let path = text.lines().last().unwrap_or_default().trim().to_string();
            Some(PathBuf::from(path))
        }
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI: the Kubernetes API server could not be started (scripts/k8s up)"
            );
            eprintln!("skipping: no Kubernetes API server (run scripts/k8s up)");
            None
        }
    }
}

pub fn cluster() -> Option<PathBuf> {
    cluster_named("kiln")
}

/// kubectl against `kubeconfig`; panics with its output when it fails.
pub fn kubectl(kubeconfig: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(bin("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace for one test, deleted when dropped.
pub struct Namespace {
    pub name: String,
    pub kubeconfig: PathBuf,
}

impl Namespace {
    pub fn new(kubeconfig: &PathBuf, name: &str) -> Namespace {
        let name = format!("{name}-{}", std::process::id());
        let _ = Command::new(bin("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["delete", "namespace", &name, "--wait=true"])
            .output();
        kubectl(kubeconfig, &["create", "namespace", &name]);
        // The namespace's default ServiceAccount comes a moment later; pods are refused before.
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let ok = Command::new(bin("kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", "serviceaccount", "default", "-n", &name])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Namespace {
            name,
            kubeconfig: kubeconfig.clone(),
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig, &all)
    }

    /// Runner pods now: name -> (instance label, claimed-by label, Ready). A busy API server
    /// that times a request out is asked again.
    pub fn runner_pods(&self) -> HashMap<String, (String, String, bool)> {
        let mut tries = 0;
        let text = loop {
            let out = Command::new(bin("kubectl"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args([
                    "-n",
                    &self.name,
                    "get",
                    "pods",
                    "-l",
                    "kiln.dev/role=runner",
                    "-o",
                    "json",
                ])
                .output()
                .expect("kubectl runs");
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            tries += 1;
            assert!(
                tries < 10,
                "kubectl get pods failed 10 times: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("kubectl gives JSON");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let labels = &p["metadata"]["labels"];
                let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    (
                        labels["kiln.dev/instance"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        labels["kiln.dev/claimed-by"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        ready,
                    ),
                )
            })
            .collect()
    }

    /// Waits until `f` holds of the runner pods, or panics saying what was seen last.
    pub fn wait_pods(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&HashMap<String, (String, String, bool)>) -> bool,
    ) {
        let until = Instant::now() + timeout;
        loop {
            let pods = self.runner_pods();
            if f(&pods) {
                return;
            }
            if Instant::now() > until {
                panic!("{what}: not within {timeout:?}; runner pods: {pods:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A TOML config for `kiln serve --pods kubernetes` in this namespace.
    pub fn config(&self, instance: &str, pools: &str, extra: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "kiln-k8s-{}-{instance}-{}.toml",
            self.name,
            std::process::id()
        ));
        // kwok's exec slows down on a loaded machine: the watchdog waits longer than in production
        // unless the test is about the watchdog.
        let grace = if extra.contains("watchdog_grace_ms") {
            String::new()
        } else {
            "watchdog_grace_ms = 60000\n".to_string()
        };
        let text = format!(
            "pods = \"kubernetes\"\n{grace}{extra}\n[kubernetes]\nnamespace = \"{}\"\ninstance = \"{instance}\"\nkubeconfig = \"{}\"\ntransport = \"exec\"\nrunner_command = [\"{}\", \"exec\"]\nready_timeout_secs = 30\n{pools}\n",
            self.name,
            self.kubeconfig.display(),
            env!("CARGO_BIN_EXE_kiln-runner"),
        );
        std::fs::write(&path, text).expect("config written");
        path
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new(bin("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// Everything a watch saw of each runner pod (by uid) while the test ran.
#[derive(Clone, Debug, Default)]
pub struct PodLife {
    pub name: String,
    pub instance: String,
    pub claimed_by: BTreeSet<String>,
    pub jobs: BTreeSet<String>,
}

pub struct PodLog {
    lives: Arc<Mutex<HashMap<String, PodLife>>>,
    _rt: tokio::runtime::Runtime,
}

impl PodLog {
    /// Starts watching the runner pods of `ns`; returns once the watch has listed them.
    pub fn start(ns: &Namespace) -> PodLog {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lives: Arc<Mutex<HashMap<String, PodLife>>> = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kubeconfig, namespace, record) =
            (ns.kubeconfig.clone(), ns.name.clone(), lives.clone());
        rt.spawn(async move {
            let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                .await
                .unwrap();
            let pods: Api<Pod> = Api::namespaced(Client::try_from(config).unwrap(), &namespace);
            let stream = watcher::watcher(
                pods,
                watcher::Config::default().labels("kiln.dev/role=runner"),
            );
            futures_util::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let pod = match event {
                    Ok(Event::Apply(p) | Event::InitApply(p) | Event::Delete(p)) => p,
                    Ok(Event::InitDone) => {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    _ => continue,
                };
                let meta = pod.metadata;
                let labels = meta.labels.unwrap_or_default();
                let mut lives = record.lock().unwrap();
                let life = lives.entry(meta.uid.unwrap_or_default()).or_default();
                life.name = meta.name.unwrap_or_default();
                life.instance = labels.get("kiln.dev/instance").cloned().unwrap_or_default();
                if let Some(c) = labels.get("kiln.dev/claimed-by") {
                    life.claimed_by.insert(c.clone());
                }
                if let Some(j) = meta.annotations.unwrap_or_default().get("kiln.dev/job") {
                    life.jobs.insert(j.clone());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the watch lists the pods");
        PodLog { lives, _rt: rt }
    }

    pub fn lives(&self) -> Vec<PodLife> {
        self.lives.lock().unwrap().values().cloned().collect()
    }

    /// The name of a pod that was claimed for job `id`, if the watch has seen one.
    pub fn pod_of(&self, id: &str) -> Option<String> {
        self.lives()
            .into_iter()
            .find(|l| l.jobs.iter().any(|j| j.starts_with(&format!("{id}/"))))
            .map(|l| l.name)
    }

    /// Every pod ran at most one job and was claimed by at most one scheduler; returns how many
    /// pods ran each job id (the annotation is `<id>/<instance>`).
    pub fn jobs_by_id(&self) -> HashMap<String, usize> {
        let mut by_id = HashMap::new();
        for life in self.lives() {
            assert!(
                life.jobs.len() <= 1 && life.claimed_by.len() <= 1,
                "pod {} was claimed more than once: jobs {:?}, claimed by {:?}",
                life.name,
                life.jobs,
                life.claimed_by
            );
            for job in &life.jobs {
                let id = job.rsplit_once('/').map(|(id, _)| id).unwrap_or(job);
                *by_id.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        by_id
    }
}
