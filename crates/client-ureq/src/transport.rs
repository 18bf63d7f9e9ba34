//! One request on the wire with ureq: sending, streaming a fragment from a reader,
//! and turning the answer into what the planner reads (`http::Response` with its
//! whole body, or a `TransportError` the planner classifies).

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE};
use upsession_client_shared::{Error, FileHashing, Result};
use upsession_core::ContentRange;
use upsession_core::planner::TransportError;
use upsession_core::redact::{RedactedUrl, UploadUrl, redact};

use crate::cancel::CancelToken;

/// Largest answer body read; Graph's answers are a few hundred bytes.
const MAX_ANSWER: u64 = 1 << 20;

/// What a request came back with.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An answer: status, headers, whole body.
    Answer(http::Response<Vec<u8>>),
    /// No answer, and why (already redacted).
    NoAnswer(TransportError, String),
}

/// Sends `request` on `agent` and reads the whole answer. Only a TLS failure (which
/// no retry fixes) is an error; everything else is a [`Reply`].
pub(crate) fn send<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    request: http::Request<B>,
) -> Result<Reply> {
    let url = request.uri().to_string();
    match agent.run(request) {
        Ok(response) => Ok(read_answer(response)),
        Err(e) => no_answer(&e, &url),
    }
}

/// Where a fragment's bytes come from: the reader, the path its errors name, and
/// the file's hash (offered each chunk read, so the file is read once).
pub(crate) struct Source<'a, R> {
    pub(crate) reader: &'a mut R,
    pub(crate) path: &'a Path,
    pub(crate) hashing: Option<&'a FileHashing>,
}

/// `PUT {uploadUrl}` with the bytes of `range`, streamed from `source` (never the
/// whole fragment in memory) and no `Authorization`. `on_sent` is told the
/// fragment's bytes handed to the connection so far; `cancel` abandons the body.
pub(crate) fn put_fragment<R: Read + Seek>(
    agent: &ureq::Agent,
    upload_url: &UploadUrl,
    range: ContentRange,
    Source {
        reader,
        path: source,
        hashing,
    }: Source<'_, R>,
    mut on_sent: impl FnMut(u64),
    cancel: Option<&CancelToken>,
) -> Result<Reply> {
    let len = range.range().len();
    reader
        .seek(SeekFrom::Start(range.range().start()))
        .map_err(|e| Error::io("seek in", source, e))?;
    let mut body = Counted {
        inner: reader.take(len),
        sent: 0,
        on_sent: &mut on_sent,
        cancel,
        error: None,
        tap: hashing
            .filter(|h| h.wants_chunks())
            .map(|h| (h, range.range().start())),
    };
    let request = http::Request::put(upload_url.expose_secret())
        .header(CONTENT_RANGE, range.to_string())
        .header(CONTENT_LENGTH, len)
        .body(ureq::SendBody::from_reader(&mut body))
        .map_err(|e| Error::InvalidInput(redact(&e.to_string())))?;
    tracing::debug!(url = %upload_url, range = %range, "PUT fragment");
    let reply = send(agent, request)?;
    if let Some(e) = body.error.take() {
        return Err(Error::reading(source, e));
    }
    Ok(reply)
}

/// A fragment's body: counts what the connection takes, fails on a short source
/// (so that a short fragment is never sent whole) and stops when cancelled.
struct Counted<'a, R, F> {
    inner: io::Take<R>,
    sent: u64,
    on_sent: &'a mut F,
    cancel: Option<&'a CancelToken>,
    /// The source's own failure, kept for the caller.
    error: Option<io::Error>,
    /// The file's hash, offered each chunk read (so the file is read once), and
    /// the fragment's first byte in the file.
    tap: Option<(&'a FileHashing, u64)>,
}

impl<R: Read, F: FnMut(u64)> Read for Counted<'_, R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_some_and(CancelToken::is_cancelled) {
            // Not `Interrupted`, which readers retry: the body must end here.
            return Err(io::Error::other("the upload was cancelled"));
        }
        let wanted = self.inner.limit();
        let n = match self.inner.read(buf) {
            Ok(0) if wanted > 0 => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the source ended early");
                self.error = Some(io::Error::new(e.kind(), "the source ended early"));
                return Err(e);
            }
            Ok(n) => n,
            Err(e) => {
                let kept = io::Error::new(e.kind(), e.to_string());
                self.error = Some(kept);
                return Err(e);
            }
        };
        if let Some((hashing, start)) = self.tap {
            hashing.offer(start + self.sent, Box::new(buf[..n].to_vec()));
        }
        self.sent += n as u64;
        (self.on_sent)(self.sent);
        Ok(n)
    }
}

/// Reads a whole answer. A body that breaks off is a lost answer: the request may
/// have been acted on.
fn read_answer(response: http::Response<ureq::Body>) -> Reply {
    let (parts, mut body) = response.into_parts();
    match body.with_config().limit(MAX_ANSWER).read_to_vec() {
        Ok(bytes) => Reply::Answer(http::Response::from_parts(parts, bytes)),
        Err(e) => Reply::NoAnswer(TransportError::Lost, describe(&e)),
    }
}

/// Classifies a failed request to `url`: nothing sent (resolving or connecting
/// failed), maybe acted on (anything later), or an error no retry can fix (TLS).
fn no_answer(e: &ureq::Error, url: &str) -> Result<Reply> {
    use ureq::Error as E;
    use ureq::Timeout as T;
    let not_sent = match e {
        E::HostNotFound | E::ConnectionFailed | E::Timeout(T::Resolve | T::Connect) => true,
        E::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable
        ),
        E::Tls(_) | E::Rustls(_) => {
            return Err(Error::Unreachable {
                url: RedactedUrl(url).to_string(),
                cause: format!("TLS handshake failed: {}", describe(e)),
            });
        }
        _ => false,
    };
    let kind = if not_sent {
        TransportError::NotSent
    } else {
        TransportError::Lost
    };
    Ok(Reply::NoAnswer(kind, describe(e)))
}

/// A ureq error as text, any URL in it redacted.
pub(crate) fn describe(e: &ureq::Error) -> String {
    let text = match e {
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        ureq::Error::HostNotFound => "unknown host".to_owned(),
        other => other.to_string(),
    };
    if text.contains('?') {
        redact(&text)
    } else {
        text
    }
}
