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

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::changes::{ChangeSet, Effects};

/// A replicated log of commit records, and the way to the host that writes it.
pub trait Replicator: Send + Sync + 'static {
    /// Whether this host is the writer now (it holds the writer's lease and has applied every
    /// record). Only the writer commits; any other host forwards its units.
    fn is_writer(&self) -> bool;

    /// Appends `record` to the log right after position `after`, and returns its position.
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
    /// It reached the writer but no reply came back: it may have committed.
    Unknown(String),
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
    /// Nothing was written, for this reason.
    Failed(String),
    /// It may have committed.
    Unknown(String),
}

/// One commit batch as the log carries it: the effects of the units that passed validation,
/// in commit order, whose events are numbered from `first_seq` and stamped with `millis`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordOut<'a> {
    pub log_id: u64,
    pub millis: u64,
    pub first_seq: u64,
    pub units: Vec<Effects<'a>>,
}

/// A record read back: its units are change sets without reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    pub log_id: u64,
    pub millis: u64,
    pub first_seq: u64,
    pub units: Vec<ChangeSet>,
}
