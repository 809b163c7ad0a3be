//! The runner's two ways of being started: as pid 1 of a local standby pod (framed protocol on
//! stdin/stdout), or directly with one job on stdin (inside a Kubernetes pod, or by hand).

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::execute::Isolation;
use super::run_job;
use super::zygote::Zygote;
use kiln_sandbox::cgroup::Cgroup;
use kiln_sandbox::setup::{enter_pod, PodSetup, SetupError, WORK_DIR};
use kiln_wire::direct;
use kiln_wire::frame::{decode, encode, read_frame, write_frame};
use kiln_wire::job::Job;
use kiln_wire::outcome::{Outcome, Status};
use kiln_wire::report::{Finished, RunnerReport};

/// Pod mode: build the pod from the host's `PodSetup`, report ready, run one job, report, exit.
/// Exiting as pid 1 makes the kernel kill anything left in the pod.
pub fn serve_pod() -> i32 {
    // Unbuffered: an interactive job's input frames follow the job frame, and the run reads them
    // from fd 0 itself, so none may sit in a reader's buffer.
    let mut input = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let input = &mut *input;
    let mut output = io::stdout().lock();
    let setup: PodSetup = match read_frame(input) {
        Ok(Some(s)) => s,
        Ok(None) => return 0,
        Err(e) => {
            let _ = write_frame(
                &mut output,
                &RunnerReport::SetupFailed {
                    step: "read the pod setup".into(),
                    error: e.to_string(),
                },
            );
            return 2;
        }
    };
    // The fork server's connection must never reach a program: close-on-exec at once, and
    // dropped right after the one request it carries.
    let fork_conn = setup.fork_server.as_ref().and_then(|_| {
        let fd = super::pyfork::POD_CONNECTION_FD;
        (unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0)
            .then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let built = build(&setup).and_then(|isolation| {
        // Asked first: the server's process moves into the cgroup while the local one is made.
        let forked = fork_conn.and_then(|conn| Zygote::from_fork_server(&conn, &isolation).ok());
        let wanted = match (setup.local_zygotes, &forked) {
            (0, None) => 1,
            (n, _) => n,
        };
        let mut zygotes = Vec::new();
        for _ in 0..wanted {
            // Most jobs have no network: the standby processes lock down for one.
            zygotes.push(Zygote::fork(&isolation, false).map_err(|e| SetupError {
                step: "fork the program's process".into(),
                error: e.to_string(),
            })?);
        }
        for zygote in &mut zygotes {
            zygote.wait_ready().map_err(|e| SetupError {
                step: "move the program's process into the cgroup".into(),
                error: e.to_string(),
            })?;
        }
        // A fork server that fails only costs the pod its head start.
        let forked = forked.and_then(|mut z| z.wait_ready().ok().map(|()| z));
        Ok((isolation, zygotes, forked))
    });
    let (isolation, zygotes, forked) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = write_frame(
                &mut output,
                &RunnerReport::SetupFailed {
                    step: e.step,
                    error: e.error,
                },
            );
            return 2;
        }
    };
    if write_frame(&mut output, &RunnerReport::Ready).is_err() {
        return 2;
    }
    let outcome = match read_frame::<Job>(input) {
        Ok(Some(job)) => {
            let forked = forked.zip(setup.fork_server.as_ref());
            run_job(&job, Path::new(WORK_DIR), &isolation, zygotes, forked)
        }
        Ok(None) => return 0, // the host retired this pod unused
        Err(e) => Finished::of(Outcome::failed(
            Status::Rejected,
            format!("the job could not be decoded: {e}"),
        )),
    };
    match write_outcome(&mut output, outcome) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

fn build(setup: &PodSetup) -> Result<Isolation, SetupError> {
    let cgroup = match &setup.cgroup {
        Some(paths) => Some(Arc::new(Cgroup::open(paths).map_err(|e| SetupError {
            step: "open the pod's cgroup".into(),
            error: e.to_string(),
        })?)),
        None => None,
    };
    enter_pod(setup)?;
    Ok(Isolation {
        cgroup,
        owns_pid_namespace: std::process::id() == 1,
        sandbox_user: setup.sandbox_user,
        pod_bounds: false,
        work_dir: WORK_DIR.into(),
    })
}

/// Direct mode: one job on stdin (bincode, or JSON when `json`), one outcome on stdout, run in a
/// fresh work dir that is removed afterwards. Used where the pod itself is the sandbox
/// (Kubernetes): the runner adds rlimits, no_new_privs and seccomp, and drops root if it has it.
pub fn run_direct(json: bool) -> i32 {
    let mut raw = Vec::new();
    if let Err(e) = io::stdin().lock().read_to_end(&mut raw) {
        eprintln!("kiln-runner: reading the job from stdin: {e}");
        return 2;
    }
    let job: Result<Job, String> = if json {
        serde_json::from_slice(&raw).map_err(|e| format!("the job is not valid JSON: {e}"))
    } else {
        decode(&raw).map_err(|e| format!("the job is not valid bincode: {e}"))
    };
    let outcome = match job {
        Ok(job) => run_in_temp_dir(&job, false).outcome,
        Err(e) => Outcome::failed(Status::Rejected, e),
    };
    let encoded = if json {
        serde_json::to_vec(&outcome).map_err(|e| e.to_string())
    } else {
        bincode::serde::encode_to_vec(&outcome, bincode::config::standard())
            .map_err(|e| e.to_string())
    };
    match encoded {
        Ok(bytes) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(&bytes);
            let _ = out.flush();
            0
        }
        Err(e) => {
            eprintln!("kiln-runner: encoding the outcome: {e}");
            2
        }
    }
}

/// Exec mode (a Kubernetes pod): one `Job` frame on stdin; on stdout the job's `Timing` frame,
/// then one `RunnerReport::Finished` (or `Built`) frame. Exactly one frame is read, never "until
/// end of input": an exec stream's stdin may not close. Before the job runs, stderr's first line reports the layers around the runner and what it
/// adds (`super::layers`).
pub fn run_exec() -> i32 {
    let mut input = io::stdin().lock();
    let outcome = match read_frame::<Job>(&mut input) {
        Ok(Some(job)) => {
            eprintln!(
                "kiln-runner: layers {}",
                super::layers::Layers::here().line()
            );
            run_in_temp_dir(&job, true)
        }
        Ok(None) => Finished::of(Outcome::failed(Status::Rejected, "no job arrived on stdin")),
        Err(e) => Finished::of(Outcome::failed(
            Status::Rejected,
            format!("the job could not be decoded: {e}"),
        )),
    };
    match write_outcome(&mut io::stdout().lock(), outcome) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln-runner: writing the outcome: {e}");
            2
        }
    }
}

/// Standby mode: a Kubernetes runner pod's main process. With a token in its environment it
/// takes its one job over the pod network (`kiln_wire::direct`); without one it does nothing
/// until the pod is deleted, and jobs arrive through exec.
pub fn stand_by() -> i32 {
    // As a container's pid 1 a signal's default action does not apply: exit on SIGTERM/SIGINT,
    // when it comes from outside the container's pid namespace (the runtime stopping the pod:
    // its sender has no pid here). A job's program in the same namespace cannot end the runner
    // under its own job that way.
    extern "C" fn leave(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        if unsafe { (*info).si_pid() } == 0 {
            unsafe { libc::_exit(0) };
        }
    }
    // SAFETY: installing a handler that only reads its siginfo and calls _exit.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = leave as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    if let Ok(token) = std::env::var(direct::TOKEN_ENV) {
        // Not dumpable: no process of the job (the same uid) reads the token from
        // /proc/1/environ or attaches to the runner.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let port = std::env::var(direct::PORT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(direct::PORT);
        return match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(listener) => serve_direct(&token, listener),
            Err(e) => {
                eprintln!("kiln-runner: listening on port {port} for the direct path: {e}");
                2
            }
        };
    }
    loop {
        unsafe { libc::pause() };
    }
}

/// The direct path's runner. Each connection first proves the pod's token; several may wait at
/// once (the scheduler that reserved the pod keeps one open while the pod is on standby, and
/// another scheduler may be the one that claims it), and the first that sends a job gets its
/// outcome: every later one is refused.
fn serve_direct(token: &str, listener: std::net::TcpListener) -> i32 {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    /// Connections served at once; more are closed unanswered.
    const MAX_OPEN: usize = 16;
    let token: Arc<str> = token.into();
    let served = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN {
            open.fetch_sub(1, Ordering::SeqCst);
            eprintln!("kiln-runner: refused a connection: {MAX_OPEN} are open already");
            continue;
        }
        let (token, served, open) = (token.clone(), served.clone(), open.clone());
        std::thread::spawn(move || {
            serve_connection(stream, &token, &served);
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    0
}

/// One connection of the direct path: its greeting, then perhaps the pod's one job.
fn serve_connection(
    mut stream: std::net::TcpStream,
    token: &str,
    served: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
    // A peer that connects and says nothing is let go after this long.
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let refuse = |stream: &mut std::net::TcpStream, why: &str| {
        eprintln!("kiln-runner: refused a connection from {peer}: {why}");
        let _ = write_frame(stream, &direct::Answer::Refused(why.into()));
    };
    let hello = match read_frame::<direct::Hello>(&mut stream) {
        // Closed before a word (a TCP probe, a scheduler that let the pod go): nothing to say.
        Ok(None) => return,
        Ok(Some(h)) => h,
        Err(e) => return refuse(&mut stream, &format!("no greeting ({e})")),
    };
    if !direct::same_token(&hello.token, token) {
        return refuse(&mut stream, "wrong credential");
    }
    if served.load(Ordering::SeqCst) {
        let _ = write_frame(&mut stream, &direct::Answer::Taken);
        return;
    }
    if write_frame(&mut stream, &direct::Answer::Ready).is_err() {
        return;
    }
    // The connection is opened while the pod is on standby: its job may come much later.
    let _ = stream.set_read_timeout(None);
    let job = match read_frame::<Job>(&mut stream) {
        // The scheduler lost its claim to another: nothing ran, the next may come.
        Ok(None) => return,
        other => other,
    };
    if served.swap(true, Ordering::SeqCst) {
        // Another connection's job came first: this one never runs here, and says so, so that
        // its scheduler sends it to another pod.
        let _ = write_frame(
            &mut stream,
            &RunnerReport::SetupFailed {
                step: direct::TAKEN_STEP.into(),
                error: "this pod has taken another job".into(),
            },
        );
        return;
    }
    let finished = match job {
        Ok(Some(job)) => {
            eprintln!(
                "kiln-runner: layers {}",
                super::layers::Layers::here().line()
            );
            run_in_temp_dir(&job, true)
        }
        Ok(None) => unreachable!("returned above"),
        Err(e) => Finished::of(Outcome::failed(
            Status::Rejected,
            format!("the job could not be decoded: {e}"),
        )),
    };
    if let Err(e) = write_outcome(&mut stream, finished) {
        eprintln!("kiln-runner: writing the outcome to {peer}: {e}");
    }
}

/// Runs `job` in a fresh directory that is removed afterwards. In a Kubernetes pod (`in_pod`) the
/// root filesystem is read-only and the pod's limits bound memory and processes: the job's `/tmp`
/// paths (HOME, TMPDIR, build caches) are moved into its own directory, so that nothing one job
/// leaves is seen by the next either.
fn run_in_temp_dir(job: &Job, in_pod: bool) -> Finished {
    let root = unsafe { libc::geteuid() } == 0;
    let dir = std::env::temp_dir().join(format!(
        "kiln-work-{}-{}",
        std::process::id(),
        job.id.replace('/', "_")
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Finished::of(Outcome::failed(
            Status::InternalError,
            format!("creating the work dir {}: {e}", dir.display()),
        ));
    }
    let sandbox_user = root.then_some((65534, 65534));
    if let Some((uid, gid)) = sandbox_user {
        let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
    }
    let isolation = Isolation {
        cgroup: None,
        owns_pid_namespace: std::process::id() == 1,
        sandbox_user,
        pod_bounds: in_pod,
        work_dir: dir.clone(),
    };
    let moved;
    let job = if in_pod {
        let tmp = dir.join(".tmp");
        if std::fs::create_dir_all(&tmp).is_ok() {
            if let Some((uid, gid)) = sandbox_user {
                let _ = std::os::unix::fs::chown(&tmp, Some(uid), Some(gid));
            }
        }
        let mut j = job.clone();
        for (_, v) in j.env.iter_mut() {
            *v = kiln_wire::job::move_tmp(v, &tmp);
        }
        for stage in j.compile.iter_mut().chain(std::iter::once(&mut j.run)) {
            for a in stage.argv.iter_mut() {
                *a = kiln_wire::job::move_tmp(a, &tmp);
            }
        }
        if let Some(warm) = &job.warm_cache {
            let at = PathBuf::from(kiln_wire::job::move_tmp(&warm.path, &tmp));
            if let Err(e) = lay_warm_cache(&image_warm_root().join(&warm.dir), &at, sandbox_user) {
                eprintln!("kiln-runner: the warm cache {} is not used: {e}", warm.dir);
            }
        }
        moved = j;
        &moved
    } else {
        job
    };
    let outcome = run_job(job, &dir, &isolation, Vec::new(), None);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// Where a runner image keeps its warm caches (`docker/runner-setup.sh warm`); `KILN_WARM_CACHE_DIR`
/// names another.
fn image_warm_root() -> PathBuf {
    std::env::var_os("KILN_WARM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln/warm"))
}

/// Lays the read-only cache `from` (filled at image build, marked by `.kiln-warm`) at `to` with
/// a writable layer, as a local pod's overlay does but with no mount: `to`'s directories are the
/// job's own, each entry a symlink into the image. The tool reads the entries through the links
/// and writes new ones beside them; the top level's few small files are copied, being rewritten
/// in place (Go's trim.txt). Nothing is laid when the cache is absent or unfilled.
fn lay_warm_cache(from: &Path, to: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    if !from.join(".kiln-warm").is_file() {
        return Ok(());
    }
    fn walk(from: &Path, to: &Path, top: bool, owner: Option<(u32, u32)>) -> io::Result<()> {
        std::fs::create_dir_all(to)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(to, Some(uid), Some(gid))?;
        }
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&source, &target, false, owner)?;
            } else if top {
                std::fs::copy(&source, &target)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
                }
            } else {
                std::os::unix::fs::symlink(&source, &target)?;
            }
        }
        Ok(())
    }
    walk(from, to, true, owner)
}

/// Writes where the job's time went in the pod (when the runner measured it), then the outcome,
/// in one write: the host wakes once for both.
fn write_outcome(out: &mut impl Write, finished: Finished) -> io::Result<()> {
    let frames = finished
        .into_reports()
        .iter()
        .map(encode)
        .collect::<Result<Vec<_>, _>>()?;
    out.write_all(&frames.concat())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greet(port: u16, token: &str) -> (std::net::TcpStream, direct::Answer) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write_frame(
            &mut s,
            &direct::Hello {
                token: token.into(),
            },
        )
        .unwrap();
        let answer = read_frame(&mut s).unwrap().expect("an answer");
        (s, answer)
    }

    #[test]
    fn the_direct_path_asks_the_pods_token_and_a_connection_without_a_job_leaves_it_waiting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || serve_direct("the-pods-token", listener));
        let (_, answer) = greet(port, "a-guess");
        assert_eq!(answer, direct::Answer::Refused("wrong credential".into()));
        // A scheduler that reserved the pod waits with its connection open; another one may
        // greet meanwhile (it is the one whose claim will succeed).
        let (waiting, answer) = greet(port, "the-pods-token");
        assert_eq!(answer, direct::Answer::Ready);
        let (_, answer) = greet(port, "the-pods-token");
        assert_eq!(answer, direct::Answer::Ready);
        // The first lost its claim: it goes without sending a job, and the pod still waits.
        drop(waiting);
        let (_, answer) = greet(port, "the-pods-token");
        assert_eq!(answer, direct::Answer::Ready);
        // A job taken: later greetings are told so, and a job sent on a connection greeted
        // before it is answered as not run.
        // (A frame that is no job: the first is rejected, and it is the pod's one job still.)
        let not_a_job = [1u8, 0, 0, 0, 0xff];
        let (mut first, _) = greet(port, "the-pods-token");
        let (mut second, _) = greet(port, "the-pods-token");
        first.write_all(&not_a_job).unwrap();
        match read_frame::<RunnerReport>(&mut first).unwrap() {
            Some(RunnerReport::Finished(o)) => assert_eq!(o.status, Status::Rejected),
            other => panic!("{other:?}"),
        }
        second.write_all(&not_a_job).unwrap();
        match read_frame::<RunnerReport>(&mut second).unwrap() {
            Some(RunnerReport::SetupFailed { step, .. }) => assert_eq!(step, direct::TAKEN_STEP),
            other => panic!("{other:?}"),
        }
        let (_, answer) = greet(port, "the-pods-token");
        assert_eq!(answer, direct::Answer::Taken);
        // Silence is not a greeting: the runner lets it go and goes on answering others.
        let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_, answer) = greet(port, "");
        assert_eq!(answer, direct::Answer::Refused("wrong credential".into()));
    }
}
