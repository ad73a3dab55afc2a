//! A unit's change set: what it read (checked again at commit) and what it writes, handed from
//! the unit of work (`unit.rs`) to the commit writer (`writer/`) as one value, so neither
//! needs to know the other. It also travels between hosts of a cluster (`replicate.rs`): whole,
//! from a host to the writer, and as effects only, in the log's records.

use serde::{Deserialize, Serialize};

use crate::dead::DeadWrite;
use crate::event::NewEvent;
use crate::index::IndexKey;

/// A key of some context's state: (context, key).
pub(crate) type StateKey = (String, String);

/// State values by key, `None` for absent (read) or deleted (written).
pub(crate) type Values = Vec<(StateKey, Option<Vec<u8>>)>;

/// An id sequence: (context, sequence name).
pub(crate) type SequenceKey = (String, String);

/// A prefix scan the unit based decisions on, checked again at commit: up to `limit` rows
/// (none: all) of keys starting with `prefix`, after `after` if given.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ScanRead {
    pub context: String,
    pub prefix: String,
    pub after: Option<String>,
    pub limit: Option<usize>,
    #[serde(with = "rows_text")]
    pub rows: Vec<(String, Vec<u8>)>,
}

/// A subscriber's cursor move, valid only if the cursor is still where the unit found it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CursorMove {
    pub subscriber: String,
    pub expected: u64,
    pub to: u64,
}

/// Everything the writer needs of one unit: its reads to validate, its effects to apply.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ChangeSet {
    /// Values read, as they were read.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "values_text")]
    pub reads: Vec<(StateKey, Option<Vec<u8>>)>,
    /// Prefix scans, with the rows they saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scans: Vec<ScanRead>,
    /// State written (`None` deletes).
    #[serde(default, with = "values_text")]
    pub writes: Vec<(StateKey, Option<Vec<u8>>)>,
    /// Index entries put (`true`) or deleted (`false`).
    #[serde(default, with = "index_text")]
    pub index: Vec<(IndexKey, bool)>,
    /// Events published, in order.
    #[serde(default)]
    pub events: Vec<NewEvent>,
    /// Cursor moves.
    #[serde(default)]
    pub cursors: Vec<CursorMove>,
    /// Dead-letter changes.
    #[serde(default)]
    pub dead: Vec<DeadWrite>,
    /// The highest id the unit took of each sequence.
    #[serde(default)]
    pub ids: Vec<(SequenceKey, u64)>,
    /// The id a forwarded unit carries, so that it commits at most once (`forwarded.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<String>,
    /// Not a unit but its host giving up the unit `unit_id` (`forwarded.rs`): the writer
    /// records the id as given up unless it committed, so that it never commits afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandon: bool,
    /// The position of the replicated log's last record applied on the unit's host when the
    /// unit began: it can only commit in a later record (`forwarded.rs`). 0 outside a cluster.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub begun_at: u64,
    /// The format a forwarded unit is written in (`replicate.rs`); 1 when it says none.
    #[serde(default = "format_1", skip_serializing_if = "is_format_1")]
    pub format: u32,
    /// The end of each event's stored JSON, encoded by the unit ([`NewEvent::stored_tail`]),
    /// in `events` order; empty when it was not (a change set read back from a log record), and
    /// then the writer serializes the whole event.
    #[serde(skip)]
    pub event_tails: Vec<Vec<u8>>,
    /// How many batches this host's writer had committed when the unit's snapshot was taken
    /// (`writer/valid.rs`); unknown for a change set read back from elsewhere.
    #[serde(skip)]
    pub snapshot_generation: Option<u64>,
}

impl ChangeSet {
    /// Whether this is a subscriber's step (it moves a cursor): no client waits for it.
    pub fn is_step(&self) -> bool {
        !self.cursors.is_empty()
    }
}

/// A change set's effects without its reads: what a log record carries, borrowed from the
/// writer's batch. Its JSON reads back as a [`ChangeSet`] with no reads.
#[derive(Serialize)]
pub(crate) struct Effects<'a> {
    #[serde(with = "values_text")]
    pub writes: &'a [(StateKey, Option<Vec<u8>>)],
    #[serde(with = "index_text")]
    pub index: &'a [(IndexKey, bool)],
    pub events: &'a [NewEvent],
    pub cursors: &'a [CursorMove],
    pub dead: &'a [DeadWrite],
    pub ids: &'a [(SequenceKey, u64)],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abandon: bool,
}

impl<'a> From<&'a ChangeSet> for Effects<'a> {
    fn from(c: &'a ChangeSet) -> Self {
        Effects {
            writes: &c.writes,
            index: &c.index,
            events: &c.events,
            cursors: &c.cursors,
            dead: &c.dead,
            ids: &c.ids,
            unit_id: c.unit_id.as_deref(),
            abandon: c.abandon,
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn format_1() -> u32 {
    1
}

fn is_format_1(v: &u32) -> bool {
    *v == 1
}

/// Bytes in JSON: a string when they are UTF-8 (state values are JSON text, so nearly always),
/// else an array of numbers.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Bytes<'a> {
    Text(std::borrow::Cow<'a, str>),
    Raw(Vec<u8>),
}

impl<'a> Bytes<'a> {
    fn of(b: &'a [u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => Bytes::Text(s.into()),
            Err(_) => Bytes::Raw(b.to_vec()),
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Bytes::Text(s) => s.into_owned().into_bytes(),
            Bytes::Raw(b) => b,
        }
    }
}

mod values_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Bytes, StateKey, Values};

    pub fn serialize<S: Serializer>(v: &[(StateKey, Option<Vec<u8>>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (k, v.as_deref().map(Bytes::of))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Values, D::Error> {
        let v: Vec<(StateKey, Option<Bytes<'_>>)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(k, v)| (k, v.map(Bytes::into_vec))).collect())
    }
}

mod rows_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Bytes;

    pub fn serialize<S: Serializer>(v: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(k, v)| (k, Bytes::of(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let v: Vec<(String, Bytes<'_>)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

mod index_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Bytes, IndexKey};

    pub fn serialize<S: Serializer>(v: &[(IndexKey, bool)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|((ctx, index, term, id), put)| ((ctx, index, Bytes::of(term), id), put)),
        )
    }

    #[allow(clippy::type_complexity)]
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(IndexKey, bool)>, D::Error> {
        let v: Vec<((String, String, Bytes<'_>, u64), bool)> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(|((ctx, index, term, id), put)| ((ctx, index, term.into_vec(), id), put))
            .collect())
    }
}
