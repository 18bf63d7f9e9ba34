//! One request to the fake: route, fault, the core's decision, the break (if any),
//! and the answer as the core renders it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use upsession_core::dialect::{LocationStyle, RangeForm};
use upsession_core::error::{FragmentError, GraphError, RequestError, SessionError};
use upsession_core::fault::FaultRoute;
use upsession_core::route::{ItemKind, ItemPath, Route, User, Version, upload_path};
use upsession_core::session::{Answer, Phase, PutDecision, Session, WriteTicket};
use upsession_core::time::format_http_date;
use upsession_core::wire::{AttachmentItem, Collection, FileAttachment, Item as WireItem};
use upsession_core::{ContentRange, Dialect, respond};

use super::{Break, FakeSession, Fault, Item, LoggedRequest, RetryAfter, Shared, StoredAttachment};

/// The connection is dropped without an answer: hyper closes it when the service
/// fails.
#[derive(Debug)]
pub(crate) struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

type Outcome = Result<Response<Vec<u8>>, Dropped>;

/// Longest pause between two pieces of a body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest JSON body accepted.
const MAX_JSON: u64 = 64 * 1024;

/// Largest body read and discarded after an early answer.
const MAX_LINGER: u64 = 64 * 1024 * 1024;

/// Answers one request (the hyper service).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().to_string();
    let target = match req.uri().query() {
        Some(_) => format!("{}?<credential>", req.uri().path()),
        None => req.uri().path().to_owned(),
    };
    let content_range = req
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut ctx = Ctx {
        shared: Arc::clone(&shared),
        fault: None,
    };
    let outcome = ctx.route(req).await;
    shared.state().log.push(LoggedRequest {
        method,
        target,
        content_range,
        fault: ctx.fault,
        status: outcome.as_ref().ok().map(|r| r.status().as_u16()),
    });
    outcome.map(|res| res.map(|body| Full::new(Bytes::from(body))))
}

/// How a body read ended.
enum BodyRead {
    /// The body, whole (possibly shorter than announced).
    Complete(Vec<u8>),
    /// More than the limit arrived.
    TooLong(u64),
    /// The connection failed after this many bytes.
    Broken(u64),
    /// The body stalled.
    Stalled,
    /// The fault cut it (the `reset` fault).
    Cut,
}

async fn read_body(mut body: Incoming, limit: u64, cut_at: Option<u64>) -> BodyRead {
    if cut_at == Some(0) {
        return BodyRead::Cut;
    }
    let mut data = Vec::new();
    loop {
        match tokio::time::timeout(BODY_TIMEOUT, body.frame()).await {
            Err(_) => return BodyRead::Stalled,
            Ok(None) => return BodyRead::Complete(data),
            Ok(Some(Err(_))) => return BodyRead::Broken(data.len() as u64),
            Ok(Some(Ok(frame))) => {
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                data.extend_from_slice(&chunk);
                let got = data.len() as u64;
                if cut_at.is_some_and(|cut| got >= cut) {
                    return BodyRead::Cut;
                }
                if got > limit {
                    return BodyRead::TooLong(got);
                }
            }
        }
    }
}

/// Reads and discards what is left of a body after an early answer, so that the
/// client sees the answer rather than a reset (a "lingering close").
fn linger(body: Incoming) {
    tokio::spawn(async move {
        let _ = read_body(body, MAX_LINGER, None).await;
    });
}

struct Ctx {
    shared: Arc<Shared>,
    /// The fault applied to this request, for the log.
    fault: Option<Fault>,
}

impl Ctx {
    fn breaks(&self, bug: Break) -> bool {
        self.shared.breaks(bug)
    }

    /// The dialect with the breaks that are only a different way of writing.
    fn dialect(&self) -> Dialect {
        let mut d = self.shared.options.quirks.dialect.clone();
        if self.breaks(Break::OpenRanges) {
            d.created_ranges = RangeForm::Open;
            d.ranges = RangeForm::Open;
        }
        if self.breaks(Break::CreateAnswers200) {
            d.create_status = StatusCode::OK;
        }
        d
    }

    fn error<E: GraphError + ?Sized>(&self, err: &E) -> Response<Vec<u8>> {
        let now = SystemTime::now();
        let n = self
            .shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("fake-{n}");
        let mut res = respond::error(err, &id, now);
        if self.breaks(Break::PlainTextErrors) {
            *res.body_mut() = err.to_string().into_bytes();
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        res
    }

    /// Renames the uploadSession properties to PascalCase when the quirk asks.
    fn restyle(&self, mut res: Response<Vec<u8>>, id: Option<&str>) -> Response<Vec<u8>> {
        let pascal = self.shared.options.quirks.pascal_case;
        if !pascal && id.is_none() {
            return res;
        }
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(res.body()) else {
            return res;
        };
        let mut out = serde_json::Map::new();
        for (key, value) in map {
            let key = match key.as_str() {
                "uploadUrl" if pascal => "UploadUrl".to_owned(),
                "expirationDateTime" if pascal => "ExpirationDateTime".to_owned(),
                "nextExpectedRanges" if pascal => "NextExpectedRanges".to_owned(),
                _ => key,
            };
            out.insert(key, value);
        }
        if let Some(id) = id {
            out.insert("id".into(), Value::String(id.to_owned()));
        }
        *res.body_mut() = serde_json::to_vec(&Value::Object(out)).unwrap_or_default();
        res
    }

    fn location(&self, item: &ItemPath, attachment_id: &str) -> String {
        let path = match self.dialect().location {
            LocationStyle::OutlookRest => item.outlook_attachment_path(attachment_id),
            _ => item.attachment_path(attachment_id),
        };
        format!("{}{path}", self.shared.public_url)
    }

    /// The answer a fault gives instead of the request's, if it is one.
    fn fault_answer(&mut self, fault: Option<Fault>) -> Option<Response<Vec<u8>>> {
        let now = SystemTime::now();
        let res = match fault? {
            Fault::Throttle {
                unavailable,
                retry_after,
            } => {
                let (RetryAfter::Seconds(secs) | RetryAfter::HttpDate(secs)) = retry_after;
                let retry_after_secs = u64::from(secs);
                let mut res = if unavailable {
                    self.error(&RequestError::Unavailable { retry_after_secs })
                } else {
                    self.error(&RequestError::Throttled { retry_after_secs })
                };
                if let RetryAfter::HttpDate(_) = retry_after
                    && let Ok(v) = HeaderValue::from_str(&format_http_date(
                        now + Duration::from_secs(retry_after_secs),
                    ))
                {
                    res.headers_mut().insert(RETRY_AFTER, v);
                }
                res
            }
            Fault::ServerError => self.error(&RequestError::Internal),
            Fault::AccessDenied => self.error(&RequestError::AccessDenied),
            _ => return None,
        };
        self.fault = fault;
        Some(res)
    }

    fn bearer_ok(&self, req: &Request<Incoming>) -> bool {
        let Some(value) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let mut parts = value.splitn(2, ' ');
        let scheme = parts.next().unwrap_or("");
        let token = parts.next().unwrap_or("").trim();
        scheme.eq_ignore_ascii_case("bearer") && token == self.shared.options.token
    }

    async fn route(&mut self, req: Request<Incoming>) -> Outcome {
        let now = SystemTime::now();
        let route = match Route::parse(req.uri().path()) {
            Ok(route) => route,
            Err(e) => return Ok(self.error(&e)),
        };
        if let Err(e) = route.check_method(req.method()) {
            return Ok(self.error(&e));
        }
        if route.needs_bearer() && !self.bearer_ok(&req) {
            return Ok(self.error(&RequestError::Unauthenticated(
                "the bearer token is missing or not accepted",
            )));
        }
        match route {
            Route::Health => Ok(text(StatusCode::OK, "ok\n")),
            Route::CreateItem {
                version,
                user,
                kind,
            } => self.create_item(req, version, user, kind, now).await,
            Route::Item(path) => Ok(self.item(&path)),
            Route::Attachments(path) => Ok(self.attachments(&path)),
            Route::Attachment(path, aid) => Ok(self.attachment(&path, &aid, false)),
            Route::AttachmentValue(path, aid) => Ok(self.attachment(&path, &aid, true)),
            Route::CreateUploadSession(path) => self.create_session(req, &path, now).await,
            Route::Upload(id) => self.upload(req, &id, now).await,
            _ => Ok(self.error(&RequestError::NoRoute(req.uri().path().to_owned()))),
        }
    }

    async fn json_body(&self, req: Request<Incoming>) -> Result<Vec<u8>, Response<Vec<u8>>> {
        match read_body(req.into_body(), MAX_JSON, None).await {
            BodyRead::Complete(body) => Ok(body),
            BodyRead::TooLong(_) => Err(self.error(&RequestError::BodyTooLarge { max: MAX_JSON })),
            _ => Err(self.error(&RequestError::Timeout)),
        }
    }

    async fn create_item(
        &self,
        req: Request<Incoming>,
        version: Version,
        user: User,
        kind: ItemKind,
        now: SystemTime,
    ) -> Outcome {
        let body = match self.json_body(req).await {
            Ok(body) => body,
            Err(res) => return Ok(res),
        };
        let subject = match WireItem::subject_from_request_json(&body) {
            Ok(subject) => subject,
            Err(e) => return Ok(self.error(&e)),
        };
        let mut state = self.shared.state();
        let id = state.id("AAMk-item");
        let path = ItemPath {
            version,
            user,
            kind,
            id: id.clone(),
        };
        state.items.insert(
            id.clone(),
            Item {
                path,
                subject: subject.clone(),
                created: now,
                attachments: Vec::new(),
            },
        );
        Ok(respond::json(
            StatusCode::CREATED,
            &WireItem::new(id, subject, now),
        ))
    }

    fn item(&self, path: &ItemPath) -> Response<Vec<u8>> {
        let state = self.shared.state();
        match state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind)
        {
            Some(item) => {
                let mut wire = WireItem::new(path.id.clone(), item.subject.clone(), item.created);
                wire.has_attachments = !item.attachments.is_empty();
                respond::json(StatusCode::OK, &wire)
            }
            None => self.error(&RequestError::ItemNotFound),
        }
    }

    fn attachments(&self, path: &ItemPath) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let Some(item) = state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind)
        else {
            return self.error(&RequestError::ItemNotFound);
        };
        let value: Vec<FileAttachment> = item
            .attachments
            .iter()
            .filter_map(|aid| state.meta.get(aid).cloned())
            .collect();
        respond::json(StatusCode::OK, &Collection { value })
    }

    fn attachment(&self, path: &ItemPath, aid: &str, value: bool) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let found = state
            .items
            .get(&path.id)
            .filter(|i| i.path.kind == path.kind && i.attachments.iter().any(|a| a == aid))
            .and_then(|_| state.meta.get(aid))
            .zip(state.attachments.iter().find(|a| a.id == aid));
        let Some((meta, stored)) = found else {
            return self.error(&RequestError::ItemNotFound);
        };
        if !value {
            return respond::json(StatusCode::OK, meta);
        }
        let mut res = Response::new(stored.bytes.clone());
        if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
            res.headers_mut().insert(CONTENT_TYPE, v);
        }
        res
    }

    async fn create_session(
        &mut self,
        req: Request<Incoming>,
        path: &ItemPath,
        now: SystemTime,
    ) -> Outcome {
        let fault = self.shared.state().next_fault(FaultRoute::Create);
        if let Some(res) = self.fault_answer(fault) {
            linger(req.into_body());
            return Ok(res);
        }
        match fault {
            Some(Fault::ResetMidBody) => {
                self.fault = fault;
                return Err(Dropped);
            }
            Some(Fault::Slow(d)) => {
                self.fault = fault;
                tokio::time::sleep(d).await;
            }
            _ => {}
        }
        let known = {
            let state = self.shared.state();
            state
                .items
                .get(&path.id)
                .is_some_and(|i| i.path.kind == path.kind)
        };
        if !known {
            linger(req.into_body());
            return Ok(self.error(&RequestError::ItemNotFound));
        }
        let body = match self.json_body(req).await {
            Ok(body) => body,
            Err(res) => return Ok(res),
        };
        let item = match AttachmentItem::from_request_json(&body) {
            Ok(item) => item,
            Err(e) => return Ok(self.error(&e)),
        };
        let dialect = self.dialect();
        let mut limits = self.shared.options.limits.clone().with_rules_of(&dialect);
        if self.breaks(Break::NoFragmentLimit) {
            limits = limits.with_max_fragment(u64::MAX);
        }
        if self.breaks(Break::ResendIs416) {
            limits.reject_resend = true;
        }
        if self.breaks(Break::TakesOddFragments) {
            limits.fragment_quantum = None;
        }
        let session = match Session::open(now, item.size, &limits) {
            Ok(session) => session,
            Err(e) => return Ok(self.error(&e)),
        };
        let res = {
            let mut state = self.shared.state();
            let sid = state.id("s");
            let attachment_id = state.id("AAMk-att");
            let credential = format!("{:016x}{:016x}", state.rng.u64(..), state.rng.u64(..));
            let url = format!(
                "{}{}?authtoken={credential}",
                self.shared.public_url,
                upload_path(&sid)
            );
            let res = dialect.created(&url, session.expires_at(), &session.next_expected());
            let bytes = vec![0u8; usize::try_from(item.size).unwrap_or(0)];
            state.sessions.insert(
                sid,
                FakeSession {
                    session,
                    item: path.clone(),
                    attachment_id,
                    attachment: item,
                    credential,
                    bytes,
                },
            );
            res
        };
        if fault == Some(Fault::LoseResponse) {
            self.fault = fault;
            return Err(Dropped);
        }
        Ok(self.restyle(res, None))
    }

    async fn upload(&mut self, req: Request<Incoming>, id: &str, now: SystemTime) -> Outcome {
        let route = match *req.method() {
            Method::PUT => FaultRoute::Put,
            Method::GET => FaultRoute::Status,
            _ => FaultRoute::Cancel,
        };
        let fault = {
            let mut state = self.shared.state();
            let Some(s) = state.sessions.get(id) else {
                drop(state);
                linger(req.into_body());
                return Ok(self.error(&RequestError::SessionNotFound));
            };
            let expected = format!("authtoken={}", s.credential);
            if req.uri().query() != Some(expected.as_str()) {
                drop(state);
                linger(req.into_body());
                return Ok(self.error(&RequestError::InvalidUploadCredential));
            }
            state.next_fault(route)
        };
        if let Some(res) = self.fault_answer(fault) {
            linger(req.into_body());
            return Ok(res);
        }
        match fault {
            Some(Fault::Slow(d)) => {
                self.fault = fault;
                tokio::time::sleep(d).await;
            }
            Some(Fault::Expire) => {
                let mut state = self.shared.state();
                if let Some(s) = state.sessions.get_mut(id) {
                    let at = s.session.expires_at();
                    if s.session.handle_timeout(at).is_some() {
                        self.fault = fault;
                    }
                }
            }
            Some(Fault::ResetMidBody) if route != FaultRoute::Put => {
                self.fault = fault;
                return Err(Dropped);
            }
            _ => {}
        }
        let reset = fault == Some(Fault::ResetMidBody);
        let res = match route {
            FaultRoute::Put => self.put(req, id, now, reset).await?,
            FaultRoute::Status => self.status(id, now),
            _ => self.delete(id, now),
        };
        if fault == Some(Fault::LoseResponse) {
            self.fault = fault;
            return Err(Dropped);
        }
        Ok(res)
    }

    fn status(&self, id: &str, now: SystemTime) -> Response<Vec<u8>> {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get_mut(id) else {
            return self.error(&RequestError::SessionNotFound);
        };
        if self.breaks(Break::ForgetsCompleted) && s.session.phase() == Phase::Completed {
            return self.error(&RequestError::SessionNotFound);
        }
        match s.session.status(now) {
            Ok(answer) => {
                // Status GETs are 200 in every dialect (OneDrive's 202 is for fragments).
                let res = self.dialect().status(&answer, "");
                self.restyle(res, None)
            }
            Err(e) => self.error(&e),
        }
    }

    fn delete(&self, id: &str, now: SystemTime) -> Response<Vec<u8>> {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get_mut(id) else {
            return self.error(&RequestError::SessionNotFound);
        };
        match s.session.cancel(now) {
            Ok(_closed) if self.breaks(Break::DeleteAnswers200) => {
                respond::json(StatusCode::OK, &json!({}))
            }
            Ok(_closed) => respond::deleted(),
            Err(e) => self.error(&e),
        }
    }

    async fn put(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        now: SystemTime,
        reset: bool,
    ) -> Outcome {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let mut content_range = header(CONTENT_RANGE).map(str::to_owned);
        let content_length = match header(CONTENT_LENGTH).map(|v| v.trim().parse::<u64>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                linger(req.into_body());
                return Ok(self.error(&RequestError::InvalidBody(
                    "Content-Length is not a number".into(),
                )));
            }
        };
        let decision = {
            let mut state = self.shared.state();
            let Some(s) = state.sessions.get_mut(id) else {
                drop(state);
                linger(req.into_body());
                return Ok(self.error(&RequestError::SessionNotFound));
            };
            if self.breaks(Break::LenientRange) {
                content_range = content_range.map(|h| {
                    h.replacen("bytes=", "bytes ", 1)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                });
            }
            if self.breaks(Break::IgnoresTotal)
                && let Some(fixed) = content_range
                    .as_deref()
                    .and_then(|h| h.parse::<ContentRange>().ok())
                    .and_then(|cr| ContentRange::new(cr.range(), s.session.size()))
            {
                content_range = Some(fixed.to_string());
            }
            let content_length = if self.breaks(Break::IgnoresContentLength) {
                None
            } else {
                content_length
            };
            s.session
                .handle_put(now, content_range.as_deref(), content_length)
        };
        match decision {
            Err(err) => self.refused(req, id, err, now).await,
            Ok(PutDecision::Replay {
                body_len, answer, ..
            }) => {
                match read_body(req.into_body(), body_len, None).await {
                    BodyRead::Complete(body) if body.len() as u64 == body_len => {}
                    BodyRead::Complete(body) => {
                        return Ok(self.error(&FragmentError::BodyLength {
                            expected: body_len,
                            got: body.len() as u64,
                        }));
                    }
                    BodyRead::TooLong(got) | BodyRead::Broken(got) => {
                        return Ok(self.error(&FragmentError::BodyLength {
                            expected: body_len,
                            got,
                        }));
                    }
                    BodyRead::Stalled | BodyRead::Cut => return Err(Dropped),
                }
                if answer == Answer::Completed && self.breaks(Break::FinalResendIs200) {
                    let expires = self.expires(id).unwrap_or(now);
                    let res = self.dialect().answer(
                        &Answer::Progress {
                            next_expected: upsession_core::RangeSet::new(),
                            expires_at: expires,
                        },
                        "",
                    );
                    return Ok(self.restyle(res, None));
                }
                Ok(self.render(id, &answer, true, now))
            }
            Ok(PutDecision::Write(ticket)) => self.write(req, id, ticket, now, reset).await,
        }
    }

    fn expires(&self, id: &str) -> Option<SystemTime> {
        self.shared
            .state()
            .sessions
            .get(id)
            .map(|s| s.session.expires_at())
    }

    /// A fragment the core refused; some breaks take it anyway.
    async fn refused(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        err: SessionError,
        now: SystemTime,
    ) -> Outcome {
        match err {
            SessionError::Fragment(FragmentError::OutOfOrder { .. })
                if self.breaks(Break::AcceptsSkip) =>
            {
                linger(req.into_body());
                Ok(self.status(id, now))
            }
            SessionError::Fragment(FragmentError::Overlap {
                start,
                last,
                expected,
            }) if self.breaks(Break::TrimsOverlap) => {
                let decision = {
                    let mut state = self.shared.state();
                    let Some(s) = state.sessions.get_mut(id) else {
                        return Ok(self.error(&RequestError::SessionNotFound));
                    };
                    let trimmed = format!("bytes {expected}-{last}/{}", s.session.size());
                    s.session.handle_put(now, Some(&trimmed), None)
                };
                let Ok(PutDecision::Write(ticket)) = decision else {
                    linger(req.into_body());
                    return Ok(self.error(&err));
                };
                let skip = usize::try_from(expected - start).unwrap_or(usize::MAX);
                let BodyRead::Complete(body) =
                    read_body(req.into_body(), last - start + 1, None).await
                else {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                    return Err(Dropped);
                };
                let Some(fresh) = body.get(skip..) else {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                    return Ok(self.error(&err));
                };
                Ok(self.store_and_commit(id, ticket, fresh, now))
            }
            SessionError::Fragment(FragmentError::Busy) if self.breaks(Break::BusyIs500) => {
                linger(req.into_body());
                Ok(self.error(&RequestError::Internal))
            }
            err => {
                linger(req.into_body());
                Ok(self.error(&err))
            }
        }
    }

    fn with_session<T>(&self, id: &str, f: impl FnOnce(&mut FakeSession) -> T) -> Option<T> {
        self.shared.state().sessions.get_mut(id).map(f)
    }

    async fn write(
        &mut self,
        req: Request<Incoming>,
        id: &str,
        ticket: WriteTicket,
        now: SystemTime,
        reset: bool,
    ) -> Outcome {
        let range = ticket.range();
        let len = range.len();
        // The bug: the fragment counts before its bytes are here.
        let (mut ticket, early) = if self.breaks(Break::CountsBeforeBody) {
            let answer = self.with_session(id, |s| s.session.commit(now, ticket));
            (None, answer)
        } else {
            (Some(ticket), None)
        };
        let limit = if self.breaks(Break::IgnoresContentLength) {
            len.saturating_add(MAX_JSON)
        } else {
            len
        };
        let read = read_body(req.into_body(), limit, reset.then_some(len / 2)).await;
        let body = match read {
            BodyRead::Complete(body)
                if body.len() as u64 == len
                    || (body.len() as u64 > len && self.breaks(Break::IgnoresContentLength)) =>
            {
                body
            }
            other => {
                if let Some(ticket) = ticket.take() {
                    self.with_session(id, |s| s.session.write_failed(ticket));
                }
                if reset {
                    self.fault = Some(Fault::ResetMidBody);
                }
                return match other {
                    BodyRead::Complete(body) => Ok(self.error(&FragmentError::BodyLength {
                        expected: len,
                        got: body.len() as u64,
                    })),
                    BodyRead::TooLong(got) => {
                        Ok(self.error(&FragmentError::BodyLength { expected: len, got }))
                    }
                    BodyRead::Stalled => Ok(self.error(&RequestError::Timeout)),
                    BodyRead::Broken(_) | BodyRead::Cut => Err(Dropped),
                };
            }
        };
        let body = &body[..usize::try_from(len).unwrap_or(usize::MAX).min(body.len())];
        match (ticket, early) {
            (Some(ticket), _) => Ok(self.store_and_commit(id, ticket, body, now)),
            (None, Some(answer)) => {
                self.store(id, range.start(), body);
                match answer {
                    Ok(answer) => {
                        if answer == Answer::Completed {
                            self.finish(id, now);
                        }
                        Ok(self.render(id, &answer, true, now))
                    }
                    Err(e) => Ok(self.error(&e)),
                }
            }
            (None, None) => Ok(self.error(&RequestError::SessionNotFound)),
        }
    }

    fn store(&self, id: &str, start: u64, body: &[u8]) {
        let keep = if self.breaks(Break::DropsLastByte) {
            body.len().saturating_sub(1)
        } else {
            body.len()
        };
        self.with_session(id, |s| {
            let start = usize::try_from(start).unwrap_or(usize::MAX);
            if let Some(dest) = s.bytes.get_mut(start..start + keep) {
                dest.copy_from_slice(&body[..keep]);
            }
        });
    }

    fn store_and_commit(
        &self,
        id: &str,
        ticket: WriteTicket,
        body: &[u8],
        now: SystemTime,
    ) -> Response<Vec<u8>> {
        self.store(id, ticket.range().start(), body);
        let last = self
            .with_session(id, |s| ticket.range().end() == s.session.size())
            .unwrap_or(true);
        let answer = if self.breaks(Break::DropsFragments) && !last {
            self.with_session(id, |s| {
                s.session.write_failed(ticket);
                s.session.status(now)
            })
        } else {
            self.with_session(id, |s| s.session.commit(now, ticket))
        };
        match answer {
            Some(Ok(answer)) => {
                if answer == Answer::Completed {
                    self.finish(id, now);
                }
                self.render(id, &answer, true, now)
            }
            Some(Err(SessionError::Superseded)) if self.breaks(Break::BusyIs500) => {
                self.error(&RequestError::Internal)
            }
            Some(Err(e)) => self.error(&e),
            None => self.error(&RequestError::SessionNotFound),
        }
    }

    /// Makes the attachment of a completed session (once).
    fn finish(&self, id: &str, now: SystemTime) {
        let mut state = self.shared.state();
        let Some(s) = state.sessions.get(id) else {
            return;
        };
        let aid = s.attachment_id.clone();
        if state.attachments.iter().any(|a| a.id == aid) {
            return;
        }
        let stored = StoredAttachment {
            id: aid.clone(),
            item_id: s.item.id.clone(),
            name: s.attachment.name.clone(),
            location: self.location(&s.item, &aid),
            bytes: s.bytes.clone(),
        };
        let meta = FileAttachment::new(aid.clone(), &s.attachment, now);
        let item_id = s.item.id.clone();
        state.attachments.push(stored);
        state.meta.insert(aid.clone(), meta);
        if let Some(item) = state.items.get_mut(&item_id) {
            item.attachments.push(aid);
        }
    }

    /// An answer to a `PUT` (`put`) or a status `GET`, in the dialect, with the quirks
    /// and breaks that change how it is written.
    fn render(&self, id: &str, answer: &Answer, put: bool, now: SystemTime) -> Response<Vec<u8>> {
        let state = self.shared.state();
        let Some(s) = state.sessions.get(id) else {
            drop(state);
            return self.error(&RequestError::SessionNotFound);
        };
        match answer {
            Answer::Completed
                if self.shared.options.quirks.completion_with_id
                    || self.breaks(Break::CompletionAs200) =>
            {
                let meta = FileAttachment::new(s.attachment_id.clone(), &s.attachment, now);
                respond::json(StatusCode::OK, &meta)
            }
            Answer::Completed => {
                let location = self.location(&s.item, &s.attachment_id);
                self.dialect().answer(answer, &location)
            }
            _ => {
                let res = self.dialect().answer(answer, "");
                let id =
                    (put && self.breaks(Break::IdInProgress)).then_some(s.attachment_id.as_str());
                self.restyle(res, id)
            }
        }
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
