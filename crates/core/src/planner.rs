//! The client side of an upload: what to send next, what an answer means, when to
//! retry and how long to wait.
//!
//! # Driving a [`Planner`]
//!
//! The planner is a pump. The adapter loops:
//!
//! 1. `planner.next(now)` returns an [`Action`]: a request to make
//!    ([`Action::CreateSession`], [`Action::Put`], [`Action::QueryStatus`],
//!    [`Action::Delete`]), a time to sleep until ([`Action::Wait`]), or the end
//!    ([`Action::Done`], [`Action::Failed`], [`Action::Cancelled`]).
//! 2. The adapter makes the request and reports how it went with
//!    [`Planner::handle_response`] or, when no answer came,
//!    [`Planner::handle_transport_error`].
//! 3. It drains [`Planner::poll_event`] for progress and retries, and loops.
//!
//! Retries exist only as [`Action::Wait`]: backoff is exponential with full jitter
//! drawn from a seeded generator, `Retry-After` is obeyed, consecutive failures
//! without progress and the total time are bounded. The planner always takes the
//! server's `nextExpectedRanges` over its own idea of what was sent: after any
//! doubt (a lost answer, a 5xx, a 416) it asks the session before sending more.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use upsession_core::planner::{Action, Planner, PlannerConfig};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
//! let mut planner = Planner::new(10_000_000, PlannerConfig::default());
//! assert_eq!(planner.next(now), Action::CreateSession);
//!
//! // The server answers createUploadSession.
//! let created = http::Response::builder().status(201).body(
//!     r#"{"uploadUrl":"https://h/up/1?tok=x","expirationDateTime":"2030-01-01T00:00:00Z","nextExpectedRanges":["0-"]}"#,
//! ).unwrap();
//! planner.handle_response(now, &created);
//! assert_eq!(planner.upload_url(), Some("https://h/up/1?tok=x"));
//!
//! // The first fragment: 3,932,160 bytes from offset 0.
//! let Action::Put(range) = planner.next(now) else { panic!() };
//! assert_eq!(range.to_string(), "bytes 0-3932159/10000000");
//! ```

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};

use crate::error::RemoteError;
use crate::header::ContentRange;
use crate::range::{ByteRange, RangeSet};
use crate::time::parse_retry_after;
use crate::wire::UploadSession;

/// Attempts a single request (creating a draft, a session's status, a cancel)
/// gets when Graph throttles it, including the first.
pub const THROTTLED_ATTEMPTS: u32 = 5;

/// The longest `Retry-After` a single request waits out; a longer one is reported
/// to the caller instead, who may prefer to come back later.
pub const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(120);

/// The shortest wait between two attempts of a single request.
pub const MIN_THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// How long to wait before sending a single request again after `attempt` (1 for
/// the first) was answered `status`, or `None` to give the answer to the caller.
///
/// Only `429` and `503` are retried: Graph sends them before doing anything, so
/// sending again is safe even for a `POST`. The wait is the answer's
/// `Retry-After` (seconds or an HTTP date), else 1, 2, 4, … seconds, and never
/// less than [`MIN_THROTTLE_WAIT`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use http::StatusCode;
/// use upsession_core::planner::throttle_wait;
///
/// let now = UNIX_EPOCH; // time is an input
/// assert_eq!(
///     throttle_wait(StatusCode::TOO_MANY_REQUESTS, Some("3"), 1, now),
///     Some(Duration::from_secs(3))
/// );
/// assert_eq!(throttle_wait(StatusCode::CONFLICT, Some("3"), 1, now), None);
/// ```
#[must_use]
pub fn throttle_wait(
    status: StatusCode,
    retry_after: Option<&str>,
    attempt: u32,
    now: SystemTime,
) -> Option<Duration> {
    let throttled = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    );
    if !throttled || attempt >= THROTTLED_ATTEMPTS {
        return None;
    }
    let wait = retry_after
        .and_then(|v| parse_retry_after(v, now))
        .unwrap_or_else(|| Duration::from_secs(1 << attempt.saturating_sub(1).min(10)))
        // `Retry-After: 0` (or a past date) still spaces the attempts out.
        .max(MIN_THROTTLE_WAIT);
    (wait <= MAX_THROTTLE_WAIT).then_some(wait)
}

/// 320 KiB: OneDrive wants fragments in multiples of it, and it is the smallest
/// fragment the planner shrinks to after a 413.
pub const FRAGMENT_QUANTUM: u64 = 320 * 1024;

/// The default fragment: 12 × 320 KiB = 3,932,160 bytes, under 4 MB on either
/// reading of "MB" and legal for OneDrive sessions too.
pub const DEFAULT_FRAGMENT_SIZE: u64 = 12 * FRAGMENT_QUANTUM;

/// How the planner paces and bounds an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannerConfig {
    /// Bytes per `PUT`.
    pub fragment_size: u64,
    /// Consecutive failed requests without progress before giving up.
    pub max_attempts: u32,
    /// Total time allowed from the first `next` call; `None` for no limit.
    pub deadline: Option<Duration>,
    /// First backoff ceiling; doubles with each consecutive failure.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Seed of the jitter generator, so a run can be replayed.
    pub jitter_seed: u64,
}

impl PlannerConfig {
    /// Sets the bytes per `PUT`.
    #[must_use]
    pub const fn with_fragment_size(mut self, fragment_size: u64) -> Self {
        self.fragment_size = fragment_size;
        self
    }

    /// Sets how many consecutive failures without progress are tolerated.
    #[must_use]
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the total time allowed (`None`: no limit).
    #[must_use]
    pub const fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the first and the largest backoff ceilings.
    #[must_use]
    pub const fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Sets the seed of the jitter generator.
    #[must_use]
    pub const fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            fragment_size: DEFAULT_FRAGMENT_SIZE,
            max_attempts: 10,
            deadline: Some(Duration::from_secs(6 * 60 * 60)),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            jitter_seed: 0x5eed,
        }
    }
}

/// What the adapter should do next.
// Exhaustive on purpose: a driver that did not handle a new action would be wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// `POST …/attachments/createUploadSession`, then report the answer.
    CreateSession,
    /// `PUT {uploadUrl}` with these bytes and this `Content-Range`, no `Authorization`.
    Put(ContentRange),
    /// `GET {uploadUrl}`: ask the session what it has.
    QueryStatus,
    /// `DELETE {uploadUrl}`: cancel the session.
    Delete,
    /// Nothing to do before `until`; call `next` again then.
    Wait {
        /// When to call `next` again.
        until: SystemTime,
    },
    /// A request is outstanding: report its outcome before asking again.
    Pending,
    /// The upload is complete.
    Done(Completion),
    /// The upload cannot complete. Sticky: `next` keeps returning it.
    Failed(UploadError),
    /// The session was cancelled on request.
    Cancelled,
}

/// What the server said about the finished attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// The `Location` header of the final answer: the attachment's URL.
    pub location: Option<String>,
    /// The attachment's id, from the final answer's body or its `Location`.
    pub attachment_id: Option<String>,
}

/// Why an upload cannot complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The server refused, with Graph's error.
    #[error("the server refused the upload: {0}")]
    Remote(RemoteError),
    /// The session expired before the upload completed.
    #[error("the upload session has expired; start a new upload")]
    SessionExpired,
    /// The session answered 404: it expired, was cancelled, or the server forgot it.
    #[error("the upload session no longer exists ({0}); start a new upload")]
    SessionNotFound(RemoteError),
    /// The final fragment was sent but its answer was lost, and the session is gone:
    /// the attachment may or may not exist.
    #[error(
        "the final fragment was sent but its answer was lost and the session is gone; check whether the attachment exists"
    )]
    FinalOutcomeUnknown,
    /// Too many consecutive failures without progress.
    #[error("gave up after {attempts} failed attempts in a row; last: {last}")]
    AttemptsExhausted {
        /// How many attempts failed.
        attempts: u32,
        /// What the last failure was.
        last: String,
    },
    /// The total deadline passed, or a `Retry-After` would pass it.
    #[error("the upload did not finish within its deadline; last: {last}")]
    DeadlineExceeded {
        /// What the last failure was.
        last: String,
    },
    /// The server answered something that cannot be an upload session answer.
    #[error("the server's answer makes no sense for an upload session: {0}")]
    Protocol(String),
    /// The server reported bytes as received that were never sent: finishing would
    /// make an attachment that is not the file. The session cannot be trusted, so
    /// it is not resumed either.
    #[error(
        "the server reports bytes {start}-{last} as received, but they were never sent; \
         the upload stops rather than make an attachment that is not the file"
    )]
    ServerClaimsUnsentBytes {
        /// First such byte.
        start: u64,
        /// Last such byte (inclusive).
        last: u64,
    },
}

/// How a request failed to get an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// The request never left (connection refused, DNS): the server saw nothing.
    NotSent,
    /// The connection failed or timed out after the request may have been sent:
    /// the server may have acted on it.
    Lost,
}

/// Things worth telling the user, drained with [`Planner::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The session exists: save `upload_url` to resume later.
    SessionCreated {
        /// The uploadUrl (a bearer credential: redact before logging).
        upload_url: String,
        /// When the session expires, if the server said.
        expires: Option<SystemTime>,
    },
    /// The server now holds `acknowledged` of `total` bytes.
    Progress {
        /// Bytes the server has acknowledged.
        acknowledged: u64,
        /// File size.
        total: u64,
    },
    /// A request failed and will be retried after `wait`.
    Retrying {
        /// Consecutive failures so far.
        attempt: u32,
        /// How long the planner waits.
        wait: Duration,
        /// Why.
        reason: String,
    },
    /// A 413 made the planner send smaller fragments.
    FragmentShrunk {
        /// The new fragment size.
        fragment_size: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Create,
    Put(ContentRange),
    Status,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Ready to issue `Request` once `at` has passed (immediately when `None`).
    Ready {
        request: Request,
        at: Option<SystemTime>,
    },
    Awaiting(Request),
    Finished(Action),
}

/// The client-side upload planner. See the [module documentation](self).
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // independent facts, not a state in disguise
pub struct Planner {
    cfg: PlannerConfig,
    total: u64,
    fragment_size: u64,
    rng: fastrand::Rng,
    phase: Phase,
    upload_url: Option<String>,
    /// The server's view of what it still expects, as last reported.
    expected: RangeSet,
    expires: Option<SystemTime>,
    deadline: Option<SystemTime>,
    failures: u32,
    /// Set when the final fragment may have reached the server without an answer.
    final_in_doubt: bool,
    /// The last fragment sent that ends the file, re-sent as is to learn the
    /// `Location` (a server may take only exact re-sends).
    last_final: Option<ContentRange>,
    /// The server has everything but has not told us where the attachment is; the
    /// final fragment is re-sent once to learn its `Location`.
    probing_final: bool,
    /// The re-sent final fragment was answered 2xx without a `Location`: the server
    /// will not tell, so the upload is done without one.
    probe_answered: bool,
    cancel_requested: bool,
    /// Bytes the server may rightly hold: what it held at its first answer (a
    /// resumed session) plus every range sent since and not refused. A server
    /// reporting more than this received is lying: the upload stops rather than
    /// finish with an attachment that is not the file.
    vouched: Option<RangeSet>,
    /// The most bytes ever acknowledged: a server that forgets bytes (a power loss
    /// under `--fsync never`) gets them again, but failures are only forgiven for
    /// progress past this mark, so one that keeps forgetting ends the upload.
    high_water: u64,
    events: VecDeque<Event>,
}

impl Planner {
    /// A planner for a new upload of `total` bytes: it starts by creating the session.
    pub fn new(total: u64, cfg: PlannerConfig) -> Self {
        Self::with_phase(total, cfg, None, Request::Create)
    }

    /// A planner that continues an existing session at `upload_url`: it starts by
    /// asking the session what it has.
    pub fn resume(
        total: u64,
        upload_url: String,
        expires: Option<SystemTime>,
        cfg: PlannerConfig,
    ) -> Self {
        let mut p = Self::with_phase(total, cfg, Some(upload_url), Request::Status);
        p.expires = expires;
        p
    }

    fn with_phase(
        total: u64,
        cfg: PlannerConfig,
        upload_url: Option<String>,
        first: Request,
    ) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(cfg.jitter_seed),
            fragment_size: cfg.fragment_size.max(1),
            cfg,
            total,
            phase: Phase::Ready {
                request: first,
                at: None,
            },
            upload_url,
            expected: RangeSet::full(total),
            expires: None,
            deadline: None,
            failures: 0,
            final_in_doubt: false,
            last_final: None,
            probing_final: false,
            probe_answered: false,
            cancel_requested: false,
            vouched: (first == Request::Create).then(RangeSet::default),
            high_water: 0,
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The uploadUrl, once the session exists.
    pub fn upload_url(&self) -> Option<&str> {
        self.upload_url.as_deref()
    }

    /// The session's expiry as last reported.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Bytes the server has acknowledged, as last reported.
    pub fn acknowledged(&self) -> u64 {
        self.total - self.expected.covered()
    }

    /// File size.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes per `PUT` now (smaller than configured after a 413).
    pub fn fragment_size(&self) -> u64 {
        self.fragment_size
    }

    // ----- commands -----

    /// Asks for the session to be cancelled: the next request is a `DELETE` (or,
    /// before a session exists, nothing) and the upload ends as [`Action::Cancelled`].
    pub fn cancel(&mut self) {
        if matches!(self.phase, Phase::Finished(_)) {
            return;
        }
        self.cancel_requested = true;
        if let Phase::Ready { .. } = self.phase {
            self.phase = self.after_cancel();
        }
    }

    fn after_cancel(&self) -> Phase {
        if self.upload_url.is_some() {
            Phase::Ready {
                request: Request::Delete,
                at: None,
            }
        } else {
            Phase::Finished(Action::Cancelled)
        }
    }

    // ----- output -----

    /// What to do next. Call it again after every input and after every wait.
    pub fn next(&mut self, now: SystemTime) -> Action {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| self.cfg.deadline.map_or(far_future(now), |d| now + d));
        match &self.phase {
            Phase::Finished(action) => action.clone(),
            Phase::Awaiting(_) => Action::Pending,
            Phase::Ready { .. } if now >= deadline && !self.cancel_requested => {
                self.fail(UploadError::DeadlineExceeded {
                    last: "time ran out".into(),
                })
            }
            Phase::Ready { at: Some(at), .. } if now < *at => Action::Wait { until: *at },
            Phase::Ready { request, .. } => {
                let request = *request;
                if request != Request::Delete
                    && request != Request::Create
                    && self.expires.is_some_and(|e| now >= e)
                {
                    return self.fail(UploadError::SessionExpired);
                }
                self.phase = Phase::Awaiting(request);
                if let Request::Put(cr) = request {
                    if let Some(v) = &mut self.vouched {
                        v.insert(cr.range());
                    }
                    if cr.range().end() == self.total {
                        self.last_final = Some(cr);
                    }
                }
                match request {
                    Request::Create => Action::CreateSession,
                    Request::Put(cr) => Action::Put(cr),
                    Request::Status => Action::QueryStatus,
                    Request::Delete => Action::Delete,
                }
            }
        }
    }

    /// The next event, if any. Drain after each input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- input -----

    /// The outstanding request was answered. `response` carries its status, its
    /// headers (`Location`, `Retry-After`, `request-id` are read) and its whole body.
    pub fn handle_response<B: AsRef<[u8]>>(&mut self, now: SystemTime, response: &Response<B>) {
        let Phase::Awaiting(request) = self.phase else {
            debug_assert!(false, "handle_response without an outstanding request");
            return;
        };
        let status = response.status();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let body = response.body().as_ref();
        let remote = || RemoteError::from_response(status, body, header("request-id"));

        if request == Request::Delete {
            self.phase = match status {
                s if s.is_success() || s == StatusCode::NOT_FOUND => {
                    Phase::Finished(Action::Cancelled)
                }
                s if retryable(s) => self.retry(
                    now,
                    Request::Delete,
                    &remote().to_string(),
                    header("retry-after"),
                ),
                _ => Phase::Finished(Action::Failed(UploadError::Remote(remote()))),
            };
            return;
        }

        // Completion: 201, or 200/202 carrying the finished item's id.
        let parsed: Option<UploadSession> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        };
        let item_id = parsed
            .as_ref()
            .and_then(|s| s.id.as_ref())
            .and_then(|v| v.as_str().map(str::to_owned));
        let is_put = matches!(request, Request::Put(_));
        if is_put && (status == StatusCode::CREATED || (status.is_success() && item_id.is_some())) {
            let location = header("location").map(str::to_owned);
            let attachment_id = item_id.or_else(|| location.as_deref().and_then(id_from_location));
            self.expected = RangeSet::new();
            self.events.push_back(Event::Progress {
                acknowledged: self.total,
                total: self.total,
            });
            self.phase = Phase::Finished(Action::Done(Completion {
                location,
                attachment_id,
            }));
            return;
        }

        if status.is_success() {
            let Some(session) = parsed else {
                let why = format!("a {} answer without an uploadSession body", status.as_u16());
                self.phase = self.failure(now, Request::Status, &why, None);
                return;
            };
            self.accept_session(now, request, &session);
            return;
        }

        let reason = remote().to_string();
        self.phase = match (request, status) {
            // Throttled before the body was read: the same request again, when told.
            (_, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
                self.failure(now, request, &reason, header("retry-after"))
            }
            // The server disagrees about the range, or is busy with one: ask it.
            (Request::Put(_), StatusCode::RANGE_NOT_SATISFIABLE | StatusCode::CONFLICT) => {
                self.failure(now, Request::Status, &reason, header("retry-after"))
            }
            (Request::Put(cr), StatusCode::PAYLOAD_TOO_LARGE)
                if self.fragment_size > FRAGMENT_QUANTUM =>
            {
                // Refused whole: none of it may be claimed later.
                if let Some(v) = &mut self.vouched {
                    v.remove(cr.range());
                }
                self.fragment_size = (cr.range().len() / 2 / FRAGMENT_QUANTUM * FRAGMENT_QUANTUM)
                    .max(FRAGMENT_QUANTUM);
                self.events.push_back(Event::FragmentShrunk {
                    fragment_size: self.fragment_size,
                });
                self.put_next_or_finish(now)
            }
            (Request::Put(_) | Request::Status, StatusCode::NOT_FOUND) => {
                self.session_gone(request, remote())
            }
            (Request::Put(cr), s) if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                // A gateway's 5xx may hide a completion that did happen.
                if cr.range().end() == self.total {
                    self.final_in_doubt = true;
                }
                // The server may have stored the fragment: ask before re-sending.
                self.failure(now, Request::Status, &reason, header("retry-after"))
            }
            (_, s) if retryable(s) => self.failure(now, request, &reason, header("retry-after")),
            _ => Phase::Finished(Action::Failed(UploadError::Remote(remote()))),
        };
    }

    /// The outstanding request got no answer.
    pub fn handle_transport_error(&mut self, now: SystemTime, error: TransportError) {
        let Phase::Awaiting(request) = self.phase else {
            debug_assert!(
                false,
                "handle_transport_error without an outstanding request"
            );
            return;
        };
        let next = match (request, error) {
            (Request::Put(cr), TransportError::Lost) => {
                if cr.range().end() == self.total {
                    self.final_in_doubt = true;
                }
                Request::Status
            }
            (r, _) => r,
        };
        let reason = match error {
            TransportError::NotSent => "the request could not be sent",
            TransportError::Lost => "the connection failed before an answer came",
        };
        self.phase = self.failure(now, next, reason, None);
    }

    // ----- internals -----

    /// A 404 from the session: gone, unless the final fragment may have completed it.
    fn session_gone(&mut self, request: Request, remote: RemoteError) -> Phase {
        if self.final_in_doubt {
            if let (Request::Status, Some(last)) = (request, self.final_range()) {
                // Real Graph forgets a session once complete; our server answers the
                // final fragment again. Try once before declaring doubt.
                self.final_in_doubt = false;
                self.probing_final = true;
                return Phase::Ready {
                    request: Request::Put(last),
                    at: None,
                };
            }
            return Phase::Finished(Action::Failed(UploadError::FinalOutcomeUnknown));
        }
        if self.probing_final {
            return Phase::Finished(Action::Failed(UploadError::FinalOutcomeUnknown));
        }
        Phase::Finished(Action::Failed(UploadError::SessionNotFound(remote)))
    }

    fn accept_session(&mut self, now: SystemTime, request: Request, session: &UploadSession) {
        if request == Request::Create {
            let Some(url) = session.upload_url.clone().filter(|u| !u.is_empty()) else {
                self.phase = Phase::Finished(Action::Failed(UploadError::Protocol(
                    "createUploadSession answered without an uploadUrl".into(),
                )));
                return;
            };
            self.upload_url = Some(url.clone());
            self.events.push_back(Event::SessionCreated {
                upload_url: url,
                expires: session.expires(),
            });
        }
        if let Some(expires) = session.expires() {
            self.expires = Some(expires);
        }
        if session.next_expected_ranges.is_none() && request != Request::Create {
            // Not an upload session's answer (a proxy's `{}`, a misrouted endpoint):
            // never take it for "everything received".
            self.phase = Phase::Finished(Action::Failed(UploadError::Protocol(
                "a 2xx answer without nextExpectedRanges, id or 201".into(),
            )));
            return;
        }
        let expected = match session.next_expected(self.total) {
            Ok(set) => set,
            Err(e) => {
                self.phase = Phase::Finished(Action::Failed(UploadError::Protocol(e.to_string())));
                return;
            }
        };
        if expected.is_empty() && request == Request::Create {
            // A new session that expects nothing is one that has not said: all of it.
            self.expected = RangeSet::full(self.total);
        } else if let Some(lie) = self.check_claims(&expected) {
            self.phase = self.fail_phase(lie);
            return;
        } else {
            let before = self.acknowledged();
            self.expected = expected;
            let after = self.acknowledged();
            if after > before || request == Request::Create {
                if after > self.high_water || request == Request::Create {
                    self.high_water = after;
                    self.failures = 0;
                } else {
                    // Progress only over bytes it had acknowledged and then lost.
                    self.failures += 1;
                }
                self.events.push_back(Event::Progress {
                    acknowledged: after,
                    total: self.total,
                });
            } else if matches!(request, Request::Put(_)) {
                // A 200 to a PUT that moved nothing: a server that ignores us.
                self.failures += 1;
                if self.failures >= self.cfg.max_attempts {
                    self.phase = self.fail_phase(UploadError::AttemptsExhausted {
                        attempts: self.failures,
                        last: "fragments were answered 200 but the server kept expecting the same bytes".into(),
                    });
                    return;
                }
            }
        }
        if self.cancel_requested {
            self.phase = self.after_cancel();
            return;
        }
        if self.probing_final
            && matches!(request, Request::Put(cr) if cr.range().end() == self.total)
        {
            self.probe_answered = true;
        }
        self.final_in_doubt = false;
        self.phase = self.put_next_or_finish(now);
    }

    /// Compares what the server now says it holds with what was sent; the first
    /// answer of a resumed session is taken as it is.
    fn check_claims(&mut self, expected: &RangeSet) -> Option<UploadError> {
        let held = expected.complement(self.total);
        let vouched = self.vouched.get_or_insert_with(|| held.clone());
        let mut invented = held;
        invented.subtract(vouched);
        invented
            .first()
            .map(|r| UploadError::ServerClaimsUnsentBytes {
                start: r.start(),
                last: r.end() - 1,
            })
    }

    /// The next fragment from the server's view, or the end when it expects nothing.
    fn put_next_or_finish(&mut self, _now: SystemTime) -> Phase {
        match self.expected.first() {
            Some(first) => {
                let range = first.truncate(self.fragment_size);
                let cr = ContentRange::new(range, self.total)
                    .expect("expected ranges lie within the file");
                Phase::Ready {
                    request: Request::Put(cr),
                    at: None,
                }
            }
            None if self.probe_answered => Phase::Finished(Action::Done(Completion::default())),
            None => {
                // Everything is stored but no Location seen (a lost final answer):
                // re-send the last fragment, which a Graph-compatible server answers
                // with 201 and the Location again.
                self.probing_final = true;
                match self.final_range() {
                    Some(cr) => Phase::Ready {
                        request: Request::Put(cr),
                        at: None,
                    },
                    None => Phase::Finished(Action::Done(Completion::default())),
                }
            }
        }
    }

    fn final_range(&self) -> Option<ContentRange> {
        if let Some(cr) = self.last_final {
            return Some(cr);
        }
        let len = self.fragment_size.min(self.total);
        let range = ByteRange::new(self.total - len, self.total)?;
        ContentRange::new(range, self.total)
    }

    /// Counts a failure and schedules `request` after a backoff (or `Retry-After`),
    /// or gives up when the attempts or the deadline are spent.
    fn failure(
        &mut self,
        now: SystemTime,
        request: Request,
        reason: &str,
        retry_after: Option<&str>,
    ) -> Phase {
        self.failures += 1;
        if self.failures >= self.cfg.max_attempts {
            return self.fail_phase(UploadError::AttemptsExhausted {
                attempts: self.failures,
                last: reason.into(),
            });
        }
        self.retry(now, request, reason, retry_after)
    }

    fn retry(
        &mut self,
        now: SystemTime,
        request: Request,
        reason: &str,
        retry_after: Option<&str>,
    ) -> Phase {
        let wait = retry_after
            .and_then(|v| parse_retry_after(v, now))
            .unwrap_or_else(|| self.backoff());
        let at = now.checked_add(wait).unwrap_or_else(|| far_future(now));
        if self.deadline.is_some_and(|d| at > d) {
            return self.fail_phase(UploadError::DeadlineExceeded {
                last: reason.into(),
            });
        }
        if self.expires.is_some_and(|e| at >= e) && request != Request::Delete {
            return self.fail_phase(UploadError::SessionExpired);
        }
        self.events.push_back(Event::Retrying {
            attempt: self.failures,
            wait,
            reason: reason.into(),
        });
        let request = if self.cancel_requested && self.upload_url.is_some() {
            Request::Delete
        } else {
            request
        };
        Phase::Ready {
            request,
            at: Some(at),
        }
    }

    /// Full jitter: uniform in `0..=min(max, base * 2^(failures-1))`.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(30);
        let ceiling = self
            .cfg
            .backoff_base
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }

    fn fail_phase(&self, error: UploadError) -> Phase {
        if self.cancel_requested {
            return Phase::Finished(Action::Cancelled);
        }
        Phase::Finished(Action::Failed(error))
    }

    fn fail(&mut self, error: UploadError) -> Action {
        self.phase = self.fail_phase(error);
        let Phase::Finished(action) = &self.phase else {
            unreachable!()
        };
        action.clone()
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
}

fn far_future(now: SystemTime) -> SystemTime {
    now + Duration::from_secs(100 * 365 * 24 * 60 * 60)
}

/// The attachment id in a `Location`: the last path segment, or Outlook's
/// `…/Attachments('ID')`.
fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let id = match last.find("('") {
        Some(i) => last[i + 2..].trim_end_matches("')"),
        None => last,
    };
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Vec<u8>> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    fn session_json(ranges: &[&str]) -> String {
        serde_json::json!({
            "uploadUrl": "https://h/up/1?tok=x",
            "expirationDateTime": "2100-01-01T00:00:00Z",
            "nextExpectedRanges": ranges,
        })
        .to_string()
    }

    fn created(total: u64, cfg: PlannerConfig) -> Planner {
        let mut p = Planner::new(total, cfg);
        assert_eq!(p.next(t(0)), Action::CreateSession);
        p.handle_response(t(0), &response(201, &[], &session_json(&["0-"])));
        p
    }

    fn small() -> PlannerConfig {
        PlannerConfig {
            fragment_size: 10,
            ..PlannerConfig::default()
        }
    }

    fn put_range(a: &Action) -> (u64, u64) {
        match a {
            Action::Put(cr) => (cr.range().start(), cr.range().last()),
            other => panic!("expected a PUT, got {other:?}"),
        }
    }

    #[test]
    fn follows_the_servers_ranges_not_its_own() {
        // Resumed: what the session holds at its first answer (sent by an earlier
        // process) is taken as it is.
        let mut p = Planner::resume(30, "https://u/x".into(), None, small());
        assert_eq!(p.next(t(0)), Action::QueryStatus);
        p.handle_response(t(0), &response(200, &[], &session_json(&["5-9", "15-"])));
        assert_eq!(put_range(&p.next(t(0))), (5, 9));
        p.handle_response(
            t(1),
            &response(200, &[], r#"{"nextExpectedRanges":["15"]}"#),
        );
        assert_eq!(put_range(&p.next(t(1))), (15, 24));
        assert_eq!(p.acknowledged(), 15);
    }

    #[test]
    fn a_server_claiming_bytes_never_sent_stops_the_upload() {
        let mut p = created(30, small());
        assert_eq!(put_range(&p.next(t(0))), (0, 9));
        // 10..15 were never sent: finishing would make an attachment that is not
        // the file.
        p.handle_response(
            t(1),
            &response(200, &[], r#"{"nextExpectedRanges":["15"]}"#),
        );
        match p.next(t(1)) {
            Action::Failed(
                e @ UploadError::ServerClaimsUnsentBytes {
                    start: 10,
                    last: 14,
                },
            ) => {
                assert!(e.to_string().contains("never sent"), "{e}");
            }
            other => panic!("expected a failure for unsent bytes, got {other:?}"),
        }
    }

    #[test]
    fn bytes_a_server_forgets_are_sent_again_but_not_forever() {
        let cfg = PlannerConfig {
            max_attempts: 3,
            ..small()
        };
        let mut p = created(30, cfg);
        assert_eq!(put_range(&p.next(t(0))), (0, 9));
        p.handle_response(t(1), &response(200, &[], &session_json(&["10-29"])));
        // The server lost 0..10 (a power loss under `--fsync never`): send it again.
        assert_eq!(put_range(&p.next(t(1))), (10, 19));
        p.handle_response(t(2), &response(200, &[], &session_json(&["0-9", "20-29"])));
        assert_eq!(put_range(&p.next(t(2))), (0, 9));
        // A server that keeps forgetting does not keep the upload going forever.
        for round in 0..10 {
            p.handle_response(t(3), &response(200, &[], &session_json(&["20-29"])));
            match p.next(t(3)) {
                Action::Put(_) => {}
                Action::Failed(UploadError::AttemptsExhausted { .. }) => return,
                other => panic!("round {round}: {other:?}"),
            }
            p.handle_response(t(3), &response(200, &[], &session_json(&["0-9", "20-29"])));
            match p.next(t(3)) {
                Action::Put(_) => {}
                Action::Failed(UploadError::AttemptsExhausted { .. }) => return,
                other => panic!("round {round}: {other:?}"),
            }
        }
        panic!("a server that keeps forgetting kept the upload going");
    }

    #[test]
    fn completes_on_201_with_location_or_on_200_with_id() {
        let mut p = created(5, small());
        let _ = p.next(t(0));
        p.handle_response(
            t(0),
            &response(
                201,
                &[("location", "https://h/v1.0/me/messages/m/attachments/A1")],
                "",
            ),
        );
        assert_eq!(
            p.next(t(0)),
            Action::Done(Completion {
                location: Some("https://h/v1.0/me/messages/m/attachments/A1".into()),
                attachment_id: Some("A1".into())
            })
        );

        let mut p = created(5, small());
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(200, &[], r#"{"id":"item-7","name":"x"}"#));
        assert!(
            matches!(p.next(t(0)), Action::Done(Completion { attachment_id: Some(id), .. }) if id == "item-7")
        );
    }

    #[test]
    fn outlook_location_yields_the_attachment_id() {
        assert_eq!(
            id_from_location(
                "https://outlook.office.com/api/v2.0/Users('a')/Messages('b')/Attachments('AAMk=')"
            ),
            Some("AAMk=".into())
        );
        assert_eq!(
            id_from_location("https://h/x/att1?y=1"),
            Some("att1".into())
        );
    }

    #[test]
    fn lost_answer_asks_the_session_before_resending() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        p.handle_transport_error(t(0), TransportError::Lost);
        let Action::Wait { until } = p.next(t(0)) else {
            panic!()
        };
        assert!(until <= t(1));
        assert_eq!(p.next(until), Action::QueryStatus);
        p.handle_response(until, &response(200, &[], &session_json(&["10-29"])));
        assert_eq!(put_range(&p.next(until)), (10, 19));
    }

    #[test]
    fn throttling_waits_for_retry_after_in_seconds_or_as_a_date() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(429, &[("retry-after", "7")], ""));
        assert_eq!(p.next(t(0)), Action::Wait { until: t(7) });
        assert_eq!(
            put_range(&p.next(t(7))),
            (0, 9),
            "a throttled fragment is sent again as it was"
        );
        let date = crate::time::format_http_date(t(20));
        p.handle_response(t(7), &response(503, &[("Retry-After", &date)], ""));
        assert_eq!(p.next(t(8)), Action::Wait { until: t(20) });
    }

    #[test]
    fn single_requests_wait_out_throttling_a_bounded_number_of_times() {
        use super::{MAX_THROTTLE_WAIT, THROTTLED_ATTEMPTS, throttle_wait};
        let now = t(0);
        let busy = StatusCode::SERVICE_UNAVAILABLE;
        let waits: Vec<_> = (1..=THROTTLED_ATTEMPTS)
            .map(|a| throttle_wait(busy, None, a, now))
            .collect();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8), None]);
        let date = crate::time::format_http_date(t(30));
        assert_eq!(
            throttle_wait(StatusCode::TOO_MANY_REQUESTS, Some(&date), 1, now),
            secs(30)
        );
        // Too long a wait, or an answer that is not throttling: the caller's.
        assert_eq!(
            throttle_wait(busy, Some("0"), 1, now),
            secs(1),
            "never at once"
        );
        let long = (MAX_THROTTLE_WAIT.as_secs() + 1).to_string();
        assert_eq!(throttle_wait(busy, Some(&long), 1, now), None);
        for status in [400, 401, 404, 409, 500, 502, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(throttle_wait(status, Some("1"), 1, now), None);
        }
    }

    #[test]
    fn retry_after_past_the_deadline_fails_at_once() {
        let cfg = PlannerConfig {
            deadline: Some(Duration::from_secs(60)),
            ..small()
        };
        let mut p = created(30, cfg);
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(429, &[("retry-after", "3600")], ""));
        assert!(matches!(
            p.next(t(0)),
            Action::Failed(UploadError::DeadlineExceeded { .. })
        ));
    }

    #[test]
    fn backoff_grows_and_attempts_are_bounded() {
        let cfg = PlannerConfig {
            max_attempts: 4,
            deadline: None,
            ..small()
        };
        let mut p = created(30, cfg);
        let mut now = t(0);
        let mut waits = 0;
        loop {
            match p.next(now) {
                Action::Put(_) | Action::QueryStatus => {
                    p.handle_response(now, &response(500, &[], ""))
                }
                Action::Wait { until } => {
                    waits += 1;
                    now = until;
                }
                Action::Failed(UploadError::AttemptsExhausted { attempts, .. }) => {
                    assert_eq!(attempts, 4);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, 3);
    }

    #[test]
    fn a_401_is_final_and_carries_graphs_error() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        let body = r#"{"error":{"code":"InvalidAuthenticationToken","message":"expired","innerError":{"request-id":"r1"}}}"#;
        p.handle_response(t(0), &response(401, &[], body));
        let Action::Failed(UploadError::Remote(e)) = p.next(t(0)) else {
            panic!()
        };
        assert_eq!(
            (e.code.as_str(), e.request_id.as_deref()),
            ("InvalidAuthenticationToken", Some("r1"))
        );
        assert!(
            matches!(p.next(t(5)), Action::Failed(_)),
            "failure is sticky"
        );
    }

    #[test]
    fn a_413_shrinks_fragments_to_quantum_multiples() {
        let mut p = created(20 * FRAGMENT_QUANTUM, PlannerConfig::default());
        assert_eq!(put_range(&p.next(t(0))).1 + 1, DEFAULT_FRAGMENT_SIZE);
        p.handle_response(t(0), &response(413, &[], ""));
        assert_eq!(put_range(&p.next(t(0))).1 + 1, 6 * FRAGMENT_QUANTUM);
        let shrunk = Event::FragmentShrunk {
            fragment_size: 6 * FRAGMENT_QUANTUM,
        };
        assert!(std::iter::from_fn(|| p.poll_event()).any(|e| e == shrunk));
    }

    #[test]
    fn lost_final_answer_then_gone_session_is_reported_not_hidden() {
        let mut p = created(10, small());
        let _ = p.next(t(0));
        p.handle_transport_error(t(0), TransportError::Lost);
        let Action::Wait { until } = p.next(t(0)) else {
            panic!()
        };
        assert_eq!(p.next(until), Action::QueryStatus);
        p.handle_response(until, &response(404, &[], ""));
        // One re-send of the final fragment, in case the server still answers it.
        assert_eq!(put_range(&p.next(until)), (0, 9));
        p.handle_response(until, &response(404, &[], ""));
        assert_eq!(
            p.next(until),
            Action::Failed(UploadError::FinalOutcomeUnknown)
        );
    }

    #[test]
    fn status_showing_all_bytes_resends_final_fragment_to_learn_location() {
        let mut p = created(25, small());
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(200, &[], &session_json(&["10-24"])));
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(200, &[], &session_json(&["20-24"])));
        let _ = p.next(t(0));
        p.handle_transport_error(t(0), TransportError::Lost);
        let Action::Wait { until } = p.next(t(0)) else {
            panic!()
        };
        assert_eq!(p.next(until), Action::QueryStatus);
        p.handle_response(until, &response(200, &[], &session_json(&[])));
        // The exact fragment that was lost is sent again.
        assert_eq!(put_range(&p.next(until)), (20, 24));
        p.handle_response(until, &response(201, &[("location", "https://h/a/X")], ""));
        assert!(matches!(
            p.next(until),
            Action::Done(Completion {
                attachment_id: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn a_404_from_the_session_says_the_session_is_gone() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        p.handle_response(
            t(0),
            &response(
                404,
                &[],
                r#"{"error":{"code":"uploadSessionNotFound","message":"gone"}}"#,
            ),
        );
        let Action::Failed(UploadError::SessionNotFound(e)) = p.next(t(0)) else {
            panic!()
        };
        assert_eq!(e.code, "uploadSessionNotFound");
    }

    #[test]
    fn resume_asks_first_and_refuses_an_expired_session() {
        let mut p = Planner::resume(30, "https://h/up".into(), Some(t(10)), small());
        assert_eq!(p.next(t(0)), Action::QueryStatus);
        let mut p = Planner::resume(30, "https://h/up".into(), Some(t(10)), small());
        assert_eq!(p.next(t(10)), Action::Failed(UploadError::SessionExpired));
    }

    #[test]
    fn cancel_sends_delete_and_ends_cancelled() {
        let mut p = created(30, small());
        p.cancel();
        assert_eq!(p.next(t(0)), Action::Delete);
        p.handle_response(t(0), &response(204, &[], ""));
        assert_eq!(p.next(t(0)), Action::Cancelled);
        let mut before_session = Planner::new(30, small());
        before_session.cancel();
        assert_eq!(before_session.next(t(0)), Action::Cancelled);
    }

    #[test]
    fn pending_until_the_outstanding_request_is_answered() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        assert_eq!(p.next(t(0)), Action::Pending);
    }

    #[test]
    fn a_2xx_without_ranges_is_never_taken_for_completion() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(200, &[], "{}"));
        assert!(matches!(
            p.next(t(0)),
            Action::Failed(UploadError::Protocol(_))
        ));
    }

    #[test]
    fn a_5xx_on_the_final_fragment_then_a_gone_session_is_an_unknown_outcome() {
        let mut p = created(10, small());
        let _ = p.next(t(0));
        p.handle_response(t(0), &response(504, &[], ""));
        let Action::Wait { until } = p.next(t(0)) else {
            panic!()
        };
        assert_eq!(p.next(until), Action::QueryStatus);
        p.handle_response(until, &response(404, &[], ""));
        assert_eq!(put_range(&p.next(until)), (0, 9));
        p.handle_response(until, &response(404, &[], ""));
        assert_eq!(
            p.next(until),
            Action::Failed(UploadError::FinalOutcomeUnknown)
        );
    }

    #[test]
    fn garbage_ranges_are_a_protocol_error() {
        let mut p = created(30, small());
        let _ = p.next(t(0));
        p.handle_response(
            t(0),
            &response(200, &[], r#"{"nextExpectedRanges":["abc"]}"#),
        );
        assert!(matches!(
            p.next(t(0)),
            Action::Failed(UploadError::Protocol(_))
        ));
    }
}
