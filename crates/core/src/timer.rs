//! A table of deadlines keyed by session: the plain-data timer of a session store.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::SystemTime;

/// Deadlines for many keys; the driver sleeps until [`Timers::poll_timeout`] and
/// then takes the due keys with [`Timers::expired`].
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use upsession_core::timer::Timers;
///
/// let t = |s| UNIX_EPOCH + Duration::from_secs(s);
/// let mut timers = Timers::new();
/// timers.set("a", t(10));
/// timers.set("b", t(5));
/// timers.set("b", t(20)); // moved, not added
/// assert_eq!(timers.poll_timeout(), Some(t(10)));
/// assert_eq!(timers.expired(t(15)), vec!["a"]);
/// assert_eq!(timers.poll_timeout(), Some(t(20)));
/// ```
#[derive(Debug, Clone)]
pub struct Timers<K> {
    by_deadline: BTreeSet<(SystemTime, K)>,
    by_key: HashMap<K, SystemTime>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Self {
            by_deadline: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Timers<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or moves) the deadline of `key`.
    pub fn set(&mut self, key: K, deadline: SystemTime) {
        if let Some(old) = self.by_key.insert(key.clone(), deadline) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((deadline, key));
    }

    /// Removes the deadline of `key`, if any.
    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_deadline.remove(&(old, key.clone()));
        }
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// Removes and returns the keys whose deadline is at or before `now`, earliest first.
    pub fn expired(&mut self, now: SystemTime) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((t, _)) = self.by_deadline.first() {
            if *t > now {
                break;
            }
            let (_, key) = self.by_deadline.pop_first().expect("first exists");
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// Number of keys with a deadline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
