//! One request to the fake: route, fault, the core's decision, the break (if any),
//! and the answer as the core renders it.

mod body;
mod fragment;
mod items;
mod session;

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RETRY_AFTER,
    TRANSFER_ENCODING,
};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use upsession_core::dialect::{LocationStyle, RangeForm};
use upsession_core::error::{CreateError, GraphError, RequestError};
use upsession_core::route::{ItemPath, Route};
use upsession_core::time::format_http_date;
use upsession_core::{Dialect, respond};

use self::body::{BodyRead, linger, read_body};
use super::{Break, Fault, LoggedRequest, RetryAfter, Shared};

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

/// Largest JSON body accepted.
const MAX_JSON: u64 = 64 * 1024;

/// Answers one request (the hyper service).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let _busy = InFlight::enter(&shared);
    let (index, scripted) = arrive(&shared, &req);
    let mut ctx = Ctx {
        shared: Arc::clone(&shared),
        fault: None,
        scripted,
        target: req
            .uri()
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
    };
    let outcome = ctx.route(req).await;
    if let Some(entry) = shared.state().log.get_mut(index) {
        entry.fault = ctx.fault;
        entry.status = outcome.as_ref().ok().map(|r| r.status().as_u16());
    }
    outcome.map(|res| res.map(|body| Full::new(Bytes::from(body))))
}

/// Logs and counts a request as it arrives, wakes whoever waits for it, and takes
/// the fault scripted for its method and number. Returns its place in the log.
fn arrive(shared: &Shared, req: &Request<Incoming>) -> (usize, Option<Fault>) {
    let header = |name: HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let entry = LoggedRequest {
        method: req.method().to_string(),
        target: match query {
            Some(_) => format!("{path}?<credential>"),
            None => path.clone(),
        },
        to_upload_url: matches!(Route::parse(&path), Ok(Route::Upload(_))),
        path,
        query,
        authorization: header(AUTHORIZATION),
        content_range: header(CONTENT_RANGE),
        content_length: header(CONTENT_LENGTH),
        transfer_encoding: header(TRANSFER_ENCODING),
        fault: None,
        status: None,
    };
    let mut state = shared.state();
    state.log.push(entry);
    let index = state.log.len() - 1;
    let n = state.arrived.entry(req.method().clone()).or_default();
    *n += 1;
    let n = *n;
    let fault = state.faults.take_nth(req.method(), n);
    drop(state);
    shared.arrival.notify_waiters();
    (index, fault)
}

/// Counts a request as being answered while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Ctx {
    shared: Arc<Shared>,
    /// The fault applied to this request, for the log.
    fault: Option<Fault>,
    /// The fault scripted for this request's method and number, until it is applied.
    scripted: Option<Fault>,
    /// The path and query as sent.
    target: String,
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
        let n = self.shared.requests.fetch_add(1, Ordering::Relaxed);
        let id = format!("fake-{n}");
        let mut res = respond::error(err, &id, now);
        if self.breaks(Break::PlainTextErrors) {
            *res.body_mut() = err.to_string().into_bytes();
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        res
    }

    /// Renames a JSON answer's properties to PascalCase when the quirk asks (all but
    /// `@odata` annotations), and adds `id` when given.
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
            let mut chars = key.chars();
            let key = match chars.next() {
                Some(first) if pascal && first != '@' => {
                    format!("{}{}", first.to_ascii_uppercase(), chars.as_str())
                }
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

    /// What a fault that replaces the request's answer gives instead (an answer, or
    /// after a stall none); `None` when the request goes on. The caller drains the
    /// body.
    async fn fault_answer(&mut self, fault: Option<Fault>) -> Option<Outcome> {
        let res = match fault? {
            Fault::Throttle {
                unavailable,
                retry_after,
            } => self.throttle(unavailable, retry_after),
            Fault::ServerError => self.error(&RequestError::Internal),
            Fault::AccessDenied => self.error(&RequestError::AccessDenied),
            Fault::PayloadTooLarge { max } => self.error(&RequestError::BodyTooLarge { max }),
            Fault::CrossHostRedirect => self.redirect_elsewhere(),
            Fault::Stall(d) => {
                self.fault = fault;
                tokio::time::sleep(d).await;
                return Some(Err(Dropped));
            }
            _ => return None,
        };
        self.fault = fault;
        Some(Ok(res))
    }

    fn throttle(&self, unavailable: bool, retry_after: RetryAfter) -> Response<Vec<u8>> {
        let (RetryAfter::Seconds(secs) | RetryAfter::HttpDate(secs)) = retry_after;
        let retry_after_secs = u64::from(secs);
        let mut res = if unavailable {
            self.error(&RequestError::Unavailable { retry_after_secs })
        } else {
            self.error(&RequestError::Throttled { retry_after_secs })
        };
        if let RetryAfter::HttpDate(_) = retry_after
            && let Ok(v) = HeaderValue::from_str(&format_http_date(
                SystemTime::now() + Duration::from_secs(retry_after_secs),
            ))
        {
            res.headers_mut().insert(RETRY_AFTER, v);
        }
        res
    }

    /// 307 to this request's path and query under the fake's other loopback name.
    fn redirect_elsewhere(&self) -> Response<Vec<u8>> {
        let addr = self.shared.local_addr;
        let host = if addr.ip() == Ipv4Addr::LOCALHOST {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let mut res = Response::new(Vec::new());
        *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let location = format!("http://{host}:{}{}", addr.port(), self.target);
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(LOCATION, v);
        }
        res
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
        // A scripted fault that replaces the answer does so on every route.
        if let Some(outcome) = self.fault_answer(self.scripted).await {
            linger(req.into_body());
            return outcome;
        }
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
            Route::Health | Route::Ready => Ok(text(StatusCode::OK, "ok\n")),
            Route::CreateItem {
                version,
                user,
                kind,
            } => self.create_item(req, version, user, kind, now).await,
            Route::Item(path) => Ok(self.item(&path)),
            Route::Attachments(path) if req.method() == http::Method::POST => {
                Ok(self.add_small(req, &path, now).await)
            }
            Route::Attachments(path) => Ok(self.attachments(&path)),
            Route::Attachment(path, aid) => Ok(self.attachment(&path, &aid, false)),
            Route::AttachmentValue(path, aid) => Ok(self.attachment(&path, &aid, true)),
            Route::CreateUploadSession(path) => self.create_session(req, &path, now).await,
            Route::Upload(id) => self.upload(req, &id, now).await,
            _ => Ok(self.error(&RequestError::NoRoute(req.uri().path().to_owned()))),
        }
    }

    /// The request's JSON body read by `parse`, or the error answer to send.
    async fn json_body<T>(
        &self,
        req: Request<Incoming>,
        parse: fn(&[u8]) -> Result<T, CreateError>,
    ) -> Result<T, Response<Vec<u8>>> {
        self.json_body_up_to(req, MAX_JSON, parse).await
    }

    /// [`Ctx::json_body`] of at most `max` bytes.
    async fn json_body_up_to<T>(
        &self,
        req: Request<Incoming>,
        max: u64,
        parse: fn(&[u8]) -> Result<T, CreateError>,
    ) -> Result<T, Response<Vec<u8>>> {
        let body = match read_body(req.into_body(), max, None).await {
            BodyRead::Complete(body) => body,
            BodyRead::TooLong(_) => {
                return Err(self.error(&RequestError::BodyTooLarge { max }));
            }
            _ => return Err(self.error(&RequestError::Timeout)),
        };
        parse(&body).map_err(|e| self.error(&e))
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
