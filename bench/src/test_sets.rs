//! `kiln bench --test-sets`: one C++ solution judged on N tests three ways, in the same run:
//! (a) one Kiln submission with `tests` (compiled once, tests in parallel pods), (b) N Kiln
//! submissions two at a time (the compile cache serves all but the first compiles), and (c) the
//! peers' way on the bare host: N times `g++` then the program, two at a time. Wall-clock of each
//! whole judgement, medians over rounds, as ratios. Each round's program differs by a comment,
//! so every round starts with an empty cache.

use std::time::{Duration, Instant};

use kiln::languages::Registry;
use kiln::submission::{LimitPolicy, Submission};
use serde_json::{json, Value};

use super::{ms, ServeChild, Summary};

const PARALLEL: usize = 2;

fn program(round: usize) -> String {
    format!(
        "// round {round}\n#include <iostream>\n#include <vector>\n#include <algorithm>\nint main() {{\n    long n; std::cin >> n;\n    std::vector<long> v(n);\n    for (long i = 0; i < n; i++) v[i] = (i * 7919) % 1000;\n    std::sort(v.begin(), v.end());\n    long s = 0; for (long x : v) s += x;\n    std::cout << s << \"\\n\";\n}}\n"
    )
}

fn expected(n: i64) -> String {
    let mut v: Vec<i64> = (0..n).map(|i| (i * 7919) % 1000).collect();
    v.sort();
    format!("{}\n", v.iter().sum::<i64>())
}

/// Runs `n` jobs on `PARALLEL` threads; the wall-clock of all of them.
fn in_parallel(
    n: usize,
    job: impl Fn(usize) -> Result<(), String> + Sync,
) -> Result<Duration, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|_| {
                s.spawn(|| {
                    let mut errors = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return errors;
                        }
                        if let Err(e) = job(i) {
                            errors.push(e);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(t.elapsed()),
    }
}

pub fn run(kiln: &std::path::Path, tests: usize, rounds: usize) -> Result<String, String> {
    let server = ServeChild::start(kiln, &[])?;
    let base = server.addr.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build();
    server.wait_ready(Instant::now())?;
    let registry = Registry::load(None)?;
    let post = |body: Value| -> Result<Value, String> {
        agent
            .post(&format!("{base}/v1/submissions?wait=true"))
            .send_json(body)
            .map_err(|e| e.to_string())?
            .into_json()
            .map_err(|e| e.to_string())
    };
    let cases: Vec<(i64, String)> = (0..tests as i64)
        .map(|i| (1000 + i * 997, expected(1000 + i * 997)))
        .collect();
    let work = std::env::temp_dir().join(format!("kiln-bench-sets-{}", std::process::id()));
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // (a) one submission with every test.
        let src = program(3 * round);
        let t = Instant::now();
        let r = post(json!({"language": "cpp", "source": src,
            "tests": cases.iter().map(|(n, e)| json!({"stdin": n.to_string(), "expected_output": e})).collect::<Vec<_>>()}))?;
        a.push(t.elapsed());
        if r["status"] != "accepted" || r["tests"].as_array().map_or(0, Vec::len) != tests {
            return Err(format!("(a) did not pass: {r}"));
        }
        // (b) one submission per test, two at a time.
        let src = program(3 * round + 1);
        b.push(in_parallel(tests, |i| {
            let (n, e) = &cases[i];
            let r = post(json!({"language": "cpp", "source": src, "stdin": n.to_string(), "expected_output": e}))?;
            if r["status"] != "accepted" {
                return Err(format!("(b) did not pass: {r}"));
            }
            Ok(())
        })?);
        // (c) bare: compile and run per test, two at a time.
        let src = program(3 * round + 2);
        c.push(in_parallel(tests, |i| {
            let (n, _) = &cases[i];
            let sub = Submission {
                language: "cpp".into(),
                source: Some(src.clone()),
                stdin: n.to_string(),
                ..Default::default()
            };
            let job = sub
                .resolve("bench", &registry, &LimitPolicy::default())
                .map_err(|e| e.0)?;
            super::languages::bare(&job, &work.join(i.to_string())).map(|_| ())
        })?);
    }
    let _ = std::fs::remove_dir_all(&work);
    let (a, b, c) = (Summary::of(a), Summary::of(b), Summary::of(c));
    let ratio = |x: &Summary, y: &Summary| x.p50.as_secs_f64() / y.p50.as_secs_f64().max(1e-9);
    Ok(format!(
        "a C++ solution judged on {tests} tests, {PARALLEL} jobs at a time, median of {rounds} rounds (each round a new program: a cold compile cache)\n\
         | way | wall-clock (p50) | against (a) |\n|---|---|---|\n\
         | (a) one Kiln submission with {tests} tests | {} | 1.00x |\n\
         | (b) {tests} Kiln submissions (compile cache) | {} | {:.2}x |\n\
         | (c) {tests} x bare g++ + run on the host (the peers' way) | {} | {:.2}x |\n\
         (c) / (a) = {:.1}x faster with one submission; (b) / (a) = {:.2}x",
        ms(a.p50),
        ms(b.p50),
        ratio(&b, &a),
        ms(c.p50),
        ratio(&c, &a),
        ratio(&c, &a),
        ratio(&b, &a),
    ))
}
