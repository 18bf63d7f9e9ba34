//! `nextExpectedRanges` reading: any entries are refused or read into a set
//! within `0..total` that is the union of the entries read one by one.
//!
//! Input: the first byte picks how `total` is made (small, from the next eight
//! bytes, or `u64::MAX`); the rest is split at `,` into entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upsession_core::header::{ExpectedRange, format_expected_ranges, parse_expected_ranges};
use upsession_core::{ByteRange, RangeSet};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (total, rest) = match mode % 4 {
        0 => (u64::MAX, rest),
        1 if rest.len() >= 8 => {
            let (bytes, rest) = rest.split_at(8);
            (u64::from_le_bytes(bytes.try_into().unwrap()), rest)
        }
        _ => (u64::from(mode), rest),
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let entries: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').collect()
    };

    let parsed = parse_expected_ranges(&entries, total);
    let one_by_one: Result<Vec<ExpectedRange>, _> =
        entries.iter().map(|e| e.parse::<ExpectedRange>()).collect();
    let Ok(set) = parsed else {
        assert!(one_by_one.is_err(), "{entries:?} refused as a whole only");
        return;
    };
    let singles = one_by_one.expect("the whole was read, so each entry is");

    for w in set.ranges().windows(2) {
        assert!(w[0].end() < w[1].start(), "not coalesced: {set:?}");
    }
    if let Some(last) = set.ranges().last() {
        assert!(last.end() <= total, "{set:?} goes past {total}");
    }
    let union: RangeSet = singles.iter().filter_map(|e| e.resolve(total)).collect();
    assert_eq!(set, union);
    for entry in &singles {
        if let Some(r) = entry.resolve(total) {
            assert!(r.end() <= total);
            assert!(set.contains_range(r));
            if let ExpectedRange::Closed(closed) = entry {
                assert_eq!(r.start(), closed.start());
            }
        }
    }

    // What we write reads back as the same set.
    let written = format_expected_ranges(&set);
    assert_eq!(parse_expected_ranges(&written, total), Ok(set.clone()));
    let full = ByteRange::new(0, total).map(RangeSet::from_range);
    if let Some(full) = full {
        assert!(set.ranges().iter().all(|r| full.contains_range(*r)));
    }
});
