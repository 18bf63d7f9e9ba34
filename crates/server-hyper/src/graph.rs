//! The Graph front-end: Microsoft Graph's routes (messages, events, calendarView,
//! attachments, upload sessions) translated to [`Engine`] calls, and the engine's
//! results to Graph's answers in the configured dialect. OneDrive's drive routes
//! are answered by the handlers of [`crate::onedrive`].
//!
//! [`Graph::handle`] is the route table, read top to bottom; each handler splits the
//! request, asks the engine, and renders with the core (`respond`, `Dialect`).
//! Authentication, routing, request ids and the test double's faults are layers
//! around it ([`crate::layers`]): a handler finds the parsed [`Route`] and the
//! caller's app in the request's extensions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use upsession_core::credential::{CREDENTIAL_PARAM, Signer};
use upsession_core::dialect::LocationStyle;
use upsession_core::download::{RangeRequest, range_request};
use upsession_core::error::RequestError;
use upsession_core::identity::Mailbox;
use upsession_core::route::{ItemKind, ItemPath, Route, upload_path};
use upsession_core::wire::{AttachmentItem, Collection, FileAttachment, Item, NewFileAttachment};
use upsession_core::{Dialect, respond};

use crate::engine::{BodyError, BodyStream, Engine, Failure, Fragment, fail};
use crate::exchange::{
    App, BodyTimeouts, ReqBody, RequestId, ResBody, content_length, drain_exact, error_response,
    full, linger, read_json_body, read_json_body_up_to, text,
};
use crate::store::{ItemView, SessionRecord};

/// The base of the uploadUrls and `Location`s handed out.
#[derive(Debug)]
pub(crate) enum PublicUrl {
    /// `--public-url`, or `http(s)://{listen}` for a specific listening address.
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
    pub(crate) fn for_request<'a>(
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

/// The largest `POST …/attachments` body: the largest small file as base64 (4
/// bytes for every 3), and room for its other properties.
const SMALL_ATTACHMENT_BODY: u64 = NewFileAttachment::MAX_SIZE.div_ceil(3) * 4 + 64 * 1024;

/// The Graph front-end's state.
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) engine: Arc<Engine>,
    pub(crate) dialect: Dialect,
    pub(crate) public_url: PublicUrl,
    pub(crate) signer: Signer,
    pub(crate) body: BodyTimeouts,
}

type Answer = Result<Response<ResBody>, Failure>;

impl Graph {
    /// The route table: every Graph route and the handler that answers it.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<ReqBody>) -> Response<ResBody> {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_default();
        let Some(route) = req.extensions().get::<Route>().cloned() else {
            return error_response(&fail(RequestError::NoRoute(req.uri().path().into())), &id);
        };
        let now = self.engine.now();
        // The auth layer put the mailbox the route names for the caller; a mailbox
        // route without one is a stack built wrong, and answers nothing.
        let mailbox = req.extensions().get::<Mailbox>().cloned();
        let mailbox = match (&mailbox, route.mailbox()) {
            (Some(m), _) => m.clone(),
            (None, None) => Mailbox::sole(),
            (None, Some(_)) => return error_response(&fail(RequestError::Internal), &id),
        };
        let mailbox = &mailbox;
        let answer = match route {
            Route::Health => Ok(full(text(StatusCode::OK, "ok\n"))),
            Route::Ready => {
                (self.engine.ready().await).map(|()| full(text(StatusCode::OK, "ready\n")))
            }
            Route::Metrics => Ok(self.metrics_page(&req)),
            Route::CreateItem { kind, .. } => self.create_item(req, kind, mailbox, now).await,
            Route::Item(path) => self.item(&path, mailbox).await,
            Route::Attachments(path) if req.method() == Method::POST => {
                self.add_attachment(&path, mailbox, req, now).await
            }
            Route::Attachments(path) => self.attachments(&path, mailbox).await,
            Route::Attachment(path, aid) if req.method() == Method::DELETE => {
                self.delete_attachment(&path, mailbox, &aid).await
            }
            Route::Attachment(path, aid) => self.attachment(&path, mailbox, &aid).await,
            Route::AttachmentValue(path, aid) => {
                self.attachment_value(&path, mailbox, &aid, req.headers())
                    .await
            }
            Route::CreateUploadSession(path) => self.create_session(req, &path, mailbox, now).await,
            Route::Upload(sid) if req.method() == Method::PUT => self.put(&sid, req, now).await,
            Route::Upload(sid) if req.method() == Method::GET => {
                let base = self.base(&req);
                self.status(&sid, &base, now).await
            }
            Route::Upload(sid) if req.method() == Method::POST => {
                self.commit_drive_upload(&sid, req.headers(), now).await
            }
            Route::Upload(sid) => self.cancel(&sid, now).await,
            Route::Drive(_, drive) => self.drive_json(&drive, mailbox, now).await,
            Route::DriveCreateUploadSession(at) => {
                self.create_drive_session(req, &at, mailbox, now).await
            }
            Route::DriveItem(at) if req.method() == Method::DELETE => {
                self.delete_drive_item(req.headers(), &at, mailbox, now)
                    .await
            }
            Route::DriveItem(at) => self.drive_item(&at, mailbox, now).await,
            Route::DriveContent(at) => self.drive_content(req.headers(), &at, mailbox, now).await,
            _ => Err(fail(RequestError::NoRoute(req.uri().path().into()))),
        };
        answer.unwrap_or_else(|err| error_response(&err, &id))
    }

    fn metrics_page(&self, req: &Request<ReqBody>) -> Response<ResBody> {
        // Prometheus asks for OpenMetrics first; anyone else (curl, older scrapers)
        // gets the classic text format.
        let open_metrics = req
            .headers()
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        let metrics = self.engine.metrics();
        let (page, content_type) = if open_metrics {
            (
                metrics.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            (
                metrics.render_classic(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        };
        let mut res = text(StatusCode::OK, &page);
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        full(res)
    }

    async fn create_item(
        &self,
        req: Request<ReqBody>,
        kind: ItemKind,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answer {
        let body = read_json_body(req, self.body.idle).await?;
        let subject = Item::subject_from_request_json(&body).map_err(fail)?;
        let record = self.engine.create_item(kind, subject, mailbox, now).await?;
        let json = item_json(&ItemView {
            record,
            attachments: Vec::new(),
        });
        Ok(full(respond::json(StatusCode::CREATED, &json)))
    }

    async fn item(&self, path: &ItemPath, mailbox: &Mailbox) -> Answer {
        let view = self.engine.item(path, mailbox).await?;
        Ok(full(respond::json(StatusCode::OK, &item_json(&view))))
    }

    async fn attachments(&self, path: &ItemPath, mailbox: &Mailbox) -> Answer {
        let value: Vec<FileAttachment> = self
            .engine
            .item(path, mailbox)
            .await?
            .attachments
            .into_iter()
            .map(|a| a.meta)
            .collect();
        Ok(full(respond::json(StatusCode::OK, &Collection { value })))
    }

    /// `POST …/attachments`: a small file, its bytes in the body as base64, stored
    /// as a session-made attachment is; 201 with the attachment and its `Location`.
    async fn add_attachment(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        req: Request<ReqBody>,
        now: SystemTime,
    ) -> Answer {
        let (base, app) = (self.base(&req), app_of(&req));
        let body = read_json_body_up_to(
            req,
            self.body.idle,
            usize::try_from(SMALL_ATTACHMENT_BODY).unwrap_or(usize::MAX),
        )
        .await?;
        let new = NewFileAttachment::from_request_json(&body).map_err(fail)?;
        let record = self
            .engine
            .attach_small(path, mailbox, new, &app.0, now)
            .await?;
        let mut res = respond::json(StatusCode::CREATED, &record.meta);
        let location = format!("{base}{}", path.attachment_path(&record.meta.id));
        if let Ok(value) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(http::header::LOCATION, value);
        }
        Ok(full(res))
    }

    async fn attachment(&self, path: &ItemPath, mailbox: &Mailbox, aid: &str) -> Answer {
        let record = self.engine.attachment(path, mailbox, aid).await?;
        Ok(full(respond::json(StatusCode::OK, &record.meta)))
    }

    /// `DELETE …/attachments/{aid}`: 204, the attachment and its bytes gone.
    async fn delete_attachment(&self, path: &ItemPath, mailbox: &Mailbox, aid: &str) -> Answer {
        self.engine.delete_attachment(path, mailbox, aid).await?;
        Ok(full(respond::deleted()))
    }

    /// `GET …/attachments/{aid}/$value`: the bytes, streamed; one `Range` is
    /// answered 206 (Graph's drive items do so; its attachments answer whole).
    async fn attachment_value(
        &self,
        path: &ItemPath,
        mailbox: &Mailbox,
        aid: &str,
        headers: &http::HeaderMap,
    ) -> Answer {
        let record = self.engine.attachment(path, mailbox, aid).await?;
        self.stream_bytes(&record, headers, &record.meta.content_type)
            .await
    }

    /// A finished upload's bytes as a download: whole (200) or the one `Range`
    /// asked (206), streamed, typed `content_type`.
    pub(crate) async fn stream_bytes(
        &self,
        record: &crate::store::AttachmentRecord,
        headers: &http::HeaderMap,
        content_type: &str,
    ) -> Answer {
        let total = record.meta.size;
        let asked = range_request(
            headers
                .get(http::header::RANGE)
                .and_then(|v| v.to_str().ok()),
            headers.contains_key(http::header::IF_RANGE),
            total,
        );
        let Some(window) = asked.bytes(total) else {
            return Err(fail(RequestError::RangeNotSatisfiable { total }));
        };
        let stream = self.engine.attachment_bytes(record, window).await?;
        let body = StreamBody::new(stream.map(|r| r.map(Frame::data)));
        let mut res = Response::new(body.boxed_unsync());
        if let RangeRequest::Part(_) = asked {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        let headers = res.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(window.len()));
        headers.insert(
            http::header::ACCEPT_RANGES,
            HeaderValue::from_static("bytes"),
        );
        if let Some(v) = asked
            .content_range(total)
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(http::header::CONTENT_RANGE, v);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
        );
        Ok(res)
    }

    async fn create_session(
        &self,
        req: Request<ReqBody>,
        path: &ItemPath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Answer {
        let (base, app) = (self.base(&req), app_of(&req));
        let body = read_json_body(req, self.body.idle).await?;
        let item = AttachmentItem::from_request_json(&body).map_err(fail)?;
        let (record, session) = self
            .engine
            .create_session(path, mailbox, item, &app.0, now)
            .await?;
        let credential = self.signer.sign(&record.id, session.hard_expiry());
        let upload_url = format!(
            "{base}{}?{CREDENTIAL_PARAM}={credential}",
            upload_path(&record.id)
        );
        Ok(full(self.dialect.created(
            &upload_url,
            session.expires_at(),
            &session.next_expected(),
        )))
    }

    /// `PUT {uploadUrl}`: one fragment.
    async fn put(&self, sid: &str, req: Request<ReqBody>, now: SystemTime) -> Answer {
        let started = std::time::Instant::now();
        let location = self.base(&req);
        let (parts, body) = req.into_parts();
        let content_range = parts
            .headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        let begun = match content_length(&parts.headers) {
            Ok(length) => {
                self.engine
                    .begin_fragment(sid, content_range, length, now)
                    .await
            }
            Err(e) => Err(e),
        };
        let (answer, record) = match begun {
            Err(e) => {
                linger(body, &parts.headers, self.body);
                return Err(e);
            }
            Ok(Fragment::Replay {
                answer,
                body_len,
                record,
            }) => {
                // The same bytes again: the same allowance as storing them.
                drain_exact(body, body_len, self.body.idle, self.body.fragment).await?;
                (answer, record)
            }
            Ok(Fragment::Write(writing)) => {
                let body = fragment_body(body, self.body.idle);
                let engine = Arc::clone(&self.engine);
                writing.store(body, move || engine.now()).await?
            }
        };
        self.engine
            .metrics()
            .fragment_seconds
            .observe(started.elapsed().as_secs_f64());
        if record.drive.is_some() {
            return self.drive_fragment_answer(&answer, &record, now).await;
        }
        Ok(full(
            self.dialect
                .answer(&answer, &self.location(&record, &location)),
        ))
    }

    /// `GET {uploadUrl}`: the session's status.
    async fn status(&self, sid: &str, base: &str, now: SystemTime) -> Answer {
        let (answer, record) = self.engine.status(sid, now).await?;
        if record.drive.is_some() {
            return Ok(self.drive_status_answer(&answer));
        }
        Ok(full(
            self.dialect.status(&answer, &self.location(&record, base)),
        ))
    }

    /// `DELETE {uploadUrl}`: exactly 204.
    async fn cancel(&self, sid: &str, now: SystemTime) -> Answer {
        self.engine.cancel(sid, now).await?;
        Ok(full(respond::deleted()))
    }

    pub(crate) fn base(&self, req: &Request<ReqBody>) -> String {
        self.public_url
            .for_request(req.uri(), req.headers())
            .into_owned()
    }

    /// The attachment's URL under `base`, in the dialect's style.
    fn location(&self, record: &SessionRecord, base: &str) -> String {
        let path = record.item_path();
        let path = match self.dialect.location {
            LocationStyle::OutlookRest => path.outlook_attachment_path(&record.attachment_id),
            _ => path.attachment_path(&record.attachment_id),
        };
        format!("{base}{path}")
    }
}

/// The app the request authenticated as (the auth layer put it there).
pub(crate) fn app_of(req: &Request<ReqBody>) -> App {
    req.extensions().get::<App>().cloned().unwrap_or_default()
}

fn item_json(view: &ItemView) -> Item {
    let mut item = Item::new(
        view.record.id.clone(),
        view.record.subject.clone(),
        view.record.created,
    );
    item.has_attachments = !view.attachments.is_empty();
    item
}

/// A fragment's body as the engine reads it: data frames, with a deadline between
/// them.
fn fragment_body(body: ReqBody, idle: Duration) -> BodyStream {
    Box::pin(futures_util::stream::unfold(
        Some(body),
        move |body| async move {
            let mut body = body?;
            loop {
                return match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => Some((Err(BodyError::Stalled), None)),
                    Ok(None) => None,
                    Ok(Some(Err(_))) => Some((Err(BodyError::Broken), None)),
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Some((Ok(data), Some(body))),
                        Err(_) => continue, // trailers
                    },
                };
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::PublicUrl;

    fn base(public: &PublicUrl, host: Option<&str>) -> String {
        let mut headers = http::HeaderMap::new();
        if let Some(h) = host {
            headers.insert(http::header::HOST, h.parse().unwrap());
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
        for bad in ["evil.example/x", "user@evil.example", "a b", ""] {
            assert_eq!(base(&open, Some(bad)), "http://127.0.0.1:8080", "{bad}");
        }
        assert_eq!(base(&open, None), "http://127.0.0.1:8080");
    }

    #[test]
    fn content_length_is_digits_only() {
        let check = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_LENGTH, v.parse().unwrap());
            super::content_length(&h).ok().flatten()
        };
        assert_eq!(check("10"), Some(10));
        assert_eq!(check(" 10 "), Some(10));
        assert_eq!(check("+10"), None);
        assert_eq!(check("1e3"), None);
        assert_eq!(
            super::content_length(&http::HeaderMap::new()).ok(),
            Some(None)
        );
    }
}
