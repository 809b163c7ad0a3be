//! Which offsets of one partition are finished. Jobs finish out of order, so Kafka's single
//! committed offset cannot say it alone: the commit is the lowest offset not yet finished, and
//! the finished offsets above it travel in the commit's metadata string (the technique of
//! Confluent's Parallel Consumer). After a restart or a rebalance, the new owner reads both and
//! skips what was finished.
//!
//! Metadata: `k1:` then base64 of a bitmap, bit i set when offset commit + i is finished. A
//! partition never has more than `MAX_SPAN` offsets between its commit point and its newest
//! consumed one (the consumer pauses it first), so the string stays under 3 KB, inside the
//! broker's `offset.metadata.max.bytes` (4096 by default).

use std::collections::BTreeSet;

use base64::Engine as _;

/// Most offsets a partition may have between its commit point and the newest one consumed.
pub const MAX_SPAN: i64 = 16_384;

const PREFIX: &str = "k1:";

/// The offsets of one partition that were consumed and not yet committed.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    /// The lowest offset not known to be finished, once known (the committed offset at
    /// assignment, or the first consumed).
    commit: Option<i64>,
    /// The next offset after the newest consumed.
    next: i64,
    /// Finished offsets at or above `commit`.
    finished: BTreeSet<i64>,
}

impl PartitionOffsets {
    /// Starts from a committed offset and its metadata (finished offsets above it).
    pub fn from_commit(offset: i64, metadata: &str) -> PartitionOffsets {
        let mut p = PartitionOffsets {
            commit: Some(offset),
            next: offset,
            finished: BTreeSet::new(),
        };
        if let Some(bits) = metadata.strip_prefix(PREFIX).and_then(|b| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b)
                .ok()
        }) {
            for (i, byte) in bits.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        p.finished.insert(offset + (i * 8 + bit) as i64);
                    }
                }
            }
        }
        p
    }

    /// Notes that `offset` was consumed. True when it was finished before (a restart or another
    /// owner finished it): it must be skipped.
    pub fn consumed(&mut self, offset: i64) -> bool {
        let commit = *self.commit.get_or_insert(offset);
        self.next = self.next.max(offset + 1);
        offset < commit || self.finished.contains(&offset)
    }

    /// Notes that `offset` is finished (its result, or its dead letter, is published).
    pub fn finish(&mut self, offset: i64) {
        self.finished.insert(offset);
        let Some(commit) = self.commit.as_mut() else {
            return;
        };
        while self.finished.remove(commit) {
            *commit += 1;
        }
    }

    /// Offsets between the commit point and the newest consumed: past `MAX_SPAN` the partition
    /// must pause.
    pub fn span(&self) -> i64 {
        self.commit.map_or(0, |c| self.next - c)
    }

    /// The offset to commit and its metadata; `None` before anything was consumed.
    pub fn to_commit(&self) -> Option<(i64, String)> {
        let commit = self.commit?;
        let mut bits: Vec<u8> = Vec::new();
        for offset in &self.finished {
            let i = (offset - commit) as usize;
            if bits.len() <= i / 8 {
                bits.resize(i / 8 + 1, 0);
            }
            bits[i / 8] |= 1 << (i % 8);
        }
        let metadata = if bits.is_empty() {
            String::new()
        } else {
            format!(
                "{PREFIX}{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(bits)
            )
        };
        Some((commit, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_the_lowest_unfinished_offset_and_the_rest_travel_in_metadata() {
        let mut p = PartitionOffsets::default();
        for o in 10..20 {
            assert!(!p.consumed(o));
        }
        for o in [12, 13, 17] {
            p.finish(o);
        }
        let (commit, metadata) = p.to_commit().unwrap();
        assert_eq!(commit, 10);
        let restored = PartitionOffsets::from_commit(commit, &metadata);
        let skipped: Vec<i64> = (10..20).filter(|o| restored.clone().consumed(*o)).collect();
        assert_eq!(skipped, [12, 13, 17]);
        p.finish(10);
        p.finish(11);
        assert_eq!(
            p.to_commit().unwrap().0,
            14,
            "contiguous finished offsets fold in"
        );
    }

    #[test]
    fn the_widest_span_fits_the_brokers_metadata_limit() {
        let mut p = PartitionOffsets::default();
        for o in 0..MAX_SPAN {
            p.consumed(o);
            if o % 2 == 1 {
                p.finish(o);
            }
        }
        let (_, metadata) = p.to_commit().unwrap();
        assert!(metadata.len() < 4096, "{} bytes", metadata.len());
    }

    #[test]
    fn offsets_below_the_commit_are_skipped() {
        let mut p = PartitionOffsets::from_commit(100, "");
        assert!(p.consumed(99));
        assert!(!p.consumed(100));
    }
}
