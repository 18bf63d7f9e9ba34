//! The error model: every refusal the server can give, each mapped to exactly one
//! HTTP status and Graph error code, here and nowhere else.
//!
//! Errors are grouped by concern: [`CreateError`] (opening a session),
//! [`FragmentError`] (a `PUT` to the uploadUrl), [`RequestError`] (everything around
//! them: auth, routing, bodies, load, storage). Each implements [`GraphError`], which
//! [`crate::wire::ErrorBody`] turns into Graph's JSON. The client reads that JSON back
//! into a [`RemoteError`].
//!
//! Graph answers in two levels: a broad top-level `error.code` (`invalidRange`,
//! `itemNotFound`, …) and, for upload sessions, a detailed `innerError.code`
//! (`fragmentOverlap`, `uploadSessionNotFound`, …), as its "Detailed error codes"
//! table lists them. [`GraphError::code`] is the first, [`GraphError::inner_code`]
//! the second.

use http::StatusCode;

use crate::header::ContentRangeError;

/// An error that Graph would answer with a status and a code.
pub trait GraphError: std::error::Error {
    /// The HTTP status of the answer.
    fn status(&self) -> StatusCode;
    /// Graph's top-level `error.code`, e.g. `invalidRange`.
    fn code(&self) -> &'static str;
    /// Graph's detailed `error.innerError.code`, e.g. `fragmentOverlap`, where Graph
    /// has one for this error.
    fn inner_code(&self) -> Option<&'static str> {
        None
    }
    /// The most specific code: the inner code if there is one, else the top-level
    /// one. Logs and metrics use it.
    fn detail(&self) -> &'static str {
        self.inner_code().unwrap_or_else(|| self.code())
    }
    /// Seconds a client should wait before retrying, for `Retry-After`.
    fn retry_after_secs(&self) -> Option<u64> {
        None
    }
    /// The `Content-Range` the answer carries (a 416 says the length it has:
    /// `bytes */{total}`).
    fn content_range(&self) -> Option<String> {
        None
    }
}

/// Why `createUploadSession` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The body is not the JSON `{"AttachmentItem": {...}}` Graph expects.
    #[error("the request body is not a valid createUploadSession request: {0}")]
    InvalidBody(String),
    /// `attachmentType` is something other than `file`.
    #[error("attachmentType must be `file`, not `{0}`")]
    UnsupportedAttachmentType(String),
    /// The attachment has no usable name.
    #[error(
        "the attachment needs a non-empty name of at most 1024 bytes without control characters"
    )]
    InvalidName,
    /// `isInline` is true but there is no `contentId`.
    #[error("an inline attachment needs a contentId")]
    MissingContentId,
    /// Below the minimum size: such files are attached directly, not through a session.
    #[error("attachment size {size} is less than the minimum of {min} bytes for an upload session")]
    TooSmall {
        /// Declared size.
        size: u64,
        /// Configured minimum.
        min: u64,
    },
    /// Above the maximum size.
    #[error("attachment size {size} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The caller already has its limit of upload sessions open (not completed,
    /// cancelled or expired): `--max-sessions-per-token`.
    #[error(
        "this application has {limit} upload sessions open, its limit; finish or cancel one, or retry later"
    )]
    TooManySessions {
        /// The limit.
        limit: u32,
        /// When to retry.
        retry_after_secs: u64,
    },
    /// The caller's open sessions and this one together declare more bytes than it
    /// may hold: `--max-declared-bytes-per-token`.
    #[error(
        "this upload session of {size} bytes and the {open} bytes declared by the application's open sessions exceed its limit of {limit} bytes"
    )]
    QuotaExceeded {
        /// Declared size of the refused session.
        size: u64,
        /// Bytes declared by the caller's open sessions.
        open: u64,
        /// The limit.
        limit: u64,
    },
}

impl GraphError for CreateError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn inner_code(&self) -> Option<&'static str> {
        match self {
            Self::TooManySessions { .. } => Some("tooManyUploadSessions"),
            Self::QuotaExceeded { .. } => Some("declaredBytesLimitReached"),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::TooManySessions {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody(_) => "RequestBodyRead",
            Self::UnsupportedAttachmentType(_) | Self::InvalidName | Self::MissingContentId => {
                "ErrorInvalidRequest"
            }
            Self::TooSmall { .. } => "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            Self::TooLarge { .. } => "ErrorAttachmentSizeExceeded",
            Self::TooManySessions { .. } => "activityLimitReached",
            Self::QuotaExceeded { .. } => "quotaLimitReached",
        }
    }
}

/// Why a fragment `PUT` was refused. None of these changes the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// The `Content-Range` header is missing or malformed.
    #[error("{0}")]
    InvalidRange(#[from] ContentRangeError),
    /// The `Content-Range` total is not the size the session was created with.
    #[error("Content-Range total {sent} does not match the attachment size {declared}")]
    TotalMismatch {
        /// Total in the header.
        sent: u64,
        /// Size given at createUploadSession.
        declared: u64,
    },
    /// `Content-Length` disagrees with the length of `Content-Range`.
    #[error(
        "Content-Length {content_length} does not match the {range_len} bytes named by Content-Range"
    )]
    LengthMismatch {
        /// `Content-Length` as sent.
        content_length: u64,
        /// Length of the range.
        range_len: u64,
    },
    /// The body ended before, or ran past, the length the headers announced.
    #[error("the request body was {got} bytes where {expected} were announced")]
    BodyLength {
        /// Bytes announced.
        expected: u64,
        /// Bytes seen (when the body ran past, the count where reading stopped).
        got: u64,
    },
    /// The fragment is larger than a single request may carry.
    #[error("fragment of {len} bytes exceeds the maximum of {max} bytes per request")]
    TooLarge {
        /// Fragment length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The `Content-Range` total of a session opened without a size (OneDrive's
    /// `fileSize` is optional) is larger than a file may be.
    #[error("a file of {size} bytes exceeds the maximum of {max} bytes")]
    FileTooLarge {
        /// The `Content-Range` total.
        size: u64,
        /// The largest file.
        max: u64,
    },
    /// The fragment starts after a byte the session still expects.
    #[error("fragment starts at byte {start} but the session expects byte {expected} next")]
    OutOfOrder {
        /// Fragment start.
        start: u64,
        /// First expected byte.
        expected: u64,
    },
    /// The fragment partly overlaps bytes already received (an exact re-send is fine).
    #[error(
        "fragment {start}-{last} overlaps bytes already received; the session expects byte {expected} next"
    )]
    Overlap {
        /// Fragment first byte.
        start: u64,
        /// Fragment last byte.
        last: u64,
        /// First expected byte.
        expected: u64,
    },
    /// The fragment is not a multiple of the dialect's quantum and does not end the
    /// file (OneDrive's 320 KiB rule).
    #[error(
        "fragment of {len} bytes is not a multiple of {quantum} bytes; only the last fragment may be shorter"
    )]
    NotMultiple {
        /// Fragment length.
        len: u64,
        /// Required multiple.
        quantum: u64,
    },
    /// The fragment would make the message larger than its size limit (Exchange's
    /// message size limit, 35 MB by default; the test double's
    /// `--message-size-limit`). The live service refuses the fragment that crosses
    /// the limit, mid-upload, not the session.
    #[error(
        "the message would be {total} bytes with this fragment, over its limit of {limit} bytes"
    )]
    MessageSizeExceeded {
        /// The message's size with this fragment's bytes.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// Another fragment of this session is being received right now.
    #[error(
        "another fragment of this upload session is in progress; retry when it has been answered"
    )]
    Busy,
}

impl GraphError for FragmentError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRange(_)
            | Self::NotMultiple { .. }
            | Self::TotalMismatch { .. }
            | Self::LengthMismatch { .. }
            | Self::BodyLength { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. }
            | Self::MessageSizeExceeded { .. }
            | Self::FileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::OutOfOrder { .. } | Self::Overlap { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Busy => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidRange(_)
            | Self::TotalMismatch { .. }
            | Self::NotMultiple { .. }
            | Self::OutOfOrder { .. }
            | Self::Overlap { .. }
            | Self::Busy => "invalidRange",
            Self::LengthMismatch { .. }
            | Self::BodyLength { .. }
            | Self::TooLarge { .. }
            | Self::FileTooLarge { .. } => "invalidRequest",
            Self::MessageSizeExceeded { .. } => "ErrorMessageSizeExceeded",
        }
    }

    fn inner_code(&self) -> Option<&'static str> {
        match self {
            Self::LengthMismatch { .. } | Self::BodyLength { .. } => Some("fragmentLengthMismatch"),
            Self::TooLarge { .. } => Some("maxFragmentLengthExceeded"),
            Self::OutOfOrder { .. } => Some("fragmentOutOfOrder"),
            Self::Overlap { .. } => Some("fragmentOverlap"),
            Self::Busy => Some("fragmentInProgress"),
            Self::InvalidRange(_)
            | Self::TotalMismatch { .. }
            | Self::NotMultiple { .. }
            | Self::FileTooLarge { .. }
            | Self::MessageSizeExceeded { .. } => None,
        }
    }
}

/// Why a request to an existing upload session was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The fragment itself is wrong; the session is unchanged.
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    /// The session expired before this request.
    #[error("the upload session has expired")]
    Expired,
    /// The session was cancelled (`DELETE`) before this request.
    #[error("the upload session was cancelled")]
    Cancelled,
    /// A newer request for the same fragment took over while this one was being
    /// received (the new request wins); its bytes were not counted.
    #[error("a newer request for the same fragment took over; this one was not counted")]
    Superseded,
}

impl GraphError for SessionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Fragment(e) => e.status(),
            Self::Expired | Self::Cancelled => RequestError::SessionNotFound.status(),
            Self::Superseded => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Fragment(e) => e.code(),
            Self::Expired | Self::Cancelled => RequestError::SessionNotFound.code(),
            Self::Superseded => "invalidRange",
        }
    }

    fn inner_code(&self) -> Option<&'static str> {
        match self {
            Self::Fragment(e) => e.inner_code(),
            Self::Expired | Self::Cancelled => RequestError::SessionNotFound.inner_code(),
            Self::Superseded => Some("fragmentSuperseded"),
        }
    }
}

/// Refusals on a drive's items (OneDrive's codes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// No item at that id or path (in the caller's drives).
    #[error("the resource could not be found")]
    ItemNotFound,
    /// The name is taken, under the `fail` conflict behaviour (or by a folder).
    #[error("an item named `{0}` already exists here")]
    NameAlreadyExists(String),
    /// A name OneDrive does not take.
    #[error("`{0}` is not a valid name for a drive item")]
    InvalidName(String),
    /// A file stands where the path needs a folder.
    #[error("`{0}` is a file, not a folder")]
    NotAFolder(String),
    /// An upload by id alone names a folder (or the root).
    #[error("the item is not a file")]
    NotAFile,
    /// The root cannot be deleted.
    #[error("the root of a drive cannot be deleted")]
    RootUndeletable,
    /// `If-Match` names a version that is no longer current.
    #[error("the item has changed since the eTag given in If-Match")]
    Modified,
    /// An explicit commit before the last byte arrived.
    #[error("the upload is not complete: {0} bytes are missing")]
    Incomplete(u64),
    /// An explicit commit to a session that did not defer its commit.
    #[error("this upload session commits by itself; it did not ask for deferCommit")]
    NotDeferred,
    /// The body's `item.name` is not the path's.
    #[error("the name in the request body does not match the name in the path")]
    NameMismatch,
    /// The file's size differs from the `fileSize` the session was created with.
    #[error("the file is {sent} bytes, but the upload session was created for {declared}")]
    SizeMismatch {
        /// The `Content-Range` total.
        sent: u64,
        /// The session's `fileSize`.
        declared: u64,
    },
}

impl GraphError for DriveError {
    fn status(&self) -> StatusCode {
        match self {
            Self::ItemNotFound => StatusCode::NOT_FOUND,
            Self::NameAlreadyExists(_) => StatusCode::CONFLICT,
            Self::Modified => StatusCode::PRECONDITION_FAILED,
            Self::RootUndeletable => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::ItemNotFound => "itemNotFound",
            Self::NameAlreadyExists(_) => "nameAlreadyExists",
            Self::Modified => "resourceModified",
            Self::RootUndeletable => "accessDenied",
            Self::SizeMismatch { .. } => "invalidRange",
            _ => "invalidRequest",
        }
    }
}

/// Refusals around the upload itself: auth, routing, bodies, load and storage.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No bearer token, or one the server does not know.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The uploadUrl credential is missing, tampered with, expired, or for another session.
    #[error("the upload URL's credential is not valid for this upload session")]
    InvalidUploadCredential,
    /// An `Authorization` header sent to the pre-authenticated uploadUrl, where the
    /// server is set to refuse one (OneDrive's docs: it "may result in an HTTP 401").
    #[error(
        "the upload URL is pre-authenticated: send no Authorization header to it (Graph may refuse one)"
    )]
    AuthorizationOnUploadUrl,
    /// The caller may not touch this mailbox or item.
    #[error("Access is denied. Check credentials and try again.")]
    AccessDenied,
    /// `/me` with an application token, which has no signed-in user.
    #[error("/me request is only valid with delegated authentication flow")]
    MeWithoutUser,
    /// The message, event or attachment does not exist.
    #[error("the specified object was not found in the store")]
    ItemNotFound,
    /// The upload session does not exist, was cancelled, or has expired.
    #[error("the upload session was not found; it may have expired or been cancelled")]
    SessionNotFound,
    /// The path matches no route.
    #[error("no resource matches the path `{0}`")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method {0} is not allowed on this resource")]
    MethodNotAllowed(String),
    /// A JSON body that could not be read.
    #[error("the request body could not be read as JSON: {0}")]
    InvalidBody(String),
    /// A request body larger than the route accepts.
    #[error("the request body exceeds {max} bytes")]
    BodyTooLarge {
        /// Largest body accepted.
        max: u64,
    },
    /// The request line and headers together are larger than the server reads.
    #[error("the request's headers exceed {max} bytes")]
    HeadersTooLarge {
        /// Largest request head accepted.
        max: u64,
    },
    /// Throttled: too many requests or bytes for this app and mailbox.
    #[error("the application is over its request limit; retry after {retry_after_secs} seconds")]
    Throttled {
        /// When to retry.
        retry_after_secs: u64,
    },
    /// The server is shedding load before reading the body.
    #[error("the service is busy; retry after {retry_after_secs} seconds")]
    Unavailable {
        /// When to retry.
        retry_after_secs: u64,
    },
    /// The disk or store is full; the fragment was not kept.
    #[error("there is no space left to store this fragment; it was not kept")]
    InsufficientStorage,
    /// The client took too long to send the request or its body.
    #[error("the request was not received in time")]
    Timeout,
    /// Anything else that went wrong on our side; the message is for logs, not clients.
    #[error("an internal error occurred; the request was not applied")]
    Internal,
    /// A download's `Range` names no byte of the attachment's `total`.
    #[error("the requested range is not satisfiable: the attachment has {total} bytes")]
    RangeNotSatisfiable {
        /// The attachment's size.
        total: u64,
    },
}

impl GraphError for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_)
            | Self::InvalidUploadCredential
            | Self::AuthorizationOnUploadUrl => StatusCode::UNAUTHORIZED,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::ItemNotFound | Self::SessionNotFound | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidBody(_) | Self::MeWithoutUser => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_)
            | Self::InvalidUploadCredential
            | Self::AuthorizationOnUploadUrl => "InvalidAuthenticationToken",
            Self::AccessDenied => "ErrorAccessDenied",
            Self::ItemNotFound => "ErrorItemNotFound",
            Self::SessionNotFound => "itemNotFound",
            Self::NoRoute(_) => "ResourceNotFound",
            Self::MethodNotAllowed(_) => "MethodNotAllowed",
            Self::InvalidBody(_) => "RequestBodyRead",
            Self::MeWithoutUser => "BadRequest",
            Self::BodyTooLarge { .. } => "RequestEntityTooLarge",
            Self::HeadersTooLarge { .. } => "RequestHeaderFieldsTooLarge",
            Self::Throttled { .. } => "ApplicationThrottled",
            Self::Unavailable { .. } => "serviceNotAvailable",
            Self::InsufficientStorage => "quotaLimitReached",
            Self::Timeout => "timeout",
            Self::Internal => "generalException",
            Self::RangeNotSatisfiable { .. } => "invalidRange",
        }
    }

    fn inner_code(&self) -> Option<&'static str> {
        match self {
            Self::SessionNotFound => Some("uploadSessionNotFound"),
            Self::InsufficientStorage => Some("insufficientStorage"),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Throttled { retry_after_secs } | Self::Unavailable { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }

    fn content_range(&self) -> Option<String> {
        match self {
            Self::RangeNotSatisfiable { total } => {
                crate::download::RangeRequest::Unsatisfiable.content_range(*total)
            }
            _ => None,
        }
    }
}

/// An error answer from a peer, read back from its status and Graph error JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {code}{}: {message}{}", status.as_u16(), inner_code.as_ref().map(|c| format!("/{c}")).unwrap_or_default(), request_id.as_ref().map(|id| format!(" (request-id {id})")).unwrap_or_default())]
pub struct RemoteError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Graph's `error.code`, or the status's reason when the body had none.
    pub code: String,
    /// Graph's detailed `error.innerError.code`, when the answer has one.
    pub inner_code: Option<String>,
    /// Graph's `error.message`, or a short excerpt of the body.
    pub message: String,
    /// `innerError.request-id` (or the `request-id` header), for support requests.
    pub request_id: Option<String>,
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    #[test]
    fn every_fragment_error_is_4xx_and_has_a_graph_code() {
        let all = [
            FragmentError::InvalidRange(ContentRangeError::Missing),
            FragmentError::TotalMismatch {
                sent: 1,
                declared: 2,
            },
            FragmentError::LengthMismatch {
                content_length: 1,
                range_len: 2,
            },
            FragmentError::BodyLength {
                expected: 1,
                got: 0,
            },
            FragmentError::TooLarge { len: 2, max: 1 },
            FragmentError::OutOfOrder {
                start: 5,
                expected: 0,
            },
            FragmentError::Overlap {
                start: 0,
                last: 9,
                expected: 5,
            },
            FragmentError::Busy,
        ];
        for e in all {
            assert!(e.status().is_client_error(), "{e:?}");
            assert!(!e.code().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn statuses_match_the_contract() {
        assert_eq!(FragmentError::TooLarge { len: 2, max: 1 }.status(), 413);
        assert_eq!(
            FragmentError::OutOfOrder {
                start: 5,
                expected: 0
            }
            .status(),
            416
        );
        assert_eq!(RequestError::SessionNotFound.status(), 404);
        assert_eq!(RequestError::Unauthenticated("no token").status(), 401);
        assert_eq!(
            RequestError::Throttled {
                retry_after_secs: 3
            }
            .retry_after_secs(),
            Some(3)
        );
        assert_eq!(CreateError::TooSmall { size: 1, min: 2 }.status(), 400);
    }

    #[test]
    fn upload_errors_carry_graphs_two_level_codes() {
        let check = |e: &dyn GraphError, status: u16, code: &str, inner: Option<&str>| {
            assert_eq!(
                (e.status().as_u16(), e.code(), e.inner_code()),
                (status, code, inner),
                "{e}"
            );
        };
        let overlap = FragmentError::Overlap {
            start: 0,
            last: 9,
            expected: 5,
        };
        check(&overlap, 416, "invalidRange", Some("fragmentOverlap"));
        check(
            &FragmentError::OutOfOrder {
                start: 5,
                expected: 0,
            },
            416,
            "invalidRange",
            Some("fragmentOutOfOrder"),
        );
        check(
            &FragmentError::TooLarge { len: 2, max: 1 },
            413,
            "invalidRequest",
            Some("maxFragmentLengthExceeded"),
        );
        check(
            &FragmentError::MessageSizeExceeded { total: 2, limit: 1 },
            413,
            "ErrorMessageSizeExceeded",
            None,
        );
        check(
            &SessionError::Expired,
            404,
            "itemNotFound",
            Some("uploadSessionNotFound"),
        );
        check(&RequestError::ItemNotFound, 404, "ErrorItemNotFound", None);
        assert_eq!(overlap.detail(), "fragmentOverlap");
        assert_eq!(RequestError::ItemNotFound.detail(), "ErrorItemNotFound");
    }
}
