//! Optional pacing for real Outlook's per-mailbox budget; the rules are on [`Pacing`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much a client may upload to its mailbox, and how many requests it may have
/// in flight at once.
///
/// Microsoft documents, for Outlook attachments uploaded through Graph, a limit of
/// 150 MB of uploads per 5 minutes per mailbox and 4 concurrent requests per app
/// and mailbox. Going past them earns `429` answers and long `Retry-After`s; pacing
/// stays under them instead. A client talks to one mailbox, so it holds
/// one pacer shared by every upload it runs: share one client per mailbox.
///
/// The planner still handles any `429` that comes anyway; pacing only delays
/// requests, it never decides anything about the upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pacing {
    /// Fragment bytes allowed in any `window`.
    pub budget_bytes: u64,
    /// The sliding window the budget applies to.
    pub window: Duration,
    /// Requests in flight at once, of any kind.
    pub max_concurrent: usize,
}

impl Pacing {
    /// Outlook's documented budget: 150 MB (150,000,000 bytes, the stricter reading
    /// of "MB") per 5 minutes, 4 concurrent requests.
    pub const fn outlook() -> Self {
        Self {
            budget_bytes: 150_000_000,
            window: Duration::from_secs(5 * 60),
            max_concurrent: 4,
        }
    }

    upsession_core::const_setters! {
        /// Sets the bytes allowed per window.
        with_budget(budget_bytes: u64, window: Duration);
        /// Sets the number of requests in flight at once.
        with_max_concurrent(max_concurrent: usize);
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Self::outlook()
    }
}

/// The bytes sent in the current window: when, and how many. Each client keeps
/// one behind a lock and sleeps, its own way, until [`Window::reserve`] allows.
#[derive(Debug, Default)]
pub struct Window {
    sent: VecDeque<(Instant, u64)>,
    total: u64,
}

impl Window {
    /// Records `bytes` sent at `now` if the budget allows, or says when it will.
    /// A fragment larger than the whole budget goes alone, in an empty window.
    pub fn reserve(
        &mut self,
        now: Instant,
        bytes: u64,
        budget: u64,
        window: Duration,
    ) -> Option<Instant> {
        while let Some(&(at, n)) = self.sent.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.sent.pop_front();
            self.total -= n;
        }
        if self.sent.is_empty() || self.total.saturating_add(bytes) <= budget {
            self.sent.push_back((now, bytes));
            self.total += bytes;
            return None;
        }
        // The earliest time enough old entries have left the window.
        let mut remaining = self.total;
        for &(at, n) in &self.sent {
            remaining -= n;
            if remaining == 0 || remaining.saturating_add(bytes) <= budget {
                return Some(at + window);
            }
        }
        unreachable!("the window empties once every entry has left it")
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(300);

    #[test]
    fn budget_is_a_sliding_window() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = Window::default();
        assert_eq!(w.reserve(s(0), 60, 150, W), None);
        assert_eq!(w.reserve(s(10), 60, 150, W), None);
        // 120 sent; 60 more would pass 150 until the first 60 leave the window.
        assert_eq!(w.reserve(s(20), 60, 150, W), Some(s(300)));
        assert_eq!(w.reserve(s(300), 60, 150, W), None);
        // Now 10 s and 300 s are in the window: 120 bytes.
        assert_eq!(w.reserve(s(301), 100, 150, W), Some(s(600)));
    }

    #[test]
    fn a_fragment_larger_than_the_budget_goes_alone() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.reserve(t0, 500, 150, W), None);
        assert_eq!(w.reserve(t0, 1, 150, W), Some(t0 + W));
        assert_eq!(w.reserve(t0 + W, 500, 150, W), None);
    }
}
