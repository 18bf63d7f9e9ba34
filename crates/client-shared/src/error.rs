//! The crate's one error type: every way a call can fail, each a sentence a CLI can
//! print as it is.
//!
//! Messages never contain an uploadUrl's credential: URLs are shown through
//! [`upsession_core::redact()`], and transport errors are stripped of their URL before they
//! are turned into text.

use std::path::PathBuf;

use std::ops::ControlFlow;
use upsession_core::RemoteError;

use upsession_core::planner::{Action, Completion, TransportError, UploadError};
use upsession_core::redact::RedactedUrl;

/// A `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The upload could not complete; the planner says why (the server refused it,
    /// retries ran out, the deadline passed, the final answer was lost, …).
    #[error(transparent)]
    Upload(UploadError),
    /// A request other than the upload itself (creating a draft, asking a session's
    /// status, cancelling it) was refused, with Graph's error code, message and
    /// request-id.
    #[error("the server refused the request: {0}")]
    Remote(RemoteError),
    /// A request got no answer: the connection, TLS, a timeout, or a refused redirect.
    #[error("the request failed before an answer came: {0}")]
    Http(String),
    /// The server could not be reached at all (connection refused, unknown host, a
    /// failed TLS handshake), found on the first request, before anything was
    /// created there: nothing is retried, so a wrong URL costs no minute.
    #[error("cannot reach {url}: {cause}")]
    Unreachable {
        /// The URL of the request, its query redacted.
        url: String,
        /// What failed: `connection refused`, `unknown host (…)`, `TLS handshake failed: …`.
        cause: String,
    },
    /// A local file could not be read or written.
    #[error("could not {action} {}: {error}", path.display())]
    Io {
        /// What was being done (`read`, `open`, `write the resume state to`, …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file is not the one the upload started with: its size, modification time
    /// or content changed. Detected before any byte of the changed file is sent, and
    /// before each fragment.
    #[error("{} has changed since the upload started ({what}); start a new upload", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: String,
    },
    /// The upload session has expired, or the server no longer knows it (it was
    /// cancelled or forgotten). Nothing more can be sent to it.
    #[error(
        "the upload session has expired or no longer exists{}; start a new upload",
        remote.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    )]
    SessionExpired {
        /// The server's answer, when it said so (a 404); `None` when the session's
        /// own expiry time had passed.
        remote: Option<RemoteError>,
    },
    /// A resume state cannot be used: unreadable, of another version, or inconsistent.
    #[error(
        "the resume state{} cannot be used: {reason}",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
    )]
    InvalidState {
        /// The state file, when the state came from one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// The token provider could not give an access token.
    #[error("could not get an access token: {0}")]
    Token(String),
    /// The request needs an access token and the client was built without one.
    #[error("this request needs an access token, and none was configured")]
    NoToken,
    /// An argument or a setting is not usable (a base URL that is not a URL, an empty
    /// file, a zero fragment size, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The server answered something that is not what Graph answers.
    #[error("the server's answer makes no sense: {0}")]
    Protocol(String),
    /// The upload was cancelled: its session was deleted.
    #[error("the upload was cancelled")]
    Cancelled,
}

impl Error {
    /// The server's Graph error, if the failure was a refusal with one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Self::Upload(UploadError::Remote(r)) | Self::Remote(r) => Some(r),
            Self::SessionExpired { remote } => remote.as_ref(),
            _ => None,
        }
    }

    /// Whether the session this error came from is certainly of no further use, so
    /// that its resume state can be thrown away.
    pub fn session_is_gone(&self) -> bool {
        matches!(
            self,
            Self::SessionExpired { .. }
                | Self::Cancelled
                | Self::Upload(
                    UploadError::FinalOutcomeUnknown
                        | UploadError::SessionExpired
                        // A session that claims bytes never sent cannot be resumed.
                        | UploadError::ServerClaimsUnsentBytes { .. }
                )
        )
    }

    /// The planner's failure as this error. A server never reached is named by the
    /// first request's URL (`first_url`, redacted; else `base`) and the last
    /// request's cause.
    pub fn of_planner(
        error: UploadError,
        first_url: Option<String>,
        last_cause: Option<String>,
        base: &str,
    ) -> Self {
        match error {
            UploadError::Unreachable => Self::Unreachable {
                url: first_url.unwrap_or_else(|| RedactedUrl(base).to_string()),
                cause: last_cause.unwrap_or_else(|| "the request could not be sent".into()),
            },
            UploadError::SessionExpired => Self::SessionExpired { remote: None },
            UploadError::SessionNotFound(remote) => Self::SessionExpired {
                remote: Some(remote),
            },
            other => Self::Upload(other),
        }
    }

    /// A small file's `POST` to `url` got no answer (`why`): unreachable if it was
    /// never sent, otherwise of unknown outcome.
    pub fn post_unanswered(kind: TransportError, why: String, url: &str) -> Self {
        match kind {
            TransportError::NotSent => Self::Unreachable {
                url: RedactedUrl(url).to_string(),
                cause: why,
            },
            _ => Self::Http(format!(
                "{why}; the attachment may or may not have been added"
            )),
        }
    }

    /// Reading the upload's `source` failed while a fragment was sent: a source
    /// that ended early is a changed file.
    pub fn reading(source: &std::path::Path, error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::FileChanged {
                path: source.to_path_buf(),
                what: "it ended before the announced size".into(),
            }
        } else {
            Self::io("read", source, error)
        }
    }

    /// A failed file operation: `action` (`read`, `open`, …) on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

/// What a planner's action means to the loop that drives it: the upload's end
/// (`Break`: done, failed as `failure` says, cancelled, or a driver that asked
/// again before answering), or an action to carry out (`Continue`).
pub fn ending(
    action: Action,
    failure: impl FnOnce(UploadError) -> Error,
) -> ControlFlow<Result<Completion>, Action> {
    ControlFlow::Break(match action {
        Action::Done(completion) => Ok(completion),
        Action::Failed(error) => Err(failure(error)),
        Action::Cancelled => Err(Error::Cancelled),
        Action::Pending => Err(Error::Protocol(
            "the upload planner is waiting for an answer that was already given".into(),
        )),
        other => return ControlFlow::Continue(other),
    })
}
