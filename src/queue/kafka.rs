//! The Kafka queue: submissions consumed from a partitioned topic in a consumer group, results
//! produced to a results topic, exactly once.
//!
//! - One thread polls the consumer: it decodes each message into a `Delivery` (JSON or bincode,
//!   named by the `content-type` header) and keeps it ready for `take`; a message that cannot be
//!   decoded becomes a dead letter. It pauses the partitions while ready and running work reach
//!   `max_buffered`, or while a partition's uncommitted span nears what its commit metadata can
//!   carry, and resumes below half of it: memory stays bounded whatever the backlog.
//! - `complete` publishes results, pending dead letters and the consumed offsets in one Kafka
//!   transaction (`send_offsets_to_transaction` with the consumer's group metadata, so an
//!   instance whose partitions were taken away cannot commit them). Offsets finish out of order;
//!   per partition the commit is the lowest unfinished offset, with the finished ones above it in
//!   the commit's metadata (offsets.rs). A `read_committed` reader of the results topic sees one
//!   result per submission; a job may run twice after a crash, and its result is published once.
//! - Revoked partitions are forgotten at once: their ready work is dropped and the results of
//!   their running jobs are not published by this instance (the new owner redoes them).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::offsets::{PartitionOffsets, MAX_SPAN};
use super::{Delivery, Envelope, Queue, QueueError};
use crate::metrics::Metrics;
use crate::result::{now_ms, RunResult};
use crate::submission::Submission;
use crate::BoxFuture;
use crate::Locked as _;

/// Content types a submission (and its result) may be written in.
pub const JSON: &str = "application/json";
pub const BINCODE: &str = "application/x-kiln-bincode";

/// How Kiln reaches Kafka: `[kafka]` in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub submissions_topic: String,
    pub results_topic: String,
    /// Where messages that cannot be decoded go, with the reason in a header.
    pub dead_letter_topic: String,
    /// The consumer group schedulers share.
    pub group: String,
    /// This scheduler's transactional id: stable across restarts of the same instance (a
    /// StatefulSet pod name), so that a restarted instance fences its former self. Default
    /// `kiln-<hostname>`.
    pub transactional_id: Option<String>,
    /// Ready and running submissions past which the consumer pauses its partitions.
    pub max_buffered: usize,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            submissions_topic: "kiln.submissions".into(),
            results_topic: "kiln.results".into(),
            dead_letter_topic: "kiln.dead-letter".into(),
            group: "kiln".into(),
            transactional_id: None,
            max_buffered: 1024,
        }
    }
}

impl KafkaSettings {
    pub fn transactional_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "host".into());
            format!("kiln-{host}")
        })
    }

    pub fn topics(&self) -> [&str; 3] {
        [
            &self.submissions_topic,
            &self.results_topic,
            &self.dead_letter_topic,
        ]
    }
}

/// A partition this instance owns: `epoch` changes with every assignment, so work taken under an
/// earlier one is recognised as no longer ours.
struct Owned {
    epoch: u64,
    offsets: PartitionOffsets,
}

/// Where a taken submission came from.
#[derive(Clone, Copy)]
struct Source {
    partition: i32,
    offset: i64,
    epoch: u64,
    bincode: bool,
}

/// A message that could not be decoded, waiting for the next transaction.
#[derive(Clone)]
struct DeadLetter {
    partition: i32,
    offset: i64,
    epoch: u64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    reason: String,
}

#[derive(Default)]
struct State {
    owned: HashMap<i32, Owned>,
    ready: VecDeque<Delivery>,
    sources: HashMap<u64, Source>,
    next_token: u64,
    next_epoch: u64,
    dead: Vec<DeadLetter>,
    /// Taken and not yet completed.
    running: usize,
    /// Ids waiting or running here, with the partition and epoch they came under: the same id
    /// produced again meanwhile (a client retrying) is not run twice. Same key, same partition.
    pending_ids: HashMap<String, (i32, u64)>,
}

impl State {
    fn owns(&self, partition: i32, epoch: u64) -> bool {
        self.owned.get(&partition).is_some_and(|o| o.epoch == epoch)
    }

    fn widest_span(&self) -> i64 {
        self.owned
            .values()
            .map(|o| o.offsets.span())
            .max()
            .unwrap_or(0)
    }
}

/// The consumer's callbacks: rebalances change what this instance owns; statistics give the
/// lag and whether any broker answers.
struct Context {
    state: Arc<Mutex<State>>,
    topic: String,
    metrics: Arc<Metrics>,
    /// Set from statistics: no broker is up.
    unreachable: Arc<AtomicBool>,
}

impl ClientContext for Context {
    fn stats(&self, stats: rdkafka::Statistics) {
        let up = stats.brokers.values().any(|b| b.state == "UP");
        self.unreachable.store(!up, Ordering::Relaxed);
        if let Some(topic) = stats.topics.get(&self.topic) {
            for (p, partition) in &topic.partitions {
                if *p >= 0 && partition.consumer_lag >= 0 {
                    self.metrics
                        .kafka_lag
                        .with_label_values(&[&p.to_string()])
                        .set(partition.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka");
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Where each partition was committed, and what was finished above that.
                let committed = consumer
                    .committed_offsets((*tpl).clone(), Duration::from_secs(30))
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reading committed offsets failed; starting from the group's position");
                        (*tpl).clone()
                    });
                let mut state = self.state.locked();
                for elem in committed.elements_for_topic(&self.topic) {
                    let offsets = match elem.offset() {
                        Offset::Offset(o) => PartitionOffsets::from_commit(o, elem.metadata()),
                        _ => PartitionOffsets::default(),
                    };
                    state.next_epoch += 1;
                    let epoch = state.next_epoch;
                    state
                        .owned
                        .insert(elem.partition(), Owned { epoch, offsets });
                }
                tracing::info!(partitions = ?partitions_of(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let gone = partitions_of(tpl);
                let mut state = self.state.locked();
                for p in &gone {
                    state.owned.remove(p);
                }
                let State {
                    ready,
                    sources,
                    pending_ids,
                    ..
                } = &mut *state;
                ready.retain(|d| {
                    let keep = sources
                        .get(&d.token)
                        .is_some_and(|s| !gone.contains(&s.partition));
                    if !keep {
                        sources.remove(&d.token);
                    }
                    keep
                });
                pending_ids.retain(|_, (p, _)| !gone.contains(p));
                state.dead.retain(|d| !gone.contains(&d.partition));
                tracing::info!(partitions = ?gone, "partitions revoked; their unfinished work is redone by their next owner");
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn kafka_err(step: &str) -> impl Fn(KafkaError) -> QueueError + '_ {
    move |e| QueueError::Store(format!("{step}: {e}"))
}

/// The Kafka queue.
pub struct KafkaQueue {
    settings: KafkaSettings,
    metrics: Arc<Metrics>,
    unreachable: Arc<AtomicBool>,
    consumer: Arc<BaseConsumer<Context>>,
    producer: Arc<Mutex<TxProducer>>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Called when the consumer thread has made work ready.
    wake: Arc<Mutex<Option<Waker>>>,
}

impl KafkaQueue {
    /// Connects, checks that the topics exist, starts the transactional producer and the
    /// consumer thread.
    pub fn connect(
        settings: KafkaSettings,
        metrics: Arc<Metrics>,
    ) -> Result<KafkaQueue, ConnectError> {
        let state = Arc::new(Mutex::new(State::default()));
        let unreachable = Arc::new(AtomicBool::new(false));
        let consumer: BaseConsumer<Context> = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Static membership: a restarted instance (same transactional id, e.g. the same
            // StatefulSet pod) takes its partitions back at once instead of waiting out the
            // dead member's session.
            .set("group.instance.id", settings.transactional_id())
            .set("statistics.interval.ms", "5000")
            // A submission waiting is latency: fetch again soon after an empty answer.
            .set("fetch.wait.max.ms", "10")
            // librdkafka prefetches into its own queue; bounded, so that memory stays small
            // whatever the backlog.
            .set("queued.max.messages.kbytes", "16384")
            .set("queued.min.messages", "1000")
            .create_with_context(Context {
                state: state.clone(),
                topic: settings.submissions_topic.clone(),
                metrics: metrics.clone(),
                unreachable: unreachable.clone(),
            })
            .map_err(|e| ConnectError::Misconfigured(format!("creating the consumer: {e}")))?;
        check_topics(&consumer, &settings)?;
        let producer = new_producer(&settings)?;
        consumer
            .subscribe(&[&settings.submissions_topic])
            .map_err(|e| ConnectError::Misconfigured(format!("subscribing: {e}")))?;
        let queue = KafkaQueue {
            settings,
            metrics,
            unreachable,
            consumer: Arc::new(consumer),
            producer: Arc::new(Mutex::new(producer)),
            state,
            stop: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Mutex::new(None)),
        };
        queue
            .start_polling()
            .map_err(|e| ConnectError::Misconfigured(e.to_string()))?;
        Ok(queue)
    }

    /// What the start-up report says about the connection.
    pub fn describe(&self) -> String {
        format!(
            "kafka: brokers {}, consuming {} in group {} (transactional id {}), results to {}, undecodable messages to {}",
            self.settings.brokers,
            self.settings.submissions_topic,
            self.settings.group,
            self.settings.transactional_id(),
            self.settings.results_topic,
            self.settings.dead_letter_topic
        )
    }

    fn start_polling(&self) -> Result<(), QueueError> {
        let consumer = self.consumer.clone();
        let state = self.state.clone();
        let stop = self.stop.clone();
        let max = self.settings.max_buffered.max(1);
        let topic = self.settings.submissions_topic.clone();
        let flusher = self.transactor();
        let metrics = self.metrics.clone();
        let wake = self.wake.clone();
        std::thread::Builder::new()
            .name("kiln-kafka-consumer".into())
            .spawn(move || {
                let mut paused = false;
                while !stop.load(Ordering::Relaxed) {
                    let (load, span, dead) = {
                        let s = state.locked();
                        (
                            s.ready.len() + s.running,
                            s.widest_span(),
                            !s.dead.is_empty(),
                        )
                    };
                    let full = load >= max || span >= MAX_SPAN - max as i64;
                    let calm = load < max / 2 && span < MAX_SPAN / 2;
                    if full || (paused && !calm) {
                        // Again each time: partitions assigned since are not paused yet.
                        if let Ok(assigned) = consumer.assignment() {
                            let _ = consumer.pause(&assigned);
                            metrics.kafka_paused_partitions.set(assigned.count() as i64);
                        }
                        paused = true;
                    } else if paused {
                        if let Ok(assigned) = consumer.assignment() {
                            let _ = consumer.resume(&assigned);
                        }
                        metrics.kafka_paused_partitions.set(0);
                        paused = false;
                    }
                    if dead {
                        if let Err(e) = flusher.publish(Vec::new()) {
                            tracing::warn!(error = %e, "publishing dead letters failed; retrying");
                        }
                    }
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(message)) => {
                            accept(&state, &topic, &message);
                            // Whatever else has arrived goes in before the scheduler is woken.
                            while let Some(Ok(more)) = consumer.poll(Duration::ZERO) {
                                accept(&state, &topic, &more);
                            }
                            if let Some(wake) = &*wake.locked() {
                                wake();
                            }
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "consuming submissions"),
                        None => {}
                    }
                }
            })
            .map_err(|e| QueueError::Store(format!("starting the consumer thread: {e}")))?;
        Ok(())
    }

    fn transactor(&self) -> Transactor {
        Transactor {
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            consumer: self.consumer.clone(),
            producer: self.producer.clone(),
            state: self.state.clone(),
        }
    }
}

impl Drop for KafkaQueue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the consumer thread calls when it has made work ready.
type Waker = Box<dyn Fn() + Send + Sync>;

/// The transactional producer: a thread of its own serves its events, which aborting a
/// transaction waits for.
type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// A transactional producer with this instance's id, ready for transactions (which fences any
/// earlier producer with the same id).
fn new_producer(settings: &KafkaSettings) -> Result<TxProducer, ConnectError> {
    let producer: TxProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("transactional.id", settings.transactional_id())
        .set("linger.ms", "1")
        .create()
        .map_err(|e| {
            ConnectError::Misconfigured(format!("creating the transactional producer: {e}"))
        })?;
    producer
        .init_transactions(Duration::from_secs(30))
        .map_err(|e| {
            ConnectError::Unreachable(format!("starting the transactional producer: {e}"))
        })?;
    Ok(producer)
}

/// Runs `connect` (blocking) until it works, retrying with backoff (0.5 s doubling to 10 s)
/// while the brokers do not answer; fails at once when the operator must act.
pub async fn connect_with_backoff<T: Send + 'static>(
    connect: impl Fn() -> Result<T, ConnectError> + Send + Sync + 'static,
) -> anyhow::Result<T> {
    let connect = Arc::new(connect);
    let mut wait = Duration::from_millis(500);
    loop {
        let attempt = connect.clone();
        match tokio::task::spawn_blocking(move || attempt()).await? {
            Ok(connected) => return Ok(connected),
            Err(ConnectError::Misconfigured(why)) => anyhow::bail!(why),
            Err(ConnectError::Unreachable(why)) => {
                tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "Kafka does not answer yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Why connecting failed: worth retrying (the brokers do not answer yet), or not until the
/// operator acts (missing topics, bad settings).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Misconfigured(String),
}

/// Says which topics are missing and how to make them.
fn check_topics(
    consumer: &BaseConsumer<Context>,
    settings: &KafkaSettings,
) -> Result<(), ConnectError> {
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| {
            ConnectError::Unreachable(format!("asking {} for its topics: {e}", settings.brokers))
        })?;
    let missing: Vec<&str> = settings
        .topics()
        .into_iter()
        .filter(|t| {
            !metadata
                .topics()
                .iter()
                .any(|m| m.name() == *t && m.error().is_none() && !m.partitions().is_empty())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ConnectError::Misconfigured(format!(
        "topic(s) {} do not exist on {}; create them with `kiln topics create --partitions N --replication R`",
        missing.join(", "),
        settings.brokers
    )))
}

/// Turns one consumed message into ready work, a dead letter, or nothing (finished before).
fn accept(state: &Mutex<State>, topic: &str, message: &rdkafka::message::BorrowedMessage<'_>) {
    if message.topic() != topic {
        return;
    }
    let (partition, offset) = (message.partition(), message.offset());
    let mut s = state.locked();
    let Some(owned) = s.owned.get_mut(&partition) else {
        return; // revoked while the message was on its way
    };
    if owned.offsets.consumed(offset) {
        owned.offsets.finish(offset);
        return;
    }
    let epoch = owned.epoch;
    match decode(message) {
        Ok((submission, bincode)) => {
            let id = submission.id.clone().unwrap_or_default();
            let duplicate = s.pending_ids.get(&id).is_some_and(|(p, e)| s.owns(*p, *e));
            if duplicate {
                // Its twin's result answers for both; this offset needs no result of its own.
                tracing::info!(%id, partition, offset, "the same id again while it is pending: run once");
                if let Some(owned) = s.owned.get_mut(&partition) {
                    owned.offsets.finish(offset);
                }
                return;
            }
            s.pending_ids.insert(id.clone(), (partition, epoch));
            let created_at_ms = message
                .timestamp()
                .to_millis()
                .map_or_else(now_ms, |t| t as u64);
            let token = s.next_token;
            s.next_token += 1;
            s.sources.insert(
                token,
                Source {
                    partition,
                    offset,
                    epoch,
                    bincode,
                },
            );
            s.ready.push_back(Delivery {
                envelope: Envelope {
                    id,
                    submission,
                    created_at_ms,
                },
                token,
                attempt: 1,
            });
        }
        Err(reason) => {
            tracing::warn!(partition, offset, %reason, "dead-lettering a message");
            s.dead.push(DeadLetter {
                partition,
                offset,
                epoch,
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                reason: reason.to_string(),
            });
        }
    }
}

/// A submission from a message, and whether it came as bincode; or why it cannot be one.
fn decode(
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<(Submission, bool), Undecodable> {
    let content_type = message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key.eq_ignore_ascii_case("content-type"))
            .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
    });
    decode_payload(
        content_type.as_deref(),
        message.payload().unwrap_or_default(),
    )
}

/// Why a message on the submissions topic is dead-lettered instead of run.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("the JSON is not valid UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error("malformed bincode: {0}")]
    Bincode(String),
    #[error("unknown content-type {0:?}; use {JSON} or {BINCODE}")]
    ContentType(String),
    #[error("schema_version {got} is not supported; this Kiln reads {reads}", reads = crate::submission::WIRE_VERSION)]
    SchemaVersion { got: u32 },
    #[error("id must be 1 to 128 characters of A-Z a-z 0-9 - _ . :")]
    InvalidId,
    #[error("a submission on Kafka needs an \"id\" (the key of its result)")]
    NoId,
}

/// A submission from a message's content type (JSON when it has none) and payload.
fn decode_payload(
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<(Submission, bool), Undecodable> {
    let (submission, bincode): (Submission, bool) = match content_type.unwrap_or(JSON) {
        JSON => {
            let text = std::str::from_utf8(payload).map_err(Undecodable::NotUtf8)?;
            (
                serde_json::from_str(text).map_err(Undecodable::Json)?,
                false,
            )
        }
        BINCODE => (
            Submission::from_bincode(payload).map_err(Undecodable::Bincode)?,
            true,
        ),
        other => return Err(Undecodable::ContentType(other.to_string())),
    };
    if let Some(v) = submission
        .schema_version
        .filter(|v| *v != crate::submission::WIRE_VERSION)
    {
        return Err(Undecodable::SchemaVersion { got: v });
    }
    match &submission.id {
        Some(id) if crate::submission::valid_id(id) => Ok((submission, bincode)),
        Some(_) => Err(Undecodable::InvalidId),
        None => Err(Undecodable::NoId),
    }
}

/// Publishes results, dead letters and offsets in one transaction.
#[derive(Clone)]
struct Transactor {
    metrics: Arc<Metrics>,
    settings: KafkaSettings,
    consumer: Arc<BaseConsumer<Context>>,
    producer: Arc<Mutex<TxProducer>>,
    state: Arc<Mutex<State>>,
}

/// One record to produce: topic, key, payload, headers.
struct Record {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

impl Transactor {
    fn publish(&self, done: Vec<(Delivery, RunResult)>) -> Result<(), QueueError> {
        let mut producer = self.producer.locked();
        // What is still ours, and what it finishes.
        let (records, finishes, dead_taken, completed) = {
            let s = self.state.locked();
            let mut records = Vec::new();
            let mut finishes: Vec<(i32, i64, u64)> = Vec::new();
            for (delivery, result) in &done {
                let Some(src) = s.sources.get(&delivery.token).copied() else {
                    continue;
                };
                if !s.owns(src.partition, src.epoch) {
                    continue;
                }
                records.push(self.result_record(result, src.bincode)?);
                finishes.push((src.partition, src.offset, src.epoch));
            }
            let dead: Vec<DeadLetter> = s.dead.clone();
            for d in &dead {
                records.push(self.dead_letter_record(d));
                finishes.push((d.partition, d.offset, d.epoch));
            }
            (records, finishes, dead, done.len())
        };
        let forget = |s: &mut State| {
            s.running = s.running.saturating_sub(completed);
            for (delivery, _) in &done {
                if let Some(src) = s.sources.remove(&delivery.token) {
                    if s.pending_ids.get(&delivery.envelope.id) == Some(&(src.partition, src.epoch))
                    {
                        s.pending_ids.remove(&delivery.envelope.id);
                    }
                }
            }
        };
        if finishes.is_empty() {
            forget(&mut self.state.locked());
            return Ok(());
        }
        let offsets = {
            let s = self.state.locked();
            let mut touched: HashMap<i32, PartitionOffsets> = HashMap::new();
            for (p, o, epoch) in &finishes {
                if s.owns(*p, *epoch) {
                    touched
                        .entry(*p)
                        .or_insert_with(|| s.owned[p].offsets.clone())
                        .finish(*o);
                }
            }
            let mut tpl = TopicPartitionList::new();
            for (p, offsets) in &touched {
                if let Some((commit, metadata)) = offsets.to_commit() {
                    tpl.add_partition_offset(
                        &self.settings.submissions_topic,
                        *p,
                        Offset::Offset(commit),
                    )
                    .map_err(kafka_err("listing offsets"))?;
                    if let Some(mut e) = tpl.find_partition(&self.settings.submissions_topic, *p) {
                        e.set_metadata(metadata);
                    }
                }
            }
            tpl
        };
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| QueueError::Store("the consumer has no group metadata yet".into()))?;
        let timeout = Duration::from_secs(30);
        let attempt = || -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            for r in &records {
                send(&producer, r)?;
            }
            producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
            wait_delivered(&producer, timeout)?;
            producer.commit_transaction(timeout)
        };
        if let Err(e) = attempt() {
            self.metrics
                .kafka_transactions
                .with_label_values(&["aborted"])
                .inc();
            let fatal = matches!(&e, KafkaError::Transaction(t) if t.is_fatal());
            if fatal {
                // The producer cannot go on (a broker lost its state, or it was fenced): a new one
                // with the same id takes over; the batch is published by the publisher's retry.
                match new_producer(&self.settings) {
                    Ok(fresh) => *producer = fresh,
                    Err(again) => tracing::warn!(error = %again, "replacing the producer failed"),
                }
            } else {
                let _ = producer.abort_transaction(timeout);
            }
            return Err(QueueError::Store(format!(
                "publishing {} results in a transaction: {e}",
                records.len()
            )));
        }
        self.metrics
            .kafka_transactions
            .with_label_values(&["committed"])
            .inc();
        if !dead_taken.is_empty() {
            self.metrics
                .kafka_dead_letters
                .with_label_values(&[&self.settings.submissions_topic])
                .inc_by(dead_taken.len() as u64);
        }
        let mut s = self.state.locked();
        for (p, o, epoch) in finishes {
            if s.owns(p, epoch) {
                if let Some(owned) = s.owned.get_mut(&p) {
                    owned.offsets.finish(o);
                }
            }
        }
        s.dead.retain(|d| {
            !dead_taken
                .iter()
                .any(|t| t.partition == d.partition && t.offset == d.offset)
        });
        forget(&mut s);
        Ok(())
    }

    fn result_record(&self, result: &RunResult, bincode: bool) -> Result<Record, QueueError> {
        let (payload, content_type) = if bincode {
            (
                bincode::serde::encode_to_vec(result, bincode::config::standard())
                    .map_err(|e| QueueError::Store(format!("encoding a result: {e}")))?,
                BINCODE,
            )
        } else {
            (
                serde_json::to_vec(&result.view())
                    .map_err(|e| QueueError::Store(format!("encoding a result: {e}")))?,
                JSON,
            )
        };
        Ok(Record {
            topic: self.settings.results_topic.clone(),
            key: result.id.as_bytes().to_vec(),
            payload,
            headers: OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(content_type),
            }),
        })
    }

    fn dead_letter_record(&self, d: &DeadLetter) -> Record {
        let partition = d.partition.to_string();
        let offset = d.offset.to_string();
        Record {
            topic: self.settings.dead_letter_topic.clone(),
            key: d.key.clone().unwrap_or_default(),
            payload: d.payload.clone(),
            headers: OwnedHeaders::new()
                .insert(Header {
                    key: "kiln-reason",
                    value: Some(&d.reason),
                })
                .insert(Header {
                    key: "kiln-source-topic",
                    value: Some(&self.settings.submissions_topic),
                })
                .insert(Header {
                    key: "kiln-source-partition",
                    value: Some(&partition),
                })
                .insert(Header {
                    key: "kiln-source-offset",
                    value: Some(&offset),
                }),
        }
    }
}

/// Waits until every record produced so far is acknowledged, in short steps. (The client's own
/// flush, which commit_transaction starts with, polls in 100 ms steps for events that the
/// producer's thread has already taken: every transaction would wait 100 ms.)
fn wait_delivered(producer: &TxProducer, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Produces one record, waiting for room in the producer's queue when it is full.
fn send(producer: &TxProducer, r: &Record) -> Result<(), KafkaError> {
    loop {
        let record = BaseRecord::to(&r.topic)
            .key(&r.key)
            .payload(&r.payload)
            .headers(r.headers.clone());
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl Queue for KafkaQueue {
    fn take(&self, max: usize) -> BoxFuture<'static, Result<Vec<Delivery>, QueueError>> {
        let mut s = self.state.locked();
        let n = max.min(s.ready.len());
        let taken: Vec<Delivery> = s.ready.drain(..n).collect();
        s.running += taken.len();
        Box::pin(async move { Ok(taken) })
    }

    fn complete(
        &self,
        done: Vec<(Delivery, RunResult)>,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let transactor = self.transactor();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || transactor.publish(done))
                .await
                .map_err(|e| QueueError::Store(format!("the publishing thread failed: {e}")))?
        })
    }

    fn depth(&self) -> usize {
        let s = self.state.locked();
        s.ready.len() + s.running
    }

    fn on_ready(&self, wake: Box<dyn Fn() + Send + Sync>) {
        *self.wake.locked() = Some(wake);
    }

    fn trouble(&self) -> Option<String> {
        self.unreachable.load(Ordering::Relaxed).then(|| {
            format!(
                "no Kafka broker of {} answers; retrying",
                self.settings.brokers
            )
        })
    }
}

/// Creates the submissions, results and dead-letter topics (those that do not exist yet).
/// Results are keyed by submission id, so their topic is compacted as well as time-limited.
pub async fn create_topics(
    settings: &KafkaSettings,
    partitions: i32,
    replication: i32,
) -> Result<Vec<String>, String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .map_err(|e| format!("connecting to {}: {e}", settings.brokers))?;
    let topics: Vec<NewTopic<'_>> = settings
        .topics()
        .iter()
        .map(|name| {
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
            if *name == settings.results_topic {
                t.set("cleanup.policy", "compact,delete")
            } else {
                t
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let outcome = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| format!("creating topics on {}: {e}", settings.brokers))?;
    let mut lines = Vec::new();
    for r in outcome {
        match r {
            Ok(name) => lines.push(format!("created {name}")),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                lines.push(format!("{name} exists already"))
            }
            Err((name, code)) => return Err(format!("creating {name}: {code}")),
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<(Submission, bool), Undecodable> {
        decode_payload(Some(JSON), text.as_bytes())
    }

    #[test]
    fn a_submission_is_read_as_json_by_default_or_as_bincode_when_it_says_so() {
        let (sub, bincode) = decode_payload(
            None,
            br#"{"id":"a-1","language":"python","source":"print(1)"}"#,
        )
        .unwrap();
        assert_eq!(
            (sub.id.as_deref(), sub.language.as_str(), bincode),
            (Some("a-1"), "python", false)
        );
        let encoded = bincode::serde::encode_to_vec(&sub, bincode::config::standard()).unwrap();
        let (again, bincode) = decode_payload(Some(BINCODE), &encoded).unwrap();
        assert_eq!((again.id, bincode), (Some("a-1".to_string()), true));
    }

    #[test]
    fn a_message_that_is_not_a_submission_is_refused_by_its_kind() {
        let ok = r#""language":"python","source":"print(1)""#;
        assert!(matches!(
            decode_payload(Some(JSON), b"\xff{}"),
            Err(Undecodable::NotUtf8(_))
        ));
        assert!(matches!(json("{\"id\":"), Err(Undecodable::Json(_))));
        assert!(matches!(
            decode_payload(Some(BINCODE), b"\x01\x02"),
            Err(Undecodable::Bincode(_))
        ));
        let e = decode_payload(Some("text/plain"), b"print(1)").unwrap_err();
        assert!(matches!(&e, Undecodable::ContentType(t) if t == "text/plain"));
        assert_eq!(
            e.to_string(),
            format!("unknown content-type \"text/plain\"; use {JSON} or {BINCODE}")
        );
        let e = json(&format!(r#"{{"id":"x","schema_version":2,{ok}}}"#)).unwrap_err();
        assert!(matches!(e, Undecodable::SchemaVersion { got: 2 }));
        assert_eq!(
            e.to_string(),
            "schema_version 2 is not supported; this Kiln reads 1"
        );
        assert!(matches!(
            json(&format!(r#"{{"id":"a b",{ok}}}"#)),
            Err(Undecodable::InvalidId)
        ));
        assert!(matches!(json(&format!("{{{ok}}}")), Err(Undecodable::NoId)));
    }
}
