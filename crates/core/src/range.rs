//! Half-open byte ranges and sets of them: the arithmetic behind `nextExpectedRanges`.
//!
//! Everything in here is half-open (`start..end`). Graph's inclusive `a-b` strings are
//! read and written only in [`crate::header`].

use std::fmt;

/// A non-empty, half-open range of byte offsets, `start..end`.
///
/// ```
/// use upsession_core::ByteRange;
///
/// let r = ByteRange::new(0, 4).unwrap();
/// assert_eq!(r.len(), 4);
/// assert_eq!(r.last(), 3);
/// assert!(ByteRange::new(5, 5).is_none(), "empty ranges do not exist");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    start: u64,
    end: u64,
}

impl ByteRange {
    /// The range `start..end`, or `None` when it would be empty (`start >= end`).
    pub const fn new(start: u64, end: u64) -> Option<Self> {
        if start < end {
            Some(Self { start, end })
        } else {
            None
        }
    }

    /// The range `start..start + len`, or `None` when `len` is zero or the end overflows.
    pub const fn from_len(start: u64, len: u64) -> Option<Self> {
        match start.checked_add(len) {
            Some(end) => Self::new(start, end),
            None => None,
        }
    }

    /// First offset in the range.
    pub const fn start(self) -> u64 {
        self.start
    }

    /// One past the last offset in the range.
    pub const fn end(self) -> u64 {
        self.end
    }

    /// The last offset in the range (inclusive), as `Content-Range` writes it.
    pub const fn last(self) -> u64 {
        self.end - 1
    }

    /// Number of bytes in the range; never zero.
    #[allow(clippy::len_without_is_empty)] // a ByteRange is never empty
    pub const fn len(self) -> u64 {
        self.end - self.start
    }

    /// Whether `offset` lies in the range.
    pub const fn contains(self, offset: u64) -> bool {
        self.start <= offset && offset < self.end
    }

    /// Whether `other` lies wholly inside this range.
    pub const fn contains_range(self, other: Self) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The bytes both ranges share, if any.
    pub fn intersect(self, other: Self) -> Option<Self> {
        Self::new(self.start.max(other.start), self.end.min(other.end))
    }

    /// The range cut to at most `len` bytes, keeping its start.
    #[must_use]
    pub fn truncate(self, len: u64) -> Self {
        Self {
            start: self.start,
            end: self.end.min(self.start.saturating_add(len.max(1))),
        }
    }
}

impl fmt::Debug for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A set of byte offsets, kept as sorted, disjoint, coalesced [`ByteRange`]s.
///
/// ```
/// use upsession_core::{ByteRange, RangeSet};
///
/// let mut received = RangeSet::new();
/// received.insert(ByteRange::new(0, 100).unwrap());
/// received.insert(ByteRange::new(100, 250).unwrap()); // touching ranges coalesce
/// assert_eq!(received.ranges(), &[ByteRange::new(0, 250).unwrap()]);
///
/// // What a 1000-byte upload still expects:
/// let expected = received.complement(1000);
/// assert_eq!(expected.ranges(), &[ByteRange::new(250, 1000).unwrap()]);
/// assert_eq!(received.covered(), 250);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RangeSet {
    ranges: Vec<ByteRange>,
}

impl RangeSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// The set holding exactly `range`.
    pub fn from_range(range: ByteRange) -> Self {
        Self {
            ranges: vec![range],
        }
    }

    /// The set `0..total`, empty when `total` is zero.
    pub fn full(total: u64) -> Self {
        ByteRange::new(0, total).map_or_else(Self::new, Self::from_range)
    }

    /// The ranges, sorted, disjoint and never touching.
    pub fn ranges(&self) -> &[ByteRange] {
        &self.ranges
    }

    /// Whether the set holds no offset.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of offsets in the set.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    /// The lowest range, if any.
    pub fn first(&self) -> Option<ByteRange> {
        self.ranges.first().copied()
    }

    /// Whether `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        // Index of the first range that ends after `offset`.
        let i = self.ranges.partition_point(|r| r.end <= offset);
        self.ranges.get(i).is_some_and(|r| r.contains(offset))
    }

    /// Whether every offset of `range` is in the set.
    pub fn contains_range(&self, range: ByteRange) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges.get(i).is_some_and(|r| r.contains_range(range))
    }

    /// Whether the set and `range` share at least one offset.
    pub fn intersects(&self, range: ByteRange) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= range.start);
        self.ranges.get(i).is_some_and(|r| r.start < range.end)
    }

    /// Adds every offset of `range`, merging with neighbours it overlaps or touches.
    pub fn insert(&mut self, range: ByteRange) {
        // First range that could merge (ends at or after our start) ...
        let lo = self.ranges.partition_point(|r| r.end < range.start);
        // ... and one past the last that could (starts at or before our end).
        let hi = self.ranges.partition_point(|r| r.start <= range.end);
        if lo == hi {
            self.ranges.insert(lo, range);
            return;
        }
        let merged = ByteRange {
            start: range.start.min(self.ranges[lo].start),
            end: range.end.max(self.ranges[hi - 1].end),
        };
        self.ranges.splice(lo..hi, [merged]);
    }

    /// Removes every offset of `range`.
    pub fn remove(&mut self, range: ByteRange) {
        let lo = self.ranges.partition_point(|r| r.end <= range.start);
        let hi = self.ranges.partition_point(|r| r.start < range.end);
        if lo >= hi {
            return;
        }
        let first = self.ranges[lo];
        let last = self.ranges[hi - 1];
        let left = ByteRange::new(first.start, range.start);
        let right = ByteRange::new(range.end, last.end);
        self.ranges.splice(lo..hi, left.into_iter().chain(right));
    }

    /// Removes every offset that is in `other`.
    pub fn subtract(&mut self, other: &Self) {
        for r in &other.ranges {
            self.remove(*r);
        }
    }

    /// The offsets of `0..total` that are not in the set.
    #[must_use]
    pub fn complement(&self, total: u64) -> Self {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut cursor = 0;
        for r in &self.ranges {
            if r.start >= total {
                break;
            }
            out.extend(ByteRange::new(cursor, r.start));
            cursor = r.end;
        }
        out.extend(ByteRange::new(cursor, total));
        Self { ranges: out }
    }

    /// What an upload of `total` bytes still expects: the complement of the set in
    /// `0..total`. This is Graph's `nextExpectedRanges`, half-open.
    #[must_use]
    pub fn next_expected(&self, total: u64) -> Self {
        self.complement(total)
    }

    /// Length of the prefix `0..n` that is wholly in the set.
    pub fn contiguous_prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(&self.ranges).finish()
    }
}

impl FromIterator<ByteRange> for RangeSet {
    fn from_iter<I: IntoIterator<Item = ByteRange>>(iter: I) -> Self {
        let mut set = Self::new();
        for r in iter {
            set.insert(r);
        }
        set
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNIVERSE: u64 = 64;

    /// The naive model: one bool per offset of a small universe.
    #[derive(Clone, Debug)]
    struct Bitmap([bool; UNIVERSE as usize]);

    impl Bitmap {
        fn new() -> Self {
            Self([false; UNIVERSE as usize])
        }
        fn set(&mut self, r: ByteRange, v: bool) {
            for i in r.start()..r.end() {
                self.0[usize::try_from(i).unwrap()] = v;
            }
        }
        fn to_set(&self) -> RangeSet {
            let mut ranges = Vec::new();
            let mut i = 0;
            while i < UNIVERSE {
                if self.0[i as usize] {
                    let start = i;
                    while i < UNIVERSE && self.0[i as usize] {
                        i += 1;
                    }
                    ranges.push(ByteRange::new(start, i).unwrap());
                } else {
                    i += 1;
                }
            }
            RangeSet { ranges }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(ByteRange),
        Remove(ByteRange),
    }

    fn range() -> impl Strategy<Value = ByteRange> {
        (0..UNIVERSE, 1..=UNIVERSE)
            .prop_filter_map("empty", |(s, l)| ByteRange::new(s, (s + l).min(UNIVERSE)))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![range().prop_map(Op::Insert), range().prop_map(Op::Remove)]
    }

    fn check_invariants(set: &RangeSet) {
        for w in set.ranges.windows(2) {
            assert!(
                w[0].end < w[1].start,
                "ranges must be sorted, disjoint and not touching: {set:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn range_set_matches_bitmap_model(ops in proptest::collection::vec(op(), 0..40), probe in range(), total in 0..=UNIVERSE) {
            let mut set = RangeSet::new();
            let mut model = Bitmap::new();
            for op in ops {
                match op {
                    Op::Insert(r) => { set.insert(r); model.set(r, true); }
                    Op::Remove(r) => { set.remove(r); model.set(r, false); }
                }
                check_invariants(&set);
                prop_assert_eq!(&set, &model.to_set());
            }
            let count = model.0.iter().filter(|b| **b).count() as u64;
            prop_assert_eq!(set.covered(), count);
            for i in 0..UNIVERSE {
                prop_assert_eq!(set.contains(i), model.0[i as usize]);
            }
            let all = (probe.start()..probe.end()).all(|i| model.0[i as usize]);
            let any = (probe.start()..probe.end()).any(|i| model.0[i as usize]);
            prop_assert_eq!(set.contains_range(probe), all);
            prop_assert_eq!(set.intersects(probe), any);

            // complement: disjoint from the set, and together they cover 0..total.
            let comp = set.complement(total);
            check_invariants(&comp);
            for i in 0..UNIVERSE {
                prop_assert_eq!(comp.contains(i), i < total && !model.0[i as usize]);
            }
        }

        #[test]
        fn insert_is_idempotent_and_commutative(a in range(), b in range()) {
            let ab: RangeSet = [a, b].into_iter().collect();
            let ba: RangeSet = [b, a, b].into_iter().collect();
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn subtract_then_insert_restores_union(a in proptest::collection::vec(range(), 0..8), b in proptest::collection::vec(range(), 0..8)) {
            let sa: RangeSet = a.into_iter().collect();
            let sb: RangeSet = b.into_iter().collect();
            let mut diff = sa.clone();
            diff.subtract(&sb);
            for r in sb.ranges() { prop_assert!(!diff.intersects(*r)); }
            let mut union = diff;
            for r in sb.ranges() { union.insert(*r); }
            let mut expected = sa;
            for r in sb.ranges() { expected.insert(*r); }
            prop_assert_eq!(union, expected);
        }
    }

    #[test]
    fn complement_of_empty_set_is_everything() {
        assert_eq!(RangeSet::new().complement(10), RangeSet::full(10));
        assert!(RangeSet::new().complement(0).is_empty());
    }

    #[test]
    fn complement_ignores_ranges_past_total() {
        let set: RangeSet = [ByteRange::new(5, 20).unwrap()].into_iter().collect();
        assert_eq!(
            set.complement(10).ranges(),
            &[ByteRange::new(0, 5).unwrap()]
        );
    }

    #[test]
    fn contiguous_prefix_needs_offset_zero() {
        let mut set = RangeSet::from_range(ByteRange::new(1, 5).unwrap());
        assert_eq!(set.contiguous_prefix(), 0);
        set.insert(ByteRange::new(0, 1).unwrap());
        assert_eq!(set.contiguous_prefix(), 5);
    }

    #[test]
    fn from_len_rejects_overflow_and_empty() {
        assert!(ByteRange::from_len(u64::MAX, 1).is_none());
        assert!(ByteRange::from_len(3, 0).is_none());
        assert_eq!(ByteRange::from_len(3, 2), ByteRange::new(3, 5));
    }
}
