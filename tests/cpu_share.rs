//! Neighbours cannot take a job's CPU: each pod's cgroup has a CPU quota (one core by default)
//! and each running job is pinned to the least busy cores, so a program that keeps sixteen
//! processes busy gets one core's worth of time and leaves the job the rest. These tests look at
//! the mechanism itself (the quota, its throttling, the cores each process may use, the share of
//! its wall time the job ran), not at wall times, which a busy host moves on its own: `kiln bench
//! --neighbour` measures those, as a benchmark.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kiln::job::Job;
use kiln::outcome::{Outcome, Status};
use kiln::pods::local::LocalBackend;
use kiln::pods::PodBackend;
use kiln::sandbox::cgroup::CgroupLayout;
use kiln::submission::LimitPolicy;

/// A few hundred milliseconds of single-threaded work; the compiled program is `main`.
const WORK: &str = "#include <stdio.h>\nint main(void){volatile unsigned long x=0;for(unsigned long i=0;i<400000000UL;i++)x+=i;printf(\"%lu\\n\",(unsigned long)x);return 0;}";

/// Sixteen processes (within the default limits) spinning until the wall-time limit ends them.
const PYTHON_HOG: &str =
    "import os\nfor _ in range(15):\n    if os.fork() == 0:\n        break\nwhile True:\n    pass";
/// The same in C: its job holds the compile step's two cores, its run step a one-core quota.
const C_HOG: &str = "#include <unistd.h>\nint main(void){for(int i=0;i<15;i++)if(fork()==0)break;volatile unsigned long x=0;for(;;)x++;}";
const HOG_PROCESSES: usize = 16;

/// The two tests each keep the host's cores busy: one at a time.
static ONE_HOG_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where this host's pods' CPU groups are: the cpu hierarchy's `kiln` group on v1 (with the
/// cpuacct hierarchy's for the CPU they used, which may be the same), `<root>/kiln` on v2.
#[derive(Clone, Debug)]
struct PodGroups {
    cpu: PathBuf,
    cpuacct: PathBuf,
    v2: bool,
}

impl PodGroups {
    fn here() -> PodGroups {
        match CgroupLayout::detect() {
            CgroupLayout::V1 {
                cpu: Some(cpu),
                cpuacct,
                ..
            } => PodGroups {
                cpu: cpu.join("kiln"),
                cpuacct: cpuacct.join("kiln"),
                v2: false,
            },
            CgroupLayout::V1 { cpu: None, .. } => {
                panic!("no CPU quota on this host: the cgroup v1 cpu controller is not mounted")
            }
            CgroupLayout::V2 { root, .. } => PodGroups {
                cpu: root.join("kiln"),
                cpuacct: root.join("kiln"),
                v2: true,
            },
            CgroupLayout::Unavailable { reason } => panic!("no cgroups on this host: {reason}"),
        }
    }

    /// CPU time pod group `name` has used, in nanoseconds.
    fn usage_ns(&self, name: &std::ffi::OsStr) -> Option<u64> {
        let group = self.cpuacct.join(name);
        if self.v2 {
            let stat = std::fs::read_to_string(group.join("cpu.stat")).ok()?;
            let us = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())?;
            Some(us * 1000)
        } else {
            let usage = std::fs::read_to_string(group.join("cpuacct.usage")).ok()?;
            usage.trim().parse().ok()
        }
    }
}

/// Cores' worth of CPU time per period the group may use; `None` when it is unlimited.
fn quota_cores(group: &Path, v2: bool) -> Option<f64> {
    let read = |name: &str| std::fs::read_to_string(group.join(name)).unwrap_or_default();
    let (quota, period) = if v2 {
        let max = read("cpu.max");
        let mut fields = max.split_whitespace();
        (
            fields.next().and_then(|q| q.parse::<f64>().ok()),
            fields.next().and_then(|p| p.parse::<f64>().ok()),
        )
    } else {
        (
            read("cpu.cfs_quota_us").trim().parse::<f64>().ok(),
            read("cpu.cfs_period_us").trim().parse::<f64>().ok(),
        )
    };
    match (quota, period) {
        (Some(q), Some(p)) if q > 0.0 && p > 0.0 => Some(q / p),
        _ => None, // "max" on v2, -1 on v1
    }
}

/// A group's throttling counters: periods in which it hit its quota, and microseconds it was
/// held back (v1 `throttled_time` is in nanoseconds, v2 `throttled_usec` in microseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Throttling {
    periods: u64,
    held_us: u64,
}

fn throttling(group: &Path) -> Option<Throttling> {
    let stat = std::fs::read_to_string(group.join("cpu.stat")).ok()?;
    let field = |name: &str| {
        stat.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(Throttling {
        periods: field("nr_throttled")?,
        held_us: field("throttled_usec").or_else(|| field("throttled_time").map(|ns| ns / 1000))?,
    })
}

/// The cores process `pid` may run on: its affinity, the mask /proc/PID/status shows as
/// `Cpus_allowed_list` (read by the system call, which costs the watcher far less).
fn allowed_cores(pid: u32) -> Option<BTreeSet<u32>> {
    let cores = kiln::sandbox::affinity::of(i32::try_from(pid).ok()?).ok()?;
    Some(cores.into_iter().collect())
}

/// The hog's group as the watcher saw it while all its processes ran.
#[derive(Clone, Debug)]
struct HogGroup {
    path: PathBuf,
    quota: Option<f64>,
    /// Every core any of its processes could use.
    cores: BTreeSet<u32>,
    /// Its throttling when all its processes were first there, and at the last look.
    first: Throttling,
    last: Throttling,
}

/// The cores the job's program (`main`, in another group) and the hog could use at one instant.
#[derive(Debug)]
struct Sample {
    job: BTreeSet<u32>,
    hog: BTreeSet<u32>,
}

#[derive(Debug, Default)]
struct Seen {
    hog: Option<HogGroup>,
    samples: Vec<Sample>,
    /// CPU time this binary's pod groups have used since the watcher started, and each live
    /// group's at the last look (a group made and gone between two looks is missed: <5 ms).
    pods_ns: u64,
    pod_usage: HashMap<std::ffi::OsString, u64>,
}

/// A moment, to tell how busy the host was with work other than this binary's pods since then.
struct Moment {
    at: Instant,
    host_busy: Duration,
    pods_ns: u64,
    /// This process's own CPU time (the watcher's looks, the runtime).
    own: Duration,
}

fn own_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let d = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    d(usage.ru_utime) + d(usage.ru_stime)
}

/// Looks at this test binary's pod groups every five milliseconds until it is dropped: the hog is
/// the group holding `HOG_PROCESSES` processes whose name starts with its `comm` (`python3.11`
/// for the interpreter), the job's program a process called `main` in another group.
struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(hog_comm: &'static str) -> Watcher {
        let groups = PodGroups::here();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = std::thread::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            move || {
                let mut pinned = false;
                while !stop.load(Ordering::Relaxed) {
                    look(&groups, hog_comm, &seen);
                    // Once the hog is found, the watcher's own time comes from the hog's cores,
                    // not from the job's.
                    let hog_cores = seen.lock().unwrap().hog.as_ref().map(|h| h.cores.clone());
                    if let Some(cores) = hog_cores.filter(|_| !pinned) {
                        let cores: Vec<u32> = cores.into_iter().collect();
                        pinned = kiln::sandbox::affinity::set(0, &cores).is_ok();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Watcher {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn now(&self) -> Moment {
        Moment {
            at: Instant::now(),
            host_busy: kiln_harness::host::busy(),
            pods_ns: self.seen.lock().unwrap().pods_ns,
            own: own_cpu(),
        }
    }

    /// Cores' worth of CPU time the host spent since `then` on anything but this binary's pods
    /// and this process (other tests, builds, virtual machines; the pods' runners too).
    fn outside_cores_since(&self, then: &Moment) -> f64 {
        let now = self.now();
        let host = now.host_busy.saturating_sub(then.host_busy).as_secs_f64();
        let pods = now.pods_ns.saturating_sub(then.pods_ns) as f64 / 1e9;
        let own = now.own.saturating_sub(then.own).as_secs_f64();
        (host - pods - own).max(0.0) / now.at.duration_since(then.at).as_secs_f64()
    }

    fn hog(&self) -> Option<HogGroup> {
        self.seen.lock().unwrap().hog.clone()
    }

    /// Waits (a generous deadline: the host may be busy) until the hog's processes are all there.
    async fn hog_started(&self, running: &tokio::task::JoinHandle<Outcome>) -> HogGroup {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(hog) = self.hog() {
                return hog;
            }
            assert!(
                Instant::now() < deadline && !running.is_finished(),
                "the hog's {HOG_PROCESSES} processes never appeared together in one pod group"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the watcher ran");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One look at every group `pod-<this pid>-*`.
fn look(groups: &PodGroups, hog_comm: &str, seen: &Mutex<Seen>) {
    let ours = format!("pod-{}-", std::process::id());
    let mut busy: HashMap<PathBuf, (usize, BTreeSet<u32>)> = HashMap::new();
    let mut job = None;
    let mut usage = HashMap::new();
    for group in std::fs::read_dir(&groups.cpu)
        .into_iter()
        .flatten()
        .flatten()
    {
        if !group.file_name().to_string_lossy().starts_with(&ours) {
            continue;
        }
        if let Some(ns) = groups.usage_ns(&group.file_name()) {
            usage.insert(group.file_name(), ns);
        }
        let procs = std::fs::read_to_string(group.path().join("cgroup.procs"));
        for pid in procs.unwrap_or_default().split_whitespace() {
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
            let (Ok(comm), Some(cores)) = (comm, allowed_cores(pid)) else {
                continue; // gone meanwhile
            };
            let comm = comm.trim();
            if comm.starts_with(hog_comm) {
                let b = busy.entry(group.path()).or_default();
                b.0 += 1;
                b.1.extend(cores.iter().copied());
            }
            if comm == "main" {
                job = Some((group.path(), cores));
            }
        }
    }
    let mut seen = seen.lock().unwrap();
    let used: u64 = usage
        .iter()
        .map(|(name, ns)| ns.saturating_sub(seen.pod_usage.get(name).copied().unwrap_or(0)))
        .sum();
    seen.pods_ns += used;
    seen.pod_usage = usage;
    let Some((path, (_, cores))) = busy.into_iter().find(|(_, b)| b.0 == HOG_PROCESSES) else {
        return;
    };
    match &mut seen.hog {
        None => {
            let now = throttling(&path).unwrap_or_default();
            seen.hog = Some(HogGroup {
                quota: quota_cores(&path, groups.v2),
                path: path.clone(),
                cores: cores.clone(),
                first: now,
                last: now,
            });
        }
        Some(hog) if hog.path == path => {
            hog.last = throttling(&path).unwrap_or(hog.last);
            hog.cores.extend(cores.iter().copied());
        }
        Some(_) => return, // a second hog: not this test's
    }
    if let Some((_, job)) = job.filter(|(group, _)| *group != path) {
        seen.samples.push(Sample { job, hog: cores });
    }
}

fn resolve(language: &str, code: &str, wall_time_ms: Option<u64>) -> Job {
    let mut sub = source(language, code);
    if wall_time_ms.is_some() {
        sub.limits.wall_time_ms = wall_time_ms;
        sub.limits.cpu_time_ms = Some(30_000);
    }
    sub.resolve(language, registry(), &LimitPolicy::default())
        .expect("valid")
}

/// The cores the host pins a job to: its steps' largest `cpus` (`src/pods/local.rs`).
fn cores_held(job: &Job) -> usize {
    job.run
        .limits
        .cpus
        .max(job.compile.as_ref().map_or(1, |c| c.limits.cpus)) as usize
}

fn host_cores() -> usize {
    kiln::sandbox::affinity::of(0).expect("own affinity").len()
}

/// Starts `job` in a fresh pod; its outcome when it ends.
async fn start(backend: &LocalBackend, job: Job) -> tokio::task::JoinHandle<Outcome> {
    let pod = backend.create(0).await.expect("standby pod");
    tokio::spawn(async move { pod.run(job).await.expect("the hog's pod reported").outcome })
}

/// The share of its wall time the job's run step was on a core: CPU time over wall time.
async fn share_of_one_run(backend: &LocalBackend, job: &Job) -> f64 {
    let pod = backend.create(0).await.expect("standby pod");
    let o = pod
        .run(job.clone())
        .await
        .expect("the work's pod reported")
        .outcome;
    assert_eq!(o.status, Status::Accepted, "{o:?}");
    o.cpu_time_ms as f64 / o.wall_time_ms.max(1) as f64
}

fn cores_used(o: &Outcome) -> f64 {
    o.cpu_time_ms as f64 / o.wall_time_ms.max(1) as f64
}

/// The most other work on the host (in cores' worth, beside this binary's pods) during which a
/// job's share of its wall time is judged: past it, whatever else runs took the time.
const QUIET_HOST: f64 = 0.2;

/// The hog gets one core and a one-core quota; the job keeps every core the hog lacks (its own
/// when the host has enough for both) and runs most of its wall time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_beside_a_sixteen_process_hog_keeps_its_cores_and_its_share_of_them() {
    let _one = ONE_HOG_AT_A_TIME.lock().await;
    let backend = backend();
    let hog_job = resolve("python", PYTHON_HOG, Some(8_000));
    let work = resolve("c", WORK, None);
    let (hog_cpus, work_cpus) = (hog_job.run.limits.cpus as usize, cores_held(&work));

    let watcher = Watcher::start("python3");
    let hog_run = start(&backend, hog_job).await;
    watcher.hog_started(&hog_run).await;
    // Each run's share, and how many cores' worth of other work the host did meanwhile.
    let mut runs = Vec::new();
    for _ in 0..5 {
        let then = watcher.now();
        let share = share_of_one_run(&backend, &work).await;
        if hog_run.is_finished() {
            break; // this run ended alone (a slow host): the runs before it count
        }
        runs.push((share, watcher.outside_cores_since(&then)));
    }
    let seen = watcher.stop();
    let hog_outcome = hog_run.await.expect("joined");
    assert_eq!(
        hog_outcome.status,
        Status::TimeLimitExceeded,
        "{hog_outcome:?}"
    );
    let hog = seen.hog.expect("found above");
    let runs_text: Vec<String> = runs
        .iter()
        .map(|(share, outside)| format!("{share:.2} (other work {outside:.2} cores)"))
        .collect();
    eprintln!(
        "hog {}: quota {:?} cores, cores {:?}, {:.2} cores used; {} looks at the job's cores \
         beside it; the job's share of its wall time: {}",
        hog.path.display(),
        hog.quota,
        hog.cores,
        cores_used(&hog_outcome),
        seen.samples.len(),
        runs_text.join(", ")
    );

    // The quota: one core's worth per period.
    let quota = hog
        .quota
        .unwrap_or_else(|| panic!("the hog's group {} has no CPU quota", hog.path.display()));
    assert!(
        (quota - hog_cpus as f64).abs() < 0.01,
        "the hog's group may use {quota:.2} cores per period, not {hog_cpus}"
    );
    assert!(
        cores_used(&hog_outcome) <= 1.15 * hog_cpus as f64,
        "sixteen busy processes used {:.2} cores on average, past a {hog_cpus}-core quota",
        cores_used(&hog_outcome)
    );

    // The cores: the hog's processes stay on their one, and the job has every other core it was
    // given; disjoint from the hog's when the host has cores for both. A C job holds its
    // compile's two cores through its run step too, so that takes three: on two, its program
    // may run on the hog's core as well (and on a busy host the scheduler puts it there).
    assert!(
        !seen.samples.is_empty(),
        "the job's program `main` was never seen running beside the hog"
    );
    for s in &seen.samples {
        assert_eq!(
            s.hog.len(),
            hog_cpus.min(host_cores()),
            "the hog's processes may run on cores {:?}, more than its {hog_cpus}",
            s.hog
        );
        let shared = s.job.intersection(&s.hog).count();
        let free = host_cores() - s.hog.len();
        if work_cpus <= free {
            assert_eq!(
                shared, 0,
                "the job (cores {:?}) shares a core with the hog (cores {:?})",
                s.job, s.hog
            );
        } else {
            assert_eq!(
                s.job.len() - shared,
                free,
                "the job (cores {:?}) lacks a core the hog does not hold (the hog's: {:?})",
                s.job,
                s.hog
            );
        }
    }

    // The share: with a core of its own the job runs nearly all its wall time (0.95-0.98 here);
    // a hog spread over both cores without a quota leaves it 0.65-0.75 (its pod's group still
    // weighs as much as the hog's), pods without groups of their own 1/9. Judged on the runs
    // during which the host did little else: other work takes the job's time on its own.
    assert!(
        !runs.is_empty(),
        "no work run ended while the hog still ran"
    );
    let quiet: Vec<f64> = runs
        .iter()
        .filter(|(_, outside)| *outside < QUIET_HOST)
        .map(|(share, _)| *share)
        .collect();
    if quiet.is_empty() {
        eprintln!(
            "the host was busy with other work through every run: the job's share not judged"
        );
        return;
    }
    let best = quiet.iter().copied().fold(0.0, f64::max);
    assert!(
        best >= 0.8,
        "beside the hog the job ran {best:.2} of its wall time at best, on a host otherwise \
         quiet: {}",
        runs_text.join(", ")
    );
}

/// A hog whose job holds more cores than its run step's quota (a C program: the compile's two
/// cores, the run's one) hits the quota: its group is throttled and gets about one core.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hog_with_more_cores_than_its_quota_is_throttled_to_it() {
    let _one = ONE_HOG_AT_A_TIME.lock().await;
    let hog_job = resolve("c", C_HOG, Some(3_000));
    let (quota_cpus, held) = (hog_job.run.limits.cpus as usize, cores_held(&hog_job));
    assert!(
        held > quota_cpus,
        "the C hog's job holds {held} cores and its run a {quota_cpus}-core quota: nothing to \
         throttle (this test needs a language whose compile step asks for more cores)"
    );
    if host_cores() <= quota_cpus {
        eprintln!(
            "skipped: {} core(s) here, no more than the quota",
            host_cores()
        );
        return;
    }
    let backend = backend();
    let watcher = Watcher::start("main");
    let hog_run = start(&backend, hog_job).await;
    watcher.hog_started(&hog_run).await;
    // The first period the hog spends its quota in throttles it; wait for one, until it ends.
    while !hog_run.is_finished()
        && watcher
            .hog()
            .is_some_and(|h| h.last.periods <= h.first.periods)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hog = watcher.stop().hog.expect("found above");
    let outcome = hog_run.await.expect("joined");
    assert_eq!(outcome.status, Status::TimeLimitExceeded, "{outcome:?}");
    let used = cores_used(&outcome);
    eprintln!(
        "C hog {}: quota {:?} cores, cores {:?}, throttling {:?} -> {:?}, {used:.2} cores used",
        hog.path.display(),
        hog.quota,
        hog.cores,
        hog.first,
        hog.last
    );

    let quota = hog
        .quota
        .unwrap_or_else(|| panic!("the hog's group {} has no CPU quota", hog.path.display()));
    assert!(
        (quota - quota_cpus as f64).abs() < 0.01,
        "the hog's group may use {quota:.2} cores per period, not {quota_cpus}"
    );
    assert!(
        hog.cores.len() > quota_cpus,
        "the hog's processes could use only cores {:?}: its quota cannot bite",
        hog.cores
    );
    assert!(
        used <= 1.15 * quota_cpus as f64,
        "sixteen busy processes on {} cores used {used:.2} cores on average, past a \
         {quota_cpus}-core quota",
        hog.cores.len()
    );
    let throttled = hog.last.periods > hog.first.periods && hog.last.held_us > hog.first.held_us;
    if !throttled {
        // A host whose other work left the hog less than its quota gives nothing to throttle.
        assert!(
            used < 0.9 * quota_cpus as f64,
            "the hog got {used:.2} cores and its group was never throttled: {:?} -> {:?}",
            hog.first,
            hog.last
        );
        eprintln!("the host was too busy to give the hog its quota; its throttling not seen");
    }
}
