//! The real node (`scripts/k8s node up`): a kubelet of the cluster's version, Debian's containerd
//! and runc and a CNI bridge on this machine, joined to the test cluster beside kwok's simulated
//! node. Pods meant for it select `kiln.dev/node=real` and tolerate its taint; nothing else
//! lands there.

#[path = "common/k8s.rs"]
mod k8s;
#[path = "common/server.rs"]
mod server;

use std::process::Command;

use k8s::{cluster, kubectl, Namespace, SCRIPT};
use serde_json::{json, Value};
use server::Server;

/// The node's name, started by `scripts/k8s node up` when it is not running. Under CI a node
/// that cannot be started fails the test; elsewhere the test is skipped with the reason.
fn real_node() -> Option<String> {
    let out = Command::new(SCRIPT).args(["node", "up"]).output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            Some(text.lines().last().unwrap_or_default().trim().to_string())
        }
        other => {
            let why = match &other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("CI").is_err(),
                "CI: the real node could not be started (scripts/k8s node up): {why}"
            );
            eprintln!("skipping: no real node (scripts/k8s node up): {why}");
            None
        }
    }
}

fn get(ns: &Namespace, what: &str) -> Value {
    serde_json::from_str(&ns.kubectl(&["get", what, "-o", "json"])).expect("kubectl JSON")
}

#[test]
fn a_restricted_pod_runs_in_a_real_container_on_the_real_node() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(node) = real_node() else { return };
    let ns = Namespace::new(&kubeconfig, "real-node");

    let described: Value =
        serde_json::from_str(&kubectl(&kubeconfig, &["get", "node", &node, "-o", "json"]))
            .expect("node JSON");
    let runtime = described["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(runtime.starts_with("containerd://"), "{runtime}");
    assert_eq!(described["metadata"]["labels"]["kiln.dev/node"], "real");
    let taints = described["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "kiln.dev/real-node" && t["effect"] == "NoSchedule"),
        "only pods meant for it land there: {taints:?}"
    );

    // As Kiln's runner pods are: uid 65534, read-only root, no capabilities, RuntimeDefault.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "restricted"},
        "spec": {
            "nodeSelector": {"kiln.dev/node": "real"},
            "tolerations": [{"key": "kiln.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "pause", "image": "registry.k8s.io/pause:3.10", "imagePullPolicy": "IfNotPresent",
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}}
            }]
        }
    });
    let file = std::env::temp_dir().join(format!("kiln-real-node-{}.json", std::process::id()));
    std::fs::write(&file, pod.to_string()).unwrap();
    ns.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/restricted",
        "--timeout=120s",
    ]);
    let running = get(&ns, "pod/restricted");
    assert_eq!(running["spec"]["nodeName"], node.as_str());
    let id = running["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default();
    assert!(
        id.starts_with("containerd://"),
        "a real container: {running}"
    );
    let ip = running["status"]["podIP"].as_str().unwrap_or_default();
    assert!(
        ip.starts_with("10.88.77."),
        "an address of the node's CNI bridge: {ip}"
    );

    // Deleted, its container is gone from containerd too.
    ns.kubectl(&[
        "delete",
        "pod",
        "restricted",
        "--wait=true",
        "--timeout=60s",
    ]);
    let container = id.trim_start_matches("containerd://");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed = Command::new("ctr")
            .args([
                "--address",
                "/run/kiln-node/containerd.sock",
                "-n",
                "k8s.io",
                "containers",
                "ls",
                "-q",
            ])
            .output()
            .expect("ctr runs");
        if !String::from_utf8_lossy(&listed.stdout).contains(container) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "container {container} outlived its pod"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let _ = std::fs::remove_file(&file);
}

/// The runner image built here (`scripts/images build runner`, cached), imported into the node.
fn runner_image() -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/images"))
        .args(["build", "runner"])
        .output()
        .expect("scripts/images runs");
    assert!(
        out.status.success(),
        "scripts/images build runner failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("kiln-runner:"))
        .unwrap_or_else(|| panic!("no runner image named in {text:?}"))
        .trim()
        .to_string()
}

#[test]
fn a_pool_on_the_real_node_runs_jobs_in_real_containers() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(node) = real_node() else { return };
    let image = runner_image();
    let ns = Namespace::new(&kubeconfig, "real-pool");
    // Kiln's hardened runner pod, sent to the real node.
    let template = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {
        "nodeSelector": {"kiln.dev/node": "real"},
        "tolerations": [{"key": "kiln.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        "automountServiceAccountToken": false, "enableServiceLinks": false,
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                            "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "runner", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["kiln-runner", "standby"],
            "env": [{"name": "TMPDIR", "value": "/work"}, {"name": "HOME", "value": "/work"}],
            "workingDir": "/work",
            "securityContext": {"allowPrivilegeEscalation": false, "privileged": false,
                                "readOnlyRootFilesystem": true, "runAsNonRoot": true,
                                "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                          "limits": {"cpu": "1", "memory": "512Mi"}},
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]
        }],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "256Mi"}}]
    }});
    let dir = std::env::temp_dir().join(format!("kiln-real-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template_file = dir.join("pod.json");
    std::fs::write(&template_file, template.to_string()).unwrap();
    let config = dir.join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "pods = \"kubernetes\"\nwatchdog_grace_ms = 60000\n[kubernetes]\nnamespace = \"{}\"\n\
             instance = \"real-0\"\nkubeconfig = \"{}\"\npod_template = \"{}\"\n\
             ready_timeout_secs = 120\n[[kubernetes.pools]]\nname = \"default\"\nmin = 2\nmax = 3\n",
            ns.name,
            kubeconfig.display(),
            template_file.display()
        ),
    )
    .unwrap();
    let server = Server::start("real-pool", &[("KILN_CONFIG", config.to_str().unwrap())]);

    let run = |body: Value| {
        let (code, r) = server.post("/v1/submissions?wait=true", &body);
        assert_eq!(code, 200, "{r}");
        r
    };
    let echo =
        run(json!({"language": "python", "source": "print(input()[::-1])", "stdin": "kiln"}));
    assert_eq!(
        (echo["status"].as_str(), echo["stdout"].as_str()),
        (Some("accepted"), Some("nlik\n")),
        "{echo}"
    );
    let c = run(
        json!({"language": "c", "source": "#include <stdio.h>\nint main(void){puts(\"hello from c\");return 0;}"}),
    );
    assert_eq!(c["stdout"], "hello from c\n", "{c}");
    let js = run(json!({"language": "javascript", "source": "console.log('hello from node')"}));
    assert_eq!(js["stdout"], "hello from node\n", "{js}");
    let java = run(
        json!({"language": "java", "source": "public class Main { public static void main(String[] a) { System.out.println(\"hello from java\"); } }"}),
    );
    assert_eq!(java["stdout"], "hello from java\n", "{java}");
    let broken = run(json!({"language": "c", "source": "int main(void) { return x; }"}));
    assert_eq!(broken["status"], "compile_error", "{broken}");
    let failing = run(json!({"language": "python", "source": "import sys\nsys.exit(3)"}));
    assert_eq!(
        (failing["status"].as_str(), failing["exit_code"].as_i64()),
        (Some("runtime_error"), Some(3)),
        "{failing}"
    );

    // The pods that ran them were real containers on the real node.
    let pods = get(&ns, "pods");
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    assert!(!items.is_empty(), "standby pods remain");
    for pod in &items {
        assert_eq!(pod["spec"]["nodeName"], node.as_str(), "{pod}");
        if pod["status"]["phase"] == "Running" {
            let id = pod["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap_or_default();
            assert!(id.starts_with("containerd://"), "{id}");
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
