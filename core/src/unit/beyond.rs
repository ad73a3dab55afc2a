//! What a unit reads beyond its own partition (`partitions.rs`), and the rule it keeps there:
//! it may read other partitions, never write them.
//!
//! - An advisory read of an entity of another partition ([`Unit::peek_at`]) reads that
//!   partition's latest committed state, not recorded (not checked at commit).
//! - A view of one other partition ([`Unit::enter`]), for a synchronous call into one of its
//!   entities: every read of the call comes from that partition's latest committed state, not
//!   recorded.
//! - A view of every partition ([`Unit::read_all`]), for a listing, a count or a search: reads
//!   are merged over all of them (a key is read from the first partition that holds it, scans
//!   and index pages merged in order, counts summed).
//!
//! Inside a view, and for an index entry of an entity of another partition, a write is not
//! made: the unit is marked with the first such attempt ([`Unit::violation`]) and refuses to
//! commit. Cross-partition effects go through events.
//!
//! [`Unit::peek_at`]: super::Unit::peek_at
//! [`Unit::enter`]: super::Unit::enter
//! [`Unit::read_all`]: super::Unit::read_all
//! [`Unit::violation`]: super::Unit::violation

use std::sync::Arc;

use crate::error::StorageError;
use crate::log::Log;
use crate::partitions;
use crate::store::{self, IndexPage, Snapshot};

/// Which partitions a unit reads now, other than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// One other partition.
    One(u32),
    /// Every partition.
    All,
}

/// A unit's reach beyond its partition.
pub(crate) struct Beyond {
    logs: Arc<[Log]>,
    /// The partition the unit commits in.
    pub(crate) own: u32,
    /// Other partitions' snapshots, each taken when first read.
    others: foldhash::HashMap<u32, Snapshot>,
    /// The views entered, innermost last.
    views: Vec<View>,
    /// The first write the unit attempted outside its partition.
    pub(crate) violation: Option<String>,
}

impl Beyond {
    pub(crate) fn new(logs: Arc<[Log]>, own: u32) -> Beyond {
        assert!((own as usize) < logs.len(), "partition {own} of {}", logs.len());
        Beyond {
            logs,
            own,
            others: Default::default(),
            views: Vec::new(),
            violation: None,
        }
    }

    /// How many partitions there are.
    pub(crate) fn count(&self) -> u32 {
        self.logs.len() as u32
    }

    /// The partition entity `id` lives in.
    pub(crate) fn of_id(&self, id: u64) -> u32 {
        partitions::of_id(id, self.count())
    }

    /// The innermost view, if the unit is in one.
    pub(crate) fn view(&self) -> Option<View> {
        self.views.last().copied()
    }

    pub(crate) fn enter(&mut self, view: View) {
        self.views.push(view);
    }

    pub(crate) fn leave(&mut self) {
        self.views.pop();
    }

    /// Marks the unit with `what` it attempted outside its partition (the first one counts).
    pub(crate) fn refuse(&mut self, what: impl FnOnce() -> String) {
        if self.violation.is_none() {
            let where_ = match self.view() {
                Some(View::All) => {
                    "reads every partition (a listing or a search) and writes none".to_string()
                }
                Some(View::One(p)) => format!(
                    "runs in partition {} and reads partition {p} for a call into one of its entities",
                    self.own
                ),
                None => format!("runs in partition {}", self.own),
            };
            self.violation = Some(format!(
                "a unit of work runs in one partition: this one {where_}, and tried to {}; \
                 changes to another partition go through events",
                what()
            ));
        }
    }

    /// The snapshot of partition `p`: `own` if it is this unit's, else taken on first use.
    fn snapshot<'a>(&'a mut self, own: &'a mut Snapshot, p: u32) -> Result<&'a mut Snapshot, StorageError> {
        if p == self.own {
            return Ok(own);
        }
        if !self.others.contains_key(&p) {
            let snapshot = self.logs[p as usize].snapshot()?;
            self.others.insert(p, snapshot);
        }
        Ok(self.others.get_mut(&p).expect("inserted above"))
    }

    /// `key` of `context` as partition `p` holds it now (not recorded).
    pub(crate) fn get_in(
        &mut self,
        own: &mut Snapshot,
        p: u32,
        context: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.snapshot(own, p)?.get(context, key)
    }

    /// `key` of `context` in the current view.
    pub(crate) fn get(
        &mut self,
        view: View,
        own: &mut Snapshot,
        context: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match view {
            View::One(p) => self.get_in(own, p, context, key),
            View::All => {
                for p in 0..self.count() {
                    if let Some(v) = self.get_in(own, p, context, key)? {
                        return Ok(Some(v));
                    }
                }
                Ok(None)
            }
        }
    }

    /// A prefix scan in the current view: over every partition, merged in key order (a key
    /// in several partitions counts once, from the first).
    pub(crate) fn scan(
        &mut self,
        view: View,
        own: &mut Snapshot,
        (context, prefix, after): (&str, &str, Option<&str>),
        limit: Option<usize>,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let scan = |s: &mut Snapshot| match limit {
            Some(l) => s.scan_from(context, prefix, after, l),
            None => s.scan(context, prefix),
        };
        match view {
            View::One(p) => scan(self.snapshot(own, p)?),
            View::All => {
                let mut merged = std::collections::BTreeMap::new();
                for p in (0..self.count()).rev() {
                    for (k, v) in scan(self.snapshot(own, p)?)? {
                        merged.insert(k, v);
                    }
                }
                let rows = merged.into_iter();
                Ok(match limit {
                    Some(l) => rows.take(l).collect(),
                    None => rows.collect(),
                })
            }
        }
    }

    /// An index's count in the current view: summed over every partition.
    pub(crate) fn index_count(
        &mut self,
        view: View,
        own: &mut Snapshot,
        (context, index, term): (&str, &str, Option<&[u8]>),
    ) -> Result<u64, StorageError> {
        match view {
            View::One(p) => self.snapshot(own, p)?.index_count(context, index, term),
            View::All => {
                let mut n = 0;
                for p in 0..self.count() {
                    n += self.snapshot(own, p)?.index_count(context, index, term)?;
                }
                Ok(n)
            }
        }
    }

    /// An index's page in the current view: merged over every partition.
    pub(crate) fn index_page(
        &mut self,
        view: View,
        own: &mut Snapshot,
        page: IndexPage<'_>,
    ) -> Result<Vec<u64>, StorageError> {
        match view {
            View::One(p) => self.snapshot(own, p)?.index_page(page),
            View::All => {
                for p in 0..self.count() {
                    self.snapshot(own, p)?;
                }
                let mut all: Vec<&Snapshot> = Vec::with_capacity(self.count() as usize);
                for p in 0..self.count() {
                    all.push(if p == self.own { &*own } else { &self.others[&p] });
                }
                store::index_page_all(&all, page)
            }
        }
    }
}
