//! The session engine: every operation on items, upload sessions and attachments,
//! with no HTTP in sight. It owns locking (one request at a time changes a session,
//! through the store's [`SessionGuard`]) and durability (bytes stored, then the
//! commit persisted, then counted), and asks the core for every decision.
//!
//! Front-ends (the Graph routes today) turn requests into these calls and their
//! results into answers. What is given back (attachments deleted, the per-token
//! limits on what is held open) is in [`retention`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use upsession_core::drive::ContentHasher;
use upsession_core::error::{CreateError, FragmentError, GraphError, RequestError, SessionError};
use upsession_core::identity::Mailbox;
use upsession_core::quota::{QuotaLimits, Quotas};
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::{
    Answer, Closed, Limits, MessageLimit, PutDecision, Session, WriteTicket, takes_over, while_busy,
};
use upsession_core::wire::{AttachmentItem, NewFileAttachment};
use upsession_core::{ByteRange, ContentRange};

use crate::metrics::Metrics;

pub(crate) mod drive;
mod retention;
use crate::store::{
    AttachmentRecord, ByteStream, ItemRecord, ItemView, Locked, SessionGuard, SessionRecord,
    SessionStore, StoreError, Wait,
};

/// A refusal on its way to becoming Graph's error JSON.
pub(crate) type Failure = Box<dyn GraphError + Send + Sync>;

/// Boxes a core error as a [`Failure`].
pub(crate) fn fail<E: GraphError + Send + Sync + 'static>(e: E) -> Failure {
    Box::new(e)
}

/// `Retry-After` of a request that found the shared store out of reach.
const UNREACHABLE_RETRY_AFTER_SECS: u64 = 2;

/// Maps a storage failure to its answer: a full disk is 507, a shared store's
/// lease lost to a newer request 409 `fragmentInProgress`
/// ([`crate::store::pg::LeaseLost`]), its database or bucket out of reach 503
/// with `Retry-After` (`ConnectionAborted`); anything else 500.
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
pub(crate) fn storage_failure(err: std::io::Error) -> Failure {
    if err.raw_os_error() == Some(28) || err.kind() == std::io::ErrorKind::StorageFull {
        warn!("storage full: {err}");
        return fail(RequestError::InsufficientStorage);
    }
    if crate::store::pg::is_lease_lost(&err) {
        // A shared store's lease passed to a newer request (this one's ran out):
        // nothing of this fragment counts, and that request writes the session.
        warn!("{err}");
        return fail(FragmentError::Busy);
    }
    if err.kind() == std::io::ErrorKind::ConnectionAborted {
        // The shared store's database or bucket is out of reach (restarting, say): nothing was acknowledged, and the same request can succeed soon.
        warn!("storage unreachable: {err}");
        return fail(RequestError::Unavailable {
            retry_after_secs: UNREACHABLE_RETRY_AFTER_SECS,
        });
    }
    tracing::error!("storage failed: {err}");
    fail(RequestError::Internal)
}

fn store_failure(err: StoreError) -> Failure {
    match err {
        StoreError::Io(e) => storage_failure(e),
        StoreError::Refused(e) => fail(e),
    }
}

/// Why a fragment's body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection broke or the body was malformed.
    Broken,
    /// No byte came for too long.
    Stalled,
}

/// A fragment's body, chunk by chunk.
pub(crate) type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// What the engine needs to know of the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// Session limits, with the dialect's session rules applied.
    pub(crate) limits: Limits,
    /// Exchange's message size limit, judged per fragment.
    pub(crate) message_size_limit: Option<u64>,
    /// The longest one fragment may take, however steadily it trickles.
    pub(crate) fragment_timeout: Duration,
    /// What one bearer token may hold open.
    pub(crate) quota: QuotaLimits,
    /// How far this node's clock is off, in seconds (tests stand for a wrong
    /// clock with it).
    pub(crate) clock_skew_secs: i64,
}

/// The request storing a session's bytes right now, on this node.
#[derive(Debug)]
struct Holder {
    range: ByteRange,
    release: Arc<Notify>,
    token: u64,
}

/// The session engine. See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Engine {
    store: Arc<dyn SessionStore>,
    rules: Rules,
    metrics: Arc<Metrics>,
    holders: Mutex<HashMap<String, Holder>>,
    /// Sessions still uploading and their declared bytes, per app.
    quotas: Mutex<Quotas>,
    tokens: std::sync::atomic::AtomicU64,
    /// Woken when a deadline may have moved earlier, for the expiry driver.
    pub(crate) deadlines_changed: Notify,
    /// The commits in flight, which outlive the requests that started them.
    tasks: TaskTracker,
    /// When the sweep last looked for bytes no record names.
    garbage_collected: Mutex<Option<SystemTime>>,
}

/// How often the sweep looks for stored bytes no record names (and at start-up).
const GARBAGE_EVERY: Duration = Duration::from_secs(10 * 60);

/// What a fragment's headers lead to; see [`Engine::begin_fragment`].
pub(crate) enum Fragment {
    /// Bytes already stored: read and discard `body_len` body bytes, then answer.
    Replay {
        answer: Answer,
        body_len: u64,
        record: SessionRecord,
    },
    /// New bytes: [`Writing::store`] the body.
    Write(Writing),
}

/// New ids: opaque, URL- and path-safe (Graph's are opaque base64).
pub(crate) fn random_id(prefix: &str) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Engine {
    pub(crate) fn new(store: Arc<dyn SessionStore>, rules: Rules, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            quotas: Mutex::new(Quotas::new(rules.quota)),
            rules,
            metrics,
            holders: Mutex::new(HashMap::new()),
            tokens: std::sync::atomic::AtomicU64::new(1),
            deadlines_changed: Notify::new(),
            tasks: TaskTracker::new(),
            garbage_collected: Mutex::new(None),
        }
    }

    /// Waits for every commit in flight: after this, the engine writes nothing
    /// more on behalf of a request that has already started.
    pub(crate) async fn finish_commits(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.store.settled().await;
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// This node's clock (off by the configured skew, in tests).
    fn local_now(&self) -> SystemTime {
        let skew = Duration::from_secs(self.rules.clock_skew_secs.unsigned_abs());
        if self.rules.clock_skew_secs >= 0 {
            SystemTime::now() + skew
        } else {
            SystemTime::now() - skew
        }
    }

    /// The time every decision is made at: the store's (a shared store's is its
    /// database's, so that nodes whose clocks differ decide expiry alike).
    pub(crate) fn now(&self) -> SystemTime {
        self.store.now(self.local_now())
    }

    /// Measures the store's clock against this node's.
    pub(crate) async fn sync_clock(&self) {
        self.store.sync_clock(&|| self.local_now()).await;
    }

    // ----- items and attachments -----

    pub(crate) async fn create_item(
        &self,
        kind: ItemKind,
        subject: String,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Result<ItemRecord, Failure> {
        let record = ItemRecord {
            id: random_id("AAMk"),
            kind,
            subject,
            created: now,
            owner: mailbox.clone(),
        };
        self.store
            .put_item(&record)
            .await
            .map_err(storage_failure)?;
        Ok(record)
    }

    /// The item at `path` (of the kind the path names) in `mailbox`, and its
    /// attachments. Another mailbox's item is not found, as Graph answers.
    pub(crate) async fn item(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
    ) -> Result<ItemView, Failure> {
        match self.store.item(&path.id).await.map_err(storage_failure)? {
            Some(view) if path.kind == view.record.kind && view.record.owner == *mailbox => {
                Ok(view)
            }
            _ => Err(fail(RequestError::ItemNotFound)),
        }
    }

    pub(crate) async fn attachment(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        aid: &str,
    ) -> Result<AttachmentRecord, Failure> {
        self.item(path, mailbox)
            .await?
            .attachments
            .into_iter()
            .find(|a| a.meta.id == aid)
            .ok_or_else(|| fail(RequestError::ItemNotFound))
    }

    /// The bytes `window` of the attachment `att`.
    pub(crate) async fn attachment_bytes(
        &self,
        att: &AttachmentRecord,
        window: ByteRange,
    ) -> Result<ByteStream, Failure> {
        self.store
            .read_attachment(att, window)
            .await
            .map_err(storage_failure)
    }

    // ----- sessions -----

    /// Opens a session for `item` on the item at `path`, created by `app`.
    pub(crate) async fn create_session(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        item: AttachmentItem,
        app: &str,
        now: SystemTime,
    ) -> Result<(SessionRecord, Session), Failure> {
        self.open_session(path, mailbox, item, app, now, &self.rules.limits)
            .await
    }

    /// Attaches a small file (`POST …/attachments`) the way a session would: a
    /// session of one fragment holding every byte, stored and committed as any
    /// fragment (message size limit included), then closed, leaving its attachment.
    pub(crate) async fn attach_small(
        self: &Arc<Self>,
        path: &ItemPath,
        mailbox: &Mailbox,
        new: NewFileAttachment,
        app: &str,
        now: SystemTime,
    ) -> Result<AttachmentRecord, Failure> {
        let size = new.item.size;
        let max = NewFileAttachment::MAX_SIZE;
        if size > max {
            return Err(fail(CreateError::TooLarge { size, max }));
        }
        let limits = self.rules.limits.clone().with_min_size(1);
        let limits = limits
            .clone()
            .with_max_fragment(limits.max_fragment.max(size));
        let (record, _) = self
            .open_session(path, mailbox, new.item, app, now, &limits)
            .await?;
        let stored = self
            .store_whole(&record.id, Bytes::from(new.bytes), now)
            .await;
        // Completed, the attachment stays; refused, the session goes with its bytes.
        let closed = self.cancel(&record.id, self.now()).await;
        stored.and(closed)?;
        self.attachment(path, mailbox, &record.attachment_id).await
    }

    /// Stores `bytes` as the one fragment of the session `id`.
    async fn store_whole(
        self: &Arc<Self>,
        id: &str,
        bytes: Bytes,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let len = bytes.len() as u64;
        let range = ByteRange::new(0, len)
            .and_then(|r| ContentRange::new(r, len))
            .ok_or_else(|| fail(RequestError::Internal))?
            .to_string();
        match self
            .begin_fragment(id, Some(&range), Some(len), now)
            .await?
        {
            Fragment::Write(writing) => {
                let body = futures_util::stream::once(async move { Ok(bytes) });
                let engine = Arc::clone(self);
                writing
                    .store(Box::pin(body), move || engine.now())
                    .await
                    .map(drop)
            }
            // A new session holds nothing yet to replay.
            Fragment::Replay { .. } => Err(fail(RequestError::Internal)),
        }
    }

    /// Opens a session under `limits`.
    async fn open_session(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        item: AttachmentItem,
        app: &str,
        now: SystemTime,
        limits: &Limits,
    ) -> Result<(SessionRecord, Session), Failure> {
        self.item(path, mailbox).await?;
        let session = Session::open(now, item.size, limits).map_err(fail)?;
        let record = SessionRecord {
            drive: None,
            id: random_id(""),
            item_id: path.id.clone(),
            kind: path.kind,
            beta: path.version == Version::Beta,
            user: match &path.user {
                User::Me => None,
                User::Id(u) => Some(u.clone()),
            },
            attachment_id: random_id("AAMk"),
            app: app.to_owned(),
            attachment: item,
            owner: mailbox.clone(),
            snapshot: session.snapshot(),
            parts: Vec::new(),
            sums: Vec::new(),
            journal_epoch: 0,
        };
        self.register(record, session).await
    }

    /// Stores a new session's record, counted against its app's limits.
    async fn register(
        &self,
        record: SessionRecord,
        session: Session,
    ) -> Result<(SessionRecord, Session), Failure> {
        self.admit(&record)?;
        if let Err(e) = self.store.create_session(&record).await {
            self.release(&record.id);
            return Err(storage_failure(e));
        }
        self.metrics.sessions_created.inc();
        self.metrics.sessions_open.inc();
        self.deadlines_changed.notify_one();
        info!(session = %record.id, "upload session created");
        Ok((record, session))
    }

    /// The session `id` as committed, restored for one decision.
    async fn peeked(&self, id: &str) -> Result<(SessionRecord, Session), Failure> {
        let record = self
            .store
            .peek(id)
            .await
            .map_err(storage_failure)?
            .ok_or_else(|| fail(RequestError::SessionNotFound))?;
        let session = restore(&record)?;
        Ok((record, session))
    }

    /// `GET {uploadUrl}`.
    pub(crate) async fn status(
        &self,
        id: &str,
        now: SystemTime,
    ) -> Result<(Answer, SessionRecord), Failure> {
        let (record, mut session) = self.peeked(id).await?;
        // A session found expired is cleaned up by the sweep: its deadline is past.
        let answer = session.status(now).map_err(fail)?;
        Ok((answer, record))
    }

    /// The app and mailbox a session belongs to, for throttling.
    pub(crate) async fn owner(&self, id: &str) -> Option<(String, String)> {
        let record = self.store.peek(id).await.ok()??;
        Some((record.app, record.owner.as_str().to_owned()))
    }

    /// Every session this node knows of, with the core's view of each.
    pub(crate) async fn sessions(&self) -> Result<Vec<(SessionRecord, Session)>, Failure> {
        let records = self.store.list_sessions().await.map_err(storage_failure)?;
        Ok(records
            .into_iter()
            .filter_map(|r| Session::restore(&r.snapshot).ok().map(|s| (r, s)))
            .collect())
    }

    /// Whether a request for `content_range` takes over the write this node has
    /// in flight for `id` (the new request wins); if so, that write is told.
    fn take_over(&self, id: &str, content_range: Option<&str>) -> bool {
        let Some(incoming) = content_range.and_then(|c| c.parse::<ContentRange>().ok()) else {
            return false;
        };
        let holders = self.holders.lock().expect("holders lock");
        match holders.get(id) {
            Some(h) if takes_over(h.range, incoming.range()) => {
                h.release.notify_waiters();
                true
            }
            _ => false,
        }
    }

    /// Decides what to do with a fragment from its headers alone, before any body
    /// byte is read. Re-sends and refusals never wait for a write in flight.
    pub(crate) async fn begin_fragment(
        self: &Arc<Self>,
        id: &str,
        content_range: Option<&str>,
        content_length: Option<u64>,
        now: SystemTime,
    ) -> Result<Fragment, Failure> {
        let wait = if self.take_over(id, content_range) {
            Wait::ForRelease
        } else {
            Wait::No
        };
        let locked = self.store.lock(id, wait).await.map_err(store_failure)?;
        let guard = match locked {
            Locked::Held(guard) => guard,
            Locked::Missing => return Err(fail(RequestError::SessionNotFound)),
            Locked::Busy => {
                // Another request writes: a re-send or a refusal is answered from
                // what is committed; new bytes wait their turn.
                let (record, mut session) = self.peeked(id).await?;
                session.set_message_limit(self.message_limit(&record).await?);
                return match while_busy(session.handle_put(now, content_range, content_length))
                    .map_err(fail)?
                {
                    PutDecision::Replay {
                        answer, body_len, ..
                    } => Ok(Fragment::Replay {
                        answer,
                        body_len,
                        record,
                    }),
                    PutDecision::Write(_) => Err(fail(FragmentError::Busy)),
                };
            }
        };
        let record = guard.record().clone();
        let mut session = restore(&record)?;
        session.set_message_limit(self.message_limit(&record).await?);
        let sized = session.size_known();
        let decision = session
            .handle_put(now, content_range, content_length)
            .map_err(fail)
            .and_then(|decision| match decision {
                // A drive upload without `fileSize` learns its size now: it
                // counts against its app's declared bytes from here.
                PutDecision::Write(ticket) if !sized && session.size_known() => self
                    .readmit(&record, session.size())
                    .map(|()| PutDecision::Write(ticket)),
                other => Ok(other),
            });
        let cleanup = session.poll_cleanup();
        match decision {
            Err(e) => {
                if let Some(closed) = cleanup {
                    // The request found it expired: close it now.
                    self.close(guard, closed).await;
                } else {
                    guard.release().await;
                }
                Err(e)
            }
            Ok(PutDecision::Replay {
                answer, body_len, ..
            }) => {
                // A replay changes nothing: others need not wait for its body.
                guard.release().await;
                Ok(Fragment::Replay {
                    answer,
                    body_len,
                    record,
                })
            }
            Ok(PutDecision::Write(ticket)) => {
                Ok(Fragment::Write(self.writing(guard, session, ticket)))
            }
        }
    }

    /// Registers this node's writer of `session`, whom a newer request can ask to
    /// let go.
    fn writing(
        self: &Arc<Self>,
        guard: Box<dyn SessionGuard>,
        session: Session,
        ticket: WriteTicket,
    ) -> Writing {
        let id = guard.record().id.clone();
        let release = Arc::new(Notify::new());
        let token = self
            .tokens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Created before it is registered: no notice can be missed.
        let released = Box::pin(Arc::clone(&release).notified_owned());
        self.holders.lock().expect("holders lock").insert(
            id.clone(),
            Holder {
                range: ticket.range(),
                release,
                token,
            },
        );
        self.metrics.fragments_writing.inc();
        Writing {
            engine: Arc::clone(self),
            id,
            token,
            guard: Some(guard),
            session,
            ticket: Some(ticket),
            released,
        }
    }

    /// The message's size limit and its other attachments, when a limit is set.
    async fn message_limit(&self, record: &SessionRecord) -> Result<Option<MessageLimit>, Failure> {
        let Some(limit) = self.rules.message_size_limit else {
            return Ok(None);
        };
        if record.drive.is_some() {
            // A drive file is in no message.
            return Ok(None);
        }
        let attached = self
            .item(&record.item_path(), &record.owner)
            .await?
            .attachments
            .iter()
            .map(|a| a.meta.size)
            .sum();
        Ok(Some(MessageLimit { limit, attached }))
    }

    /// `DELETE {uploadUrl}`: a write in flight is asked to let go, then the session
    /// is closed (an unfinished upload's bytes go; a finished one's attachment stays).
    pub(crate) async fn cancel(&self, id: &str, now: SystemTime) -> Result<(), Failure> {
        if let Some(h) = self.holders.lock().expect("holders lock").get(id) {
            h.release.notify_waiters();
        }
        let guard = self
            .lock_waiting(id)
            .await?
            .ok_or_else(|| fail(RequestError::SessionNotFound))?;
        let mut session = restore(guard.record())?;
        let result = session.cancel(now);
        if let Some(closed) = session.poll_cleanup() {
            let cancelled = result.is_ok();
            let discard = closed.discard_partial;
            let record = guard.record().clone();
            guard.close(discard).await.map_err(storage_failure)?;
            self.closed(&record.id, discard, cancelled);
            self.drive_session_closed(&record).await;
        }
        result.map(drop).map_err(fail)
    }

    /// The session `id` to close, waiting for a request that holds it (this node's
    /// writer was asked to let go); `None`: there is no such session.
    async fn lock_waiting(&self, id: &str) -> Result<Option<Box<dyn SessionGuard>>, Failure> {
        match self
            .store
            .lock(id, Wait::ForRelease)
            .await
            .map_err(store_failure)?
        {
            Locked::Held(guard) => Ok(Some(guard)),
            Locked::Missing => Ok(None),
            Locked::Busy => Err(fail(FragmentError::Busy)),
        }
    }

    /// The `expire` fault of the test double: the session expires now.
    pub(crate) async fn expire_now(&self, id: &str) {
        if let Ok(Locked::Held(guard)) = self.store.lock(id, Wait::No).await {
            let Ok(mut session) = restore(guard.record()) else {
                return;
            };
            let _ = session.handle_timeout(session.hard_expiry());
            match session.poll_cleanup() {
                Some(closed) => self.close(guard, closed).await,
                None => guard.release().await,
            }
        }
    }

    /// Closes a session the core found closed; failures are retried by the sweep.
    async fn close(&self, guard: Box<dyn SessionGuard>, closed: Closed) {
        let record = guard.record().clone();
        match guard.close(closed.discard_partial).await {
            Ok(()) => {
                self.closed(&record.id, closed.discard_partial, false);
                self.drive_session_closed(&record).await;
            }
            Err(e) => warn!(session = %record.id, error = %e, "could not close an expired session"),
        }
    }

    fn closed(&self, id: &str, discarded: bool, cancelled: bool) {
        self.release(id);
        self.metrics.sessions_open.dec();
        if discarded {
            if cancelled {
                self.metrics.sessions_cancelled.inc();
            } else {
                self.metrics.sessions_expired.inc();
            }
        }
        debug!(session = %id, cancelled, "session closed");
    }

    // ----- expiry -----

    /// When the next session may expire.
    pub(crate) fn next_due(&self, now: SystemTime) -> Option<SystemTime> {
        self.store.next_due(now)
    }

    /// Expires what is due: partial bytes are deleted, completed attachments stay.
    /// Works through due sessions in batches, a bounded number per call; a session
    /// a request holds is left for the next sweep. Then counts again what each
    /// token holds open, from the store (what other nodes changed included).
    pub(crate) async fn sweep(&self) {
        self.sync_clock().await;
        let now = self.now();
        self.expire_due(now).await;
        self.recount().await;
        let due = {
            let mut last = self.garbage_collected.lock().expect("garbage lock");
            let due =
                last.is_none_or(|at| now.duration_since(at).unwrap_or_default() >= GARBAGE_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        if due {
            self.collect_garbage().await;
        }
    }

    /// `/readyz`: whether the store (its database and bucket) answers; 503 with
    /// `Retry-After` when it does not.
    pub(crate) async fn ready(&self) -> Result<(), Failure> {
        self.store.ready().await.map_err(|e| {
            warn!(error = %e, "not ready");
            fail(RequestError::Unavailable {
                retry_after_secs: 5,
            })
        })
    }

    /// Deletes stored bytes no record names (the store's business how).
    pub(crate) async fn collect_garbage(&self) {
        match self.store.collect_garbage().await {
            Ok(0) => {}
            Ok(n) => info!(sessions = n, "bytes no record names deleted"),
            Err(e) => warn!(error = %e, "could not look for bytes no record names"),
        }
    }

    async fn expire_due(&self, now: SystemTime) {
        const BATCH: usize = 100;
        for _ in 0..10 {
            let due = match self.store.due(now, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    warn!(error = %e, "could not look for expired sessions");
                    return;
                }
            };
            let full = due.len() == BATCH;
            let mut closed = 0;
            for id in due {
                let Ok(Locked::Held(guard)) = self.store.lock(&id, Wait::No).await else {
                    continue;
                };
                let Ok(mut session) = Session::restore(&guard.record().snapshot) else {
                    // It can never be served; left in place it would stay due forever.
                    tracing::error!(session = %id, "unusable session record deleted (its bytes are kept)");
                    if guard.close(false).await.is_ok() {
                        self.release(&id);
                    }
                    continue;
                };
                let _ = session.handle_timeout(now);
                match session.poll_cleanup() {
                    Some(c) => {
                        self.close(guard, c).await;
                        closed += 1;
                    }
                    None => guard.release().await,
                }
            }
            if !full || closed == 0 {
                return;
            }
        }
    }
}

/// The core session of a record; a record that cannot be one is our fault.
fn restore(record: &SessionRecord) -> Result<Session, Failure> {
    Session::restore(&record.snapshot).map_err(|e| {
        tracing::error!(session = %record.id, error = %e, "unusable session record");
        fail(RequestError::Internal)
    })
}

/// A fragment being stored by the request that holds its session. Dropped before
/// [`Writing::store`] ends (the client hung up), it stores nothing more, counts
/// nothing, and lets go.
pub(crate) struct Writing {
    engine: Arc<Engine>,
    id: String,
    token: u64,
    guard: Option<Box<dyn SessionGuard>>,
    session: Session,
    ticket: Option<WriteTicket>,
    released: Pin<Box<tokio::sync::futures::OwnedNotified>>,
}

impl Writing {
    /// The bytes to store.
    pub(crate) fn range(&self) -> ByteRange {
        self.ticket.as_ref().map_or_else(
            || ByteRange::new(0, 1).expect("a non-empty range"),
            WriteTicket::range,
        )
    }

    /// Streams exactly the ticket's bytes to the store, then makes the commit
    /// durable and counts it. A newer request for the same fragment stops it
    /// (`Superseded`); the commit itself runs to its end even if the caller goes.
    pub(crate) async fn store(
        mut self,
        body: BodyStream,
        now: impl Fn() -> SystemTime + Send + 'static,
    ) -> Result<(Answer, SessionRecord), Failure> {
        let range = self.range();
        let fragment_timeout = self.engine.rules.fragment_timeout;
        let mut guard = self.guard.take().expect("a writing holds its guard");
        let hasher = guard.record().drive.as_ref().map(|d| d.hasher.clone());
        let stored = tokio::select! {
            stored = tokio::time::timeout(fragment_timeout, write_body(&mut *guard, range, body, hasher)) => {
                stored.unwrap_or_else(|_| Err(fail(RequestError::Timeout)))
            }
            () = &mut self.released => Err(fail(SessionError::Superseded)),
        };
        let sums = stored?;
        let ticket = self.ticket.take().expect("a writing holds its ticket");
        let mut session = self.session.clone();
        let engine = Arc::clone(&self.engine);
        // Counting and recording run to their end in their own task: a completion is
        // never cut short by a client hanging up.
        let task = self.engine.tasks.spawn(async move {
            let now = now();
            let pending = session.prepare_commit(now, ticket).map_err(fail)?;
            let commit = guard.record().commit(range, sums, &pending, now);
            let completes_drive_file = *pending.answer() == Answer::Completed
                && commit.record.drive.as_ref().is_some_and(|d| !d.defer_commit);
            if completes_drive_file
                && let Err(e) = engine.check_drive_upload(&commit.record).await
            {
                // The file cannot go there (409 under `fail`): the last fragment
                // is not taken, and the session waits for it.
                session.abort(pending);
                return Err(e);
            }
            match guard.commit(commit).await {
                Ok(()) => {
                    let answer = session.confirm(pending);
                    engine.metrics.bytes_received.inc_by(range.len());
                    engine.deadlines_changed.notify_one();
                    if answer == Answer::Completed {
                        engine.release(&guard.record().id);
                        engine.metrics.sessions_completed.inc();
                        info!(session = %guard.record().id, attachment = %guard.record().attachment_id, "upload completed");
                        if completes_drive_file
                            && let Err(e) = engine.put_drive_upload(guard.record(), now).await
                        {
                            // Answered from the tree by the front-end (a conflict
                            // since the check is its 409); the bytes go at expiry.
                            debug!(session = %guard.record().id, error = %e.detail(), "drive file not put");
                        }
                    }
                    Ok((answer, guard.record().clone()))
                }
                Err(e) => {
                    // Not durable, so not acknowledged: the session expects these
                    // bytes again.
                    session.abort(pending);
                    Err(storage_failure(e))
                }
            }
        });
        task.await.unwrap_or_else(|panicked| {
            tracing::error!(session = %self.id, "fragment task failed: {panicked}");
            Err(fail(RequestError::Internal))
        })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.engine.metrics.fragments_writing.dec();
        let mut holders = self.engine.holders.lock().expect("holders lock");
        if holders.get(&self.id).is_some_and(|h| h.token == self.token) {
            holders.remove(&self.id);
        }
    }
}

/// Streams exactly `range.len()` body bytes into the store at `range.start()`;
/// the CRC-32C of the bytes written, and a drive upload's hashes taken on over
/// them.
async fn write_body(
    guard: &mut dyn SessionGuard,
    range: ByteRange,
    mut body: BodyStream,
    mut hasher: Option<ContentHasher>,
) -> Result<(u32, Option<ContentHasher>), Failure> {
    let mut writer = guard.writer(range).await.map_err(store_failure)?;
    let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut got: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(BodyError::Stalled) => return Err(fail(RequestError::Timeout)),
            Err(BodyError::Broken) => {
                return Err(fail(FragmentError::BodyLength {
                    expected: range.len(),
                    got,
                }));
            }
        };
        got += chunk.len() as u64;
        if got > range.len() {
            return Err(fail(FragmentError::BodyLength {
                expected: range.len(),
                got,
            }));
        }
        crc.update(&chunk);
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        writer.write(chunk).await.map_err(storage_failure)?;
    }
    if got != range.len() {
        return Err(fail(FragmentError::BodyLength {
            expected: range.len(),
            got,
        }));
    }
    writer.finish().await.map_err(storage_failure)?;
    // CRC-32C fits 32 bits.
    Ok((u32::try_from(crc.finalize()).unwrap_or_default(), hasher))
}
