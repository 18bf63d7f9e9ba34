//! A scripted, misbehaving Graph-like server for the client's tests.
//!
//! Upload semantics are the core's own (`Session` decides, `respond` renders), so a
//! fragment counts only once it is stored, exactly as on a real server. On top of
//! that the server can answer in real Graph's less tidy styles (PascalCase, open and
//! bare ranges, `@odata` extras, completion as 200-with-id or 201 with a body) and
//! inject faults into the nth request of a method: throttling with `Retry-After`,
//! connection resets mid-body, lost answers, stalls, expired sessions, redirects.
//!
//! Every request is logged (method, path, whether it had a query, its
//! `Authorization`), so tests can check where the token went.

#![allow(clippy::pedantic, dead_code, unreachable_pub)] // test code favours brevity over pedantry

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use upsession_client_reqwest::{Client, ClientBuilder, PlannerConfig};
use upsession_core::error::RequestError;
use upsession_core::session::{Answer, Limits, PutDecision, Session};
use upsession_core::wire::{AttachmentItem, Item};
use upsession_core::{Dialect, RangeSet, respond};

/// The bearer token the fake server accepts.
pub const TOKEN: &str = "test-token-1";

/// The fragment size tests use: small files, several fragments.
pub const FRAGMENT: u64 = 64 * 1024;

/// How `nextExpectedRanges` entries are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ranges {
    /// `"a-b"`
    #[default]
    Closed,
    /// `"a-"`
    Open,
    /// `"a"`
    Bare,
}

/// How the final fragment is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Completion {
    /// 201, `Location`, empty body (our server, the contract).
    #[default]
    Created,
    /// 201, `Location`, and the attachment's JSON.
    CreatedWithBody,
    /// 200 with the attachment's `id` in the body and no `Location` (OneDrive style).
    OkWithId,
}

/// Answer style.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// PascalCase property names (`NextExpectedRanges`, `ExpirationDateTime`, `UploadUrl`).
    pub pascal: bool,
    /// Range form.
    pub ranges: Ranges,
    /// Completion form.
    pub completion: Completion,
    /// Adds `@odata.context` to every JSON answer.
    pub odata: bool,
}

/// A fault injected into one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Read the body, then answer this error (its status, Graph JSON), with
    /// `Retry-After` replaced by `retry_after` when given.
    Error(RequestError, Option<String>),
    /// Read `after` bytes of the body, then drop the connection (nothing stored).
    ResetMidBody { after: usize },
    /// Store the fragment (or answer the status), then drop the connection without
    /// answering.
    LoseAnswer,
    /// Never answer (gives up after a minute and drops the connection).
    Stall,
    /// Forget the session before handling the request: it answers 404.
    ExpireSession,
    /// Answer 307 to this location.
    Redirect(String),
    /// Store the fragment, then answer 200 with these `nextExpectedRanges`
    /// instead of the truth (a server that lies).
    Lie(Vec<String>),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub content_range: Option<String>,
    pub content_length: Option<String>,
    pub transfer_encoding: Option<String>,
    pub to_upload_url: bool,
}

struct Stored {
    session: Session,
    data: Vec<u8>,
    item: AttachmentItem,
    secret: String,
    parent: String,
    attachment_id: String,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Stored>,
    attachments: HashMap<String, (AttachmentItem, Vec<u8>)>,
    log: Vec<Logged>,
    counts: HashMap<Method, usize>,
    faults: HashMap<(Method, usize), Fault>,
    next_id: u64,
}

struct Shared {
    origin: String,
    style: Mutex<Style>,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running server. It stops when the test's runtime does.
pub struct FakeGraph {
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    /// `http://127.0.0.1:PORT/v1.0`
    pub base: String,
    shared: Arc<Shared>,
}

impl FakeGraph {
    pub async fn start() -> Self {
        Self::with_style(Style::default()).await
    }

    pub async fn with_style(style: Style) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            origin: origin.clone(),
            style: Mutex::new(style),
            state: Mutex::new(State::default()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(Arc::clone(&s), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            base: format!("{origin}/v1.0"),
            origin,
            shared,
        }
    }

    /// Injects `fault` into the `nth` (1-based) request with `method`, counted over
    /// every route.
    pub fn fault(&self, method: Method, nth: usize, fault: Fault) {
        self.state().faults.insert((method, nth), fault);
    }

    pub fn set_style(&self, style: Style) {
        *self.shared.style.lock().unwrap() = style;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    /// How many requests of `method` reached the server.
    pub fn count(&self, method: &Method) -> usize {
        self.state().counts.get(method).copied().unwrap_or(0)
    }

    /// Waits (a bounded number of short sleeps) until `n` requests of `method` have
    /// reached the server.
    pub async fn wait_for(&self, method: &Method, n: usize) {
        for _ in 0..2000 {
            if self.count(method) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{method} number {n} never reached the server");
    }

    /// The bytes of the one attachment with this id.
    pub fn attachment(&self, id: &str) -> Option<Vec<u8>> {
        self.state().attachments.get(id).map(|(_, b)| b.clone())
    }

    /// The item an attachment was created with.
    pub fn attachment_item(&self, id: &str) -> Option<AttachmentItem> {
        self.state().attachments.get(id).map(|(i, _)| i.clone())
    }

    pub fn attachment_count(&self) -> usize {
        self.state().attachments.len()
    }

    /// Open (unfinished, uncancelled) sessions.
    pub fn session_phases(&self) -> Vec<upsession_core::session::Phase> {
        self.state()
            .sessions
            .values()
            .map(|s| s.session.phase())
            .collect()
    }

    /// The most requests the server was handling at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Panics if any request to an uploadUrl carried `Authorization`, or any Graph
    /// request lacked the token.
    pub fn assert_token_only_to_graph(&self) {
        for r in self.log() {
            if r.to_upload_url {
                assert!(
                    r.authorization.is_none(),
                    "{} {} carried Authorization to the uploadUrl",
                    r.method,
                    r.path
                );
            } else {
                assert_eq!(
                    r.authorization.as_deref(),
                    Some(format!("Bearer {TOKEN}").as_str()),
                    "{} {}",
                    r.method,
                    r.path
                );
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(s: &'a Shared) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

type Reply = Result<Response<Full<Bytes>>, io::Error>;

fn out(res: Response<Vec<u8>>) -> Reply {
    Ok(res.map(|b| Full::new(Bytes::from(b))))
}

fn drop_connection(why: &str) -> Reply {
    Err(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        why.to_owned(),
    ))
}

fn err(e: &dyn upsession_core::GraphError) -> Response<Vec<u8>> {
    respond::error(e, "req-fake-1", SystemTime::now())
}

async fn handle(s: Arc<Shared>, req: Request<Incoming>) -> Reply {
    let _guard = InFlight::enter(&s);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let to_upload_url = path.starts_with("/upload/");
    let fault = {
        let mut st = s.state.lock().unwrap();
        st.log.push(Logged {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            authorization: header("authorization"),
            content_range: header("content-range"),
            content_length: header("content-length"),
            transfer_encoding: header("transfer-encoding"),
            to_upload_url,
        });
        let n = st.counts.entry(parts.method.clone()).or_default();
        *n += 1;
        let key = (parts.method.clone(), *n);
        st.faults.remove(&key)
    };
    match &fault {
        Some(Fault::Error(e, retry_after)) => {
            let _ = body.collect().await;
            let mut res = err(e);
            if let Some(v) = retry_after {
                res.headers_mut()
                    .insert("retry-after", HeaderValue::from_str(v).unwrap());
            }
            return out(res);
        }
        Some(Fault::Stall) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return drop_connection("stalled");
        }
        Some(Fault::Redirect(to)) => {
            let _ = body.collect().await;
            let mut res = Response::new(Vec::new());
            *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            res.headers_mut()
                .insert("location", HeaderValue::from_str(to).unwrap());
            return out(res);
        }
        _ => {}
    }
    if to_upload_url {
        let sid = path.trim_start_matches("/upload/").to_owned();
        if matches!(fault, Some(Fault::ExpireSession)) {
            s.state.lock().unwrap().sessions.remove(&sid);
        }
        return upload(
            &s,
            &parts.method,
            &sid,
            query.as_deref(),
            &parts.headers,
            body,
            fault,
        )
        .await;
    }
    if header("authorization").as_deref() != Some(format!("Bearer {TOKEN}").as_str()) {
        return out(err(&RequestError::Unauthenticated(
            "missing or unknown bearer token",
        )));
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return drop_connection("body"),
    };
    graph(&s, &parts.method, &path, &body)
}

/// `POST /v1.0/{me|users/x}/{messages|events}` and
/// `POST …/{messages|events|calendarView}/{id}/attachments/createUploadSession`.
fn graph(s: &Shared, method: &Method, path: &str, body: &[u8]) -> Reply {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["v1.0" | "beta", "me", rest @ ..] => rest,
        ["v1.0" | "beta", "users", _, rest @ ..] => rest,
        _ => return out(err(&RequestError::NoRoute(path.into()))),
    };
    let now = SystemTime::now();
    match (method, rest) {
        (&Method::POST, [coll @ ("messages" | "events")]) => {
            let subject = match Item::subject_from_request_json(body) {
                Ok(s) => s,
                Err(e) => return out(err(&e)),
            };
            let mut st = s.state.lock().unwrap();
            st.next_id += 1;
            let id = format!("{}-{}", &coll[..3], st.next_id);
            out(respond::json(
                StatusCode::CREATED,
                &Item::new(id, subject, now),
            ))
        }
        (
            &Method::POST,
            [
                coll @ ("messages" | "events" | "calendarView"),
                id,
                "attachments",
                "createUploadSession",
            ],
        ) => {
            if id.starts_with("missing") {
                return out(err(&RequestError::ItemNotFound));
            }
            let item = match AttachmentItem::from_request_json(body) {
                Ok(i) => i,
                Err(e) => return out(err(&e)),
            };
            let limits = Limits::default().with_min_size(1);
            let session = match Session::open(now, item.size, &limits) {
                Ok(s) => s,
                Err(e) => return out(err(&e)),
            };
            let mut st = s.state.lock().unwrap();
            st.next_id += 1;
            let sid = format!("s{}", st.next_id);
            let secret = format!(
                "SECRET{}x{}",
                st.next_id,
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
            );
            let url = format!("{}/upload/{sid}?tempauth={secret}", s.origin);
            let res = Dialect::UPSESSION.created(&url, session.expires_at(), &RangeSet::full(item.size));
            st.sessions.insert(
                sid.clone(),
                Stored {
                    data: vec![0; item.size as usize],
                    session,
                    item,
                    secret,
                    parent: format!("{coll}/{id}"),
                    attachment_id: format!("att-{sid}"),
                },
            );
            drop(st);
            out(restyle(s, res))
        }
        _ => out(err(&RequestError::NoRoute(path.into()))),
    }
}

/// What the headers alone decide about an uploadUrl request.
enum Step {
    /// Answer this (after draining the body); `lose` drops the connection instead.
    Answer(Response<Vec<u8>>, bool),
    /// A fragment: what the session decided.
    Put(Result<PutDecision, upsession_core::error::SessionError>),
}

fn decide(
    s: &Shared,
    method: &Method,
    sid: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    fault: &Option<Fault>,
) -> Step {
    let now = SystemTime::now();
    let mut st = s.state.lock().unwrap();
    let Some(stored) = st.sessions.get_mut(sid) else {
        return Step::Answer(err(&RequestError::SessionNotFound), false);
    };
    if query != Some(format!("tempauth={}", stored.secret).as_str()) {
        return Step::Answer(err(&RequestError::InvalidUploadCredential), false);
    }
    match *method {
        Method::GET => {
            let res = match stored.session.status(now) {
                Ok(answer) => Dialect::UPSESSION.answer(&answer, ""),
                Err(e) => err(&e),
            };
            drop(st);
            Step::Answer(restyle(s, res), matches!(fault, Some(Fault::LoseAnswer)))
        }
        Method::DELETE => Step::Answer(
            match stored.session.cancel(now) {
                Ok(_) => respond::deleted(),
                Err(e) => err(&e),
            },
            false,
        ),
        Method::PUT => {
            let cr = headers.get("content-range").and_then(|v| v.to_str().ok());
            let cl = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            Step::Put(stored.session.handle_put(now, cr, cl))
        }
        _ => Step::Answer(
            err(&RequestError::MethodNotAllowed(method.to_string())),
            false,
        ),
    }
}

async fn upload(
    s: &Shared,
    method: &Method,
    sid: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: Incoming,
    fault: Option<Fault>,
) -> Reply {
    let now = SystemTime::now();
    let decision = match decide(s, method, sid, query, headers, &fault) {
        Step::Answer(res, lose) => {
            let _ = body.collect().await;
            if lose {
                return drop_connection("lost answer");
            }
            return out(res);
        }
        Step::Put(decision) => decision,
    };
    match decision {
        Err(e) => {
            let _ = body.collect().await;
            out(err(&e))
        }
        Ok(PutDecision::Replay { answer, .. }) => {
            let _ = body.collect().await;
            if matches!(fault, Some(Fault::LoseAnswer)) {
                return drop_connection("lost replay answer");
            }
            out(render(s, sid, &answer))
        }
        Ok(PutDecision::Write(ticket)) => {
            let range = ticket.range();
            let limit = match fault {
                Some(Fault::ResetMidBody { after }) => Some(after),
                _ => None,
            };
            let bytes = read_body(body, limit).await;
            let mut st = s.state.lock().unwrap();
            let stored = st
                .sessions
                .get_mut(sid)
                .expect("sessions are not removed mid-write");
            let bytes = match bytes {
                Some(b) if b.len() as u64 == range.len() => b,
                Some(b) => {
                    stored.session.write_failed(ticket);
                    return out(err(&upsession_core::error::FragmentError::BodyLength {
                        expected: range.len(),
                        got: b.len() as u64,
                    }));
                }
                None => {
                    stored.session.write_failed(ticket);
                    return drop_connection("reset mid-body");
                }
            };
            stored.data[range.start() as usize..range.end() as usize].copy_from_slice(&bytes);
            let answer = match stored.session.commit(now, ticket) {
                Ok(a) => a,
                Err(e) => return out(err(&e)),
            };
            drop(st);
            if let Some(Fault::Lie(ranges)) = &fault {
                return out(respond::json(
                    StatusCode::OK,
                    &serde_json::json!({ "nextExpectedRanges": ranges }),
                ));
            }
            if matches!(fault, Some(Fault::LoseAnswer)) {
                // Stored, acknowledged nowhere: the client must ask.
                let _ = render(s, sid, &answer);
                return drop_connection("lost answer");
            }
            out(render(s, sid, &answer))
        }
    }
}

/// Reads the whole body, or `None` after `limit` bytes (a reset) or on an error.
async fn read_body(mut body: Incoming, limit: Option<usize>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if limit.is_some_and(|l| buf.len() >= l) {
            return None;
        }
    }
    Some(buf)
}

/// The answer to a stored or replayed fragment, in the server's style; on
/// completion the attachment is created (once).
fn render(s: &Shared, sid: &str, answer: &Answer) -> Response<Vec<u8>> {
    let style = *s.style.lock().unwrap();
    let mut st = s.state.lock().unwrap();
    let stored = st.sessions.get(sid).expect("session exists");
    let location = format!(
        "{}/v1.0/me/{}/attachments/{}",
        s.origin, stored.parent, stored.attachment_id
    );
    let id = stored.attachment_id.clone();
    match answer {
        Answer::Progress { .. } => {
            drop(st);
            restyle(s, Dialect::UPSESSION.answer(answer, &location))
        }
        Answer::Completed => {
            let item = stored.item.clone();
            let data = stored.data.clone();
            st.attachments
                .entry(id.clone())
                .or_insert((item.clone(), data));
            drop(st);
            let file =
                upsession_core::wire::FileAttachment::new(id.clone(), &item, SystemTime::now());
            match style.completion {
                Completion::Created => Dialect::UPSESSION.answer(answer, &location),
                Completion::CreatedWithBody => {
                    let mut res = respond::json(StatusCode::CREATED, &file);
                    res.headers_mut()
                        .insert("location", HeaderValue::from_str(&location).unwrap());
                    restyle(s, res)
                }
                Completion::OkWithId => restyle(s, respond::json(StatusCode::OK, &file)),
            }
        }
        _ => unreachable!(),
    }
}

/// Rewrites a JSON answer into the configured style.
fn restyle(s: &Shared, mut res: Response<Vec<u8>>) -> Response<Vec<u8>> {
    let style = *s.style.lock().unwrap();
    let Ok(mut v) = serde_json::from_slice::<Value>(res.body()) else {
        return res;
    };
    let Value::Object(map) = &mut v else {
        return res;
    };
    if let Some(Value::Array(ranges)) = map.get_mut("nextExpectedRanges") {
        for r in ranges.iter_mut() {
            let text = r.as_str().unwrap().to_owned();
            let start = text.split('-').next().unwrap().to_owned();
            *r = Value::String(match style.ranges {
                Ranges::Closed => text,
                Ranges::Open => format!("{start}-"),
                Ranges::Bare => start,
            });
        }
    }
    if style.odata {
        map.insert(
            "@odata.context".into(),
            Value::String(
                "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession".into(),
            ),
        );
    }
    if style.pascal {
        let old = std::mem::take(map);
        for (k, val) in old {
            let key = if k.starts_with('@') {
                k
            } else {
                let mut c = k.chars();
                let first = c.next().unwrap().to_ascii_uppercase();
                format!("{first}{}", c.as_str())
            };
            map.insert(key, val);
        }
    }
    *res.body_mut() = serde_json::to_vec(&v).unwrap();
    res
}

// ----- client side helpers -----

/// A planner that retries quickly, so fault tests take milliseconds.
pub fn fast_planner() -> PlannerConfig {
    PlannerConfig::default()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(40))
        .with_deadline(Some(Duration::from_secs(120)))
}

/// A client for `server` with the test token and small fragments.
pub fn builder(server: &FakeGraph) -> ClientBuilder {
    Client::builder()
        .base_url(&server.base)
        .token(TOKEN)
        .planner(fast_planner())
        .fragment_size(FRAGMENT)
        .request_timeout(Duration::from_secs(30))
}

pub fn client(server: &FakeGraph) -> Client {
    builder(server).build().unwrap()
}

/// Writes `len` pseudo-random bytes (from `seed`) to `dir/name`.
pub fn make_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts that the server holds exactly `expected` as the attachment `id`.
pub fn assert_stored(server: &FakeGraph, id: Option<&str>, expected: &[u8]) {
    let id = id.expect("the upload reports the attachment id");
    let stored = server
        .attachment(id)
        .unwrap_or_else(|| panic!("no attachment {id} on the server"));
    assert_eq!(stored.len(), expected.len(), "stored size");
    assert_eq!(sha256(&stored), sha256(expected), "stored bytes differ");
}
