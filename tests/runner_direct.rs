//! `kiln-runner run`: the runner on its own, as it runs inside a Kubernetes pod (no namespaces or
//! cgroups of its own): rlimits, no_new_privs, seccomp and landlock still hold.

use crate::common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::*;
use kiln::outcome::{Outcome, Status};
use kiln::submission::LimitPolicy;

fn run_direct(program: &str, as_nobody: bool) -> Outcome {
    let job = source("python", program)
        .resolve("direct", registry(), &LimitPolicy::default())
        .unwrap();
    let mut cmd = Command::new(runner_path());
    cmd.args(["run", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .env("TMPDIR", "/tmp");
    if as_nobody {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&job).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)))
}

const PROBE: &str = r#"
import os, signal
try:
    open('/var/tmp/kiln-escape', 'w').write('x'); print('outside WROTE')
except OSError as e:
    print('outside denied', e.errno)
open('inside.txt', 'w').write('x'); print('work dir ok')
try:
    os.kill(os.getppid(), signal.SIGKILL); print('parent KILLED')
except OSError as e:
    print('parent denied', e.errno)
"#;

#[test]
fn unprivileged_runner_confines_writes_and_protects_itself() {
    if unsafe { libc::geteuid() } != 0 {
        return; // the test switches to uid 65534 to share the runner's identity
    }
    let o = run_direct(PROBE, true);
    let out = String::from_utf8_lossy(&o.stdout.0).into_owned();
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert!(
        out.contains("outside denied 13"),
        "landlock stops writes outside the work dir: {out}"
    );
    assert!(out.contains("work dir ok"), "{out}");
    assert!(
        out.contains("parent denied 1"),
        "landlock's signal scope protects the runner: {out}"
    );
    assert!(!std::path::Path::new("/var/tmp/kiln-escape").exists());
}

#[test]
fn root_runner_drops_to_the_sandbox_user() {
    let o = run_direct("import os; print(os.getuid(), os.getgid())", false);
    let expected = if unsafe { libc::geteuid() } == 0 {
        "65534 65534\n".to_string()
    } else {
        format!("{} {}\n", unsafe { libc::getuid() }, unsafe {
            libc::getgid()
        })
    };
    assert_eq!(String::from_utf8_lossy(&o.stdout.0), expected, "{o:?}");
}

#[test]
fn a_malformed_job_is_rejected_with_a_reason() {
    let mut child = Command::new(runner_path())
        .args(["run", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    let o: Outcome = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o.status, Status::Rejected);
    assert!(o.message.unwrap().contains("not valid JSON"));
    // bincode (the default) too
    let mut child = Command::new(runner_path())
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&[0xff; 64]).unwrap();
    let out = child.wait_with_output().unwrap();
    let (o, _): (Outcome, usize) =
        bincode::serde::decode_from_slice(&out.stdout, bincode::config::standard()).unwrap();
    assert_eq!(o.status, Status::Rejected);
    assert!(o.message.unwrap().contains("not valid bincode"));
}
