//! The pacer a reqwest client shares between its uploads: the shared budget
//! arithmetic ([`Window`]) behind a lock, and a semaphore for requests in flight.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
pub use upsession_client_shared::Pacing;
use upsession_client_shared::Window;

/// The pacer a client shares between its uploads.
#[derive(Debug)]
pub(crate) struct Pacer {
    cfg: Pacing,
    window: Mutex<Window>,
    permits: Arc<Semaphore>,
}

impl Pacer {
    pub(crate) fn new(cfg: Pacing) -> Self {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
        Self {
            cfg,
            window: Mutex::new(Window::default()),
            permits,
        }
    }

    /// A slot for one request in flight; hold it until the answer is read.
    pub(crate) async fn request_slot(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Waits until `bytes` fit in the budget and counts them. `on_wait` is told how
    /// long each wait is before it starts.
    pub(crate) async fn send_bytes(&self, bytes: u64, mut on_wait: impl FnMut(Duration)) {
        loop {
            let now = Instant::now();
            let until = self
                .window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reserve(now, bytes, self.cfg.budget_bytes, self.cfg.window);
            let Some(until) = until else { return };
            on_wait(until.saturating_duration_since(now));
            tokio::time::sleep_until(until.into()).await;
        }
    }
}
