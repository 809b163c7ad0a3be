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

/// Kiln's hardened runner pod (the default one Kiln makes), sent to the real node, with a
/// memory limit of `memory`. It asks for a tenth of a core (and may use one), so that the tests'
/// pools fit the two cores of this machine's node together.
fn real_node_pod(image: &str, memory: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {
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
            "resources": {"requests": {"cpu": "100m", "memory": memory},
                          "limits": {"cpu": "1", "memory": memory}},
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]
        }],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "256Mi"}}]
    }})
}

/// A `kiln serve` whose pool of `min` to `max` standby pods (of `memory` each) lives on the real
/// node, in `ns`.
fn real_pool(
    ns: &Namespace,
    kubeconfig: &std::path::Path,
    instance: &str,
    min: u32,
    max: u32,
    memory: &str,
) -> Server {
    let dir = std::env::temp_dir().join(format!("kiln-{}-{instance}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let template_file = dir.join("pod.json");
    std::fs::write(
        &template_file,
        real_node_pod(&runner_image(), memory).to_string(),
    )
    .unwrap();
    let config = dir.join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "pods = \"kubernetes\"\nwatchdog_grace_ms = 60000\n[kubernetes]\nnamespace = \"{}\"\n\
             instance = \"{instance}\"\nkubeconfig = \"{}\"\npod_template = \"{}\"\n\
             ready_timeout_secs = 120\n[[kubernetes.pools]]\nname = \"default\"\nmin = {min}\nmax = {max}\n",
            ns.name,
            kubeconfig.display(),
            template_file.display()
        ),
    )
    .unwrap();
    Server::start(instance, &[("KILN_CONFIG", config.to_str().unwrap())])
}

/// Runs `body` to its result through `server`. Without limits of its own a job gets the maximum
/// wall time: these tests are about what runs in a real container, and a toolchain's first start
/// in a new container reads it from a disk the suite keeps busy (JavaScript once took over 10 s).
fn run(server: &Server, mut body: Value) -> Value {
    if body.get("limits").is_none() {
        body["limits"] = json!({"wall_time_ms": 60000});
    }
    let (code, r) = server.post("/v1/submissions?wait=true", &body);
    assert_eq!(code, 200, "{r}");
    r
}

#[test]
fn a_pool_on_the_real_node_runs_jobs_in_real_containers() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(node) = real_node() else { return };
    let ns = Namespace::new(&kubeconfig, "real-pool");
    let server = real_pool(&ns, &kubeconfig, "real-0", 2, 3, "512Mi");
    let run = |body: Value| run(&server, body);
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
}

/// Greets a runner's direct port as `kiln_wire::direct` says, with `token`; prints the answer.
const DIRECT_HELLO: &str = r#"
import socket, struct, sys
ip, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.create_connection((ip, port), timeout=10)
payload = bytes([len(token)]) + token
s.sendall(struct.pack('<I', len(payload)) + payload)
head = s.recv(4)
n = struct.unpack('<I', head)[0]
data = b''
while len(data) < n:
    data += s.recv(n - len(data))
print('ready' if data[0] == 0 else 'refused: ' + data[2:2 + data[1]].decode())
"#;

#[test]
fn jobs_reach_runner_pods_straight_and_runners_refuse_strangers() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(_node) = real_node() else { return };
    let ns = Namespace::new(&kubeconfig, "real-direct");
    let server = real_pool(&ns, &kubeconfig, "direct-0", 2, 3, "256Mi");
    for i in 1..=3 {
        let r = run(
            &server,
            json!({"language": "python", "source": format!("print({i} * 7)")}),
        );
        assert_eq!(
            (r["status"].as_str(), r["stdout"].as_str()),
            (Some("accepted"), Some(format!("{}\n", i * 7).as_str())),
            "{r}"
        );
    }
    // They went over the pod network: no exec stream was opened.
    let metrics = server.get_text("/metrics");
    let value = |line_start: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("kiln_k8s_job_phase_seconds_count{phase=\"direct_connect\"}") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        value("kiln_k8s_api_requests_total{op=\"exec\"}"),
        0.0,
        "{metrics}"
    );

    ns.wait_pods(
        "two Ready standby pods",
        std::time::Duration::from_secs(120),
        |p| {
            p.values()
                .filter(|(_, claimed, ready)| *ready && claimed.is_empty())
                .count()
                >= 2
        },
    );
    let standby: Vec<String> = ns
        .runner_pods()
        .into_iter()
        .filter(|(_, (_, claimed, ready))| *ready && claimed.is_empty())
        .map(|(name, _)| name)
        .collect();
    let (target, other) = (&standby[0], &standby[1]);
    let ip = ns.kubectl(&["get", "pod", target, "-o", "jsonpath={.status.podIP}"]);
    let port = kiln_wire::direct::PORT;

    // From this host, with a token that is not the pod's.
    let mut stream = std::net::TcpStream::connect((ip.trim(), port)).expect("the runner listens");
    kiln_wire::frame::write_frame(
        &mut stream,
        &kiln_wire::direct::Hello {
            token: "not-the-token".into(),
        },
    )
    .unwrap();
    let answer: kiln_wire::direct::Answer = kiln_wire::frame::read_frame(&mut stream)
        .unwrap()
        .expect("an answer");
    assert_eq!(
        answer,
        kiln_wire::direct::Answer::Refused("wrong credential".into())
    );
    // From another pod (a runner pod's own processes have a network; its jobs do not).
    let said = ns.kubectl(&[
        "exec",
        other,
        "--",
        "python3",
        "-c",
        DIRECT_HELLO,
        ip.trim(),
        &port.to_string(),
        "a-guess",
    ]);
    assert_eq!(said.trim(), "refused: wrong credential");
    // Both are in the runner's log, and the pod still waits for its job.
    eventually(
        "the refusals in the runner's log",
        std::time::Duration::from_secs(30),
        || {
            ns.kubectl(&["logs", target])
                .lines()
                .filter(|l| {
                    l.contains("refused a connection from") && l.ends_with("wrong credential")
                })
                .count()
                >= 2
        },
    );
    let pod = get(&ns, &format!("pod/{target}"));
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    // The runner pod still has no service-account token.
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{pod}");
    let mounts = pod["spec"]["containers"][0]["volumeMounts"].to_string();
    assert!(!mounts.contains("serviceaccount"), "{mounts}");
    drop(server);
}

/// A Go program that says whether its GOCACHE holds links into the image's warm cache and files
/// of its own.
const GO_CACHE_PROBE: &str = r#"package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	links, own := 0, 0
	filepath.Walk(os.Getenv("GOCACHE"), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if info.Mode()&os.ModeSymlink != 0 {
			if to, e := os.Readlink(p); e == nil && strings.HasPrefix(to, "/var/cache/kiln/warm/go-") {
				links++
			}
		} else if info.Mode().IsRegular() && strings.HasSuffix(p, "-d") {
			own++
		}
		return nil
	})
	fmt.Printf("hello from go; cached entries linked from the image: %v; new entries of its own: %v\n", links > 100, own > 0)
}
"#;

/// The container IDs containerd holds for pod `name`.
fn containers_of(pod: &str) -> Vec<String> {
    let filter = format!("labels.\"io.kubernetes.pod.name\"=={pod}");
    let listed = Command::new("ctr")
        .args([
            "--address",
            "/run/kiln-node/containerd.sock",
            "-n",
            "k8s.io",
            "containers",
            "ls",
            "-q",
            &filter,
        ])
        .output()
        .expect("ctr runs");
    String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Waits until `what` holds, or panics.
fn eventually(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn the_runner_under_the_real_runtime_reports_its_layers_and_holds_hostile_programs() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(node) = real_node() else { return };
    let ns = Namespace::new(&kubeconfig, "real-hostile");
    let log = k8s::PodLog::start(&ns);
    let server = real_pool(&ns, &kubeconfig, "hostile-0", 2, 3, "256Mi");

    // What the runner finds around it in a standby pod, as an operator would ask it.
    ns.wait_pods(
        "a Ready standby pod",
        std::time::Duration::from_secs(120),
        |p| {
            p.values()
                .any(|(_, claimed, ready)| *ready && claimed.is_empty())
        },
    );
    let standby = ns
        .runner_pods()
        .into_iter()
        .find(|(_, (_, claimed, ready))| *ready && claimed.is_empty())
        .map(|(name, _)| name)
        .expect("a standby pod");
    let layers: Value =
        serde_json::from_str(&ns.kubectl(&["exec", &standby, "--", "kiln-runner", "layers"]))
            .expect("the runner reports its layers as JSON");
    assert_eq!(
        (layers["uid"].as_u64(), layers["gid"].as_u64()),
        (Some(65534), Some(65534)),
        "{layers}"
    );
    assert_eq!(
        layers["capabilities"], "0000000000000000",
        "no capabilities: {layers}"
    );
    assert_eq!(
        layers["seccomp"], "filter",
        "the runtime's RuntimeDefault profile: {layers}"
    );
    assert_eq!(layers["no_new_privs"], true, "{layers}");
    assert_eq!(layers["read_only_root"], true, "{layers}");
    assert_eq!(
        layers["memory_limit_bytes"],
        256u64 << 20,
        "the container's limit: {layers}"
    );
    let off = layers["not_in_force"].to_string();
    assert!(
        off.contains("a cgroup of its own") && off.contains("uid switch"),
        "{layers}"
    );
    let on = layers["in_force"].to_string();
    assert!(
        on.contains("seccomp filter of Kiln's own") && on.contains("rlimits"),
        "{layers}"
    );

    // The same, seen by a program: uid 65534, no capabilities, a seccomp filter, and / refuses
    // writes.
    let inside = run(
        &server,
        json!({"language": "python", "source": "\
import errno
status = dict(l.split(':', 1) for l in open('/proc/self/status'))
print(status['Uid'].split()[0], status['CapEff'].strip(), status['Seccomp'].strip())
try:
    open('/kiln-was-here', 'w')
    print('wrote to /')
except OSError as e:
    print(errno.errorcode[e.errno])
"}),
    );
    assert_eq!(
        inside["stdout"], "65534 0000000000000000 2\nEROFS\n",
        "{inside}"
    );

    // A memory bomb meets the container's limit, and is judged by it.
    let bomb = run(
        &server,
        json!({"language": "python", "source": "\
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
", "limits": {"memory_bytes": 1u64 << 30, "wall_time_ms": 60000}}),
    );
    assert_eq!(bomb["status"], "memory_limit_exceeded", "{bomb}");
    let message = bomb["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the pod's memory limit of 268435456 bytes"),
        "{bomb}"
    );

    // A fork bomb is held by the pod's pids limit (the kubelet's podPidsLimit): fork fails.
    let forks = run(
        &server,
        json!({"language": "c", "source": "\
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    for (int n = 0;; n++) {
        pid_t p = fork();
        if (p == 0) { pause(); _exit(0); }
        if (p < 0) { printf(\"held after %d forks: %s\\n\", n, strerror(errno)); return 0; }
    }
}
", "limits": {"wall_time_ms": 20000}}),
    );
    let said = forks["stdout"].as_str().unwrap_or_default();
    let held: Option<u32> = said
        .strip_prefix("held after ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    assert!(
        held.is_some_and(|n| n < 1024) && said.contains("Resource temporarily unavailable"),
        "{forks}"
    );

    // A sleep past its wall limit is a time limit, and its pod and container are gone after.
    let sleeper = run(
        &server,
        json!({"language": "bash", "source": "exec sleep 987654",
                                      "limits": {"wall_time_ms": 1500}}),
    );
    assert_eq!(sleeper["status"], "time_limit_exceeded", "{sleeper}");
    let pod = log
        .pod_of(sleeper["id"].as_str().unwrap())
        .expect("a pod ran it");
    eventually(
        "the sleeper's pod deleted",
        std::time::Duration::from_secs(60),
        || !ns.runner_pods().contains_key(&pod),
    );
    eventually(
        "the sleeper's container gone",
        std::time::Duration::from_secs(60),
        || containers_of(&pod).is_empty(),
    );
    let left = Command::new("pgrep")
        .args(["-f", "sleep 987654"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the sleep outlived its pod: {:?}",
        left
    );

    // No network: neither the node's own address nor the bridge's gateway answers the job.
    let described: Value =
        serde_json::from_str(&kubectl(&kubeconfig, &["get", "node", &node, "-o", "json"])).unwrap();
    let node_ip = described["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .map(str::to_string);
    let net = run(
        &server,
        json!({"language": "python", "source": format!("\
import socket
for host, port in [('{}', 10250), ('10.88.77.1', 9092), ('127.0.0.1', 9092)]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print(host, 'connected')
    except OSError as e:
        print(host, 'refused:', type(e).__name__)
", node_ip.as_deref().unwrap_or("10.0.0.1"))}),
    );
    let said = net["stdout"].as_str().unwrap_or_default();
    assert_eq!(said.lines().count(), 3, "{net}");
    assert!(
        !said.contains("connected"),
        "the job reached the network: {net}"
    );

    // The pod's /etc is the image's: a file put in the host's /etc is not there.
    let marker = format!("kiln-host-only-{}", std::process::id());
    std::fs::write(format!("/etc/{marker}"), "host\n").unwrap();
    let etc = run(
        &server,
        json!({"language": "python", "source": format!("\
import os
print('{marker}' in os.listdir('/etc'), open('/etc/os-release').read().splitlines()[0])
")}),
    );
    let _ = std::fs::remove_file(format!("/etc/{marker}"));
    let said = etc["stdout"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("False PRETTY_NAME=\"Debian GNU/Linux 12"),
        "{etc}"
    );
    drop(server);
}

fn submit(server: &Server, body: &Value) -> String {
    let (code, v) = server.post("/v1/submissions", body);
    assert_eq!(code, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn a_pod_deleted_and_a_scheduler_killed_mid_run_on_the_real_node_lose_no_job() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(_node) = real_node() else { return };
    let ns = Namespace::new(&kubeconfig, "real-crash");
    let log = k8s::PodLog::start(&ns);
    let mut server = real_pool(&ns, &kubeconfig, "crash-0", 2, 4, "256Mi");
    let sleeper = |i: usize| {
        json!({"language": "python", "source": format!("import time\ntime.sleep(2)\nprint({i})"),
               "limits": {"wall_time_ms": 60000}})
    };
    let long = std::time::Duration::from_secs(180);

    // A runner pod deleted from outside while its program sleeps (long enough that the deletion,
    // through a busy API server, lands mid-run): the job runs again elsewhere.
    let mut long_sleeper = sleeper(0);
    long_sleeper["source"] = json!("import time\ntime.sleep(10)\nprint(0)");
    let id = submit(&server, &long_sleeper);
    let mut victim = None;
    eventually(
        "a pod claimed the job",
        std::time::Duration::from_secs(60),
        || {
            victim = log.pod_of(&id);
            victim.is_some()
        },
    );
    ns.kubectl(&[
        "delete",
        "pod",
        victim.as_deref().unwrap(),
        "--grace-period=0",
        "--wait=false",
    ]);
    let r = server.wait_result(&id, long);
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str()),
        (Some("accepted"), Some("0\n")),
        "{r}"
    );
    assert_eq!(r["attempts"], 2, "{r}");

    // The scheduler SIGKILLed with jobs running, and started again on the same data dir.
    let ids: Vec<String> = (1..=4).map(|i| submit(&server, &sleeper(i))).collect();
    ns.wait_pods("jobs running", std::time::Duration::from_secs(60), |p| {
        p.values().any(|(_, claimed, _)| !claimed.is_empty())
    });
    server.kill9();
    server.boot();
    for (i, id) in ids.iter().enumerate() {
        let r = server.wait_result(id, long);
        assert_eq!(
            (r["status"].as_str(), r["stdout"].as_str()),
            (Some("accepted"), Some(format!("{}\n", i + 1).as_str())),
            "{r}"
        );
    }
    // Every job answered once (one result each, above); no pod ran two jobs or was claimed twice
    // (jobs_by_id checks every pod's life as the watch saw it).
    let ran = log.jobs_by_id();
    assert_eq!(ran.get(&id), Some(&2), "one pod per attempt: {ran:?}");
    for id in &ids {
        assert!(
            ran.get(id).is_some_and(|&n| n >= 1),
            "{id} ran in no pod: {ran:?}"
        );
    }
    drop(server);
}

/// The gateway of the real node's pod bridge: this host, as its pods reach it.
const GATEWAY: &str = "10.88.77.1";

/// The images `scripts/images build` made and imported (cached): (runner, kiln).
fn images() -> (String, String) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/images"))
        .arg("build")
        .output()
        .expect("scripts/images runs");
    assert!(
        out.status.success(),
        "scripts/images build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let named = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} image named in {text:?}"))
            .trim()
            .to_string()
    };
    (named("kiln-runner:"), named("kiln:"))
}

/// A Kafka broker the real node's pods reach: its own, listening on the bridge's gateway
/// (`scripts/kafka` with KILN_KAFKA_HOST), started when it is not running.
fn broker_for_pods() -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka"))
        .arg("up")
        // Its own port: tests/kafka.rs starts and stops a private broker on 19092.
        .env("KILN_KAFKA_PORT", "19192")
        .env("KILN_KAFKA_HOST", GATEWAY)
        .output()
        .expect("scripts/kafka runs");
    assert!(
        out.status.success(),
        "a broker on {GATEWAY} could not be started: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `kubectl port-forward` to `target` in `ns` on a free loopback port; the child and the port.
fn port_forward(
    kubeconfig: &std::path::Path,
    ns: &str,
    target: &str,
    port: u16,
) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(k8s::bin("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "port-forward",
            "-n",
            ns,
            "--address",
            "127.0.0.1",
            target,
            &format!(":{port}"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl port-forward starts");
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // It says "Handling connection" for each connection: read on, or it dies of a closed pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    // "Forwarding from 127.0.0.1:PORT -> TARGET"
    let local = first
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port-forward said {first:?}"));
    (child, local)
}

/// Waits until `ns` has no pods left (`helm uninstall`, `kubectl delete`: the garbage collector
/// removes the runner pods after their owner).
fn wait_no_pods(kubeconfig: &std::path::Path, ns: &str) {
    let kubeconfig = kubeconfig.to_path_buf();
    let mut left = String::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < until {
        left = kubectl(&kubeconfig, &["get", "pods", "-n", ns, "-o", "name"]);
        if left.trim().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("pods left in {ns}: {left}");
}

/// Every pod of `ns` ran on the real node in a real container; returns their names.
fn pods_on_the_real_node(kubeconfig: &std::path::Path, ns: &str, node: &str) -> Vec<String> {
    let pods: Value = serde_json::from_str(&kubectl(
        &kubeconfig.to_path_buf(),
        &["get", "pods", "-n", ns, "-o", "json"],
    ))
    .unwrap();
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    for pod in &items {
        assert_eq!(pod["spec"]["nodeName"], node, "{pod}");
        if pod["status"]["phase"] == "Running" {
            let id = pod["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap_or_default();
            assert!(id.starts_with("containerd://"), "{pod}");
        }
    }
    items
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The API server's port, from the cluster's kubeconfig (pods reach it on the gateway).
fn api_server_port(kubeconfig: &std::path::Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .and_then(|url| url.rsplit(':').next())
        .expect("a server URL in the kubeconfig")
        .trim()
        .to_string()
}

/// A submission through the API Service (port-forwarded to loopback) runs and returns.
fn submit_through(port: u16, body: &Value) -> Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = ureq::post(&format!("http://127.0.0.1:{port}/v1/submissions?wait=true"))
            .timeout(std::time::Duration::from_secs(60))
            .send_json(body);
        match r {
            Ok(resp) => return resp.into_json().unwrap(),
            Err(e) => {
                assert!(
                    std::time::Instant::now() < until,
                    "the API never answered: {e}"
                );
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

#[test]
fn the_chart_and_the_manifests_run_jobs_end_to_end_on_the_real_node() {
    let Some(kubeconfig) = cluster() else { return };
    let Some(node) = real_node() else { return };
    let (runner, kiln) = images();
    let brokers = broker_for_pods();
    let api_port = api_server_port(&kubeconfig);
    let run_id = std::process::id();
    let on_node = json!({"kiln.dev/node": "real"});
    let tolerate =
        json!([{"key": "kiln.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]);
    let small = json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}});
    let (runner_repo, runner_tag) = runner.split_once(':').unwrap();
    let (kiln_repo, kiln_tag) = kiln.split_once(':').unwrap();

    // The chart, as an operator of a one-node cluster without kube-proxy installs it: the images
    // built here, a broker the pods reach, the scheduler told where the API server is.
    let values = json!({
        "image": {"repository": kiln_repo, "tag": kiln_tag},
        "kafka": {"brokers": brokers, "topics": {"create": true, "partitions": 2, "replication": 1}, "submissionsTopic": format!("chart-{run_id}.submissions"),
                  "resultsTopic": format!("chart-{run_id}.results"),
                  "deadLetterTopic": format!("chart-{run_id}.dead-letter"), "group": format!("chart-{run_id}")},
        "api": {"replicas": 1, "resources": small, "nodeSelector": on_node, "tolerations": tolerate},
        "scheduler": {"replicas": 1, "resources": small, "nodeSelector": on_node, "tolerations": tolerate,
                      "hostAliases": [{"ip": GATEWAY, "hostnames": ["kubernetes.default.svc"]}],
                      "extraEnv": [{"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes.default.svc"},
                                   {"name": "KUBERNETES_SERVICE_PORT", "value": api_port}]},
        "runner": {"image": {"repository": runner_repo, "tag": runner_tag},
                   "resources": {"cpu": "500m", "memory": "256Mi"},
                   "nodeSelector": on_node, "tolerations": tolerate},
        "pools": [{"name": "default", "languages": [], "min": 1, "max": 2}],
        "podDisruptionBudget": {"enabled": false}
    });
    let dir = std::env::temp_dir().join(format!("kiln-chart-real-{run_id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let values_file = dir.join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let release = format!("real{run_id}");
    let ns = format!("kiln-chart-real-{run_id}");
    let helm = |args: &[&str]| {
        let out = Command::new(k8s::bin("helm"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm {args:?} failed: {}{}\npods: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            kubectl(&kubeconfig, &["get", "pods", "-n", &ns, "-o", "wide"])
        );
    };
    helm(&[
        "install",
        &release,
        CHART,
        "-n",
        &ns,
        "--create-namespace",
        "-f",
        values_file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "240s",
    ]);
    let pods = pods_on_the_real_node(&kubeconfig, &ns, &node);
    assert!(pods.iter().any(|p| p.contains("-kiln-api-")), "{pods:?}");
    assert!(
        pods.iter().any(|p| p.contains("-kiln-scheduler-")),
        "{pods:?}"
    );
    let (mut forward, port) =
        port_forward(&kubeconfig, &ns, &format!("svc/{release}-kiln-api"), 80);
    let r = submit_through(
        port,
        &json!({"language": "python", "source": "print(6 * 7)"}),
    );
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str()),
        (Some("accepted"), Some("42\n")),
        "{r}"
    );
    // Go compiles against the standard library the image built at build time: the job's GOCACHE
    // is its own directory of links into the image's cache, and what this build adds is its own.
    // (The scheduler runs in the kiln image, so it names the image's Go, as the runner sees it.)
    let go = submit_through(port, &json!({"language": "go", "source": GO_CACHE_PROBE}));
    assert_eq!(
        (go["status"].as_str(), go["stdout"].as_str()),
        (Some("accepted"), Some("hello from go; cached entries linked from the image: true; new entries of its own: true\n")),
        "{go}"
    );
    let _ = forward.kill();
    let pods = pods_on_the_real_node(&kubeconfig, &ns, &node);
    assert!(
        pods.iter().any(|p| p.starts_with("kiln-default-")),
        "a runner pod: {pods:?}"
    );
    helm(&["uninstall", &release, "-n", &ns, "--wait"]);
    wait_no_pods(&kubeconfig, &ns);
    let _ = kubectl(&kubeconfig, &["delete", "namespace", &ns, "--wait=false"]);

    // k8s-config/, with an operator's edits: the images, the broker, the API server's address,
    // the node, and resources that fit one node.
    let manifests = dir.join("k8s-config");
    std::fs::create_dir_all(&manifests).unwrap();
    let placement = "      nodeSelector: {kiln.dev/node: real}\n      tolerations: [{key: kiln.dev/real-node, operator: Exists, effect: NoSchedule}]\n";
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s-config")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text = text
            .replace("kafka.kafka.svc:9092", &brokers)
            .replace("\"kiln.submissions\"", &format!("\"manifests-{run_id}.submissions\""))
            .replace("\"kiln.results\"", &format!("\"manifests-{run_id}.results\""))
            .replace("\"kiln.dead-letter\"", &format!("\"manifests-{run_id}.dead-letter\""))
            .replace("group = \"kiln\"", &format!("group = \"manifests-{run_id}\""))
            .replace("\"--replication\", \"3\"", "\"--replication\", \"1\"")
            .replace("\"--partitions\", \"8\"", "\"--partitions\", \"2\"")
            .replace("min = 4", "min = 1")
            .replace("max = 32", "max = 2")
            .replace("image: kiln:0.1.0", &format!("image: {kiln}"))
            .replace("\"image\": \"kiln-runner:0.1.0\"", &format!("\"image\": \"{runner}\""))
            .replace("  replicas: 2\n", "  replicas: 1\n")
            .replace("requests: {cpu: 250m,", "requests: {cpu: 100m,")
            .replace("{\"cpu\": \"1\", \"memory\": \"512Mi\"}", "{\"cpu\": \"250m\", \"memory\": \"256Mi\"}")
            // The runner pod on the real node.
            .replace(
                "      \"spec\": {\n        \"serviceAccountName\": \"kiln-runner\",",
                "      \"spec\": {\n        \"nodeSelector\": {\"kiln.dev/node\": \"real\"},\n        \"tolerations\": [{\"key\": \"kiln.dev/real-node\", \"operator\": \"Exists\", \"effect\": \"NoSchedule\"}],\n        \"serviceAccountName\": \"kiln-runner\",",
            )
            // The API and scheduler pods on the real node; the scheduler reaches the API server
            // on the gateway (no kube-proxy here).
            .replace("      serviceAccountName: kiln-api\n", &format!("{placement}      serviceAccountName: kiln-api\n"))
            .replace("      restartPolicy: OnFailure\n", &format!("{placement}      restartPolicy: OnFailure\n"))
            .replace(
                "      serviceAccountName: kiln-scheduler\n",
                &format!("{placement}      hostAliases: [{{ip: \"{GATEWAY}\", hostnames: [kubernetes.default.svc]}}]\n      serviceAccountName: kiln-scheduler\n"),
            )
            .replace(
                "            - {name: KILN_KUBERNETES__INSTANCE, value: \"$(KILN_POD_NAME)\"}\n",
                &format!("            - {{name: KILN_KUBERNETES__INSTANCE, value: \"$(KILN_POD_NAME)\"}}\n            - {{name: KUBERNETES_SERVICE_HOST, value: kubernetes.default.svc}}\n            - {{name: KUBERNETES_SERVICE_PORT, value: \"{api_port}\"}}\n"),
            );
        std::fs::write(manifests.join(path.file_name().unwrap()), text).unwrap();
    }
    let _ = Command::new(k8s::bin("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "delete",
            "namespace",
            "kiln",
            "--wait=true",
            "--ignore-not-found",
        ])
        .output();
    kubectl(&kubeconfig, &["apply", "-f", manifests.to_str().unwrap()]);
    kubectl(
        &kubeconfig,
        &[
            "rollout",
            "status",
            "-n",
            "kiln",
            "deployment/kiln-api",
            "--timeout=240s",
        ],
    );
    kubectl(
        &kubeconfig,
        &[
            "rollout",
            "status",
            "-n",
            "kiln",
            "statefulset/kiln-scheduler",
            "--timeout=240s",
        ],
    );
    let (mut forward, port) = port_forward(&kubeconfig, "kiln", "svc/kiln-api", 80);
    let r = submit_through(
        port,
        &json!({"language": "python", "source": "print(6 * 7)"}),
    );
    let _ = forward.kill();
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str()),
        (Some("accepted"), Some("42\n")),
        "{r}"
    );
    let pods = pods_on_the_real_node(&kubeconfig, "kiln", &node);
    assert!(
        pods.iter().any(|p| p.starts_with("kiln-default-")),
        "a runner pod: {pods:?}"
    );
    kubectl(
        &kubeconfig,
        &["delete", "-f", manifests.to_str().unwrap(), "--wait=true"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/kiln");
