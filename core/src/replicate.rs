//! The seam where a replicated log joins the commit path, so that several hosts serve one
//! system (the host's `cluster` module implements it on NATS JetStream).
//!
//! One host at a time is the writer. It validates and applies units exactly as a single process
//! does, then appends the batch's effects as one [`Replicator::append`] record right after the
//! last record it applied (so a deposed writer can append nothing: it is fenced), and commits
//! locally, with the record's position, only once the append is durable. Every host applies
//! the records in log order ([`crate::Log::apply`]), each exactly once: the position of the
//! last one applied is stored in the same transaction. A host that is not the writer runs its
//! units on its own replica and [`Replicator::forward`]s their change sets to the writer,
//! then waits until it has applied the writer's record before it answers (read-your-writes on
//! the host that answered). Records and forwarded units are JSON, encoded and decoded here
//! only: a replicator moves bytes.
//!
//! **Formats.** Every record and every forwarded unit says which format it is written in
//! ([`FORMAT`]). A host that meets a record of a format newer than it reads stops applying
//! and says so ([`ApplyError::Format`]), rather than apply part of what the record means.
//!
//! **Continuity.** Every record carries a random id and the id of the record before it. A
//! replica keeps the position and id of the last record it applied, and applies a message of
//! the log only if it is a record of this log that follows that one; a message that is not
//! (junk published on the log's subject, a stale copy of an old record) is refused: skipped on
//! every replica alike, and reported ([`Applied::refused`]). A record of this log that follows
//! but cannot be read, or whose events do not continue this replica's numbering, stops the
//! replica ([`ApplyError`]): such a record is never skipped.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::changes::ChangeSet;
use crate::error::StorageError;

/// The format of the records and forwarded units this version writes. 1 was the format
/// before formats were numbered (no record ids); 2 adds the record's id and the id of the
/// record before it, and units given up by their host (`abandon`).
pub const FORMAT: u32 = 2;

/// A replicated log of commit records, and the way to the host that writes it.
pub trait Replicator: Send + Sync + 'static {
    /// Whether this host is the writer now (it holds the writer's lease and has applied every
    /// record). Only the writer commits; any other host forwards its units.
    fn is_writer(&self) -> bool;

    /// Whether this host may commit units: it has applied the log as it stood when it
    /// joined, and found its replica continuous with the log. Until then a unit could run on
    /// state the log has long moved past (a restored data directory), so it is refused.
    fn caught_up(&self) -> bool {
        true
    }

    /// The largest record the log takes, in bytes: a batch is cut so that its record fits,
    /// and a unit whose effects alone do not fit is refused ([`crate::CommitError::TooLarge`]).
    fn max_record_bytes(&self) -> usize {
        usize::MAX
    }

    /// Appends `record` right after position `after`, and returns its position.
    /// Called on the writer's thread, which waits: the batch commits locally only once the
    /// record is durable in the log.
    fn append(&self, record: &[u8], after: u64) -> Result<u64, AppendError>;

    /// Sends a unit's encoded change set to the writer and resolves with the writer's encoded
    /// reply (made by [`crate::Log::commit_forwarded`] there).
    fn forward(&self, unit: Vec<u8>) -> ForwardFuture;
}

/// What [`Replicator::forward`] returns.
pub type ForwardFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, ForwardError>> + Send>>;

/// Why an append failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The log has moved past `after`: another writer appended. Nothing was appended; this
    /// host is no longer the writer until it has applied what the log holds.
    Fenced,
    /// The log refused the record. Nothing was appended.
    Refused(String),
    /// The record may or may not have been appended (no answer, say across an election of the
    /// log's own leader). If it was, the host applies it like any other record.
    Unknown(String),
}

/// Why a forwarded unit got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// No writer took it (none is known now, or it did not answer before the unit reached
    /// it): nothing of it was written, and sending it again is safe.
    NoWriter,
    /// The unit, `bytes` long, is larger than the `max` bytes the log's servers carry in one
    /// message: it was not sent.
    TooLarge {
        /// The unit's size.
        bytes: usize,
        /// The largest message the servers carry.
        max: usize,
    },
    /// It reached the writer but no reply came back: it may have committed.
    Unknown(String),
}

/// What [`crate::Log::apply`] did with a group of the log's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The position of the last message taken (applied or refused).
    pub position: u64,
    /// The messages refused, with why: they are not records of this log that follow the last
    /// one applied, so every replica skips them alike.
    pub refused: Vec<(u64, String)>,
}

/// Why a replica stopped applying the log. Nothing of the group from the failing record on
/// was applied; applying again starts at that record.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The record at `position` is in a format this version does not read: this host must be
    /// upgraded before it can go on.
    #[error(
        "the record at position {position} is in format {format}, and this carshare reads \
         formats up to {FORMAT}: upgrade this host to apply it"
    )]
    Format {
        /// Where the record is.
        position: u64,
        /// Its format.
        format: u32,
    },
    /// The record at `position` follows this replica's last record but cannot be applied
    /// (it is unreadable, or its events do not continue this replica's numbering): the replica
    /// and the log disagree, and neither is trusted over the other.
    #[error("the record at position {position} cannot be applied here: {reason}")]
    Diverged {
        /// Where the record is.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The storage engine failed; nothing of the group was applied.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The writer's reply to a forwarded unit.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Reply {
    /// Committed in the record at `position`, its events numbered `seqs`.
    Committed { seqs: Range<u64>, position: u64 },
    /// Its reads were stale: once the sender has applied up to `position`, a rerun sees
    /// what the writer saw.
    Conflict { position: u64 },
    /// The receiver is not the writer (any more): nothing was written.
    NotWriter,
    /// Its host gave it up (an `abandon` for its id reached the writer first): nothing of it
    /// was written, and nothing of it ever will be.
    Abandoned,
    /// Nothing was written, for this reason.
    Failed(String),
    /// It is too large for the log: nothing was written.
    TooLarge { bytes: usize, max: usize },
    /// It may have committed.
    Unknown(String),
}

/// The first fields of a record, read before the rest: enough to tell whether a message is a
/// record of this log that follows the last one applied, and whether its format is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Envelope {
    /// Format 1 records carried no format.
    #[serde(default = "format_1")]
    pub format: u32,
    pub log_id: u64,
    /// Format 1 records carried no ids: they read as 0.
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub prev: u64,
}

fn format_1() -> u32 {
    1
}

/// A record read back: its units are change sets without reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub millis: u64,
    pub first_seq: u64,
    pub units: Vec<ChangeSet>,
}

/// The header of a record as the writer writes it, before its units (each already encoded).
pub(crate) struct RecordHeader {
    pub log_id: u64,
    pub id: u64,
    pub prev: u64,
    pub millis: u64,
    pub first_seq: u64,
}

impl RecordHeader {
    /// The record: this header and `units`, each a unit's effects as JSON.
    pub(crate) fn encode<'a>(&self, units: impl Iterator<Item = &'a [u8]>, size: usize) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(size + RECORD_OVERHEAD);
        let _ = write!(
            out,
            "{{\"format\":{FORMAT},\"logId\":{},\"id\":{},\"prev\":{},\"millis\":{},\"firstSeq\":{},\"units\":[",
            self.log_id, self.id, self.prev, self.millis, self.first_seq
        );
        for (i, unit) in units.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(unit);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// Bytes a record takes beyond its units: the header (six numbers of at most 20 digits and
/// their names), the brackets, and a comma per unit (counted with the unit).
pub(crate) const RECORD_OVERHEAD: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_record_reads_back_with_its_envelope() {
        let header = RecordHeader {
            log_id: u64::MAX,
            id: u64::MAX - 1,
            prev: u64::MAX - 2,
            millis: u64::MAX - 3,
            first_seq: u64::MAX - 4,
        };
        let units: [&[u8]; 2] = [br#"{"writes":[]}"#, br#"{"events":[]}"#];
        let bytes = header.encode(units.into_iter(), 26);
        assert!(bytes.len() <= 26 + 1 + RECORD_OVERHEAD, "{}", bytes.len());
        let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (envelope.format, envelope.log_id, envelope.id, envelope.prev),
            (FORMAT, u64::MAX, u64::MAX - 1, u64::MAX - 2)
        );
        let record: Record = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (record.millis, record.first_seq, record.units.len()),
            (u64::MAX - 3, u64::MAX - 4, 2)
        );
    }

    #[test]
    fn a_record_of_the_first_format_reads_as_format_1_without_ids() {
        let envelope: Envelope =
            serde_json::from_slice(br#"{"logId":7,"millis":1,"firstSeq":1,"units":[]}"#).unwrap();
        assert_eq!(
            (envelope.format, envelope.log_id, envelope.id, envelope.prev),
            (1, 7, 0, 0)
        );
    }
}
