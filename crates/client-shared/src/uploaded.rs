//! What a finished upload returns, whichever client ran it.

use serde::Serialize;

/// A finished upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Uploaded {
    /// The attachment's name.
    pub name: String,
    /// Bytes uploaded.
    pub size: u64,
    /// The attachment's id, from the final answer's body or its `Location`.
    pub attachment_id: Option<String>,
    /// The attachment's URL, the final answer's `Location`.
    pub location: Option<String>,
    /// SHA-256 of the file, lowercase hex (file uploads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Set when the file changed while its last bytes were being sent: the
    /// attachment exists (its id and location are above) and holds the bytes that
    /// were sent, which may not be the file as it is now. Says what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_changed: Option<String>,
}

impl Uploaded {
    /// A finished upload of `size` bytes named `name`, as the final answer gave
    /// it (`attachment_id`, `location`); no file hash, no change noticed.
    pub fn new(
        name: String,
        size: u64,
        attachment_id: Option<String>,
        location: Option<String>,
    ) -> Self {
        Self {
            name,
            size,
            attachment_id,
            location,
            sha256: None,
            file_changed: None,
        }
    }
}
