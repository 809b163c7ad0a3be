//! `kiln bench --languages DIR`: each language's test program (DIR/<language>.<ext>) through a
//! standby pod, against the bare toolchain on the host (the same compile and run command lines,
//! in a fresh directory) measured in the same run, interleaved, as ratios.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln::job::Job;
use kiln::languages::Registry;
use kiln::pods::PodBackend;
use kiln::submission::{LimitPolicy, Submission};

use super::{ms, Summary};

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
/// The whole time, and each step's (spawn to exit).
pub(crate) fn bare(job: &Job, dir: &Path) -> Result<(Duration, Vec<Duration>), String> {
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
        .map(|(k, v)| (k.clone(), kiln::job::move_tmp(v, &tmp)))
        .collect();
    let moved = |argv: &[String]| -> Vec<String> {
        argv.iter().map(|a| kiln::job::move_tmp(a, &tmp)).collect()
    };
    let started = Instant::now();
    let mut stages = Vec::new();
    if let Some(c) = &job.compile {
        stages.push((moved(&c.argv), &[][..]));
    }
    stages.push((moved(&job.run.argv), &job.stdin.0[..]));
    let mut steps = Vec::new();
    for (argv, stdin) in stages {
        let step = Instant::now();
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
        steps.push(step.elapsed());
    }
    Ok((started.elapsed(), steps))
}

/// Appends a Markdown table after a blank line and its title, unless it has no rows.
fn push_table(lines: &mut Vec<String>, title: &str, header: &str, rows: Vec<String>) {
    if rows.is_empty() {
        return;
    }
    let columns = header.matches('|').count().saturating_sub(1);
    lines.extend([String::new(), title.to_string(), header.to_string()]);
    lines.push(format!("|{}", "---|".repeat(columns)));
    lines.extend(rows);
}

/// Runs `job` once keeping its build and puts that in `cache`, as `kiln serve` does the first
/// time a program is submitted; the key, or `None` for a job without a compile step.
async fn fill_cache(
    backend: &dyn PodBackend,
    cache: &kiln::compile_cache::CompileCache,
    job: &Job,
    version: &str,
) -> Result<Option<String>, String> {
    let Some(key) = kiln::compile_cache::CompileCache::key(job, version) else {
        return Ok(None);
    };
    let mut keep = job.clone();
    keep.keep_artifact = true;
    let pod = backend.create(0).await.map_err(|e| e.to_string())?;
    let mut finished = pod.run(keep).await.map_err(|e| e.to_string())?;
    match kiln::compile_cache::Cached::from_finished(&mut finished, false) {
        Some(built @ kiln::compile_cache::Cached::Built(_)) => {
            cache.put(&key, &built);
            Ok(Some(key))
        }
        _ => Err(format!(
            "{}: no build to cache: {:?}",
            job.language, finished.outcome
        )),
    }
}

/// Where one job's time went: the host's round trip, and the runner's `Timing` of it.
struct Parts {
    frames: Duration,
    prepared: Duration,
    /// Per step: set-up (from the previous part's end to the command's exec), the program,
    /// the end (its tree ended, figures read).
    steps: Vec<[Duration; 3]>,
    outcome: Duration,
}

impl Parts {
    fn of(total: Duration, t: &kiln_wire::report::Timing) -> Parts {
        let us = Duration::from_micros;
        let mut last = t.prepared_us;
        let steps = t
            .steps
            .iter()
            .map(|&[_, launched, ended, finished]| {
                let parts = [
                    us(launched.saturating_sub(last)),
                    us(ended.saturating_sub(launched)),
                    us(finished.saturating_sub(ended)),
                ];
                last = finished;
                parts
            })
            .collect();
        Parts {
            frames: total.saturating_sub(us(t.done_us)),
            prepared: us(t.prepared_us),
            steps,
            outcome: us(t.done_us.saturating_sub(last)),
        }
    }
}

/// One table row: p50 of each part over the runs (steps as "set-up / program / end").
fn parts_row(language: &str, kiln: &[Parts], bare_steps: &[Vec<Duration>]) -> String {
    let p50 = |v: Vec<Duration>| format!("{:.2}", Summary::of(v).p50.as_secs_f64() * 1000.0);
    let step = |i: usize| -> String {
        if kiln.iter().any(|p| p.steps.len() <= i) {
            return "-".into();
        }
        (0..3)
            .map(|k| p50(kiln.iter().map(|p| p.steps[i][k]).collect()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let two = kiln.first().is_some_and(|p| p.steps.len() == 2);
    let (compile, run) = if two {
        (step(0), step(1))
    } else {
        ("-".into(), step(0))
    };
    let bare = (0..bare_steps.first().map_or(0, Vec::len))
        .map(|i| {
            p50(bare_steps
                .iter()
                .filter_map(|s| s.get(i).copied())
                .collect())
        })
        .collect::<Vec<_>>()
        .join(" / ");
    format!(
        "| {language} | {} | {} | {compile} | {run} | {} | {bare} |",
        p50(kiln.iter().map(|p| p.frames).collect()),
        p50(kiln.iter().map(|p| p.prepared).collect()),
        p50(kiln.iter().map(|p| p.outcome).collect()),
    )
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
    let mut parts_rows = Vec::new();
    let mut warm_rows = Vec::new();
    // A compile cache of its own, as `kiln serve` keeps one (`compile_cache_bytes`).
    let cache_dir = work.with_extension("cache");
    let cache = kiln::compile_cache::CompileCache::open(
        &cache_dir,
        1 << 30,
        std::sync::Arc::new(kiln::metrics::Metrics::new()),
    )
    .map_err(|e| format!("opening a compile cache in {}: {e}", cache_dir.display()))?;
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
        // The same program submitted again: what its first run built, from the compile cache.
        let warm_key = fill_cache(backend, &cache, &job, &lang.version).await?;
        let mut warm = Vec::new();
        let (mut kiln, mut floor) = (Vec::new(), Vec::new());
        let (mut parts, mut bare_steps) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let pod = backend.create(0).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t = Instant::now();
            let finished = pod.run(job.clone()).await.map_err(|e| e.to_string())?;
            let took = t.elapsed();
            kiln.push(took);
            let outcome = &finished.outcome;
            if outcome.stdout.0 != b"hello kiln\n" {
                return Err(format!("{}: the pod's run printed {outcome:?}", lang.name));
            }
            parts.extend(finished.timing.as_ref().map(|t| Parts::of(took, t)));
            let (total, steps) = bare(&job, &work)?;
            floor.push(total);
            bare_steps.push(steps);
            if let Some(key) = &warm_key {
                let pod = backend.create(0).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(5)).await;
                let t = Instant::now();
                // What the pod runner does on a hit: read the entry, lay the build in.
                let Some(kiln::compile_cache::Cached::Built(build)) = cache.get(key) else {
                    return Err(format!("{}: the compile cache lost its entry", lang.name));
                };
                let mut hit = job.clone();
                hit.prebuilt = Some(build);
                let outcome = pod.run(hit).await.map_err(|e| e.to_string())?.outcome;
                warm.push(t.elapsed());
                if outcome.stdout.0 != b"hello kiln\n" {
                    return Err(format!("{}: the warm run printed {outcome:?}", lang.name));
                }
            }
        }
        if !warm.is_empty() {
            let (w, f) = (Summary::of(warm), Summary::of(floor.clone()));
            warm_rows.push(format!(
                "| {} | {} | {} | {:.2}x |",
                lang.name,
                ms(w.p50),
                ms(f.p50),
                w.p50.as_secs_f64() / f.p50.as_secs_f64().max(1e-9)
            ));
        }
        if parts.len() == runs {
            parts_rows.push(parts_row(&lang.name, &parts, &bare_steps));
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
    let _ = std::fs::remove_dir_all(&cache_dir);
    push_table(
        &mut lines,
        "the same program submitted again (compiled languages): `kiln serve`'s compile cache lays in what the first run built and only the run step runs; interleaved with the runs above, p50 against the bare toolchain's compile and run:",
        "| language | kiln, warm compile cache | bare compile + run | kiln / bare |",
        warm_rows,
    );
    push_table(
        &mut lines,
        "where the time goes in the pod, ms, p50 of each part (the runner's own clock; frames: the host's round trip minus the runner's time; a step's set-up runs from the previous part's end to its command's exec, its end until its process tree is gone and its figures read) beside the bare toolchain's steps (spawn to exit):",
        "| language | frames | files and processes | compile: set-up / program / end | run: set-up / program / end | outcome | bare: compile / run |",
        parts_rows,
    );
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_written_only_with_rows_and_a_rule_per_column() {
        let mut lines = vec!["before".to_string()];
        push_table(&mut lines, "title", "| a | b |", Vec::new());
        assert_eq!(lines, ["before"]);
        push_table(&mut lines, "title", "| a | b |", vec!["| 1 | 2 |".into()]);
        assert_eq!(
            lines,
            ["before", "", "title", "| a | b |", "|---|---|", "| 1 | 2 |"]
        );
    }

    #[test]
    fn a_jobs_time_splits_into_frames_preparation_steps_and_outcome() {
        let t = kiln_wire::report::Timing {
            prepared_us: 100,
            steps: vec![[150, 400, 5400, 5600], [5650, 5900, 6000, 6050]],
            done_us: 6070,
        };
        let p = Parts::of(Duration::from_micros(6500), &t);
        let ms = |us| Duration::from_micros(us);
        assert_eq!(p.frames, ms(430));
        assert_eq!(p.prepared, ms(100));
        // Set-up from the previous part's end (prepared, then the compile's end) to the exec.
        assert_eq!(
            p.steps,
            vec![[ms(300), ms(5000), ms(200)], [ms(300), ms(100), ms(50)]]
        );
        assert_eq!(p.outcome, ms(20));
        let row = parts_row("x", &[p], &[vec![ms(5000), ms(200)]]);
        assert_eq!(
            row,
            "| x | 0.43 | 0.10 | 0.30 / 5.00 / 0.20 | 0.30 / 0.10 / 0.05 | 0.02 | 5.00 / 0.20 |"
        );
    }
}
