//! The operations a server case is made of, and the proptest strategy that
//! generates them.
//!
//! Operations are abstract ("the next fragment", "skip ahead by some bytes"): the
//! executor turns each into a concrete request from the reference model's state at
//! that point. Shrinking therefore always yields meaningful sequences, and an
//! operation that makes no sense at its point (re-sending before anything was
//! acknowledged) is skipped rather than sent.

use proptest::prelude::*;

/// How long a fragment is, within what the operation allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Len {
    /// As long as allowed: `min(max_fragment, bytes left)`.
    Full,
    /// `1 + n % allowed`.
    Part(u16),
}

impl Len {
    /// A length in `1..=cap` (`cap >= 1`).
    pub(crate) fn pick(self, cap: u64) -> u64 {
        match self {
            Self::Full => cap,
            Self::Part(n) => 1 + u64::from(n) % cap,
        }
    }
}

/// Number of malformed `Content-Range` variants [`Op::BadRange`] chooses from.
pub(crate) const BAD_RANGE_VARIANTS: u8 = 14;

/// One step of a case. `s` selects a session (modulo the sessions opened so far).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create a draft message (or an event) and open an upload session on it, for a
    /// file of `min_size + extra` bytes (`extra` is reduced into the allowed span).
    Open { event: bool, extra: u64 },
    /// `PUT` the next expected fragment; `auth` adds an `Authorization` header the
    /// server must ignore.
    PutNext { s: u8, len: Len, auth: bool },
    /// `PUT` full fragments until the file is complete.
    Finish { s: u8 },
    /// Re-send an acknowledged fragment (`back` = 0 is the last one): a lost answer.
    Resend { s: u8, back: u8 },
    /// Re-send the final fragment of a completed upload.
    ResendFinal { s: u8 },
    /// `GET {uploadUrl}`.
    Status { s: u8 },
    /// `DELETE {uploadUrl}`.
    Delete { s: u8 },
    /// A fragment starting after the next expected byte.
    SkipAhead { s: u8, gap: u16, len: Len },
    /// A fragment overlapping received bytes and reaching past them.
    Overlap { s: u8, back: u16, len: Len },
    /// A fragment `extra` bytes longer than the maximum.
    TooLarge { s: u8, extra: u16 },
    /// A malformed `Content-Range` (variant `< BAD_RANGE_VARIANTS`).
    BadRange { s: u8, variant: u8 },
    /// A `Content-Range` with a total `delta` away from the declared size.
    WrongTotal { s: u8, delta: i16 },
    /// The next fragment with a `Content-Length` (and body) `delta` bytes off.
    LengthMismatch { s: u8, delta: i16 },
    /// The next fragment with only `keep` (mod its length) body bytes, then the
    /// connection closed.
    CutBody { s: u8, keep: u16 },
    /// The next fragment sent twice at once.
    Concurrent { s: u8 },
}

/// A whole case: the first session is always opened; then the operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Case {
    pub(crate) first: Op,
    pub(crate) ops: Vec<Op>,
}

fn len() -> impl Strategy<Value = Len, Tree: Send> {
    prop_oneof![3 => Just(Len::Full), 2 => any::<u16>().prop_map(Len::Part)]
}

fn open(span: u64) -> impl Strategy<Value = Op, Tree: Send> {
    (any::<bool>(), 0..=span).prop_map(|(event, extra)| Op::Open { event, extra })
}

fn delta() -> impl Strategy<Value = i16, Tree: Send> {
    prop_oneof![1i16..=64, -64i16..=-1]
}

/// The operations that make progress or look at the session.
fn common(span: u64) -> impl Strategy<Value = Op, Tree: Send> {
    let s = any::<u8>;
    prop_oneof![
        30 => (s(), len(), proptest::bool::weighted(0.2))
            .prop_map(|(s, len, auth)| Op::PutNext { s, len, auth }),
        6 => s().prop_map(|s| Op::Finish { s }),
        8 => (s(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(s, back)| Op::Resend { s, back }),
        5 => s().prop_map(|s| Op::ResendFinal { s }),
        5 => s().prop_map(|s| Op::Status { s }),
        3 => open(span),
        2 => s().prop_map(|s| Op::Delete { s }),
    ]
}

/// The operations a server must refuse, or that stress it.
fn hostile() -> impl Strategy<Value = Op, Tree: Send> {
    let s = any::<u8>;
    prop_oneof![
        4 => (s(), any::<u16>(), len()).prop_map(|(s, gap, len)| Op::SkipAhead { s, gap, len }),
        4 => (s(), any::<u16>(), len()).prop_map(|(s, back, len)| Op::Overlap { s, back, len }),
        3 => (s(), 1u16..=64).prop_map(|(s, extra)| Op::TooLarge { s, extra }),
        4 => (s(), 0..BAD_RANGE_VARIANTS).prop_map(|(s, variant)| Op::BadRange { s, variant }),
        3 => (s(), delta()).prop_map(|(s, delta)| Op::WrongTotal { s, delta }),
        3 => (s(), delta()).prop_map(|(s, delta)| Op::LengthMismatch { s, delta }),
        3 => (s(), any::<u16>()).prop_map(|(s, keep)| Op::CutBody { s, keep }),
        2 => s().prop_map(|s| Op::Concurrent { s }),
    ]
}

/// Cases of up to `max_ops` operations after the first `Open`; file sizes are
/// `min_size + 0..=span`.
pub(crate) fn cases(span: u64, max_ops: usize) -> impl Strategy<Value = Case, Tree: Send> {
    let op = prop_oneof![59 => common(span), 26 => hostile()];
    (open(span), proptest::collection::vec(op, 0..=max_ops))
        .prop_map(|(first, ops)| Case { first, ops })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn lengths_stay_within_their_cap() {
        for cap in 1..50 {
            assert_eq!(Len::Full.pick(cap), cap);
            for n in [0u16, 1, 49, u16::MAX] {
                assert!((1..=cap).contains(&Len::Part(n).pick(cap)));
            }
        }
    }
}
