//! Partitions: the log and the state split into N parts that commit in parallel. Each
//! partition is a [`Log`] of its own (its own redb file, writer thread, group commit, gap-free
//! event sequence, cursors and id space); a unit of work runs in one partition and commits
//! there. N is fixed when a data directory is created: it is stored in partition 0, and opening
//! the directory with another N is refused. With one partition this is exactly a single `Log`
//! on `carshare.redb`, as before partitions existed.
//!
//! **Ids say where they live.** Partition `p` of `N` hands out the ids `id` with
//! `(id - 1) % N == p` (within a cluster's id slot, see [`crate::LogBuilder::id_slot`]), so
//! [`Partitions::of_id`] finds an entity's partition from its id alone, for every sequence of
//! every context.
//!
//! **Beyond its partition, a unit only reads** (`unit.rs`): an advisory read of another
//! partition's latest committed state ([`Unit::peek_at`]), a view of another partition for a
//! synchronous call into one of its entities ([`Unit::enter`]), or, for a listing, a view of
//! every partition at once ([`Partitions::begin_reading_all`]). A write outside its partition
//! is refused: the unit is marked ([`Unit::violation`]) and must not commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StorageError;
use crate::log::{Log, LogBuilder};
use crate::unit::Unit;

/// The most partitions a data directory may have.
pub const MAX_PARTITIONS: u32 = 64;

/// The key in partition 0's meta table of the number of partitions.
pub(crate) const PARTITIONS: &str = "partitions";

/// Every partition of a data directory: cheap to clone.
#[derive(Clone)]
pub struct Partitions {
    logs: Arc<[Log]>,
}

impl Partitions {
    /// Opens (or creates) the `n` partitions in `dir`, each built by `builder(p)` (caches,
    /// replicators); their id slots are set here. Refused when `dir` was created with another
    /// number of partitions.
    pub fn open(dir: &Path, n: u32, builder: impl Fn(u32) -> LogBuilder) -> Result<Partitions, StorageError> {
        if n == 0 || n > MAX_PARTITIONS {
            return Err(StorageError::new(format!(
                "the number of partitions must be 1 to {MAX_PARTITIONS}, not {n}"
            )));
        }
        let first = builder(0).partition(0, n).open(file(dir, 0))?;
        if let Err(e) = first.claim_partitions(n) {
            first.close();
            return Err(e);
        }
        let mut logs = vec![first];
        for p in 1..n {
            match builder(p).partition(p, n).open(file(dir, p)) {
                Ok(log) => logs.push(log),
                Err(e) => {
                    for log in &logs {
                        log.close();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Partitions { logs: logs.into() })
    }

    /// One partition: a log of its own, as before partitions existed.
    pub fn single(log: Log) -> Partitions {
        Partitions {
            logs: vec![log].into(),
        }
    }

    /// How many partitions there are.
    pub fn count(&self) -> u32 {
        self.logs.len() as u32
    }

    /// The partition entity `id` lives in, whatever its context.
    pub fn of_id(&self, id: u64) -> u32 {
        of_id(id, self.count())
    }

    /// Partition `p`'s log.
    pub fn log(&self, p: u32) -> &Log {
        assert!(p < self.count(), "partition {p} of {}", self.count());
        &self.logs[p as usize]
    }

    /// Every partition's log, in order.
    pub fn logs(&self) -> &[Log] {
        &self.logs
    }

    /// Starts a unit of work in partition `p`, able to read the others.
    pub fn begin(&self, p: u32) -> Result<Unit, StorageError> {
        let mut unit = self.log(p).begin()?;
        if self.count() > 1 {
            unit.reach(self.logs.clone(), p);
        }
        Ok(unit)
    }

    /// Starts a unit that reads every partition at once and writes none: for a listing, a
    /// count or a search, whose answer comes from all of them (merged in order, counts
    /// summed).
    pub fn begin_reading_all(&self) -> Result<Unit, StorageError> {
        let mut unit = self.begin(0)?;
        if self.count() > 1 {
            unit.read_all()?;
        }
        Ok(unit)
    }

    /// Closes every partition.
    pub fn close(&self) {
        for log in self.logs.iter() {
            log.close();
        }
    }
}

/// The partition of `id` among `n`.
pub(crate) fn of_id(id: u64, n: u32) -> u32 {
    (id.saturating_sub(1) % u64::from(n.max(1))) as u32
}

/// Partition `p`'s file in `dir`: partition 0 keeps the name a data directory had before
/// partitions existed.
pub fn file(dir: &Path, p: u32) -> PathBuf {
    match p {
        0 => dir.join("carshare.redb"),
        p => dir.join(format!("carshare.p{p}.redb")),
    }
}

#[cfg(test)]
mod tests {
    use super::of_id;

    #[test]
    fn ids_say_which_partition_they_live_in() {
        assert_eq!(
            (1..=9).map(|id| of_id(id, 4)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1, 2, 3, 0]
        );
        assert_eq!(of_id(42, 1), 0);
        assert_eq!(of_id(0, 4), 0);
    }
}
