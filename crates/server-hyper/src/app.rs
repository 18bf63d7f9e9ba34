//! Request handling: each handler splits the request, asks the core, does the
//! storage I/O the core's decision calls for, and renders the core's answer.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::Notify;
use tracing::{Instrument as _, debug, info, warn};
use upsession_core::dialect::LocationStyle;
use upsession_core::error::{CreateError, FragmentError, GraphError, RequestError};
use upsession_core::fault::{Fault, FaultPlan, FaultRoute};
use upsession_core::route::{ItemPath, Route, upload_path};
use upsession_core::session::{
    Answer, Closed, MessageLimit, Phase, PutDecision, Session, WriteTicket,
};
use upsession_core::throttle::{Permit, Throttle};
use upsession_core::timer::Timers;
use upsession_core::wire::{AttachmentItem, Collection, FileAttachment, Item};
use upsession_core::{ByteRange, respond};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{
    AttachmentRecord, BlobStore, ItemRecord, Kind, Locked, MetaStore, SessionLock, SessionRecord,
};
use upsession_core::credential::{CREDENTIAL_PARAM, Signer, Tokens};

/// The response body type: whole buffers or a file stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// A refusal on its way to becoming Graph's error JSON.
type Failure = Box<dyn GraphError + Send + Sync>;

fn fail<E: GraphError + Send + Sync + 'static>(e: E) -> Failure {
    Box::new(e)
}

/// Largest JSON body accepted on Graph routes.
const MAX_JSON_BODY: usize = 64 * 1024;

struct ItemEntry {
    record: ItemRecord,
    attachments: Vec<String>,
}

/// A live session: the core state machine and the record last persisted for it.
struct SessionEntry {
    record: SessionRecord,
    session: Session,
    /// The last requests to its uploadUrl, for `/_upsession/sessions`.
    history: std::collections::VecDeque<serde_json::Value>,
    /// With a shared store: the session's lock, held for this one request.
    lock: Option<Box<dyn SessionLock>>,
    /// Held by the request storing a fragment's bytes, from its first byte to its
    /// commit: no two requests write the session's bytes at once.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Tells the request storing bytes that a newer request took its fragment over.
    release: Arc<Notify>,
}

/// Requests remembered per session for inspection.
const HISTORY: usize = 200;

/// Most fragments one session may have where fragments are stored apart (S3's
/// own limit on the parts of one object).
const MAX_PARTS: usize = 10_000;

impl SessionEntry {
    fn new(record: SessionRecord, session: Session) -> Self {
        Self {
            record,
            session,
            history: std::collections::VecDeque::new(),
            lock: None,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            release: Arc::new(Notify::new()),
        }
    }
}

/// What the fault plan asked to do after the answer is ready.
#[derive(Debug, Default)]
struct After {
    /// Drop the connection instead of answering.
    drop: bool,
    /// Wait this long before answering.
    delay: Option<Duration>,
}

/// The connection is to be dropped without an answer (a `reset` or `lost` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the fault plan")]
pub(crate) struct Dropped;

/// Holds a fragment's ticket while its body is read; if the request is dropped
/// before the ticket is taken back, the ticket is failed so the session is free.
struct TicketGuard {
    entry: Arc<tokio::sync::Mutex<SessionEntry>>,
    ticket: Option<WriteTicket>,
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let entry = Arc::clone(&self.entry);
            tokio::spawn(async move { entry.lock().await.session.write_failed(ticket) });
        }
    }
}

/// A throttle permit, released when the request is answered.
struct Admitted<'a> {
    throttle: &'a Mutex<Throttle>,
    permit: Option<Permit>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.throttle.lock().expect("throttle lock").release(p);
        }
    }
}

/// The base of the uploadUrls and `Location`s handed out.
#[derive(Debug)]
pub(crate) enum PublicUrl {
    /// `--public-url`, or `http://{listen}` for a specific listening address.
    Fixed(String),
    /// Listening on every interface (`0.0.0.0`, `::`) without `--public-url`: no one
    /// address names this server, so URLs follow the `Host` each client used, which
    /// is how it reached us. The fallback serves a request with no valid `Host`.
    FromHost {
        /// `http` or `https`, as this server speaks.
        scheme: &'static str,
        /// The base for a request without a usable `Host`.
        fallback: String,
    },
}

impl PublicUrl {
    /// The base for one request: the authority it was sent to (HTTP/2's
    /// `:authority` or an absolute-form URI first, as RFC 9112 §3.2.2 says, else
    /// `Host`).
    fn for_request<'a>(
        &'a self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> std::borrow::Cow<'a, str> {
        match self {
            Self::Fixed(url) => url.as_str().into(),
            Self::FromHost { scheme, fallback } => uri
                .authority()
                .map(http::uri::Authority::as_str)
                .or_else(|| headers.get(http::header::HOST)?.to_str().ok())
                .filter(|a| upsession_core::route::is_host_and_port(a))
                .map_or_else(
                    || fallback.as_str().into(),
                    |a| format!("{scheme}://{a}").into(),
                ),
        }
    }
}

/// The server's state, shared by every connection.
pub(crate) struct App {
    pub(crate) config: Config,
    public_url: PublicUrl,
    tokens: Tokens,
    signer: Signer,
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    items: RwLock<HashMap<String, ItemEntry>>,
    attachments: RwLock<HashMap<String, AttachmentRecord>>,
    sessions: RwLock<HashMap<String, Arc<tokio::sync::Mutex<SessionEntry>>>>,
    timers: Mutex<Timers<String>>,
    throttle: Option<Mutex<Throttle>>,
    faults: Mutex<FaultPlan>,
    pub(crate) timer_changed: Notify,
    pub(crate) metrics: Metrics,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn random_id(prefix: &str) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    // Graph's ids are opaque base64; ours are URL- and path-safe.
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn full(res: Response<Vec<u8>>) -> Response<Body> {
    res.map(|b| {
        Full::new(Bytes::from(b))
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

impl App {
    /// Loads everything stored and finishes what a crash interrupted.
    pub(crate) async fn start(
        config: Config,
        public_url: PublicUrl,
        key: [u8; 32],
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        now: SystemTime,
    ) -> io::Result<Self> {
        let loaded = meta.load().await?;
        let mut items: HashMap<String, ItemEntry> = loaded
            .items
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    ItemEntry {
                        record: r,
                        attachments: Vec::new(),
                    },
                )
            })
            .collect();
        let mut attachments = HashMap::new();
        for a in loaded.attachments {
            if let Some(item) = items.get_mut(&a.item_id) {
                item.attachments.push(a.meta.id.clone());
            }
            attachments.insert(a.meta.id.clone(), a);
        }
        let mut sessions = HashMap::new();
        let mut timers = Timers::new();
        let mut live = Vec::new();
        for mut record in loaded.sessions {
            // Completion writes the attachment record first: if it exists, the
            // session finished and only the rename or the session record is missing.
            if record.snapshot.phase == Phase::Open
                && attachments.contains_key(&record.attachment_id)
            {
                // One session that cannot be finished now must not stop the server;
                // it is finished at a later start.
                if let Err(e) = blobs.promote(&record).await {
                    warn!(session = %record.id, error = %e, "could not finish an interrupted completion");
                } else {
                    record.snapshot.phase = Phase::Completed;
                    record.snapshot.received = vec![[0, record.snapshot.size]];
                    if let Err(e) = meta.put_session(&record).await {
                        warn!(session = %record.id, error = %e, "could not record an interrupted completion");
                    }
                }
            }
            let session = match Session::restore(&record.snapshot) {
                Ok(s) => s,
                Err(e) => {
                    warn!(session = %record.id, error = %e, "unusable session record skipped");
                    continue;
                }
            };
            if let Some(deadline) = session.poll_timeout() {
                timers.set(record.id.clone(), deadline);
            }
            live.push(record.id.clone());
            sessions.insert(
                record.id.clone(),
                Arc::new(tokio::sync::Mutex::new(SessionEntry::new(record, session))),
            );
        }
        let orphans = blobs.sweep_orphans(&live).await?;
        info!(
            items = items.len(),
            attachments = attachments.len(),
            sessions = sessions.len(),
            orphans_removed = orphans,
            "state loaded"
        );
        let metrics = Metrics::new();
        metrics
            .sessions_open
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        if !config.faults.is_empty() {
            info!(faults = %config.faults, seed = config.faults.seed(), "fault injection on");
        }
        let app = Self {
            tokens: Tokens::new(&config.tokens),
            signer: Signer::new(key),
            throttle: config
                .throttle
                .clone()
                .map(|l| Mutex::new(Throttle::new(l))),
            faults: Mutex::new(config.faults.clone()),
            config,
            public_url,
            meta,
            blobs,
            items: RwLock::new(items),
            attachments: RwLock::new(attachments),
            sessions: RwLock::new(sessions),
            timers: Mutex::new(timers),
            timer_changed: Notify::new(),
            metrics,
        };
        app.sweep(now).await;
        Ok(app)
    }

    // ----- the expiry driver -----

    /// The store is shared with other nodes.
    pub(crate) fn shared(&self) -> bool {
        self.meta.shared()
    }

    /// When the next session expires.
    pub(crate) fn poll_timeout(&self) -> Option<SystemTime> {
        self.timers.lock().expect("timer lock").poll_timeout()
    }

    fn set_timer(&self, id: &str, deadline: Option<SystemTime>) {
        if self.meta.shared() {
            // The store's `deadline` column is the timer; nothing is kept here.
            return;
        }
        let mut timers = self.timers.lock().expect("timer lock");
        match deadline {
            Some(d) => timers.set(id.to_owned(), d),
            None => timers.remove(&id.to_owned()),
        }
        drop(timers);
        self.timer_changed.notify_one();
    }

    /// Expires due sessions: partial bytes are deleted, completed attachments stay.
    pub(crate) async fn sweep(&self, now: SystemTime) {
        if self.meta.shared() {
            return self.sweep_shared(now).await;
        }
        let due = self.timers.lock().expect("timer lock").expired(now);
        for id in due {
            let Some(entry) = self
                .sessions
                .read()
                .expect("sessions lock")
                .get(&id)
                .cloned()
            else {
                continue;
            };
            let mut e = entry.lock().await;
            // A request may already have expired it (`check_alive`); clean up the same.
            let closed = e.session.handle_timeout(now).or(match e.session.phase() {
                Phase::Expired => Some(Closed {
                    discard_partial: e.record.snapshot.phase == Phase::Open,
                }),
                Phase::Cancelled => Some(Closed {
                    discard_partial: true,
                }),
                _ => None,
            });
            if let Some(closed) = closed {
                if closed.discard_partial {
                    self.metrics.sessions_expired.inc();
                    if let Err(err) = self.blobs.discard(&id).await {
                        warn!(session = %id, error = %err, "could not delete expired bytes");
                    }
                }
                if let Err(err) = self.meta.delete_session(&id).await {
                    warn!(session = %id, error = %err, "could not delete expired session record");
                }
                self.forget(&id);
                debug!(session = %id, "session expired");
            } else {
                // Extended meanwhile, or a fragment is being written: look again later.
                let again = e
                    .session
                    .poll_timeout()
                    .map(|t| t.max(now + Duration::from_secs(1)));
                self.set_timer(&id, again);
            }
        }
    }

    /// [`App::sweep`] with a shared store: whichever node gets a due session's lock
    /// first expires it. Works through due sessions in batches, a bounded number
    /// per call.
    async fn sweep_shared(&self, now: SystemTime) {
        const BATCH: u32 = 100;
        for _ in 0..10 {
            let due = match self.meta.due_sessions(now, BATCH).await {
                Ok(due) => due,
                Err(err) => {
                    warn!(error = %err, "could not look for expired sessions");
                    return;
                }
            };
            let full_batch = due.len() == BATCH as usize;
            let mut progress = false;
            for id in due {
                progress |= self.expire_shared(&id, now).await;
            }
            if !full_batch || !progress {
                return;
            }
        }
    }

    /// Expires one due session of a shared store, if no request holds it; says
    /// whether its record is gone.
    async fn expire_shared(&self, id: &str, now: SystemTime) -> bool {
        let lock = match self.meta.lock_session(id).await {
            Ok(Locked::Held(lock)) => lock,
            Ok(Locked::Busy | Locked::Missing | Locked::Saturated) => return false,
            Err(err) => {
                warn!(session = %id, error = %err, "could not lock an expired session");
                return false;
            }
        };
        let record = lock.record().clone();
        let Ok(mut session) = Session::restore(&record.snapshot) else {
            // It can never be served; left in place it would stay due forever.
            tracing::error!(session = %id, "unusable session record deleted (its bytes are kept)");
            return lock.save(None, None).await.is_ok();
        };
        let closed = session.handle_timeout(now).or(match session.phase() {
            Phase::Expired | Phase::Cancelled => Some(Closed {
                discard_partial: record.snapshot.phase == Phase::Open,
            }),
            _ => None,
        });
        let Some(closed) = closed else {
            lock.release().await;
            return false;
        };
        // Bytes first, under the lock: if that fails the record stays and the next
        // sweep tries again. An expired session can no longer complete, so a record
        // whose bytes are gone is never served.
        if closed.discard_partial {
            if let Err(err) = self.blobs.discard(id).await {
                warn!(session = %id, error = %err, "could not delete expired bytes");
                lock.release().await;
                return false;
            }
            self.metrics.sessions_expired.inc();
        }
        if let Err(err) = lock.save(None, None).await {
            warn!(session = %id, error = %err, "could not delete expired session record");
            return false;
        }
        debug!(session = %id, "session expired");
        true
    }

    /// The session an uploadUrl request is about. With a shared store it is read
    /// afresh, and locked unless the request only reads it.
    async fn session_entry(
        &self,
        id: &str,
        method: &Method,
    ) -> Result<Arc<tokio::sync::Mutex<SessionEntry>>, Failure> {
        if !self.meta.shared() {
            let entry = self
                .sessions
                .read()
                .expect("sessions lock")
                .get(id)
                .cloned();
            return entry.ok_or_else(|| fail(RequestError::SessionNotFound));
        }
        let (record, lock) = if method == Method::GET {
            let record = self.meta.get_session(id).await.map_err(storage_failure)?;
            (
                record.ok_or_else(|| fail(RequestError::SessionNotFound))?,
                None,
            )
        } else {
            match self.meta.lock_session(id).await.map_err(storage_failure)? {
                Locked::Held(lock) => (lock.record().clone(), Some(lock)),
                Locked::Busy => return Err(fail(FragmentError::Busy)),
                Locked::Saturated => {
                    return Err(fail(RequestError::Unavailable {
                        retry_after_secs: 1,
                    }));
                }
                Locked::Missing => return Err(fail(RequestError::SessionNotFound)),
            }
        };
        let session = Session::restore(&record.snapshot).map_err(|e| {
            tracing::error!(session = %id, error = %e, "unusable session record");
            fail(RequestError::Internal)
        })?;
        let mut entry = SessionEntry::new(record, session);
        entry.lock = lock;
        Ok(Arc::new(tokio::sync::Mutex::new(entry)))
    }

    fn forget(&self, id: &str) {
        if self
            .sessions
            .write()
            .expect("sessions lock")
            .remove(id)
            .is_some()
        {
            self.metrics.sessions_open.dec();
        }
        self.set_timer(id, None);
    }

    // ----- requests -----

    /// Answers one request; never panics on input. `Err` drops the connection, which
    /// only a `reset` or `lost` fault asks for.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Dropped> {
        let request_id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        // The path carries no credential (that is in the query), so it may be logged.
        let span = tracing::info_span!("request", id = %request_id, method = %req.method(), path = %req.uri().path());
        let now = SystemTime::now();
        let mut after = After::default();
        let result = self
            .route(req, now, &mut after)
            .instrument(span.clone())
            .await;
        let mut res = match result {
            Ok(res) => res,
            Err(err) => {
                self.metrics.error(err.code());
                span.in_scope(|| {
                    debug!(
                        status = err.status().as_u16(),
                        code = err.code(),
                        "refused: {err}"
                    );
                });
                full(respond::error(&*err, &request_id, SystemTime::now()))
            }
        };
        if let Some(delay) = after.delay {
            tokio::time::sleep(delay).await;
        }
        if after.drop {
            span.in_scope(|| debug!("connection dropped by the fault plan"));
            return Err(Dropped);
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            res.headers_mut().insert(respond::REQUEST_ID, v);
        }
        if res.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
            // Whatever sent that is not worth keeping a connection for.
            res.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(res)
    }

    /// The fault the plan picks for this request, applied where it is an answer or
    /// a delay; `reset`, `lost` and `expire` are left to the caller.
    fn fault(&self, route: FaultRoute, after: &mut After) -> Result<Option<Fault>, Failure> {
        let fault = self.faults.lock().expect("faults lock").decide(route);
        match fault {
            Some(f) if f.as_error().is_some() => Err(fail(f.as_error().expect("checked"))),
            Some(Fault::Slow(d)) => {
                after.delay = Some(d);
                Ok(None)
            }
            Some(Fault::Lost) => {
                after.drop = true;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// Admits a request of `app` on `mailbox` carrying `bytes`, or answers 429.
    fn admit(&self, app: &str, mailbox: &str, bytes: u64) -> Result<Option<Admitted<'_>>, Failure> {
        let Some(throttle) = &self.throttle else {
            return Ok(None);
        };
        let key = format!("{app}|{mailbox}");
        let permit = throttle
            .lock()
            .expect("throttle lock")
            .admit(SystemTime::now(), &key, bytes)
            .map_err(fail)?;
        Ok(Some(Admitted {
            throttle,
            permit: Some(permit),
        }))
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        now: SystemTime,
        after: &mut After,
    ) -> Result<Response<Body>, Failure> {
        // hyper's HTTP/1 read buffer lets some 400 KiB of head through; past our own
        // limit (HTTP/2's too) the answer is Graph's JSON, not a bare 431.
        let head = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
            + req
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head > crate::MAX_HEAD_BYTES {
            return Err(fail(RequestError::HeadersTooLarge {
                max: crate::MAX_HEAD_BYTES as u64,
            }));
        }
        let route = Route::parse(req.uri().path()).map_err(fail)?;
        route.check_method(req.method()).map_err(fail)?;
        let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if route.needs_bearer() {
            self.tokens
                .check(auth)
                .map_err(|m| fail(RequestError::Unauthenticated(m)))?;
        }
        // Throttling and faults of Graph routes; uploadUrl routes do theirs below.
        let app = auth.map(app_of).unwrap_or_default();
        let (fault_route, mailbox) = match &route {
            Route::CreateItem { user, .. } => (Some(FaultRoute::Item), Some(user.to_string())),
            Route::CreateUploadSession(p) => (Some(FaultRoute::Create), Some(p.user.to_string())),
            Route::Item(p)
            | Route::Attachments(p)
            | Route::Attachment(p, _)
            | Route::AttachmentValue(p, _) => {
                (Some(FaultRoute::Download), Some(p.user.to_string()))
            }
            _ => (None, None),
        };
        let _admitted = match &mailbox {
            Some(m) => self.admit(&app, m, 0)?,
            None => None,
        };
        if let Some(fr) = fault_route
            && self.fault(fr, after)? == Some(Fault::Reset)
        {
            after.drop = true;
            return Err(fail(RequestError::Internal));
        }
        match route {
            Route::Health => Ok(full(text(StatusCode::OK, "ok\n"))),
            Route::Metrics => self.metrics_page(&req),
            Route::AdminSessions | Route::AdminFaults => self.admin(route, req).await,
            Route::CreateItem { kind, .. } => self.create_item(req, kind.into(), now).await,
            Route::Item(path) => {
                let view = self.item(&path).await?;
                Ok(full(respond::json(StatusCode::OK, &view.json())))
            }
            Route::Attachments(path) => {
                let value: Vec<FileAttachment> = self
                    .item(&path)
                    .await?
                    .attachments
                    .into_iter()
                    .map(|a| a.meta)
                    .collect();
                Ok(full(respond::json(StatusCode::OK, &Collection { value })))
            }
            Route::Attachment(path, aid) => Ok(full(respond::json(
                StatusCode::OK,
                &self.attachment(&path, &aid).await?.meta,
            ))),
            Route::AttachmentValue(path, aid) => self.attachment_value(&path, &aid).await,
            Route::CreateUploadSession(path) => self.create_session(req, &path, &app, now).await,
            Route::Upload(id) => self.upload(&id, req, now, after).await,
            _ => Err(fail(RequestError::NoRoute(req.uri().path().to_owned()))),
        }
    }

    /// `PUT`, `GET` and `DELETE` of an uploadUrl: credential, throttle, faults, the
    /// session, and the request's entry in the session's history.
    async fn upload(
        self: &Arc<Self>,
        id: &str,
        req: Request<Incoming>,
        now: SystemTime,
        after: &mut After,
    ) -> Result<Response<Body>, Failure> {
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let mut seen: Option<Arc<tokio::sync::Mutex<SessionEntry>>> = None;
        let mut verified = false;
        let result = async {
            // The credential is checked before any session is looked at.
            if !self.signer.verify(id, parts.uri.query(), now) {
                return Err(fail(RequestError::InvalidUploadCredential));
            }
            verified = true;
            if self.config.reject_upload_authorization && parts.headers.contains_key(AUTHORIZATION)
            {
                return Err(fail(RequestError::AuthorizationOnUploadUrl));
            }
            let entry = self.session_entry(id, &parts.method).await?;
            seen = Some(Arc::clone(&entry));
            let (app, mailbox) = {
                let e = entry.lock().await;
                (
                    e.record.app.clone(),
                    e.record.user.clone().unwrap_or_else(|| "me".into()),
                )
            };
            let bytes = if parts.method == Method::PUT {
                content_length(&parts.headers).unwrap_or(0)
            } else {
                0
            };
            let _admitted = self.admit(&app, &mailbox, bytes)?;
            let fault_route = match parts.method {
                Method::PUT => FaultRoute::Put,
                Method::GET => FaultRoute::Status,
                _ => FaultRoute::Cancel,
            };
            let fault = self.fault(fault_route, after)?;
            self.upload_fault(fault, id, &entry, &parts, &mut body, after, now)
                .await?;
            match parts.method {
                Method::PUT => self.put_fragment(&parts, &mut body, id, &entry, now).await,
                Method::GET => {
                    let mut e = entry.lock().await;
                    let answer = e.session.status(now).map_err(fail)?;
                    let base = self.public_url.for_request(&parts.uri, &parts.headers);
                    Ok(full(
                        self.config
                            .dialect
                            .status(&answer, &self.location(&e.record, &base)),
                    ))
                }
                _ => self.cancel(id, &entry, now).await,
            }
        }
        .await;
        // A shared store's lock is released before the answer leaves: the client's
        // next request may reach another node at once.
        if let Some(entry) = &seen {
            let lock = entry.lock().await.lock.take();
            if let Some(lock) = lock {
                lock.release().await;
            }
        }
        // Linger only for a caller with a valid credential (even for a session that
        // is gone since): nobody else may make the server read (up to 16 MiB of) a body.
        if let (Err(_), Some(unread), true) = (&result, body.take(), verified) {
            self.linger(unread, &parts.headers);
        }
        if let Some(entry) = seen.filter(|_| self.config.admin_token.is_some()) {
            let status = match &result {
                Ok(r) => r.status().as_u16(),
                Err(e) => e.status().as_u16(),
            };
            let mut e = entry.lock().await;
            if e.history.len() == HISTORY {
                e.history.pop_front();
            }
            e.history.push_back(serde_json::json!({
                "at": upsession_core::time::format_graph_time(now),
                "method": parts.method.as_str(),
                "contentRange": parts
                    .headers
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(100).collect::<String>()),
                "status": status,
                "dropped": after.drop,
            }));
        }
        result
    }

    /// Applies the faults of the plan that act on an uploadUrl request itself.
    #[allow(clippy::too_many_arguments)] // the request's parts, as `upload` holds them
    async fn upload_fault(
        &self,
        fault: Option<Fault>,
        id: &str,
        entry: &tokio::sync::Mutex<SessionEntry>,
        parts: &http::request::Parts,
        body: &mut Option<Incoming>,
        after: &mut After,
        now: SystemTime,
    ) -> Result<(), Failure> {
        match fault {
            Some(Fault::Reset) => {
                // Part of the body arrives, then the connection drops.
                if let Some(b) = body.take() {
                    let _ = drain_exact(
                        b,
                        content_length(&parts.headers).unwrap_or(0) / 2,
                        Duration::from_millis(200),
                    )
                    .await;
                }
                after.drop = true;
                Err(fail(RequestError::Internal))
            }
            Some(Fault::Expire) => {
                let mut e = entry.lock().await;
                let at = e.session.hard_expiry();
                if e.session.handle_timeout(at).is_some() {
                    self.set_timer(id, Some(now));
                }
                Ok(())
            }
            Some(Fault::RejectAuthorization) if parts.headers.contains_key(AUTHORIZATION) => {
                Err(fail(RequestError::AuthorizationOnUploadUrl))
            }
            _ => Ok(()),
        }
    }

    /// `/_upsession/sessions` and `/_upsession/faults`, behind the admin token.
    async fn admin(&self, route: Route, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
        let Some(token) = &self.config.admin_token else {
            return Err(fail(RequestError::NoRoute(req.uri().path().to_owned())));
        };
        let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        Tokens::new(std::slice::from_ref(token))
            .check(auth)
            .map_err(|m| fail(RequestError::Unauthenticated(m)))?;
        if route == Route::AdminFaults {
            if req.method() == Method::PUT {
                let body = read_json_body(req, self.config.body_idle_timeout).await?;
                let spec = String::from_utf8_lossy(&body);
                let plan: FaultPlan =
                    spec.parse()
                        .map_err(|e: upsession_core::fault::FaultSpecError| {
                            fail(RequestError::InvalidBody(e.to_string()))
                        })?;
                info!(faults = %plan, seed = plan.seed(), "fault plan replaced");
                *self.faults.lock().expect("faults lock") = plan;
            }
            let plan = self.faults.lock().expect("faults lock");
            return Ok(full(respond::json(
                StatusCode::OK,
                &serde_json::json!({"spec": plan.to_string(), "seed": plan.seed()}),
            )));
        }
        let entries: Vec<_> = self
            .sessions
            .read()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect();
        let mut value = Vec::with_capacity(entries.len());
        for entry in entries {
            let e = entry.lock().await;
            let received: Vec<[u64; 2]> = e
                .session
                .received()
                .ranges()
                .iter()
                .map(|r| [r.start(), r.end()])
                .collect();
            value.push(serde_json::json!({
                "id": e.record.id,
                "itemId": e.record.item_id,
                "name": e.record.attachment.name,
                "size": e.session.size(),
                "phase": e.session.phase(),
                "received": received,
                "expirationDateTime": upsession_core::time::format_graph_time(e.session.expires_at()),
                "requests": e.history,
            }));
        }
        Ok(full(respond::json(
            StatusCode::OK,
            &serde_json::json!({ "value": value }),
        )))
    }

    fn metrics_page(&self, req: &Request<Incoming>) -> Result<Response<Body>, Failure> {
        if let Some(token) = &self.config.metrics_token {
            let auth = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
            Tokens::new(std::slice::from_ref(token))
                .check(auth)
                .map_err(|m| fail(RequestError::Unauthenticated(m)))?;
        }
        // Prometheus asks for OpenMetrics first; anyone else (curl, older scrapers)
        // gets the classic text format.
        let open_metrics = req
            .headers()
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        let (page, content_type) = if open_metrics {
            (
                self.metrics.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            (
                self.metrics.render_classic(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        };
        let mut res = text(StatusCode::OK, &page);
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        Ok(full(res))
    }

    async fn create_item(
        &self,
        req: Request<Incoming>,
        kind: Kind,
        now: SystemTime,
    ) -> Result<Response<Body>, Failure> {
        let body = read_json_body(req, self.config.body_idle_timeout).await?;
        let subject = Item::subject_from_request_json(&body).map_err(fail)?;
        let record = ItemRecord {
            id: random_id("AAMk"),
            kind,
            subject,
            created: now,
        };
        self.meta.put_item(&record).await.map_err(storage_failure)?;
        let json = ItemView {
            record: record.clone(),
            attachments: Vec::new(),
        }
        .json();
        if !self.meta.shared() {
            self.items.write().expect("items lock").insert(
                record.id.clone(),
                ItemEntry {
                    record,
                    attachments: Vec::new(),
                },
            );
        }
        Ok(full(respond::json(StatusCode::CREATED, &json)))
    }

    /// The item at `path` and its finished attachments: from this process's maps,
    /// or read from a shared store (nothing is kept).
    async fn item(&self, path: &ItemPath) -> Result<ItemView, Failure> {
        let view = if self.meta.shared() {
            self.meta
                .get_item(&path.id)
                .await
                .map_err(storage_failure)?
                .map(|(record, attachments)| ItemView {
                    record,
                    attachments,
                })
        } else {
            let items = self.items.read().expect("items lock");
            let atts = self.attachments.read().expect("attachments lock");
            items.get(&path.id).map(|entry| ItemView {
                record: entry.record.clone(),
                attachments: entry
                    .attachments
                    .iter()
                    .filter_map(|id| atts.get(id).cloned())
                    .collect(),
            })
        };
        match view {
            Some(v) if Kind::from(path.kind) == v.record.kind => Ok(v),
            _ => Err(fail(RequestError::ItemNotFound)),
        }
    }

    async fn attachment(&self, path: &ItemPath, aid: &str) -> Result<AttachmentRecord, Failure> {
        self.item(path)
            .await?
            .attachments
            .into_iter()
            .find(|a| a.meta.id == aid)
            .ok_or_else(|| fail(RequestError::ItemNotFound))
    }

    async fn attachment_value(
        &self,
        path: &ItemPath,
        aid: &str,
    ) -> Result<Response<Body>, Failure> {
        let record = self.attachment(path, aid).await?;
        let stream = self.blobs.read(&record).await.map_err(storage_failure)?;
        let body = StreamBody::new(futures_util::StreamExt::map(stream, |r| r.map(Frame::data)));
        let mut res = Response::new(http_body_util::BodyExt::boxed_unsync(body));
        let headers = res.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(record.meta.size));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&record.meta.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
        );
        Ok(res)
    }

    /// The attachment's URL under `base` (from [`PublicUrl::for_request`]).
    fn location(&self, record: &SessionRecord, base: &str) -> String {
        let path = record.item_path();
        let path = match self.config.dialect.location {
            LocationStyle::OutlookRest => path.outlook_attachment_path(&record.attachment_id),
            _ => path.attachment_path(&record.attachment_id),
        };
        format!("{base}{path}")
    }

    async fn create_session(
        &self,
        req: Request<Incoming>,
        path: &ItemPath,
        app: &str,
        now: SystemTime,
    ) -> Result<Response<Body>, Failure> {
        // The item must exist; its attachments are judged per fragment.
        self.item(path).await?;
        let base = self
            .public_url
            .for_request(req.uri(), req.headers())
            .into_owned();
        let body = read_json_body(req, self.config.body_idle_timeout).await?;
        let item = AttachmentItem::from_request_json(&body).map_err(fail)?;
        let limits = self
            .config
            .limits
            .clone()
            .with_rules_of(&self.config.dialect);
        let session = Session::open(now, item.size, &limits).map_err(fail)?;
        let id = random_id("");
        let record = SessionRecord {
            id: id.clone(),
            item_id: path.id.clone(),
            kind: path.kind.into(),
            beta: path.version == upsession_core::route::Version::Beta,
            user: match &path.user {
                upsession_core::route::User::Me => None,
                upsession_core::route::User::Id(u) => Some(u.clone()),
            },
            attachment_id: random_id("AAMk"),
            app: app.to_owned(),
            attachment: item,
            snapshot: session.snapshot(),
            parts: Vec::new(),
        };
        self.blobs.create(&id).await.map_err(storage_failure)?;
        self.meta
            .put_session(&record)
            .await
            .map_err(storage_failure)?;
        let credential = self.signer.sign(&id, session.hard_expiry());
        let upload_url = format!("{base}{}?{CREDENTIAL_PARAM}={credential}", upload_path(&id));
        let res = self.config.dialect.created(
            &upload_url,
            session.expires_at(),
            &session.next_expected(),
        );
        self.metrics.sessions_created.inc();
        if !self.meta.shared() {
            // A shared store is read per request and swept by deadline instead.
            self.set_timer(&id, session.poll_timeout());
            self.sessions.write().expect("sessions lock").insert(
                id.clone(),
                Arc::new(tokio::sync::Mutex::new(SessionEntry::new(record, session))),
            );
            self.metrics.sessions_open.inc();
        }
        info!(session = %id, "upload session created");
        Ok(full(res))
    }

    async fn put_fragment(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: &mut Option<Incoming>,
        id: &str,
        entry: &Arc<tokio::sync::Mutex<SessionEntry>>,
        now: SystemTime,
    ) -> Result<Response<Body>, Failure> {
        let started = std::time::Instant::now();
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let content_range = header(http::header::CONTENT_RANGE).map(str::to_owned);
        let content_length = match header(CONTENT_LENGTH) {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                fail(RequestError::InvalidBody(
                    "Content-Length is not a number".into(),
                ))
            })?),
            None => None,
        };
        let message = self.message_limit(entry).await?;
        // Decide from the headers alone, before reading any body byte.
        let decision = {
            let mut e = entry.lock().await;
            e.session.set_message_limit(message);
            let decision = e
                .session
                .handle_put(now, content_range.as_deref(), content_length)
                .map_err(fail)?;
            // Where fragments are objects, the last one is always let in; any other
            // past the cap is refused, and the rest must come in fewer fragments.
            if let PutDecision::Write(ticket) = &decision
                && e.record.parts.len() + 1 >= MAX_PARTS
                && ticket.range().end() != e.record.snapshot.size
            {
                let PutDecision::Write(ticket) = decision else {
                    unreachable!("matched above")
                };
                e.session.write_failed(ticket);
                return Err(fail(RequestError::InvalidBody(format!(
                    "this upload session has nearly {MAX_PARTS} fragments; send the rest as one fragment"
                ))));
            }
            decision
        };
        let body = body.take().expect("the body is read only here");
        let timeout = self.config.body_idle_timeout;
        let res = match decision {
            PutDecision::Replay {
                body_len, answer, ..
            } => {
                // A replay changes nothing: other nodes need not wait for its body.
                let lock = entry.lock().await.lock.take();
                if let Some(lock) = lock {
                    lock.release().await;
                }
                drain_exact(body, body_len, timeout).await?;
                let e = entry.lock().await;
                let base = self.public_url.for_request(&parts.uri, &parts.headers);
                full(
                    self.config
                        .dialect
                        .answer(&answer, &self.location(&e.record, &base)),
                )
            }
            PutDecision::Write(ticket) => {
                self.write_fragment(parts, body, id, entry, ticket, timeout)
                    .await?
            }
        };
        self.metrics
            .fragment_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(res)
    }

    /// Stores the bytes of a fragment the session took, then counts and records
    /// them.
    async fn write_fragment(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: Incoming,
        id: &str,
        entry: &Arc<tokio::sync::Mutex<SessionEntry>>,
        ticket: WriteTicket,
        timeout: Duration,
    ) -> Result<Response<Body>, Failure> {
        let (writer, release) = {
            let e = entry.lock().await;
            (Arc::clone(&e.writer), Arc::clone(&e.release))
        };
        // The new request wins: the stale writer stops and lets go before
        // this one stores a byte.
        if ticket.supersedes() {
            release.notify_waiters();
        }
        // Created after our own notice: only a later takeover ends this write.
        let released = release.notified();
        let _writing = writer.lock().await;
        // The body is read here, in the connection's own task (a spawned reader
        // would cost a cross-thread wake-up per body frame). hyper drops this
        // future when the client goes away: the guard then gives the ticket
        // back, so the session never stays busy.
        let mut guard = TicketGuard {
            entry: Arc::clone(entry),
            ticket: Some(ticket),
        };
        let range = guard.ticket.as_ref().expect("just set").range();
        let written = tokio::select! {
            written = tokio::time::timeout(
                self.config.fragment_timeout,
                self.write_body(id, range, body, timeout),
            ) => written.unwrap_or_else(|_| Err(fail(RequestError::Timeout))),
            () = released => Err(fail(upsession_core::error::SessionError::Superseded)),
        };
        let ticket = guard.ticket.take().expect("taken once");
        // Counting and recording run to their end in their own task: a
        // completion is never cut short by a client hanging up.
        let (app, entry2, id2) = (Arc::clone(self), Arc::clone(entry), id.to_owned());
        let base = self
            .public_url
            .for_request(&parts.uri, &parts.headers)
            .into_owned();
        let task =
            tokio::spawn(async move { app.commit(&id2, &entry2, ticket, written, &base).await });
        match task.await {
            Ok(result) => result,
            Err(panicked) => {
                tracing::error!(session = %id, "fragment task failed: {panicked}");
                let mut e = entry.lock().await;
                e.session =
                    Session::restore(&e.record.snapshot).expect("a snapshot we wrote restores");
                Err(fail(RequestError::Internal))
            }
        }
    }

    /// The message's size limit and its other attachments, when a limit is set: it
    /// is judged per fragment, as the live service does.
    async fn message_limit(
        &self,
        entry: &tokio::sync::Mutex<SessionEntry>,
    ) -> Result<Option<MessageLimit>, Failure> {
        let Some(limit) = self.config.message_size_limit else {
            return Ok(None);
        };
        let path = entry.lock().await.record.item_path();
        let attached = self
            .item(&path)
            .await?
            .attachments
            .iter()
            .map(|a| a.meta.size)
            .sum();
        Ok(Some(MessageLimit { limit, attached }))
    }

    /// After refusing a fragment from its headers, reads and discards its body (up
    /// to a bound) in the background, so that the client, still sending, reads our
    /// answer instead of a connection reset (RFC 9112 §9.6). Nothing is stored.
    fn linger(&self, body: Incoming, headers: &http::HeaderMap) {
        const LINGER_MAX: u64 = 16 * 1024 * 1024;
        let announced = content_length(headers);
        if announced.is_none_or(|n| n > LINGER_MAX) {
            return; // too much to be worth reading: close instead
        }
        let timeout = self.config.body_idle_timeout;
        tokio::spawn(async move {
            let mut body = body;
            let mut seen = 0u64;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(timeout, body.frame()).await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > LINGER_MAX {
                    break;
                }
            }
        });
    }

    /// Streams exactly `range.len()` body bytes to storage at `range.start()`.
    async fn write_body(
        &self,
        id: &str,
        range: ByteRange,
        body: Incoming,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut writer = self
            .blobs
            .writer(id, range)
            .await
            .map_err(storage_failure)?;
        let mut body = body;
        let mut got: u64 = 0;
        loop {
            let frame = match tokio::time::timeout(timeout, body.frame()).await {
                Err(_) => return Err(fail(RequestError::Timeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "body failed");
                    return Err(fail(FragmentError::BodyLength {
                        expected: range.len(),
                        got,
                    }));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            got += chunk.len() as u64;
            if got > range.len() {
                return Err(fail(FragmentError::BodyLength {
                    expected: range.len(),
                    got,
                }));
            }
            writer.write(chunk).await.map_err(storage_failure)?;
        }
        if got != range.len() {
            return Err(fail(FragmentError::BodyLength {
                expected: range.len(),
                got,
            }));
        }
        writer.finish().await.map_err(storage_failure)
    }

    /// Counts a written fragment (or forgets a failed one), persists, and answers.
    async fn commit(
        &self,
        id: &str,
        entry: &tokio::sync::Mutex<SessionEntry>,
        ticket: WriteTicket,
        written: Result<(), Failure>,
        base: &str,
    ) -> Result<Response<Body>, Failure> {
        let mut e = entry.lock().await;
        if let Err(err) = written {
            e.session.write_failed(ticket);
            return Err(err);
        }
        let range = ticket.range();
        let len = range.len();
        let answer = e.session.commit(SystemTime::now(), ticket).map_err(fail)?;
        let mut record = e.record.clone();
        record.snapshot = e.session.snapshot();
        if self.blobs.keeps_parts() {
            record.parts.push([range.start(), range.end()]);
        }
        let persisted = if let Some(lock) = e.lock.take() {
            // Shared store: the record and a finished attachment in one transaction.
            let attachment = (answer == Answer::Completed).then(|| self.attachment_record(&record));
            let saved = lock.save(Some(&record), attachment.as_ref()).await;
            if saved.is_ok()
                && attachment.is_some()
                && let Err(err) = self.blobs.promote(&record).await
            {
                // Only stray objects of uncounted fragments are left behind.
                warn!(session = %id, error = %err, "could not tidy a completed session's bytes");
            }
            saved
        } else if answer == Answer::Completed {
            match self.complete(&record).await {
                // The attachment record and its bytes are durable: the upload is done
                // (start-up recovery takes the attachment record as proof), even if
                // the session record cannot be updated now.
                Ok(()) => {
                    if let Err(err) = self.meta.put_session(&record).await {
                        warn!(session = %id, error = %err, "completed, but the session record was not updated");
                    }
                    Ok(())
                }
                Err(err) => Err(err),
            }
        } else {
            self.meta.put_session(&record).await
        };
        if let Err(err) = persisted {
            // Not recorded, so not acknowledged: back to the last durable state, which
            // expects these bytes again.
            e.session = Session::restore(&e.record.snapshot).expect("a snapshot we wrote restores");
            return Err(storage_failure(err));
        }
        e.record = record;
        self.metrics.bytes_received.inc_by(len);
        self.set_timer(id, e.session.poll_timeout());
        let location = self.location(&e.record, base);
        if answer == Answer::Completed {
            self.metrics.sessions_completed.inc();
            info!(session = %id, attachment = %e.record.attachment_id, "upload completed");
        }
        Ok(full(self.config.dialect.answer(&answer, &location)))
    }

    /// The attachment a completed session makes.
    fn attachment_record(&self, record: &SessionRecord) -> AttachmentRecord {
        let keeps_parts = self.blobs.keeps_parts();
        AttachmentRecord {
            item_id: record.item_id.clone(),
            meta: FileAttachment::new(
                record.attachment_id.clone(),
                &record.attachment,
                SystemTime::now(),
            ),
            session: keeps_parts.then(|| record.id.clone()),
            parts: if keeps_parts {
                record.parts.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Makes the attachment of a session whose bytes are all stored. The attachment
    /// record goes first: start-up finishes any completion it finds half done.
    async fn complete(&self, record: &SessionRecord) -> io::Result<()> {
        let att = self.attachment_record(record);
        self.meta.put_attachment(&att).await?;
        self.blobs.promote(record).await?;
        self.cache_attachment(att);
        Ok(())
    }

    /// Adds a finished attachment to this node's view of its item.
    fn cache_attachment(&self, att: AttachmentRecord) {
        let record = &att;
        if let Some(item) = self
            .items
            .write()
            .expect("items lock")
            .get_mut(&record.item_id)
            && !item.attachments.contains(&record.meta.id)
        {
            item.attachments.push(record.meta.id.clone());
        }
        self.attachments
            .write()
            .expect("attachments lock")
            .insert(att.meta.id.clone(), att);
    }

    async fn cancel(
        &self,
        id: &str,
        entry: &tokio::sync::Mutex<SessionEntry>,
        now: SystemTime,
    ) -> Result<Response<Body>, Failure> {
        let mut e = entry.lock().await;
        // Decide on a copy, delete the record, and only then apply: a failed delete
        // leaves the session as it was.
        let mut cancelled = e.session.clone();
        let closed = cancelled.cancel(now).map_err(fail)?;
        match e.lock.take() {
            Some(lock) => lock.save(None, None).await,
            None => self.meta.delete_session(id).await,
        }
        .map_err(storage_failure)?;
        e.session = cancelled;
        if closed.discard_partial {
            self.metrics.sessions_cancelled.inc();
            // In its own task: a client hanging up now must not leave the bytes
            // behind (on disk, start-up's orphan sweep would find them; in a shared
            // bucket nothing would).
            let (blobs, sid) = (Arc::clone(&self.blobs), id.to_owned());
            match tokio::spawn(async move { blobs.discard(&sid).await }).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    warn!(session = %id, error = %err, "could not delete cancelled bytes");
                }
                Err(err) => warn!(session = %id, error = %err, "deleting cancelled bytes failed"),
            }
        }
        drop(e);
        self.forget(id);
        info!(session = %id, "upload session deleted");
        Ok(full(respond::deleted()))
    }
}

/// The answer for a handler that panicked: nothing it did was acknowledged.
pub(crate) fn internal_error() -> Response<Body> {
    full(respond::error(
        &RequestError::Internal,
        "panic",
        SystemTime::now(),
    ))
}

/// A short digest of the bearer token: the "app" of Graph's per-app limits.
fn app_of(authorization: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(authorization);
    digest[..6].iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An item and its finished attachments, as one request sees them.
struct ItemView {
    record: ItemRecord,
    attachments: Vec<AttachmentRecord>,
}

impl ItemView {
    fn json(&self) -> Item {
        let mut item = Item::new(
            self.record.id.clone(),
            self.record.subject.clone(),
            self.record.created,
        );
        item.has_attachments = !self.attachments.is_empty();
        item
    }
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let mut res = Response::new(body.as_bytes().to_vec());
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Maps a storage failure to its answer: a full disk is 507, anything else 500.
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
fn storage_failure(err: io::Error) -> Failure {
    if err.raw_os_error() == Some(28) || err.kind() == io::ErrorKind::StorageFull {
        warn!("storage full: {err}");
        return fail(RequestError::InsufficientStorage);
    }
    tracing::error!("storage failed: {err}");
    fail(RequestError::Internal)
}

/// Reads a small JSON body, refusing one over the limit.
async fn read_json_body(req: Request<Incoming>, timeout: Duration) -> Result<Bytes, Failure> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(fail(RequestError::Timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(fail(RequestError::BodyTooLarge {
                max: MAX_JSON_BODY as u64,
            }))
        }
        Ok(Err(e)) => Err(fail(CreateError::InvalidBody(e.to_string()))),
    }
}

/// Reads and discards a re-sent fragment's body, checking its length.
async fn drain_exact(mut body: Incoming, expected: u64, timeout: Duration) -> Result<(), Failure> {
    let mut got = 0u64;
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(fail(RequestError::Timeout)),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(fail(FragmentError::BodyLength { expected, got })),
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    got += chunk.len() as u64;
                    if got > expected {
                        return Err(fail(FragmentError::BodyLength { expected, got }));
                    }
                }
            }
        }
    }
    if got == expected {
        Ok(())
    } else {
        Err(fail(FragmentError::BodyLength { expected, got }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::PublicUrl;
    use http::HeaderMap;
    use http::header::HOST;

    fn base(public: &PublicUrl, host: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(HOST, h.parse().unwrap());
        }
        public
            .for_request(&"/v1.0/me".parse().unwrap(), &headers)
            .into_owned()
    }

    #[test]
    fn urls_follow_the_host_only_when_listening_everywhere() {
        let fixed = PublicUrl::Fixed("https://files.example".into());
        assert_eq!(base(&fixed, Some("other.example")), "https://files.example");

        let open = PublicUrl::FromHost {
            scheme: "http",
            fallback: "http://127.0.0.1:8080".into(),
        };
        assert_eq!(base(&open, Some("box.lan:8080")), "http://box.lan:8080");
        assert_eq!(base(&open, Some("[::1]:8080")), "http://[::1]:8080");
        assert_eq!(base(&open, Some("10.0.0.7")), "http://10.0.0.7");
        // Anything but a bare authority falls back: no path, user info or query
        // smuggled into the URLs handed out.
        for bad in [
            "box.lan/evil",
            "user@box.lan",
            "box.lan?x=1",
            "",
            "box lan",
            "box.lan:",
            "box.lan:abc",
            "box.lan:99999",
        ] {
            assert_eq!(base(&open, Some(bad)), "http://127.0.0.1:8080", "{bad:?}");
        }
        assert_eq!(base(&open, None), "http://127.0.0.1:8080");

        // HTTP/2 (and an absolute-form HTTP/1 target) carry it in the URI, which wins.
        let uri: http::Uri = "http://h2.lan:8080/v1.0/me".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "other.lan".parse().unwrap());
        assert_eq!(open.for_request(&uri, &headers), "http://h2.lan:8080");
        assert_eq!(
            open.for_request(&uri, &HeaderMap::new()),
            "http://h2.lan:8080"
        );
    }
}
