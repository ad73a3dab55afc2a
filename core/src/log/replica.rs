//! A [`Log`] as one replica of a cluster's log: units sent to the writer when this host is not
//! it (and waited for until this replica shows them, so a client reads its own writes), units
//! other hosts sent taken when it is, and the replicated log's records applied in order.
//!
//! A unit's answer is never a guess. It committed (and this host shows it), or nothing of it
//! was written, or, when its host cannot learn which in time, the host gives it up: an
//! `abandon` for its id goes to the writer, which either reports that the unit committed or
//! records that it never will (`forwarded.rs`). Only when even that gets no answer is the
//! outcome "unknown".

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::ReadableDatabase;
use tokio::sync::{oneshot, watch};

use super::{Log, outcome};
use crate::changes::ChangeSet;
use crate::error::{CommitError, StorageError};
use crate::forwarded;
use crate::replicate::{Applied, ApplyError, FORMAT, ForwardError, Replicator, Reply};
use crate::store::{self, ReplicaPosition};
use crate::writer::{Apply, Committed, Message};

impl Log {
    /// Whether this host commits units itself: always, unless it is a cluster's host that is
    /// not the writer now.
    pub fn is_writer(&self) -> bool {
        self.inner.replicator.as_ref().is_none_or(|r| r.is_writer())
    }

    /// The replicated log, if this host is a cluster's: then every unit, the writer's own
    /// too, goes through [`Log::forward`], so that one left in doubt is sent again with its id.
    pub(super) fn replicated(&self) -> Option<Arc<dyn Replicator>> {
        self.inner.replicator.clone()
    }

    /// Sends `changes` to the cluster's writer (this host's own when it writes) until one
    /// takes it, then waits until this replica has applied the writer's record. The unit
    /// carries an id (`forwarded.rs`), so sending it again after no answer came, to the same
    /// writer or a new one, commits it at most once; a unit still in doubt at the end is
    /// given up.
    pub(super) async fn forward(
        &self,
        replicator: Arc<dyn Replicator>,
        mut changes: ChangeSet,
    ) -> Result<Committed, CommitError> {
        let id = forwarded::new_id();
        changes.unit_id = Some(id.clone());
        let begun_at = changes.begun_at;
        let unit = serde_json::to_vec(&changes).map_err(|e| CommitError::Storage(e.into()))?;
        let patience = self.inner.patience;
        let deadline = Instant::now() + patience;
        // Why an earlier attempt may have committed, if one may have.
        let mut in_doubt: Option<String> = None;
        loop {
            let reply = self.send_to_writer(&replicator, &unit).await?;
            let settled = match reply {
                Reply::NotWriter | Reply::Unknown(_) if Instant::now() < deadline => {
                    if let Reply::Unknown(m) = reply {
                        in_doubt = Some(m);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Reply::NotWriter => Err(CommitError::Unavailable(format!(
                    "no writer took the unit within {patience:?}"
                ))),
                Reply::Unknown(m) => Err(CommitError::Unknown(m)),
                other => self.settle(other).await,
            };
            return match settled {
                Ok(c) => Ok(c),
                Err(e) if in_doubt.is_none() && !matches!(e, CommitError::Unknown(_)) => Err(e),
                // An attempt may have reached a writer that has yet to commit it (or this
                // last one's outcome is unknown): give the unit up, so that the answer is
                // true whatever that attempt does. Given up, a unit that conflicted is run
                // again (under a new id); any other was not written.
                Err(e) => match self.abandon(&replicator, id, begun_at).await {
                    Err(CommitError::Abandoned) if matches!(e, CommitError::Conflict) => Err(e),
                    other => other,
                },
            };
        }
    }

    /// What a definite reply of the writer means for the unit's committer.
    async fn settle(&self, reply: Reply) -> Result<Committed, CommitError> {
        match reply {
            Reply::Committed { seqs, position } => {
                // Committed either way; if this replica is slow to show it, so be it, and if
                // its storage failed it never will.
                if self.storage_failure().is_none() {
                    self.wait_applied(position).await;
                }
                Ok(Committed { seqs, position })
            }
            Reply::Conflict { position } => {
                // The writer checked the unit's id first: it had not committed before.
                // A rerun on a replica that has not caught up would only conflict again.
                if self.wait_applied(position).await {
                    Err(CommitError::Conflict)
                } else {
                    Err(CommitError::Unavailable(format!(
                        "this host has not applied the cluster's log up to position \
                         {position} within {:?}",
                        self.inner.patience
                    )))
                }
            }
            Reply::Abandoned => Err(CommitError::Abandoned),
            Reply::TooLarge { bytes, max } => Err(CommitError::TooLarge { bytes, max }),
            Reply::Failed(m) => Err(CommitError::Unavailable(m)),
            Reply::NotWriter => Err(CommitError::Unavailable("the writer refused the unit".into())),
            Reply::Unknown(m) => Err(CommitError::Unknown(m)),
        }
    }

    /// One attempt: the unit to the writer, this host's own if it writes now.
    async fn send_to_writer(
        &self,
        replicator: &Arc<dyn Replicator>,
        unit: &[u8],
    ) -> Result<Reply, CommitError> {
        if replicator.is_writer() {
            // This host writes (or has become the writer meanwhile): it commits the unit
            // itself.
            let local: ChangeSet =
                serde_json::from_slice(unit).map_err(|e| CommitError::Storage(e.into()))?;
            return Ok(match outcome(self.send(local)?.await) {
                Ok(c) => Reply::Committed {
                    seqs: c.seqs,
                    position: c.position,
                },
                // Checked against the whole log, its id first: it never committed.
                Err(CommitError::Conflict) => Reply::Conflict { position: 0 },
                Err(CommitError::Deposed) => Reply::NotWriter,
                Err(CommitError::Abandoned) => Reply::Abandoned,
                Err(CommitError::TooLarge { bytes, max }) => Reply::TooLarge { bytes, max },
                Err(CommitError::Unknown(m)) => Reply::Unknown(m),
                Err(e) => return Err(e),
            });
        }
        Ok(match replicator.forward(unit.to_vec()).await {
            Ok(reply) => serde_json::from_slice(&reply)
                .unwrap_or_else(|e| Reply::Unknown(format!("the writer's reply is unreadable: {e}"))),
            Err(ForwardError::NoWriter) => Reply::NotWriter,
            Err(ForwardError::TooLarge { bytes, max }) => Reply::TooLarge { bytes, max },
            Err(ForwardError::Unknown(m)) => Reply::Unknown(m),
        })
    }

    /// Gives up the unit `id`, whose outcome is not known: the writer records that it never
    /// commits, or reports that it did. "Unknown" only if no writer answers in time.
    async fn abandon(
        &self,
        replicator: &Arc<dyn Replicator>,
        id: String,
        begun_at: u64,
    ) -> Result<Committed, CommitError> {
        let marker = ChangeSet {
            unit_id: Some(id),
            abandon: true,
            begun_at,
            format: FORMAT,
            ..ChangeSet::default()
        };
        let marker = serde_json::to_vec(&marker).map_err(|e| CommitError::Storage(e.into()))?;
        // Giving up a unit takes half as long again at most.
        let deadline = Instant::now() + self.inner.patience / 2;
        loop {
            match self.send_to_writer(replicator, &marker).await? {
                reply @ Reply::Committed { .. } => return self.settle(reply).await,
                Reply::Abandoned => return Err(CommitError::Abandoned),
                Reply::NotWriter | Reply::Unknown(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Reply::Unknown(m) | Reply::Failed(m) => return Err(CommitError::Unknown(m)),
                _ => {
                    return Err(CommitError::Unknown(
                        "no writer answered in time, and the unit may have committed".into(),
                    ));
                }
            }
        }
    }

    /// Waits (a while at most) until this replica has applied the record at `position`;
    /// returns whether it has.
    async fn wait_applied(&self, position: u64) -> bool {
        let mut applied = self.inner.applied.clone();
        matches!(
            tokio::time::timeout(self.inner.patience, applied.wait_for(|a| *a >= position)).await,
            Ok(Ok(_))
        )
    }

    /// On the cluster's writer: commits a unit another host forwarded (its encoded change set)
    /// and returns the encoded reply for that host's [`Log::commit`].
    pub async fn commit_forwarded(&self, unit: &[u8]) -> Vec<u8> {
        let reply = self.commit_forwarded_reply(unit).await;
        serde_json::to_vec(&reply).unwrap_or_default()
    }

    async fn commit_forwarded_reply(&self, unit: &[u8]) -> Reply {
        let is_writer = || self.inner.replicator.as_ref().is_some_and(|r| r.is_writer());
        if !is_writer() {
            return Reply::NotWriter;
        }
        let changes: ChangeSet = match serde_json::from_slice(unit) {
            Ok(c) => c,
            Err(e) => return Reply::Failed(format!("the unit is unreadable: {e}")),
        };
        if changes.format > FORMAT {
            return Reply::Failed(format!(
                "the unit is in format {}, and the writer reads formats up to {FORMAT}: \
                 upgrade the writer's host (nothing was written)",
                changes.format
            ));
        }
        if changes.unit_id.is_none() {
            return Reply::Failed("a forwarded unit must carry an id (nothing was written)".into());
        }
        let outcome = match self.send(changes) {
            Ok(rx) => outcome(rx.await),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(c) => Reply::Committed {
                seqs: c.seqs,
                position: c.position,
            },
            // Validated on a current replica (its record was appended right after it).
            Err(CommitError::Conflict) => Reply::Conflict {
                position: self.applied(),
            },
            Err(CommitError::Deposed | CommitError::Closed) => Reply::NotWriter,
            Err(CommitError::Abandoned) => Reply::Abandoned,
            Err(CommitError::TooLarge { bytes, max }) => Reply::TooLarge { bytes, max },
            Err(CommitError::Unknown(m)) => Reply::Unknown(m),
            Err(e) => Reply::Failed(e.to_string()),
        }
    }

    /// Applies messages of the cluster's replicated log, in log order, with their positions;
    /// those taken before are skipped, and messages that are not records of this log following
    /// the last one applied are refused (see [`Applied`]).
    pub async fn apply(&self, records: Vec<(u64, Vec<u8>)>) -> Result<Applied, ApplyError> {
        let (reply, rx) = oneshot::channel();
        self.send_message(Message::Apply(Apply { records, reply }))
            .map_err(|e| ApplyError::Storage(StorageError::new(e)))?;
        rx.await
            .unwrap_or_else(|_| Err(ApplyError::Storage(StorageError::new("the log is closed"))))
    }

    /// The position of the last message of the cluster's log taken here (0 outside a
    /// cluster).
    pub fn applied(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// Where this replica stands: what it took of the cluster's log, and the position and id
    /// of the last record it applied, as its database holds them.
    pub fn replica_position(&self) -> Result<ReplicaPosition, StorageError> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(store::META)?;
        store::replica_position(&meta)
    }

    /// Writes a consistent copy of the database, as it is committed now, to `dest` (which
    /// must not exist), while the log goes on serving: see `backup.rs`.
    pub fn backup(&self, dest: &std::path::Path) -> Result<crate::Backup, StorageError> {
        let txn = self.inner.db.begin_read()?;
        crate::backup::write(&txn, dest)
    }

    /// Checks that `path` is a carshare database (a backup, say), and what it holds.
    pub fn inspect(path: &std::path::Path) -> Result<crate::Backup, StorageError> {
        crate::backup::inspect(path)
    }

    /// A receiver that changes whenever this replica applies more of the cluster's log.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.inner.applied.clone()
    }
}
