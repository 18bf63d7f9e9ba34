//! What the planner makes of answers: sessions accepted, claims checked, retries
//! and failures decided.

use std::time::{Duration, SystemTime};

use http::StatusCode;

use super::{
    Action, Completion, Event, FRAGMENT_QUANTUM, Phase, Planner, Request, Retry, UploadError,
};
use crate::error::RemoteError;
use crate::header::ContentRange;
use crate::range::{ByteRange, RangeSet};
use crate::time::parse_retry_after;
use crate::wire::{Collection, UploadSession};

/// What the planner reads of a listed attachment; the rest is ignored.
#[derive(serde::Deserialize)]
struct ListedAttachment {
    id: Option<String>,
    name: Option<String>,
    size: Option<u64>,
}

impl Planner {
    /// What a `DELETE` answered means: cancelled (or already gone), again later, or
    /// a failure.
    pub(super) fn deleted(
        &mut self,
        now: SystemTime,
        status: StatusCode,
        remote: RemoteError,
        retry_after: Option<&str>,
    ) -> Phase {
        if let Some(failed) = self.failing.take() {
            // Deleted or not, the upload has failed; a session left is the
            // server's to expire.
            return Phase::Finished(Action::Failed(failed));
        }
        match status {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Phase::Finished(Action::Cancelled),
            s if retryable(s) => {
                self.failure(now, Request::Delete, &remote.to_string(), retry_after)
            }
            _ => Phase::Finished(Action::Failed(UploadError::Remote(remote))),
        }
    }

    /// What an error answer to `request` means: wait and repeat it, ask the session,
    /// shrink the fragments, or fail.
    pub(super) fn refused(
        &mut self,
        now: SystemTime,
        request: Request,
        remote: &RemoteError,
        retry_after: Option<&str>,
    ) -> Phase {
        let status = remote.status;
        let reason = remote.to_string();
        let is_final = matches!(request, Request::Put(cr) if cr.range().end() == self.total);
        match (request, status) {
            // The server's instruction to slow down: not a failed attempt.
            (_, StatusCode::TOO_MANY_REQUESTS) if self.cfg.deadline.is_some() => {
                self.again(now, request, &reason, retry_after, true)
            }
            // A gateway's 503 may hide a completion that did happen: ask first.
            (Request::Put(_), StatusCode::SERVICE_UNAVAILABLE) if is_final => {
                self.final_in_doubt = true;
                self.failure(now, Request::Status, &reason, retry_after)
            }
            // Throttled before the body was read: the same request again, when told.
            (_, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => {
                self.failure(now, request, &reason, retry_after)
            }
            // A drive file's name is taken (`fail`): no retry changes that. The
            // session goes first, and its bytes with it.
            (Request::Put(_), StatusCode::CONFLICT) if remote.code == "nameAlreadyExists" => {
                self.failing = Some(UploadError::Remote(remote.clone()));
                Phase::Ready {
                    request: Request::Delete,
                    at: None,
                }
            }
            // The server disagrees about the range, or is busy with one: ask it.
            (Request::Put(_), StatusCode::RANGE_NOT_SATISFIABLE | StatusCode::CONFLICT) => {
                self.failure(now, Request::Status, &reason, retry_after)
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
                self.session_gone(request, remote.clone())
            }
            (Request::Put(_), s) if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                // A gateway's 5xx may hide a completion that did happen.
                if is_final {
                    self.final_in_doubt = true;
                }
                // The server may have stored the fragment: ask before re-sending.
                self.failure(now, Request::Status, &reason, retry_after)
            }
            (_, s) if retryable(s) => self.failure(now, request, &reason, retry_after),
            _ => Phase::Finished(Action::Failed(UploadError::Remote(remote.clone()))),
        }
    }

    /// A 404 from the session: gone, unless the final fragment may have completed it.
    pub(super) fn session_gone(&mut self, request: Request, remote: RemoteError) -> Phase {
        if self.final_in_doubt
            && let (Request::Status, Some(last)) = (request, self.final_range())
        {
            // Real Graph forgets a session once complete; our server answers the
            // final fragment again. Try once before asking the item.
            self.final_in_doubt = false;
            self.probing_final = true;
            return Phase::Ready {
                request: Request::Put(last),
                at: None,
            };
        }
        if !(self.final_in_doubt || self.probing_final) {
            return Phase::Finished(Action::Failed(UploadError::SessionNotFound(remote)));
        }
        if self.listing_name.is_none() {
            return Phase::Finished(Action::Failed(UploadError::FinalOutcomeUnknown));
        }
        // The item has the last word: its attachments show whether the upload ended.
        self.gone = Some(remote);
        Phase::Ready {
            request: Request::List,
            at: None,
        }
    }

    /// What the item's attachments say about an upload whose final answer is in
    /// doubt: one of the file's name and size is the upload; none means it did not
    /// complete; no list means nobody can tell.
    pub(super) fn listed(
        &mut self,
        now: SystemTime,
        remote: &RemoteError,
        body: &[u8],
        retry_after: Option<&str>,
    ) -> Phase {
        if retryable(remote.status) && remote.status != StatusCode::CONFLICT {
            return self.failure(now, Request::List, &remote.to_string(), retry_after);
        }
        let name = self.listing_name.as_deref().unwrap_or_default();
        let listed = remote
            .status
            .is_success()
            .then(|| serde_json::from_slice::<Collection<ListedAttachment>>(body).ok())
            .flatten();
        let Some(listed) = listed else {
            return Phase::Finished(Action::Failed(UploadError::FinalOutcomeUnknown));
        };
        // The newest one, should an earlier upload of the same file be there too.
        let found = listed
            .value
            .into_iter()
            .rev()
            .find(|a| a.name.as_deref() == Some(name) && a.size == Some(self.total));
        match (found, self.gone.take()) {
            (Some(a), _) => {
                self.expected = RangeSet::new();
                self.events.push_back(Event::Progress {
                    acknowledged: self.total,
                    total: self.total,
                });
                Phase::Finished(Action::Done(Completion {
                    location: None,
                    attachment_id: a.id,
                    drive_item: None,
                }))
            }
            (None, Some(gone)) => {
                Phase::Finished(Action::Failed(UploadError::SessionNotFound(gone)))
            }
            (None, None) => Phase::Finished(Action::Failed(UploadError::FinalOutcomeUnknown)),
        }
    }

    pub(super) fn accept_session(
        &mut self,
        now: SystemTime,
        request: Request,
        session: &UploadSession,
    ) {
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
                    self.throttles = 0;
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
    pub(super) fn check_claims(&mut self, expected: &RangeSet) -> Option<UploadError> {
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
    pub(super) fn put_next_or_finish(&mut self, _now: SystemTime) -> Phase {
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

    pub(super) fn final_range(&self) -> Option<ContentRange> {
        if let Some(cr) = self.last_final {
            return Some(cr);
        }
        let len = self.fragment_size.min(self.total);
        let range = ByteRange::new(self.total - len, self.total)?;
        ContentRange::new(range, self.total)
    }

    /// Counts a failure and schedules `request` after a backoff (or `Retry-After`),
    /// or gives up when the attempts or the deadline are spent.
    pub(super) fn failure(
        &mut self,
        now: SystemTime,
        request: Request,
        reason: &str,
        retry_after: Option<&str>,
    ) -> Phase {
        self.again(now, request, reason, retry_after, false)
    }

    /// Schedules `request` again after a failure (counted, as in
    /// [`Planner::failure`]) or, when `throttled`, a `429`: not counted, its
    /// `Retry-After` (else a backoff that grows with each one in a row) bounded by
    /// the deadline alone.
    pub(super) fn again(
        &mut self,
        now: SystemTime,
        request: Request,
        reason: &str,
        retry_after: Option<&str>,
        throttled: bool,
    ) -> Phase {
        if self.cancel_requested && request != Request::Delete {
            return self.after_cancel();
        }
        let attempt = if throttled {
            self.throttles += 1;
            self.throttles
        } else {
            self.failures += 1;
            if self.failures >= self.cfg.max_attempts {
                return self.fail_phase(UploadError::AttemptsExhausted {
                    attempts: self.failures,
                    last: reason.into(),
                });
            }
            self.failures
        };
        let wait = retry_after
            .and_then(|v| parse_retry_after(v, now))
            .unwrap_or_else(|| self.backoff(attempt));
        self.schedule(now, request, reason, wait, attempt, throttled)
    }

    /// Schedules `request` after `wait`, unless that passes the deadline or the
    /// session's expiry; reports the retry.
    fn schedule(
        &mut self,
        now: SystemTime,
        request: Request,
        reason: &str,
        wait: Duration,
        attempt: u32,
        throttled: bool,
    ) -> Phase {
        let at = now.checked_add(wait).unwrap_or_else(|| far_future(now));
        if self.deadline.is_some_and(|d| at > d) {
            return self.fail_phase(UploadError::DeadlineExceeded {
                last: reason.into(),
            });
        }
        if self.expires.is_some_and(|e| at >= e)
            && !matches!(request, Request::Delete | Request::List)
        {
            return self.fail_phase(UploadError::SessionExpired);
        }
        self.events.push_back(Event::Retrying(Retry {
            attempt,
            wait,
            reason: reason.into(),
            throttled,
        }));
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

    /// Full jitter: uniform in `0..=min(max, base * 2^(attempt-1))`.
    pub(super) fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self
            .cfg
            .backoff_base
            .saturating_mul(1 << exp)
            .min(self.cfg.backoff_max);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }

    pub(super) fn fail_phase(&self, error: UploadError) -> Phase {
        if self.cancel_requested {
            return Phase::Finished(Action::Cancelled);
        }
        Phase::Finished(Action::Failed(error))
    }

    pub(super) fn fail(&mut self, error: UploadError) -> Action {
        self.phase = self.fail_phase(error);
        let Phase::Finished(action) = &self.phase else {
            unreachable!()
        };
        action.clone()
    }
}

pub(super) fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
}

pub(super) fn far_future(now: SystemTime) -> SystemTime {
    now + Duration::from_secs(100 * 365 * 24 * 60 * 60)
}

/// The attachment id in a `Location`: the last path segment, or Outlook's
/// `…/Attachments('ID')`.
pub(super) fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let id = match last.find("('") {
        Some(i) => last[i + 2..].trim_end_matches("')"),
        None => last,
    };
    (!id.is_empty()).then(|| id.to_owned())
}
