//! Backups: a consistent copy of a log's database, taken while it serves. redb has no backup
//! of its own, and copying the file while the writer commits gives a torn file, so the copy is
//! made table by table from one read transaction (an MVCC snapshot: one committed state) into
//! a new database, written whole under a temporary name and renamed into place.
//!
//! A backup of a cluster's replica carries the position of the log it holds: restored, the host
//! applies the log from there (and a new host joins from one, `host/src/cluster/snapshot.rs`).

use std::path::Path;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::dead::DEAD;
use crate::error::StorageError;
use crate::forwarded::{FORWARDED, FORWARDED_BY_TIME};
use crate::ids::COUNTERS;
use crate::index::{IDX, IDX_COUNTS};
use crate::store::{self, CURSORS, EVENTS, META, ReplicaPosition, STATE};

/// Rows written to the copy per transaction: bounds the memory a copy of a large database
/// holds at once.
const ROWS_PER_TXN: usize = 100_000;

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    /// The number of the last event it holds.
    pub last_seq: u64,
    /// In a cluster, where in the log its replica stands.
    pub position: ReplicaPosition,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies the committed state `txn` sees into a new database at `dest` (which must not
/// exist): written under a temporary name beside it, synced and renamed into place.
pub(crate) fn write(txn: &ReadTransaction, dest: &Path) -> Result<Backup, StorageError> {
    if dest.exists() {
        return Err(StorageError::new(format!("{} exists already", dest.display())));
    }
    let known = [
        STATE.name(),
        EVENTS.name(),
        CURSORS.name(),
        META.name(),
        COUNTERS.name(),
        DEAD.name(),
        IDX.name(),
        IDX_COUNTS.name(),
        FORWARDED.name(),
        FORWARDED_BY_TIME.name(),
    ];
    for table in txn.list_tables()? {
        if !known.contains(&table.name()) {
            return Err(StorageError::new(format!(
                "the database has a table this carshare does not know ({}): back it up with the \
                 version that wrote it",
                table.name()
            )));
        }
    }
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    {
        let copy = Database::create(&tmp)?;
        copy_table(txn, &copy, STATE)?;
        copy_table(txn, &copy, EVENTS)?;
        copy_table(txn, &copy, CURSORS)?;
        copy_table(txn, &copy, META)?;
        copy_table(txn, &copy, COUNTERS)?;
        copy_table(txn, &copy, DEAD)?;
        copy_table(txn, &copy, IDX)?;
        copy_table(txn, &copy, IDX_COUNTS)?;
        copy_table(txn, &copy, FORWARDED)?;
        copy_table(txn, &copy, FORWARDED_BY_TIME)?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(StorageError::new)?;
    std::fs::rename(&tmp, dest).map_err(StorageError::new)?;
    if let Some(dir) = dest.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    let last_seq = txn
        .open_table(EVENTS)?
        .last()?
        .map(|(k, _)| k.value())
        .unwrap_or(0);
    let position = store::replica_position(&txn.open_table(META)?)?;
    let bytes = std::fs::metadata(dest).map_err(StorageError::new)?.len();
    Ok(Backup {
        last_seq,
        position,
        bytes,
    })
}

/// Copies every row of `table` as `txn` sees it into `copy`, [`ROWS_PER_TXN`] rows per
/// transaction. A table the source never opened is created empty.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    copy: &Database,
    table: TableDefinition<'static, K, V>,
) -> Result<(), StorageError> {
    let source = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let w = copy.begin_write()?;
            w.open_table(table)?;
            w.commit()?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut rows = source.iter()?;
    loop {
        let w = copy.begin_write()?;
        let mut written = 0;
        {
            let mut out = w.open_table(table)?;
            for row in rows.by_ref() {
                let (k, v) = row?;
                out.insert(k.value(), v.value())?;
                written += 1;
                if written == ROWS_PER_TXN {
                    break;
                }
            }
        }
        w.commit()?;
        if written < ROWS_PER_TXN {
            return Ok(());
        }
    }
}

/// Checks that `path` is a database this carshare can serve, and says what it holds.
pub(crate) fn inspect(path: &Path) -> Result<Backup, StorageError> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let last_seq = match txn.open_table(EVENTS) {
        Ok(t) => t.last()?.map(|(k, _)| k.value()).unwrap_or(0),
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    let position = match txn.open_table(META) {
        Ok(meta) => {
            if meta.get("log_id")?.is_none() {
                return Err(StorageError::new(
                    "it is not a carshare database: it has no log id",
                ));
            }
            store::replica_position(&meta)?
        }
        Err(_) => {
            return Err(StorageError::new(
                "it is not a carshare database: it has no meta table",
            ));
        }
    };
    let bytes = std::fs::metadata(path).map_err(StorageError::new)?.len();
    Ok(Backup {
        last_seq,
        position,
        bytes,
    })
}
