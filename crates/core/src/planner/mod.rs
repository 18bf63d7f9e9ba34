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
//! without progress and the total time are bounded; a `429` is the server's
//! instruction rather than a failure, so only the total time bounds it (when there
//! is one). The planner always takes the server's `nextExpectedRanges` over its own
//! idea of what was sent: after any doubt (a lost answer, a 5xx, a 416) it asks the
//! session before sending more.
//!
//! Two ends need no retry at all:
//!
//! - **Nothing exists yet.** The first request (creating the session) could not
//!   be sent at all ([`TransportError::NotSent`]: connection refused, unknown host)
//!   and no earlier request may have reached the server: the upload fails at once as
//!   [`UploadError::Unreachable`]; a wrong URL costs no minute of backoff.
//! - **The final outcome is in doubt.** The last fragment's answer was lost or
//!   ambiguous (`500`, `502`, `503`, `504`): the planner asks the session, re-sends
//!   the final fragment once if the session still answers, and when the session is
//!   gone asks the item ([`Action::ListAttachments`], if
//!   [`Planner::settle_doubt_by_listing`] was called). Only evidence ends the
//!   upload: an attachment of the file's name and size is completion, its absence
//!   is [`UploadError::SessionNotFound`], and no answer is
//!   [`UploadError::FinalOutcomeUnknown`].
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
use std::time::SystemTime;

use http::{Response, StatusCode};

use crate::error::RemoteError;
use crate::header::ContentRange;
use crate::range::RangeSet;
use crate::wire::UploadSession;

mod answers;
mod config;
mod retry_after;
mod types;

use answers::{far_future, id_from_location};
pub use config::{DEFAULT_FRAGMENT_SIZE, FRAGMENT_QUANTUM, PlannerConfig};
pub use retry_after::{MAX_THROTTLE_WAIT, MIN_THROTTLE_WAIT, THROTTLED_ATTEMPTS, throttle_wait};
pub use types::{Action, Completion, Event, Retry, TransportError, UploadError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Create,
    Put(ContentRange),
    Status,
    Delete,
    List,
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
    /// Consecutive `429`s: they pace the backoff, and count as failures only when no
    /// deadline bounds the upload.
    throttles: u32,
    /// A request may have reached the server (it answered one, or one was lost
    /// after it left): something may exist there.
    reached: bool,
    /// The attachment's name, when the adapter can list the item's attachments to
    /// settle a doubt about the final fragment.
    listing_name: Option<String>,
    /// The session's 404, kept while the item is asked.
    gone: Option<RemoteError>,
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
    /// The upload cannot complete: its session is deleted (its bytes would wait
    /// on the server until it expires), then this is the outcome.
    failing: Option<UploadError>,
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
            throttles: 0,
            reached: false,
            listing_name: None,
            gone: None,
            final_in_doubt: false,
            last_final: None,
            probing_final: false,
            probe_answered: false,
            cancel_requested: false,
            failing: None,
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

    /// Lets the planner settle a doubt about the final fragment by listing the
    /// item's attachments ([`Action::ListAttachments`]) and looking for one named
    /// `name` of the file's size. Without it, a session gone after an ambiguous
    /// final answer ends as [`UploadError::FinalOutcomeUnknown`].
    pub fn settle_doubt_by_listing(&mut self, name: impl Into<String>) {
        self.listing_name = Some(name.into());
    }

    /// Asks for the session to be cancelled: the next request is a `DELETE` (or,
    /// before a session exists, nothing) and the upload ends as [`Action::Cancelled`].
    ///
    /// With a request outstanding, the adapter may abandon it and report
    /// [`TransportError::Lost`]: the `DELETE` follows at once, without a backoff.
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
                if matches!(request, Request::Put(_) | Request::Status)
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
                    Request::List => Action::ListAttachments,
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
        self.reached = true;

        if request == Request::Delete {
            self.phase = self.deleted(now, status, remote(), header("retry-after"));
            return;
        }
        if request == Request::List {
            self.phase = self.listed(now, &remote(), body, header("retry-after"));
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
            let drive_item = serde_json::from_slice(body).ok();
            self.phase = Phase::Finished(Action::Done(Completion {
                location,
                attachment_id,
                drive_item,
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

        self.phase = self.refused(now, request, &remote(), header("retry-after"));
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
        if self.cancel_requested && request != Request::Delete {
            // The adapter abandoned the request to cancel: no backoff before the DELETE.
            self.phase = self.after_cancel();
            return;
        }
        if (request, error, self.reached) == (Request::Create, TransportError::NotSent, false) {
            // No request ever reached the server: a wrong URL or a server that is
            // down, not a hiccup worth a minute of retries, and nothing to clean up.
            self.phase = Phase::Finished(Action::Failed(UploadError::Unreachable));
            return;
        }
        self.reached |= error == TransportError::Lost;
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
}

#[cfg(test)]
mod tests;
