//! Admission: the one way into the queue for every door of the API (`/v1`, Judge0, Piston's
//! execute and its WebSocket). It holds the intake, so a handler cannot submit without the checks
//! that keep the service within its bounds: submissions queued (`max_queue_depth`), their bytes
//! (`max_queue_bytes`), and free space under the store (`min_free_bytes`). A refusal is an
//! `ApiError`, which each door answers in its own API's shape; nothing refused is queued.

use std::sync::{Arc, Mutex};

use super::ApiError;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::queue::{Envelope, Intake, QueueError, SubmissionState, Submitted};
use crate::Locked as _;

/// The queue as the API sees it: checked submission, and read-only questions about where
/// submissions stand.
pub struct Admission {
    intake: Arc<dyn Intake>,
    max_depth: usize,
    max_bytes: usize,
    metrics: Arc<Metrics>,
    /// Submissions between their check and the intake counting them (a journal write or a Kafka
    /// produce takes a while): counted here, so that requests arriving together cannot all pass
    /// the bounds before any of them is queued.
    admitting: Mutex<Admitting>,
}

/// What is being admitted now.
#[derive(Default)]
struct Admitting {
    submissions: usize,
    bytes: usize,
}

/// A place held within the bounds while its submissions are submitted; given back on drop, by
/// when the intake counts them itself.
struct Held<'a> {
    admission: &'a Admission,
    submissions: usize,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut a = self.admission.admitting();
        a.submissions -= self.submissions;
        a.bytes -= self.bytes;
    }
}

impl Admission {
    pub fn new(intake: Arc<dyn Intake>, settings: &Settings, metrics: Arc<Metrics>) -> Admission {
        Admission {
            intake,
            max_depth: settings.max_queue_depth,
            max_bytes: settings.max_queue_bytes,
            metrics,
            admitting: Mutex::new(Admitting::default()),
        }
    }

    /// Checks the bounds and the disk, then submits `envelopes` durably (all or none); ids known
    /// already answer where they stand. Err is why nothing was queued: `QueueFull` (429 at
    /// `/v1`), `InsufficientStorage` (507), `Unavailable` (503).
    pub async fn admit(&self, envelopes: Vec<Envelope>) -> Result<Vec<Submitted>, ApiError> {
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = envelopes.iter().map(Envelope::weight).sum();
        let _held = self.hold(envelopes.len(), bytes)?;
        self.intake
            .submit(envelopes)
            .await
            .map_err(|e| self.refused(e))
    }

    fn admitting(&self) -> std::sync::MutexGuard<'_, Admitting> {
        self.admitting.locked()
    }

    /// Holds room for `submissions` carrying `bytes`, or says which bound they would pass.
    fn hold(&self, submissions: usize, bytes: usize) -> Result<Held<'_>, ApiError> {
        let mut a = self.admitting();
        let depth = self.intake.depth() + a.submissions;
        let queued = self.intake.queued_bytes() + a.bytes;
        let full = if depth + submissions > self.max_depth {
            Some(format!(
                "the queue holds {depth} submissions (maximum {})",
                self.max_depth
            ))
        } else if queued + bytes > self.max_bytes {
            Some(format!(
                "the queue holds {queued} bytes of submissions (maximum {})",
                self.max_bytes
            ))
        } else {
            None
        };
        if let Some(why) = full {
            self.reject("queue_full");
            return Err(ApiError::QueueFull(why));
        }
        if let Err(e) = self.intake.check_space((a.bytes + bytes) as u64) {
            return Err(self.refused(e));
        }
        a.submissions += submissions;
        a.bytes += bytes;
        Ok(Held {
            admission: self,
            submissions,
            bytes,
        })
    }

    /// A queue error as the API's refusal, counted when it is the disk's.
    fn refused(&self, e: QueueError) -> ApiError {
        if matches!(e, QueueError::NoSpace(_)) {
            self.reject("disk_full");
        }
        e.into()
    }

    fn reject(&self, reason: &str) {
        self.metrics
            .rejected_requests
            .with_label_values(&[reason])
            .inc();
    }

    /// Where a submission stands; `None` for an id the queue does not know.
    pub fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError> {
        self.intake.state(id)
    }

    /// Accepted and not yet finished.
    pub fn depth(&self) -> usize {
        self.intake.depth()
    }

    /// Why the queue cannot take submissions now; `None` while it can.
    pub fn failure(&self) -> Option<QueueError> {
        self.intake.failure()
    }

    /// What to tell a client asking for an id the queue does not know.
    pub fn not_found(&self, id: &str) -> String {
        self.intake.not_found(id)
    }

    /// The bound on kept results, for messages about evicted ones.
    pub fn max_results_bytes(&self) -> u64 {
        self.intake.max_results_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::pods::BoxFuture;

    /// An intake whose journal write takes a while, as a real one's fsync does; with `disk_full`
    /// the write finds the disk full.
    #[derive(Default)]
    struct SlowIntake {
        depth: AtomicUsize,
        disk_full: bool,
    }

    impl Intake for SlowIntake {
        fn submit(
            &self,
            envelopes: Vec<Envelope>,
        ) -> BoxFuture<'_, Result<Vec<Submitted>, QueueError>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.disk_full {
                    return Err(QueueError::NoSpace("the disk is full".into()));
                }
                self.depth.fetch_add(envelopes.len(), Ordering::SeqCst);
                Ok(envelopes.iter().map(|_| Submitted::Accepted).collect())
            })
        }
        fn state(&self, _: &str) -> Result<Option<SubmissionState>, QueueError> {
            Ok(None)
        }
        fn depth(&self) -> usize {
            self.depth.load(Ordering::SeqCst)
        }
        fn queued_bytes(&self) -> usize {
            0
        }
        fn check_space(&self, _: u64) -> Result<(), QueueError> {
            Ok(())
        }
        fn failure(&self) -> Option<QueueError> {
            None
        }
        fn max_results_bytes(&self) -> u64 {
            0
        }
    }

    fn admission(intake: SlowIntake, max_depth: usize) -> Admission {
        let settings = Settings {
            max_queue_depth: max_depth,
            ..Settings::default()
        };
        Admission::new(Arc::new(intake), &settings, Arc::new(Metrics::new()))
    }

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            submission: Default::default(),
            created_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn requests_arriving_together_cannot_all_pass_the_bound_before_any_is_queued() {
        let a = admission(SlowIntake::default(), 3);
        let answers = futures_util::future::join_all(
            (0..10).map(|i| a.admit(vec![envelope(&format!("s{i}"))])),
        )
        .await;
        let accepted = answers.iter().filter(|r| r.is_ok()).count();
        assert_eq!(accepted, 3, "the bound is 3");
        assert!(answers
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, ApiError::QueueFull(_))));
        assert_eq!(a.depth(), 3);
        let full = a
            .metrics
            .rejected_requests
            .with_label_values(&["queue_full"]);
        assert_eq!(full.get(), 7);
    }

    #[tokio::test]
    async fn a_full_disk_found_while_journaling_is_a_507_counted_and_holds_no_room() {
        let intake = SlowIntake {
            disk_full: true,
            ..SlowIntake::default()
        };
        let a = admission(intake, 1);
        for _ in 0..2 {
            // Each attempt gets the disk's answer, not a full queue left by the one before.
            match a.admit(vec![envelope("s")]).await {
                Err(ApiError::InsufficientStorage(m)) => assert!(m.contains("disk is full")),
                other => panic!("expected InsufficientStorage, got {other:?}"),
            }
        }
        let full = a
            .metrics
            .rejected_requests
            .with_label_values(&["disk_full"]);
        assert_eq!(full.get(), 2);
    }
}
