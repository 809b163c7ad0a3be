//! The embedded queue: submissions and results journaled in a redb file in the data dir, so an
//! accepted submission survives `kill -9` and runs after restart. Writes go through one journal
//! thread that commits everything waiting in one transaction (group commit: one fsync for many
//! submissions under load).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{Delivery, Envelope, Queue, QueueError, SubmissionState};
use crate::pods::BoxFuture;
use crate::result::{now_ms, RunResult};

const SUBMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("submissions");
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");
const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
/// Result ids by finish time, for retention.
const FINISHED: TableDefinition<(u64, &str), ()> = TableDefinition::new("finished");

/// How `submit` went.
#[derive(Debug)]
pub enum Submitted {
    Accepted,
    /// The id was submitted before: this is where it stands.
    Existing(SubmissionState),
}

enum Write {
    Submit(
        Vec<Envelope>,
        oneshot::Sender<Result<Vec<Option<u64>>, QueueError>>,
    ),
    Complete(
        Vec<(Delivery, RunResult)>,
        oneshot::Sender<Result<(), QueueError>>,
    ),
}

/// What is not on disk: the order of ready submissions and which ones pods hold now. Only ids:
/// the submissions themselves (up to 32 MiB each) stay on disk until they are taken.
struct Memory {
    ready: VecDeque<(u64, String)>,
    running: HashSet<String>,
    /// Weight of every unfinished submission, and their sum (bounded by `max_queue_bytes`).
    weights: HashMap<String, usize>,
    total_weight: usize,
}

impl Memory {
    fn add(&mut self, seq: u64, id: String, weight: usize) {
        self.total_weight += weight;
        self.weights.insert(id.clone(), weight);
        self.ready.push_back((seq, id));
    }
}

/// The embedded queue and result store.
pub struct EmbeddedQueue {
    db: Arc<Database>,
    memory: Arc<Mutex<Memory>>,
    writes: Mutex<mpsc::Sender<Write>>,
}

fn store_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, QueueError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(store_err)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, QueueError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(store_err)
}

impl EmbeddedQueue {
    /// Opens (or creates) the journal in `data_dir` and reloads every unfinished submission.
    pub fn open(data_dir: &Path, retention: Duration) -> Result<EmbeddedQueue, QueueError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            QueueError::Store(format!("creating the data dir {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join("queue.redb");
        let db = Database::create(&path)
            .map_err(|e| QueueError::Store(format!("opening {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(store_err)?;
        {
            tx.open_table(SUBMISSIONS).map_err(store_err)?;
            tx.open_table(PENDING).map_err(store_err)?;
            tx.open_table(RESULTS).map_err(store_err)?;
            tx.open_table(FINISHED).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;

        let mut memory = Memory {
            ready: VecDeque::new(),
            running: HashSet::new(),
            weights: HashMap::new(),
            total_weight: 0,
        };
        {
            let rx = db.begin_read().map_err(store_err)?;
            let pending = rx.open_table(PENDING).map_err(store_err)?;
            let subs = rx.open_table(SUBMISSIONS).map_err(store_err)?;
            for row in pending.iter().map_err(store_err)? {
                let (seq, id) = row.map_err(store_err)?;
                let id = id.value().to_string();
                let weight = match subs.get(id.as_str()).map_err(store_err)? {
                    Some(raw) => decode::<Envelope>(raw.value())?.weight(),
                    None => 0,
                };
                memory.add(seq.value(), id, weight);
            }
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let journal_db = db.clone();
        std::thread::Builder::new()
            .name("kiln-journal".into())
            .spawn(move || journal(journal_db, rx, retention))
            .map_err(store_err)?;
        Ok(EmbeddedQueue {
            db,
            memory: Arc::new(Mutex::new(memory)),
            writes: Mutex::new(tx),
        })
    }

    fn send(&self, w: Write) -> Result<(), QueueError> {
        self.writes
            .lock()
            .map_err(|_| QueueError::Closed)?
            .send(w)
            .map_err(|_| QueueError::Closed)
    }

    /// Journals new submissions durably (one fsync for the lot), then makes them ready.
    /// Ids already known are not queued again.
    pub async fn submit(&self, envelopes: Vec<Envelope>) -> Result<Vec<Submitted>, QueueError> {
        let ids: Vec<(String, usize)> = envelopes
            .iter()
            .map(|e| (e.id.clone(), e.weight()))
            .collect();
        let (reply, wait) = oneshot::channel();
        self.send(Write::Submit(envelopes, reply))?;
        let seqs = wait.await.map_err(|_| QueueError::Closed)??;
        let mut outcome = Vec::with_capacity(seqs.len());
        for ((id, weight), seq) in ids.into_iter().zip(seqs) {
            match seq {
                Some(seq) => {
                    self.memory
                        .lock()
                        .map_err(|_| QueueError::Closed)?
                        .add(seq, id, weight);
                    outcome.push(Submitted::Accepted);
                }
                None => {
                    let state = self.state(&id)?.unwrap_or(SubmissionState::Queued);
                    outcome.push(Submitted::Existing(state));
                }
            }
        }
        Ok(outcome)
    }

    /// Takes up to `max` ready submissions, reading them from the journal.
    fn take_now(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let batch: Vec<(u64, String)> = {
            let mut m = self.memory.lock().map_err(|_| QueueError::Closed)?;
            let n = max.min(m.ready.len());
            let batch: Vec<_> = m.ready.drain(..n).collect();
            for (_, id) in &batch {
                m.running.insert(id.clone());
            }
            batch
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let rx = self.db.begin_read().map_err(store_err)?;
        let subs = rx.open_table(SUBMISSIONS).map_err(store_err)?;
        let mut out = Vec::with_capacity(batch.len());
        for (seq, id) in batch {
            match subs.get(id.as_str()).map_err(store_err)? {
                Some(raw) => out.push(Delivery {
                    envelope: decode(raw.value())?,
                    token: seq,
                    attempt: 1,
                }),
                None => tracing::error!(%id, "a pending submission is missing from the journal"),
            }
        }
        Ok(out)
    }

    /// Bytes carried by the submissions accepted and not yet finished.
    pub fn queued_bytes(&self) -> usize {
        self.memory.lock().map(|m| m.total_weight).unwrap_or(0)
    }

    /// Where a submission stands; `None` for an id never submitted (or expired).
    pub fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError> {
        let rx = self.db.begin_read().map_err(store_err)?;
        state_in(&rx, id, &self.memory)
    }
}

fn state_in(
    rx: &redb::ReadTransaction,
    id: &str,
    memory: &Mutex<Memory>,
) -> Result<Option<SubmissionState>, QueueError> {
    if let Some(raw) = rx
        .open_table(RESULTS)
        .map_err(store_err)?
        .get(id)
        .map_err(store_err)?
    {
        return Ok(Some(SubmissionState::Done(Box::new(decode(raw.value())?))));
    }
    if rx
        .open_table(SUBMISSIONS)
        .map_err(store_err)?
        .get(id)
        .map_err(store_err)?
        .is_none()
    {
        return Ok(None);
    }
    let running = memory
        .lock()
        .map(|m| m.running.contains(id))
        .unwrap_or(false);
    Ok(Some(if running {
        SubmissionState::Running
    } else {
        SubmissionState::Queued
    }))
}

impl Queue for EmbeddedQueue {
    fn take(&self, max: usize) -> BoxFuture<'static, Result<Vec<Delivery>, QueueError>> {
        let taken = self.take_now(max);
        Box::pin(async move { taken })
    }

    fn complete(
        &self,
        done: Vec<(Delivery, RunResult)>,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let (reply, wait) = oneshot::channel();
        let ids: Vec<String> = done.iter().map(|(d, _)| d.envelope.id.clone()).collect();
        let sent = self.send(Write::Complete(done, reply));
        let memory = self.memory.clone();
        Box::pin(async move {
            sent?;
            wait.await.map_err(|_| QueueError::Closed)??;
            if let Ok(mut m) = memory.lock() {
                for id in ids {
                    m.running.remove(&id);
                    if let Some(w) = m.weights.remove(&id) {
                        m.total_weight -= w;
                    }
                }
            }
            Ok(())
        })
    }

    fn depth(&self) -> usize {
        self.memory
            .lock()
            .map(|m| m.ready.len() + m.running.len())
            .unwrap_or(0)
    }
}

/// The journal thread: commits every waiting write in one transaction, then answers them all.
fn journal(db: Arc<Database>, rx: mpsc::Receiver<Write>, retention: Duration) {
    let mut last_prune = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = commit(&db, &batch);
        for (i, w) in batch.into_iter().enumerate() {
            match w {
                Write::Submit(_, reply) => {
                    let _ =
                        reply.send(result.as_ref().map(|r| r[i].clone()).map_err(|e| e.clone()));
                }
                Write::Complete(_, reply) => {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| e.clone()));
                }
            }
        }
        if last_prune.elapsed() > retention.min(Duration::from_secs(60)) {
            if let Err(e) = prune(&db, retention) {
                tracing::warn!(error = %e, "pruning expired results failed");
            }
            last_prune = Instant::now();
        }
    }
}

/// One transaction for a batch of writes. For each submit: per envelope, its new pending
/// sequence number, or `None` when the id was known already.
fn commit(db: &Database, batch: &[Write]) -> Result<Vec<Vec<Option<u64>>>, QueueError> {
    let tx = db.begin_write().map_err(store_err)?;
    let mut replies = Vec::with_capacity(batch.len());
    {
        let mut subs = tx.open_table(SUBMISSIONS).map_err(store_err)?;
        let mut pending = tx.open_table(PENDING).map_err(store_err)?;
        let mut results = tx.open_table(RESULTS).map_err(store_err)?;
        let mut finished = tx.open_table(FINISHED).map_err(store_err)?;
        let mut next_seq = pending
            .last()
            .map_err(store_err)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        for w in batch {
            match w {
                Write::Submit(envs, _) => {
                    let mut out = Vec::with_capacity(envs.len());
                    for env in envs {
                        if subs.get(env.id.as_str()).map_err(store_err)?.is_some() {
                            out.push(None);
                            continue;
                        }
                        subs.insert(env.id.as_str(), encode(env)?.as_slice())
                            .map_err(store_err)?;
                        pending
                            .insert(next_seq, env.id.as_str())
                            .map_err(store_err)?;
                        out.push(Some(next_seq));
                        next_seq += 1;
                    }
                    replies.push(out);
                }
                Write::Complete(done, _) => {
                    for (delivery, result) in done {
                        pending.remove(delivery.token).map_err(store_err)?;
                        // A job may run twice (a runner lost mid-job); its first result stands.
                        if results
                            .get(result.id.as_str())
                            .map_err(store_err)?
                            .is_none()
                        {
                            results
                                .insert(result.id.as_str(), encode(result)?.as_slice())
                                .map_err(store_err)?;
                            finished
                                .insert((result.finished_at_ms, result.id.as_str()), ())
                                .map_err(store_err)?;
                        }
                    }
                    replies.push(Vec::new());
                }
            }
        }
    }
    tx.commit().map_err(store_err)?;
    Ok(replies)
}

/// Forgets results (and their submissions) older than the retention.
fn prune(db: &Database, retention: Duration) -> Result<(), QueueError> {
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    let tx = db.begin_write().map_err(store_err)?;
    {
        let mut finished = tx.open_table(FINISHED).map_err(store_err)?;
        let mut results = tx.open_table(RESULTS).map_err(store_err)?;
        let mut subs = tx.open_table(SUBMISSIONS).map_err(store_err)?;
        let expired: Vec<(u64, String)> = finished
            .range((0u64, "")..(cutoff, ""))
            .map_err(store_err)?
            .filter_map(|r| r.ok())
            .map(|(k, _)| {
                let (t, id) = k.value();
                (t, id.to_string())
            })
            .collect();
        for (t, id) in expired {
            finished.remove((t, id.as_str())).map_err(store_err)?;
            results.remove(id.as_str()).map_err(store_err)?;
            subs.remove(id.as_str()).map_err(store_err)?;
        }
    }
    tx.commit().map_err(store_err)
}
