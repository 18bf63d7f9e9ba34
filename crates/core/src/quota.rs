//! What each caller may hold open: upload sessions still uploading and the bytes
//! they declared, counted per key (the server's key is the app, a digest of the
//! bearer token), as a decision from `(key, session, declared size)`.
//!
//! A session counts from its creation until it completes, is cancelled or expires;
//! [`Quotas::release`] gives its share back and is harmless when repeated. A store
//! shared by several nodes rebuilds the counts from its records with
//! [`Quotas::reset`], so that what another node closed is given back too.

use std::collections::HashMap;

use crate::error::CreateError;

/// How long a caller refused for its open sessions is told to wait
/// (`Retry-After`): sessions free up as uploads finish, which takes minutes.
pub const SESSIONS_RETRY_AFTER_SECS: u64 = 60;

/// The limits for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuotaLimits {
    /// Upload sessions open (still uploading) at once.
    pub sessions: u32,
    /// The sum of the declared sizes of those sessions.
    pub declared_bytes: u64,
}

impl QuotaLimits {
    /// The server's defaults: 1,000 open sessions and 100 GiB declared, far above
    /// what a client or an SDK test suite holds open, well below what fills a disk
    /// by accident.
    pub const DEFAULT: Self = Self {
        sessions: 1000,
        declared_bytes: 100 << 30,
    };

    /// No limit at all.
    pub const UNLIMITED: Self = Self {
        sessions: u32::MAX,
        declared_bytes: u64::MAX,
    };

    crate::const_setters! {
        /// Sets the open sessions allowed per key.
        with_sessions(sessions: u32);
        /// Sets the declared bytes allowed per key.
        with_declared_bytes(declared_bytes: u64);
    }
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one key (or everyone, for [`Quotas::total`]) holds open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Open sessions.
    pub sessions: u64,
    /// Their declared bytes.
    pub declared_bytes: u64,
}

impl Usage {
    fn add(&mut self, declared: u64) {
        self.sessions += 1;
        self.declared_bytes = self.declared_bytes.saturating_add(declared);
    }

    fn remove(&mut self, declared: u64) {
        self.sessions = self.sessions.saturating_sub(1);
        self.declared_bytes = self.declared_bytes.saturating_sub(declared);
    }
}

/// Open sessions and declared bytes per key. See the [module documentation](self).
///
/// ```
/// use upsession_core::quota::{QuotaLimits, Quotas};
///
/// let mut q = Quotas::new(QuotaLimits::DEFAULT.with_sessions(2));
/// q.admit("app", "s1", 10).unwrap();
/// q.admit("app", "s2", 10).unwrap();
/// assert_eq!(q.admit("app", "s3", 10).unwrap_err().status(), 429);
/// assert!(q.admit("other-app", "s4", 10).is_ok());
/// q.release("s1");
/// assert!(q.admit("app", "s3", 10).is_ok());
/// # use upsession_core::GraphError as _;
/// ```
#[derive(Debug, Default)]
pub struct Quotas {
    limits: QuotaLimits,
    keys: HashMap<String, Usage>,
    /// Each counted session: its key and declared size.
    sessions: HashMap<String, (String, u64)>,
    total: Usage,
}

impl Quotas {
    /// Nothing counted yet, `limits` for every key.
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Counts the new session `session` of `key`, declaring `declared` bytes, or
    /// refuses it: [`CreateError::TooManySessions`] (429) when the key has its
    /// limit of sessions open, [`CreateError::QuotaExceeded`] (507) when the
    /// declared bytes would pass the limit. A session already counted is not
    /// counted twice.
    pub fn admit(&mut self, key: &str, session: &str, declared: u64) -> Result<(), CreateError> {
        if self.sessions.contains_key(session) {
            return Ok(());
        }
        let used = self.usage(key);
        if used.sessions >= u64::from(self.limits.sessions) {
            return Err(CreateError::TooManySessions {
                limit: self.limits.sessions,
                retry_after_secs: SESSIONS_RETRY_AFTER_SECS,
            });
        }
        if used.declared_bytes.saturating_add(declared) > self.limits.declared_bytes {
            return Err(CreateError::QuotaExceeded {
                size: declared,
                open: used.declared_bytes,
                limit: self.limits.declared_bytes,
            });
        }
        self.count(key.to_owned(), session.to_owned(), declared);
        Ok(())
    }

    fn count(&mut self, key: String, session: String, declared: u64) {
        self.keys.entry(key.clone()).or_default().add(declared);
        self.total.add(declared);
        self.sessions.insert(session, (key, declared));
    }

    /// The session is no longer open (completed, cancelled, expired, or its
    /// creation failed): its share goes back. Whether it was counted.
    pub fn release(&mut self, session: &str) -> bool {
        let Some((key, declared)) = self.sessions.remove(session) else {
            return false;
        };
        if let Some(usage) = self.keys.get_mut(&key) {
            usage.remove(declared);
            if usage.sessions == 0 {
                // Keys leave with their last session: the table never only grows.
                self.keys.remove(&key);
            }
        }
        self.total.remove(declared);
        true
    }

    /// Forgets every count and counts `open` instead, as `(key, session,
    /// declared)`: the sessions the store holds open (at start-up, or from
    /// records other nodes change). Never refuses: what is open is open.
    pub fn reset(&mut self, open: impl IntoIterator<Item = (String, String, u64)>) {
        self.keys.clear();
        self.sessions.clear();
        self.total = Usage::default();
        for (key, session, declared) in open {
            if !self.sessions.contains_key(&session) {
                self.count(key, session, declared);
            }
        }
    }

    /// What `key` holds open.
    pub fn usage(&self, key: &str) -> Usage {
        self.keys.get(key).copied().unwrap_or_default()
    }

    /// What every key together holds open.
    pub const fn total(&self) -> Usage {
        self.total
    }

    /// The limits.
    pub const fn limits(&self) -> QuotaLimits {
        self.limits
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use crate::error::GraphError;

    fn quotas(sessions: u32, bytes: u64) -> Quotas {
        Quotas::new(
            QuotaLimits::DEFAULT
                .with_sessions(sessions)
                .with_declared_bytes(bytes),
        )
    }

    #[test]
    fn the_session_past_the_limit_is_429_with_retry_after_until_one_is_released() {
        let mut q = quotas(2, u64::MAX);
        q.admit("a", "s1", 5).unwrap();
        q.admit("a", "s2", 5).unwrap();
        let err = q.admit("a", "s3", 5).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code(), err.retry_after_secs()),
            (429, "activityLimitReached", Some(SESSIONS_RETRY_AFTER_SECS))
        );
        assert_eq!(err.inner_code(), Some("tooManyUploadSessions"));
        assert!(q.admit("b", "s4", 5).is_ok(), "keys are counted apart");
        assert!(q.release("s2"));
        assert!(q.admit("a", "s3", 5).is_ok());
        assert_eq!(q.usage("a").sessions, 2);
    }

    #[test]
    fn declared_bytes_past_the_budget_are_507() {
        let mut q = quotas(100, 100);
        q.admit("a", "s1", 60).unwrap();
        let err = q.admit("a", "s2", 41).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code(), err.inner_code()),
            (507, "quotaLimitReached", Some("declaredBytesLimitReached"))
        );
        assert_eq!(err.retry_after_secs(), None);
        q.admit("a", "s2", 40).unwrap();
        assert_eq!(q.usage("a").declared_bytes, 100);
        // One session larger than the whole budget never fits.
        let mut empty = quotas(100, 100);
        assert!(empty.admit("a", "big", 101).is_err());
        assert_eq!(empty.total(), Usage::default(), "a refusal counts nothing");
    }

    #[test]
    fn release_is_idempotent_and_keys_leave_with_their_last_session() {
        let mut q = quotas(10, 1000);
        q.admit("a", "s1", 7).unwrap();
        q.admit("a", "s1", 7).unwrap();
        assert_eq!(q.usage("a").sessions, 1, "a session is counted once");
        assert!(q.release("s1"));
        assert!(!q.release("s1"), "a second release changes nothing");
        assert!(!q.release("unknown"));
        assert_eq!(q.usage("a"), Usage::default());
        assert!(q.keys.is_empty() && q.sessions.is_empty());
        assert_eq!(q.total(), Usage::default());
    }

    #[test]
    fn reset_counts_what_is_open_even_past_the_limits() {
        let mut q = quotas(1, 10);
        q.admit("a", "old", 5).unwrap();
        q.reset([
            ("a".to_owned(), "s1".to_owned(), 8),
            ("a".to_owned(), "s2".to_owned(), 8),
            ("b".to_owned(), "s3".to_owned(), 1),
            ("b".to_owned(), "s3".to_owned(), 1),
        ]);
        assert_eq!(q.usage("a").sessions, 2);
        assert_eq!(q.usage("a").declared_bytes, 16);
        assert_eq!(q.usage("b").sessions, 1, "listed twice, counted once");
        assert_eq!(
            q.total(),
            Usage {
                sessions: 3,
                declared_bytes: 17
            }
        );
        assert!(!q.release("old"), "forgotten by the reset");
        assert!(q.admit("a", "s4", 1).is_err());
        q.release("s1");
        q.release("s2");
        assert!(q.admit("a", "s4", 1).is_ok());
    }
}
