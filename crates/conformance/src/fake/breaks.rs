//! Deliberate bugs, one per server rule: how the checker proves each rule catches its bug.

use crate::rule::Rule;

/// A deliberate bug, one per server rule, for the checker's own tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Break {
    /// createUploadSession answers 200 instead of 201.
    CreateAnswers200,
    /// Fragments that do not complete the file are answered 200 but not counted.
    DropsFragments,
    /// Intermediate 200 answers carry an `id`.
    IdInProgress,
    /// `nextExpectedRanges` written `"N-"`.
    OpenRanges,
    /// The completing fragment is answered 200 with an `id` (no `Location`).
    CompletionAs200,
    /// An exact re-send of received bytes is refused 416 (OneDrive's rule).
    ResendIs416,
    /// The final fragment re-sent after completion is answered 200 without a `Location`.
    FinalResendIs200,
    /// A fragment that skips ahead is answered 200 (and ignored).
    AcceptsSkip,
    /// A partly overlapping fragment is trimmed to its new bytes and stored.
    TrimsOverlap,
    /// Fragments of any length are taken.
    NoFragmentLimit,
    /// Fragments that are not a multiple of the dialect's quantum are taken (only a
    /// bug in a dialect that has one: run the fake and the check with
    /// `Dialect::ONEDRIVE`).
    TakesOddFragments,
    /// `bytes=a-b/t` and doubled spaces in `Content-Range` are accepted.
    LenientRange,
    /// A `Content-Range` total is ignored.
    IgnoresTotal,
    /// `Content-Length` is ignored; a longer body is cut to the range.
    IgnoresContentLength,
    /// A fragment is counted before its body has arrived.
    CountsBeforeBody,
    /// `GET {uploadUrl}` of a completed session answers 404 (as real Graph forgets it).
    ForgetsCompleted,
    /// `DELETE {uploadUrl}` answers 200 with a JSON body.
    DeleteAnswers200,
    /// A second concurrent fragment (refused, or taken over by a newer one) is
    /// answered 500 instead of 409.
    BusyIs500,
    /// The last byte of each fragment is not stored (an inclusive-range slip).
    DropsLastByte,
    /// Errors are plain text instead of Graph's JSON.
    PlainTextErrors,
}

impl Break {
    /// Every break.
    pub const ALL: &'static [Self] = &[
        Self::CreateAnswers200,
        Self::DropsFragments,
        Self::IdInProgress,
        Self::OpenRanges,
        Self::CompletionAs200,
        Self::ResendIs416,
        Self::FinalResendIs200,
        Self::AcceptsSkip,
        Self::TrimsOverlap,
        Self::NoFragmentLimit,
        Self::TakesOddFragments,
        Self::LenientRange,
        Self::IgnoresTotal,
        Self::IgnoresContentLength,
        Self::CountsBeforeBody,
        Self::ForgetsCompleted,
        Self::DeleteAnswers200,
        Self::BusyIs500,
        Self::DropsLastByte,
        Self::PlainTextErrors,
    ];

    /// The server rule this break violates.
    pub const fn rule(self) -> Rule {
        match self {
            Self::CreateAnswers200 => Rule::CreateSession,
            Self::DropsFragments => Rule::NextFragment,
            Self::IdInProgress => Rule::ProgressShape,
            Self::OpenRanges => Rule::ClosedRanges,
            Self::CompletionAs200 => Rule::Completion,
            Self::ResendIs416 => Rule::Replay,
            Self::FinalResendIs200 => Rule::FinalReplay,
            Self::AcceptsSkip => Rule::OutOfOrder,
            Self::TrimsOverlap => Rule::Overlap,
            Self::NoFragmentLimit => Rule::FragmentTooLarge,
            Self::TakesOddFragments => Rule::FragmentMultiple,
            Self::LenientRange => Rule::InvalidRange,
            Self::IgnoresTotal => Rule::TotalMismatch,
            Self::IgnoresContentLength => Rule::LengthMismatch,
            Self::CountsBeforeBody => Rule::IncompleteBody,
            Self::ForgetsCompleted => Rule::Status,
            Self::DeleteAnswers200 => Rule::Cancel,
            Self::BusyIs500 => Rule::ConcurrentPut,
            Self::DropsLastByte => Rule::AttachmentBytes,
            Self::PlainTextErrors => Rule::ErrorShape,
        }
    }
}
