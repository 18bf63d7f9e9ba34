//! The store many nodes share: records in PostgreSQL ([`Postgres`]), bytes in an
//! S3-compatible bucket ([`S3`]). Nothing is cached across requests: each reads
//! what it needs, and a session is changed by the holder of its lease (see
//! [`super::pg`]), which a fragment renews as its bytes arrive.
//!
//! Fragments are objects of their own, one per attempt (see [`super::s3`]): the
//! database lists the ones the session counted, and at completion the same
//! transaction that marks the session complete writes the attachment record with
//! that list as its manifest. Completion copies nothing.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tracing::warn;
use upsession_core::ByteRange;
use upsession_core::error::RequestError;

use super::pg::{PgLease, PgLeased, Postgres, lease_lost};
use super::s3::{Part, S3, S3Credentials};
use super::{
    AttachmentRecord, ByteStream, Commit, DriveRecord, FragmentWriter, ItemRecord, ItemView,
    Locked, SessionGuard, SessionRecord, SessionStore, StoreError, Uploading, Wait,
};
use crate::metrics::Metrics;

/// Most fragments one session may have: S3's own limit on the parts of one object,
/// which the manifest of an attachment follows. It bounds a session's record
/// (every fragment is named in it) against a client sending tiny fragments.
const MAX_PARTS: u64 = 10_000;

/// Why a fragment ending at `end` of a file of `size` bytes, the session's
/// `parts`-th, would leave the rest unable to fit in the fragments still allowed,
/// each at most `max_fragment` bytes: the sentence for the client, naming the
/// smallest fragment that keeps the upload finishable. `None`: it fits.
///
/// Refusing early is the point: a session is never stranded with bytes to go and
/// no fragment left, so any file the limits allow (10,000 × `--max-fragment` is
/// above every `--max-size`) can be finished with large enough fragments.
fn strands(parts: u64, start: u64, end: u64, size: u64, max_fragment: u64) -> Option<String> {
    let rest = size.saturating_sub(end);
    let left = MAX_PARTS.saturating_sub(parts + 1);
    if rest == 0 || left.saturating_mul(max_fragment) >= rest {
        return None;
    }
    // This fragment and the ones left, each of at least `need` bytes, must hold
    // everything from `start`.
    let slots = MAX_PARTS.saturating_sub(parts).max(1);
    let need = size.saturating_sub(start).div_ceil(slots);
    Some(format!(
        "fragments of {} bytes cannot finish this file within {MAX_PARTS} fragments; send fragments of at least {need} bytes",
        end - start
    ))
}

/// How often a node looks for expired sessions (every node's, by the database's
/// `deadline` column): a steady tick that requests cannot push back.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// How long a request that asked this node's holder of a session to let go tries
/// for its lease (a holder on another node is not asked: its lease must run out).
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Records in PostgreSQL, bytes in a bucket.
#[derive(Debug, Clone)]
pub(crate) struct SharedStore {
    pg: Postgres,
    s3: S3,
    metrics: Arc<Metrics>,
    /// The database's clock minus this node's, in milliseconds, as last measured.
    clock_offset_ms: Arc<AtomicI64>,
}

impl SharedStore {
    /// Opens both and checks that both answer, so that a wrong URL or key stops
    /// the server at start-up, not at the first request. `lease` is how long a
    /// session's lease lasts from its last renewal: how long a node that dies or
    /// stops answering keeps a session from the others.
    pub(crate) async fn open(
        store: &str,
        meta: &str,
        lease: Duration,
        credentials: Option<&S3Credentials>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let s3 = S3::open(store, credentials)?;
        let pg = Postgres::connect(meta, lease).await?;
        s3.check().await?;
        Ok(Self {
            pg,
            s3,
            metrics,
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
        })
    }
}

/// Awaits `call`, a call of `backend`'s `op`, and records how long it took
/// (`upsession_backend_seconds`).
async fn timed<T>(
    metrics: &Metrics,
    (backend, op): (&'static str, &'static str),
    call: impl Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let out = call.await;
    metrics.backend_call(backend, op, started.elapsed());
    out
}

/// A fragment's writer that stops as soon as its session's lease is found gone
/// (the lease renews itself meanwhile: see [`PgLease`]), and whose last step (the
/// object's `PUT`, or the multipart upload's completion) is timed.
struct LeasedWriter {
    inner: Box<dyn FragmentWriter>,
    metrics: Arc<Metrics>,
    lost: Arc<AtomicBool>,
}

impl LeasedWriter {
    /// Fails once another attempt has the lease: nothing written from here on
    /// would be counted.
    fn still_held(&self) -> io::Result<()> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(lease_lost());
        }
        Ok(())
    }
}

#[async_trait]
impl FragmentWriter for LeasedWriter {
    async fn write(&mut self, chunk: bytes::Bytes) -> io::Result<()> {
        self.still_held()?;
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> io::Result<()> {
        self.still_held()?;
        let Self { inner, metrics, .. } = *self;
        timed(&metrics, ("s3", "put_fragment"), inner.finish()).await
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
        timed(&self.metrics, ("pg", "item"), self.pg.get_item(id)).await
    }

    async fn read_attachment(
        &self,
        attachment: &AttachmentRecord,
        window: ByteRange,
    ) -> io::Result<ByteStream> {
        timed(
            &self.metrics,
            ("s3", "read"),
            self.s3.read(attachment, window),
        )
        .await
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
        timed(
            &self.metrics,
            ("pg", "create_session"),
            self.pg.put_session(record),
        )
        .await
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

    fn now(&self, local: SystemTime) -> SystemTime {
        let offset = self.clock_offset_ms.load(Ordering::Relaxed);
        let by = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 { local + by } else { local - by }
    }

    async fn sync_clock(&self, local: &(dyn Fn() -> SystemTime + Send + Sync)) {
        let before = local();
        let db = match timed(&self.metrics, ("pg", "clock"), self.pg.now()).await {
            Ok(db) => db,
            Err(e) => {
                warn!(error = %e, "could not read the database's clock; the last offset stays");
                return;
            }
        };
        let after = local();
        // The database read its clock somewhere between the two: the middle.
        let middle = before + after.duration_since(before).unwrap_or_default() / 2;
        let offset = match db.duration_since(middle) {
            Ok(ahead) => i64::try_from(ahead.as_millis()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_millis()).unwrap_or(i64::MAX),
        };
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
    }

    async fn ready(&self) -> io::Result<()> {
        self.pg.ping().await?;
        self.s3.check().await
    }

    async fn collect_garbage(&self) -> io::Result<usize> {
        // Objects are written under their session's lease (a holder whose lease
        // ran out may still finish one; it is never counted), after the row exists, and a session's or an attachment's objects go before (or, best
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
        timed(&self.metrics, ("pg", "peek"), self.pg.get_session(id)).await
    }

    async fn lock(&self, id: &str, wait: Wait) -> Result<Locked, StoreError> {
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        loop {
            match timed(&self.metrics, ("pg", "lease"), self.pg.lease_session(id)).await? {
                PgLeased::Held(lease) => {
                    return Ok(Locked::Held(Box::new(SharedGuard {
                        record: lease.record().clone(),
                        lease: Some(lease),
                        part: None,
                        s3: self.s3.clone(),
                        metrics: Arc::clone(&self.metrics),
                    })));
                }
                PgLeased::Missing => return Ok(Locked::Missing),
                PgLeased::Busy
                    if wait == Wait::ForRelease && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                PgLeased::Busy => return Ok(Locked::Busy),
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

/// A session whose lease this request holds.
struct SharedGuard {
    record: SessionRecord,
    /// `None` once saved (committed or closed).
    lease: Option<Box<PgLease>>,
    /// The fragment being written, once its writer exists: what the commit counts.
    part: Option<Part>,
    s3: S3,
    metrics: Arc<Metrics>,
}

impl SharedGuard {
    fn take_lease(&mut self) -> io::Result<Box<PgLease>> {
        self.lease
            .take()
            .ok_or_else(|| io::Error::other("the session's lease was already given back"))
    }
}

#[async_trait]
impl SessionGuard for SharedGuard {
    fn record(&self) -> &SessionRecord {
        &self.record
    }

    async fn writer(&mut self, range: ByteRange) -> Result<Box<dyn FragmentWriter>, StoreError> {
        let lease = self
            .lease
            .as_ref()
            .ok_or_else(|| io::Error::other("the session's lease was already given back"))?;
        let snapshot = &self.record.snapshot;
        let parts = lease.counted() + u64::try_from(self.record.parts.len()).unwrap_or(u64::MAX);
        if let Some(why) = strands(
            parts,
            range.start(),
            range.end(),
            snapshot.size,
            snapshot.max_fragment,
        ) {
            return Err(StoreError::Refused(RequestError::InvalidBody(why)));
        }
        // The object is this attempt's alone: a late or raced write of the same
        // bytes by another attempt can never replace it.
        let part = Part {
            start: range.start(),
            end: range.end(),
            attempt: Some(lease.owner().to_owned()),
        };
        let inner = self.s3.writer(&self.record.id, &part)?;
        self.part = Some(part);
        Ok(Box::new(LeasedWriter {
            inner,
            metrics: Arc::clone(&self.metrics),
            lost: lease.lost(),
        }))
    }

    async fn commit(&mut self, commit: Commit) -> io::Result<()> {
        let Commit {
            range,
            record,
            completed,
        } = commit;
        // What counts is the object this attempt wrote for these bytes.
        let part = self
            .part
            .take()
            .filter(|p| (p.start, p.end) == (range.start(), range.end()))
            .ok_or_else(|| io::Error::other("a commit of bytes this attempt did not write"))?;
        // The attachment reads the counted fragment objects in place; the save
        // gives it their list.
        let mut completed = completed.map(|mut att| {
            att.session = Some(record.id.clone());
            att
        });
        let lease = self.take_lease()?;
        let saved = lease.save(Some(&record), Some(&part), completed.as_mut());
        timed(&self.metrics, ("pg", "commit"), saved).await?;
        if let Some(att) = &completed
            && let Err(e) = self.s3.promote(&record, &att.parts).await
        {
            // Only stray objects of uncounted fragments are left behind.
            warn!(session = %record.id, error = %e, "could not tidy a completed session's bytes");
        }
        self.record = record;
        Ok(())
    }

    async fn release(mut self: Box<Self>) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }

    async fn close(mut self: Box<Self>, discard_partial: bool) -> io::Result<()> {
        // The row first, while the lease is ours (checked by the delete): deleting
        // bytes first could take those of a request that got the session after
        // this lease ran out. Bytes whose deletion then fails are named by no row,
        // and the next garbage collection takes them.
        let lease = self.take_lease()?;
        lease.save(None, None, None).await?;
        if discard_partial && let Err(e) = self.s3.discard(&self.record.id).await {
            warn!(session = %self.record.id, error = %e, "could not delete a closed session's bytes; garbage collection will");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_PARTS, strands};

    #[test]
    fn a_fragment_is_refused_only_when_the_rest_could_no_longer_fit() {
        const MIB: u64 = 1 << 20;
        // 150 MB in 4 MiB fragments: far from the cap.
        assert_eq!(strands(0, 0, 4 * MIB, 150_000_000, 60 * MIB), None);
        // The last fragment always fits, even at the cap.
        assert_eq!(strands(MAX_PARTS - 1, 10, 20, 20, 60 * MIB), None);
        // A tiny first fragment of a file that needs every fragment full: refused,
        // with the size that keeps it finishable.
        let size = MAX_PARTS * MIB;
        let why = strands(0, 0, 1, size, MIB).unwrap();
        assert!(why.contains("at least"), "{why}");
        let need: u64 = why
            .rsplit("at least ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Fragments of that size (within max_fragment) do finish it, to the end.
        assert_eq!(need, MIB);
        let mut start = 0;
        for parts in 0..MAX_PARTS {
            assert_eq!(strands(parts, start, start + need, size, MIB), None);
            start += need;
        }
        assert_eq!(start, size);
        // Without a limit that fits, a fragment that fits still goes through.
        assert_eq!(strands(0, 0, MIB, (MAX_PARTS - 1) * MIB + 1, MIB), None);
    }
}
