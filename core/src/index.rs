//! Ordered secondary indexes with counts, so that a context lists, counts and pages through
//! millions of entities at the cost of one page, never of the whole collection.
//!
//! An index of a context holds entries (term, id): the term is whatever the context sorts or
//! searches by (encoded so that byte order is value order; the empty term for "by id"), the id
//! is the entity's. Entries live in [`IDX`], in (term, id) order. Beside them, [`IDX_COUNTS`]
//! keeps how many entries each term has and how many fall into each bucket of 256, 65,536 and
//! 16,777,216 consecutive ids of a term, plus the index's total. Those counts let a page at any
//! offset be found by walking at most a few hundred counts per level and then 256 entries,
//! whatever the index holds; the total is one read.
//!
//! Only the commit writer changes the tables: it applies each unit's index writes, adds up
//! how the counts move over the whole batch before writing them once, and keeps the counts it
//! committed last, so that it adds to them without reading them back.

use std::ops::RangeInclusive;

use redb::{ReadableTable, Table, TableDefinition};

use crate::error::StorageError;

/// Index entries: (context, index, term, id) → nothing.
pub(crate) const IDX: TableDefinition<'static, (&str, &str, &[u8], u64), ()> = TableDefinition::new("index");
/// Index counts: (context, index, level, term, bucket) → entries. Level 0 counts a term
/// (bucket 0), levels 1–3 count buckets of `id >> 8·level` within a term, and [`TOTAL`]
/// counts the whole index (empty term, bucket 0).
pub(crate) const IDX_COUNTS: TableDefinition<'static, (&str, &str, u8, &[u8], u64), u64> =
    TableDefinition::new("index_counts");

/// The level of an index's total.
const TOTAL: u8 = 255;
/// Bucket levels, finest last: level `l` groups the ids that share `id >> (8 * l)`.
const LEVELS: [u8; 3] = [3, 2, 1];

/// One index write of a unit: put (`true`) or delete (`false`) the entry.
pub(crate) type IndexKey = (String, String, Vec<u8>, u64);

/// Values per count of the indexes a batch touches: per index (a batch touches a few, so
/// they are found by a linear search), per term, per (level, bucket). Once a term is there, a
/// lookup costs a few hash probes and no allocation.
pub(crate) struct PerCount<T>(Vec<((String, String), TermValues<T>)>);

/// One index's values: term → (level, bucket) → value.
type TermValues<T> = foldhash::HashMap<Vec<u8>, foldhash::HashMap<(u8, u64), T>>;

impl<T> Default for PerCount<T> {
    fn default() -> Self {
        PerCount(Vec::new())
    }
}

impl<T> PerCount<T> {
    fn terms(&self, ctx: &str, index: &str) -> Option<&TermValues<T>> {
        self.0
            .iter()
            .find(|((c, i), _)| c == ctx && i == index)
            .map(|(_, terms)| terms)
    }

    fn terms_mut(&mut self, ctx: &str, index: &str) -> &mut TermValues<T> {
        let at = match self.0.iter().position(|((c, i), _)| c == ctx && i == index) {
            Some(at) => at,
            None => {
                self.0
                    .push(((ctx.to_string(), index.to_string()), TermValues::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

/// How a batch moves the counts, added up before they are written.
pub(crate) type CountDeltas = PerCount<i64>;

impl CountDeltas {
    fn add(&mut self, (ctx, index, term, id): &IndexKey, delta: i64) {
        let terms = self.terms_mut(ctx, index);
        let mut bump = |term: &[u8], level: u8, bucket: u64| {
            let buckets = match terms.get_mut(term) {
                Some(b) => b,
                None => terms.entry(term.to_vec()).or_default(),
            };
            *buckets.entry((level, bucket)).or_default() += delta;
        };
        bump(term, 0, 0);
        for level in LEVELS {
            bump(term, level, id >> (8 * u32::from(level)));
        }
        bump(&[], TOTAL, 0);
    }

    /// Writes the counts, dropping those that fall to zero. A count `known` holds is not read
    /// from the table. Returns the counts written, for [`KnownCounts::learn`] once the batch
    /// has committed.
    pub(crate) fn write(
        self,
        counts: &mut Table<'_, (&'static str, &'static str, u8, &'static [u8], u64), u64>,
        known: &KnownCounts,
    ) -> Result<PerCount<u64>, StorageError> {
        let mut written = PerCount(Vec::with_capacity(self.0.len()));
        for ((ctx, index), terms) in self.0 {
            let cached = known.0.terms(&ctx, &index);
            let mut values = TermValues::default();
            for (term, buckets) in terms {
                let cached = cached.and_then(|c| c.get(&term));
                let mut now_values = foldhash::HashMap::default();
                for ((level, bucket), delta) in buckets {
                    if delta == 0 {
                        continue;
                    }
                    let key = (ctx.as_str(), index.as_str(), level, term.as_slice(), bucket);
                    let now = match cached.and_then(|c| c.get(&(level, bucket))) {
                        Some(n) => *n,
                        None => counts.get(key)?.map(|v| v.value()).unwrap_or(0),
                    };
                    let next = (now as i64 + delta).max(0) as u64;
                    if next == 0 {
                        counts.remove(key)?;
                    } else {
                        counts.insert(key, next)?;
                    }
                    now_values.insert((level, bucket), next);
                }
                if !now_values.is_empty() {
                    values.insert(term, now_values);
                }
            }
            written.0.push(((ctx, index), values));
        }
        Ok(written)
    }
}

/// The counts as the writer last committed them (0 for a count the table does not hold), so
/// that a batch adds to them without reading them back. Only the writer changes the counts,
/// and it learns a batch's only after the batch committed: what this holds is what the table
/// holds. Bounded: forgotten whole when it passes [`KnownCounts::LIMIT`] counts.
#[derive(Default)]
pub(crate) struct KnownCounts(PerCount<u64>, usize);

impl KnownCounts {
    /// How many counts are kept at most: a few MiB.
    pub(crate) const LIMIT: usize = 1 << 16;

    /// Takes in the counts a committed batch wrote.
    pub(crate) fn learn(&mut self, written: PerCount<u64>) {
        for ((ctx, index), terms) in written.0 {
            let known = self.0.terms_mut(&ctx, &index);
            for (term, buckets) in terms {
                let known = known.entry(term).or_default();
                for (at, n) in buckets {
                    if known.insert(at, n).is_none() {
                        self.1 += 1;
                    }
                }
            }
        }
        if self.1 > Self::LIMIT {
            self.forget();
        }
    }

    /// Forgets every count (they are read from the table again).
    pub(crate) fn forget(&mut self) {
        *self = KnownCounts::default();
    }

    /// How many counts are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.1
    }
}

/// Applies one index write, counting it in `deltas` if it changed anything (putting an entry
/// that is there, or deleting one that is not, changes nothing).
pub(crate) fn apply(
    entries: &mut Table<'_, (&'static str, &'static str, &'static [u8], u64), ()>,
    deltas: &mut CountDeltas,
    key: &IndexKey,
    put: bool,
) -> Result<(), StorageError> {
    let (ctx, index, term, id) = key;
    let k = (ctx.as_str(), index.as_str(), term.as_slice(), *id);
    if put {
        if entries.insert(k, ())?.is_none() {
            deltas.add(key, 1);
        }
    } else if entries.remove(k)?.is_some() {
        deltas.add(key, -1);
    }
    Ok(())
}

/// How many entries `index` of `context` holds, with `term` only if given.
pub(crate) fn count(
    counts: &impl ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
    context: &str,
    index: &str,
    term: Option<&[u8]>,
) -> Result<u64, StorageError> {
    let key = match term {
        Some(t) => (context, index, 0, t, 0),
        None => (context, index, TOTAL, &[][..], 0),
    };
    Ok(counts.get(key)?.map(|v| v.value()).unwrap_or(0))
}

/// A page of an index ([`crate::Snapshot::index_page`]): the ids of up to `limit` entries
/// of `index` (with `term` only, if given), in (term, id) order or the reverse, after the
/// first `offset`.
#[derive(Debug, Clone, Copy)]
pub struct IndexPage<'a> {
    /// The context whose index it is.
    pub context: &'a str,
    /// The index.
    pub index: &'a str,
    /// Only entries with this term, if given.
    pub term: Option<&'a [u8]>,
    /// Entries skipped first.
    pub offset: u64,
    /// Ids returned at most.
    pub limit: usize,
    /// From the last entry backwards.
    pub descending: bool,
}

/// The bucket that holds entry number `offset`, going through `(bucket, entries)` in the
/// page's order; `offset` becomes the entry's place within that bucket.
fn seek(
    offset: &mut u64,
    buckets: impl Iterator<Item = Result<(u64, u64), StorageError>>,
) -> Result<Option<u64>, StorageError> {
    for row in buckets {
        let (bucket, n) = row?;
        if *offset < n {
            return Ok(Some(bucket));
        }
        *offset -= n;
    }
    Ok(None)
}

/// The ids of the page `q` asks for.
pub(crate) fn page(
    entries: &impl ReadableTable<(&'static str, &'static str, &'static [u8], u64), ()>,
    counts: &impl ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
    q: &IndexPage<'_>,
) -> Result<Vec<u64>, StorageError> {
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    // Which term the page starts in, and how far into it.
    let (term, offset) = match q.term {
        Some(t) => (t.to_vec(), q.offset),
        None => match term_at(counts, q)? {
            Some(found) => found,
            None => return Ok(Vec::new()),
        },
    };
    let Some(start) = id_at(entries, counts, q, &term, offset)? else {
        return Ok(Vec::new());
    };
    // From there, entries in order: within the term, or on through the following terms.
    let (ctx, index) = (q.context, q.index);
    let mut out = Vec::with_capacity(q.limit);
    let same = |c: &str, i: &str, t: &[u8]| c == ctx && i == index && (q.term.is_none() || t == term);
    if q.descending {
        let from = (ctx, index, &[][..], 0);
        for row in entries.range(from..=(ctx, index, term.as_slice(), start))?.rev() {
            let (key, _) = row?;
            let (c, i, t, id) = key.value();
            if !same(c, i, t) || out.len() == q.limit {
                break;
            }
            out.push(id);
        }
    } else {
        for row in entries.range((ctx, index, term.as_slice(), start)..)? {
            let (key, _) = row?;
            let (c, i, t, id) = key.value();
            if !same(c, i, t) || out.len() == q.limit {
                break;
            }
            out.push(id);
        }
    }
    Ok(out)
}

/// The term holding entry number `q.offset` of the whole index (in the page's direction), and
/// the offset within it; `None` past the end.
fn term_at(
    counts: &impl ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
    q: &IndexPage<'_>,
) -> Result<Option<(Vec<u8>, u64)>, StorageError> {
    let (ctx, index) = (q.context, q.index);
    let range = counts.range((ctx, index, 0, &[][..], 0)..(ctx, index, 1, &[][..], 0))?;
    let mut left = q.offset;
    let mut step =
        |row: Result<(redb::AccessGuard<'_, _>, redb::AccessGuard<'_, u64>), redb::StorageError>| {
            let (k, v) = row?;
            let (_, _, _, term, _): (&str, &str, u8, &[u8], u64) = k.value();
            let n = v.value();
            if left < n {
                return Ok::<_, StorageError>(Some((term.to_vec(), left)));
            }
            left -= n;
            Ok(None)
        };
    if q.descending {
        for row in range.rev() {
            if let Some(found) = step(row)? {
                return Ok(Some(found));
            }
        }
    } else {
        for row in range {
            if let Some(found) = step(row)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// The id of entry number `offset` of `term` (counted in the page's direction): found by
/// walking the bucket counts down the levels, then at most 256 entries.
fn id_at(
    entries: &impl ReadableTable<(&'static str, &'static str, &'static [u8], u64), ()>,
    counts: &impl ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
    q: &IndexPage<'_>,
    term: &[u8],
    mut offset: u64,
) -> Result<Option<u64>, StorageError> {
    let (ctx, index) = (q.context, q.index);
    let mut ids: RangeInclusive<u64> = 0..=u64::MAX;
    for level in LEVELS {
        let shift = 8 * u32::from(level);
        let buckets = (*ids.start() >> shift)..=(*ids.end() >> shift);
        let range = counts
            .range((ctx, index, level, term, *buckets.start())..=(ctx, index, level, term, *buckets.end()))?;
        let rows = range.map(|row| {
            let (k, v) = row?;
            Ok((k.value().4, v.value()))
        });
        let found = match q.descending {
            true => seek(&mut offset, rows.rev())?,
            false => seek(&mut offset, rows)?,
        };
        let Some(bucket) = found else {
            return Ok(None);
        };
        let low = bucket << shift;
        let high = low | ((1u64 << shift) - 1);
        ids = low..=high;
    }
    let bounds = (ctx, index, term, *ids.start())..=(ctx, index, term, *ids.end());
    let mut rows = entries.range(bounds)?;
    let row = if q.descending {
        rows.rev().nth(offset as usize)
    } else {
        rows.nth(offset as usize)
    };
    match row {
        Some(row) => Ok(Some(row?.0.value().3)),
        None => Ok(None),
    }
}

/// An index's tables in one partition, for reads across partitions.
pub(crate) type Parts<'a, E, C> = &'a [(E, C)];

/// The ids of the page `q` asks for, of the index as all `parts` (one per partition) hold it
/// together: merged in (term, id) order (ids are unique across partitions, so the order is
/// total), the offset counted over all of them. The page is found by walking the counts of
/// every part at once (buckets cover the same ids in every part, so their counts add up), then
/// at most 256 ids of each part: the cost of one page per part, whatever the index holds.
pub(crate) fn page_merged<E, C>(parts: Parts<'_, E, C>, q: &IndexPage<'_>) -> Result<Vec<u64>, StorageError>
where
    E: ReadableTable<(&'static str, &'static str, &'static [u8], u64), ()>,
    C: ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
{
    if let [(entries, counts)] = parts {
        return page(entries, counts, q);
    }
    if q.limit == 0 || parts.is_empty() {
        return Ok(Vec::new());
    }
    let (term, offset) = match q.term {
        Some(t) => (t.to_vec(), q.offset),
        None => match term_at_merged(parts, q)? {
            Some(found) => found,
            None => return Ok(Vec::new()),
        },
    };
    let Some(start) = id_at_merged(parts, q, &term, offset)? else {
        return Ok(Vec::new());
    };
    merge_from(parts, q, &term, start)
}

/// [`term_at`] over all parts: their term counts walked together in order, equal terms added.
fn term_at_merged<E, C>(
    parts: Parts<'_, E, C>,
    q: &IndexPage<'_>,
) -> Result<Option<(Vec<u8>, u64)>, StorageError>
where
    C: ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
{
    type Terms<'t> = std::iter::Peekable<Box<dyn Iterator<Item = Result<(Vec<u8>, u64), StorageError>> + 't>>;
    let (ctx, index) = (q.context, q.index);
    let mut rows: Vec<Terms<'_>> = Vec::with_capacity(parts.len());
    for (_, counts) in parts {
        let range = counts.range((ctx, index, 0, &[][..], 0)..(ctx, index, 1, &[][..], 0))?;
        let terms = range.map(|row| {
            let (k, v) = row?;
            Ok((k.value().3.to_vec(), v.value()))
        });
        let it: Box<dyn Iterator<Item = _>> = if q.descending {
            Box::new(terms.rev())
        } else {
            Box::new(terms)
        };
        rows.push(it.peekable());
    }
    let mut left = q.offset;
    loop {
        // The next term in the page's direction among every part's next term.
        let mut next: Option<Vec<u8>> = None;
        for it in rows.iter_mut() {
            if let Some(Err(_)) = it.peek() {
                return Err(it.next().expect("peeked").expect_err("an error"));
            }
            if let Some(Ok((t, _))) = it.peek() {
                let better = next
                    .as_ref()
                    .is_none_or(|n| if q.descending { t > n } else { t < n });
                if better {
                    next = Some(t.clone());
                }
            }
        }
        let Some(term) = next else { return Ok(None) };
        let mut n = 0;
        for it in rows.iter_mut() {
            if matches!(it.peek(), Some(Ok((t, _))) if *t == term) {
                n += it.next().expect("peeked")?.1;
            }
        }
        if left < n {
            return Ok(Some((term, left)));
        }
        left -= n;
    }
}

/// [`id_at`] over all parts: the bucket counts of every part added level by level, then the
/// ids of the last bucket (at most 256 per part) merged. Returns the id of the entry.
fn id_at_merged<E, C>(
    parts: Parts<'_, E, C>,
    q: &IndexPage<'_>,
    term: &[u8],
    mut offset: u64,
) -> Result<Option<u64>, StorageError>
where
    E: ReadableTable<(&'static str, &'static str, &'static [u8], u64), ()>,
    C: ReadableTable<(&'static str, &'static str, u8, &'static [u8], u64), u64>,
{
    let (ctx, index) = (q.context, q.index);
    let mut ids: RangeInclusive<u64> = 0..=u64::MAX;
    for level in LEVELS {
        let shift = 8 * u32::from(level);
        let buckets = (*ids.start() >> shift)..=(*ids.end() >> shift);
        // bucket → entries, over every part.
        let mut sums: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
        for (_, counts) in parts {
            let range = counts.range(
                (ctx, index, level, term, *buckets.start())..=(ctx, index, level, term, *buckets.end()),
            )?;
            for row in range {
                let (k, v) = row?;
                *sums.entry(k.value().4).or_default() += v.value();
            }
        }
        let sums = sums.iter().map(|(bucket, n)| Ok((*bucket, *n)));
        let found = match q.descending {
            true => seek(&mut offset, sums.rev())?,
            false => seek(&mut offset, sums)?,
        };
        let Some(bucket) = found else {
            return Ok(None);
        };
        let low = bucket << shift;
        ids = low..=(low | ((1u64 << shift) - 1));
    }
    let mut all = Vec::new();
    for (entries, _) in parts {
        for row in entries.range((ctx, index, term, *ids.start())..=(ctx, index, term, *ids.end()))? {
            all.push(row?.0.value().3);
        }
    }
    all.sort_unstable();
    if q.descending {
        all.reverse();
    }
    Ok(all.get(offset as usize).copied())
}

/// Up to `q.limit` ids from entry (`term`, `start`) on, in the page's direction, merged over
/// every part.
fn merge_from<E, C>(
    parts: Parts<'_, E, C>,
    q: &IndexPage<'_>,
    term: &[u8],
    start: u64,
) -> Result<Vec<u64>, StorageError>
where
    E: ReadableTable<(&'static str, &'static str, &'static [u8], u64), ()>,
{
    let (ctx, index) = (q.context, q.index);
    let within = |c: &str, i: &str, t: &[u8]| c == ctx && i == index && q.term.is_none_or(|fixed| t == fixed);
    let mut heads = Vec::with_capacity(parts.len());
    for (entries, _) in parts {
        let it: Box<dyn Iterator<Item = _>> = if q.descending {
            Box::new(
                entries
                    .range((ctx, index, &[][..], 0)..=(ctx, index, term, start))?
                    .rev(),
            )
        } else {
            Box::new(entries.range((ctx, index, term, start)..)?)
        };
        // Each part's entries within the index (and the term), as (term, id).
        let mut it = it.map_while(move |row| match row {
            Ok((k, _)) => {
                let (c, i, t, id) = k.value();
                within(c, i, t).then(|| Ok((t.to_vec(), id)))
            }
            Err(e) => Some(Err(StorageError::from(e))),
        });
        heads.push((it.next().transpose()?, it));
    }
    let mut out = Vec::with_capacity(q.limit);
    while out.len() < q.limit {
        let mut best: Option<usize> = None;
        for (i, (head, _)) in heads.iter().enumerate() {
            let Some(h) = head else { continue };
            let better = best.is_none_or(|b| {
                let current = heads[b].0.as_ref().expect("a head");
                if q.descending { h > current } else { h < current }
            });
            if better {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        let (head, it) = &mut heads[b];
        let (_, id) = head.take().expect("the best head");
        out.push(id);
        *head = it.next().transpose()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(counts: impl IntoIterator<Item = (u64, u64)>) -> PerCount<u64> {
        let mut w = PerCount::default();
        let buckets = w.terms_mut("c", "i").entry(b"t".to_vec()).or_default();
        for (bucket, n) in counts {
            buckets.insert((1, bucket), n);
        }
        w
    }

    #[test]
    fn known_counts_are_updated_in_place_and_forgotten_past_the_limit() {
        let mut known = KnownCounts::default();
        known.learn(written([(0, 3), (1, 4)]));
        known.learn(written([(1, 5)]));
        assert_eq!(known.len(), 2);
        let buckets = known.0.terms("c", "i").and_then(|t| t.get(&b"t"[..])).unwrap();
        assert_eq!((buckets[&(1, 0)], buckets[&(1, 1)]), (3, 5));
        known.learn(written((0..=KnownCounts::LIMIT as u64).map(|b| (b, 1))));
        assert_eq!(known.len(), 0);
        assert!(known.0.terms("c", "i").is_none());
    }
}
