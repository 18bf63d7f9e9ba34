//! The operations a server case is made of, and the proptest strategy that
//! generates them.
//!
//! Operations are abstract ("the next fragment", "skip ahead by some bytes"): the
//! executor turns each into a concrete request from the reference model's state at
//! that point (and the dialect's rules: in OneDrive's, fragment lengths are
//! multiples of its quantum unless they reach the end of the file). Shrinking therefore always yields meaningful sequences, and an
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
    /// A length in `1..=cap` (`cap >= 1`): what [`Len::pick_allowed`] picks without
    /// a quantum.
    #[cfg(test)]
    fn pick(self, cap: u64) -> u64 {
        match self {
            Self::Full => cap,
            Self::Part(n) => 1 + u64::from(n) % cap,
        }
    }

    /// A fragment length that a dialect with fragment quantum `quantum` (1: none)
    /// allows for a fragment with `rest` bytes of the file from its start, at most
    /// `max` long, and longer than `above`: a multiple of `quantum` shorter than
    /// `rest`, or `rest` itself (the last fragment may be any length). `None` if
    /// there is none.
    ///
    /// With `quantum` 1 and `above` 0 this is `pick(rest.min(max))`.
    pub(crate) fn pick_allowed(self, rest: u64, max: u64, quantum: u64, above: u64) -> Option<u64> {
        let quantum = quantum.max(1);
        // Multiples of the quantum that are not the last fragment, and fit.
        let multiples = max.min(rest.checked_sub(1)?) / quantum;
        let skipped = (above / quantum).min(multiples);
        let available = multiples - skipped;
        let whole = rest <= max && rest > above;
        let count = available + u64::from(whole);
        if count == 0 {
            return None;
        }
        let k = match self {
            Self::Full => count,
            Self::Part(n) => 1 + u64::from(n) % count,
        };
        Some(if k <= available {
            (skipped + k) * quantum
        } else {
            rest
        })
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
    /// The next fragment, neither the last nor a multiple of the dialect's quantum
    /// (generated only for a dialect that has one).
    OddLength { s: u8, len: u16 },
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

/// The operations a server must refuse, or that stress it. `odd` weighs
/// [`Op::OddLength`]; 0 leaves it out without changing what else is generated.
fn hostile(odd: u32) -> impl Strategy<Value = Op, Tree: Send> {
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
        // Last, so that a weight of 0 picks exactly what the other weights pick.
        odd => (s(), any::<u16>()).prop_map(|(s, len)| Op::OddLength { s, len }),
    ]
}

/// Cases of up to `max_ops` operations after the first `Open`; file sizes are
/// `min_size + 0..=span`. `odd_lengths`: the dialect has a fragment quantum, so
/// fragments of other lengths are tried too.
pub(crate) fn cases(
    span: u64,
    max_ops: usize,
    odd_lengths: bool,
) -> impl Strategy<Value = Case, Tree: Send> {
    let op = prop_oneof![59 => common(span), 26 => hostile(if odd_lengths { 3 } else { 0 })];
    (open(span), proptest::collection::vec(op, 0..=max_ops))
        .prop_map(|(first, ops)| Case { first, ops })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn allowed_lengths_without_a_quantum_are_the_plain_picks() {
        for rest in 1..40 {
            for max in 1..40 {
                for len in [Len::Full, Len::Part(0), Len::Part(7), Len::Part(u16::MAX)] {
                    assert_eq!(
                        len.pick_allowed(rest, max, 1, 0),
                        Some(len.pick(rest.min(max)))
                    );
                }
            }
        }
    }

    #[test]
    fn allowed_lengths_are_multiples_or_the_rest() {
        let q = 10;
        for rest in 1..60 {
            for max in 1..60 {
                for above in 0..15 {
                    for n in 0..50u16 {
                        let Some(len) = Len::Part(n).pick_allowed(rest, max, q, above) else {
                            // Nothing fits: no multiple below the rest, and the rest is too long.
                            assert!(
                                max.min(rest - 1) / q <= above / q
                                    && !(rest <= max && rest > above)
                            );
                            continue;
                        };
                        assert!(len > above && len <= max && len <= rest, "{len}");
                        assert!(len == rest || len % q == 0, "{len}");
                    }
                }
            }
        }
        assert_eq!(Len::Full.pick_allowed(25, 20, 10, 0), Some(20));
        assert_eq!(Len::Full.pick_allowed(25, 30, 10, 0), Some(25));
        assert_eq!(Len::Full.pick_allowed(25, 9, 10, 0), None);
        assert_eq!(Len::Part(0).pick_allowed(25, 30, 10, 12), Some(20));
    }

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
