//! Result callbacks: a submission with `callback_url` gets its result POSTed there once it is
//! published (Judge0 users rely on this). Delivery is tried three times with backoff; the result
//! stays available through GET and server-sent events whatever happens to the callback.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::result::ResultView;

/// Attempts per callback, and the wait before the second and third.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// Sends `result` to `url` on a blocking thread; never blocks the caller.
pub fn deliver(url: String, result: ResultView, metrics: Arc<Metrics>) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let mut last_error = String::new();
        for attempt in 0..=BACKOFF.len() {
            if attempt > 0 {
                std::thread::sleep(BACKOFF[attempt - 1]);
            }
            match agent.post(&url).send_json(&result) {
                Ok(_) => {
                    metrics.callbacks.with_label_values(&["delivered"]).inc();
                    return;
                }
                Err(ureq::Error::Status(code, _)) => {
                    last_error = format!("the target answered {code}")
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        metrics.callbacks.with_label_values(&["failed"]).inc();
        tracing::warn!(id = %result.id, %url, error = %last_error, "callback not delivered after 3 attempts; the result stays available through GET");
    });
}
