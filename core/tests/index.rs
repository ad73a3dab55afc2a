//! Ordered indexes with counts, against a model: whatever entries are put and deleted across
//! many commits, every count and every page (any offset, either direction, one term or all)
//! is what a sorted set of the live entries says.

use std::collections::BTreeSet;

use carshare_core::{IndexPage, Log};

/// xorshift64*: deterministic, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn page(log: &Log, term: Option<&[u8]>, offset: u64, limit: usize, descending: bool) -> Vec<u64> {
    log.snapshot()
        .unwrap()
        .index_page(IndexPage {
            context: "c",
            index: "things/status",
            term,
            offset,
            limit,
            descending,
        })
        .unwrap()
}

fn expected(
    model: &BTreeSet<(Vec<u8>, u64)>,
    term: Option<&[u8]>,
    offset: u64,
    limit: usize,
    descending: bool,
) -> Vec<u64> {
    let matching: Vec<u64> = model
        .iter()
        .filter(|(t, _)| term.is_none_or(|want| t.as_slice() == want))
        .map(|(_, id)| *id)
        .collect();
    let ordered: Vec<u64> = if descending {
        matching.into_iter().rev().collect()
    } else {
        matching
    };
    ordered.into_iter().skip(offset as usize).take(limit).collect()
}

#[test]
fn counts_and_pages_match_a_sorted_set_through_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("db.redb")).unwrap();
    let terms: [&[u8]; 4] = [b"", b"a", b"ab", b"b"];
    let mut model: BTreeSet<(Vec<u8>, u64)> = BTreeSet::new();
    let mut rng = Rng(0x1234_5678);
    // Ids cluster in a few regions, across bucket boundaries of every level.
    let regions = [0u64, 250, 65_530, 1 << 24, (1 << 32) + 3];
    for round in 0..40 {
        let mut u = log.begin().unwrap();
        for _ in 0..200 {
            let term = terms[rng.below(terms.len() as u64) as usize];
            let id = regions[rng.below(regions.len() as u64) as usize] + rng.below(600);
            if rng.below(4) == 0 {
                u.index_delete("c", "things/status", term, id);
                model.remove(&(term.to_vec(), id));
            } else {
                u.index_put("c", "things/status", term, id);
                model.insert((term.to_vec(), id));
            }
        }
        // Another context's and another index's entries never count.
        u.index_put("d", "things/status", b"a", round);
        u.index_put("c", "things/other", b"a", round);
        log.commit_blocking(u).unwrap();

        let snap = log.snapshot().unwrap();
        assert_eq!(
            snap.index_count("c", "things/status", None).unwrap(),
            model.len() as u64
        );
        for term in terms {
            let n = model.iter().filter(|(t, _)| t.as_slice() == term).count() as u64;
            assert_eq!(snap.index_count("c", "things/status", Some(term)).unwrap(), n);
        }
        let total = model.len() as u64;
        for _ in 0..20 {
            let offset = rng.below(total + 5);
            let limit = 1 + rng.below(30) as usize;
            let descending = rng.below(2) == 0;
            let term = (rng.below(3) > 0).then(|| terms[rng.below(terms.len() as u64) as usize]);
            assert_eq!(
                page(&log, term, offset, limit, descending),
                expected(&model, term, offset, limit, descending),
                "round {round}: term {term:?}, offset {offset}, limit {limit}, descending {descending}"
            );
        }
    }
    // The last page, exactly.
    let total = model.len() as u64;
    assert_eq!(
        page(&log, None, total - 3, 10, false),
        expected(&model, None, total - 3, 10, false)
    );
    assert_eq!(page(&log, None, total, 10, true), Vec::<u64>::new());
}

#[test]
fn index_writes_roll_back_to_a_savepoint_and_die_with_an_aborted_unit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("db.redb")).unwrap();
    let mut u = log.begin().unwrap();
    u.index_put("c", "i", b"", 1);
    let sp = u.savepoint();
    u.index_put("c", "i", b"", 2);
    u.index_delete("c", "i", b"", 1);
    u.rollback_to(sp);
    log.commit_blocking(u).unwrap();
    assert_eq!(log.snapshot().unwrap().index_count("c", "i", None).unwrap(), 1);
    let mut u = log.begin().unwrap();
    u.index_put("c", "i", b"", 3);
    drop(u);
    assert_eq!(log.snapshot().unwrap().index_count("c", "i", None).unwrap(), 1);
}
