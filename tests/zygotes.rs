//! Which processes a standby pod holds ready: the runner's own zygotes (one per step of a
//! compiled language) and the fork server's interpreter, each only while recent jobs use it.
//! Alone in its own test binary, so that every pod runner under this process is one of this
//! test's.

mod common;

use std::time::{Duration, Instant};

use common::{run_on, source};
use kiln::pods::PodBackend;

/// (pid, parent, command name) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let close = stat.rfind(')')?;
            let comm = stat[stat.find('(')? + 1..close].to_string();
            let ppid = stat[close + 2..].split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect()
}

/// The command names of the children of the one pod runner left under this test (pods used
/// earlier are torn down in the background: waits for them to go).
fn standby_pod_children() -> Vec<String> {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = processes();
        let runners: Vec<u32> = all
            .iter()
            .filter(|(_, ppid, comm)| *ppid == me && comm == "kiln-runner")
            .map(|(pid, _, _)| *pid)
            .collect();
        if runners.len() == 1 {
            let mut kids: Vec<String> = all
                .iter()
                .filter(|(_, ppid, _)| *ppid == runners[0])
                .map(|(_, _, comm)| {
                    if comm.starts_with("python") {
                        "python".to_string()
                    } else {
                        comm.clone()
                    }
                })
                .collect();
            kids.sort();
            return kids;
        }
        assert!(
            Instant::now() < deadline,
            "pod runners under this test: {runners:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes a standby pod, checks the processes it holds, and removes it.
async fn a_standby_pod_holds(backend: &kiln::pods::local::LocalBackend, expected: &[&str]) {
    let pod = backend.create(0).await.expect("standby pod");
    assert_eq!(standby_pod_children(), expected);
    pod.destroy().await;
}

#[tokio::test]
async fn pods_hold_the_processes_recent_jobs_needed() {
    let backend = common::backend_with_fork_server(true);
    assert!(
        backend.fork_server_pid().is_some(),
        "{:?}",
        backend.describe()
    );

    // At first a pod holds all: the forked interpreter and the runner's own zygotes, one for
    // each step of a compiled language.
    a_standby_pod_holds(&backend, &["kiln-runner", "kiln-runner", "python"]).await;

    // After 32 jobs in a row that were all forked, pods hold only the forked interpreter.
    for i in 0..32 {
        let o = run_on(&backend, source("python", &format!("print({i})"))).await;
        assert!(o.forked, "{o:?}");
        assert_eq!(o.stdout.0, format!("{i}\n").as_bytes());
    }
    a_standby_pod_holds(&backend, &["python"]).await;

    // A job that needs the runner's own processes still runs on such a pod (they are forked
    // then), compiled or not...
    let c = "#include <stdio.h>\nint main(void) { puts(\"from c\"); return 3; }\n";
    let o = run_on(&backend, source("c", c)).await;
    assert_eq!(o.stdout.0, b"from c\n", "{o:?}");
    assert_eq!(o.exit_code, Some(3), "{o:?}");
    // ...and the pods after it hold all again.
    a_standby_pod_holds(&backend, &["kiln-runner", "kiln-runner", "python"]).await;

    // After 32 jobs without a compile step (Python and shell), one zygote of the runner's.
    for i in 0..32 {
        let (language, code) = if i % 2 == 0 {
            ("python", format!("print({i})"))
        } else {
            ("bash", format!("echo {i}"))
        };
        let o = run_on(&backend, source(language, &code)).await;
        assert_eq!(o.stdout.0, format!("{i}\n").as_bytes(), "{o:?}");
        assert_eq!(o.forked, language == "python", "{o:?}");
    }
    a_standby_pod_holds(&backend, &["kiln-runner", "python"]).await;
}
