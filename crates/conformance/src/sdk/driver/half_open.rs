//! What a half-open fragment PUT leaves behind: its body, which gives the bytes
//! it was handed and then nothing ([`Stalling`]), and the request, held with its
//! connection ([`Held`]) until the end of the run lets it go ([`release`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::refusal;
use crate::sdk::Answer;

/// How long the end of a run waits for the answer to a half-open request that has
/// none yet: one sent when a retry took over has long arrived.
const GRACE: Duration = Duration::from_secs(1);

/// A half-open request, held until the run ends.
#[derive(Debug)]
pub(super) struct Held {
    /// Its answer, if the server ever sends one.
    pub(super) answer: JoinHandle<Result<Answer, String>>,
    /// Dropped, it makes the body fail, and the client closes the connection.
    pub(super) cut: oneshot::Sender<()>,
}

/// At the end of a run: what each half-open request was answered, then its
/// connection is closed.
pub(super) async fn release(held: Vec<Held>) -> Vec<Option<String>> {
    let mut answers = Vec::with_capacity(held.len());
    for Held { mut answer, cut } in held {
        let got = tokio::time::timeout(GRACE, &mut answer).await;
        drop(cut);
        answer.abort();
        answers.push(match got {
            Ok(Ok(Ok(a))) => Some(refusal(&a)),
            Ok(Ok(Err(e))) => Some(format!("no answer: {e}")),
            Ok(Err(_)) | Err(_) => None,
        });
    }
    answers
}

/// The body of a half-open request: the bytes given, then nothing until `cut`
/// fires or is dropped, when it fails.
#[derive(Debug)]
pub(super) struct Stalling {
    pub(super) sent: Option<Bytes>,
    /// Told when the client asks for more than `sent`: it has taken those bytes.
    pub(super) stalled: Option<oneshot::Sender<()>>,
    pub(super) cut: oneshot::Receiver<()>,
    pub(super) declared: u64,
}

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(bytes) = this.sent.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(stalled) = this.stalled.take() {
            let _ = stalled.send(());
        }
        match Pin::new(&mut this.cut).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Some(Err(std::io::Error::other("the run is over")))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.declared)
    }
}
