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
        let mut logs = vec![first];
        let fail = |logs: &[Log], e: StorageError| {
            for log in logs {
                log.close();
            }
            Err(e)
        };
        // Partition 0 records N last, once every partition's file is made: a directory whose
        // partition 0 has it is complete, and a partition file missing from it was lost.
        let made = match logs[0].claimed_partitions() {
            Ok(made) => made,
            Err(e) => return fail(&logs, e),
        };
        if let Some(m) = made.filter(|m| *m != n) {
            return fail(
                &logs,
                StorageError::new(format!(
                    "this data directory was made with {m} partition(s), and the number of \
                     partitions cannot change: start it with --partitions {m}"
                )),
            );
        }
        for p in 1..n {
            let path = file(dir, p);
            if made.is_some() && !path.exists() {
                return fail(
                    &logs,
                    StorageError::new(format!(
                        "{} is missing: the data directory holds {n} partitions; restore the \
                         whole directory from a backup",
                        path.display()
                    )),
                );
            }
            match builder(p).partition(p, n).open(&path) {
                Ok(log) => logs.push(log),
                Err(e) => return fail(&logs, e),
            }
            if let Err(e) = logs[p as usize].claim_partitions(n) {
                return fail(&logs, e);
            }
        }
        if let Err(e) = logs[0].claim_partitions(n) {
            return fail(&logs, e);
        }
        // Events name their cause by log id: two partitions sharing one (a file copied over
        // another) would confuse whose event is whose.
        for (p, log) in logs.iter().enumerate() {
            if let Some(q) = logs[..p].iter().position(|l| l.id() == log.id()) {
                return fail(
                    &logs,
                    StorageError::new(format!(
                        "{} and {} hold the same log (id {:016x}): one was copied from the \
                         other; restore each partition from its own backup",
                        file(dir, q as u32).display(),
                        file(dir, p as u32).display(),
                        log.id()
                    )),
                );
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

    /// Writes a consistent copy of every partition to `dest`: a single file with one partition
    /// (as [`Log::backup`]), else a new directory holding each partition's file. Every
    /// partition is read at one point: the writers pause between two batches while the read
    /// transactions begin (microseconds), so no cursor of one partition is ahead of the events
    /// of another that it has handled.
    pub fn backup(&self, dest: &Path) -> Result<Vec<crate::Backup>, StorageError> {
        if self.count() == 1 {
            return Ok(vec![self.log(0).backup(dest)?]);
        }
        if dest.exists() {
            return Err(StorageError::new(format!("{} exists already", dest.display())));
        }
        let txns = self.read_all_at_once()?;
        std::fs::create_dir(dest).map_err(StorageError::new)?;
        let mut out = Vec::with_capacity(txns.len());
        for (p, txn) in txns.iter().enumerate() {
            out.push(crate::backup::write(txn, &file(dest, p as u32))?);
        }
        Ok(out)
    }

    /// A read transaction of every partition, begun while every writer pauses.
    fn read_all_at_once(&self) -> Result<Vec<redb::ReadTransaction>, StorageError> {
        let (parked, stopped) = std::sync::mpsc::channel();
        let release = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        // Released however this ends: a writer left waiting would stop its partition for good.
        struct Release(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);
        impl Drop for Release {
            fn drop(&mut self) {
                let (released, wake) = &*self.0;
                *released.lock().unwrap_or_else(|p| p.into_inner()) = true;
                wake.notify_all();
            }
        }
        let _release = Release(release.clone());
        let mut asked = 0;
        for log in self.logs.iter() {
            let pause = crate::writer::Pause {
                parked: parked.clone(),
                release: release.clone(),
            };
            if log.send_message(crate::writer::Message::Pause(pause)).is_ok() {
                asked += 1;
            }
        }
        if asked < self.logs.len() {
            return Err(StorageError::new("a partition's log is closed"));
        }
        for _ in 0..asked {
            stopped
                .recv_timeout(std::time::Duration::from_secs(30))
                .map_err(|_| StorageError::new("a partition's writer did not pause within 30 s"))?;
        }
        self.logs.iter().map(|l| l.read_transaction()).collect()
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
