//! A download's `Range` header (RFC 9110 §14): which bytes of an attachment to
//! answer, and how to say so.
//!
//! One `bytes` range is served (206 Partial Content); a header that is absent,
//! malformed, of another unit, or asks for several ranges is ignored and the whole
//! representation is answered (200), as the RFC allows; a range none of whose
//! bytes exist is 416 with `Content-Range: bytes */{total}`.
//!
//! ```
//! use upsession_core::download::{RangeRequest, range_request};
//! use upsession_core::ByteRange;
//!
//! assert_eq!(range_request(Some("bytes=0-99"), false, 1000),
//!            RangeRequest::Part(ByteRange::new(0, 100).unwrap()));
//! assert_eq!(range_request(Some("bytes=-10"), false, 1000),
//!            RangeRequest::Part(ByteRange::new(990, 1000).unwrap()));
//! assert_eq!(range_request(Some("bytes=1000-"), false, 1000), RangeRequest::Unsatisfiable);
//! assert_eq!(range_request(Some("bytes=0-1,5-9"), false, 1000), RangeRequest::Whole);
//! // An `If-Range` validator cannot be checked (no ETag is given): the whole file.
//! assert_eq!(range_request(Some("bytes=0-99"), true, 1000), RangeRequest::Whole);
//! ```

use crate::ByteRange;

/// What to answer to a download of a representation of `total` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Every byte, 200.
    Whole,
    /// These bytes, 206 with [`RangeRequest::content_range`].
    Part(ByteRange),
    /// None of the asked bytes exist: 416 with [`RangeRequest::content_range`].
    Unsatisfiable,
}

impl RangeRequest {
    /// The bytes to send of `total`: all of them unless a part was asked for;
    /// `None` for an unsatisfiable request or an empty representation.
    pub fn bytes(self, total: u64) -> Option<ByteRange> {
        match self {
            Self::Whole => ByteRange::new(0, total),
            Self::Part(range) => Some(range),
            Self::Unsatisfiable => None,
        }
    }

    /// The `Content-Range` of the answer, if it has one: `bytes a-b/total` for a
    /// part, `bytes */total` when unsatisfiable.
    pub fn content_range(self, total: u64) -> Option<String> {
        match self {
            Self::Whole => None,
            Self::Part(range) => Some(format!("bytes {}-{}/{total}", range.start(), range.last())),
            Self::Unsatisfiable => Some(format!("bytes */{total}")),
        }
    }
}

/// Reads a `Range` header value for a representation of `total` bytes.
/// `if_range`: the request carried `If-Range`, whose validator this server cannot
/// match (it gives no `ETag`), so the whole representation is answered.
pub fn range_request(range: Option<&str>, if_range: bool, total: u64) -> RangeRequest {
    let Some(value) = range else {
        return RangeRequest::Whole;
    };
    if if_range {
        return RangeRequest::Whole;
    }
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeRequest::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Whole;
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs.as_slice() else {
        // None (malformed) or several (a multipart answer this server does not give).
        return RangeRequest::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if first.is_empty() {
        // `-n`: the last n bytes.
        return match number(last) {
            None => RangeRequest::Whole,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) => ByteRange::new(total.saturating_sub(n), total)
                .map_or(RangeRequest::Unsatisfiable, RangeRequest::Part),
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Whole;
    };
    let end = if last.is_empty() {
        total
    } else {
        match number(last) {
            Some(l) if l >= start => l.saturating_add(1).min(total),
            // `a-b` with b < a is not a valid range: the header is ignored.
            _ => return RangeRequest::Whole,
        }
    };
    ByteRange::new(start, end).map_or(RangeRequest::Unsatisfiable, RangeRequest::Part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Part(ByteRange::new(start, end).unwrap())
    }

    #[test]
    fn the_forms_of_one_range() {
        let total = 1000;
        for (header, want) in [
            ("bytes=0-0", part(0, 1)),
            ("bytes=0-999", part(0, 1000)),
            ("bytes=0-5000", part(0, 1000)),
            ("bytes=500-", part(500, 1000)),
            ("bytes=-1", part(999, 1000)),
            ("bytes=-5000", part(0, 1000)),
            ("BYTES = 10-19", part(10, 20)),
            ("bytes=10-19,", part(10, 20)),
            ("bytes=999-", part(999, 1000)),
            ("bytes=1000-", RangeRequest::Unsatisfiable),
            ("bytes=1000-2000", RangeRequest::Unsatisfiable),
            ("bytes=-0", RangeRequest::Unsatisfiable),
            ("bytes=5-4", RangeRequest::Whole),
            ("bytes=0-1,3-4", RangeRequest::Whole),
            ("items=0-1", RangeRequest::Whole),
            ("bytes=a-b", RangeRequest::Whole),
            ("bytes=+1-2", RangeRequest::Whole),
            ("bytes=", RangeRequest::Whole),
            ("bytes 0-1", RangeRequest::Whole),
            ("bytes=-", RangeRequest::Whole),
            ("bytes=99999999999999999999-", RangeRequest::Whole),
        ] {
            assert_eq!(range_request(Some(header), false, total), want, "{header}");
        }
        assert_eq!(range_request(None, false, total), RangeRequest::Whole);
        assert_eq!(
            range_request(Some("bytes=0-1"), false, 0),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn content_ranges_name_the_last_byte_and_the_total() {
        assert_eq!(
            part(0, 100).content_range(1000).as_deref(),
            Some("bytes 0-99/1000")
        );
        assert_eq!(
            RangeRequest::Unsatisfiable.content_range(1000).as_deref(),
            Some("bytes */1000")
        );
        assert_eq!(RangeRequest::Whole.content_range(1000), None);
        assert_eq!(RangeRequest::Whole.bytes(1000), ByteRange::new(0, 1000));
        assert_eq!(RangeRequest::Unsatisfiable.bytes(1000), None);
    }

    proptest! {
        /// Whatever the header, a part lies inside the representation, and an
        /// unsatisfiable answer is only given for a start at or past the end (or
        /// an empty suffix or representation).
        #[test]
        fn a_part_is_always_inside(header in "(bytes|BYTES|x)=[0-9-, ]{0,24}", total in 0u64..5000) {
            match range_request(Some(&header), false, total) {
                RangeRequest::Part(r) => prop_assert!(r.end() <= total && r.start() < r.end()),
                RangeRequest::Unsatisfiable | RangeRequest::Whole => {}
            }
        }

        #[test]
        fn a_valid_first_last_range_is_served_clipped(start in 0u64..3000, len in 1u64..3000, total in 1u64..3000) {
            let last = start + len - 1;
            let got = range_request(Some(&format!("bytes={start}-{last}")), false, total);
            if start < total {
                prop_assert_eq!(got, part(start, (last + 1).min(total)));
            } else {
                prop_assert_eq!(got, RangeRequest::Unsatisfiable);
            }
        }
    }
}
