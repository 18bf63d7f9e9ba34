//! What the planner says: actions for the adapter, events to report, and how an
//! upload ends.

use std::time::{Duration, SystemTime};

use crate::error::RemoteError;
use crate::header::ContentRange;

/// What the adapter should do next.
// Exhaustive on purpose: a driver that did not handle a new action would be wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// `POST …/attachments/createUploadSession`, then report the answer.
    CreateSession,
    /// `PUT {uploadUrl}` with these bytes and this `Content-Range`, no `Authorization`.
    Put(ContentRange),
    /// `GET {uploadUrl}`: ask the session what it has.
    QueryStatus,
    /// `DELETE {uploadUrl}`: cancel the session.
    Delete,
    /// `GET …/{item}/attachments` (with the token): the final answer was lost and
    /// the session is gone, so the item itself says whether the attachment exists.
    /// Asked only of a planner told the attachment's name
    /// ([`Planner::settle_doubt_by_listing`](super::Planner::settle_doubt_by_listing)).
    ListAttachments,
    /// Nothing to do before `until`; call `next` again then.
    Wait {
        /// When to call `next` again.
        until: SystemTime,
    },
    /// A request is outstanding: report its outcome before asking again.
    Pending,
    /// The upload is complete.
    Done(Completion),
    /// The upload cannot complete. Sticky: `next` keeps returning it.
    Failed(UploadError),
    /// The session was cancelled on request.
    Cancelled,
}

/// What the server said about the finished attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// The `Location` header of the final answer: the attachment's URL.
    pub location: Option<String>,
    /// The attachment's id, from the final answer's body or its `Location`.
    pub attachment_id: Option<String>,
    /// A drive upload's file, as the final answer describes it (its hashes to
    /// check against the bytes sent).
    pub drive_item: Option<Box<crate::drive::DriveItem>>,
}

/// Why an upload cannot complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The server refused, with Graph's error.
    #[error("the server refused the upload: {0}")]
    Remote(RemoteError),
    /// The session expired before the upload completed.
    #[error("the upload session has expired; start a new upload")]
    SessionExpired,
    /// The session answered 404: it expired, was cancelled, or the server forgot it.
    #[error("the upload session no longer exists ({0}); start a new upload")]
    SessionNotFound(RemoteError),
    /// The final fragment was sent but its answer was lost or ambiguous (a `5xx`),
    /// the session is gone, and the item could not tell (it was not asked, or would
    /// not answer): the attachment may or may not exist.
    #[error(
        "the final fragment was sent but its answer was lost and the session is gone; check whether the attachment exists"
    )]
    FinalOutcomeUnknown,
    /// The very first request could not be sent (connection refused, unknown host):
    /// nothing exists on the server, and retrying a server that is not there only
    /// makes the user wait.
    #[error("the server could not be reached, and nothing was created")]
    Unreachable,
    /// Too many consecutive failures without progress.
    #[error("gave up after {attempts} failed attempts in a row; last: {last}")]
    AttemptsExhausted {
        /// How many attempts failed.
        attempts: u32,
        /// What the last failure was.
        last: String,
    },
    /// The total deadline passed, or a `Retry-After` would pass it.
    #[error("the upload did not finish within its deadline; last: {last}")]
    DeadlineExceeded {
        /// What the last failure was.
        last: String,
    },
    /// The server answered something that cannot be an upload session answer.
    #[error("the server's answer makes no sense for an upload session: {0}")]
    Protocol(String),
    /// The server reported bytes as received that were never sent: finishing would
    /// make an attachment that is not the file. The session cannot be trusted, so
    /// it is not resumed either.
    #[error(
        "the server reports bytes {start}-{last} as received, but they were never sent; \
         the upload stops rather than make an attachment that is not the file"
    )]
    ServerClaimsUnsentBytes {
        /// First such byte.
        start: u64,
        /// Last such byte (inclusive).
        last: u64,
    },
}

/// How a request failed to get an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The request never left (connection refused, DNS): the server saw nothing.
    NotSent,
    /// The connection failed or timed out after the request may have been sent:
    /// the server may have acted on it.
    Lost,
}

/// A failed request the planner will send again, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retry {
    /// Consecutive failures so far.
    pub attempt: u32,
    /// How long the planner waits before sending it again.
    pub wait: Duration,
    /// Why the request failed.
    pub reason: String,
    /// The server throttled the request (`429`): its instruction to wait, not a
    /// failed attempt, so it does not count towards the attempts (only the total
    /// deadline bounds it). `attempt` then counts consecutive throttled answers.
    pub throttled: bool,
}

/// Things worth telling the user, drained with [`Planner::poll_event`](super::Planner::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The session exists: save `upload_url` to resume later.
    SessionCreated {
        /// The uploadUrl (a bearer credential: redact before logging).
        upload_url: String,
        /// When the session expires, if the server said.
        expires: Option<SystemTime>,
    },
    /// The server now holds `acknowledged` of `total` bytes.
    Progress {
        /// Bytes the server has acknowledged.
        acknowledged: u64,
        /// File size.
        total: u64,
    },
    /// A request failed and will be retried.
    Retrying(Retry),
    /// A 413 made the planner send smaller fragments.
    FragmentShrunk {
        /// The new fragment size.
        fragment_size: u64,
    },
}
