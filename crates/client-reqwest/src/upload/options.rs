//! What the caller says about one upload ([`UploadOptions`]) and what it gets back
//! ([`Uploaded`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::content_type::guess_content_type;
use crate::error::{Error, Result};
use crate::progress::ProgressSink;
use crate::resume::AttachmentMeta;

/// How one file is attached, and where its progress goes.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The attachment's name (default: the file's name).
    pub name: Option<String>,
    /// Its MIME type (default: guessed from the name's extension,
    /// `application/octet-stream` when unknown).
    pub content_type: Option<String>,
    /// For an inline attachment, the `cid:` the HTML body refers to.
    pub content_id: Option<String>,
    /// Where progress goes.
    pub progress: ProgressSink,
    /// Where to save the resume state (default: a new file in the client's state
    /// directory, if it has one).
    pub state_file: Option<PathBuf>,
}

impl UploadOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    upsession_core::setters! {
        /// Sets the attachment's name.
        name(name: impl Into<String>) => name = Some(name.into());
        /// Sets the MIME type.
        content_type(content_type: impl Into<String>) => content_type = Some(content_type.into());
        /// Makes the attachment inline, referred to as `cid:{content_id}`.
        inline(content_id: impl Into<String>) => content_id = Some(content_id.into());
        /// Reports progress to `sink`.
        progress(sink: ProgressSink) => progress = sink;
    }

    /// Reports progress to a callback.
    #[must_use]
    pub fn on_progress(
        mut self,
        f: impl Fn(&crate::ProgressEvent) + Send + Sync + 'static,
    ) -> Self {
        self.progress = ProgressSink::callback(f);
        self
    }

    upsession_core::setters! {
        /// Saves the resume state to `path`.
        state_file(path: impl Into<PathBuf>) => state_file = Some(path.into());
    }

    /// The attachment's metadata, named `default_name` unless a name was given.
    pub(super) fn meta(&self, default_name: Option<&str>) -> Result<AttachmentMeta> {
        let name = self
            .name
            .clone()
            .or_else(|| default_name.map(str::to_owned))
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Error::InvalidInput("the attachment needs a name".into()))?;
        let content_type = self
            .content_type
            .clone()
            .unwrap_or_else(|| guess_content_type(Path::new(&name)).to_owned());
        Ok(AttachmentMeta {
            name,
            content_type: Some(content_type),
            is_inline: self.content_id.is_some(),
            content_id: self.content_id.clone(),
        })
    }
}

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
}
