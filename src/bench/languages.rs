//! `kiln bench --languages DIR`: each language's test program (DIR/<language>.<ext>) through a
//! standby pod, against the bare toolchain on the host (the same compile and run command lines,
//! in a fresh directory) measured in the same run, interleaved, as ratios.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ms, Summary};
use crate::job::Job;
use crate::languages::Registry;
use crate::pods::PodBackend;
use crate::submission::{LimitPolicy, Submission};

/// The program of `language` in `dir`: `<language>.<ext>`, not the `.bad.` one.
fn program(dir: &Path, language: &str) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name
            .split_once('.')
            .is_some_and(|(l, rest)| l == language && !rest.starts_with("bad."))
        {
            return std::fs::read_to_string(e.path()).ok();
        }
    }
    None
}

/// The job bare on the host: its files in a fresh directory, compile, then run with its stdin.
pub(crate) fn bare(job: &Job, dir: &Path) -> Result<Duration, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for f in &job.files {
        std::fs::write(dir.join(&f.name), &f.content.0).map_err(|e| e.to_string())?;
    }
    let tmp = dir.join(".tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    // Like a pod's private /tmp: nothing one run leaves is seen by the next.
    let env: Vec<(String, String)> = job
        .env
        .iter()
        .map(|(k, v)| (k.clone(), crate::job::move_tmp(v, &tmp)))
        .collect();
    let moved = |argv: &[String]| -> Vec<String> {
        argv.iter().map(|a| crate::job::move_tmp(a, &tmp)).collect()
    };
    let started = Instant::now();
    let mut stages = Vec::new();
    if let Some(c) = &job.compile {
        stages.push((moved(&c.argv), &[][..]));
    }
    stages.push((moved(&job.run.argv), &job.stdin.0[..]));
    for (argv, stdin) in stages {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", argv[0]))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        child.wait().map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed())
}

/// Runs every available language with a program in `dir`, `runs` times each.
pub async fn run(
    backend: &dyn PodBackend,
    registry: &Registry,
    dir: &Path,
    runs: usize,
) -> Result<String, String> {
    let policy = LimitPolicy::default();
    let work = std::env::temp_dir().join(format!("kiln-bench-languages-{}", std::process::id()));
    let mut lines = vec![
        format!("hello world per language: {runs} runs each through a standby pod and bare on the host (same command lines), interleaved; p50"),
        "| language | version | kiln p50 | bare p50 | kiln / bare |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for lang in &registry.available {
        let Some(source) = program(dir, &lang.name) else {
            continue;
        };
        let sub = Submission {
            language: lang.name.clone(),
            source: Some(source),
            stdin: "kiln\n".into(),
            ..Default::default()
        };
        let job = sub.resolve("bench", registry, &policy).map_err(|e| e.0)?;
        // Once each first: page cache and toolchain caches warm for both.
        let pod = backend.create(0).await.map_err(|e| e.to_string())?;
        let _ = pod.run(job.clone()).await;
        let _ = bare(&job, &work);
        let (mut kiln, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let pod = backend.create(0).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t = Instant::now();
            let outcome = pod.run(job.clone()).await.map_err(|e| e.to_string())?;
            kiln.push(t.elapsed());
            if outcome.stdout.0 != b"hello kiln\n" {
                return Err(format!("{}: the pod's run printed {outcome:?}", lang.name));
            }
            floor.push(bare(&job, &work)?);
        }
        let (k, f) = (Summary::of(kiln), Summary::of(floor));
        lines.push(format!(
            "| {} | {} | {} | {} | {:.2}x |",
            lang.name,
            lang.version,
            ms(k.p50),
            ms(f.p50),
            k.p50.as_secs_f64() / f.p50.as_secs_f64().max(1e-9)
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(lines.join("\n"))
}
