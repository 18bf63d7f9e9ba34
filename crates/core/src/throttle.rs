//! Graph's per-app, per-mailbox throttling, as a decision from `(now, key, bytes)`.
//!
//! Outlook's documented limits ("Microsoft Graph service-specific throttling
//! limits", Outlook service): 10,000 requests per 10 minutes, 4 concurrent requests,
//! 150 MB of uploads (PATCH, POST, PUT) per 5 minutes, per app ID and mailbox. Past
//! them Graph answers 429 with `Retry-After`. The decision is taken before a body is
//! read, so a refused fragment is never half-stored.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::error::RequestError;

/// The limits for one key (an app and a mailbox).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleLimits {
    /// Requests allowed per `request_window`.
    pub requests: u32,
    /// The window for `requests`.
    pub request_window: Duration,
    /// Requests in progress at once.
    pub concurrent: u32,
    /// Upload bytes allowed per `upload_window`.
    pub upload_bytes: u64,
    /// The window for `upload_bytes`.
    pub upload_window: Duration,
}

impl ThrottleLimits {
    /// Outlook's documented limits.
    pub const OUTLOOK: Self = Self {
        requests: 10_000,
        request_window: Duration::from_secs(600),
        concurrent: 4,
        upload_bytes: 150_000_000,
        upload_window: Duration::from_secs(300),
    };

    crate::const_setters! {
        /// Sets the requests allowed per window.
        with_requests(requests: u32, request_window: Duration);
        /// Sets the requests in progress at once.
        with_concurrent(concurrent: u32);
        /// Sets the upload bytes allowed per window.
        with_upload_bytes(upload_bytes: u64, upload_window: Duration);
    }
}

#[derive(Debug, Default)]
struct KeyState {
    requests: VecDeque<SystemTime>,
    uploads: VecDeque<(SystemTime, u64)>,
    uploaded: u64,
    in_flight: u32,
}

/// Admission for one request; give it back with [`Throttle::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be released, or the key's concurrency stays taken"]
pub struct Permit {
    key: String,
}

/// Sliding-window throttling per key. See the [module documentation](self).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use upsession_core::throttle::{Throttle, ThrottleLimits};
///
/// let mut t = Throttle::new(ThrottleLimits::OUTLOOK);
/// let now = UNIX_EPOCH + Duration::from_secs(1_000);
/// let permits: Vec<_> = (0..4).map(|_| t.admit(now, "app|me", 0).unwrap()).collect();
/// assert!(t.admit(now, "app|me", 0).is_err(), "a fifth concurrent request is refused");
/// assert!(t.admit(now, "app|other-mailbox", 0).is_ok());
/// for p in permits { t.release(p); }
/// ```
#[derive(Debug)]
pub struct Throttle {
    limits: ThrottleLimits,
    keys: HashMap<String, KeyState>,
    /// How many keys make [`Throttle::admit`] forget the idle ones.
    prune_at: usize,
}

/// The fewest keys worth pruning: below it the table is left as it is.
const PRUNE_FLOOR: usize = 1024;

impl Throttle {
    /// A throttle with `limits` for every key.
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            keys: HashMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }

    /// Forgets the keys with nothing in flight and nothing left in their windows,
    /// once the table has doubled since it was last pruned: keys come from the
    /// request (the mailbox), so the table must not only grow.
    fn prune(&mut self, now: SystemTime) {
        if self.keys.len() < self.prune_at {
            return;
        }
        let l = &self.limits;
        let live = |t: SystemTime, window: Duration| t + window > now;
        self.keys.retain(|_, s| {
            s.in_flight > 0
                || s.requests
                    .back()
                    .is_some_and(|t| live(*t, l.request_window))
                || s.uploads
                    .back()
                    .is_some_and(|(t, _)| live(*t, l.upload_window))
        });
        self.prune_at = (self.keys.len() * 2).max(PRUNE_FLOOR);
    }

    /// Admits a request of `key` carrying `upload_bytes` (0 for anything but a
    /// fragment or an upload), or refuses it with the 429 to answer.
    pub fn admit(
        &mut self,
        now: SystemTime,
        key: &str,
        upload_bytes: u64,
    ) -> Result<Permit, RequestError> {
        self.prune(now);
        let l = &self.limits;
        let state = self.keys.entry(key.to_owned()).or_default();
        let since = |window: Duration| now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let req_start = since(l.request_window);
        while state.requests.front().is_some_and(|t| *t <= req_start) {
            state.requests.pop_front();
        }
        let up_start = since(l.upload_window);
        while let Some(&(t, n)) = state.uploads.front() {
            if t > up_start {
                break;
            }
            state.uploads.pop_front();
            state.uploaded -= n;
        }
        let wait_until = |t: SystemTime, window: Duration| {
            let secs = (t + window)
                .duration_since(now)
                .unwrap_or_default()
                .as_secs_f64()
                .ceil();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // small, positive
            let secs = secs as u64;
            RequestError::Throttled {
                retry_after_secs: secs.max(1),
            }
        };
        if state.in_flight >= l.concurrent {
            return Err(RequestError::Throttled {
                retry_after_secs: 1,
            });
        }
        if state.requests.len() >= l.requests as usize {
            let oldest = *state
                .requests
                .front()
                .expect("over the limit, so not empty");
            return Err(wait_until(oldest, l.request_window));
        }
        if upload_bytes > 0 && state.uploaded + upload_bytes > l.upload_bytes {
            // Wait until enough of the window's bytes have aged out for this upload.
            let mut freed = 0;
            let need = (state.uploaded + upload_bytes).saturating_sub(l.upload_bytes);
            let mut at = now;
            for &(t, n) in &state.uploads {
                freed += n;
                at = t;
                if freed >= need {
                    break;
                }
            }
            return Err(wait_until(at, l.upload_window));
        }
        state.requests.push_back(now);
        if upload_bytes > 0 {
            state.uploads.push_back((now, upload_bytes));
            state.uploaded += upload_bytes;
        }
        state.in_flight += 1;
        Ok(Permit {
            key: key.to_owned(),
        })
    }

    /// The request of `permit` is answered.
    #[allow(clippy::needless_pass_by_value)] // consumed so that it cannot be released twice
    pub fn release(&mut self, permit: Permit) {
        if let Some(state) = self.keys.get_mut(&permit.key) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use crate::error::GraphError;
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn request_window_slides() {
        let limits = ThrottleLimits {
            requests: 3,
            ..ThrottleLimits::OUTLOOK
        };
        let mut th = Throttle::new(limits);
        for s in 0..3 {
            let p = th.admit(t(s), "k", 0).unwrap();
            th.release(p);
        }
        let err = th.admit(t(10), "k", 0).unwrap_err();
        assert_eq!(err.status(), 429);
        assert_eq!(
            err.retry_after_secs(),
            Some(590),
            "until the first request leaves the window"
        );
        assert!(th.admit(t(600), "k", 0).is_ok());
    }

    #[test]
    fn upload_budget_is_150_mb_per_5_minutes() {
        let mut th = Throttle::new(ThrottleLimits::OUTLOOK);
        for i in 0..37 {
            let p = th.admit(t(i), "k", 4_000_000).unwrap();
            th.release(p);
        }
        // 148 MB sent; 4 MB more would pass 150 MB.
        let err = th.admit(t(40), "k", 4_000_000).unwrap_err();
        assert_eq!(
            err.retry_after_secs(),
            Some(260),
            "until the first 4 MB age out"
        );
        assert!(
            th.admit(t(40), "k", 2_000_000).is_ok(),
            "a smaller fragment still fits"
        );
        assert!(th.admit(t(301), "k", 4_000_000).is_ok());
    }

    #[test]
    fn idle_keys_are_forgotten_once_their_windows_pass() {
        let mut th = Throttle::new(ThrottleLimits::OUTLOOK);
        let busy = th.admit(t(0), "app|busy", 0).unwrap();
        for i in 1..PRUNE_FLOOR {
            let p = th.admit(t(0), &format!("app|mailbox-{i}"), 0).unwrap();
            th.release(p);
        }
        assert_eq!(th.keys.len(), PRUNE_FLOOR);
        let _ = th.admit(t(601), "app|new", 0).unwrap();
        assert_eq!(th.keys.len(), 2, "only the busy key and the new one stay");
        th.release(busy);
    }

    #[test]
    fn concurrency_is_per_key_and_released() {
        let mut th = Throttle::new(ThrottleLimits::OUTLOOK);
        let ps: Vec<_> = (0..4).map(|_| th.admit(t(0), "a", 0).unwrap()).collect();
        assert_eq!(
            th.admit(t(0), "a", 0).unwrap_err().retry_after_secs(),
            Some(1)
        );
        assert!(th.admit(t(0), "b", 0).is_ok());
        for p in ps {
            th.release(p);
        }
        assert!(th.admit(t(0), "a", 0).is_ok());
    }
}
