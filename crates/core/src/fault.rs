//! Seeded, reproducible fault injection for the test double: which request gets
//! which fault, decided from a spec and a seed.
//!
//! A spec is comma-separated: `seed=N` and `ROUTE:FAULT:PROBABILITY` rules, e.g.
//! `seed=7,put:503:0.2,put:reset:0.1,status:slow=200:0.5`. Rules of a route are
//! tried in order; the first whose roll hits applies.
//!
//! Routes: `create` (createUploadSession), `put` (a fragment), `status` (`GET`
//! uploadUrl), `cancel` (`DELETE` uploadUrl), `item` (creating a draft or event),
//! `download` (attachment metadata and `$value`), `any`.
//!
//! Faults: `429`, `503` (with `Retry-After: 1`), `500`, `403` (access denied, as for
//! a shared mailbox the app may not use), `reset` (the connection is dropped part-way
//! through the body; nothing is stored), `lost` (the request is carried out, then the
//! connection is dropped without an answer), `slow=MS` (the answer waits MS
//! milliseconds), `expire` (the session expires just before the request), `auth401`
//! (a request to the uploadUrl that carries an `Authorization` header is refused with
//! 401, as OneDrive's docs warn it may be: it proves a client keeps its bearer token
//! off the pre-authenticated URL).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::RequestError;

/// Which kind of request a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultRoute {
    /// createUploadSession.
    Create,
    /// A fragment `PUT`.
    Put,
    /// `GET {uploadUrl}`.
    Status,
    /// `DELETE {uploadUrl}`.
    Cancel,
    /// Creating a draft or an event.
    Item,
    /// Reading an attachment.
    Download,
    /// Every request.
    Any,
}

/// What happens to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 429 with `Retry-After`.
    Throttled,
    /// 503 with `Retry-After`.
    Unavailable,
    /// 500.
    Internal,
    /// 403.
    AccessDenied,
    /// The connection drops part-way through the body.
    Reset,
    /// Carried out, then the connection drops without an answer.
    Lost,
    /// The answer is delayed.
    Slow(Duration),
    /// The session expires first.
    Expire,
    /// A request carrying `Authorization` is refused with 401.
    RejectAuthorization,
}

impl Fault {
    /// The error answer for the faults that are an answer.
    pub fn as_error(self) -> Option<RequestError> {
        match self {
            Self::Throttled => Some(RequestError::Throttled {
                retry_after_secs: 1,
            }),
            Self::Unavailable => Some(RequestError::Unavailable {
                retry_after_secs: 1,
            }),
            Self::Internal => Some(RequestError::Internal),
            Self::AccessDenied => Some(RequestError::AccessDenied),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    route: FaultRoute,
    fault: Fault,
    probability: f64,
}

/// A parsed spec and its seeded generator.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    seed: u64,
    rules: Vec<Rule>,
    rng: fastrand::Rng,
    text: String,
}

/// Why a spec could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fault spec item `{item}`: {why} (the form is `seed=N,ROUTE:FAULT:PROBABILITY,...`)")]
pub struct FaultSpecError {
    item: String,
    why: &'static str,
}

impl FromStr for FaultPlan {
    type Err = FaultSpecError;

    /// Reads a spec; without `seed=`, the seed is 0.
    ///
    /// ```
    /// use upsession_core::fault::{Fault, FaultPlan, FaultRoute};
    ///
    /// let mut plan: FaultPlan = "seed=7,put:503:1.0".parse().unwrap();
    /// assert_eq!(plan.decide(FaultRoute::Put), Some(Fault::Unavailable));
    /// assert_eq!(plan.decide(FaultRoute::Status), None);
    /// assert!("put:explode:0.5".parse::<FaultPlan>().is_err());
    /// ```
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut seed = 0;
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |why| FaultSpecError {
                item: item.chars().take(80).collect(),
                why,
            };
            if let Some(n) = item.strip_prefix("seed=") {
                seed = n
                    .parse()
                    .map_err(|_| err("the seed is not a whole number"))?;
                continue;
            }
            let mut parts = item.split(':');
            let (Some(route), Some(fault), Some(p), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(err("expected ROUTE:FAULT:PROBABILITY"));
            };
            let route = match route {
                "create" => FaultRoute::Create,
                "put" => FaultRoute::Put,
                "status" => FaultRoute::Status,
                "cancel" => FaultRoute::Cancel,
                "item" => FaultRoute::Item,
                "download" => FaultRoute::Download,
                "any" => FaultRoute::Any,
                _ => {
                    return Err(err(
                        "unknown route (create, put, status, cancel, item, download, any)",
                    ));
                }
            };
            let fault = match fault {
                "429" => Fault::Throttled,
                "503" => Fault::Unavailable,
                "500" => Fault::Internal,
                "403" => Fault::AccessDenied,
                "reset" => Fault::Reset,
                "lost" => Fault::Lost,
                "expire" => Fault::Expire,
                "auth401" => Fault::RejectAuthorization,
                f => match f
                    .strip_prefix("slow=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    Some(ms) => Fault::Slow(Duration::from_millis(ms.min(60_000))),
                    None => {
                        return Err(err(
                            "unknown fault (429, 503, 500, 403, reset, lost, slow=MS, expire, auth401)",
                        ));
                    }
                },
            };
            let probability: f64 = p
                .parse()
                .map_err(|_| err("the probability is not a number"))?;
            if !(0.0..=1.0).contains(&probability) {
                return Err(err("the probability must be between 0 and 1"));
            }
            rules.push(Rule {
                route,
                fault,
                probability,
            });
        }
        Ok(Self {
            seed,
            rules,
            rng: fastrand::Rng::with_seed(seed),
            text: spec.trim().to_owned(),
        })
    }
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> Self {
        Self {
            seed: 0,
            rules: Vec::new(),
            rng: fastrand::Rng::with_seed(0),
            text: String::new(),
        }
    }

    /// The seed, to print so a run can be replayed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether the plan has any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The fault for the next request of `route`, if any. Each call consumes one
    /// roll per matching rule, so a run with the same requests is the same.
    pub fn decide(&mut self, route: FaultRoute) -> Option<Fault> {
        for rule in &self.rules {
            if (rule.route == route || rule.route == FaultRoute::Any)
                && self.rng.f64() < rule.probability
            {
                return Some(rule.fault);
            }
        }
        None
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.text)
        }
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let spec = "seed=42,put:503:0.3,put:reset:0.2,any:slow=5:0.1";
        let run = || {
            let mut p: FaultPlan = spec.parse().unwrap();
            (0..200)
                .map(|_| p.decide(FaultRoute::Put))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!(
            (60..140).contains(&hits),
            "about half of 200 rolls hit: {hits}"
        );
        assert!(a.contains(&Some(Fault::Slow(Duration::from_millis(5)))));
    }

    #[test]
    fn auth401_is_a_fault_of_its_own() {
        let mut p: FaultPlan = "put:auth401:1".parse().unwrap();
        assert_eq!(p.decide(FaultRoute::Put), Some(Fault::RejectAuthorization));
        assert_eq!(Fault::RejectAuthorization.as_error(), None);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, needle) in [
            ("put:503", "ROUTE:FAULT"),
            ("post:503:0.1", "unknown route"),
            ("put:404:0.1", "unknown fault"),
            ("put:503:2", "between 0 and 1"),
            ("seed=x", "whole number"),
        ] {
            let e = spec.parse::<FaultPlan>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        assert!("".parse::<FaultPlan>().unwrap().is_empty());
    }
}
