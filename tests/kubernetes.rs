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

    // A compiled language's outcome travels the same way.
    let (_, c) = server.post(
        "/v1/submissions?wait=true",
        &json!({"language": "c", "source": "#include <stdio.h>\nint main(void) { int x; scanf(\"%d\", &x); printf(\"%d\\n\", x + 1); return 0; }", "stdin": "41"}),
    );
    assert_eq!(c["status"], "accepted", "{c}");
    assert_eq!(c["stdout"], "42\n");
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
    let pod = log
        .lives()
        .into_iter()
        .find(|l| l.jobs.iter().any(|j| j.starts_with(id)))
        .expect("a pod ran the job")
        .name;
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
    let pod = log
        .lives()
        .into_iter()
        .find(|l| l.jobs.iter().any(|j| j.starts_with(id)))
        .expect("a pod was claimed for the job")
        .name;
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
        assert_eq!(by_id.get(id), Some(&1), "job {id}");
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
    let id = submit(
        &server,
        &python("import time\ntime.sleep(2)\nprint('done')", ""),
    );
    // The pod the first attempt claimed, deleted while the program sleeps.
    let until = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some(l) = log
            .lives()
            .into_iter()
            .find(|l| l.jobs.iter().any(|j| j.starts_with(&id)))
        {
            break l.name;
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
            submit(
                &server,
                &python(&format!("import time\ntime.sleep(1.5)\nprint({i})"), ""),
            )
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
    let pool_of = |id: &str| {
        let life = log
            .lives()
            .into_iter()
            .find(|l| l.jobs.iter().any(|j| j.starts_with(id)))
            .unwrap();
        life.name
    };
    assert!(pool_of(py["id"].as_str().unwrap()).starts_with("kiln-py-"));
    assert!(pool_of(c["id"].as_str().unwrap()).starts_with("kiln-native-"));
}
