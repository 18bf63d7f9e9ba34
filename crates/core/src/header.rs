//! Graph's inclusive range strings: `Content-Range` and `nextExpectedRanges`.
//!
//! This is the only module that reads or writes the inclusive `a-b` form; everything
//! else works on half-open [`ByteRange`]s.

use std::fmt;
use std::str::FromStr;

use crate::range::{ByteRange, RangeSet};

/// A `Content-Range: bytes a-b/total` header of an upload fragment (RFC 9110 §14.4).
///
/// Parsing is strict: the unit is `bytes` (any case) followed by exactly one space,
/// both positions and the complete length are plain decimal digits, `a <= b < total`.
/// The forms that make no sense for an upload (`bytes */total`, `bytes a-b/*`) are
/// rejected with an error that says so.
///
/// ```
/// use upsession_core::{ByteRange, ContentRange};
///
/// let cr: ContentRange = "bytes 0-4194303/10000000".parse().unwrap();
/// assert_eq!(cr.range(), ByteRange::new(0, 4_194_304).unwrap());
/// assert_eq!(cr.total(), 10_000_000);
/// assert_eq!(cr.to_string(), "bytes 0-4194303/10000000");
///
/// assert!("bytes=0-1/10".parse::<ContentRange>().is_err());
/// assert!("bytes 5-4/10".parse::<ContentRange>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentRange {
    range: ByteRange,
    total: u64,
}

impl ContentRange {
    /// A header for `range` of a file of `total` bytes; `None` if the range ends past `total`.
    pub fn new(range: ByteRange, total: u64) -> Option<Self> {
        (range.end() <= total).then_some(Self { range, total })
    }

    /// The bytes the fragment carries.
    pub const fn range(self) -> ByteRange {
        self.range
    }

    /// The complete length of the file.
    pub const fn total(self) -> u64 {
        self.total
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bytes {}-{}/{}",
            self.range.start(),
            self.range.last(),
            self.total
        )
    }
}

/// Why a `Content-Range` header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentRangeError {
    /// The header is absent or blank.
    #[error("the Content-Range header is missing")]
    Missing,
    /// `bytes=` is the syntax of the `Range` request header, not of `Content-Range`.
    #[error("Content-Range uses `bytes=`; the form is `bytes first-last/total`")]
    EqualsSign,
    /// The unit is not `bytes`.
    #[error("Content-Range unit must be `bytes`")]
    Unit,
    /// Something other than one space, digits, `-` and `/` where they belong.
    #[error("Content-Range is malformed; the form is `bytes first-last/total`")]
    Syntax,
    /// `bytes */total` describes an unsatisfied range, which an upload cannot carry.
    #[error("Content-Range `*/total` carries no bytes; an upload needs `bytes first-last/total`")]
    Unsatisfied,
    /// `bytes a-b/*`: an upload session needs the complete length.
    #[error("Content-Range must state the file's total size, not `*`")]
    UnknownTotal,
    /// A number does not fit in 64 bits.
    #[error("Content-Range has a number too large to be a byte position")]
    Overflow,
    /// `first > last`.
    #[error("Content-Range first byte {first} is after its last byte {last}")]
    StartAfterEnd {
        /// The first position as sent.
        first: u64,
        /// The last position as sent.
        last: u64,
    },
    /// `last >= total`.
    #[error("Content-Range last byte {last} is not inside the total size {total}")]
    EndBeyondTotal {
        /// The last position as sent.
        last: u64,
        /// The complete length as sent.
        total: u64,
    },
}

fn digits(s: &str) -> Result<u64, ContentRangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ContentRangeError::Syntax);
    }
    s.parse().map_err(|_| ContentRangeError::Overflow)
}

impl FromStr for ContentRange {
    type Err = ContentRangeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // Field values carry no leading or trailing whitespace (RFC 9110 §5.5).
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() {
            return Err(ContentRangeError::Missing);
        }
        let (unit, rest) = match value.split_once(' ') {
            Some(split) => split,
            None if value
                .get(..6)
                .is_some_and(|u| u.eq_ignore_ascii_case("bytes=")) =>
            {
                return Err(ContentRangeError::EqualsSign);
            }
            None if value
                .get(..5)
                .is_some_and(|u| u.eq_ignore_ascii_case("bytes")) =>
            {
                return Err(ContentRangeError::Syntax);
            }
            None => return Err(ContentRangeError::Unit),
        };
        if !unit.eq_ignore_ascii_case("bytes") {
            return Err(ContentRangeError::Unit);
        }
        let (range, total) = rest.split_once('/').ok_or(ContentRangeError::Syntax)?;
        if range == "*" {
            return Err(ContentRangeError::Unsatisfied);
        }
        let (first, last) = range.split_once('-').ok_or(ContentRangeError::Syntax)?;
        let (first, last) = (digits(first)?, digits(last)?);
        if total == "*" {
            return Err(ContentRangeError::UnknownTotal);
        }
        let total = digits(total)?;
        if first > last {
            return Err(ContentRangeError::StartAfterEnd { first, last });
        }
        if last >= total {
            return Err(ContentRangeError::EndBeyondTotal { last, total });
        }
        // `last < total <= u64::MAX`, so `last + 1` cannot overflow.
        let range = ByteRange::new(first, last + 1).ok_or(ContentRangeError::Syntax)?;
        Ok(Self { range, total })
    }
}

/// One entry of `nextExpectedRanges` as a peer wrote it.
///
/// Our server always writes the closed form `"start-end"` (one official SDK parses
/// both ends); real Graph also writes `"start-"` and a bare `"start"`, which mean
/// "from `start` to the end of the file".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedRange {
    /// `"a-b"`: bytes `a..=b`.
    Closed(ByteRange),
    /// `"a-"` or `"a"`: from `a` to the end of the file.
    From(u64),
}

impl ExpectedRange {
    /// The half-open range this entry denotes in a file of `total` bytes, or `None`
    /// when it names no byte of the file.
    pub fn resolve(self, total: u64) -> Option<ByteRange> {
        match self {
            Self::Closed(r) => ByteRange::new(r.start(), r.end().min(total)),
            Self::From(start) => ByteRange::new(start, total),
        }
    }
}

/// Why an entry of `nextExpectedRanges` could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not a byte range (expected `start-end`, `start-` or `start`)")]
pub struct ExpectedRangeError {
    /// The offending entry, cut to a readable length.
    pub entry: String,
}

impl FromStr for ExpectedRange {
    type Err = ExpectedRangeError;

    /// Lenient: accepts `"a-b"`, `"a-"` and `"a"`, with surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ExpectedRangeError {
            entry: s.chars().take(64).collect(),
        };
        let num = |t: &str| -> Result<u64, ExpectedRangeError> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            t.parse().map_err(|_| err())
        };
        match s.split_once('-') {
            None => Ok(Self::From(num(s)?)),
            Some((a, b)) if b.trim().is_empty() => Ok(Self::From(num(a)?)),
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                let end = b.checked_add(1).ok_or_else(err)?;
                ByteRange::new(a, end).map(Self::Closed).ok_or_else(err)
            }
        }
    }
}

/// Writes a range as Graph's closed `"start-end"` entry.
pub fn format_expected_range(range: ByteRange) -> String {
    format!("{}-{}", range.start(), range.last())
}

/// Writes a set as the `nextExpectedRanges` array, closed form only.
///
/// ```
/// use upsession_core::{ByteRange, RangeSet, header::format_expected_ranges};
///
/// let expected = RangeSet::from_range(ByteRange::new(4_194_304, 10_000_000).unwrap());
/// assert_eq!(format_expected_ranges(&expected), vec!["4194304-9999999"]);
/// ```
pub fn format_expected_ranges(set: &RangeSet) -> Vec<String> {
    set.ranges()
        .iter()
        .copied()
        .map(format_expected_range)
        .collect()
}

/// Reads a `nextExpectedRanges` array leniently into the set it denotes within
/// `0..total`; entries that name no byte of the file are dropped.
///
/// ```
/// use upsession_core::{ByteRange, header::parse_expected_ranges};
///
/// let set = parse_expected_ranges(["100", "0-9"], 1000).unwrap();
/// assert_eq!(set.ranges(), &[ByteRange::new(0, 10).unwrap(), ByteRange::new(100, 1000).unwrap()]);
/// ```
pub fn parse_expected_ranges<I, S>(entries: I, total: u64) -> Result<RangeSet, ExpectedRangeError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut set = RangeSet::new();
    for entry in entries {
        let parsed: ExpectedRange = entry.as_ref().parse()?;
        if let Some(r) = parsed.resolve(total) {
            set.insert(r);
        }
    }
    Ok(set)
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Result<(u64, u64, u64), ContentRangeError>) {
        let got = input
            .parse::<ContentRange>()
            .map(|c| (c.range().start(), c.range().last(), c.total()));
        assert_eq!(got, expected, "input: {input:?}");
    }

    #[test]
    fn content_range_accepts_the_rfc_form() {
        check("bytes 0-0/1", Ok((0, 0, 1)));
        check("bytes 0-4194303/4194304", Ok((0, 4_194_303, 4_194_304)));
        check("Bytes 10-19/20", Ok((10, 19, 20)));
        check(" bytes 1-2/3 ", Ok((1, 2, 3)));
        check("bytes 007-8/9", Ok((7, 8, 9)));
        let max = u64::MAX;
        check(&format!("bytes 0-{}/{max}", max - 1), Ok((0, max - 1, max)));
    }

    #[test]
    fn content_range_rejects_each_mistake_with_its_reason() {
        use ContentRangeError as E;
        check("", Err(E::Missing));
        check("   ", Err(E::Missing));
        check("bytes=0-1/10", Err(E::EqualsSign));
        check("items 0-1/10", Err(E::Unit));
        check("0-1/10", Err(E::Unit));
        check("bytes  0-1/10", Err(E::Syntax));
        check("bytes 0 -1/10", Err(E::Syntax));
        check("bytes 0-1 /10", Err(E::Syntax));
        check("bytes 0-1/ 10", Err(E::Syntax));
        check("bytes0-1/10", Err(E::Syntax));
        check("bytes 0-1", Err(E::Syntax));
        check("bytes -1/10", Err(E::Syntax));
        check("bytes 1-/10", Err(E::Syntax));
        check("bytes +1-2/10", Err(E::Syntax));
        check("bytes 0x1-2/10", Err(E::Syntax));
        check("bytes */10", Err(E::Unsatisfied));
        check("bytes 0-1/*", Err(E::UnknownTotal));
        check("bytes 5-4/10", Err(E::StartAfterEnd { first: 5, last: 4 }));
        check(
            "bytes 0-10/10",
            Err(E::EndBeyondTotal {
                last: 10,
                total: 10,
            }),
        );
        check("bytes 0-1/0", Err(E::EndBeyondTotal { last: 1, total: 0 }));
        check(
            "bytes 0-18446744073709551616/18446744073709551617",
            Err(E::Overflow),
        );
    }

    #[test]
    fn expected_range_reads_every_form_graph_sends() {
        let p = |s: &str| s.parse::<ExpectedRange>();
        assert_eq!(
            p("0-9"),
            Ok(ExpectedRange::Closed(ByteRange::new(0, 10).unwrap()))
        );
        assert_eq!(p("12345-"), Ok(ExpectedRange::From(12345)));
        assert_eq!(p("2097152"), Ok(ExpectedRange::From(2_097_152)));
        assert_eq!(
            p(" 5 - 6 "),
            Ok(ExpectedRange::Closed(ByteRange::new(5, 7).unwrap()))
        );
        for bad in [
            "",
            "-",
            "-5",
            "a-b",
            "5-4",
            "1-2-3",
            "18446744073709551615-18446744073709551615",
        ] {
            assert!(p(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn open_and_bare_ranges_resolve_to_end_of_file() {
        let set = parse_expected_ranges(["10-"], 20).unwrap();
        assert_eq!(set.ranges(), &[ByteRange::new(10, 20).unwrap()]);
        assert!(parse_expected_ranges(["20"], 20).unwrap().is_empty());
        let clipped = parse_expected_ranges(["5-100"], 20).unwrap();
        assert_eq!(clipped.ranges(), &[ByteRange::new(5, 20).unwrap()]);
    }

    proptest! {
        #[test]
        fn content_range_round_trips(start in 0u64..u64::MAX - 2, len in 1u64..1 << 40, extra in 0u64..1 << 40) {
            let end = start.saturating_add(len).min(u64::MAX - 1);
            prop_assume!(end > start);
            let total = end.saturating_add(extra);
            let cr = ContentRange::new(ByteRange::new(start, end).unwrap(), total).unwrap();
            prop_assert_eq!(cr.to_string().parse::<ContentRange>(), Ok(cr));
        }

        #[test]
        fn mutated_content_range_is_refused_or_reparsed_faithfully(
            first in 0u64..1000, len in 1u64..1000, extra in 0u64..1000,
            pos in 0usize..32, byte in proptest::sample::select(b" =-/*x0+\t,".to_vec()),
        ) {
            let total = first + len + extra;
            let header = format!("bytes {}-{}/{total}", first, first + len - 1);
            let mut bytes = header.into_bytes();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            let mutated = String::from_utf8(bytes).unwrap();
            // Whatever a mutation produces, an accepted header must print back to the
            // same canonical text modulo case, leading zeros and outer whitespace.
            if let Ok(cr) = mutated.parse::<ContentRange>() {
                prop_assert!(cr.range().end() <= cr.total());
                let canonical: String = mutated.trim().to_ascii_lowercase();
                let strip = |s: &str| s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u64>().unwrap()).collect::<Vec<_>>();
                prop_assert_eq!(strip(&canonical), strip(&cr.to_string()));
                prop_assert!(canonical.starts_with("bytes ") && !canonical.contains("  "));
            }
        }

        #[test]
        fn expected_ranges_round_trip(ranges in proptest::collection::vec((0u64..10_000, 1u64..500), 0..8)) {
            let set: RangeSet = ranges.into_iter().filter_map(|(s, l)| ByteRange::from_len(s, l)).collect();
            let text = format_expected_ranges(&set);
            prop_assert_eq!(parse_expected_ranges(&text, u64::MAX).unwrap(), set);
        }
    }
}
