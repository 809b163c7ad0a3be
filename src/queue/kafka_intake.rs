//! The HTTP API's side of Kafka mode (`kiln api`, `kiln serve --queue kafka`): a submission is
//! accepted once the brokers have it (produced to the submissions topic, idempotent, `acks=all`);
//! results are read from every partition of the results topic (`read_committed`) into a bounded
//! store on disk, the embedded queue's result store, from which `GET`, `?wait=true` and the
//! event streams answer. Each API instance reads all results with a consumer group of its own,
//! so several can run side by side.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::embedded::EmbeddedQueue;
use super::kafka::{ConnectError, KafkaSettings, BINCODE, JSON};
use super::{Envelope, Intake, QueueError, SubmissionState, Submitted};
use crate::events::{Event, EventBus, EventKind};
use crate::result::{ResultView, RunResult};
use crate::BoxFuture;
use crate::Locked as _;

/// Ids produced by this instance whose result has not been read yet, so that a GET can say
/// "queued"; the oldest are forgotten past this many.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Default)]
struct Produced {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Produced {
    fn add(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Kafka mode's intake.
pub struct KafkaIntake {
    settings: KafkaSettings,
    producer: FutureProducer,
    store: Arc<EmbeddedQueue>,
    produced: Arc<Mutex<Produced>>,
    unreachable: Arc<AtomicBool>,
}

impl KafkaIntake {
    /// Starts the producer and the reader of the results topic. `reader_group` names this
    /// instance's consumer group (where it has read the results topic up to).
    pub fn start(
        settings: KafkaSettings,
        store: Arc<EmbeddedQueue>,
        events: EventBus,
        reader_group: String,
    ) -> Result<KafkaIntake, ConnectError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .map_err(|e| ConnectError::Misconfigured(format!("creating the producer: {e}")))?;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &reader_group)
            .set("isolation.level", "read_committed")
            // Results become visible when their transaction commits: ask again soon after.
            .set("fetch.wait.max.ms", "10")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| ConnectError::Misconfigured(format!("creating the consumer: {e}")))?;
        let metadata = consumer
            .fetch_metadata(Some(&settings.results_topic), Duration::from_secs(10))
            .map_err(|e| {
                ConnectError::Unreachable(format!(
                    "asking {} for its topics: {e}",
                    settings.brokers
                ))
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(ConnectError::Misconfigured(format!(
                "topic {} does not exist on {}; create it with `kiln topics create --partitions N --replication R`",
                settings.results_topic, settings.brokers
            )));
        }
        // Every partition, from where this instance stopped reading (the start, the first time).
        let mut wanted = TopicPartitionList::new();
        for p in &partitions {
            wanted
                .add_partition_offset(&settings.results_topic, *p, Offset::Invalid)
                .map_err(|e| ConnectError::Misconfigured(e.to_string()))?;
        }
        let mut start = consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .map_err(|e| ConnectError::Unreachable(format!("reading committed offsets: {e}")))?;
        let unread: Vec<(String, i32)> = start
            .elements()
            .iter()
            .filter(|e| !matches!(e.offset(), Offset::Offset(_)))
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in unread {
            let _ = start.set_partition_offset(&topic, partition, Offset::Beginning);
        }
        consumer.assign(&start).map_err(|e| {
            ConnectError::Misconfigured(format!("reading {}: {e}", settings.results_topic))
        })?;
        let intake = KafkaIntake {
            settings,
            producer,
            store,
            produced: Arc::new(Mutex::new(Produced::default())),
            unreachable: Arc::new(AtomicBool::new(false)),
        };
        intake.read_results(consumer, events)?;
        Ok(intake)
    }

    /// The reader thread: records each committed result, tells waiting clients, then commits
    /// how far it has read.
    fn read_results(&self, consumer: BaseConsumer, events: EventBus) -> Result<(), ConnectError> {
        let store = self.store.clone();
        let produced = self.produced.clone();
        let unreachable = self.unreachable.clone();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ConnectError::Misconfigured(format!("no async runtime: {e}")))?;
        std::thread::Builder::new()
            .name("kiln-results-reader".into())
            .spawn(move || loop {
                let mut batch: Vec<RunResult> = Vec::new();
                let mut last = TopicPartitionList::new();
                while batch.len() < 500 {
                    match consumer.poll(Duration::from_millis(if batch.is_empty() { 500 } else { 5 })) {
                        Some(Ok(m)) => {
                            unreachable.store(false, Ordering::Relaxed);
                            let _ = last.add_partition_offset(
                                m.topic(),
                                m.partition(),
                                Offset::Offset(m.offset() + 1),
                            );
                            match decode_result(&m) {
                                Ok(r) => batch.push(r),
                                Err(e) => tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "skipping a result that cannot be read"),
                            }
                        }
                        Some(Err(e)) => {
                            if matches!(e, rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)) {
                                unreachable.store(true, Ordering::Relaxed);
                            }
                            tracing::warn!(error = %e, "reading results");
                            break;
                        }
                        None => break,
                    }
                }
                if last.count() == 0 {
                    continue;
                }
                // Kept on disk before anyone is told or the position moves on.
                loop {
                    match runtime.block_on(store.record_results(batch.clone())) {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "keeping results failed; retrying");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
                {
                    let mut p = produced.locked();
                    for r in &batch {
                        p.ids.remove(&r.id);
                    }
                }
                for r in batch {
                    let _ = events.send(Event {
                        id: r.id.clone(),
                        kind: EventKind::Finished(Arc::new(r)),
                    });
                }
                if let Err(e) = consumer.commit(&last, CommitMode::Async) {
                    tracing::warn!(error = %e, "saving how far results were read");
                }
            })
            .map_err(|e| ConnectError::Misconfigured(format!("starting the reader: {e}")))?;
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "kafka: brokers {}, submissions to {}, results read from {}",
            self.settings.brokers, self.settings.submissions_topic, self.settings.results_topic
        )
    }

    /// Produces one submission; done when the brokers have it.
    async fn produce(&self, env: &Envelope) -> Result<(), QueueError> {
        let mut submission = env.submission.clone();
        submission.id = Some(env.id.clone());
        let payload = serde_json::to_vec(&submission)
            .map_err(|e| QueueError::Store(format!("encoding a submission: {e}")))?;
        let record = FutureRecord::to(&self.settings.submissions_topic)
            .key(&env.id)
            .payload(&payload)
            .headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(JSON),
            }));
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                QueueError::Store(format!(
                    "handing the submission to Kafka ({}) failed: {e}",
                    self.settings.brokers
                ))
            })
    }
}

/// A result from the results topic, in either content type.
fn decode_result(m: &rdkafka::message::BorrowedMessage<'_>) -> Result<RunResult, String> {
    let bincode = m.headers().is_some_and(|h| {
        h.iter().any(|h| {
            h.key.eq_ignore_ascii_case("content-type") && h.value == Some(BINCODE.as_bytes())
        })
    });
    let payload = m.payload().unwrap_or_default();
    if bincode {
        RunResult::from_bincode(payload).map_err(|e| format!("malformed bincode result: {e}"))
    } else {
        serde_json::from_slice::<ResultView>(payload)
            .map_err(|e| format!("malformed JSON result: {e}"))?
            .into_result()
    }
}

impl Intake for KafkaIntake {
    fn submit(
        &self,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'_, Result<Vec<Submitted>, QueueError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(envelopes.len());
            let mut sending = Vec::new();
            for (i, env) in envelopes.iter().enumerate() {
                let produced = self.produced.locked().ids.contains(&env.id);
                match self.store.state(&env.id)? {
                    Some(done @ SubmissionState::Done(_)) => {
                        out.push(Some(Submitted::Existing(done)))
                    }
                    // Produced by this instance and not answered yet: not produced again.
                    _ if produced => out.push(Some(Submitted::Existing(SubmissionState::Queued))),
                    _ => {
                        out.push(None);
                        sending.push((i, self.produce(env)));
                    }
                }
            }
            let (which, futures): (Vec<usize>, Vec<_>) = sending.into_iter().unzip();
            let sent = futures_util::future::join_all(futures).await;
            for (i, r) in which.into_iter().zip(sent) {
                r?;
                self.produced.locked().add(envelopes[i].id.clone());
                out[i] = Some(Submitted::Accepted);
            }
            Ok(out
                .into_iter()
                .map(|s| s.unwrap_or(Submitted::Accepted))
                .collect())
        })
    }

    fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError> {
        match self.store.state(id)? {
            Some(s) => Ok(Some(s)),
            None => Ok(self
                .produced
                .locked()
                .ids
                .contains(id)
                .then_some(SubmissionState::Queued)),
        }
    }

    fn depth(&self) -> usize {
        self.produced.locked().ids.len()
    }

    /// Submissions wait in Kafka, not here.
    fn queued_bytes(&self) -> usize {
        0
    }

    fn check_space(&self, adding: u64) -> Result<(), QueueError> {
        self.store.check_space(adding)
    }

    fn failure(&self) -> Option<QueueError> {
        self.store.failure().or_else(|| {
            self.unreachable.load(Ordering::Relaxed).then(|| {
                QueueError::Store(format!(
                    "no Kafka broker of {} answers; retrying",
                    self.settings.brokers
                ))
            })
        })
    }

    fn max_results_bytes(&self) -> u64 {
        self.store.max_results_bytes()
    }

    fn not_found(&self, id: &str) -> String {
        format!(
            "no result for {id:?} in this API's store, which keeps the results read from {} \
             since it first started, for result_retention_secs and under max_results_bytes: \
             the id was never submitted, its result is not published yet, or it is older \
             than the store",
            self.settings.results_topic
        )
    }
}
