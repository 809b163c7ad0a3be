//! The Python fork server (src/runner/pyfork/) against the plain exec of the interpreter, in
//! real pods: a forked run must be indistinguishable from an exec'd one, and must really have
//! been forked.

use crate::common;

use common::{run_on, source};
use kiln::outcome::Status;
use kiln::pods::local::LocalBackend;
use kiln::pods::PodBackend;

fn backend(fork_server: bool) -> LocalBackend {
    common::backend_with_fork_server(fork_server)
}

/// Everything a program can observe about how it was started.
const INTROSPECT: &str = r#"
import sys, os, signal, resource, json, site
fds = {}
for f in sorted(os.listdir("/proc/self/fd")):
    try:
        fds[f] = os.readlink("/proc/self/fd/" + f).split("[")[0]
    except OSError as e:
        fds[f] = "gone"
status = {}
for line in open("/proc/self/status"):
    k, v = line.split(":", 1)
    if k in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "CapPrm", "Uid", "Gid", "Groups"):
        status[k] = v.strip()
try:
    os.kill(os.getppid(), signal.SIGKILL)
    kill_parent = "killed"
except OSError as e:
    kill_parent = type(e).__name__
out = {
    "argv": sys.argv, "orig_argv": sys.orig_argv, "path": sys.path, "file": __file__,
    "name": __name__, "main": sorted(globals()), "modules": sorted(sys.modules),
    "flags": str(sys.flags), "executable": sys.executable, "prefix": sys.prefix,
    "env": dict(os.environ), "cwd": os.getcwd(), "ppid": os.getppid(), "kill_parent": kill_parent,
    "signals": {s: str(signal.getsignal(getattr(signal, s)))
                for s in ("SIGINT", "SIGPIPE", "SIGCHLD", "SIGTERM", "SIGXFSZ", "SIGHUP", "SIGUSR1")},
    "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "rlimits": {r: resource.getrlimit(getattr(resource, r))
                for r in ("RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_AS", "RLIMIT_NPROC")},
    "fds": fds,
    "stdio": [sys.stdin.encoding, sys.stdin.isatty(), sys.stdout.line_buffering, sys.stdout.encoding,
              sys.stderr.errors, sys.stderr.line_buffering],
    "own_group": os.getpgrp() == os.getpid(), "user_site": site.USER_SITE, "user_base": site.USER_BASE,
    "enable_user_site": site.ENABLE_USER_SITE, "importer_cache": sorted(sys.path_importer_cache),
    "status": status, "cgroups": open("/proc/self/cgroup").read().count("\n"),
    "stdin": sys.stdin.read(),
    "proc_cmdline": open("/proc/self/cmdline", "rb").read().decode(),
    "proc_environ": open("/proc/self/environ", "rb").read().decode(),
}
print(json.dumps(out, indent=1, sort_keys=True))
"#;

#[tokio::test]
async fn a_forked_python_run_is_indistinguishable_from_an_execd_one() {
    let (forking, plain) = (backend(true), backend(false));
    assert!(
        forking.fork_server_pid().is_some(),
        "this root host must start the fork server: {:?}",
        forking.describe()
    );
    let mut sub = source("python", INTROSPECT);
    sub.stdin = "some input\n".into();
    let (forked, execd) = tokio::join!(run_on(&forking, sub.clone()), run_on(&plain, sub));
    assert!(forked.forked, "the run was not forked: {forked:?}");
    assert!(!execd.forked, "{execd:?}");
    assert_eq!(forked.status, Status::Accepted, "{forked:?}");
    assert_eq!(execd.status, Status::Accepted, "{execd:?}");
    let (f, e) = (
        String::from_utf8_lossy(&forked.stdout.0),
        String::from_utf8_lossy(&execd.stdout.0),
    );
    assert!(e.contains("\"stdin\": \"some input\\n\""), "{e}");
    assert!(e.contains("\"kill_parent\": \"PermissionError\""), "{e}");
    assert_eq!(f, e, "forked (left) and exec'd (right) runs differ");
}

#[tokio::test]
async fn exits_exceptions_and_shutdown_behave_as_when_execd() {
    let (forking, plain) = (backend(true), backend(false));
    let programs = [
        // An uncaught exception: traceback on stderr, exit 1.
        "def f():\n    raise ValueError('bad')\nprint('before')\nf()\n",
        // sys.exit with a code and with a message.
        "import sys\nprint('x', end='')\nsys.exit(3)\n",
        "import sys\nsys.exit('message to stderr')\n",
        // Finalisation: atexit handlers, buffered output, destructors of module globals.
        "import atexit, sys\natexit.register(lambda: print('atexit ran'))\nclass D:\n    def __del__(self):\n        print('del ran')\nd = D()\nsys.stdout.write('buffered, no newline')\n",
        // A syntax error in the program itself.
        "print('unclosed'\n",
        // Threads still running at exit are joined.
        "import threading, time\ndef w():\n    time.sleep(0.2)\n    print('thread done')\nthreading.Thread(target=w).start()\nprint('main done')\n",
        // Killed by its own signal.
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
        // What the end of a forked run keeps of the interpreter's teardown (finish.rs): a file
        // object left unflushed in a global, globals in a reference cycle with finalizers, a
        // daemon thread left running, SystemExit raised bare, an uncaught KeyboardInterrupt (the
        // process ends by SIGINT), stdout closed by the program, output from atexit and
        // finalizers in their order.
        "out = open(1, 'w', closefd=False)\nout.write('left unflushed')\n",
        "class N:\n    def __del__(self):\n        print('freed', self.name)\na, b = N(), N()\na.name, b.name = 'a', 'b'\na.other, b.other = b, a\n",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(5,), daemon=True).start()\nprint('bye')\n",
        "print('raising')\nraise SystemExit(5)\n",
        "raise KeyboardInterrupt\n",
        "import sys\nprint('before close')\nsys.stdout.close()\n",
        // A module the program imported itself is freed at its end, with what it holds.
        "import fractions\nclass D:\n    def __del__(self):\n        print('held by an imported module, freed')\nfractions.held = D()\n",
        "import atexit\natexit.register(print, 'registered first, runs last')\natexit.register(print, 'registered last, runs first')\nclass D:\n    def __del__(self):\n        print('del after atexit')\nd = D()\n",
        // Hash randomisation and the random module are per run in both.
        "import random\nprint(type(random.random()).__name__, type(hash('x')).__name__)\n",
    ];
    for program in programs {
        let (forked, execd) = tokio::join!(
            run_on(&forking, source("python", program)),
            run_on(&plain, source("python", program))
        );
        assert!(forked.forked, "{program}: {forked:?}");
        assert_eq!(forked.status, execd.status, "{program}");
        assert_eq!(forked.exit_code, execd.exit_code, "{program}");
        assert_eq!(forked.signal, execd.signal, "{program}");
        assert_eq!(forked.stdout.0, execd.stdout.0, "{program}");
        assert_eq!(forked.stderr.0, execd.stderr.0, "{program}");
    }
}

#[tokio::test]
async fn forked_runs_do_not_share_random_state() {
    let forking = backend(true);
    let program = "import random, os\nprint(random.getrandbits(64), os.urandom(8).hex())";
    let a = run_on(&forking, source("python", program)).await;
    let b = run_on(&forking, source("python", program)).await;
    assert!(a.forked && b.forked, "{a:?} {b:?}");
    assert_ne!(
        a.stdout.0, b.stdout.0,
        "two forked runs drew the same random numbers"
    );
}

#[tokio::test]
async fn other_entry_names_arguments_and_languages_are_execd() {
    let forking = backend(true);
    let mut sub = source("python", "");
    sub.source = None;
    sub.files = vec![kiln::submission::SubmittedFile {
        name: Some("solution.py".into()),
        content: "print(__file__)".into(),
        encoding: Default::default(),
    }];
    let o = run_on(&forking, sub).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(o.stdout.0, b"/work/solution.py\n");
    assert!(!o.forked, "{o:?}");
    // Arguments: a forked process could not show them in /proc/self/cmdline.
    let mut sub = source("python", "import sys; print(sys.argv[1:])");
    sub.args = vec!["a".into(), "b c".into()];
    let o = run_on(&forking, sub).await;
    assert_eq!(o.stdout.0, b"['a', 'b c']\n", "{o:?}");
    assert!(!o.forked, "{o:?}");
    let o = run_on(&forking, source("bash", "echo $0")).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert!(!o.forked, "{o:?}");
}

#[tokio::test]
async fn a_killed_fork_server_costs_only_speed_and_comes_back() {
    let forking = backend(true);
    let first = forking.fork_server_pid().expect("fork server started");
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Pods made while it is gone exec the interpreter: same result, just slower.
    let o = run_on(&forking, source("python", "print(6 * 7)")).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    assert_eq!(o.stdout.0, b"42\n");
    assert!(!o.forked, "{o:?}");
    // It is started again (at most every 5 s) and used.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = run_on(&forking, source("python", "print(6 * 7)")).await;
        assert_eq!(o.stdout.0, b"42\n", "{o:?}");
        if o.forked {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fork server did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_ne!(forking.fork_server_pid(), Some(first));
}

#[tokio::test]
async fn a_program_with_network_access_cannot_ask_the_fork_server_for_a_process() {
    // With the host's network a program shares the host's abstract sockets, the server's too.
    let forking = common::backend_with(true, true);
    let program = r#"
import os, socket
names = [l.split()[-1][1:] for l in open("/proc/net/unix") if "@kiln-pyfork-" in l]
print(len(names) > 0)
for name in names:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(3)
    r, w = os.pipe()
    try:
        s.connect("\0" + name)
        socket.send_fds(s, [bytes([5, 0])], [r, w, r, w, r, w, r, w, r, w])
        os.close(w)
        print("closed" if s.recv(16) == b"" else "answered")
        os.set_blocking(r, False)
        try:
            print("a process wrote", os.read(r, 100))
        except BlockingIOError:
            pass
    except OSError as e:
        print(type(e).__name__)
"#;
    let o = run_on(&forking, source("python", program)).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout.0).into_owned();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("True"),
        "the server's socket was not visible: {out}"
    );
    for line in lines {
        assert!(
            line == "closed" || line == "PermissionError" || line == "ConnectionRefusedError",
            "{out}"
        );
    }
    // The server is unharmed.
    let o = run_on(&forking, source("python", "print('still here')")).await;
    assert!(o.forked, "{o:?}");
    assert_eq!(o.stdout.0, b"still here\n");
}

#[tokio::test]
async fn pods_stop_asking_for_python_processes_when_no_job_uses_them() {
    let forking = backend(true);
    // 32 jobs in a row that the fork server cannot serve...
    for _ in 0..32 {
        let o = run_on(&forking, source("bash", "echo ok")).await;
        assert_eq!(o.stdout.0, b"ok\n", "{o:?}");
    }
    // ...and the next pod has no forked process ready: the Python job is exec'd, same result.
    let o = run_on(&forking, source("python", "print('first')")).await;
    assert_eq!(o.stdout.0, b"first\n", "{o:?}");
    assert!(!o.forked, "{o:?}");
    // One Python job is enough for pods to ask again.
    let o = run_on(&forking, source("python", "print('second')")).await;
    assert_eq!(o.stdout.0, b"second\n", "{o:?}");
    assert!(o.forked, "{o:?}");
}

#[tokio::test]
async fn a_fork_server_that_cannot_start_says_why_and_runs_are_execd() {
    let mut settings = common::local_settings();
    let spec = settings
        .fork_server
        .as_mut()
        .expect("python has a fork server");
    // Not an interpreter that can serve forks: it complains and exits.
    spec.command.argv = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo this is not python >&2; exit 3".into(),
    ];
    let backend = LocalBackend::new(settings).expect("the backend starts without it");
    assert_eq!(backend.fork_server_pid(), None);
    let report = backend.describe().join("\n");
    assert!(
        report.contains("python: no fork server (this is not python)"),
        "{report}"
    );
    let o = run_on(&backend, source("python", "print('exec is fine')")).await;
    assert_eq!(o.stdout.0, b"exec is fine\n", "{o:?}");
    assert!(!o.forked, "{o:?}");
}

#[tokio::test]
async fn a_forked_run_ends_without_freeing_the_servers_start_up_state() {
    // The one difference docs/languages.md names: an object a program hangs on a module the
    // server had loaded is finalized at exit by an exec'd interpreter's teardown, and not in a
    // forked run, whose end leaves the server's state (shared, copy-on-write) alone.
    let (forking, plain) = (backend(true), backend(false));
    let program = "import os\nclass D:\n    def __del__(self):\n        print('finalized')\nos.held = D()\nprint('end')\n";
    let (forked, execd) = tokio::join!(
        run_on(&forking, source("python", program)),
        run_on(&plain, source("python", program))
    );
    assert!(forked.forked, "{forked:?}");
    assert_eq!(execd.stdout.0, b"end\nfinalized\n", "{execd:?}");
    assert_eq!(forked.stdout.0, b"end\n", "{forked:?}");
    assert_eq!(forked.exit_code, Some(0), "{forked:?}");
}
