//! The execution engine against real sandboxes: statuses, bytes of output, measurements, and
//! the hostile programs peers are attacked with. Every test runs a real `kiln-runner` as pid 1
//! of fresh namespaces with a real cgroup.

use crate::common;

use common::*;
use kiln::outcome::Status;
use kiln::submission::{Encoding, RequestedLimits, Submission, SubmittedFile};

fn with_limits(mut s: Submission, limits: RequestedLimits) -> Submission {
    s.limits = limits;
    s
}

fn text(b: &kiln::bytes::Bytes) -> String {
    String::from_utf8_lossy(&b.0).into_owned()
}

#[tokio::test]
async fn python_hello_is_accepted_with_its_output() {
    let o = run(source("python", "print('hello')")).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(o.stdout.0, b"hello\n");
    assert_eq!(o.exit_code, Some(0));
    assert!(o.memory_bytes > 0, "peak memory is measured: {o:?}");
}

#[tokio::test]
async fn stdin_and_args_reach_the_program() {
    let mut s = source(
        "python",
        "import sys; print(sys.stdin.read().upper(), sys.argv[1:])",
    );
    s.stdin = "abc".into();
    s.args = vec!["x".into(), "y z".into()];
    let o = run(s).await;
    assert_eq!(text(&o.stdout), "ABC ['x', 'y z']\n", "{o:?}");
}

#[tokio::test]
async fn non_zero_exit_is_a_runtime_error_with_stderr_kept() {
    let o = run(source(
        "python",
        "import sys; print('out'); sys.stderr.write('bad\\n'); sys.exit(3)",
    ))
    .await;
    assert_eq!(o.status, Status::RuntimeError, "{o:?}");
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "bad\n");
}

#[tokio::test]
async fn expected_output_decides_accepted_or_wrong_answer() {
    let mut s = source("python", "print('42  ')\nprint()");
    s.expected_output = Some("42\n".into());
    assert_eq!(run(s.clone()).await.status, Status::Accepted);
    s.expected_output = Some("43".into());
    let o = run(s).await;
    assert_eq!(o.status, Status::WrongAnswer, "{o:?}");
}

#[tokio::test]
async fn infinite_cpu_loop_is_a_time_limit_on_cpu() {
    let s = with_limits(
        source("python", "while True: pass"),
        // A wall-time limit far past the CPU one: a busy host slows the loop, it does not
        // change which limit ends it.
        RequestedLimits {
            cpu_time_ms: Some(500),
            wall_time_ms: Some(30_000),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::TimeLimitExceeded, "{o:?}");
    assert!(
        o.message.as_deref().unwrap_or("").contains("cpu"),
        "stopped by the cpu limit, not the wall limit: {o:?}"
    );
    assert!(
        o.cpu_time_ms >= 500,
        "it used up its 500 ms of CPU time: {o:?}"
    );
}

#[tokio::test]
async fn sleeping_forever_is_a_time_limit_on_wall_time() {
    let s = with_limits(
        source("python", "import time; time.sleep(1000)"),
        RequestedLimits {
            wall_time_ms: Some(700),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::TimeLimitExceeded, "{o:?}");
    assert!(o.message.as_deref().unwrap_or("").contains("wall"), "{o:?}");
    assert!(o.wall_time_ms >= 700 && o.wall_time_ms < 3000, "{o:?}");
}

#[tokio::test]
async fn memory_bomb_is_a_memory_limit() {
    let s = with_limits(
        source("python", "x = []\nwhile True: x.append(bytearray(1 << 20))"),
        RequestedLimits {
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::MemoryLimitExceeded, "{o:?}");
}

#[tokio::test]
async fn own_sigkill_is_a_signal_not_a_limit() {
    let o = run(source(
        "python",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    ))
    .await;
    assert_eq!(o.status, Status::Signaled, "{o:?}");
    assert_eq!(o.signal, Some(9));
}

#[tokio::test]
async fn fork_bomb_is_contained_and_ends() {
    let s = with_limits(
        source("bash", ":(){ :|:& };:\nsleep 5"),
        RequestedLimits {
            processes: Some(32),
            wall_time_ms: Some(2000),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::TimeLimitExceeded, "{o:?}");
}

#[tokio::test]
async fn processes_limit_stops_forking_past_it() {
    let program = "import os\nn = 0\ntry:\n    for i in range(100):\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped at', n)\n";
    let s = with_limits(
        source("python", program),
        RequestedLimits {
            processes: Some(10),
            ..Default::default()
        },
    );
    let o = run(s).await;
    let out = text(&o.stdout);
    assert!(out.starts_with("stopped at "), "{o:?}");
    let n: u32 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n < 10, "no more than the limit: {n}");
}

#[tokio::test]
async fn child_outliving_its_parent_is_killed_with_it() {
    // The parent exits at once; the child would write a line after a second. Its output must not
    // appear and the run must end promptly.
    let program = "import os, time, sys\nif os.fork() == 0:\n    time.sleep(1.5)\n    print('child survived', flush=True)\n    os._exit(0)\nprint('parent done')";
    let o = run(source("python", program)).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(text(&o.stdout), "parent done\n");
    assert!(o.wall_time_ms < 1500, "{o:?}");
}

#[tokio::test]
async fn a_detached_child_after_a_timeout_is_killed_too() {
    let program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True: time.sleep(0.1)\ntime.sleep(100)";
    let s = with_limits(
        source("python", program),
        RequestedLimits {
            wall_time_ms: Some(500),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::TimeLimitExceeded, "{o:?}");
}

#[tokio::test]
async fn a_gigabyte_of_output_is_capped_and_the_first_bytes_kept() {
    let s = with_limits(
        source("python", "import sys\nsys.stdout.write('A' * 10)\nsys.stdout.flush()\nwhile True: sys.stdout.write('B' * 65536)"),
        RequestedLimits { output_bytes: Some(100_000), ..Default::default() },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::OutputLimitExceeded, "{o:?}");
    assert_eq!(o.stdout.len(), 100_000);
    assert_eq!(&o.stdout.0[..11], b"AAAAAAAAAAB");
}

#[tokio::test]
async fn filling_the_disk_fails_inside_the_sandbox_only() {
    // Files of 8 MiB (under the file size limit) until the pod's tmpfs is full; memory is set
    // high so that the tmpfs, not the memory limit, is what stops it.
    let program = "import os\nn = 0\ntry:\n    while True:\n        with open(f'fill{n}', 'wb') as f:\n            f.write(b'x' * (8 << 20))\n        n += 1\nexcept OSError as e:\n    print('full after', n, e.errno)";
    let s = with_limits(
        source("python", program),
        RequestedLimits {
            memory_bytes: Some(2 << 30),
            ..Default::default()
        },
    );
    let o = run(s).await;
    let out = text(&o.stdout);
    assert!(out.starts_with("full after"), "{o:?}");
    assert!(
        out.trim().ends_with(" 28"),
        "ENOSPC from the pod's own tmpfs: {out}"
    );
}

#[tokio::test]
async fn file_size_limit_stops_big_files() {
    // C, because Python ignores SIGXFSZ and turns it into an exception.
    let program = "#include <stdio.h>\nint main(void) { static char b[1 << 20]; FILE *f = fopen(\"big\", \"wb\"); for (int i = 0; i < 4; i++) fwrite(b, 1, sizeof b, f); fclose(f); return 0; }";
    let s = with_limits(
        source("c", program),
        RequestedLimits {
            file_size_bytes: Some(1 << 20),
            ..Default::default()
        },
    );
    let o = run(s).await;
    assert_eq!(o.status, Status::Signaled, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGXFSZ));
}

#[tokio::test]
async fn host_loopback_is_unreachable() {
    // Something listens on the host's loopback; the sandbox must not reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let program = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
    );
    let o = run(source("python", &program)).await;
    assert!(text(&o.stdout).starts_with("refused"), "{o:?}");
}

#[tokio::test]
async fn host_secrets_and_the_project_are_invisible() {
    let project = env!("CARGO_MANIFEST_DIR");
    let program = format!(
        "import os\nfor p in ['/etc/shadow', '/root', '{project}/Cargo.toml', '/home']:\n    try:\n        with open(p) as f: print(p, 'READ', f.read(10))\n    except OSError as e:\n        print(p, 'denied', e.errno)\nprint(sorted(os.listdir('/root')) if os.path.isdir('/root') else 'no /root')"
    );
    let o = run(source("python", &program)).await;
    let out = text(&o.stdout);
    assert!(!out.contains("READ"), "{out}");
    assert!(out.contains("/etc/shadow denied"), "{out}");
    assert!(
        out.contains(&format!("{project}/Cargo.toml denied 2")),
        "the checkout does not exist inside: {out}"
    );
    // /root holds at most the read-only rustup toolchain the registry mounts: no dotfiles, keys
    // or history.
    let listing = out.lines().last().unwrap_or("");
    assert!(
        listing == "[]" || listing == "['.rustup']" || listing == "no /root",
        "{listing}"
    );
}

#[tokio::test]
async fn concurrent_pods_cannot_see_each_other() {
    let backend = backend();
    let writer = run_on(&backend, source("python", "import time\nopen('/tmp/pod-a-secret', 'w').write('x')\nopen('secret.txt', 'w').write('x')\ntime.sleep(1.5)"));
    let reader = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        run_on(
            &backend,
            source(
            "python",
            "import os, glob\nprint(glob.glob('/tmp/*'), glob.glob('/work/*'), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()])",
            ),
        )
        .await
    };
    let (_, r) = tokio::join!(writer, reader);
    let out = text(&r.stdout);
    assert!(!out.contains("secret"), "{out}");
    // Only the pod's own runner (pid 1) and the program itself are visible.
    assert!(out.trim_end().ends_with("True"), "{out}");
}

#[tokio::test]
async fn writing_outside_the_work_dir_fails() {
    let program = "import os\nfor p in ['/usr/evil', '/etc/evil', '/evil', '/proc/sys/kernel/hostname']:\n    try:\n        open(p, 'w').write('x'); print(p, 'WROTE')\n    except OSError as e:\n        print(p, 'denied')\nopen('ok.txt', 'w').write('fine'); print('work dir ok')";
    let o = run(source("python", program)).await;
    let out = text(&o.stdout);
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("work dir ok"), "{out}");
}

#[tokio::test]
async fn files_left_in_tmp_are_gone_for_the_next_run() {
    let marker = format!("/tmp/kiln-left-behind-{}", std::process::id());
    let first = run(source(
        "python",
        &format!(
            "open('{marker}', 'w').write('x'); open('left.txt','w').write('x'); print('written')"
        ),
    ))
    .await;
    assert_eq!(text(&first.stdout), "written\n", "{first:?}");
    let second = run(source(
        "python",
        &format!("import os; print(os.path.exists('{marker}'), os.path.exists('left.txt'))"),
    ))
    .await;
    assert_eq!(text(&second.stdout), "False False\n", "{second:?}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "nothing reached the host's /tmp"
    );
}

#[tokio::test]
async fn kill_all_processes_does_not_kill_the_runner() {
    let o = run(source("bash", "echo before; kill -9 -1; echo after")).await;
    // The program kills itself with everything it may signal; the runner survives and reports.
    assert!(
        matches!(o.status, Status::Signaled | Status::Accepted),
        "{o:?}"
    );
    assert!(text(&o.stdout).starts_with("before"), "{o:?}");
}

#[tokio::test]
async fn hostname_mount_and_ptrace_are_refused() {
    let program = r#"
import ctypes, socket, os
libc = ctypes.CDLL(None, use_errno=True)
print('hostname', socket.gethostname())
r = libc.sethostname(b'evil', 4); print('sethostname', r, ctypes.get_errno())
r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None); print('mount', r, ctypes.get_errno())
r = libc.ptrace(0, 0, None, None); print('ptrace', r, ctypes.get_errno())
r = libc.unshare(0x10000000); print('unshare', r, ctypes.get_errno())
"#;
    let o = run(source("python", program)).await;
    let out = text(&o.stdout);
    assert!(out.contains("hostname kiln"), "{out}");
    assert!(out.contains("sethostname -1 1"), "{out}");
    assert!(out.contains("mount -1 1"), "{out}");
    assert!(out.contains("ptrace -1 1"), "{out}");
    assert!(out.contains("unshare -1 1"), "{out}");
}

/// A job's processes run on the cores it was given (one by default) and cannot take more: the
/// interpreter forked from the fork server, the runner's own zygote (bash) and their children.
#[tokio::test]
async fn a_program_stays_on_the_cores_its_job_was_given() {
    let python = r#"
import os
print('mine', len(os.sched_getaffinity(0)), flush=True)
pid = os.fork()
if pid == 0:
    print('child', len(os.sched_getaffinity(0)), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
try:
    os.sched_setaffinity(0, range(os.cpu_count()))
    print('widened', len(os.sched_getaffinity(0)))
except PermissionError:
    print('refused')
"#;
    let o = run(source("python", python)).await;
    let out = text(&o.stdout);
    assert_eq!(out, "mine 1\nchild 1\nrefused\n", "{o:?}");
    let bash = "grep Cpus_allowed_list /proc/self/status | tr -d '\\t'\n\
                taskset -pc 0-1023 $$ 2>&1; echo rc $?";
    let o = run(source("bash", bash)).await;
    let out = text(&o.stdout);
    let line = out.lines().next().unwrap_or_default();
    let allowed = line.strip_prefix("Cpus_allowed_list:").unwrap_or_default();
    assert!(
        !allowed.is_empty() && !allowed.contains(['-', ',']),
        "one core: {o:?}"
    );
    assert!(out.contains("Operation not permitted"), "{o:?}");
}

#[tokio::test]
async fn a_huge_argv_is_passed_through() {
    let mut s = source(
        "python",
        "import sys; print(len(sys.argv) - 1, sum(map(len, sys.argv[1:])))",
    );
    s.args = (0..200).map(|_| "a".repeat(1000)).collect();
    let o = run(s).await;
    assert_eq!(text(&o.stdout), "200 200000\n", "{o:?}");
}

#[tokio::test]
async fn invalid_utf8_and_binary_output_come_back_byte_for_byte() {
    let o = run(source(
        "python",
        "import sys; sys.stdout.buffer.write(bytes(range(256)))",
    ))
    .await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(o.stdout.0, (0u8..=255).collect::<Vec<u8>>());
}

#[tokio::test]
async fn a_hundred_megabytes_of_stdin_are_read() {
    let mut s = source(
        "python",
        "import sys, hashlib; d = sys.stdin.buffer.read(); print(len(d))",
    );
    s.stdin = "x".repeat(100 << 20);
    let policy = kiln::submission::LimitPolicy {
        max_submission_bytes: 128 << 20,
        ..Default::default()
    };
    let o = run_with(
        with_limits(
            s,
            RequestedLimits {
                memory_bytes: Some(512 << 20),
                ..Default::default()
            },
        ),
        &policy,
    )
    .await;
    assert_eq!(text(&o.stdout), format!("{}\n", 100 << 20), "{o:?}");
}

#[tokio::test]
async fn a_program_that_ignores_stdin_is_fine() {
    let mut s = source("python", "print('ignored')");
    s.stdin = "y".repeat(10 << 20);
    let o = run(s).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
}

#[tokio::test]
async fn c_segfault_divide_by_zero_and_abort_are_signals() {
    for (body, sig) in [
        ("int *p = 0; *p = 1;", libc::SIGSEGV),
        ("volatile int z = 0; printf(\"%d\", 7 / z);", libc::SIGFPE),
        ("abort();", libc::SIGABRT),
    ] {
        let program = format!(
            "#include <stdio.h>\n#include <stdlib.h>\nint main(void) {{ {body} return 0; }}\n"
        );
        let o = run(source("c", &program)).await;
        assert_eq!(o.status, Status::Signaled, "{body}: {o:?}");
        assert_eq!(o.signal, Some(sig), "{body}: {o:?}");
    }
}

#[tokio::test]
async fn a_compile_error_reports_the_compiler_output() {
    let o = run(source("c", "int main(void) { return undefined_name; }")).await;
    assert_eq!(o.status, Status::CompileError, "{o:?}");
    assert!(text(&o.compile_output).contains("undefined_name"), "{o:?}");
}

#[tokio::test]
async fn a_compile_that_never_ends_is_stopped() {
    let mut s = source("c", "#include </dev/random>\nint main(void) { return 0; }");
    s.limits.wall_time_ms = Some(1000);
    let job_policy = kiln::submission::LimitPolicy {
        compile: kiln::job::Limits {
            wall_time_ms: 2000,
            cpu_time_ms: 2000,
            ..kiln::submission::LimitPolicy::default().compile
        },
        ..Default::default()
    };
    let job = s.resolve("test", registry(), &job_policy).unwrap();
    use kiln::pods::PodBackend;
    let pod = backend().create(0).await.unwrap();
    let o = pod.run(job).await.unwrap().outcome;
    assert_eq!(o.status, Status::CompileError, "{o:?}");
    // Reading /dev/random forever ends on the compile time or memory limit, whichever is first.
    assert!(
        o.message
            .as_deref()
            .unwrap_or("")
            .contains("compilation exceeded"),
        "{o:?}"
    );
}

#[tokio::test]
async fn c_and_cpp_compile_and_run() {
    let o = run(source(
        "c",
        "#include <stdio.h>\nint main(void) { printf(\"c ok\\n\"); return 0; }",
    ))
    .await;
    assert_eq!(text(&o.stdout), "c ok\n", "{o:?}");
    let o = run(source(
        "cpp",
        "#include <iostream>\nint main() { std::cout << \"cpp ok\" << std::endl; }",
    ))
    .await;
    assert_eq!(text(&o.stdout), "cpp ok\n", "{o:?}");
}

#[tokio::test]
async fn base64_and_hex_files_are_decoded_and_extra_files_are_present() {
    let s = Submission {
        language: "python".into(),
        files: vec![
            SubmittedFile {
                name: None,
                content: "aW1wb3J0IGhlbHBlcgpwcmludChoZWxwZXIuWCk=".into(),
                encoding: Encoding::Base64,
            },
            SubmittedFile {
                name: Some("helper.py".into()),
                content: "58203d2037".into(),
                encoding: Encoding::Hex,
            },
        ],
        ..Default::default()
    };
    let o = run(s).await;
    assert_eq!(text(&o.stdout), "7\n", "{o:?}");
}

#[test]
fn as_root_on_this_host_pods_get_a_cgroup() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let b = backend();
    assert!(
        !matches!(
            b.cgroups(),
            kiln::sandbox::cgroup::CgroupLayout::Unavailable { .. }
        ),
        "limits silently fell back to rlimits: {}",
        b.cgroups().describe()
    );
}

#[tokio::test]
async fn pods_cannot_reach_each_others_abstract_unix_sockets() {
    // Both pods from one backend: they may share its network namespace, where only landlock's
    // scoping keeps abstract sockets apart.
    let backend = backend();
    let listener = run_on(
        &backend,
        source(
            "python",
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0kiln-cross-pod')\ns.listen()\ns.settimeout(2)\ntry:\n    s.accept(); print('ACCEPTED')\nexcept OSError as e:\n    print('nobody came')",
        ),
    );
    let connector = async {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        run_on(
            &backend,
            source(
                "python",
                "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0kiln-cross-pod'); print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)",
            ),
        )
        .await
    };
    let (l, c) = tokio::join!(listener, connector);
    assert_eq!(text(&l.stdout), "nobody came\n", "{l:?}");
    assert!(text(&c.stdout).starts_with("refused"), "{c:?}");
}

#[tokio::test]
async fn a_warm_cache_is_read_from_the_host_and_written_only_in_the_pod() {
    let host = std::env::temp_dir().join(format!("kiln-warm-test-{}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("entry"), "warm").unwrap();
    let backend = backend();
    if !backend.add_overlay(host.clone(), "/tmp/cache".into()) {
        return; // unprivileged: pods get no warm caches
    }
    let o = run_on(
        &backend,
        source(
            "python",
            "import os\nprint(open('/tmp/cache/entry').read())\nopen('/tmp/cache/new', 'w').write('x')\ntry:\n    open('/tmp/cache/entry', 'w').write('changed')\nexcept PermissionError:\n    print('entry is root-owned')\nprint(sorted(os.listdir('/tmp/cache')))",
        ),
    )
    .await;
    assert_eq!(
        text(&o.stdout),
        "warm\nentry is root-owned\n['entry', 'new']\n",
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("entry")).unwrap(),
        "warm",
        "the host copy is untouched"
    );
    assert!(!host.join("new").exists(), "writes stay in the pod");
    std::fs::remove_dir_all(&host).unwrap();
}

/// A bash job with a compile step of its own: `script` run by bash, with the run step's limits
/// (and `wall_time_ms` when given).
fn bash_with_compile_step(script: &str, wall_time_ms: Option<u64>) -> kiln::job::Job {
    let mut job = source("bash", "unused")
        .resolve(
            "test",
            registry(),
            &kiln::submission::LimitPolicy::default(),
        )
        .unwrap();
    let mut limits = job.run.limits.clone();
    limits.wall_time_ms = wall_time_ms.unwrap_or(limits.wall_time_ms);
    job.compile = Some(kiln::job::Stage {
        argv: vec![job.run.argv[0].clone(), "-c".into(), script.into()],
        limits,
    });
    job
}

#[tokio::test]
async fn nothing_started_by_the_compile_step_survives_into_the_run() {
    // A compile step that leaves a process behind (an operator's script could); the run step
    // must find only the pod's runner and itself.
    let mut job = bash_with_compile_step("sleep 100 & sleep 100 & echo compiled", None);
    job.run.argv = vec![
        job.run.argv[0].clone(),
        "-c".into(),
        "cd /proc; echo [0-9]*".into(),
    ];
    use kiln::pods::PodBackend;
    let pod = backend().create(0).await.unwrap();
    let o = pod.run(job).await.unwrap().outcome;
    assert_eq!(text(&o.compile_output), "compiled\n", "{o:?}");
    let pids: Vec<&str> = std::str::from_utf8(&o.stdout.0)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "only pid 1 and the run step itself: {pids:?}"
    );
    assert!(pids.contains(&"1"), "{pids:?}");
}

#[tokio::test]
async fn stderr_can_be_redirected_into_stdout_in_order() {
    let mut s = source("python", "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\nprint('c', flush=True)");
    s.redirect_stderr_to_stdout = true;
    let o = run(s).await;
    assert_eq!(text(&o.stdout), "a\nb\nc\n", "{o:?}");
    assert!(o.stderr.is_empty(), "{o:?}");
}

#[tokio::test]
async fn a_local_pods_outcome_says_where_the_time_went() {
    use kiln::pods::PodBackend;
    let c = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";
    for (language, code, steps) in [("c", c, 2), ("bash", "echo hi", 1)] {
        let job = source(language, code)
            .resolve(
                "test",
                registry(),
                &kiln::submission::LimitPolicy::default(),
            )
            .unwrap();
        let pod = backend().create(0).await.unwrap();
        let o = pod.run(job).await.unwrap();
        assert_eq!(o.outcome.stdout.0, b"hi\n", "{o:?}");
        let t = o.timing.expect("a local pod's runner reports its timing");
        assert_eq!(t.steps.len(), steps, "{language}: {t:?}");
        // Every stamp follows the one before it: prepared, each step's four, done.
        let stamps: Vec<u64> = std::iter::once(t.prepared_us)
            .chain(t.steps.iter().flatten().copied())
            .chain(std::iter::once(t.done_us))
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{language}: {t:?}");
        // The program's own part (exec to exit) is inside the step and took some time.
        let [_, launched, ended, _] = t.steps[steps - 1];
        assert!(ended > launched, "{language}: {t:?}");
    }
}

#[tokio::test]
async fn a_compile_step_of_one_process_that_never_ends_is_stopped() {
    // One process alone in the compile step (no children): it must be killed at its limit,
    // not left to run because the pod looks otherwise empty.
    let job = bash_with_compile_step("exec sleep 100", Some(1000));
    use kiln::pods::PodBackend;
    // Without the fork server: no interpreter of its own in the pod beside the step's process.
    let pod = backend_with_fork_server(false).create(0).await.unwrap();
    let o = tokio::time::timeout(std::time::Duration::from_secs(30), pod.run(job))
        .await
        .expect("the job ends (its compile step has a 1 s wall limit)")
        .unwrap()
        .outcome;
    assert_eq!(o.status, Status::CompileError, "{o:?}");
    assert!(
        o.message
            .as_deref()
            .unwrap_or("")
            .contains("compilation exceeded its time limit"),
        "{o:?}"
    );
}
