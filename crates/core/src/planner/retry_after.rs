//! How long a single request (a draft, a status, a cancel) waits out Graph's
//! throttling, and how often.

use std::time::{Duration, SystemTime};

use http::StatusCode;

use crate::time::parse_retry_after;

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
