//! The Kubernetes pod backend against a real kube-apiserver with kwok nodes (scripts/k8s).
//! kwok runs an exec'd command on the host, so the runner pods' `kiln-runner exec` is this
//! build's runner. Each test has a namespace of its own; the API server is shared.

#[path = "common/k8s.rs"]
mod k8s;
#[path = "common/server.rs"]
mod server;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s::{cluster, Namespace, PodLog};
use serde_json::{json, Value};
use server::Server;

fn serve(ns: &Namespace, name: &str, instance: &str, pools: &str, extra: &str) -> Server {
    let config = ns.config(instance, pools, extra);
    Server::start(name, &[("KILN_CONFIG", config.to_str().unwrap())])
}

fn python(source: &str, stdin: &str) -> Value {
    json!({"language": "python", "source": source, "stdin": stdin})
}

/// Waits for the result of `id`.
fn result(server: &Server, id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = server.get(&format!("/v1/submissions/{id}?wait=true"));
        assert_eq!(code, 200, "{body}");
        if !matches!(body["status"].as_str(), Some("queued" | "running")) {
            return body;
        }
        assert!(Instant::now() < until, "no result for {id}: {body}");
    }
}

fn submit(server: &Server, body: &Value) -> String {
    let (code, v) = server.post("/v1/submissions", body);
    assert_eq!(code, 202, "{v}");
    v["id"].as_str().unwrap().to_string()
}

const POOL_OF_3: &str = "[[kubernetes.pools]]\nname = \"default\"\nmin = 3\nmax = 3\n";

#[test]
fn pool_fills_to_n_refills_after_each_use_and_each_pod_runs_one_job() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-pool");
    let log = PodLog::start(&ns);
    let server = serve(&ns, "k8s-pool", "pool-0", POOL_OF_3, "");
    ns.wait_pods("3 Ready standby pods", Duration::from_secs(30), |p| {
        p.values()
            .filter(|(_, claimed, ready)| claimed.is_empty() && *ready)
            .count()
            == 3
    });
    let mut ids = Vec::new();
    for i in 0..8 {
        let (code, r) = server.post(
            "/v1/submissions?wait=true",
            &python("print(int(input()) * 2)", &i.to_string()),
        );
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["status"], "accepted", "{r}");
        assert_eq!(r["stdout"], format!("{}\n", i * 2));
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    // Refilled: three standby pods again, none of them used.
    ns.wait_pods("the pool refilled to 3", Duration::from_secs(30), |p| {
        p.len() == 3
            && p.values()
                .all(|(_, claimed, ready)| claimed.is_empty() && *ready)
    });
    let by_id = log.jobs_by_id();
    for id in &ids {
        assert_eq!(
            by_id.get(id),
            Some(&1),
            "job {id} ran in {:?} pods",
            by_id.get(id)
        );
    }
    // 3 first pods plus one replacement per job, each used pod deleted.
    let lives = log.lives();
    assert!(lives.len() >= 3 + ids.len(), "{} pods seen", lives.len());
    let metrics = server.get_text("/metrics");
    assert!(
        metrics.contains("kiln_k8s_claims_total{result=\"ok\"} 8"),
        "{metrics}"
    );
}

#[test]
fn exec_round_trip_returns_the_runners_outcome() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-exec");
    let server = serve(&ns, "k8s-exec", "exec-0", POOL_OF_3, "");

    let (_, ok) = server.post(
        "/v1/submissions?wait=true",
        &python(
            "import sys\nname = input()\nprint('hello', name)\nprint('to stderr', file=sys.stderr)",
            "kube",
        ),
    );
    assert_eq!(ok["status"], "accepted", "{ok}");
    assert_eq!(ok["stdout"], "hello kube\n");
    assert_eq!(ok["stderr"], "to stderr\n");
    assert_eq!(ok["exit_code"], 0);

    let (_, compile) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "source": "int main( { return 0; }"}),
    );
    assert_eq!(compile["status"], "compile_error", "{compile}");
    assert!(
        compile["compile_output"]
            .as_str()
            .unwrap()
            .contains("error"),
        "{compile}"
    );

    let (_, runtime) = server.post(
        "/v1/submissions?wait=true",
        &python("import sys\nprint('partial')\nsys.exit(7)", ""),
    );
    assert_eq!(runtime["status"], "runtime_error", "{runtime}");
    assert_eq!(runtime["exit_code"], 7);
    assert_eq!(runtime["stdout"], "partial\n");

    // A JVM and V8 start in a pod: the runner leaves memory to the pod's limit (no RLIMIT_AS,
    // which both break on).
    let (_, js) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "javascript", "source": "console.log(require('os').EOL === '\\n' ? 'node' : 'other')"}),
    );
    assert_eq!(js["status"], "accepted", "{js}");
    assert_eq!(js["stdout"], "node\n");
    let (_, java) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "java", "source": "public class Main { public static void main(String[] a) { System.out.println(6 * 7); } }"}),
    );
    assert_eq!(java["status"], "accepted", "{java}");
    assert_eq!(java["stdout"], "42\n");

    // A compiled language's outcome travels the same way.
    let (_, c) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "source": "#include <stdio.h>\nint main(void) { int x; scanf(\"%d\", &x); printf(\"%d\\n\", x + 1); return 0; }", "stdin": "41"}),
    );
    assert_eq!(c["status"], "accepted", "{c}");
    assert_eq!(c["stdout"], "42\n");
}

#[test]
fn builds_and_test_sets_travel_in_job_frames_to_the_pods_that_run_them() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-builds");
    let log = PodLog::start(&ns);
    let server = serve(&ns, "k8s-builds", "builds-0", POOL_OF_3, "");
    let c = |stdin: &str| {
        json!({"language": "c", "stdin": stdin,
        "source": "#include <stdio.h>\nint main(void) { int x; scanf(\"%d\", &x); printf(\"%d\\n\", x * 3); return 0; }"})
    };
    let metric = |event: &str| {
        let needle = format!("kiln_compile_cache_total{{event=\"{event}\"}} ");
        server
            .get_text("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let (_, first) = server.post("/v1/submissions?wait=true", &c("2"));
    assert_eq!(first["stdout"], "6\n", "{first}");
    let until = Instant::now() + Duration::from_secs(20);
    while metric("stored") != "1" {
        assert!(Instant::now() < until, "the build was never stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A fresh pod runs the cached build: it came in the job frame, nothing compiled there.
    let (_, second) = server.post("/v1/submissions?wait=true", &c("5"));
    assert_eq!(second["stdout"], "15\n", "{second}");
    assert_eq!(metric("hit"), "1");
    assert_ne!(
        log.pod_of(first["id"].as_str().unwrap()),
        log.pod_of(second["id"].as_str().unwrap())
    );

    // A test-case set: one result, each test in a pod of its own.
    let mut set = c("");
    set["source"] = json!(set["source"].as_str().unwrap().replace("x * 3", "x * 4"));
    set["tests"] = json!([{"stdin": "1", "expected_output": "4"}, {"stdin": "2", "expected_output": "8"},
                          {"stdin": "3", "expected_output": "13"}, {"stdin": "4", "expected_output": "16"}]);
    let (_, r) = server.post("/v1/submissions?wait=true", &set);
    assert_eq!(r["status"], "wrong_answer", "{r}");
    let statuses: Vec<&str> = r["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["accepted", "accepted", "wrong_answer", "accepted"]
    );
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = log.jobs_by_id().get(r["id"].as_str().unwrap()).copied();
        if pods == Some(4) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the set's tests ran in {pods:?} pods, not 4"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_past_its_limit_is_time_limit_exceeded_and_its_pod_deleted() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-tle");
    let log = PodLog::start(&ns);
    let server = serve(&ns, "k8s-tle", "tle-0", POOL_OF_3, "");
    let mut sub = python(
        "import time\nprint('start', flush=True)\ntime.sleep(60)",
        "",
    );
    sub["limits"] = json!({"wall_time_ms": 1000});
    let (_, r) = server.post("/v1/submissions?wait=true", &sub);
    assert_eq!(r["status"], "time_limit_exceeded", "{r}");
    assert_eq!(r["stdout"], "start\n");
    let id = r["id"].as_str().unwrap();
    let pod = log.pod_of(id).expect("a pod ran the job");
    ns.wait_pods(
        "the pod that ran it deleted",
        Duration::from_secs(10),
        |p| !p.contains_key(&pod),
    );
}

#[test]
fn a_hung_runner_is_stopped_by_the_watchdog_as_time_limit_exceeded() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-hung");
    let log = PodLog::start(&ns);
    // A "runner" that never answers: only the watchdog can end the job.
    let config = ns.config("hung-0", POOL_OF_3, "watchdog_grace_ms = 1000");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &format!("[\"{}\", \"exec\"]", env!("CARGO_BIN_EXE_kiln-runner")),
        "[\"sleep\", \"8\"]",
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start("k8s-hung", &[("KILN_CONFIG", config.to_str().unwrap())]);
    let mut sub = python("print(1)", "");
    sub["limits"] = json!({"wall_time_ms": 1000});
    let started = Instant::now();
    let (_, r) = server.post("/v1/submissions?wait=true", &sub);
    assert_eq!(r["status"], "time_limit_exceeded", "{r}");
    assert!(r["message"].as_str().unwrap().contains("watchdog"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the watchdog waited for the runner"
    );
    let id = r["id"].as_str().unwrap();
    let pod = log.pod_of(id).expect("a pod was claimed for the job");
    ns.wait_pods(
        "the watchdog deleted the pod",
        Duration::from_secs(10),
        |p| !p.contains_key(&pod),
    );
    assert_eq!(
        log.jobs_by_id().get(id),
        Some(&1),
        "the job was not run again"
    );
}

#[test]
fn two_schedulers_share_a_pool_and_never_claim_a_pod_twice() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-two");
    let log = PodLog::start(&ns);
    let pools = "[[kubernetes.pools]]\nname = \"default\"\nmin = 2\nmax = 4\n";
    let a = serve(&ns, "k8s-two-a", "two-a", pools, "");
    let b = serve(&ns, "k8s-two-b", "two-b", pools, "");
    let mut ids: HashMap<String, (usize, usize)> = HashMap::new();
    for i in 0..200 {
        let server = if i % 2 == 0 { &a } else { &b };
        let id = submit(server, &python("print(int(input()) + 1)", &i.to_string()));
        ids.insert(id, (i % 2, i));
    }
    for (id, (which, i)) in &ids {
        let r = result(if *which == 0 { &a } else { &b }, id);
        assert_eq!(r["status"], "accepted", "{r}");
        assert_eq!(r["stdout"], format!("{}\n", i + 1), "{r}");
    }
    // Through the API: every pod ran at most one job, claimed by one scheduler; each job ran once.
    let by_id = log.jobs_by_id();
    for id in ids.keys() {
        // Once, or again after a lost run (a redelivery); never two jobs in one pod (above).
        let runs = by_id.get(id).copied().unwrap_or(0);
        assert!((1..=3).contains(&runs), "job {id} ran in {runs} pods");
    }
    let lives = log.lives();
    let cross = lives
        .iter()
        .filter(|l| l.claimed_by.iter().any(|c| *c != l.instance))
        .count();
    eprintln!(
        "{} pods, {cross} claimed by the other scheduler",
        lives.len()
    );
}

#[test]
fn a_pod_deleted_from_outside_mid_run_is_redelivered_and_finishes_once() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-deleted");
    let log = PodLog::start(&ns);
    let server = serve(&ns, "k8s-deleted", "deleted-0", POOL_OF_3, "");
    // The wall limit is generous: this test is about redelivery, and a loaded machine must not
    // turn it into a time limit.
    let mut job = python("import time\ntime.sleep(2)\nprint('done')", "");
    job["limits"] = json!({"wall_time_ms": 60000});
    let id = submit(&server, &job);
    // The pod the first attempt claimed, deleted while the program sleeps.
    let until = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some(name) = log.pod_of(&id) {
            break name;
        }
        assert!(Instant::now() < until, "no pod claimed the job");
        std::thread::sleep(Duration::from_millis(20));
    };
    ns.kubectl(&["delete", "pod", &victim, "--grace-period=0", "--wait=false"]);
    let r = result(&server, &id);
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "done\n");
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(log.jobs_by_id().get(&id), Some(&2), "one pod per attempt");
    // One result: the store holds it once and a second GET says the same.
    let (_, again) = server.get(&format!("/v1/submissions/{id}"));
    assert_eq!(again["attempts"], 2);
}

#[test]
fn a_killed_scheduler_leaves_nothing_and_its_jobs_are_redone() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-kill");
    let mut server = serve(&ns, "k8s-kill", "kill-0", POOL_OF_3, "");
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let mut job = python(&format!("import time\ntime.sleep(1.5)\nprint({i})"), "");
            job["limits"] = json!({"wall_time_ms": 60000});
            submit(&server, &job)
        })
        .collect();
    ns.wait_pods("jobs running", Duration::from_secs(30), |p| {
        p.values().any(|(_, claimed, _)| !claimed.is_empty())
    });
    server.kill9();
    let left: Vec<String> = ns.runner_pods().into_keys().collect();
    assert!(
        !left.is_empty(),
        "the killed scheduler's pods are still there"
    );

    // A restarted scheduler removes what its earlier life left and runs the jobs again.
    server.boot();
    ns.wait_pods(
        "the earlier life's pods removed",
        Duration::from_secs(30),
        |p| left.iter().all(|n| !p.contains_key(n)),
    );
    for (i, id) in ids.iter().enumerate() {
        let r = result(&server, id);
        assert_eq!(r["status"], "accepted", "{r}");
        assert_eq!(r["stdout"], format!("{i}\n"));
    }

    // Killed again, its pods are removed by Kubernetes once its owner object goes.
    server.kill9();
    assert!(!ns.runner_pods().is_empty());
    ns.kubectl(&["delete", "configmap", "kiln-scheduler-kill-0"]);
    ns.wait_pods(
        "the garbage collector removed the pods",
        Duration::from_secs(60),
        |p| p.is_empty(),
    );
}

#[test]
fn a_job_for_a_language_no_pool_serves_is_rejected_and_pools_route_by_language() {
    let Some(kcfg) = cluster() else { return };
    let ns = Namespace::new(&kcfg, "kiln-route");
    let log = PodLog::start(&ns);
    let pools = "[[kubernetes.pools]]\nname = \"py\"\nlanguages = [\"python\"]\nmin = 1\nmax = 2\n[[kubernetes.pools]]\nname = \"native\"\nlanguages = [\"c\", \"cpp\"]\nmin = 1\nmax = 2\n";
    let server = serve(&ns, "k8s-route", "route-0", pools, "");
    let (_, py) = server.post("/v1/submissions?wait=true", &python("print('py')", ""));
    assert_eq!(py["status"], "accepted", "{py}");
    let (_, c) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "source": "int main(void) { return 0; }"}),
    );
    assert_eq!(c["status"], "accepted", "{c}");
    let (_, js) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "javascript", "source": "console.log(1)"}),
    );
    assert_eq!(js["status"], "rejected", "{js}");
    assert!(
        js["message"].as_str().unwrap().contains("no pod pool"),
        "{js}"
    );
    let pool_of = |id: &str| log.pod_of(id).expect("a pod ran it");
    assert!(pool_of(py["id"].as_str().unwrap()).starts_with("kiln-py-"));
    assert!(pool_of(c["id"].as_str().unwrap()).starts_with("kiln-native-"));
}

fn helm(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(k8s::bin("helm"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?} failed: {text}");
    text
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/kiln");

#[test]
fn the_helm_chart_lints_renders_installs_and_uninstalls() {
    let Some(kcfg) = cluster() else { return };
    let lint = helm(&kcfg, &["lint", "--strict", CHART]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // What it renders is what Kiln reads: the config loads and the pod template makes pods.
    let ns = Namespace::new(&kcfg, "kiln-helm");
    let rendered = helm(&kcfg, &["template", "t", CHART, "-n", &ns.name]);
    let config_map = rendered
        .split("\n---")
        .find(|d| d.contains("kind: ConfigMap"))
        .expect("a ConfigMap");
    let block = |key: &str| -> String {
        let start = config_map.find(&format!("  {key}: |\n")).expect(key) + key.len() + 6;
        config_map[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dir = std::env::temp_dir().join(format!("kiln-helm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kiln.toml"), block("kiln.toml")).unwrap();
    let settings = kiln::config::Settings::load(Some(&dir.join("kiln.toml")))
        .expect("the chart's config loads");
    assert_eq!(settings.pods.as_str(), "kubernetes");
    assert_eq!(settings.queue.as_str(), "kafka");
    assert_eq!(settings.kubernetes.namespace, ns.name);
    assert_eq!(settings.kubernetes.pools()[0].max, 32);
    let template = dir.join("runner-pod.json");
    std::fs::write(&template, block("runner-pod.json")).unwrap();
    let pod: Value = serde_json::from_slice(&std::fs::read(&template).unwrap()).unwrap();
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    // The chart's runner pod, made by a scheduler in a restricted namespace, runs a job.
    ns.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    ns.kubectl(&["create", "serviceaccount", "t-kiln-runner"]);
    let config = ns.config(
        "helm-0",
        "[[kubernetes.pools]]\nname = \"default\"\nmin = 1\nmax = 1\n",
        "",
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "ready_timeout_secs = 30",
        &format!(
            "ready_timeout_secs = 30\npod_template = \"{}\"",
            template.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start("k8s-helm", &[("KILN_CONFIG", config.to_str().unwrap())]);
    let (_, r) = server.post("/v1/submissions?wait=true", &python("print(6 * 7)", ""));
    assert_eq!(r["status"], "accepted", "{r}");
    assert_eq!(r["stdout"], "42\n");
    drop(server);

    // Installed for real: every object accepted, the Deployment's and StatefulSet's pods Running.
    let release = format!("kh{}", std::process::id());
    let install_ns = format!("kiln-helm-install-{}", std::process::id());
    helm(
        &kcfg,
        &[
            "install",
            &release,
            CHART,
            "-n",
            &install_ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "90s",
        ],
    );
    let pods = k8s::kubectl(&kcfg, &["get", "pods", "-n", &install_ns, "-o", "json"]);
    let pods: Value = serde_json::from_str(&pods).unwrap();
    let phases: Vec<(String, String)> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["metadata"]["labels"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        phases
            .iter()
            .filter(|(n, p)| n == "kiln-api" && p == "Running")
            .count(),
        2,
        "{phases:?}"
    );
    assert_eq!(
        phases
            .iter()
            .filter(|(n, p)| n == "kiln-scheduler" && p == "Running")
            .count(),
        2,
        "{phases:?}"
    );
    helm(&kcfg, &["uninstall", &release, "-n", &install_ns, "--wait"]);
    // The workloads' pods go through the garbage collector after their owners: give it time.
    let until = Instant::now() + Duration::from_secs(90);
    let left = loop {
        let left = k8s::kubectl(
            &kcfg,
            &[
                "get",
                "all,configmap,role,rolebinding,serviceaccount,networkpolicy,pdb",
                "-n",
                &install_ns,
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                "name",
            ],
        );
        if left.trim().is_empty() || Instant::now() > until {
            break left;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(left.trim().is_empty(), "left after uninstall: {left}");
    k8s::kubectl(&kcfg, &["delete", "namespace", &install_ns, "--wait=false"]);
}

#[test]
fn the_k8s_config_manifests_apply_server_side() {
    let Some(kcfg) = cluster() else { return };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s-config");
    // Every object through the API server's validation and admission, namespace "kiln" with Pod
    // Security "restricted" enforced on the API and scheduler pods.
    let _ = k8s::kubectl(
        &kcfg,
        &["delete", "-f", dir, "--ignore-not-found", "--wait=true"],
    );
    let applied = k8s::kubectl(&kcfg, &["apply", "--server-side", "-f", dir]);
    for object in [
        "namespace/kiln",
        "role.rbac.authorization.k8s.io/kiln-scheduler",
        "networkpolicy.networking.k8s.io/kiln-runners-deny-all",
        "configmap/kiln-config",
        "deployment.apps/kiln-api",
        "statefulset.apps/kiln-scheduler",
    ] {
        assert!(applied.contains(object), "{object} not applied: {applied}");
    }
    k8s::kubectl(
        &kcfg,
        &[
            "rollout",
            "status",
            "-n",
            "kiln",
            "deployment/kiln-api",
            "--timeout=60s",
        ],
    );
    k8s::kubectl(
        &kcfg,
        &[
            "rollout",
            "status",
            "-n",
            "kiln",
            "statefulset/kiln-scheduler",
            "--timeout=60s",
        ],
    );
    // The runner pod template in the ConfigMap is a Pod the server accepts (dry run).
    let cm = k8s::kubectl(
        &kcfg,
        &[
            "get",
            "configmap",
            "kiln-config",
            "-n",
            "kiln",
            "-o",
            "json",
        ],
    );
    let cm: Value = serde_json::from_str(&cm).unwrap();
    let mut pod: Value =
        serde_json::from_str(cm["data"]["runner-pod.json"].as_str().unwrap()).unwrap();
    pod["metadata"]["name"] = json!("template-check");
    pod["metadata"]["namespace"] = json!("kiln");
    let file = std::env::temp_dir().join(format!("kiln-template-{}.json", std::process::id()));
    std::fs::write(&file, pod.to_string()).unwrap();
    k8s::kubectl(
        &kcfg,
        &["create", "--dry-run=server", "-f", file.to_str().unwrap()],
    );
    k8s::kubectl(&kcfg, &["delete", "-f", dir, "--wait=false"]);
}
