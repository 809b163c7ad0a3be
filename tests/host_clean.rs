//! After hostile programs and retired pods, the host keeps nothing: no sandbox process, no pod
//! cgroup, no file. Its own test binary, so no other test's pods are alive while it looks.

mod common;

use std::path::Path;

use common::*;
use kiln::pods::PodBackend;
use kiln::submission::RequestedLimits;

/// Processes of `uid` in some other pid namespace than ours: sandboxed programs. (Host daemons
/// that run as nobody live in the host's namespace and do not count.)
fn sandboxed_processes_of_uid(uid: u32) -> Vec<String> {
    let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("");
        let Ok(ns) = std::fs::read_link(entry.path().join("ns/pid")) else {
            continue;
        };
        if real_uid == uid.to_string() && ns != ours {
            found.push(status.lines().next().unwrap_or("").to_string());
        }
    }
    found
}

/// Children of this test process other than `except` (a live backend's fork server).
fn runner_children(except: Option<u32>) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
        if ppid == me && (pid.is_none() || pid != except) {
            found.push(stat);
        }
    }
    found
}

fn pod_cgroups_of_this_process() -> Vec<String> {
    let prefix = format!("pod-{}-", std::process::id());
    [
        "/sys/fs/cgroup/memory/kiln",
        "/sys/fs/cgroup/pids/kiln",
        "/sys/fs/cgroup/cpuacct/kiln",
        "/sys/fs/cgroup/kiln",
    ]
    .iter()
    .filter(|d| Path::new(d).is_dir())
    .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .filter(|n| n.starts_with(&prefix))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_runs_and_retired_pods_leave_nothing_behind() {
    let quick = RequestedLimits {
        wall_time_ms: Some(1500),
        processes: Some(32),
        ..Default::default()
    };
    let programs = [
        ("bash", ":(){ :|:& };:\nsleep 100"),
        ("python", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True: time.sleep(0.1)\ntime.sleep(100)"),
        ("python", "import os\nfor i in range(20):\n    if os.fork() == 0:\n        while True: pass\nwhile True: pass"),
        ("bash", "nohup sleep 1000 >/dev/null 2>&1 &\ndisown\necho bye"),
        ("bash", "kill -9 -1"),
    ];
    let runs = programs.iter().map(|(lang, src)| {
        let mut s = source(lang, src);
        s.limits = quick.clone();
        run(s)
    });
    futures_util::future::join_all(runs).await;

    // Pods made and retired without a job.
    let backend = backend();
    let server = backend.fork_server_pid();
    assert!(server.is_some(), "the fork server runs on this root host");
    for _ in 0..5 {
        backend
            .create(0)
            .await
            .expect("standby pod")
            .destroy()
            .await;
    }

    // Retiring happens off the result path; give it a moment.
    for _ in 0..100 {
        if sandboxed_processes_of_uid(65534).is_empty()
            && runner_children(server).is_empty()
            && pod_cgroups_of_this_process().is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        sandboxed_processes_of_uid(65534),
        Vec::<String>::new(),
        "sandbox processes left on the host"
    );
    assert_eq!(
        runner_children(server),
        Vec::<String>::new(),
        "runner processes left (zombies or alive)"
    );
    assert_eq!(
        pod_cgroups_of_this_process(),
        Vec::<String>::new(),
        "pod cgroups left"
    );

    // The fork server goes with its backend.
    drop(backend);
    assert_eq!(
        runner_children(None),
        Vec::<String>::new(),
        "the fork server outlived its backend"
    );
}
