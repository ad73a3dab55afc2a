//! Validation at commit: a unit commits only if everything it based its decisions on is
//! still what the open transaction holds (design.md, the unit of work, rule 5).
//!
//! Reading every value a unit read again was a tenth of the writer's time, and the writer is
//! the one thread every commit waits for. So the writer remembers which state keys the last
//! batches wrote ([`Recent`]): a value read from a snapshot that no batch since has written is
//! still what the database holds, and needs no read. Everything else (a key written since, a
//! unit whose snapshot is older than what is remembered or unknown) is read and compared.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use redb::ReadableTable;

use super::Tables;
use crate::changes::ChangeSet;
use crate::dead;
use crate::error::StorageError;
use crate::store;

/// True if every value, scan, cursor and dead letter the unit relied on is unchanged in the
/// open transaction.
pub(super) fn still_valid(c: &ChangeSet, t: &Tables<'_>, recent: &Recent) -> Result<bool, StorageError> {
    for d in &c.dead {
        if !dead::still_valid(&t.dead, d)? {
            return Ok(false);
        }
    }
    let since = c.snapshot_generation.filter(|g| *g >= recent.floor);
    for ((ctx, key), seen) in &c.reads {
        if let Some(since) = since {
            let h = recent.hash(ctx, key);
            if !recent.written_after(h, since) && !t.written.contains(&h) {
                continue;
            }
        }
        let now = t.state.get((ctx.as_str(), key.as_str()))?;
        if now.as_ref().map(|g| g.value()) != seen.as_deref() {
            return Ok(false);
        }
    }
    for scan in &c.scans {
        let now = store::scan_prefix(
            &t.state,
            &scan.context,
            &scan.prefix,
            scan.after.as_deref(),
            scan.limit,
        )?;
        if now != scan.rows {
            return Ok(false);
        }
    }
    for m in &c.cursors {
        let now = t
            .cursors
            .get(m.subscriber.as_str())?
            .map(|v| v.value())
            .unwrap_or(0);
        if now != m.expected {
            return Ok(false);
        }
    }
    Ok(true)
}

/// How many committed batches [`Recent`] remembers: a few seconds under load, far longer than
/// a unit lives.
const KEEP: usize = 1024;

/// The state keys (hashed) that the last [`KEEP`] committed batches wrote, each with the
/// generation (the count of batches committed) that last wrote it. A hash two keys share only
/// sends a read to the database. It starts with the writer, at generation 0.
#[derive(Default)]
pub(crate) struct Recent {
    hasher: foldhash::fast::RandomState,
    /// Key hash → the generation that last wrote it.
    last: foldhash::HashMap<u64, u64>,
    /// The key hashes each remembered generation wrote, oldest first.
    batches: VecDeque<(u64, Vec<u64>)>,
    /// Every write of a generation after this one is in `last`.
    floor: u64,
}

impl Recent {
    pub(super) fn hash(&self, ctx: &str, key: &str) -> u64 {
        self.hasher.hash_one((ctx, key))
    }

    /// Whether a batch after generation `since` may have written the key hashed to `h`.
    fn written_after(&self, h: u64, since: u64) -> bool {
        self.last.get(&h).is_some_and(|g| *g > since)
    }

    /// Generation `generation` committed, writing the keys hashed in `written`.
    pub(super) fn committed(&mut self, generation: u64, written: foldhash::HashSet<u64>) {
        let written: Vec<u64> = written.into_iter().collect();
        for h in &written {
            self.last.insert(*h, generation);
        }
        self.batches.push_back((generation, written));
        while self.batches.len() > KEEP {
            let Some((g, hashes)) = self.batches.pop_front() else {
                break;
            };
            for h in hashes {
                if self.last.get(&h) == Some(&g) {
                    self.last.remove(&h);
                }
            }
            self.floor = g;
        }
    }

    /// Generation `generation` changed state without saying which keys (records of the
    /// replicated log applied): forget everything, and check every unit whose snapshot is
    /// older in full.
    pub(super) fn forget(&mut self, generation: u64) {
        self.last.clear();
        self.batches.clear();
        self.floor = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[u64]) -> foldhash::HashSet<u64> {
        keys.iter().copied().collect()
    }

    #[test]
    fn remembers_the_last_writer_of_each_key_for_keep_batches() {
        let mut r = Recent::default();
        r.committed(1, set(&[10, 11]));
        r.committed(2, set(&[11]));
        assert!(r.written_after(10, 0) && !r.written_after(10, 1));
        assert!(r.written_after(11, 1) && !r.written_after(11, 2));
        assert!(!r.written_after(12, 0));
        assert_eq!(r.floor, 0);
        for g in 3..(3 + KEEP as u64) {
            r.committed(g, set(&[]));
        }
        // Generations 1 and 2 are forgotten: the floor says so, and so do the keys.
        assert_eq!(r.floor, 2);
        assert!(!r.written_after(10, 0) && !r.written_after(11, 0));
        r.committed(3 + KEEP as u64, set(&[12]));
        r.forget(4 + KEEP as u64);
        assert_eq!(r.floor, 4 + KEEP as u64);
        assert!(!r.written_after(12, 0));
    }
}
