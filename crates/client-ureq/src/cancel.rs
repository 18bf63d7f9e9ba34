//! [`CancelToken`]: cancelling a blocking upload from another thread.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Cancels the uploads given it ([`UploadOptions::cancel_on`](crate::UploadOptions::cancel_on))
/// from any thread: a fragment being sent is abandoned, a wait is cut short, the
/// session is deleted and the resume state removed. Clones cancel together.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every upload holding this token (or a clone).
    pub fn cancel(&self) {
        let (flag, wake) = &*self.inner;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps for `wait`, or less if cancelled meanwhile; says whether it was.
    pub(crate) fn sleep(&self, wait: Duration) -> bool {
        let (flag, wake) = &*self.inner;
        let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = wake
            .wait_timeout_while(guard, wait, |cancelled| !*cancelled)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}
