//! `kiln-runner`: takes one job, writes its files, compiles, runs, and reports one outcome.
//! The same code runs as pid 1 of a local standby pod and inside a Kubernetes pod. It depends on
//! the contract (`kiln-wire`) and the isolation layers (`kiln-sandbox`) only; this crate's
//! cdylib is also the Python fork server's native half (`pyfork`).

pub mod execute;
pub mod layers;
pub mod pod;
pub mod pyfork;
pub mod zygote;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_wire::job::{Artifact, Job, JobFile, Limits};
use kiln_wire::outcome::{Failure, Outcome, Status};
use kiln_wire::report::{Finished, Timing};

use execute::{execute, Breach, Capture, Execution, Isolation};
pub use kiln_wire::rules::{check_file_name, signal_name};
use zygote::Zygote;

/// `kiln-runner`'s command line (also `kiln` started under the name `kiln-runner`).
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("pod") => pod::serve_pod(),
        Some("fork-server") => pyfork::launch_server(),
        Some("run") => pod::run_direct(args.iter().any(|a| a == "--json")),
        Some("exec") => pod::run_exec(),
        Some("standby") => pod::stand_by(),
        Some("layers") => {
            println!("{}", layers::Layers::here().line());
            0
        }
        _ => {
            eprintln!("usage: kiln-runner run [--json] < job    (one job on stdin, its outcome on stdout)");
            eprintln!("       kiln-runner exec                 (one job frame on stdin, one report frame on stdout; exec'd in a Kubernetes pod)");
            eprintln!("       kiln-runner standby              (a Kubernetes runner pod's main process: waits to be exec'd into)");
            eprintln!("       kiln-runner layers               (what isolation surrounds the runner here and what it adds, as JSON)");
            eprintln!("       kiln-runner pod                  (pid 1 of a local standby pod; started by kiln)");
            eprintln!(
                "       kiln-runner fork-server          (the Python fork server; started by kiln)"
            );
            2
        }
    }
}

/// Compiler output kept per job; diagnostics past this are not useful to anyone.
const COMPILE_OUTPUT_CAP: u64 = 64 * 1024;

/// Runs a job in `work_dir` and says what happened. `ready` are zygotes forked while the pod was
/// on standby (one per step at most). Never panics on the job's content: every failure becomes
/// an outcome with a message.
pub fn run_job(
    job: &Job,
    work_dir: &Path,
    isolation: &Isolation,
    ready: Vec<Zygote>,
    forked: Option<(Zygote, &pyfork::ForkedCommand)>,
) -> Finished {
    let read = std::time::Instant::now();
    let mut timing = Timing::default();
    let mut artifact = None;
    let outcome = run_steps(
        job,
        work_dir,
        isolation,
        ready,
        forked,
        read,
        &mut timing,
        &mut artifact,
    );
    // The timing is reported only for a job whose steps all ran.
    let ran = timing.done_us > 0;
    Finished {
        outcome,
        artifact,
        timing: ran.then_some(timing),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_steps(
    job: &Job,
    work_dir: &Path,
    isolation: &Isolation,
    ready: Vec<Zygote>,
    forked: Option<(Zygote, &pyfork::ForkedCommand)>,
    read: std::time::Instant,
    timing: &mut Timing,
    artifact: &mut Option<Artifact>,
) -> Outcome {
    let since = |t: std::time::Instant| t.saturating_duration_since(read).as_micros() as u64;
    if let Err(e) = write_files(&job.files, work_dir, isolation.sandbox_user) {
        return Outcome::failed(Status::Rejected, e);
    }
    // A compile cache hit: the compile step's outputs, as if it had just run.
    if let Some(p) = &job.prebuilt {
        if let Err(e) = write_files(&p.files, work_dir, isolation.sandbox_user) {
            return Outcome::failed(Status::InternalError, format!("laying in the build: {e}"));
        }
    }
    let compiles = job.compiles();
    // A process forked from the fork server's interpreter runs the job when the job is exactly
    // that interpreter's command. Processes the job does not use are killed as a compile step
    // starts (a fork server's process takes a while to exit: not on the job's path).
    // Without a compile step the runner's own are ended before the program starts (their
    // memory must not count as the program's), and a fork server's is left waiting until the
    // program's tree ends (its exit must not count as the program's CPU time).
    let (mut ready, forked, mut unused) = match forked {
        Some((z, command)) if command.serves(job) => (vec![z], true, ready),
        other => (ready, false, other.into_iter().map(|(z, _)| z).collect()),
    };
    // A step takes a process locked down for its network setting, else forks one.
    let take = |ready: &mut Vec<Zygote>, network: bool| -> io::Result<Zygote> {
        match ready.iter().position(|z| z.offline != network) {
            Some(i) => Ok(ready.remove(i)),
            None => Zygote::fork(isolation, network),
        }
    };
    // Held, waiting, until the program's tree ends.
    let _waiting: Vec<Zygote> = if compiles {
        Vec::new()
    } else {
        let keep = take(&mut ready, job.run.limits.network);
        unused.append(&mut ready);
        let (remote, own): (Vec<Zygote>, Vec<Zygote>) = std::mem::take(&mut unused)
            .into_iter()
            .partition(|z| z.remote);
        Zygote::end_all(own);
        ready = keep.into_iter().collect();
        remote
    };
    timing.prepared_us = since(std::time::Instant::now());
    let mut compile_output = job
        .prebuilt
        .as_ref()
        .map(|p| p.compile_output.0.clone())
        .unwrap_or_default();
    if let Some(compile) = job.compile.as_ref().filter(|_| compiles) {
        let mut limits = compile.limits.clone();
        limits.output_bytes = limits.output_bytes.min(COMPILE_OUTPUT_CAP);
        let compiler = take(&mut ready, limits.network);
        // The run step's process: forked on standby, or now (its cgroup move overlaps the
        // compile step).
        let next = take(&mut ready, job.run.limits.network).ok();
        // Killed now, not waited for: their exits (a fork server's process takes about half a
        // millisecond) run on the pod's core while it idles through the compile step's set-up.
        unused.append(&mut ready);
        drop(std::mem::take(&mut unused));
        ready = next.into_iter().collect();
        let keep = ready.first().map(|z| z.pid);
        let run = match compiler.and_then(|z| {
            execute(
                z,
                &compile.argv,
                &job.env,
                work_dir,
                &[],
                &limits,
                Capture::Merged,
                isolation,
                keep,
                None,
            )
        }) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::failed(
                    Status::InternalError,
                    Failure::could_not_start("compiler", &e),
                )
            }
        };
        compile_output = run.stdout.clone();
        timing.steps.extend(run.times.map(|t| t.map(since)));
        let failure = match (run.breach, run.oom_killed, run.exit_code) {
            (Some(Breach::WallTime | Breach::CpuTime), _, _) => Some(format!(
                "compilation exceeded its time limit ({} ms wall, {} ms cpu)",
                limits.wall_time_ms, limits.cpu_time_ms
            )),
            (_, true, _) => Some(format!(
                "compilation exceeded its memory limit ({} bytes)",
                limits.memory_bytes
            )),
            (_, _, Some(0)) => None,
            (_, _, Some(code)) => Some(Failure::CompilerExited(code).to_string()),
            (_, _, None) => Some(format!(
                "compiler killed by signal {}",
                run.signal.unwrap_or(0)
            )),
        };
        if let Some(message) = failure {
            let mut o = Outcome::failed(Status::CompileError, message);
            o.compile_output = compile_output.into();
            o.wall_time_ms = run.wall_time_ms;
            o.cpu_time_ms = run.cpu_time_ms;
            o.memory_bytes = run.memory_bytes;
            return o;
        }
        // Taken before the run, which may change the work dir.
        if job.keep_artifact {
            *artifact = collect_artifact(work_dir, &job.files).map(|files| Artifact {
                files,
                compile_output: compile_output.clone().into(),
            });
        }
    }
    let run = match take(&mut ready, job.run.limits.network).and_then(|z| {
        execute(
            z,
            &job.run.argv,
            &job.env,
            work_dir,
            &job.stdin.0,
            &job.run.limits,
            if job.merge_stderr {
                Capture::Merged
            } else {
                Capture::Separate
            },
            isolation,
            None,
            // Interactive: stdin frames from the host, output to it as it comes.
            if job.interactive {
                execute::Live::stdio().ok()
            } else {
                None
            },
        )
    }) {
        Ok(r) => r,
        Err(e) => {
            let mut o = Outcome::failed(
                Status::InternalError,
                Failure::could_not_start("program", &e),
            );
            o.compile_output = compile_output.into();
            return o;
        }
    };
    timing.steps.extend(run.times.map(|t| t.map(since)));
    let (status, message) = verdict(
        &run,
        &job.run.limits,
        job.expected_output.as_ref().map(|b| &b.0[..]),
        isolation,
    );
    let outcome = Outcome {
        status,
        exit_code: run.exit_code,
        signal: run.signal,
        stdout: run.stdout.into(),
        stderr: run.stderr.into(),
        compile_output: compile_output.into(),
        cpu_time_ms: run.cpu_time_ms,
        wall_time_ms: run.wall_time_ms,
        memory_bytes: run.memory_bytes,
        message,
        forked,
        tests: Vec::new(),
    };
    timing.done_us = since(std::time::Instant::now()).max(1);
    outcome
}

/// Most a compile step's outputs may come to for the compile cache; a bigger build is not kept.
const ARTIFACT_CAP: u64 = 64 << 20;
const ARTIFACT_MAX_FILES: usize = 4096;

/// The files in `work_dir` that the compile step made or changed (not the sources as given),
/// relative paths, symlinks left out; None past `ARTIFACT_CAP` or `ARTIFACT_MAX_FILES`.
fn collect_artifact(work_dir: &Path, sources: &[JobFile]) -> Option<Vec<JobFile>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut dirs = vec![work_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let kind = entry.file_type().ok()?;
            let path = entry.path();
            if kind.is_dir() {
                dirs.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let name = path.strip_prefix(work_dir).ok()?.to_str()?.to_string();
            let content = fs::read(&path).ok()?;
            if sources
                .iter()
                .any(|s| s.name == name && s.content.0 == content)
            {
                continue;
            }
            total += content.len() as u64;
            if total > ARTIFACT_CAP || out.len() >= ARTIFACT_MAX_FILES {
                return None;
            }
            out.push(JobFile {
                name,
                content: content.into(),
            });
        }
    }
    Some(out)
}

/// Tells apart the ways a run can end. OOM kills, time limits and a program's own SIGKILL all
/// look alike from the exit status: the cgroup's OOM counter, the breach the watcher saw and the
/// CPU time decide.
fn verdict(
    run: &Execution,
    limits: &Limits,
    expected: Option<&[u8]>,
    isolation: &Isolation,
) -> (Status, Option<String>) {
    if run.breach == Some(Breach::Output) {
        return (
            Status::OutputLimitExceeded,
            Some(format!(
                "output exceeded {} bytes on one stream; the first {0} bytes are kept",
                limits.output_bytes
            )),
        );
    }
    if run.oom_killed {
        let message = match (isolation.pod_bounds, layers::container_memory_limit()) {
            (true, Some(pod)) => format!(
                "the pod's memory limit of {pod} bytes was reached: the container's OOM killer ended the program"
            ),
            _ => format!("memory limit of {} bytes exceeded", limits.memory_bytes),
        };
        return (Status::MemoryLimitExceeded, Some(message));
    }
    let cpu_signal = matches!(run.signal, Some(libc::SIGXCPU))
        || (run.signal == Some(libc::SIGKILL) && run.cpu_time_ms >= limits.cpu_time_ms);
    if run.breach == Some(Breach::CpuTime) || cpu_signal {
        return (
            Status::TimeLimitExceeded,
            Some(format!(
                "cpu time limit of {} ms exceeded",
                limits.cpu_time_ms
            )),
        );
    }
    if run.breach == Some(Breach::WallTime) {
        return (
            Status::TimeLimitExceeded,
            Some(format!(
                "wall time limit of {} ms exceeded",
                limits.wall_time_ms
            )),
        );
    }
    let failed = run.signal.is_some() || run.exit_code != Some(0);
    if failed && isolation.cgroup.is_none() && run.memory_bytes >= limits.memory_bytes / 2 {
        return (
            Status::MemoryLimitExceeded,
            Some(format!(
                "the program failed near its memory limit of {} bytes (no memory cgroup on this host: judged from peak RSS)",
                limits.memory_bytes
            )),
        );
    }
    if let Some(sig) = run.signal {
        let message = match sig {
            libc::SIGXFSZ => format!(
                "killed by signal {sig} (SIGXFSZ): file size limit of {} bytes exceeded",
                limits.file_size_bytes
            ),
            _ => format!("killed by signal {sig} ({})", signal_name(sig)),
        };
        return (Status::Signaled, Some(message));
    }
    match (run.exit_code, expected) {
        (Some(0), Some(want)) if same_output(&run.stdout, want) => (Status::Accepted, None),
        (Some(0), Some(_)) => (
            Status::WrongAnswer,
            Some("stdout differs from expected_output".into()),
        ),
        (Some(0), None) => (Status::Accepted, None),
        (Some(code), _) => (
            Status::RuntimeError,
            Some(format!("exited with code {code}")),
        ),
        (None, _) => (
            Status::InternalError,
            Some("the program ended without an exit status".into()),
        ),
    }
}

/// Output comparison the way judges do it: trailing whitespace on lines and at the end is ignored.
fn same_output(got: &[u8], want: &[u8]) -> bool {
    fn normalise(b: &[u8]) -> Vec<&[u8]> {
        let mut lines: Vec<&[u8]> = b
            .split(|&c| c == b'\n')
            .map(|l| l.trim_ascii_end())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
    }
    normalise(got) == normalise(want)
}

fn write_files(
    files: &[JobFile],
    work_dir: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    for file in files {
        check_file_name(&file.name)?;
        let path = work_dir.join(&file.name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating the folder of {}: {e}", file.name))?;
            chown(parent, owner).map_err(|e| format!("chown {}: {e}", parent.display()))?;
        }
        fs::write(&path, &file.content.0).map_err(|e| format!("writing {}: {e}", file.name))?;
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
        chown(&path, owner).map_err(|e| format!("chown {}: {e}", file.name))?;
    }
    Ok(())
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            wall_time_ms: 2000,
            cpu_time_ms: 1000,
            memory_bytes: 256 << 20,
            processes: 64,
            output_bytes: 1 << 20,
            file_size_bytes: 1 << 20,
            open_files: 64,
            network: false,
            cpus: 1,
        }
    }

    /// Without a memory cgroup: memory is then judged from the peak RSS.
    fn isolation() -> Isolation {
        Isolation {
            cgroup: None,
            owns_pid_namespace: true,
            sandbox_user: None,
            pod_bounds: false,
            work_dir: "/work".into(),
        }
    }

    fn ended(exit_code: Option<i32>, signal: Option<i32>) -> Execution {
        Execution {
            exit_code,
            signal,
            stdout: b"42 \n\n".to_vec(),
            stderr: Vec::new(),
            wall_time_ms: 10,
            cpu_time_ms: 5,
            memory_bytes: 1 << 20,
            oom_killed: false,
            breach: None,
            times: None,
        }
    }

    fn judge(run: &Execution, expected: Option<&[u8]>) -> (Status, String) {
        let (status, message) = verdict(run, &limits(), expected, &isolation());
        (status, message.unwrap_or_default())
    }

    #[test]
    fn a_clean_exit_is_accepted_or_a_wrong_answer_by_its_output_and_a_code_is_a_runtime_error() {
        let ok = ended(Some(0), None);
        assert_eq!(judge(&ok, None).0, Status::Accepted);
        // Trailing spaces and blank lines are not a difference.
        assert_eq!(judge(&ok, Some(b"42")).0, Status::Accepted);
        assert_eq!(
            judge(&ok, Some(b"43\n")),
            (
                Status::WrongAnswer,
                "stdout differs from expected_output".into()
            )
        );
        assert_eq!(
            judge(&ended(Some(3), None), None),
            (Status::RuntimeError, "exited with code 3".into())
        );
        assert_eq!(judge(&ended(None, None), None).0, Status::InternalError);
    }

    #[test]
    fn the_limit_that_ended_a_run_decides_its_status_before_its_exit() {
        let mut run = ended(None, Some(libc::SIGKILL));
        run.breach = Some(Breach::Output);
        assert_eq!(judge(&run, None).0, Status::OutputLimitExceeded);
        let mut run = ended(None, Some(libc::SIGKILL));
        run.oom_killed = true;
        assert_eq!(
            judge(&run, None),
            (
                Status::MemoryLimitExceeded,
                format!("memory limit of {} bytes exceeded", 256 << 20)
            )
        );
        // A SIGKILL with the CPU time used up is the CPU limit, whoever sent it.
        let mut run = ended(None, Some(libc::SIGKILL));
        run.cpu_time_ms = 1000;
        assert_eq!(
            judge(&run, None),
            (
                Status::TimeLimitExceeded,
                "cpu time limit of 1000 ms exceeded".into()
            )
        );
        let mut run = ended(None, Some(libc::SIGKILL));
        run.breach = Some(Breach::WallTime);
        assert_eq!(
            judge(&run, None),
            (
                Status::TimeLimitExceeded,
                "wall time limit of 2000 ms exceeded".into()
            )
        );
        // The same SIGKILL with CPU time to spare and no breach is the program's own.
        assert_eq!(
            judge(&ended(None, Some(libc::SIGKILL)), None).0,
            Status::Signaled
        );
    }

    #[test]
    fn signals_are_named_and_a_failure_near_the_memory_limit_without_a_cgroup_is_memory() {
        assert_eq!(
            judge(&ended(None, Some(libc::SIGSEGV)), None),
            (Status::Signaled, "killed by signal 11 (SIGSEGV)".into())
        );
        assert_eq!(
            judge(&ended(None, Some(libc::SIGXFSZ)), None).1,
            format!(
                "killed by signal {} (SIGXFSZ): file size limit of 1048576 bytes exceeded",
                libc::SIGXFSZ
            )
        );
        let mut run = ended(Some(1), None);
        run.memory_bytes = 200 << 20;
        assert_eq!(judge(&run, None).0, Status::MemoryLimitExceeded);
        // The same peak with a clean exit is just a program that used memory.
        let mut run = ended(Some(0), None);
        run.memory_bytes = 200 << 20;
        assert_eq!(judge(&run, None).0, Status::Accepted);
    }

    #[test]
    fn a_build_artifact_is_what_the_compile_step_made_not_the_sources_as_given() {
        let dir = std::env::temp_dir().join(format!("kiln-artifact-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("out")).unwrap();
        fs::write(dir.join("main.c"), "int main(){}").unwrap();
        fs::write(dir.join("out/main"), "ELF").unwrap();
        let sources = [JobFile {
            name: "main.c".into(),
            content: b"int main(){}".to_vec().into(),
        }];
        let mut files = collect_artifact(&dir, &sources).unwrap();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].name.as_str(), &files[0].content.0[..]),
            ("out/main", &b"ELF"[..])
        );
        // A source the compile step rewrote is part of what it made.
        fs::write(dir.join("main.c"), "generated").unwrap();
        assert_eq!(collect_artifact(&dir, &sources).unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
