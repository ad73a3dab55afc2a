//! The unit of work against a model: random interleavings of concurrent units, committed in
//! overlapping batches, must be explainable as running one at a time in log order.
//!
//! Every unit publishes one event saying what it read and what it wrote. Replaying the log in
//! sequence order against a plain map must then reproduce every committed unit's reads exactly
//! (no unit saw anything but the state left by the units before it), and end in the state the
//! database holds. Conflicting units must leave no trace at all.

use std::collections::BTreeMap;

use carshare_core::{CommitError, Log, Unit};
use serde_json::json;

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

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

struct Open {
    unit: Unit,
    reads: BTreeMap<String, Option<u64>>,
    writes: BTreeMap<String, u64>,
}

fn decode(v: Option<Vec<u8>>) -> Option<u64> {
    v.map(|b| String::from_utf8(b).unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_units_are_serializable_in_log_order() {
    let mut conflicts_seen = 0;
    for seed in 1..=25u64 {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("model.redb")).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut open: Vec<Open> = Vec::new();
        let mut pending = Vec::new();
        let mut committed = 0u64;
        for _ in 0..400 {
            match rng.below(6) {
                0 | 1 => open.push(Open {
                    unit: log.begin().unwrap(),
                    reads: BTreeMap::new(),
                    writes: BTreeMap::new(),
                }),
                2 | 3 if !open.is_empty() => {
                    let i = rng.below(open.len() as u64) as usize;
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let o = &mut open[i];
                    if rng.below(2) == 0 {
                        let v = decode(o.unit.get("m", key).unwrap());
                        // Only reads of the committed state count; reads of its own writes do not.
                        if !o.writes.contains_key(key) {
                            o.reads.entry(key.to_string()).or_insert(v);
                        }
                    } else {
                        let v = rng.below(1000);
                        o.unit.set("m", key, v.to_string().into_bytes());
                        o.writes.insert(key.to_string(), v);
                    }
                }
                4 | 5 if !open.is_empty() => {
                    let i = rng.below(open.len() as u64) as usize;
                    let mut o = open.swap_remove(i);
                    o.unit
                        .publish("m", "Step", None, json!({ "reads": o.reads, "writes": o.writes }));
                    let log = log.clone();
                    pending.push(tokio::spawn(async move { log.commit(o.unit).await }));
                }
                _ => {}
            }
            // Sometimes wait, so that some units overlap in one batch and others do not.
            if rng.below(8) == 0 {
                for p in pending.drain(..) {
                    match p.await.unwrap() {
                        Ok(_) => committed += 1,
                        Err(CommitError::Conflict) => conflicts_seen += 1,
                        Err(e) => panic!("seed {seed}: {e}"),
                    }
                }
            }
        }
        for p in pending.drain(..) {
            match p.await.unwrap() {
                Ok(_) => committed += 1,
                Err(CommitError::Conflict) => conflicts_seen += 1,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        drop(open);

        let events = log.events_after(0, 10_000).unwrap();
        assert_eq!(
            events.len() as u64,
            committed,
            "seed {seed}: one event per committed unit, none for conflicts"
        );
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "seed {seed}: gap-free");
            let reads: BTreeMap<String, Option<u64>> =
                serde_json::from_value(e.payload_value()["reads"].clone()).unwrap();
            for (k, seen) in reads {
                assert_eq!(
                    model.get(&k).copied(),
                    seen,
                    "seed {seed}: unit #{} read {k} stale",
                    e.seq
                );
            }
            let writes: BTreeMap<String, u64> =
                serde_json::from_value(e.payload_value()["writes"].clone()).unwrap();
            model.extend(writes);
        }
        let mut snap = log.begin().unwrap();
        for k in KEYS {
            assert_eq!(
                decode(snap.get("m", k).unwrap()),
                model.get(k).copied(),
                "seed {seed}: final {k}"
            );
        }
        log.close();
    }
    assert!(
        conflicts_seen > 0,
        "the interleavings should produce some conflicts"
    );
}
