//! Neighbours cannot slow a job: each pod's cgroup has a CPU quota (one core by default), so a
//! program that keeps sixteen processes busy takes one core's worth of time, not the machine.
//! Alone in its test binary so that nothing else on the host competes with the measurement.

mod common;

use common::*;
use kiln::outcome::Status;
use kiln::pods::PodBackend;
use kiln::submission::LimitPolicy;

/// About 200 ms of single-threaded work on this kind of machine.
const WORK: &str = "#include <stdio.h>\nint main(void){volatile unsigned long x=0;for(unsigned long i=0;i<400000000UL;i++)x+=i;printf(\"%lu\\n\",(unsigned long)x);return 0;}";

/// Sixteen processes (within the default limits) spinning until the wall-time limit ends them.
const HOG: &str =
    "import os\nfor _ in range(15):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass";

/// The run step's wall time of one WORK job, in a fresh pod of `backend`.
async fn timed_work(backend: &kiln::pods::local::LocalBackend) -> u64 {
    let o = run_on(backend, source("c", WORK)).await;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    o.wall_time_ms
}

/// One measurement: the best of five runs alone, then the best of five beside a running hog.
/// Returns (alone ms, beside ms, cores the hog used on average).
async fn measure(backend: &kiln::pods::local::LocalBackend) -> (u64, u64, f64) {
    let mut alone = u64::MAX;
    for _ in 0..5 {
        alone = alone.min(timed_work(backend).await);
    }
    let mut hog = source("python", HOG);
    hog.limits.wall_time_ms = Some(6_000);
    hog.limits.cpu_time_ms = Some(30_000);
    let job = hog
        .resolve("hog", registry(), &LimitPolicy::default())
        .expect("valid");
    let pod = backend.create(0).await.expect("standby pod");
    let hog_run = tokio::spawn(pod.run(job));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut beside = u64::MAX;
    for _ in 0..5 {
        beside = beside.min(timed_work(backend).await);
    }
    let hog = hog_run
        .await
        .expect("joined")
        .expect("the hog's pod reported");
    assert_eq!(hog.status, Status::TimeLimitExceeded, "{hog:?}");
    (
        alone,
        beside,
        hog.cpu_time_ms as f64 / hog.wall_time_ms as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_beside_a_sixteen_process_hog_keeps_its_wall_time() {
    let backend = backend();
    // This machine is shared with others: a measurement disturbed from outside is taken again,
    // up to three times. Without the quota and the pinning every measurement is ~5x.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (alone, beside, hog_cores) = measure(&backend).await;
        // One core's quota: sixteen busy processes got about one core of time, never two.
        assert!(
            (0.5..=1.15).contains(&hog_cores),
            "the hog used {hog_cores:.2} cores on average"
        );
        let ratio = beside as f64 / alone as f64;
        eprintln!(
            "alone {alone} ms, beside the hog {beside} ms ({ratio:.2}x); hog {hog_cores:.2} cores"
        );
        if ratio <= 1.3 {
            return;
        }
        seen.push(format!(
            "{beside} ms beside the hog against {alone} ms alone ({ratio:.2}x)"
        ));
    }
    panic!(
        "a job's wall time depends on its neighbour: {}",
        seen.join("; ")
    );
}
