//! Which runner pod ran which job, from a watch on the API server: every pod must run at most one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::report::PodFigures;

pub struct PodWatch {
    jobs: Arc<Mutex<HashMap<String, BTreeSet<String>>>>,
    _rt: tokio::runtime::Runtime,
}

impl PodWatch {
    pub fn start(kubeconfig: &Path, namespace: &str) -> anyhow::Result<PodWatch> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let jobs: Arc<Mutex<HashMap<String, BTreeSet<String>>>> = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (kubeconfig, namespace, record) = (
            kubeconfig.to_path_buf(),
            namespace.to_string(),
            jobs.clone(),
        );
        rt.spawn(async move {
            let Ok(config) = kube::config::Kubeconfig::read_from(&kubeconfig) else {
                return;
            };
            let Ok(config) =
                kube::Config::from_custom_kubeconfig(config, &Default::default()).await
            else {
                return;
            };
            let Ok(client) = Client::try_from(config) else {
                return;
            };
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
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
                let uid = pod.metadata.uid.unwrap_or_default();
                let mut jobs = record.lock().unwrap();
                let seen = jobs.entry(uid).or_default();
                if let Some(j) = pod
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .get("kiln.dev/job")
                {
                    seen.insert(j.clone());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow::anyhow!("the pod watch did not list the pods"))?;
        Ok(PodWatch { jobs, _rt: rt })
    }

    pub fn figures(&self) -> PodFigures {
        let jobs = self.jobs.lock().unwrap();
        PodFigures {
            seen: jobs.len() as u64,
            ran_a_job: jobs.values().filter(|j| !j.is_empty()).count() as u64,
            used_twice: jobs.values().filter(|j| j.len() > 1).count() as u64,
        }
    }
}
