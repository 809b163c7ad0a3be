//! Results too big for the journal, kept as files beside it. redb rounds a large value up to a
//! power of two of pages, so a 16 MiB output took 32 MiB of journal: a bound in bytes would have
//! been a bound on half the disk it claimed. A result over `INLINE_MAX` is written to
//! `results/<name>` (and synced) before the transaction that points at it commits, and unlinked
//! after the transaction that forgets it commits; files no transaction points at (a crash between
//! the two) are removed at start.
//!
//! A journal value is `KR\x01` + the encoded result (inline), `KR\x02` + a file name, or (data
//! dirs from before this layout) the encoded result alone: those start with the id's length,
//! then the id's first character, never with these tags.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Results up to this many encoded bytes stay in the journal.
pub const INLINE_MAX: usize = 4096;

const INLINE: &[u8] = b"KR\x01";
const IN_FILE: &[u8] = b"KR\x02";

/// The directory of result files.
pub struct ResultFiles {
    dir: PathBuf,
}

/// Where a stored result is, as read from its journal value.
pub enum Stored<'a> {
    /// The encoded result itself.
    Inline(&'a [u8]),
    /// The name of its file.
    File(&'a str),
}

impl ResultFiles {
    pub fn open(data_dir: &Path) -> io::Result<ResultFiles> {
        let dir = data_dir.join("results");
        fs::create_dir_all(&dir)?;
        Ok(ResultFiles { dir })
    }

    /// The journal value for an encoded result, and the bytes it is counted as. A big result is
    /// written to a file first (synced), and `wrote_file` set: the directory then needs a sync. Inline
    /// results count double: redb's pages may hold them at up to twice their size.
    pub fn store(&self, encoded: Vec<u8>, wrote_file: &mut bool) -> io::Result<(Vec<u8>, u64)> {
        if encoded.len() <= INLINE_MAX {
            let size = 2 * encoded.len() as u64;
            return Ok(([INLINE, &encoded].concat(), size));
        }
        let name = format!("{}.result", uuid::Uuid::new_v4());
        let mut file = fs::File::create(self.dir.join(&name))?;
        file.write_all(&encoded)?;
        file.sync_all()?;
        *wrote_file = true;
        Ok(([IN_FILE, name.as_bytes()].concat(), encoded.len() as u64))
    }

    /// Makes the names of files written since the last sync durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Where a journal value's result is.
    pub fn stored(value: &[u8]) -> Stored<'_> {
        if let Some(rest) = value.strip_prefix(INLINE) {
            Stored::Inline(rest)
        } else if let Some(name) = value.strip_prefix(IN_FILE) {
            Stored::File(std::str::from_utf8(name).unwrap_or(""))
        } else {
            Stored::Inline(value)
        }
    }

    /// The encoded result a journal value stands for.
    pub fn load(&self, value: &[u8]) -> io::Result<Vec<u8>> {
        match Self::stored(value) {
            Stored::Inline(bytes) => Ok(bytes.to_vec()),
            Stored::File(name) => fs::read(self.dir.join(name)),
        }
    }

    /// Unlinks the file a forgotten value pointed at, if it had one.
    pub fn remove(&self, value: &[u8]) {
        if let Stored::File(name) = Self::stored(value) {
            if let Err(e) = fs::remove_file(self.dir.join(name)) {
                tracing::warn!(error = %e, name, "removing a result file failed");
            }
        }
    }

    /// Removes files that no journal value names (left by a crash between writing a file and
    /// committing, or between committing and unlinking).
    pub fn remove_unreferenced(&self, referenced: &HashSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
