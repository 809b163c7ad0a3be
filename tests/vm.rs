//! Kiln on a cgroup v2 kernel: Debian's 6.1 under qemu (`scripts/vm`), with only the unified
//! hierarchy mounted, serving the binaries of this build. Once as root (the kiln group at the
//! top of the hierarchy), once as an unprivileged user in a delegated subtree (a laptop's user
//! service). Emulation runs programs several times slower than this host: limits are generous
//! and each check is one job. The two VMs boot one after the other.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The delegated subtree `scripts/vm up --user` gives Kiln, as systemd gives a user service.
const USER_SERVICE: &str =
    "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/kiln.service";

/// A running VM, stopped when dropped.
struct Vm {
    user: bool,
    url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/vm")
}

impl Vm {
    fn up(user: bool) -> Vm {
        let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
            .parent()
            .expect("the binaries' folder")
            .to_path_buf();
        let mut cmd = Command::new(script());
        cmd.arg("up").env("KILN_VM_BIN_DIR", &bin_dir);
        if user {
            cmd.arg("--user");
        }
        let out = cmd.output().expect("scripts/vm runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/vm up{} failed:\n{}{}",
            if user { " --user" } else { "" },
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let url = stdout.lines().last().unwrap_or_default().trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "last line: {url:?}");
        Vm { user, url }
    }

    fn args(&self, verb: &str) -> Command {
        let mut cmd = Command::new(script());
        cmd.arg(verb);
        if self.user {
            cmd.arg("--user");
        }
        cmd
    }

    /// Runs a shell command in the guest (as root) and returns what it printed.
    fn exec(&self, shell: &str) -> String {
        let out = self
            .args("exec")
            .arg(shell)
            .output()
            .expect("scripts/vm exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The guest's console and kiln serve's output.
    fn log(&self) -> String {
        let out = self.args("log").output().expect("scripts/vm log");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Submits and waits for the result.
    fn run(&self, submission: Value) -> Value {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(600))
            .build();
        match agent
            .post(&format!("{}/v1/submissions?wait=true", self.url))
            .send_json(submission.clone())
        {
            Ok(r) => r.into_json().expect("a JSON result"),
            Err(e) => panic!("{submission} failed: {e}"),
        }
    }

    /// Waits (up to a minute) until `probe`, run in the guest, prints `want`.
    fn until_guest_says(&self, probe: &str, want: &str) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let said = self.exec(probe);
            if said.trim() == want {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(said);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.args("down").output();
    }
}

fn job(language: &str, source: &str, limits: Value) -> Value {
    json!({"language": language, "source": source, "limits": limits})
}

/// Roomy limits for emulation's speed.
fn roomy() -> Value {
    json!({"wall_time_ms": 120_000, "cpu_time_ms": 60_000})
}

const SPINNER: &str = "#include <pthread.h>\n#include <stdio.h>\nstatic void *spin(void *a){volatile unsigned long x=0;for(;;)x++;return a;}\nint main(void){pthread_t t[4];for(int i=0;i<4;i++)pthread_create(&t[i],0,spin,0);puts(\"spinning\");fflush(stdout);pthread_join(t[0],0);return 0;}";

const FORKS: &str = "import os, time\nn = 0\ntry:\n    for i in range(100):\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError:\n    print('stopped at', n)\n";

/// What both modes must show: `pods_parent` is where the pods' groups live.
fn the_limits_hold(vm: &Vm, pods_parent: &str) {
    assert_eq!(
        vm.exec("nproc").trim(),
        "2",
        "the guest has two CPUs for the quota check"
    );

    // Hello worlds: an interpreter, a compiler, a JVM.
    let python = vm.run(job("python", "print('hello from python')", roomy()));
    assert_eq!(python["status"], "accepted", "{python}");
    assert_eq!(python["stdout"], "hello from python\n", "{python}");
    let c = vm.run(job(
        "c",
        "#include <stdio.h>\nint main(void){puts(\"hello from c\");return 0;}",
        roomy(),
    ));
    assert_eq!(c["status"], "accepted", "{c}");
    assert_eq!(c["stdout"], "hello from c\n", "{c}");
    let java = vm.run(job(
        "java",
        "public class Main { public static void main(String[] a) { System.out.println(\"hello from java\"); } }",
        json!({"wall_time_ms": 300_000, "cpu_time_ms": 200_000}),
    ));
    assert_eq!(java["status"], "accepted", "{java}");
    assert_eq!(java["stdout"], "hello from java\n", "{java}");

    // A memory bomb is killed by the group's memory.max and reported with what it held.
    let bomb = vm.run(job(
        "python",
        "a = []\nwhile True:\n    a.append(b'x' * (8 << 20))",
        json!({"memory_bytes": 64 << 20, "wall_time_ms": 120_000, "cpu_time_ms": 60_000}),
    ));
    assert_eq!(bomb["status"], "memory_limit_exceeded", "{bomb}");
    let used = bomb["memory_bytes"].as_u64().unwrap_or(0);
    assert!(used >= 48 << 20, "the memory it held is reported: {bomb}");

    // Forks stop at pids.max.
    let forks = vm.run(job(
        "python",
        FORKS,
        json!({"processes": 10, "wall_time_ms": 120_000, "cpu_time_ms": 60_000}),
    ));
    let said = forks["stdout"].as_str().unwrap_or_default().to_string();
    let n: u32 = said
        .strip_prefix("stopped at ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("forks were not stopped: {forks}"));
    assert!(n < 10, "{n} forks under a limit of 10 processes: {forks}");

    // Four spinning threads get one core's worth of time under cpus = 1.
    let spin = vm.run(job(
        "c",
        SPINNER,
        json!({"cpus": 1, "wall_time_ms": 8_000, "cpu_time_ms": 60_000}),
    ));
    assert_eq!(spin["status"], "time_limit_exceeded", "{spin}");
    assert_eq!(spin["stdout"], "spinning\n", "{spin}");
    let cores =
        spin["cpu_time_ms"].as_f64().unwrap_or(0.0) / spin["wall_time_ms"].as_f64().unwrap_or(1.0);
    assert!(
        cores <= 1.25,
        "four threads under cpus = 1 used {cores:.2} cores: {spin}"
    );

    // Endless output is cut at the limit, the rest kept.
    let flood = vm.run(job(
        "python",
        "while True:\n    print('x' * 1000)",
        json!({"output_bytes": 65536, "wall_time_ms": 120_000, "cpu_time_ms": 60_000}),
    ));
    assert_eq!(flood["status"], "output_limit_exceeded", "{flood}");
    assert_eq!(
        flood["stdout"].as_str().map(str::len),
        Some(65536),
        "{}",
        flood["message"]
    );

    // A job killed at its wall limit leaves no process in the guest, and its pod's group goes.
    let sleeper = vm.run(job(
        "bash",
        "cat /proc/self/cgroup\nsleep 1001 &\nsleep 1002",
        json!({"wall_time_ms": 15_000, "cpu_time_ms": 60_000}),
    ));
    assert_eq!(sleeper["status"], "time_limit_exceeded", "{sleeper}");
    let group = sleeper["stdout"]
        .as_str()
        .and_then(|s| s.lines().next())
        .and_then(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("the job printed its cgroup: {sleeper}"))
        .to_string();
    let dir = format!("/sys/fs/cgroup{group}");
    assert!(
        dir.starts_with(&format!("{pods_parent}/kiln/pod-")),
        "the pod's group {dir} is under {pods_parent}/kiln"
    );
    vm.until_guest_says("ps -eo args | grep -c '^sleep 100[12]'", "0")
        .unwrap_or_else(|n| panic!("{} sleep processes outlived their job", n.trim()));
    vm.until_guest_says(
        &format!("test -d {dir} && echo present || echo gone"),
        "gone",
    )
    .unwrap_or_else(|_| panic!("the pod's group {dir} was not removed after its job"));
}

#[test]
fn kiln_as_root_on_a_cgroup_v2_kernel() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let vm = Vm::up(false);
    let report = vm.log();
    assert!(
        report.contains("cgroup v2 at /sys/fs/cgroup (controllers: cpuset cpu io memory hugetlb pids rdma misc)"),
        "the start-up report names cgroup v2 and its controllers:\n{report}"
    );
    // 6.1 offers landlock ABI 2: the report says what that leaves to the other layers.
    assert!(report.contains("WEAKER: landlock ABI 2"), "{report}");
    assert!(!report.contains("WEAKER LIMITS"), "{report}");
    the_limits_hold(&vm, "/sys/fs/cgroup");
}

#[test]
fn kiln_as_a_user_in_a_delegated_cgroup_v2_subtree() {
    let _one = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let vm = Vm::up(true);
    let report = vm.log();
    assert!(
        report.contains(&format!(
            "cgroup v2 at {USER_SERVICE}, a subtree delegated to this user (controllers: "
        )),
        "the start-up report names the delegated subtree:\n{report}"
    );
    assert!(report.contains("running unprivileged"), "{report}");
    assert!(!report.contains("WEAKER LIMITS"), "{report}");
    // Kiln itself left the delegated group for a leaf, so the group can hand controllers down.
    let own = vm.exec("cat /proc/$(cat $(dirname $0)/../serve.pid)/cgroup");
    assert!(
        own.trim().ends_with("/kiln.service/supervisor"),
        "kiln serve runs in {own:?}"
    );
    the_limits_hold(&vm, USER_SERVICE);
}
