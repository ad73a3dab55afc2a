//! Units being written: how many units of a log have begun to write and are not yet handed to
//! its writer. A busy writer waits a moment for them (see [`super::Writer::run`]) so that they
//! share its next transaction and fsync instead of paying for one each: with several
//! partitions each writer sees a share of the traffic, and without the wait its batches, and so
//! what every commit costs per unit, would shrink with the number of partitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unit's place in its log's count: taken at its first write, given back when the unit is
/// handed to the writer or dropped.
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
    counted: bool,
}

impl InFlight {
    pub(crate) fn new(count: Arc<AtomicUsize>) -> Self {
        InFlight {
            count,
            counted: false,
        }
    }

    /// The unit writes: count it, once.
    pub(crate) fn mark(&mut self) {
        if !self.counted {
            self.counted = true;
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.counted {
            let before = self.count.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a unit left the count twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_counts_once_from_its_first_write_until_it_goes() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut a = InFlight::new(count.clone());
        let b = InFlight::new(count.clone());
        assert_eq!(
            count.load(Ordering::Acquire),
            0,
            "a unit that only reads is not counted"
        );
        a.mark();
        a.mark();
        assert_eq!(count.load(Ordering::Acquire), 1);
        drop(b);
        drop(a);
        assert_eq!(count.load(Ordering::Acquire), 0);
    }
}
