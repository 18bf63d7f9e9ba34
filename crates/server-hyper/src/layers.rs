//! What surrounds every request, as tower layers around the Graph front-end:
//!
//! - [`observe`]: the request id (header, error JSON, log span), the size of the
//!   head (431), and metrics of error codes;
//! - [`route`]: the path parsed once into a [`Route`] (404, 405);
//! - [`auth`]: the bearer token of Graph routes, the uploadUrl's own credential,
//!   the metrics token;
//! - [`double`]: the test double's throttling, seeded faults, request history and
//!   `/_upsession/*` routes; not in the stack at all unless configured.
//!
//! Each is an async function of the request and the rest of the stack ([`Next`]),
//! made a `tower::Layer` by [`middleware`], in the manner of axum's `from_fn`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt as _};
use tracing::{Instrument as _, debug, info};
use upsession_core::credential::{Signer, Tokens};
use upsession_core::error::RequestError;
use upsession_core::fault::{Fault, FaultPlan, FaultRoute};
use upsession_core::identity::{Access, FailureBudget, Grant, Mailbox, Principal};
use upsession_core::respond;
use upsession_core::route::{Route, User};
use upsession_core::throttle::Throttle;

use crate::engine::{Engine, Failure, fail};
use crate::exchange::{
    App, BodyTimeouts, DropConnection, ErrorCode, Peer, ReqBody, RequestId, ResBody,
    content_length, drain_exact, error_response, full, linger,
};
use crate::identity::Identities;
use crate::metrics::Metrics;

/// The stack, and every layer's inner service.
pub(crate) type Stack = BoxCloneSyncService<Request<ReqBody>, Response<ResBody>, Infallible>;

/// The rest of the stack, for a layer to call.
#[derive(Clone)]
pub(crate) struct Next(Stack);

impl Next {
    pub(crate) async fn run(self, req: Request<ReqBody>) -> Response<ResBody> {
        match self.0.oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

/// A layer made of an async function of `state`, the request and [`Next`].
pub(crate) fn middleware<St, F, Fut>(state: St, f: F) -> impl Layer<Stack, Service = Stack> + Clone
where
    St: Clone + Send + Sync + 'static,
    F: Fn(St, Request<ReqBody>, Next) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResBody>> + Send + 'static,
{
    tower::layer::layer_fn(move |inner: Stack| {
        let (state, f) = (state.clone(), f.clone());
        BoxCloneSyncService::new(tower::service_fn(move |req| {
            let fut = f(state.clone(), req, Next(inner.clone()));
            async move { Ok::<_, Infallible>(fut.await) }
        }))
    })
}

fn request_id(req: &Request<ReqBody>) -> RequestId {
    req.extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_default()
}

/// The largest request line plus headers a request may carry: 64 KiB, as browsers
/// and proxies allow and far above what Graph's clients send.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Request ids, logs, the head's size, and error metrics.
pub(crate) async fn observe(
    metrics: Arc<Metrics>,
    mut req: Request<ReqBody>,
    next: Next,
) -> Response<ResBody> {
    let id = RequestId(format!(
        "{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    ));
    req.extensions_mut().insert(id.clone());
    // The path carries no credential (that is in the query), so it may be logged.
    let span = tracing::info_span!("request", id = %id.0, method = %req.method(), path = %req.uri().path());
    // hyper's HTTP/1 read buffer lets some 400 KiB of head through; past our own
    // limit (HTTP/2's too) the answer is Graph's JSON, not a bare 431.
    let head = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    let mut res = if head > MAX_HEAD_BYTES {
        let err = fail(RequestError::HeadersTooLarge {
            max: MAX_HEAD_BYTES as u64,
        });
        let mut res = error_response(&err, &id);
        // Whatever sent that is not worth keeping a connection for.
        res.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        res
    } else {
        next.run(req).instrument(span.clone()).await
    };
    if let Some(code) = res.extensions().get::<ErrorCode>() {
        metrics.error(code.0);
        span.in_scope(|| debug!(status = res.status().as_u16(), code = code.0, "refused"));
    }
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        res.headers_mut().insert(respond::REQUEST_ID, v);
    }
    res
}

/// The path, parsed once for every layer after this one.
pub(crate) async fn route((): (), mut req: Request<ReqBody>, next: Next) -> Response<ResBody> {
    let parsed = Route::parse(req.uri().path()).and_then(|r| {
        r.check_method(req.method())?;
        Ok(r)
    });
    match parsed {
        Ok(route) => {
            req.extensions_mut().insert(route);
            next.run(req).await
        }
        Err(e) => error_response(&fail(e), &request_id(&req)),
    }
}

/// Who may do what: bearer tokens on Graph routes, the uploadUrl's own credential.
#[derive(Debug)]
pub(crate) struct Auth {
    pub(crate) identities: Identities,
    pub(crate) signer: Signer,
    pub(crate) metrics_token: Option<Tokens>,
    /// `/metrics` without its token from any address, not only loopback.
    pub(crate) metrics_public: bool,
    /// Failed authentications per client address; `None`: no limit.
    pub(crate) failures: Option<Mutex<FailureBudget>>,
    pub(crate) metrics: Arc<Metrics>,
    /// `--reject-upload-auth`: an `Authorization` header on an uploadUrl is 401.
    pub(crate) reject_upload_authorization: bool,
    pub(crate) body: BodyTimeouts,
}

/// Whether a request came from this machine (its connection's address).
fn from_loopback(req: &Request<ReqBody>) -> bool {
    req.extensions()
        .get::<Peer>()
        .is_some_and(|Peer(addr)| match addr.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
        })
}

/// Checks credentials; sets the caller's [`App`] and, on mailbox routes, the
/// [`Mailbox`] the route names for the caller.
pub(crate) async fn auth(
    state: Arc<Auth>,
    mut req: Request<ReqBody>,
    next: Next,
) -> Response<ResBody> {
    let id = request_id(&req);
    let route = req.extensions().get::<Route>().cloned();
    let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let mut app = authorization.map(app_of).unwrap_or_default();
    let refused = match &route {
        Some(r) if r.needs_bearer() => match state.caller(&req, r) {
            Ok((principal, mailbox)) => {
                // Limits and throttling count per caller: a tokens file's or a
                // JWT's user or application (a refreshed JWT is the same caller);
                // in the single-token mode, per token as before.
                if !matches!(principal.grant, Grant::Sole) {
                    app = format!("{}:{}", principal_kind(&principal.grant), principal.id);
                }
                if let Some(mailbox) = mailbox {
                    req.extensions_mut().insert(mailbox);
                }
                None
            }
            Err(e) => Some(e),
        },
        Some(Route::Metrics) => match &state.metrics_token {
            Some(t) => t
                .check(authorization)
                .err()
                .map(|m| fail(RequestError::Unauthenticated(m))),
            None if state.metrics_public || from_loopback(&req) => None,
            None => Some(fail(RequestError::AccessDenied)),
        },
        // The credential is checked before any session is looked at.
        Some(Route::Upload(sid))
            if !state
                .signer
                .verify(sid, req.uri().query(), SystemTime::now()) =>
        {
            Some(fail(RequestError::InvalidUploadCredential))
        }
        Some(Route::Upload(_)) if state.reject_upload_authorization && authorization.is_some() => {
            // A caller with a valid credential: its body is read, so it reads this.
            let res = error_response(&fail(RequestError::AuthorizationOnUploadUrl), &id);
            let (parts, body) = req.into_parts();
            linger(body, &parts.headers, state.body);
            return res;
        }
        _ => None,
    };
    if let Some(err) = refused {
        let mut res = error_response(&err, &id);
        if res.status() == StatusCode::UNAUTHORIZED
            && route.as_ref().is_some_and(Route::needs_bearer)
        {
            // RFC 6750 §3: a bearer-protected resource says so on a 401.
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        return res;
    }
    req.extensions_mut().insert(App(app));
    next.run(req).await
}

fn principal_kind(grant: &Grant) -> &'static str {
    match grant {
        Grant::Application(_) => "app",
        Grant::Delegated(_) | Grant::Sole => "user",
    }
}

impl Auth {
    /// Who is calling and, on a mailbox route, which mailbox it names for them.
    fn caller(
        &self,
        req: &Request<ReqBody>,
        route: &Route,
    ) -> Result<(Principal, Option<Mailbox>), Failure> {
        let now = SystemTime::now();
        let peer = req.extensions().get::<Peer>().map(|Peer(addr)| addr.ip());
        if let (Some(budget), Some(ip)) = (&self.failures, peer) {
            budget
                .lock()
                .expect("failure budget lock")
                .check(ip, now)
                .map_err(|e| {
                    self.metrics.auth_failed("over_budget");
                    fail(e)
                })?;
        }
        let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        let principal = match self.identities.authenticate(authorization, now) {
            Ok(principal) => principal,
            Err(refusal) => {
                self.metrics.auth_failed(refusal.reason);
                // Never the token: the reason and the address are enough.
                info!(reason = refusal.reason, peer = ?peer, "authentication failed");
                if let (Some(budget), Some(ip)) = (&self.failures, peer) {
                    budget.lock().expect("failure budget lock").failed(ip, now);
                }
                return Err(fail(RequestError::Unauthenticated(refusal.sentence)));
            }
        };
        let Some((user, resource)) = route.mailbox() else {
            return Ok((principal, None));
        };
        let access = if req.method() == Method::GET {
            Access::Read
        } else {
            Access::Write
        };
        let mailbox = principal.mailbox(user, (resource, access)).map_err(|e| {
            debug!(caller = ?principal, "refused: {e}");
            fail(e)
        })?;
        // An application names users by id or sign-in name; a tokens file knows
        // both, and the JWT mode the users seen so far.
        let mailbox = match (&principal.grant, user) {
            (Grant::Application(_), User::Id(name)) => self
                .identities
                .user_id(name)
                .map_or(mailbox, |id| Mailbox::of(&id)),
            _ => mailbox,
        };
        Ok((principal, Some(mailbox)))
    }
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

/// Requests remembered per session for inspection.
const HISTORY: usize = 200;

/// The test double: throttling, faults, history and its own routes.
#[derive(Debug)]
pub(crate) struct Double {
    pub(crate) engine: Arc<Engine>,
    pub(crate) throttle: Option<Mutex<Throttle>>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) admin: Option<Tokens>,
    pub(crate) history: Mutex<History>,
    pub(crate) body: BodyTimeouts,
}

/// What the fault plan asked for around one request.
#[derive(Debug, Default)]
struct After {
    drop: bool,
    delay: Option<Duration>,
}

/// Throttles, injects faults, records uploadUrl requests, and answers `/_upsession/*`.
pub(crate) async fn double(
    state: Arc<Double>,
    req: Request<ReqBody>,
    next: Next,
) -> Response<ResBody> {
    let id = request_id(&req);
    let Some(route) = req.extensions().get::<Route>().cloned() else {
        return next.run(req).await;
    };
    if matches!(route, Route::AdminSessions | Route::AdminFaults) {
        return state
            .admin(&route, req)
            .await
            .unwrap_or_else(|e| error_response(&e, &id));
    }
    let seen = Seen::of(&route, &req);
    let app = req.extensions().get::<App>().cloned().unwrap_or_default();
    let bytes = if seen.method == Method::PUT {
        content_length(req.headers()).ok().flatten().unwrap_or(0)
    } else {
        0
    };
    let mailbox = req.extensions().get::<Mailbox>().cloned();
    let _permit = match state.admit(&route, app, mailbox.as_ref(), bytes).await {
        Ok(permit) => permit,
        Err(e) => return state.remember(&seen, error_response(&e, &id), false),
    };
    let mut after = After::default();
    let res = match state.fault(&route, &seen.method, req, &mut after).await {
        Ok(req) => next.run(req).await,
        Err(e) => error_response(&e, &id),
    };
    if let Some(delay) = after.delay {
        tokio::time::sleep(delay).await;
    }
    let mut res = state.remember(&seen, res, after.drop);
    if after.drop {
        debug!("connection dropped by the fault plan");
        res.extensions_mut().insert(DropConnection);
    }
    res
}

/// The recent uploadUrl requests of the most recent sessions: at most
/// [`HISTORY`] requests each, of at most [`HISTORY_SESSIONS`] sessions (the
/// oldest forgotten first), and none of a session that is gone once listed.
#[derive(Debug, Default)]
pub(crate) struct History {
    by_session: HashMap<String, VecDeque<serde_json::Value>>,
    /// Sessions in the order they were first seen.
    order: VecDeque<String>,
}

/// Most sessions whose requests the test double remembers.
const HISTORY_SESSIONS: usize = 10_000;

impl History {
    fn record(&mut self, session: &str, entry: serde_json::Value) {
        if !self.by_session.contains_key(session) {
            if self.order.len() == HISTORY_SESSIONS
                && let Some(oldest) = self.order.pop_front()
            {
                self.by_session.remove(&oldest);
            }
            self.order.push_back(session.to_owned());
        }
        let entries = self.by_session.entry(session.to_owned()).or_default();
        if entries.len() == HISTORY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Forgets every session not in `live`.
    fn keep_only(&mut self, live: &std::collections::HashSet<&str>) {
        self.by_session.retain(|id, _| live.contains(id.as_str()));
        self.order.retain(|id| live.contains(id.as_str()));
    }
}

/// What a session's history keeps of a request to its uploadUrl.
struct Seen {
    /// The session, for an uploadUrl request.
    upload: Option<String>,
    method: Method,
    /// The `Content-Range` as sent (its first 100 characters).
    content_range: Option<String>,
}

impl Seen {
    fn of(route: &Route, req: &Request<ReqBody>) -> Self {
        Self {
            upload: match route {
                Route::Upload(sid) => Some(sid.clone()),
                _ => None,
            },
            method: req.method().clone(),
            content_range: req
                .headers()
                .get(http::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(100).collect()),
        }
    }
}

/// Admission by the throttle, released when the request is answered.
struct Admitted<'a> {
    throttle: &'a Mutex<Throttle>,
    permit: Option<upsession_core::throttle::Permit>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.throttle.lock().expect("throttle lock").release(p);
        }
    }
}

impl Double {
    /// Admits the request of an app on a mailbox (a session's, for an uploadUrl),
    /// or answers 429.
    async fn admit(
        &self,
        route: &Route,
        app: App,
        mailbox: Option<&Mailbox>,
        bytes: u64,
    ) -> Result<Option<Admitted<'_>>, Failure> {
        let Some(throttle) = &self.throttle else {
            return Ok(None);
        };
        let app = app.0;
        // The mailbox the auth layer resolved (a session's own, for an uploadUrl):
        // `/me` and `/users/{id}` of one user are one mailbox, as Graph counts them.
        let key = match (route, mailbox) {
            (Route::Upload(sid), _) => self.engine.owner(sid).await,
            (_, Some(mailbox)) => Some((app, mailbox.as_str().to_owned())),
            _ => None,
        };
        let Some((app, mailbox)) = key else {
            return Ok(None);
        };
        let permit = throttle
            .lock()
            .expect("throttle lock")
            .admit(SystemTime::now(), &format!("{app}|{mailbox}"), bytes)
            .map_err(fail)?;
        Ok(Some(Admitted {
            throttle,
            permit: Some(permit),
        }))
    }

    /// Applies the fault the plan picks for this request; an error fault is the
    /// answer, the others act on the request or on `after`.
    async fn fault(
        &self,
        route: &Route,
        method: &Method,
        req: Request<ReqBody>,
        after: &mut After,
    ) -> Result<Request<ReqBody>, Failure> {
        let Some(fault_route) = fault_route(route, method) else {
            return Ok(req);
        };
        let fault = self.faults.lock().expect("faults lock").decide(fault_route);
        match fault {
            Some(f) if f.as_error().is_some() => Err(fail(f.as_error().expect("checked"))),
            Some(Fault::Slow(d)) => {
                after.delay = Some(d);
                Ok(req)
            }
            Some(Fault::Lost) => {
                after.drop = true;
                Ok(req)
            }
            Some(Fault::Reset) => {
                // Part of the body arrives, then the connection drops.
                let (parts, body) = req.into_parts();
                if matches!(route, Route::Upload(_)) {
                    let half = content_length(&parts.headers).ok().flatten().unwrap_or(0) / 2;
                    let (idle, total) = (Duration::from_millis(200), self.body.linger);
                    let _ = drain_exact(body, half, idle, total).await;
                }
                after.drop = true;
                Err(fail(RequestError::Internal))
            }
            Some(Fault::Expire) => {
                if let Route::Upload(sid) = route {
                    self.engine.expire_now(sid).await;
                }
                Ok(req)
            }
            Some(Fault::RejectAuthorization) if req.headers().contains_key(AUTHORIZATION) => {
                Err(fail(RequestError::AuthorizationOnUploadUrl))
            }
            _ => Ok(req),
        }
    }

    /// Records an uploadUrl request in its session's history (with an admin token).
    fn remember(&self, seen: &Seen, res: Response<ResBody>, dropped: bool) -> Response<ResBody> {
        if let (Some(sid), Some(_)) = (&seen.upload, &self.admin) {
            let entry = serde_json::json!({
                "at": upsession_core::time::format_graph_time(SystemTime::now()),
                "method": seen.method.as_str(),
                "contentRange": seen.content_range,
                "status": res.status().as_u16(),
                "dropped": dropped,
            });
            self.history
                .lock()
                .expect("history lock")
                .record(sid, entry);
        }
        res
    }

    /// `/_upsession/sessions` and `/_upsession/faults`, behind the admin token.
    async fn admin(
        &self,
        route: &Route,
        req: Request<ReqBody>,
    ) -> Result<Response<ResBody>, Failure> {
        let Some(tokens) = &self.admin else {
            return Err(fail(RequestError::NoRoute(req.uri().path().to_owned())));
        };
        let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        tokens
            .check(authorization)
            .map_err(|m| fail(RequestError::Unauthenticated(m)))?;
        let json = if *route == Route::AdminFaults {
            self.admin_faults(req).await?
        } else {
            self.admin_sessions().await?
        };
        Ok(full(respond::json(StatusCode::OK, &json)))
    }

    /// `/_upsession/faults`: the fault plan, replaced first by a `PUT`'s.
    async fn admin_faults(&self, req: Request<ReqBody>) -> Result<serde_json::Value, Failure> {
        if req.method() == Method::PUT {
            let body = crate::exchange::read_json_body(req, self.body.idle).await?;
            let plan: FaultPlan = String::from_utf8_lossy(&body).parse().map_err(
                |e: upsession_core::fault::FaultSpecError| {
                    fail(RequestError::InvalidBody(e.to_string()))
                },
            )?;
            info!(faults = %plan, seed = plan.seed(), "fault plan replaced");
            *self.faults.lock().expect("faults lock") = plan;
        }
        let plan = self.faults.lock().expect("faults lock");
        Ok(serde_json::json!({"spec": plan.to_string(), "seed": plan.seed()}))
    }

    /// `/_upsession/sessions`: every session, its state and its recent requests.
    async fn admin_sessions(&self) -> Result<serde_json::Value, Failure> {
        let sessions = self.engine.sessions().await?;
        let history = {
            let mut history = self.history.lock().expect("history lock");
            let live = sessions.iter().map(|(r, _)| r.id.as_str()).collect();
            history.keep_only(&live);
            history.by_session.clone()
        };
        let value: Vec<serde_json::Value> = sessions
            .into_iter()
            .map(|(record, session)| {
                let received: Vec<[u64; 2]> = session
                    .received()
                    .ranges()
                    .iter()
                    .map(|r| [r.start(), r.end()])
                    .collect();
                serde_json::json!({
                    "id": record.id,
                    "itemId": record.item_id,
                    "name": record.attachment.name,
                    "size": session.size(),
                    "phase": session.phase(),
                    "received": received,
                    "expirationDateTime": upsession_core::time::format_graph_time(session.expires_at()),
                    "requests": history.get(&record.id).cloned().unwrap_or_default(),
                })
            })
            .collect();
        Ok(serde_json::json!({ "value": value }))
    }
}

/// Which rules of a fault plan a request falls under.
fn fault_route(route: &Route, method: &Method) -> Option<FaultRoute> {
    Some(match route {
        Route::CreateItem { .. } => FaultRoute::Item,
        Route::CreateUploadSession(_) | Route::DriveCreateUploadSession(_) => FaultRoute::Create,
        Route::Item(_)
        | Route::Attachments(_)
        | Route::Attachment(..)
        | Route::AttachmentValue(..)
        | Route::Drive(..)
        | Route::DriveItem(_)
        | Route::DriveContent(_) => FaultRoute::Download,
        // A drive upload's explicit commit finishes it as a last fragment would.
        Route::Upload(_) if method == Method::PUT || method == Method::POST => FaultRoute::Put,
        Route::Upload(_) if method == Method::GET => FaultRoute::Status,
        Route::Upload(_) => FaultRoute::Cancel,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{HISTORY, HISTORY_SESSIONS, History};

    #[test]
    fn the_history_is_bounded_and_forgets_sessions_that_are_gone() {
        let mut history = History::default();
        for i in 0..=HISTORY_SESSIONS {
            history.record(&format!("s{i}"), serde_json::json!(i));
        }
        assert_eq!(history.by_session.len(), HISTORY_SESSIONS);
        assert!(
            !history.by_session.contains_key("s0"),
            "the oldest went first"
        );
        for i in 0..=HISTORY {
            history.record("s1", serde_json::json!(i));
        }
        assert_eq!(history.by_session["s1"].len(), HISTORY);
        history.keep_only(&["s1"].into_iter().collect());
        assert_eq!(history.by_session.len(), 1);
        assert_eq!(history.order.len(), 1);
    }
}
