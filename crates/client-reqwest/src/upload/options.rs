//! What the caller says about one upload ([`UploadOptions`]).

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::progress::ProgressSink;
use crate::resume::AttachmentMeta;

pub use upsession_client_shared::Uploaded;

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
    /// Cancels the upload when triggered; see [`UploadOptions::cancel_on`].
    pub cancel: Option<CancellationToken>,
    /// Takes the file's SHA-256 too, in the same read, and returns it in
    /// [`Uploaded::sha256`]. Every file upload takes the file's CRC-64/NVME (its
    /// resume identity, [`Uploaded::crc64`]); a drive file's SHA-256 is taken
    /// anyway, to check the answer's. Costs about 0.8 s of CPU per GiB.
    pub sha256: bool,
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
        /// Takes the file's SHA-256 too ([`UploadOptions::sha256`]).
        sha256(on: bool) => sha256 = on;
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
        /// Cancels the upload when `token` is cancelled: a fragment being sent is
        /// abandoned, the session is deleted (`DELETE {uploadUrl}`, which a
        /// Graph-compatible server answers `204`), the resume state is removed, and
        /// the call returns [`Error::Cancelled`]. A token cancelled before the
        /// session exists ends the upload before it is created; a small file's
        /// single `POST`, once sent, is not abandoned.
        ///
        /// One token can cancel many uploads (clone it, or use
        /// [`CancellationToken::child_token`]); dropping the upload's future
        /// instead leaves the session open on the server until it expires, and
        /// its resume state on disk.
        ///
        /// ```no_run
        /// use std::time::Duration;
        /// use upsession_client_reqwest::{CancellationToken, Client, Error, Target, UploadOptions};
        ///
        /// # async fn run() -> Result<(), Error> {
        /// let client = Client::builder().token("…").build()?;
        /// let cancel = CancellationToken::new();
        /// let stop = cancel.clone();
        /// tokio::spawn(async move {
        ///     tokio::time::sleep(Duration::from_secs(30)).await;
        ///     stop.cancel(); // e.g. on Ctrl-C, or a user's "Stop" button
        /// });
        /// let options = UploadOptions::new().cancel_on(cancel);
        /// match client.upload_file(&Target::message("AAMk…"), "big.iso", options).await {
        ///     Ok(done) => println!("attached as {:?}", done.attachment_id),
        ///     Err(Error::Cancelled) => println!("cancelled; the session is deleted"),
        ///     Err(e) => return Err(e),
        /// }
        /// # Ok(())
        /// # }
        /// ```
        cancel_on(token: CancellationToken) => cancel = Some(token);
    }

    /// The attachment's metadata, named `default_name` unless a name was given.
    pub(super) fn meta(&self, default_name: Option<&str>) -> Result<AttachmentMeta> {
        AttachmentMeta::for_upload(
            self.name.as_deref(),
            default_name,
            self.content_type.as_deref(),
            self.content_id.as_deref(),
        )
    }
}
