//! The retry middleware of the kiota HTTP pipelines (.NET, Java, Go, PHP), which
//! also sees every slice: 429, 503 and 504 are sent again, at most 3 times, after
//! `Retry-After` or an exponential backoff.
//!
//! Sources: kiota-dotnet `src/http/httpClient/Middleware/RetryHandler.cs`
//! (`DefaultMaxRetry = 3`, `DefaultDelay = 3`, `MaxDelay = 180`, and an
//! `AggregateException("Too many retries performed…")` when the retries run out);
//! kiota-java `RetryHandler.java`, kiota-http-go `retry_handler.go` and
//! kiota-http-guzzle-php `RetryHandler.php` (the last answer is passed on when
//! they run out). The slices qualify as "buffered" everywhere because each SDK sets
//! `Content-Length` (.NET `IsBuffered`, Java `contentLength() != -1`, Go
//! `req.ContentLength != -1`, PHP `isSeekable()`).
//!
//! Python's and JavaScript's retry handlers skip `application/octet-stream`
//! bodies ("not buffered"), so their slices are never retried; those models do not
//! use this.

use std::time::{Duration, SystemTime};

use upsession_core::time::parse_retry_after;

use super::{Answer, Request, Step};

/// Retries of one request (the SDKs count per request).
const MAX_RETRIES: u32 = 3;
/// The pipelines' base delay, in seconds.
const BASE_DELAY_SECS: u64 = 3;
/// The pipelines' ceiling on one delay, in seconds.
const MAX_DELAY_SECS: u64 = 180;

/// What the middleware does with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Not a retried status: the SDK sees the answer.
    Pass,
    /// Send the same request again after this delay.
    After(Duration),
    /// A retried status, but the retries are used up: .NET throws, the others pass
    /// the answer on.
    Exhausted,
}

/// The request in flight as the middleware holds it: what a retry sends again.
///
/// A model sends every request that goes through the pipeline with
/// [`Middleware::send`], lets [`Middleware::judge`] see every answer first, and
/// after each wait asks [`Middleware::resend`] whether the wait was the
/// middleware's own.
#[derive(Clone, Debug, Default)]
pub(crate) struct Middleware {
    retries: u32,
    /// The request last sent, as sent.
    sent: Option<Request>,
    /// A retry's delay is running.
    waiting: bool,
}

impl Middleware {
    /// A new request goes out: its retries count afresh.
    pub(crate) fn send(&mut self, request: Request) -> Step {
        self.retries = 0;
        self.waiting = false;
        self.sent = Some(request.clone());
        Step::Send(request)
    }

    /// When the wait just over was a retry's delay: the same request again.
    pub(crate) fn resend(&mut self) -> Option<Step> {
        if !std::mem::take(&mut self.waiting) {
            return None;
        }
        self.sent.clone().map(Step::Send)
    }

    /// Judges `answer`, received at `now`.
    ///
    /// The delay is `Retry-After` (seconds or an HTTP date) when present, else
    /// `3 s × 2^n` for the n-th retry, at most 180 s. (The SDKs' backoff curves
    /// differ in detail, and Java adds up to a second of jitter; the driver caps every
    /// wait anyway, as no server here throttles.)
    pub(crate) fn judge(&mut self, now: SystemTime, answer: &Answer) -> Retry {
        if !matches!(answer.status, 429 | 503 | 504) {
            return Retry::Pass;
        }
        if self.retries >= MAX_RETRIES {
            return Retry::Exhausted;
        }
        let delay = answer
            .header("retry-after")
            .and_then(|v| parse_seconds(v).or_else(|| parse_retry_after(v, now)))
            .unwrap_or_else(|| Duration::from_secs(BASE_DELAY_SECS << self.retries));
        self.retries += 1;
        self.waiting = true;
        Retry::After(delay.min(Duration::from_secs(MAX_DELAY_SECS)))
    }
}

/// `Retry-After` as (possibly fractional) seconds, as Java and Go read it.
fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Answer {
        let a = Answer::new(status, Vec::new(), Vec::new());
        match retry_after {
            Some(v) => a.with_header("Retry-After", v),
            None => a,
        }
    }

    #[test]
    fn throttling_is_retried_three_times_then_exhausted() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Middleware::default();
        assert_eq!(m.judge(now, &answer(200, None)), Retry::Pass);
        assert_eq!(m.judge(now, &answer(413, None)), Retry::Pass);
        assert_eq!(
            m.judge(now, &answer(429, Some("7"))),
            Retry::After(Duration::from_secs(7))
        );
        assert_eq!(
            m.judge(now, &answer(503, None)),
            Retry::After(Duration::from_secs(6))
        );
        assert_eq!(
            m.judge(now, &answer(504, Some("1000"))),
            Retry::After(Duration::from_secs(180))
        );
        assert_eq!(m.judge(now, &answer(429, None)), Retry::Exhausted);
        let _ = m.send(Request::get("https://h/u"));
        assert_eq!(
            m.judge(now, &answer(429, Some("0.5"))),
            Retry::After(Duration::from_millis(500))
        );
    }

    #[test]
    fn only_the_middlewares_own_delay_ends_in_a_resend() {
        let now = SystemTime::UNIX_EPOCH;
        let mut m = Middleware::default();
        let get = Request::get("https://h/u");
        assert_eq!(m.send(get.clone()), Step::Send(get.clone()));
        assert_eq!(m.resend(), None);
        assert!(matches!(m.judge(now, &answer(503, None)), Retry::After(_)));
        assert_eq!(m.resend(), Some(Step::Send(get)));
        assert_eq!(m.resend(), None);
    }
}
