//! [`SessionStatus`]: what `GET {uploadUrl}` says of a session, for both clients.

use std::time::SystemTime;

use serde::Serialize;
use upsession_core::RangeSet;
use upsession_core::header::ExpectedRangeError;
use upsession_core::wire::UploadSession;

use crate::error::{Error, Result};

/// An upload session's state, as `GET {uploadUrl}` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SessionStatus {
    session: UploadSession,
}

impl SessionStatus {
    /// When the session expires, if the server said (and it could be read).
    pub fn expires(&self) -> Option<SystemTime> {
        self.session.expires()
    }

    /// The expiry as the server wrote it.
    pub fn expiration_date_time(&self) -> Option<&str> {
        self.session.expiration_date_time.as_deref()
    }

    /// `nextExpectedRanges` as the server wrote them (`"a-b"`, `"a-"` or `"a"`).
    pub fn next_expected_ranges(&self) -> &[String] {
        self.session
            .next_expected_ranges
            .as_deref()
            .unwrap_or_default()
    }

    /// The expected ranges within a file of `total` bytes.
    pub fn next_expected(&self, total: u64) -> Result<RangeSet, ExpectedRangeError> {
        self.session.next_expected(total)
    }
}

impl SessionStatus {
    /// Reads the body of a `GET {uploadUrl}` answer. The uploadUrl, which only
    /// createUploadSession should carry, is never kept here.
    pub fn from_body(body: &[u8]) -> Result<Self> {
        let mut session: UploadSession = serde_json::from_slice(body).map_err(|e| {
            Error::Protocol(format!("the session status is not an uploadSession: {e}"))
        })?;
        session.upload_url = None;
        Ok(Self { session })
    }
}
