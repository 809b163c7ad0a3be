//! The compile cache: what a compile step made, kept by a content hash of everything that decides
//! it (language, toolchain version, compile command line and limits, environment, every source
//! file's name and bytes), so the same program compiles once however many times it is submitted.
//! A failed compile is kept too, and answers a resubmitted broken program at once.
//!
//! One file per entry in the cache dir, written to a temporary name and renamed into place, with a
//! SHA-256 of its payload: an entry cut short (a kill during the write, a damaged disk) is never
//! served and is removed. Bounded in bytes, least recently used evicted first; shared by every pod
//! runner of the host and kept across restarts.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::job::{Artifact, Job};
use crate::metrics::Metrics;
use crate::outcome::{Failure, Outcome, Status};
use crate::pods::Finished;
use crate::Locked as _;

/// Changes when what goes into a key changes.
const KEY_FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"KILNCC01";
const SUFFIX: &str = ".entry";

/// What the cache holds for a key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cached {
    /// The compile step succeeded and made these files.
    Built(Artifact),
    /// The compiler failed (exited non-zero): its output and the outcome's figures.
    Failed {
        compile_output: Bytes,
        message: String,
        cpu_time_ms: u64,
        wall_time_ms: u64,
        memory_bytes: u64,
    },
}

impl Cached {
    /// The outcome a cached compile failure answers with.
    pub fn failed_outcome(&self) -> Option<Outcome> {
        match self {
            Cached::Built(_) => None,
            Cached::Failed {
                compile_output,
                message,
                cpu_time_ms,
                wall_time_ms,
                memory_bytes,
            } => {
                let mut o = Outcome::failed(Status::CompileError, message.clone());
                o.compile_output = compile_output.clone();
                o.cpu_time_ms = *cpu_time_ms;
                o.wall_time_ms = *wall_time_ms;
                o.memory_bytes = *memory_bytes;
                Some(o)
            }
        }
    }

    /// What to keep of a finished job that compiled: its artifact (taken from the outcome, or
    /// copied when `leave` says it is still needed beside the outcome), or its compile failure when the
    /// compiler itself said no (not a limit, which another run might not meet).
    pub fn from_finished(finished: &mut Finished, leave: bool) -> Option<Cached> {
        let artifact = if leave {
            finished.artifact.clone()
        } else {
            finished.artifact.take()
        };
        let outcome = &finished.outcome;
        if let Some(a) = artifact {
            return Some(Cached::Built(a));
        }
        let compiler_said_no = matches!(outcome.failure(), Some(Failure::CompilerExited(_)));
        compiler_said_no.then(|| Cached::Failed {
            compile_output: outcome.compile_output.clone(),
            message: outcome.message.clone().unwrap_or_default(),
            cpu_time_ms: outcome.cpu_time_ms,
            wall_time_ms: outcome.wall_time_ms,
            memory_bytes: outcome.memory_bytes,
        })
    }
}

struct Index {
    /// Key -> (bytes on disk, last use in ns since the epoch).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
}

pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
    temp_names: AtomicU64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl CompileCache {
    /// Opens (or makes) the cache in `dir`: leftovers of interrupted writes are removed, the
    /// entries there are indexed by size and last use.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> io::Result<CompileCache> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut entries = HashMap::new();
        let mut total = 0;
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = match e.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            match name.strip_suffix(SUFFIX) {
                Some(key) if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    let used = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0);
                    total += meta.len();
                    entries.insert(key.to_string(), (meta.len(), used));
                }
                // A write cut short, or something that is not an entry.
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        metrics.compile_cache_bytes.set(total as i64);
        let cache = CompileCache {
            dir: dir.to_path_buf(),
            max_bytes,
            index: Mutex::new(Index { entries, total }),
            metrics,
            temp_names: AtomicU64::new(0),
        };
        cache.evict();
        Ok(cache)
    }

    /// The key of a job's compile step, or None for a job without one. `version` is the
    /// toolchain's version as probed on this host.
    pub fn key(job: &Job, version: &str) -> Option<String> {
        let compile = job.compile.as_ref()?;
        let inputs = (
            KEY_FORMAT,
            env!("CARGO_PKG_VERSION"),
            &job.language,
            version,
            &compile.argv,
            &compile.limits,
            &job.env,
            &job.files,
        );
        let encoded = bincode::serde::encode_to_vec(&inputs, bincode::config::standard()).ok()?;
        Some(hex(&sha256(&[&encoded])))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}{SUFFIX}"))
    }

    fn forget(&self, key: &str) {
        let mut index = self.index.locked();
        if let Some((bytes, _)) = index.entries.remove(key) {
            index.total -= bytes;
            self.metrics.compile_cache_bytes.set(index.total as i64);
        }
    }

    /// The entry for `key`, when there is a whole one.
    pub fn get(&self, key: &str) -> Option<Cached> {
        let known = {
            let index = self.index.locked();
            index.entries.contains_key(key)
        };
        let found = known.then(|| self.read(key)).flatten();
        let event = match &found {
            Some(Cached::Built(_)) => "hit",
            Some(Cached::Failed { .. }) => "hit_failed",
            None => "miss",
        };
        self.metrics.compile_cache.with_label_values(&[event]).inc();
        found
    }

    fn read(&self, key: &str) -> Option<Cached> {
        let path = self.path(key);
        let data = std::fs::read(&path).ok();
        let entry = data.as_deref().and_then(|d| {
            let (head, payload) = d.split_at_checked(MAGIC.len() + 32)?;
            let (magic, sum) = head.split_at(MAGIC.len());
            if magic != MAGIC || sum != sha256(&[payload]) {
                return None;
            }
            bincode::serde::decode_from_slice::<Cached, _>(payload, bincode::config::standard())
                .ok()
                .map(|(c, _)| c)
        });
        match entry {
            Some(c) => {
                let now = now_ns();
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                let mut index = self.index.locked();
                if let Some(e) = index.entries.get_mut(key) {
                    e.1 = now;
                }
                Some(c)
            }
            None => {
                tracing::warn!(%key, "compile cache entry damaged or cut short: removed");
                let _ = std::fs::remove_file(&path);
                self.forget(key);
                None
            }
        }
    }

    /// Keeps `entry` under `key`; a write that fails only costs a future compile.
    pub fn put(&self, key: &str, entry: &Cached) {
        let Ok(payload) = bincode::serde::encode_to_vec(entry, bincode::config::standard()) else {
            return;
        };
        let size = (MAGIC.len() + 32 + payload.len()) as u64;
        if size > self.max_bytes / 2 {
            return;
        }
        let temp = self.dir.join(format!(
            "tmp-{key}-{}-{}",
            std::process::id(),
            self.temp_names.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(MAGIC)?;
            f.write_all(&sha256(&[&payload]))?;
            f.write_all(&payload)?;
            std::fs::rename(&temp, self.path(key))
        })();
        if let Err(e) = written {
            tracing::warn!(%key, error = %e, "compile cache entry not written");
            let _ = std::fs::remove_file(&temp);
            return;
        }
        {
            let mut index = self.index.locked();
            if let Some((old, _)) = index.entries.insert(key.to_string(), (size, now_ns())) {
                index.total -= old;
            }
            index.total += size;
        }
        self.metrics
            .compile_cache
            .with_label_values(&["stored"])
            .inc();
        self.evict();
    }

    /// Removes the least recently used entries until the cache is within its bound.
    fn evict(&self) {
        let mut index = self.index.locked();
        while index.total > self.max_bytes {
            let Some(oldest) = index
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let (bytes, _) = index.entries.remove(&oldest).expect("just found");
            index.total -= bytes;
            let _ = std::fs::remove_file(self.path(&oldest));
            self.metrics
                .compile_cache
                .with_label_values(&["eviction"])
                .inc();
        }
        self.metrics.compile_cache_bytes.set(index.total as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, max: u64) -> CompileCache {
        CompileCache::open(dir, max, Arc::new(Metrics::new())).unwrap()
    }

    fn built(n: usize) -> Cached {
        Cached::Built(Artifact {
            files: vec![crate::job::JobFile {
                name: "main".into(),
                content: vec![7u8; n].into(),
            }],
            compile_output: Bytes::default(),
        })
    }

    fn key(i: u8) -> String {
        hex(&[i; 32])
    }

    #[test]
    fn entries_survive_a_reopen_and_damaged_ones_are_never_served() {
        let dir = std::env::temp_dir().join(format!("kiln-cc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = cache(&dir, 1 << 20);
        c.put(&key(1), &built(100));
        c.put(&key(2), &built(100));
        assert!(matches!(c.get(&key(1)), Some(Cached::Built(_))));
        assert!(c.get(&key(3)).is_none());
        // Cut short (as a damaged disk leaves it), and a write a kill interrupted.
        let p2 = c.path(&key(2));
        let whole = std::fs::read(&p2).unwrap();
        std::fs::write(&p2, &whole[..whole.len() - 10]).unwrap();
        std::fs::write(dir.join(format!("tmp-{}-1-0", key(4))), b"KILNCC01 half").unwrap();
        drop(c);
        let c = cache(&dir, 1 << 20);
        assert!(
            !dir.join(format!("tmp-{}-1-0", key(4))).exists(),
            "leftover removed"
        );
        assert!(matches!(c.get(&key(1)), Some(Cached::Built(_))));
        assert!(c.get(&key(2)).is_none(), "a cut entry is not served");
        assert!(!p2.exists(), "and is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_least_recently_used_go_first_past_the_bound() {
        let dir = std::env::temp_dir().join(format!("kiln-cc-lru-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = cache(&dir, 3000);
        c.put(&key(1), &built(1000));
        c.put(&key(2), &built(1000));
        assert!(c.get(&key(1)).is_some()); // 1 is now newer than 2
        c.put(&key(3), &built(1000));
        assert!(
            c.get(&key(2)).is_none(),
            "the least recently used was evicted"
        );
        assert!(c.get(&key(1)).is_some() && c.get(&key(3)).is_some());
        assert!(c.index.locked().total <= 3000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
