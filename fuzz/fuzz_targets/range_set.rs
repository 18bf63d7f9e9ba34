//! `RangeSet` against a naive bitmap: every insert/remove op keeps the set equal
//! to the model and sorted, disjoint and non-touching.
//!
//! Input: the first byte picks `total` for the complement; then each op is three
//! bytes: kind, start, length (ranges in a universe of 64 offsets).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::{ByteRange, RangeSet};

const UNIVERSE: u64 = 64;

fn bitmap_to_set(model: &[bool]) -> Vec<ByteRange> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < model.len() {
        if model[i] {
            let start = i;
            while i < model.len() && model[i] {
                i += 1;
            }
            out.push(ByteRange::new(start as u64, i as u64).unwrap());
        } else {
            i += 1;
        }
    }
    out
}

fn check_invariants(set: &RangeSet) {
    for w in set.ranges().windows(2) {
        assert!(
            w[0].end() < w[1].start(),
            "ranges must be sorted, disjoint and not touching: {set:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let total = u64::from(first) % (UNIVERSE + 1);
    let mut set = RangeSet::new();
    let mut model = [false; UNIVERSE as usize];
    for op in ops.chunks_exact(3) {
        let start = u64::from(op[1]) % UNIVERSE;
        let end = (start + u64::from(op[2]) % UNIVERSE + 1).min(UNIVERSE);
        let range = ByteRange::new(start, end).unwrap();
        let all = (start..end).all(|i| model[i as usize]);
        let any = (start..end).any(|i| model[i as usize]);
        match op[0] % 4 {
            0 | 1 => {
                set.insert(range);
                model[start as usize..end as usize].fill(true);
            }
            2 => {
                set.remove(range);
                model[start as usize..end as usize].fill(false);
            }
            _ => {
                assert_eq!(set.contains_range(range), all, "{set:?} ⊇ {range:?}");
                assert_eq!(set.intersects(range), any, "{set:?} ∩ {range:?}");
                // Subtracting a one-range set is `remove`.
                let mut diff = set.clone();
                diff.subtract(&RangeSet::from_range(range));
                check_invariants(&diff);
                for i in 0..UNIVERSE {
                    assert_eq!(diff.contains(i), model[i as usize] && !range.contains(i));
                }
            }
        }
        check_invariants(&set);
        assert_eq!(set.ranges(), bitmap_to_set(&model).as_slice());
    }

    let count = model.iter().filter(|b| **b).count() as u64;
    assert_eq!(set.covered(), count);
    assert_eq!(set.is_empty(), count == 0);
    for i in 0..UNIVERSE {
        assert_eq!(set.contains(i), model[i as usize], "offset {i} in {set:?}");
    }
    let prefix = model.iter().take_while(|b| **b).count() as u64;
    assert_eq!(set.contiguous_prefix(), prefix);

    let complement = set.complement(total);
    check_invariants(&complement);
    assert_eq!(complement, set.next_expected(total));
    for i in 0..UNIVERSE {
        assert_eq!(
            complement.contains(i),
            i < total && !model[i as usize],
            "offset {i}: complement({total}) of {set:?} is {complement:?}"
        );
    }
    // A set built by FromIterator from its own ranges is itself.
    let rebuilt: RangeSet = set.ranges().iter().copied().collect();
    assert_eq!(rebuilt, set);
});
