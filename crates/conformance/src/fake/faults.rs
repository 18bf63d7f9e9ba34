//! Which requests fail, and how: the faults, their schedules and their sources.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use http::Method;
use upsession_core::fault::{self, FaultPlan, FaultRoute};

/// How long a throttled client is told to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAfter {
    /// `Retry-After: N` (seconds).
    Seconds(u8),
    /// `Retry-After: <HTTP date>` this many whole seconds from now (0 names the
    /// current second, which is already past: no wait).
    HttpDate(u8),
}

/// One injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// 429 (or 503 when `unavailable`) with `Retry-After`, before any body byte is read.
    Throttle {
        /// 503 `serviceNotAvailable` instead of 429 `ApplicationThrottled`.
        unavailable: bool,
        /// How the wait is written.
        retry_after: RetryAfter,
    },
    /// 500 `generalException`; nothing is applied.
    ServerError,
    /// 403 `ErrorAccessDenied`; nothing is applied.
    AccessDenied,
    /// The connection is dropped part-way through the request body; nothing is stored.
    ResetMidBody,
    /// The request is carried out (the fragment stored), then the connection is
    /// dropped without an answer.
    LoseResponse,
    /// The answer waits this long.
    Slow(Duration),
    /// The session expires just before the request.
    Expire,
    /// 413 `RequestEntityTooLarge` naming `max` as the largest body taken, as a proxy
    /// in front of Graph answers a fragment it finds too large; nothing is applied.
    PayloadTooLarge {
        /// The largest body the answer says is taken.
        max: u64,
    },
    /// 307 to the same path and query on another host: the fake's own port under its
    /// other loopback name (`localhost` for `127.0.0.1`, else `127.0.0.1`). A client
    /// must not carry a token or an uploadUrl there; nothing is applied.
    CrossHostRedirect,
    /// No answer: the connection is held this long, then dropped; nothing is applied.
    Stall(Duration),
    /// A fragment `PUT` or a status `GET` is carried out, then answered as if the
    /// session expected every byte from `from` on: below what it holds, it forgets
    /// bytes (as a server that lost unsynced writes); beyond, it claims bytes never
    /// sent.
    Misreport {
        /// The first byte the answer says is expected.
        from: u64,
    },
}

impl Fault {
    /// Whether a correct client can still finish the upload after this fault. A
    /// redirect to another host is not followed, and a server claiming bytes never
    /// sent must stop a correct client: neither counts as recoverable.
    pub const fn is_recoverable(self) -> bool {
        !matches!(
            self,
            Self::Expire | Self::AccessDenied | Self::CrossHostRedirect | Self::Misreport { .. }
        )
    }

    fn from_core(fault: fault::Fault) -> Option<Self> {
        Some(match fault {
            fault::Fault::Throttled => Self::Throttle {
                unavailable: false,
                retry_after: RetryAfter::Seconds(1),
            },
            fault::Fault::Unavailable => Self::Throttle {
                unavailable: true,
                retry_after: RetryAfter::Seconds(1),
            },
            fault::Fault::Internal => Self::ServerError,
            fault::Fault::AccessDenied => Self::AccessDenied,
            fault::Fault::Reset => Self::ResetMidBody,
            fault::Fault::Lost => Self::LoseResponse,
            fault::Fault::Slow(d) => Self::Slow(d),
            fault::Fault::Expire => Self::Expire,
            _ => return None,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttle {
                unavailable,
                retry_after,
            } => {
                let status = if *unavailable { 503 } else { 429 };
                match retry_after {
                    RetryAfter::Seconds(s) => write!(f, "{status} with Retry-After: {s}"),
                    RetryAfter::HttpDate(s) => {
                        write!(f, "{status} with Retry-After as an HTTP date {s} s ahead")
                    }
                }
            }
            Self::ServerError => f.write_str("500"),
            Self::AccessDenied => f.write_str("403"),
            Self::ResetMidBody => f.write_str("connection reset mid-body"),
            Self::LoseResponse => f.write_str("carried out, answer lost"),
            Self::Slow(d) => write!(f, "answer delayed {} ms", d.as_millis()),
            Self::Expire => f.write_str("session expired first"),
            Self::PayloadTooLarge { max } => write!(f, "413 (at most {max} bytes)"),
            Self::CrossHostRedirect => f.write_str("307 to another host"),
            Self::Stall(d) => write!(f, "no answer, dropped after {} ms", d.as_millis()),
            Self::Misreport { from } => write!(f, "carried out, answered as expecting {from}-"),
        }
    }
}

/// Which requests fail, and how.
///
/// A request named by its method and number ([`Faults::on_nth`], or
/// `RunningFake::inject` while the fake runs) gets that fault and asks no other
/// source; requests are counted per method over every route as they arrive. The
/// other sources apply to the upload-session requests (createUploadSession and every
/// request to an uploadUrl): a scripted schedule gives the `n`-th such request
/// `schedule[n]`; past its end, the seeded random faults or the plan (if any)
/// decide per request.
///
/// Outside an upload session only the faults that replace the answer apply
/// (throttling, 500, 403, 413, a redirect, a stall); [`Fault::Expire`] and
/// [`Fault::Misreport`] need an uploadUrl.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    schedule: Vec<Option<Fault>>,
    nth: HashMap<(Method, usize), Fault>,
    plan: Option<FaultPlan>,
    random: Option<RandomFaults>,
    /// Upload-session requests counted so far: the schedule's index.
    eligible: usize,
}

/// Faults drawn per request with one probability from a seeded generator.
#[derive(Clone, Debug)]
struct RandomFaults {
    rng: fastrand::Rng,
    probability: f64,
}

impl RandomFaults {
    /// A fault with the probability, of a kind weighted as real trouble comes: mostly
    /// throttling (with waits of 0 or 1 s, in seconds or as an HTTP date), resets,
    /// lost answers and 500s, rarely an expired session.
    fn draw(&mut self) -> Option<Fault> {
        if self.rng.f64() >= self.probability {
            return None;
        }
        let retry_after = match self.rng.u8(0..18) {
            0..12 => RetryAfter::Seconds(0),
            12 => RetryAfter::Seconds(1),
            13..17 => RetryAfter::HttpDate(0),
            _ => RetryAfter::HttpDate(1),
        };
        Some(match self.rng.u8(0..14) {
            0..4 => Fault::Throttle {
                unavailable: self.rng.bool(),
                retry_after,
            },
            4..7 => Fault::ServerError,
            7..10 => Fault::ResetMidBody,
            10..13 => Fault::LoseResponse,
            _ => Fault::Expire,
        })
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// The `n`-th upload-session request gets `schedule[n]`.
    pub fn scripted(schedule: Vec<Option<Fault>>) -> Self {
        Self {
            schedule,
            ..Self::default()
        }
    }

    /// Faults drawn per request from the core's seeded plan, the same spec as
    /// `upsession serve --faults` (e.g. `seed=5,put:503:0.2,put:lost:0.1`).
    pub fn plan(plan: FaultPlan) -> Self {
        Self {
            plan: Some(plan),
            ..Self::default()
        }
    }

    /// Each upload-session request fails with `probability`, the fault drawn from a
    /// generator seeded with `seed`: 429/503 (`Retry-After` of 0 or 1 s, in seconds
    /// or as an HTTP date), 500, a reset mid-body, a lost answer, rarely an expired
    /// session.
    pub fn random(seed: u64, probability: f64) -> Self {
        Self {
            random: Some(RandomFaults {
                rng: fastrand::Rng::with_seed(seed),
                probability: probability.clamp(0.0, 1.0),
            }),
            ..Self::default()
        }
    }

    /// Also gives the `n`-th request with `method` (counted from 1 over every route,
    /// as requests arrive) `fault`, whatever the other sources say.
    #[must_use]
    pub fn on_nth(mut self, method: Method, n: usize, fault: Fault) -> Self {
        self.insert_nth(method, n, fault);
        self
    }

    /// The schedule.
    pub fn schedule(&self) -> &[Option<Fault>] {
        &self.schedule
    }

    pub(super) fn insert_nth(&mut self, method: Method, n: usize, fault: Fault) {
        self.nth.insert((method, n), fault);
    }

    /// The fault of the `n`-th request with `method`, once.
    pub(super) fn take_nth(&mut self, method: &Method, n: usize) -> Option<Fault> {
        self.nth.remove(&(method.clone(), n))
    }

    /// The fault of the next request on `route` from the schedule, the random faults
    /// or the plan.
    pub(super) fn next(&mut self, route: FaultRoute) -> Option<Fault> {
        if matches!(
            route,
            FaultRoute::Create | FaultRoute::Put | FaultRoute::Status | FaultRoute::Cancel
        ) {
            let n = self.eligible;
            self.eligible += 1;
            if let Some(fault) = self.schedule.get(n) {
                return *fault;
            }
        }
        if let Some(random) = self.random.as_mut() {
            return random.draw();
        }
        let plan = self.plan.as_mut()?;
        plan.decide(route).and_then(Fault::from_core)
    }
}
