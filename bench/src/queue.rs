//! `kiln bench --queue`: the embedded queue with a backlog. `kiln serve` accepts N submissions
//! through the batch endpoint (accept rate), holds them (memory per queued submission, from its
//! RSS before and after), is killed with `kill -9` and started again on the same data dir (time
//! until `/readyz` answers, and every submission still there). The jobs sleep, so that the
//! backlog stays while it is measured.

use std::time::{Duration, Instant};

use kiln_harness::host::rss_of;
use serde_json::{json, Value};

use super::ServeChild;

const BATCH: usize = 1000;
const CLIENTS: usize = 4;

pub fn run(kiln: &std::path::Path, count: usize) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("kiln-bench-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(kiln, &dir, count);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn env(count: usize) -> Vec<(&'static str, String)> {
    vec![
        ("KILN_MAX_QUEUE_DEPTH", (count + 100).to_string()),
        ("KILN_MAX_BATCH", BATCH.to_string()),
        ("KILN_MAX_QUEUE_BYTES", (4usize << 30).to_string()),
    ]
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

fn metric(addr: &str, name: &str) -> Result<f64, String> {
    let text = agent()
        .get(&format!("{addr}/metrics"))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or(format!("no {name} in /metrics"))
}

/// RSS once it stops moving (the allocator returns freed memory lazily).
fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_of(pid);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_of(pid);
        if now.abs_diff(last) < 64 << 10 {
            return now;
        }
        last = now;
    }
    last
}

fn measure(kiln: &std::path::Path, dir: &std::path::Path, count: usize) -> Result<String, String> {
    let server = ServeChild::start_in(kiln, dir, &env(count))?;
    server.wait_ready(Instant::now())?;
    let idle = settled_rss(server.pid());

    let sub = json!({
        "language": "python",
        "source": "import time\ntime.sleep(50)\n",
        "limits": {"wall_time_ms": 55000},
    });
    let batches = count.div_ceil(BATCH);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t = Instant::now();
    let ids: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, sub, next) = (&server.addr, &sub, &next);
                s.spawn(move || {
                    let agent = agent();
                    let mut ids = Vec::new();
                    loop {
                        let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if b >= batches {
                            return Ok(ids);
                        }
                        let n = BATCH.min(count - b * BATCH);
                        let body = Value::Array(vec![sub.clone(); n]);
                        let answer: Vec<Value> = agent
                            .post(&format!("{addr}/v1/submissions/batch"))
                            .send_json(body)
                            .map_err(|e| format!("batch {b}: {e}"))?
                            .into_json()
                            .map_err(|e| e.to_string())?;
                        for a in answer {
                            match a["id"].as_str() {
                                Some(id) => ids.push(id.to_string()),
                                None => return Err(format!("batch {b} refused one: {a}")),
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accept = t.elapsed();
    let ids: Vec<String> = ids.into_iter().collect::<Result<Vec<_>, _>>()?.concat();
    if ids.len() != count {
        return Err(format!("{} of {count} accepted", ids.len()));
    }
    let backlog = settled_rss(server.pid());
    let depth_before = metric(&server.addr, "kiln_queue_depth")? as usize;

    server.kill9();
    let t = Instant::now();
    let server = ServeChild::start_in(kiln, dir, &env(count))?;
    let readyz = server.wait_ready(t)?;
    let restarted = settled_rss(server.pid());
    let depth_after = metric(&server.addr, "kiln_queue_depth")? as usize;
    // Every id is still known and unfinished (none had time to finish: they sleep 50 s).
    let agent = agent();
    let mut missing = 0;
    for id in ids.iter().step_by((count / 1000).max(1)) {
        let state: Value = agent
            .get(&format!("{}/v1/submissions/{id}", server.addr))
            .call()
            .map_err(|e| format!("GET {id}: {e}"))?
            .into_json()
            .map_err(|e| e.to_string())?;
        if !matches!(state["status"].as_str(), Some("queued" | "running")) {
            missing += 1;
        }
    }
    drop(server);
    if depth_after != count || missing != 0 {
        return Err(format!(
            "after kill -9: queue depth {depth_after} of {count}, {missing} sampled ids not queued"
        ));
    }

    let per = |rss: u64| (rss.saturating_sub(idle)) as f64 / count as f64;
    Ok(format!(
        "| embedded queue, {count} submissions | value |\n|---|---|\n\
         | accepted through `POST /v1/submissions/batch` ({BATCH} per batch, {CLIENTS} clients) | {:.0}/s ({:.2} s) |\n\
         | `kiln serve` RSS idle | {:.1} MB |\n\
         | RSS with the backlog (queue depth {depth_before}) | {:.1} MB: {:.0} bytes per queued submission |\n\
         | after `kill -9`, start to `/readyz` 200 | {:.0} ms |\n\
         | RSS after the restart, backlog reloaded | {:.1} MB: {:.0} bytes per queued submission |\n\
         | submissions still queued after the restart | {depth_after} of {count} (and 1 in {} checked by GET) |\n",
        count as f64 / accept.as_secs_f64(),
        accept.as_secs_f64(),
        idle as f64 / 1e6,
        backlog as f64 / 1e6,
        per(backlog),
        readyz.as_secs_f64() * 1000.0,
        restarted as f64 / 1e6,
        per(restarted),
        (count / 1000).max(1),
    ))
}
