//! The embedded queue: submissions and results journaled in a redb file in the data dir, so an
//! accepted submission survives `kill -9` and runs after restart. Writes go through one journal
//! thread that commits everything waiting in one transaction (group commit: one fsync for many
//! submissions under load).
//!
//! Disk is bounded: finished results (with their submissions) are kept under `max_results_bytes`,
//! oldest evicted first (a GET of an evicted id says so), and the file is compacted when it holds
//! much more than that. A write that fails (a full disk) leaves redb refusing every later write,
//! so the journal reopens the file, once a second, until writes work again; meanwhile the store
//! reports itself failed (`/healthz`) and nothing new is accepted. Committed work is never lost:
//! redb reopens at its last commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use tokio::sync::oneshot;

use super::result_files::{ResultFiles, Stored};
pub use super::Submitted;
use super::{Delivery, Envelope, Intake, Queue, QueueError, SubmissionState};
use crate::result::{now_ms, RunResult};
use crate::BoxFuture;
use crate::{Locked as _, RwLocked as _};

const SUBMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("submissions");
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");
const RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("results");
/// Result ids by finish time, with the bytes the result and its submission take, for retention
/// and the bound in bytes.
const FINISHED: TableDefinition<(u64, &str), u64> = TableDefinition::new("finished_sized");
/// The index before results were bounded in bytes (ids by finish time only); moved into
/// FINISHED when an older data dir is opened.
const FINISHED_UNSIZED: TableDefinition<(u64, &str), ()> = TableDefinition::new("finished");
/// Ids whose results were evicted, and when, so that a GET can say so.
const EVICTED: TableDefinition<&str, u64> = TableDefinition::new("evicted");

/// How the store bounds what it keeps on disk.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// Results older than this are forgotten.
    pub retention: Duration,
    /// Finished results and their submissions are kept under this many bytes, oldest evicted.
    pub max_results_bytes: u64,
    /// Free space the data dir's filesystem keeps; below it, submissions are refused.
    pub min_free_bytes: u64,
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

/// What is not on disk: the order of ready submissions and which ones pods hold now. A ready
/// submission is 16 bytes here, its journal sequence number and weight: its id and the
/// submission itself (up to 32 MiB) stay on disk until it is taken, so a backlog of 100,000
/// costs about 2 MB.
struct Memory {
    ready: VecDeque<Ready>,
    /// Taken from `ready`, being read from the journal (counted in the depth meanwhile).
    taking: usize,
    /// What pods hold now, by id: its sequence number and weight.
    running: HashMap<String, Ready>,
    /// Sum of the weights of every unfinished submission (bounded by `max_queue_bytes`).
    total_weight: usize,
}

/// A ready submission: its key in the PENDING table and its weight.
#[derive(Clone, Copy, Debug)]
struct Ready {
    seq: u64,
    weight: u32,
}

impl Memory {
    fn add(&mut self, seq: u64, weight: usize) {
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        self.total_weight += weight as usize;
        self.ready.push_back(Ready { seq, weight });
    }

    fn depth(&self) -> usize {
        self.ready.len() + self.taking + self.running.len()
    }
}

/// The embedded queue and result store.
pub struct EmbeddedQueue {
    store: Arc<Store>,
    memory: Arc<Mutex<Memory>>,
    writes: Mutex<mpsc::Sender<Write>>,
}

/// The redb file, and whether it can be written now.
struct Store {
    path: PathBuf,
    data_dir: PathBuf,
    bounds: Bounds,
    /// Results too big for the journal.
    files: ResultFiles,
    /// `None` while the file is being reopened after a failed write.
    db: RwLock<Option<Arc<Database>>>,
    /// Why the store takes no writes now; `None` while it works.
    failure: Mutex<Option<QueueError>>,
}

impl Store {
    fn db(&self) -> Result<Arc<Database>, QueueError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.db.read_locked().clone().ok_or(QueueError::Closed)
    }

    fn failure(&self) -> Option<QueueError> {
        self.failure.locked().clone()
    }

    /// Bytes free on the data dir's filesystem (for unprivileged users).
    fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.data_dir)
    }

    /// Refuses new work while the disk is nearly full, naming the directory and the numbers.
    fn check_space(&self, adding: u64) -> Result<(), QueueError> {
        match self.free_bytes() {
            Some(free) if free < self.bounds.min_free_bytes.saturating_add(adding) => {
                Err(QueueError::NoSpace(format!(
                    "the disk is full: the data dir {} has {free} bytes free and Kiln keeps at \
                     least {} free (min_free_bytes); free space there or move data_dir",
                    self.data_dir.display(),
                    self.bounds.min_free_bytes
                )))
            }
            _ => Ok(()),
        }
    }

    /// A write failed: redb refuses all later writes until the file is reopened. Says why, in
    /// terms of the disk when the disk is the cause.
    fn fail(&self, error: &QueueError) {
        let why = match self.check_space(0) {
            Err(full) => full,
            Ok(()) => QueueError::Store(format!(
                "writing {} failed ({error}); reopening it",
                self.path.display()
            )),
        };
        tracing::error!(error = %why, "the journal failed a write; it is reopened once a second until writes work again");
        *self.failure.locked() = Some(why);
        *self.db.write_locked() = None;
    }

    /// Reopens the file (redb recovers it to its last commit) and checks that a write goes
    /// through. True when the store works again.
    fn try_reopen(&self) -> bool {
        if self.check_space(0).is_err() {
            return false;
        }
        let reopened = open_database(&self.path)
            .map_err(store_err)
            .and_then(|db| create_tables(&db).map(|()| db));
        match reopened {
            Ok(db) => {
                if let Err(e) = remove_unreferenced_files(&db, &self.files) {
                    tracing::warn!(error = %e, "removing result files of failed writes failed");
                }
                *self.db.write_locked() = Some(Arc::new(db));
                *self.failure.locked() = None;
                tracing::info!(path = %self.path.display(), "the journal works again");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reopening the journal failed; trying again in a second");
                false
            }
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = crate::sandbox::setup::c_path(dir).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

fn create_tables(db: &Database) -> Result<(), QueueError> {
    let tx = db.begin_write().map_err(store_err)?;
    {
        tx.open_table(SUBMISSIONS).map_err(store_err)?;
        tx.open_table(PENDING).map_err(store_err)?;
        tx.open_table(RESULTS).map_err(store_err)?;
        tx.open_table(FINISHED).map_err(store_err)?;
        tx.open_table(EVICTED).map_err(store_err)?;
    }
    tx.commit().map_err(store_err)
}

/// Moves the unsized index of an older data dir into FINISHED, measuring each entry.
fn migrate_unsized_index(db: &Database) -> Result<(), QueueError> {
    let tx = db.begin_write().map_err(store_err)?;
    let exists = tx
        .list_tables()
        .map_err(store_err)?
        .any(|t| t.name() == FINISHED_UNSIZED.name());
    if !exists {
        return Ok(());
    }
    {
        let old = tx.open_table(FINISHED_UNSIZED).map_err(store_err)?;
        let results = tx.open_table(RESULTS).map_err(store_err)?;
        let subs = tx.open_table(SUBMISSIONS).map_err(store_err)?;
        let mut finished = tx.open_table(FINISHED).map_err(store_err)?;
        for row in old.iter().map_err(store_err)? {
            let (key, _) = row.map_err(store_err)?;
            let (t, id) = key.value();
            let size = results
                .get(id)
                .map_err(store_err)?
                .map_or(0, |v| v.value().len())
                + subs
                    .get(id)
                    .map_err(store_err)?
                    .map_or(0, |v| v.value().len());
            finished.insert((t, id), size as u64).map_err(store_err)?;
        }
    }
    tx.delete_table(FINISHED_UNSIZED).map_err(store_err)?;
    tx.commit().map_err(store_err)
}

/// Removes result files no journal value names.
fn remove_unreferenced_files(db: &Database, files: &ResultFiles) -> Result<(), QueueError> {
    let rx = db.begin_read().map_err(store_err)?;
    let results = rx.open_table(RESULTS).map_err(store_err)?;
    let mut referenced = HashSet::new();
    for row in results.iter().map_err(store_err)? {
        if let Stored::File(name) = ResultFiles::stored(row.map_err(store_err)?.1.value()) {
            referenced.insert(name.to_string());
        }
    }
    let removed = files.remove_unreferenced(&referenced).map_err(store_err)?;
    if removed > 0 {
        tracing::info!(removed, "removed result files left by an interrupted write");
    }
    Ok(())
}

/// Bytes of finished results and their submissions, from the index.
fn results_bytes(db: &Database) -> Result<u64, QueueError> {
    let rx = db.begin_read().map_err(store_err)?;
    let finished = rx.open_table(FINISHED).map_err(store_err)?;
    let mut total = 0;
    for row in finished.iter().map_err(store_err)? {
        total += row.map_err(store_err)?.1.value();
    }
    Ok(total)
}

/// redb's page cache. Its default (1 GiB) would keep every page the queue ever read or wrote in
/// memory: with a backlog, the whole backlog. Submissions are read once, when taken, and the
/// kernel's page cache serves those reads; a small cache keeps `kiln serve`'s memory independent
/// of the backlog.
const JOURNAL_CACHE_BYTES: usize = 4 << 20;

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(JOURNAL_CACHE_BYTES)
        .create(path)
}

fn store_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Store(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, QueueError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(store_err)
}

impl EmbeddedQueue {
    /// Opens (or creates) the journal in `data_dir` and reloads every unfinished submission.
    pub fn open(data_dir: &Path, bounds: Bounds) -> Result<EmbeddedQueue, QueueError> {
        // Submissions and results are the submitters' business: only Kiln's user may look.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| {
                QueueError::Store(format!("creating the data dir {}: {e}", data_dir.display()))
            })?;
        let path = data_dir.join("queue.redb");
        let db = open_database(&path)
            .map_err(|e| QueueError::Store(format!("opening {}: {e}", path.display())))?;
        create_tables(&db)?;
        migrate_unsized_index(&db)?;

        let mut memory = Memory {
            ready: VecDeque::new(),
            taking: 0,
            running: HashMap::new(),
            total_weight: 0,
        };
        {
            let rx = db.begin_read().map_err(store_err)?;
            let pending = rx.open_table(PENDING).map_err(store_err)?;
            let subs = rx.open_table(SUBMISSIONS).map_err(store_err)?;
            for row in pending.iter().map_err(store_err)? {
                let (seq, id) = row.map_err(store_err)?;
                let weight = match subs.get(id.value()).map_err(store_err)? {
                    Some(raw) => Envelope::from_bincode(raw.value())
                        .map_err(store_err)?
                        .weight(),
                    None => 0,
                };
                memory.add(seq.value(), weight);
            }
        }
        let kept = results_bytes(&db)?;
        let files = ResultFiles::open(data_dir).map_err(|e| {
            QueueError::Store(format!("opening {}/results: {e}", data_dir.display()))
        })?;
        remove_unreferenced_files(&db, &files)?;
        let store = Arc::new(Store {
            path,
            data_dir: data_dir.to_path_buf(),
            bounds,
            files,
            db: RwLock::new(Some(Arc::new(db))),
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let journal_store = store.clone();
        std::thread::Builder::new()
            .name("kiln-journal".into())
            .spawn(move || journal(journal_store, rx, kept))
            .map_err(store_err)?;
        Ok(EmbeddedQueue {
            store,
            memory: Arc::new(Mutex::new(memory)),
            writes: Mutex::new(tx),
        })
    }

    /// Why the store takes no writes now (a full disk, a failed write being recovered from);
    /// `None` while it works.
    pub fn failure(&self) -> Option<QueueError> {
        self.store.failure()
    }

    /// Refuses `adding` more bytes while the data dir's disk is nearly full.
    pub fn check_space(&self, adding: u64) -> Result<(), QueueError> {
        self.store.check_space(adding)
    }

    /// The bound on kept results, for messages.
    pub fn max_results_bytes(&self) -> u64 {
        self.store.bounds.max_results_bytes
    }

    fn send(&self, w: Write) -> Result<(), QueueError> {
        self.writes.locked().send(w).map_err(|_| QueueError::Closed)
    }

    /// Journals new submissions durably (one fsync for the lot), then makes them ready.
    /// Ids already known are not queued again.
    pub async fn submit(&self, envelopes: Vec<Envelope>) -> Result<Vec<Submitted>, QueueError> {
        if let Some(e) = self.store.failure() {
            return Err(e);
        }
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
                    self.memory.locked().add(seq, weight);
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

    /// Takes up to `max` ready submissions, reading their ids and bodies from the journal. When
    /// the journal cannot be read they stay ready.
    fn take_now(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let db = self.store.db()?;
        let batch: Vec<Ready> = {
            let mut m = self.memory.locked();
            let n = max.min(m.ready.len());
            let batch: Vec<_> = m.ready.drain(..n).collect();
            m.taking += batch.len();
            batch
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let read = || -> Result<Vec<(Ready, Option<Envelope>)>, QueueError> {
            let rx = db.begin_read().map_err(store_err)?;
            let pending = rx.open_table(PENDING).map_err(store_err)?;
            let subs = rx.open_table(SUBMISSIONS).map_err(store_err)?;
            let mut out = Vec::with_capacity(batch.len());
            for ready in &batch {
                let envelope = match pending.get(ready.seq).map_err(store_err)? {
                    Some(id) => match subs.get(id.value()).map_err(store_err)? {
                        Some(raw) => Some(Envelope::from_bincode(raw.value()).map_err(store_err)?),
                        None => {
                            tracing::error!(
                                id = id.value(),
                                "a pending submission is missing from the journal"
                            );
                            None
                        }
                    },
                    None => {
                        tracing::error!(
                            seq = ready.seq,
                            "a ready submission is missing from the journal"
                        );
                        None
                    }
                };
                out.push((*ready, envelope));
            }
            Ok(out)
        };
        let taken = read();
        let mut m = self.memory.locked();
        m.taking -= batch.len();
        match taken {
            Ok(taken) => Ok(taken
                .into_iter()
                .filter_map(|(ready, envelope)| {
                    let Some(envelope) = envelope else {
                        m.total_weight -= ready.weight as usize;
                        return None;
                    };
                    m.running.insert(envelope.id.clone(), ready);
                    Some(Delivery {
                        envelope,
                        token: ready.seq,
                        attempt: 1,
                    })
                })
                .collect()),
            Err(e) => {
                for ready in batch.into_iter().rev() {
                    m.ready.push_front(ready);
                }
                Err(e)
            }
        }
    }

    /// Keeps results that were published elsewhere (Kafka mode's API reads them from the
    /// results topic), under the same bounds as its own. A result kept already stays.
    pub async fn record_results(&self, results: Vec<RunResult>) -> Result<(), QueueError> {
        // Recorded as completions of deliveries this store never journaled: there is no
        // pending entry to remove and no submission to measure.
        let done = results
            .into_iter()
            .map(|r| {
                let delivery = Delivery {
                    envelope: Envelope {
                        id: r.id.clone(),
                        submission: Default::default(),
                        created_at_ms: r.created_at_ms,
                    },
                    token: u64::MAX,
                    attempt: r.attempts,
                };
                (delivery, r)
            })
            .collect();
        Queue::complete(self, done).await
    }

    /// Bytes carried by the submissions accepted and not yet finished.
    pub fn queued_bytes(&self) -> usize {
        self.memory.locked().total_weight
    }

    /// Where a submission stands; `None` for an id never submitted (or expired).
    pub fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError> {
        let rx = self.store.db()?.begin_read().map_err(store_err)?;
        state_in(&rx, id, &self.memory, &self.store.files)
    }
}

fn state_in(
    rx: &redb::ReadTransaction,
    id: &str,
    memory: &Mutex<Memory>,
    files: &ResultFiles,
) -> Result<Option<SubmissionState>, QueueError> {
    if let Some(raw) = rx
        .open_table(RESULTS)
        .map_err(store_err)?
        .get(id)
        .map_err(store_err)?
    {
        let encoded = files
            .load(raw.value())
            .map_err(|e| QueueError::Store(format!("reading the result of {id}: {e}")))?;
        return Ok(Some(SubmissionState::Done(Box::new(
            RunResult::from_bincode(&encoded).map_err(store_err)?,
        ))));
    }
    if rx
        .open_table(SUBMISSIONS)
        .map_err(store_err)?
        .get(id)
        .map_err(store_err)?
        .is_none()
    {
        let evicted = rx
            .open_table(EVICTED)
            .map_err(store_err)?
            .get(id)
            .map_err(store_err)?;
        return Ok(evicted.map(|at| SubmissionState::Evicted { at_ms: at.value() }));
    }
    let running = memory.locked().running.contains_key(id);
    Ok(Some(if running {
        SubmissionState::Running
    } else {
        SubmissionState::Queued
    }))
}

impl Intake for EmbeddedQueue {
    fn submit(
        &self,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'_, Result<Vec<Submitted>, QueueError>> {
        Box::pin(EmbeddedQueue::submit(self, envelopes))
    }

    fn state(&self, id: &str) -> Result<Option<SubmissionState>, QueueError> {
        EmbeddedQueue::state(self, id)
    }

    fn depth(&self) -> usize {
        Queue::depth(self)
    }

    fn queued_bytes(&self) -> usize {
        EmbeddedQueue::queued_bytes(self)
    }

    fn check_space(&self, adding: u64) -> Result<(), QueueError> {
        EmbeddedQueue::check_space(self, adding)
    }

    fn failure(&self) -> Option<QueueError> {
        EmbeddedQueue::failure(self)
    }

    fn max_results_bytes(&self) -> u64 {
        EmbeddedQueue::max_results_bytes(self)
    }
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
            {
                let mut m = memory.locked();
                for id in ids {
                    if let Some(ready) = m.running.remove(&id) {
                        m.total_weight -= ready.weight as usize;
                    }
                }
            }
            Ok(())
        })
    }

    fn depth(&self) -> usize {
        self.memory.lock().map(|m| m.depth()).unwrap_or(0)
    }

    fn trouble(&self) -> Option<String> {
        self.failure().map(|e| e.to_string())
    }
}

/// The journal thread: commits every waiting write in one transaction, then answers them all.
/// Once a second at least it also does its upkeep: reopening a failed file, pruning, compacting.
/// `kept` is the bytes of finished results on disk at start.
fn journal(store: Arc<Store>, rx: mpsc::Receiver<Write>, mut kept: u64) {
    let mut last_prune = Instant::now();
    let mut last_compaction = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(w) => Some(w),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if store.failure().is_some() && store.try_reopen() {
            // Whatever was evicted or pruned before the failure is on disk; recount.
            if let Ok(db) = store.db() {
                kept = results_bytes(&db).unwrap_or(kept);
            }
        }
        if let Some(first) = first {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            write_batch(&store, batch, &mut kept);
        }
        let Ok(db) = store.db() else { continue };
        let retention = store.bounds.retention;
        if last_prune.elapsed() > retention.min(Duration::from_secs(60)) {
            match prune(&db, retention, &store.files) {
                Ok(freed) => kept = kept.saturating_sub(freed),
                Err(e) => tracing::warn!(error = %e, "pruning expired results failed"),
            }
            last_prune = Instant::now();
        }
        if last_compaction.elapsed() > Duration::from_secs(10) {
            drop(db);
            compact_if_bloated(&store);
            last_compaction = Instant::now();
        }
    }
}

/// Commits one batch of writes and answers each; a failed commit fails the store.
fn write_batch(store: &Store, batch: Vec<Write>, kept: &mut u64) {
    let result = store.db().and_then(|db| {
        let r = commit(&db, &batch, *kept, &store.bounds, &store.files);
        if let Err(e) = &r {
            store.fail(e);
        }
        r
    });
    let result = match result {
        Ok((replies, now_kept)) => {
            *kept = now_kept;
            Ok(replies)
        }
        // A failure is reported as what the store says it is now (the disk is full).
        Err(e) => Err(store.failure().unwrap_or(e)),
    };
    for (i, w) in batch.into_iter().enumerate() {
        match w {
            Write::Submit(_, reply) => {
                let _ = reply.send(result.as_ref().map(|r| r[i].clone()).map_err(|e| e.clone()));
            }
            Write::Complete(_, reply) => {
                let _ = reply.send(result.as_ref().map(|_| ()).map_err(|e| e.clone()));
            }
        }
    }
}

/// Free space the journal file may hold before it is compacted. redb reuses freed pages, so the
/// file stays near its high-water mark; compaction gives the rest back to the disk.
pub const COMPACTION_SLACK: u64 = 64 << 20;

/// Compacts the journal file when more than `COMPACTION_SLACK` of it is free pages (evicted and
/// expired results, a drained backlog). Skipped while readers hold the file; tried again later.
fn compact_if_bloated(store: &Store) {
    let Ok(len) = std::fs::metadata(&store.path).map(|m| m.len()) else {
        return;
    };
    let mut slot = store.db.write_locked();
    let Some(db) = slot.as_mut().and_then(Arc::get_mut) else {
        return;
    };
    let in_use = match db.begin_write().and_then(|tx| {
        let stats = tx.stats();
        tx.abort()?;
        Ok(stats?)
    }) {
        Ok(stats) => stats.allocated_pages() * stats.page_size() as u64,
        Err(_) => return,
    };
    if len.saturating_sub(in_use) <= COMPACTION_SLACK {
        return;
    }
    let started = Instant::now();
    match db.compact() {
        Ok(_) => {
            let after = std::fs::metadata(&store.path).map_or(0, |m| m.len());
            tracing::info!(
                before = len,
                after,
                ms = started.elapsed().as_millis() as u64,
                "compacted the journal"
            );
        }
        Err(e) => tracing::warn!(error = %e, "compacting the journal failed"),
    }
}

/// What a batch's transaction answers: per submit, per envelope, its pending sequence number
/// (`None` for an id known already); and the bytes of results kept afterwards.
type Committed = (Vec<Vec<Option<u64>>>, u64);

/// One transaction for a batch of writes, then eviction of the oldest results while the kept
/// ones are over the bound. Returns, for each submit, per envelope its new pending sequence
/// number (`None` when the id was known already), and the bytes of results kept afterwards.
fn commit(
    db: &Database,
    batch: &[Write],
    mut kept: u64,
    bounds: &Bounds,
    files: &ResultFiles,
) -> Result<Committed, QueueError> {
    let tx = db.begin_write().map_err(store_err)?;
    let mut replies = Vec::with_capacity(batch.len());
    let mut wrote_file = false;
    // Values of evicted results: their files go once the transaction has committed.
    let mut forgotten: Vec<Vec<u8>> = Vec::new();
    {
        let mut subs = tx.open_table(SUBMISSIONS).map_err(store_err)?;
        let mut pending = tx.open_table(PENDING).map_err(store_err)?;
        let mut results = tx.open_table(RESULTS).map_err(store_err)?;
        let mut finished = tx.open_table(FINISHED).map_err(store_err)?;
        let mut evicted = tx.open_table(EVICTED).map_err(store_err)?;
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
                        // An evicted id submitted again is a new submission.
                        evicted.remove(env.id.as_str()).map_err(store_err)?;
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
                            let (value, stored) =
                                files.store(encode(result)?, &mut wrote_file).map_err(|e| {
                                    QueueError::Store(format!("writing a result file: {e}"))
                                })?;
                            let submission = subs
                                .get(result.id.as_str())
                                .map_err(store_err)?
                                .map_or(0, |v| v.value().len());
                            let size = stored + submission as u64;
                            results
                                .insert(result.id.as_str(), value.as_slice())
                                .map_err(store_err)?;
                            finished
                                .insert((result.finished_at_ms, result.id.as_str()), size)
                                .map_err(store_err)?;
                            kept += size;
                        }
                    }
                    replies.push(Vec::new());
                }
            }
        }
        // Oldest first, until the kept results fit the bound again.
        let now = now_ms();
        while kept > bounds.max_results_bytes {
            let Some((key, size)) = finished
                .pop_first()
                .map_err(store_err)?
                .map(|(k, v)| (k.value().1.to_string(), v.value()))
            else {
                break;
            };
            if let Some(value) = results.remove(key.as_str()).map_err(store_err)? {
                forgotten.push(value.value().to_vec());
            }
            subs.remove(key.as_str()).map_err(store_err)?;
            evicted.insert(key.as_str(), now).map_err(store_err)?;
            kept = kept.saturating_sub(size);
        }
    }
    if wrote_file {
        files
            .sync_dir()
            .map_err(|e| QueueError::Store(format!("syncing the results directory: {e}")))?;
    }
    tx.commit().map_err(store_err)?;
    for value in forgotten {
        files.remove(&value);
    }
    Ok((replies, kept))
}

/// Forgets results (and their submissions) older than the retention, and eviction notes as old.
/// Returns the bytes freed.
fn prune(db: &Database, retention: Duration, files: &ResultFiles) -> Result<u64, QueueError> {
    let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
    let tx = db.begin_write().map_err(store_err)?;
    let mut freed = 0;
    let mut forgotten: Vec<Vec<u8>> = Vec::new();
    {
        let mut finished = tx.open_table(FINISHED).map_err(store_err)?;
        let mut results = tx.open_table(RESULTS).map_err(store_err)?;
        let mut subs = tx.open_table(SUBMISSIONS).map_err(store_err)?;
        let mut evicted = tx.open_table(EVICTED).map_err(store_err)?;
        let expired: Vec<(u64, String, u64)> = finished
            .range((0u64, "")..(cutoff, ""))
            .map_err(store_err)?
            .filter_map(|r| r.ok())
            .map(|(k, v)| {
                let (t, id) = k.value();
                (t, id.to_string(), v.value())
            })
            .collect();
        for (t, id, size) in expired {
            finished.remove((t, id.as_str())).map_err(store_err)?;
            if let Some(value) = results.remove(id.as_str()).map_err(store_err)? {
                forgotten.push(value.value().to_vec());
            }
            subs.remove(id.as_str()).map_err(store_err)?;
            freed += size;
        }
        evicted.retain(|_, at| at >= cutoff).map_err(store_err)?;
    }
    tx.commit().map_err(store_err)?;
    for value in forgotten {
        files.remove(&value);
    }
    Ok(freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, Status};
    use crate::submission::Submission;

    fn bounds() -> Bounds {
        Bounds {
            retention: Duration::from_secs(3600),
            max_results_bytes: 1 << 30,
            min_free_bytes: 0,
        }
    }

    fn envelope(id: &str, stdin: &str) -> Envelope {
        Envelope {
            id: id.into(),
            submission: Submission {
                language: "python".into(),
                source: Some("print(1)".into()),
                stdin: stdin.into(),
                ..Default::default()
            },
            created_at_ms: now_ms(),
        }
    }

    fn result(id: &str) -> RunResult {
        RunResult {
            id: id.into(),
            language: "python".into(),
            outcome: Outcome::failed(Status::InternalError, "test"),
            attempts: 1,
            created_at_ms: 0,
            finished_at_ms: now_ms(),
        }
    }

    fn state(q: &EmbeddedQueue, id: &str) -> &'static str {
        match q.state(id).unwrap() {
            Some(SubmissionState::Queued) => "queued",
            Some(SubmissionState::Running) => "running",
            Some(SubmissionState::Done(_)) => "done",
            Some(SubmissionState::Evicted { .. }) => "evicted",
            None => "unknown",
        }
    }

    /// Only sequence numbers and weights are kept for ready submissions: ids come back from the
    /// journal when taken, in order, with depth, states and queued bytes right throughout and
    /// after a reopen.
    #[tokio::test]
    async fn ready_submissions_are_taken_in_order_with_their_ids_read_from_the_journal() {
        let dir = std::env::temp_dir().join(format!("kiln-embedded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = EmbeddedQueue::open(&dir, bounds()).unwrap();
        let envs: Vec<Envelope> = (0..5).map(|i| envelope(&format!("id-{i}"), "ab")).collect();
        q.submit(envs.clone()).await.unwrap();
        // A known id is not queued twice.
        q.submit(vec![envelope("id-0", "ab")]).await.unwrap();
        assert_eq!(Queue::depth(&q), 5);
        assert_eq!(q.queued_bytes(), 5 * (8 + 2));

        let taken = q.take_now(2).unwrap();
        let ids: Vec<&str> = taken.iter().map(|d| d.envelope.id.as_str()).collect();
        assert_eq!(ids, ["id-0", "id-1"]);
        assert_eq!(taken[0].envelope.submission.stdin, "ab");
        assert_eq!(state(&q, "id-0"), "running");
        assert_eq!(state(&q, "id-2"), "queued");
        assert_eq!(Queue::depth(&q), 5);

        let first = taken.into_iter().next().unwrap();
        Queue::complete(&q, vec![(first, result("id-0"))])
            .await
            .unwrap();
        assert_eq!(state(&q, "id-0"), "done");
        assert_eq!(Queue::depth(&q), 4);
        assert_eq!(q.queued_bytes(), 4 * 10);
        drop(q);

        // After a restart the unfinished ones (the running one too) are ready again, in order.
        // (The journal thread lets go of the file once it sees the queue gone.)
        let mut reopened = EmbeddedQueue::open(&dir, bounds());
        for _ in 0..50 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            reopened = EmbeddedQueue::open(&dir, bounds());
        }
        let q = reopened.unwrap();
        assert_eq!(Queue::depth(&q), 4);
        assert_eq!(q.queued_bytes(), 4 * 10);
        let ids: Vec<String> = q
            .take_now(10)
            .unwrap()
            .into_iter()
            .map(|d| d.envelope.id)
            .collect();
        assert_eq!(ids, ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(state(&q, "id-4"), "running");
        assert!(q.take_now(10).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
