//! A [`Log`] as one replica of a cluster's log: units sent to the writer when this host is not
//! it (and waited for until this replica shows them, so a client reads its own writes), units
//! other hosts sent taken when it is, and the replicated log's records applied in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::{Log, outcome};
use crate::changes::ChangeSet;
use crate::error::{CommitError, StorageError};
use crate::forwarded;
use crate::replicate::{ForwardError, Replicator, Reply};
use crate::writer::{Apply, Committed, Message};

/// How long a unit waits for a cluster's writer to take it, and a host for its replica to
/// reach the writer's record: a lease running out (5 s) after elections of the lease's and
/// the log's own leaders (up to about 9 s each, at once when one server leading both dies).
const PATIENCE: Duration = Duration::from_secs(20);

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
    /// takes it, then waits until this replica has applied the writer's record. The unit carries an id (`forwarded.rs`), so
    /// sending it again after no answer came, to the same writer or a new one, commits it at
    /// most once.
    pub(super) async fn forward(
        &self,
        replicator: Arc<dyn Replicator>,
        mut changes: ChangeSet,
    ) -> Result<Committed, CommitError> {
        changes.unit_id = Some(forwarded::new_id());
        let unit = serde_json::to_vec(&changes).map_err(|e| CommitError::Storage(e.into()))?;
        let deadline = Instant::now() + PATIENCE;
        // Why an earlier attempt may have committed, if one may have.
        let mut in_doubt: Option<String> = None;
        loop {
            let reply = if replicator.is_writer() {
                // This host has become the writer meanwhile: it commits the unit itself.
                let local: ChangeSet =
                    serde_json::from_slice(&unit).map_err(|e| CommitError::Storage(e.into()))?;
                match outcome(self.send(local)?.await) {
                    Ok(c) => return Ok(c),
                    // Checked against the whole log, its id first: it never committed.
                    Err(CommitError::Conflict) => return Err(CommitError::Conflict),
                    Err(CommitError::Deposed) => Reply::NotWriter,
                    Err(CommitError::Unknown(m)) => Reply::Unknown(m),
                    Err(e) => return Err(give_up(in_doubt, e)),
                }
            } else {
                match replicator.forward(unit.clone()).await {
                    Ok(reply) => serde_json::from_slice(&reply)
                        .unwrap_or_else(|e| Reply::Unknown(format!("the writer's reply is unreadable: {e}"))),
                    Err(ForwardError::NoWriter) => Reply::NotWriter,
                    Err(ForwardError::Unknown(m)) => Reply::Unknown(m),
                }
            };
            match reply {
                Reply::Committed { seqs, position } => {
                    // Committed either way; if this replica is slow to show it, so be it.
                    self.wait_applied(position).await;
                    return Ok(Committed { seqs, position });
                }
                Reply::Conflict { position } => {
                    // The writer checked the unit's id first: it had not committed before.
                    // A rerun on a replica that has not caught up would only conflict again.
                    return if self.wait_applied(position).await {
                        Err(CommitError::Conflict)
                    } else {
                        Err(CommitError::Unavailable(format!(
                            "this host has not applied the cluster's log up to position \
                             {position} within {PATIENCE:?}"
                        )))
                    };
                }
                Reply::NotWriter | Reply::Unknown(_) if Instant::now() < deadline => {
                    if let Reply::Unknown(m) = reply {
                        in_doubt = Some(m);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Reply::NotWriter => {
                    return Err(give_up(
                        in_doubt,
                        CommitError::Unavailable(format!("no writer took the unit within {PATIENCE:?}")),
                    ));
                }
                Reply::Unknown(m) => return Err(CommitError::Unknown(m)),
                Reply::Failed(m) => return Err(give_up(in_doubt, CommitError::Unavailable(m))),
            }
        }
    }

    /// Waits (a while at most) until this replica has applied the record at `position`;
    /// returns whether it has.
    async fn wait_applied(&self, position: u64) -> bool {
        let mut applied = self.inner.applied.clone();
        matches!(
            tokio::time::timeout(PATIENCE, applied.wait_for(|a| *a >= position)).await,
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
            Err(CommitError::Unknown(m)) => Reply::Unknown(m),
            Err(e) => Reply::Failed(e.to_string()),
        }
    }

    /// Applies records of the cluster's replicated log, in log order, with their positions;
    /// those applied before are skipped. Returns the position of the last record applied.
    pub async fn apply(&self, records: Vec<(u64, Vec<u8>)>) -> Result<u64, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.send_message(Message::Apply(Apply { records, reply }))
            .map_err(StorageError::new)?;
        rx.await
            .unwrap_or_else(|_| Err(StorageError::new("the log is closed")))
    }

    /// The position of the last record of the cluster's log applied here (0 outside a
    /// cluster).
    pub fn applied(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// A receiver that changes whenever this replica applies more of the cluster's log.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.inner.applied.clone()
    }
}

/// The error a forwarded unit ends with: `error`, unless an earlier attempt may have committed
/// it, which the client must then be told.
fn give_up(in_doubt: Option<String>, error: CommitError) -> CommitError {
    match in_doubt {
        Some(m) => CommitError::Unknown(m),
        None => error,
    }
}
