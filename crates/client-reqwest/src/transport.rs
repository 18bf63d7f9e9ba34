//! The HTTP requests themselves: sending, streaming a fragment from a reader, and
//! turning what came back into what the planner reads (an `http::Response` with its
//! whole body, or a [`TransportError`]).

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{self, Either};
use http::header::{CONTENT_LENGTH, CONTENT_RANGE};
use reqwest::Url;
use tokio::sync::mpsc;
use upsession_core::ContentRange;
use upsession_core::planner::{PlannerConfig, TransportError};

use crate::auth::SharedToken;
use crate::error::{Error, Result, connect_cause, describe_reqwest, is_tls_failure};
use crate::pacing::Pacer;
use crate::resume::{FileHashing, StateStore};
use crate::source::{FragmentSource, Sink};
use upsession_core::redact::{RedactedUrl, UploadUrl};
use upsession_core::target::User;

/// Largest answer body read; Graph's answers are a few hundred bytes.
const MAX_ANSWER: usize = 1 << 20;

/// What a request came back with.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An answer: status, headers, whole body.
    Answer(http::Response<Bytes>),
    /// No answer, and why (already redacted).
    NoAnswer(TransportError, String),
}

/// What every request of a [`crate::Client`] shares: the HTTP client, where Graph
/// is, the token, and the upload policy.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) token: Option<SharedToken>,
    pub(crate) user: User,
    pub(crate) planner: PlannerConfig,
    pub(crate) random_jitter: bool,
    pub(crate) concurrency: usize,
    pub(crate) pacer: Option<Pacer>,
    /// Files smaller than this are attached with one `POST`.
    pub(crate) small_file_limit: u64,
    pub(crate) request_timeout: Duration,
    pub(crate) states: Option<StateStore>,
}

impl Inner {
    /// Sends a request with no streamed body and reads the whole answer.
    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let _slot = match &self.pacer {
            Some(p) => Some(p.request_slot().await),
            None => None,
        };
        let request = request
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| Error::InvalidInput(describe_reqwest(e)))?;
        let url = request.url().to_string();
        match self.http.execute(request).await {
            Ok(response) => Ok(read_answer(response).await),
            Err(e) => no_answer(e, &url),
        }
    }

    /// `PUT {uploadUrl}` with the bytes of `range`, streamed from `bytes`: never more
    /// than a few chunks of the fragment are in memory. No `Authorization` header.
    ///
    /// The source is read while the request is sent, and only until the request
    /// ends, so a later fragment never shares a reader with an earlier one (a
    /// file's reads are at offsets, into buffers of their own; the next
    /// fragment's first chunk is read ahead).
    /// `on_sent` is told the bytes of the fragment handed to the connection so far,
    /// each time the body gives it more.
    pub(crate) async fn put_fragment<S: FragmentSource>(
        &self,
        upload_url: &UploadUrl,
        range: ContentRange,
        bytes: &mut S,
        source: &Path,
        on_sent: impl Fn(u64) + Send + Sync + 'static,
        hashing: Option<&FileHashing>,
    ) -> Result<Reply> {
        let start = range.range().start();
        let len = range.range().len();
        bytes
            .prepare(start)
            .await
            .map_err(|e| Error::io("seek in", source, e))?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        // Counted as the connection takes each chunk, not as the file is read.
        let on_sent = std::sync::Arc::new(on_sent);
        let body = futures_util::stream::unfold((rx, 0_u64), move |(mut rx, mut sent)| {
            let on_sent = std::sync::Arc::clone(&on_sent);
            async move {
                let item = rx.recv().await?;
                if let Ok(bytes) = &item {
                    sent += bytes.len() as u64;
                    on_sent(sent);
                }
                Some((item, (rx, sent)))
            }
        });
        let body = reqwest::Body::wrap_stream(body);
        let request = self
            .http
            .put(upload_url.expose_secret())
            .header(CONTENT_RANGE, range.to_string())
            .header(CONTENT_LENGTH, len)
            .timeout(self.request_timeout)
            .body(body);

        let _slot = match &self.pacer {
            Some(p) => Some(p.request_slot().await),
            None => None,
        };
        tracing::debug!(url = %upload_url, range = %range, "PUT fragment");
        let mut send = std::pin::pin!(request.send());
        let tap = hashing.filter(|h| h.wants_chunks()).map(|h| (h, start));
        let mut pump = std::pin::pin!(bytes.pump(start, len, Sink { body: tx, tap }));
        // The answer may come before the whole body was taken (a refusal): the
        // pump is then left where it is.
        let (sent, pumped) = match future::select(&mut send, &mut pump).await {
            Either::Left((sent, _)) => (sent, None),
            Either::Right((pumped, _)) => (send.await, Some(pumped)),
        };
        if let Some(Err(e)) = pumped {
            return Err(Error::reading(source, e));
        }
        match sent {
            Ok(response) => Ok(read_answer(response).await),
            Err(e) => no_answer(e, upload_url.expose_secret()),
        }
    }
}

/// Reads a whole answer. A body that breaks off is a lost answer: the request may
/// have been acted on.
async fn read_answer(mut response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER {
                    return Reply::NoAnswer(
                        TransportError::Lost,
                        format!("the answer's body is larger than {MAX_ANSWER} bytes"),
                    );
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Reply::NoAnswer(TransportError::Lost, describe_reqwest(e)),
        }
    }
    let mut answer = http::Response::new(Bytes::from(body));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Reply::Answer(answer)
}

/// Classifies a failed request to `url`: nothing sent (connect; the reason is the
/// cause in a few words), maybe acted on (anything later), or an error no retry can
/// fix (a refused redirect, a bad request, a TLS handshake).
fn no_answer(e: reqwest::Error, url: &str) -> Result<Reply> {
    if e.is_redirect() {
        return Err(Error::Http(describe_reqwest(e)));
    }
    if e.is_builder() {
        return Err(Error::InvalidInput(describe_reqwest(e)));
    }
    // A TLS handshake that fails (wrong scheme, untrusted certificate) fails the
    // same way on every retry.
    if e.is_connect() && is_tls_failure(&e) {
        return Err(Error::Unreachable {
            url: RedactedUrl(url).to_string(),
            cause: connect_cause(&e),
        });
    }
    if e.is_connect() {
        return Ok(Reply::NoAnswer(TransportError::NotSent, connect_cause(&e)));
    }
    Ok(Reply::NoAnswer(TransportError::Lost, describe_reqwest(e)))
}
