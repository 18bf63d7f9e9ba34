//! Progress reports: a callback, a `Stream` of events, or both.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
pub use upsession_client_shared::{ProgressEvent, ProgressKind};

type Callback = dyn Fn(&ProgressEvent) + Send + Sync;

/// Where an upload reports its progress: nowhere (the default), a callback, a
/// channel read as a [`ProgressStream`], or a callback and a channel.
///
/// Cheap to clone; clones report to the same places, so one sink can serve many
/// uploads (tell them apart by [`ProgressEvent::label`]).
#[derive(Clone, Default)]
pub struct ProgressSink {
    callback: Option<Arc<Callback>>,
    sender: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl ProgressSink {
    /// Reports nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    /// Calls `f` with every event, on the task that runs the upload: keep it quick.
    pub fn callback(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Arc::new(f)),
            sender: None,
        }
    }

    /// A sink and the stream of its events. The stream ends when every clone of the
    /// sink is dropped (when the uploads given it have finished and been dropped).
    pub fn channel() -> (Self, ProgressStream) {
        Self::none().with_channel()
    }

    /// This sink, also sending every event to a new stream.
    pub fn with_channel(mut self) -> (Self, ProgressStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sender = Some(tx);
        (self, ProgressStream { rx })
    }

    /// This sink, also calling `f` (in place of any callback it had).
    #[must_use]
    pub fn with_callback(mut self, f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(f));
        self
    }

    pub(crate) fn emit(&self, label: &Arc<str>, kind: ProgressKind) {
        if self.callback.is_none() && self.sender.is_none() {
            return;
        }
        let event = ProgressEvent::new(Arc::clone(label), kind);
        if let Some(callback) = &self.callback {
            callback(&event);
        }
        if let Some(sender) = &self.sender {
            // A dropped stream means nobody listens any more; that is fine.
            let _ = sender.send(event);
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressSink")
            .field("callback", &self.callback.is_some())
            .field("channel", &self.sender.is_some())
            .finish()
    }
}

/// The events of a [`ProgressSink::channel`], as a `Stream`.
#[derive(Debug)]
pub struct ProgressStream {
    rx: mpsc::UnboundedReceiver<ProgressEvent>,
}

impl Stream for ProgressStream {
    type Item = ProgressEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
