//! The store many nodes share: records in PostgreSQL ([`Postgres`]), bytes in an
//! S3-compatible bucket ([`S3`]). Nothing is cached across requests: each reads
//! what it needs, and a session is changed under its row's lock.
//!
//! Fragments are objects of their own (see [`super::s3`]): the session record
//! lists the ones it counted, and at completion the same transaction that marks
//! the session complete writes the attachment record with that list as its
//! manifest. Completion copies nothing.

use std::io;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tracing::warn;
use upsession_core::ByteRange;
use upsession_core::error::RequestError;

use super::pg::{PgLock, PgLocked, Postgres};
use super::s3::{S3, S3Credentials};
use super::{
    AttachmentRecord, ByteStream, Commit, DriveRecord, FragmentWriter, ItemRecord, ItemView,
    Locked, SessionGuard, SessionRecord, SessionStore, StoreError, Uploading, Wait,
};

/// Most fragments one session may have: S3's own limit on the parts of one object,
/// which the manifest of an attachment follows.
const MAX_PARTS: usize = 10_000;

/// How often a node looks for expired sessions (every node's, by the database's
/// `deadline` column): a steady tick that requests cannot push back.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How long a request that asked this node's holder of a session to let go tries
/// for the row lock (a holder on another node is not asked, and keeps it).
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Records in PostgreSQL, bytes in a bucket.
#[derive(Debug, Clone)]
pub(crate) struct SharedStore {
    pg: Postgres,
    s3: S3,
}

impl SharedStore {
    /// Opens both and checks that both answer, so that a wrong URL or key stops
    /// the server at start-up, not at the first request. `lock_timeout` bounds how
    /// long a node that stops answering can keep a session locked.
    pub(crate) async fn open(
        store: &str,
        meta: &str,
        lock_timeout: Duration,
        credentials: Option<&S3Credentials>,
    ) -> io::Result<Self> {
        let s3 = S3::open(store, credentials)?;
        let pg = Postgres::connect(meta, lock_timeout).await?;
        s3.check().await?;
        Ok(Self { pg, s3 })
    }
}

#[async_trait]
impl SessionStore for SharedStore {
    async fn server_key(&self) -> io::Result<[u8; 32]> {
        self.pg.server_key().await
    }

    async fn put_item(&self, item: &ItemRecord) -> io::Result<()> {
        self.pg.put_item(item).await
    }

    async fn item(&self, id: &str) -> io::Result<Option<ItemView>> {
        self.pg.get_item(id).await
    }

    async fn read_attachment(
        &self,
        attachment: &AttachmentRecord,
        window: ByteRange,
    ) -> io::Result<ByteStream> {
        self.s3.read(attachment, window).await
    }

    async fn delete_attachment(&self, attachment: &AttachmentRecord) -> io::Result<bool> {
        if !self.pg.delete_attachment(&attachment.meta.id).await? {
            return Ok(false);
        }
        // Its bytes are the objects of the session that made it, which is gone
        // (the engine closed it first) or never comes back to them.
        if let Some(session) = &attachment.session
            && let Err(e) = self.s3.discard(session).await
        {
            warn!(attachment = %attachment.meta.id, error = %e, "could not delete a deleted attachment's objects");
        }
        Ok(true)
    }

    async fn create_session(&self, record: &SessionRecord) -> io::Result<()> {
        self.pg.put_session(record).await
    }

    async fn drive(&self, id: &str) -> io::Result<Option<DriveRecord>> {
        self.pg.get_drive(id).await
    }

    async fn put_drive(&self, drive: &DriveRecord, read: Option<u64>) -> io::Result<bool> {
        self.pg.put_drive(drive, read).await
    }

    async fn attachment(&self, id: &str) -> io::Result<Option<AttachmentRecord>> {
        self.pg.get_attachment(id).await
    }

    async fn collect_garbage(&self) -> io::Result<usize> {
        // Objects are written only under their session's row lock, after the row
        // exists, and a session's or an attachment's objects go before (or, best
        // effort, after) its row: objects no row names are left over for good.
        let ids = self.s3.session_ids().await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let named = self.pg.referenced(&ids).await?;
        let mut gone = 0;
        for id in ids.iter().filter(|id| !named.contains(*id)) {
            self.s3.discard(id).await?;
            gone += 1;
        }
        Ok(gone)
    }

    async fn drive_uploads(&self) -> io::Result<Vec<AttachmentRecord>> {
        self.pg.drive_uploads().await
    }

    async fn peek(&self, id: &str) -> io::Result<Option<SessionRecord>> {
        self.pg.get_session(id).await
    }

    async fn lock(&self, id: &str, wait: Wait) -> Result<Locked, StoreError> {
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        loop {
            match self.pg.lock_session(id).await? {
                PgLocked::Held(lock) => {
                    return Ok(Locked::Held(Box::new(SharedGuard {
                        record: lock.record().clone(),
                        lock: Some(lock),
                        s3: self.s3.clone(),
                    })));
                }
                PgLocked::Missing => return Ok(Locked::Missing),
                PgLocked::Saturated => {
                    return Err(StoreError::Refused(RequestError::Unavailable {
                        retry_after_secs: 1,
                    }));
                }
                PgLocked::Busy
                    if wait == Wait::ForRelease && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                PgLocked::Busy => return Ok(Locked::Busy),
            }
        }
    }

    async fn due(&self, now: SystemTime, limit: usize) -> io::Result<Vec<String>> {
        self.pg
            .due_sessions(now, u32::try_from(limit).unwrap_or(u32::MAX))
            .await
    }

    fn next_due(&self, now: SystemTime) -> Option<SystemTime> {
        Some(now + SWEEP_EVERY)
    }

    async fn list_sessions(&self) -> io::Result<Vec<SessionRecord>> {
        self.pg.list_sessions(1000).await
    }

    async fn uploading(&self) -> io::Result<Vec<Uploading>> {
        self.pg.uploading().await
    }
}

/// A session whose row this request holds locked.
struct SharedGuard {
    record: SessionRecord,
    /// `None` once saved (committed or closed).
    lock: Option<Box<PgLock>>,
    s3: S3,
}

impl SharedGuard {
    fn take_lock(&mut self) -> io::Result<Box<PgLock>> {
        self.lock
            .take()
            .ok_or_else(|| io::Error::other("the session's lock was already saved"))
    }
}

#[async_trait]
impl SessionGuard for SharedGuard {
    fn record(&self) -> &SessionRecord {
        &self.record
    }

    async fn writer(&mut self, range: ByteRange) -> Result<Box<dyn FragmentWriter>, StoreError> {
        // Near the cap only the last fragment is let in; the rest of the file must
        // come in fewer, larger fragments.
        if self.record.parts.len() + 1 >= MAX_PARTS && range.end() != self.record.snapshot.size {
            return Err(StoreError::Refused(RequestError::InvalidBody(format!(
                "this upload session has nearly {MAX_PARTS} fragments; send the rest as one fragment"
            ))));
        }
        Ok(self.s3.writer(&self.record.id, range)?)
    }

    async fn commit(&mut self, commit: Commit) -> io::Result<()> {
        let Commit {
            range,
            mut record,
            completed,
        } = commit;
        record.parts.push([range.start(), range.end()]);
        // The attachment reads the counted fragment objects in place.
        let completed = completed.map(|mut att| {
            att.session = Some(record.id.clone());
            att.parts.clone_from(&record.parts);
            att
        });
        let lock = self.take_lock()?;
        lock.save(Some(&record), completed.as_ref()).await?;
        if completed.is_some()
            && let Err(e) = self.s3.promote(&record).await
        {
            // Only stray objects of uncounted fragments are left behind.
            warn!(session = %record.id, error = %e, "could not tidy a completed session's bytes");
        }
        self.record = record;
        Ok(())
    }

    async fn release(mut self: Box<Self>) {
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }

    async fn close(mut self: Box<Self>, discard_partial: bool) -> io::Result<()> {
        // Bytes first, under the lock: if that fails the record stays, and the next
        // sweep tries again. A closed session never completes, so a record whose
        // bytes are gone is never served.
        if discard_partial {
            self.s3.discard(&self.record.id).await?;
        }
        let lock = self.take_lock()?;
        lock.save(None, None).await
    }
}
