//! The reference model of one upload session, and what it says each answer must be.
//!
//! The model of each session is `upsession_core::session::Session`, opened with the
//! limits the check was given and driven on a frozen clock: every `PUT` the checker
//! sends is first put to the model (`handle_put`, then `commit` for a write), and
//! the server's answer must be the one `upsession_core::respond` and the checked
//! dialect (`upsession_core::Dialect`) would render for the model's decision
//! (status, Graph `error.code`, `nextExpectedRanges`). The model takes the
//! dialect's fragment rules (`Limits::with_rules_of`); how its answers look is
//! read off the dialect's renderer (see `shape`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use upsession_core::route::ItemPath;
use upsession_core::session::{Answer, Phase, PutDecision, Session};
use upsession_core::{ByteRange, Dialect, GraphError, RangeSet};

use super::shape::{self, Via};
use crate::rule::Rule;
use crate::runner::mix;

/// The model's frozen clock: sessions never expire during a case.
pub(super) fn model_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// What the model says the answer must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expect {
    /// `status` (the dialect's: 200, or OneDrive's 202 to a fragment) with the
    /// uploadSession JSON and these ranges, asked for `via` a `PUT` or a `GET`.
    Progress {
        ranges: RangeSet,
        status: u16,
        via: Via,
    },
    /// `status` (201) with a `Location`.
    Completed { status: u16 },
    /// Graph's error JSON with this status, top-level code and `innerError.code`.
    Error {
        status: u16,
        code: &'static str,
        inner: Option<&'static str>,
    },
    /// 204 to a `DELETE`.
    Deleted,
    /// An answer of the model this checker does not know.
    Unknown,
}

impl Expect {
    /// The model's `answer` to a `PUT` or a `GET`, with the status `dialect` gives it.
    pub(super) fn from_answer(answer: Answer, dialect: &Dialect, via: Via) -> Self {
        let status = shape::answer(dialect, &answer, via).status;
        match answer {
            Answer::Progress { next_expected, .. } => Self::Progress {
                ranges: next_expected,
                status,
                via,
            },
            Answer::Completed => Self::Completed { status },
            _ => Self::Unknown,
        }
    }

    pub(super) fn completes(&self) -> bool {
        matches!(self, Self::Completed { .. })
    }

    pub(super) fn from_error<E: GraphError + ?Sized>(err: &E) -> Self {
        Self::Error {
            status: err.status().as_u16(),
            code: err.code(),
            inner: err.inner_code(),
        }
    }
}

/// What a `PUT` is meant to test, which decides the rule its answer is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Next,
    Again,
    Resend,
    ResendFinal,
    Skip,
    Overlap,
    TooLarge,
    BadRange,
    WrongTotal,
    LengthMismatch,
    OddLength,
}

pub(super) fn rule_for(kind: Kind, expect: &Expect, cancelled: bool) -> Rule {
    if cancelled {
        return Rule::Cancel;
    }
    let completes = expect.completes();
    match kind {
        Kind::Next | Kind::Again if completes => Rule::Completion,
        Kind::Next => Rule::NextFragment,
        Kind::Again => Rule::IncompleteBody,
        Kind::Resend if completes => Rule::FinalReplay,
        Kind::Resend => Rule::Replay,
        Kind::ResendFinal => Rule::FinalReplay,
        Kind::Skip => Rule::OutOfOrder,
        Kind::Overlap => Rule::Overlap,
        Kind::TooLarge => Rule::FragmentTooLarge,
        Kind::BadRange => Rule::InvalidRange,
        Kind::WrongTotal => Rule::TotalMismatch,
        Kind::LengthMismatch => Rule::LengthMismatch,
        Kind::OddLength => Rule::FragmentMultiple,
    }
}

/// One upload session as the model sees it.
#[derive(Debug)]
pub(super) struct Model {
    /// The file's number in the script (1-based).
    pub(super) file: usize,
    pub(super) data: Vec<u8>,
    /// The message or event the attachment goes to.
    pub(super) item: ItemPath,
    pub(super) session: Session,
    pub(super) url: Url,
    /// The uploadUrl with its credential redacted.
    pub(super) shown_url: String,
    /// Fragments answered 2xx that the model stored, in order.
    pub(super) acked: Vec<ByteRange>,
    /// The `Location` of the first 201.
    pub(super) location: Option<String>,
}

impl Model {
    pub(super) fn size(&self) -> u64 {
        self.session.size()
    }

    pub(super) fn cancelled(&self) -> bool {
        self.session.phase() == Phase::Cancelled
    }

    /// The first expected byte of an open session with bytes left.
    pub(super) fn next_start(&self) -> Option<u64> {
        if self.session.phase() != Phase::Open {
            return None;
        }
        self.session.next_expected().first().map(ByteRange::start)
    }

    pub(super) fn slice(&self, first: u64, last: u64) -> Vec<u8> {
        let (a, b) = (to_usize(first), to_usize(last));
        self.data[a..=b].to_vec()
    }

    pub(super) fn note(&self, first: u64, last: u64) -> String {
        format!("body: bytes {first}..={last} of file {}", self.file)
    }

    /// Puts a fragment to the model as if its body arrived whole; the answer is
    /// rendered in `dialect`.
    pub(super) fn expect_put(
        &mut self,
        dialect: &Dialect,
        content_range: Option<&str>,
        content_length: Option<u64>,
    ) -> (Expect, Option<ByteRange>) {
        let now = model_now();
        let expect = |answer| Expect::from_answer(answer, dialect, Via::Put);
        match self.session.handle_put(now, content_range, content_length) {
            Ok(PutDecision::Write(ticket)) => {
                let range = ticket.range();
                match self.session.commit(now, ticket) {
                    Ok(answer) => (expect(answer), Some(range)),
                    Err(e) => (Expect::from_error(&e), None),
                }
            }
            Ok(PutDecision::Replay { answer, .. }) => (expect(answer), None),
            Err(e) => (Expect::from_error(&e), None),
        }
    }
}

pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The bytes of file `file` of a case: reproducible from the case seed alone.
pub(super) fn file_data(case_seed: u64, file: usize, size: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(mix(case_seed ^ mix(file as u64)));
    let mut data = vec![0u8; to_usize(size)];
    rng.fill(&mut data);
    data
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn file_data_is_reproducible() {
        assert_eq!(file_data(1, 1, 100), file_data(1, 1, 100));
        assert_ne!(file_data(1, 1, 100), file_data(1, 2, 100));
    }
}
