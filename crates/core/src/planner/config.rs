//! How the planner paces and bounds an upload.

use std::time::Duration;

/// 320 KiB: OneDrive wants fragments in multiples of it, and it is the smallest
/// fragment the planner shrinks to after a 413.
pub const FRAGMENT_QUANTUM: u64 = 320 * 1024;

/// The default fragment: 12 × 320 KiB = 3,932,160 bytes, under 4 MB on either
/// reading of "MB" and legal for OneDrive sessions too.
pub const DEFAULT_FRAGMENT_SIZE: u64 = 12 * FRAGMENT_QUANTUM;

/// How the planner paces and bounds an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannerConfig {
    /// Bytes per `PUT`.
    pub fragment_size: u64,
    /// Consecutive failed requests without progress before giving up.
    pub max_attempts: u32,
    /// Total time allowed from the first `next` call; `None` for no limit.
    pub deadline: Option<Duration>,
    /// First backoff ceiling; doubles with each consecutive failure.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Seed of the jitter generator, so a run can be replayed.
    pub jitter_seed: u64,
}

impl PlannerConfig {
    crate::const_setters! {
        /// Sets the bytes per `PUT`.
        with_fragment_size(fragment_size: u64);
        /// Sets how many consecutive failures without progress are tolerated.
        with_max_attempts(max_attempts: u32);
        /// Sets the total time allowed (`None`: no limit).
        with_deadline(deadline: Option<Duration>);
        /// Sets the first and the largest backoff ceilings.
        with_backoff(backoff_base: Duration, backoff_max: Duration);
        /// Sets the seed of the jitter generator.
        with_jitter_seed(jitter_seed: u64);
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            fragment_size: DEFAULT_FRAGMENT_SIZE,
            max_attempts: 10,
            deadline: Some(Duration::from_secs(6 * 60 * 60)),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            jitter_seed: 0x5eed,
        }
    }
}
