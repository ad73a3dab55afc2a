//! Validation at commit: a unit commits only if everything it based its decisions on is
//! still what the open transaction holds (design.md, the unit of work, rule 5).

use redb::ReadableTable;

use super::Tables;
use crate::changes::ChangeSet;
use crate::dead;
use crate::error::StorageError;
use crate::store;

/// True if every value, scan, cursor and dead letter the unit relied on is unchanged in the
/// open transaction.
pub(super) fn still_valid(c: &ChangeSet, t: &Tables<'_>) -> Result<bool, StorageError> {
    for d in &c.dead {
        if !dead::still_valid(&t.dead, d)? {
            return Ok(false);
        }
    }
    for ((ctx, key), seen) in &c.reads {
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
