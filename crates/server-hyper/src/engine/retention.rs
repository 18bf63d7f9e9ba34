//! What the engine gives back: attachments deleted with their bytes, and the
//! per-token limits on what sessions hold open (the core's [`Quotas`], behind a
//! mutex, with the gauges of `/metrics` kept beside).
//!
//! A session counts against its app from its creation until it completes, is
//! cancelled or expires ([`Engine::release`] is called on each of those paths and
//! is harmless when repeated). [`Engine::recount`] rebuilds the counts from the
//! store at start-up and after every sweep, so that sessions loaded from disk
//! count again, and, with a shared store, what another node opened or closed is
//! seen within one sweep (2 s).

use upsession_core::error::{CreateError, RequestError};
use upsession_core::identity::Mailbox;
use upsession_core::quota::Quotas;
use upsession_core::route::ItemPath;

use super::{Engine, Failure, fail, storage_failure};
use crate::store::SessionRecord;

impl Engine {
    /// `DELETE …/attachments/{aid}`: the completed session that made the
    /// attachment goes first (a re-send of its last fragment is then 404
    /// `uploadSessionNotFound`, never a 201 naming what is gone), then the
    /// attachment's record and its bytes. The message's size limit counts it no
    /// more. An upload still open has no attachment yet: its id is 404 here.
    pub(crate) async fn delete_attachment(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        aid: &str,
    ) -> Result<(), Failure> {
        let attachment = self.attachment(path, mailbox, aid).await?;
        if let Some(session) = &attachment.session {
            self.forget_completed(session).await?;
        }
        let deleted = self
            .store
            .delete_attachment(&attachment)
            .await
            .map_err(storage_failure)?;
        if !deleted {
            // Another request deleted it meanwhile.
            return Err(fail(RequestError::ItemNotFound));
        }
        self.metrics.attachments_deleted.inc();
        tracing::info!(attachment = %aid, "attachment deleted");
        Ok(())
    }

    /// Closes the completed session `id`, kept to answer re-sends; gone already
    /// is fine.
    pub(super) async fn forget_completed(&self, id: &str) -> Result<(), Failure> {
        let Some(guard) = self.lock_waiting(id).await? else {
            return Ok(());
        };
        guard.close(false).await.map_err(storage_failure)?;
        self.closed(id, false, false);
        Ok(())
    }

    /// Counts the new session `record` against its app, or refuses it (429 for
    /// the sessions, 507 for the declared bytes).
    pub(super) fn admit(&self, record: &SessionRecord) -> Result<(), Failure> {
        let mut quotas = self.quotas.lock().expect("quotas lock");
        let admitted = quotas.admit(&record.app, &record.id, record.snapshot.size);
        match admitted {
            Ok(()) => {
                self.quota_gauges(&quotas);
                Ok(())
            }
            Err(e) => {
                let reason = match e {
                    CreateError::TooManySessions { .. } => "sessions",
                    _ => "bytes",
                };
                self.metrics.refused(reason);
                tracing::info!(app = %record.app, reason, "upload session refused by the per-token limits");
                Err(fail(e))
            }
        }
    }

    /// A session whose size its first fragment said (a drive upload without
    /// `fileSize`) counts `size` bytes from now on, or the fragment is refused.
    pub(super) fn readmit(&self, record: &SessionRecord, size: u64) -> Result<(), Failure> {
        let mut quotas = self.quotas.lock().expect("quotas lock");
        quotas.release(&record.id);
        if let Err(e) = quotas.admit(&record.app, &record.id, size) {
            // It stays counted as it was.
            let _ = quotas.admit(&record.app, &record.id, 0);
            self.metrics.refused("bytes");
            return Err(fail(e));
        }
        self.quota_gauges(&quotas);
        Ok(())
    }

    /// The session `id` is no longer uploading: its share goes back.
    pub(super) fn release(&self, id: &str) {
        let mut quotas = self.quotas.lock().expect("quotas lock");
        if quotas.release(id) {
            self.quota_gauges(&quotas);
        }
    }

    /// Counts again, from the store, what every app holds open.
    pub(crate) async fn recount(&self) {
        match self.store.uploading().await {
            Ok(open) => {
                let mut quotas = self.quotas.lock().expect("quotas lock");
                quotas.reset(open);
                self.quota_gauges(&quotas);
            }
            Err(e) => tracing::warn!(error = %e, "could not count the open upload sessions"),
        }
    }

    fn quota_gauges(&self, quotas: &Quotas) {
        let total = quotas.total();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.sessions_uploading.set(gauge(total.sessions));
        self.metrics.declared_bytes.set(gauge(total.declared_bytes));
    }
}
