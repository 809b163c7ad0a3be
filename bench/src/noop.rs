//! No-op pods, for measuring Kiln's own overhead: a job is answered at once, as accepted with
//! its stdin as its output, without running anything. Never a sandbox: only `kiln bench` uses it.

use std::sync::atomic::{AtomicU64, Ordering};

use kiln::job::Job;
use kiln::outcome::{Outcome, Status};
use kiln::pods::{BoxFuture, Finished, PodBackend, PodError, PodKiller, StandbyPod};

/// Makes pods that run nothing.
#[derive(Default)]
pub struct NoopBackend {
    made: AtomicU64,
}

struct NoopPod(String);

impl PodBackend for NoopBackend {
    fn create(&self, _pool: usize) -> BoxFuture<'static, Result<Box<dyn StandbyPod>, PodError>> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(Box::new(NoopPod(format!("noop-{n}"))) as Box<dyn StandbyPod>) })
    }

    fn describe(&self) -> Vec<String> {
        vec!["NO-OP PODS: jobs are answered at once and nothing runs (benchmark only)".into()]
    }

    fn shutdown(&self) {}
}

impl StandbyPod for NoopPod {
    fn id(&self) -> &str {
        &self.0
    }

    fn killer(&self) -> PodKiller {
        PodKiller::new(|| {})
    }

    fn run(self: Box<Self>, job: Job) -> BoxFuture<'static, Result<Finished, PodError>> {
        Box::pin(async move {
            let mut outcome = Outcome::failed(Status::Accepted, "");
            outcome.message = None;
            outcome.exit_code = Some(0);
            outcome.stdout = job.stdin;
            Ok(Finished::of(outcome))
        })
    }

    fn destroy(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
