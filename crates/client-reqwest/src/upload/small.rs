//! Small files: one `POST …/{id}/attachments` with the bytes as base64
//! `contentBytes`, as Graph wants files below its upload-session minimum.
//!
//! One request, sent again only after a `429` or `503` (a `POST` retried after a
//! lost answer could attach the file twice), so there is nothing to resume.

use std::sync::Arc;

use http::header::CONTENT_TYPE;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;
use upsession_core::wire::NewFileAttachment;

use super::Source;
use super::options::Uploaded;
use crate::error::{Error, Result};
use crate::progress::{ProgressKind, ProgressSink};
use crate::resume::{AttachmentMeta, FileIdentity, run_blocking};
use crate::transport::{Inner, Reply};
use upsession_client_shared::{FileHashes, attached};
use upsession_core::target::Target;

/// One small file on its way: everything its `POST` needs.
pub(super) struct SmallFile<'a> {
    pub(super) inner: &'a Inner,
    pub(super) label: Arc<str>,
    pub(super) target: Target,
    pub(super) meta: AttachmentMeta,
    /// The bytes, read whole (they are under the small-file limit).
    pub(super) bytes: Vec<u8>,
    /// The file's identity with its hashes (file uploads only).
    pub(super) identity: Option<FileIdentity>,
    pub(super) progress: &'a ProgressSink,
    pub(super) cancel: Option<CancellationToken>,
}

/// Reads the file of `identity` whole, with its hashes (`kinds`), refusing it if
/// it is no longer that file's size.
pub(super) async fn read_file(
    identity: &FileIdentity,
    kinds: FileHashes,
) -> Result<(Vec<u8>, FileIdentity)> {
    let id = identity.clone();
    run_blocking(&identity.path, "read", move || id.read_whole(kinds)).await
}

/// Reads `size` bytes from the start of `reader`.
pub(super) async fn read_source(reader: &mut impl Source, size: u64) -> Result<Vec<u8>> {
    let io = |e| Error::io("read", "the upload's reader", e);
    reader.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
    let mut bytes =
        vec![0; usize::try_from(size).map_err(|_| Error::InvalidInput("too large".into()))?];
    reader.read_exact(&mut bytes).await.map_err(io)?;
    Ok(bytes)
}

impl SmallFile<'_> {
    /// Attaches the file and reports it, as a session upload would be reported.
    pub(super) async fn run(self) -> Result<Uploaded> {
        let total = self.bytes.len() as u64;
        self.emit(ProgressKind::Started { total });
        match self.post().await {
            Ok(done) => {
                self.emit(ProgressKind::Acknowledged {
                    acknowledged: total,
                    total,
                });
                self.emit(ProgressKind::Completed {
                    attachment_id: done.attachment_id.clone(),
                    location: done.location.clone(),
                });
                tracing::info!(file = %self.label, attachment_id = done.attachment_id.as_deref().unwrap_or(""), "small file attached");
                Ok(done)
            }
            Err(e) => {
                tracing::warn!(file = %self.label, error = %e, "attaching failed");
                self.emit(ProgressKind::Failed {
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// `POST …/attachments`, and what its answer means.
    async fn post(&self) -> Result<Uploaded> {
        if self
            .cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return Err(Error::Cancelled);
        }
        let inner = self.inner;
        let url = inner.attachments_url(&self.target, &[]);
        let total = self.bytes.len() as u64;
        let body = NewFileAttachment::new(self.meta.to_item(total), self.bytes.clone());
        let request = inner
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_request_json().to_string());
        let request = inner.authorize(request).await?;
        tracing::debug!(url = %url, size = total, "POST small file attachment");
        let answer = match inner.send_throttled(request).await? {
            Reply::Answer(answer) => answer,
            Reply::NoAnswer(kind, why) => {
                return Err(Error::post_unanswered(kind, why, url.as_str()));
            }
        };
        let mut uploaded = attached(&answer, &self.meta.name, total, |id| {
            inner.attachments_url(&self.target, &[id]).to_string()
        })?;
        self.emit(ProgressKind::Sent { sent: total, total });
        if let Some(identity) = &self.identity {
            uploaded.set_file_hashes(identity);
        }
        Ok(uploaded)
    }

    fn emit(&self, kind: ProgressKind) {
        self.progress.emit(&self.label, kind);
    }
}
