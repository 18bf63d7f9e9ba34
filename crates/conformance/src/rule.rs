//! The conformance rules: one name per behaviour a server or client must have.
//!
//! Every violation the checkers report names exactly one [`Rule`]. The names are
//! stable (they appear in scripts, CI logs and `docs/CONFORMANCE.md`).

use std::fmt;
use std::str::FromStr;

use upsession_core::Dialect;
use upsession_core::dialect::RangeForm;

/// One behaviour that [`crate::server::check`] or [`crate::client::check`] verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    // ----- server rules -----
    /// `POST …/messages` or `…/events` answers 201 with an `id`;
    /// `createUploadSession` answers 201 (the dialect's status: 200 in OneDrive's)
    /// with an absolute `uploadUrl`, an `expirationDateTime` in the future and
    /// `nextExpectedRanges` covering the file, written as the dialect writes them.
    CreateSession,
    /// The next expected fragment is stored and answered 200 (the dialect's status:
    /// 202 in OneDrive's) with the ranges still expected.
    NextFragment,
    /// Every uploadSession progress answer is `application/json` with
    /// `expirationDateTime` (RFC 3339, UTC, in the future; `ExpirationDateTime` in
    /// Outlook's dialect) and `nextExpectedRanges` (and whatever else the dialect
    /// writes, such as Outlook's `@odata.context`), and has no `id`.
    ProgressShape,
    /// `nextExpectedRanges` entries are written `"start-end"`, never `"start-"` or a
    /// bare `"start"`. The contract's tidiness: checked only in a dialect that writes
    /// closed ranges (the upsession dialect).
    ClosedRanges,
    /// The fragment that completes the file is answered 201 with an absolute
    /// `Location` and an empty body without a JSON content type.
    Completion,
    /// An acknowledged fragment re-sent (its answer was lost) is answered as the
    /// first time, not refused (OneDrive's dialect refuses it with 416
    /// `fragmentOverlap`).
    Replay,
    /// The final fragment re-sent after completion is answered 201 with the same
    /// `Location`.
    FinalReplay,
    /// A fragment that starts after the next expected byte is refused with 416
    /// `fragmentOutOfOrder`, and changes nothing.
    OutOfOrder,
    /// A fragment that partly overlaps received bytes is refused with 416
    /// `fragmentOverlap`, and changes nothing.
    Overlap,
    /// A fragment longer than the maximum is refused with 413
    /// `maxFragmentLengthExceeded`.
    FragmentTooLarge,
    /// A fragment that is not the last and whose length is not a multiple of the
    /// dialect's quantum (OneDrive's 320 KiB) is refused with 400 `invalidRange`.
    /// Checked only in a dialect that has a quantum.
    FragmentMultiple,
    /// A missing or malformed `Content-Range` is refused with 400 `invalidRange`.
    InvalidRange,
    /// A `Content-Range` whose total is not the declared size is refused with 400
    /// `invalidRange`.
    TotalMismatch,
    /// A `Content-Length` other than the range's length is refused with 400
    /// `fragmentLengthMismatch`.
    LengthMismatch,
    /// A fragment whose body is cut off counts nothing: the session still expects
    /// its first byte, and the same fragment is accepted when sent again.
    IncompleteBody,
    /// `GET {uploadUrl}` answers 200 with the current `nextExpectedRanges` (`[]` once
    /// the upload is complete).
    Status,
    /// `DELETE {uploadUrl}` answers 204; afterwards the session answers 404
    /// `uploadSessionNotFound`.
    Cancel,
    /// Of two concurrent `PUT`s of one fragment, one is stored and answered; the
    /// other gets the same answer, or 409 (`fragmentInProgress`, or
    /// `fragmentSuperseded` where the newer request took the fragment over).
    ConcurrentPut,
    /// `GET {Location}/$value` returns exactly the uploaded bytes.
    AttachmentBytes,
    /// Every error answer is Graph's JSON `{"error": {"code": …, "message": …}}`.
    ErrorShape,

    // ----- client rules -----
    /// A client that reports success has uploaded the whole file, byte for byte, as
    /// exactly one attachment.
    ClientSuccessIsComplete,
    /// A client that reports failure says why (a non-empty message).
    ClientFailureIsClear,
    /// When every injected fault was recoverable, the client finishes the upload.
    ClientCompletes,
    /// The attachment id or `Location` a client reports is the one the server made.
    ClientReportsAttachment,
    /// The client returns within the case's time limit.
    ClientFinishes,

    // ----- neither -----
    /// The checker itself could not run (bad configuration, no port, no temporary
    /// directory). Not a finding about the implementation under test.
    Harness,
}

impl Rule {
    /// The rules [`crate::server::check`] verifies, in the order of
    /// `docs/CONFORMANCE.md`.
    pub const SERVER: &'static [Self] = &[
        Self::CreateSession,
        Self::NextFragment,
        Self::ProgressShape,
        Self::ClosedRanges,
        Self::Completion,
        Self::Replay,
        Self::FinalReplay,
        Self::OutOfOrder,
        Self::Overlap,
        Self::FragmentTooLarge,
        Self::FragmentMultiple,
        Self::InvalidRange,
        Self::TotalMismatch,
        Self::LengthMismatch,
        Self::IncompleteBody,
        Self::Status,
        Self::Cancel,
        Self::ConcurrentPut,
        Self::AttachmentBytes,
        Self::ErrorShape,
    ];

    /// The rules [`crate::client::check`] verifies.
    pub const CLIENT: &'static [Self] = &[
        Self::ClientSuccessIsComplete,
        Self::ClientFailureIsClear,
        Self::ClientCompletes,
        Self::ClientReportsAttachment,
        Self::ClientFinishes,
    ];

    /// The stable kebab-case name, e.g. `out-of-order`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CreateSession => "create-session",
            Self::NextFragment => "next-fragment",
            Self::ProgressShape => "progress-shape",
            Self::ClosedRanges => "closed-ranges",
            Self::Completion => "completion",
            Self::Replay => "replay",
            Self::FinalReplay => "final-replay",
            Self::OutOfOrder => "out-of-order",
            Self::Overlap => "overlap",
            Self::FragmentTooLarge => "fragment-too-large",
            Self::FragmentMultiple => "fragment-multiple",
            Self::InvalidRange => "invalid-range",
            Self::TotalMismatch => "total-mismatch",
            Self::LengthMismatch => "length-mismatch",
            Self::IncompleteBody => "incomplete-body",
            Self::Status => "status",
            Self::Cancel => "cancel",
            Self::ConcurrentPut => "concurrent-put",
            Self::AttachmentBytes => "attachment-bytes",
            Self::ErrorShape => "error-shape",
            Self::ClientSuccessIsComplete => "client-success-is-complete",
            Self::ClientFailureIsClear => "client-failure-is-clear",
            Self::ClientCompletes => "client-completes",
            Self::ClientReportsAttachment => "client-reports-attachment",
            Self::ClientFinishes => "client-finishes",
            Self::Harness => "harness",
        }
    }

    /// Whether [`crate::server::check`] judges this rule for a server speaking
    /// `dialect`. Every rule applies in every dialect (with the answers that dialect
    /// gives) except two: `closed-ranges`, the contract's tidiness, only where the
    /// dialect writes closed ranges (the upsession dialect); `fragment-multiple` only
    /// where the dialect has a fragment quantum (OneDrive).
    pub fn applies_to(self, dialect: &Dialect) -> bool {
        match self {
            Self::ClosedRanges => {
                dialect.ranges == RangeForm::Closed && dialect.created_ranges == RangeForm::Closed
            }
            Self::FragmentMultiple => dialect.fragment_quantum.is_some(),
            _ => true,
        }
    }

    /// One sentence saying what the rule requires.
    pub const fn summary(self) -> &'static str {
        match self {
            Self::CreateSession => {
                "creating a draft or event answers 201 with an id; createUploadSession answers 201 \
                 (the dialect's status) with an absolute uploadUrl, a future expirationDateTime and nextExpectedRanges \
                 covering the whole file"
            }
            Self::NextFragment => {
                "the next expected fragment is stored and answered 200 (the dialect's status) with \
                 the ranges still expected"
            }
            Self::ProgressShape => {
                "an uploadSession progress answer is application/json with the dialect's \
                 expirationDateTime (RFC 3339, UTC, in the future) and nextExpectedRanges, and no id"
            }
            Self::ClosedRanges => {
                "nextExpectedRanges entries are written \"start-end\", never \"start-\" or \"start\""
            }
            Self::Completion => {
                "the fragment that completes the file is answered 201 with an absolute Location \
                 and an empty body without a JSON content type"
            }
            Self::Replay => {
                "an acknowledged fragment re-sent after a lost answer is answered as the first time \
                 (onedrive: refused 416 fragmentOverlap)"
            }
            Self::FinalReplay => {
                "the final fragment re-sent after completion is answered 201 with the same Location"
            }
            Self::OutOfOrder => {
                "a fragment starting after the next expected byte is refused 416 fragmentOutOfOrder \
                 and changes nothing"
            }
            Self::Overlap => {
                "a fragment partly overlapping received bytes is refused 416 fragmentOverlap and \
                 changes nothing"
            }
            Self::FragmentTooLarge => {
                "a fragment longer than the maximum is refused 413 maxFragmentLengthExceeded"
            }
            Self::FragmentMultiple => {
                "a fragment that is not the last and not a multiple of the dialect's quantum \
                 (OneDrive: 320 KiB) is refused 400 invalidRange"
            }
            Self::InvalidRange => {
                "a missing or malformed Content-Range is refused 400 invalidRange"
            }
            Self::TotalMismatch => {
                "a Content-Range total other than the declared size is refused 400 invalidRange"
            }
            Self::LengthMismatch => {
                "a Content-Length other than the range's length is refused 400 fragmentLengthMismatch"
            }
            Self::IncompleteBody => {
                "a fragment whose body is cut off counts nothing and is accepted when sent again"
            }
            Self::Status => {
                "GET {uploadUrl} answers 200 with the current nextExpectedRanges ([] once complete)"
            }
            Self::Cancel => {
                "DELETE {uploadUrl} answers 204, and the session then answers 404 uploadSessionNotFound"
            }
            Self::ConcurrentPut => {
                "of two concurrent PUTs of one fragment one is stored; the other gets the same \
                 answer, or 409 (fragmentInProgress, or fragmentSuperseded where the newer won)"
            }
            Self::AttachmentBytes => "GET {Location}/$value returns exactly the uploaded bytes",
            Self::ErrorShape => {
                "an error answer is Graph's JSON {\"error\": {\"code\": …, \"message\": …}}"
            }
            _ => self.client_summary(),
        }
    }

    /// [`Rule::summary`] of the client rules and the harness.
    const fn client_summary(self) -> &'static str {
        match self {
            Self::ClientSuccessIsComplete => {
                "a client reporting success has uploaded the whole file, byte for byte, as exactly \
                 one attachment"
            }
            Self::ClientFailureIsClear => "a client reporting failure says why",
            Self::ClientCompletes => {
                "when every injected fault was recoverable, the client finishes the upload"
            }
            Self::ClientReportsAttachment => {
                "the attachment id or Location a client reports is the one the server made"
            }
            Self::ClientFinishes => "the client returns within the time limit",
            Self::Harness => "the checker could not run; this is not a finding",
            _ => "",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule name that is not one of [`Rule`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownRule(pub String);

impl fmt::Display for UnknownRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a conformance rule", self.0)
    }
}

impl std::error::Error for UnknownRule {}

impl FromStr for Rule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::SERVER
            .iter()
            .chain(Self::CLIENT)
            .chain(&[Self::Harness])
            .copied()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownRule(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_round_trips_through_its_name() {
        for rule in Rule::SERVER.iter().chain(Rule::CLIENT) {
            assert_eq!(rule.name().parse::<Rule>(), Ok(*rule));
            assert!(!rule.summary().is_empty());
        }
        assert!("nope".parse::<Rule>().is_err());
    }

    #[test]
    fn dialect_specific_rules_apply_where_the_dialect_says() {
        let applies = |rule: Rule| {
            Dialect::ALL
                .iter()
                .filter(|d| rule.applies_to(d))
                .map(|d| d.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(applies(Rule::ClosedRanges), ["upsession", "outlook"]);
        let docs = Dialect::OUTLOOK.with_range_forms(upsession_core::dialect::RangeForms::Outlook);
        assert!(!Rule::ClosedRanges.applies_to(&docs));
        assert_eq!(applies(Rule::FragmentMultiple), ["onedrive"]);
        assert_eq!(applies(Rule::Replay).len(), Dialect::ALL.len());
    }
}
