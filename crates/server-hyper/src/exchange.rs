//! The vocabulary of one request and its answer, shared by the Graph front-end and
//! the layers around it: body types, request ids, error answers, and reading bodies.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use upsession_core::error::{CreateError, FragmentError, RequestError};
use upsession_core::respond;

use crate::engine::{Failure, fail};

/// Largest JSON body accepted on Graph routes.
const MAX_JSON_BODY: usize = 64 * 1024;

/// After refusing a fragment from its headers, read (and drop) at most this much
/// of its body, so that a client still sending reads the answer instead of a reset.
const LINGER_MAX: u64 = 16 * 1024 * 1024;

/// A request body inside the stack: any body, its errors as `io::Error` (a concrete
/// type: a boxed `dyn Error` here trips the compiler's `Send` checks of futures).
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;
/// A response body: whole buffers or an attachment's stream.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, std::io::Error>;
/// Any error.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request's id: in its answer's `request-id` header, its error JSON and its logs.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestId(pub(crate) String);

/// The "app" of Graph's per-app limits: a short digest of the bearer token.
#[derive(Clone, Debug, Default)]
pub(crate) struct App(pub(crate) String);

/// The client address of the connection a request came on (`Server` sets it; an
/// embedder's server may not, and then nothing is taken to be loopback).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// On a response: the connection is to be dropped instead of answered (a `reset` or
/// `lost` fault). `Server::start` does so; an embedder's server answers it as is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// A whole-buffer answer as the response body type.
pub(crate) fn full(res: Response<Vec<u8>>) -> Response<ResBody> {
    res.map(|b| {
        Full::new(Bytes::from(b))
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

/// Graph's error JSON for `err`, answering the request `id`.
pub(crate) fn error_response(err: &Failure, id: &RequestId) -> Response<ResBody> {
    let mut res = full(respond::error(&**err, &id.0, SystemTime::now()));
    res.extensions_mut().insert(ErrorCode(err.detail()));
    res
}

/// The Graph code of an error answer, for metrics and logs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    let mut res = Response::new(body.as_bytes().to_vec());
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// `Content-Length`, strictly: absent, or digits (as HTTP allows no other form).
pub(crate) fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, Failure> {
    let Some(value) = headers.get(CONTENT_LENGTH) else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok());
    parsed.map(Some).ok_or_else(|| {
        fail(RequestError::InvalidBody(
            "Content-Length is not a number".into(),
        ))
    })
}

/// Reads a small JSON body, refusing one over the limit.
pub(crate) async fn read_json_body(
    req: Request<ReqBody>,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    read_json_body_up_to(req, timeout, MAX_JSON_BODY).await
}

/// Reads a JSON body of at most `max` bytes (a small file's `contentBytes` make
/// one of a few MB).
pub(crate) async fn read_json_body_up_to(
    req: Request<ReqBody>,
    timeout: Duration,
    max: usize,
) -> Result<Bytes, Failure> {
    let limited = http_body_util::Limited::new(req.into_body(), max);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(fail(RequestError::Timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(fail(RequestError::BodyTooLarge { max: max as u64 }))
        }
        Ok(Err(e)) => Err(fail(CreateError::InvalidBody(e.to_string()))),
    }
}

/// How long the server waits on request bodies, from [`Config`](crate::Config).
/// Every wait has a bound in all, not only between two pieces: a body trickled a
/// byte at a time must not hold its connection for days.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyTimeouts {
    /// Longest pause between two pieces of a body.
    pub(crate) idle: Duration,
    /// Longest a refused request's body is read, in all, after its answer.
    pub(crate) linger: Duration,
    /// Longest a fragment's body may take in all, stored or re-sent.
    pub(crate) fragment: Duration,
}

impl From<&crate::Config> for BodyTimeouts {
    fn from(config: &crate::Config) -> Self {
        Self {
            idle: config.body_idle_timeout,
            linger: config.drain_timeout,
            fragment: config.fragment_timeout,
        }
    }
}

/// After refusing a fragment from its headers, reads and discards its body (up to
/// a size and [`BodyTimeouts::linger`]) in the background, so that the client,
/// still sending, reads our answer instead of a connection reset (RFC 9112 §9.6).
/// Nothing is stored.
pub(crate) fn linger(body: ReqBody, headers: &http::HeaderMap, timeouts: BodyTimeouts) {
    let announced = content_length(headers).ok().flatten();
    if announced.is_none_or(|n| n > LINGER_MAX) {
        return; // too much to be worth reading: close instead
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let _ = tokio::time::timeout(timeouts.linger, async {
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(timeouts.idle, body.frame()).await
            {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > LINGER_MAX {
                    break;
                }
            }
        })
        .await;
    });
}

/// Reads and discards a body that must be `expected` bytes long (a re-sent
/// fragment's), waiting at most `idle` for each piece and `total` in all.
pub(crate) async fn drain_exact(
    mut body: ReqBody,
    expected: u64,
    idle: Duration,
    total: Duration,
) -> Result<(), Failure> {
    let mut got = 0u64;
    let read = async {
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(fail(RequestError::Timeout)),
                Ok(None) => return Ok(()),
                Ok(Some(Err(_))) => {
                    return Err(fail(FragmentError::BodyLength { expected, got }));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(chunk) = frame.into_data() {
                        got += chunk.len() as u64;
                        if got > expected {
                            return Err(fail(FragmentError::BodyLength { expected, got }));
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(total, read)
        .await
        .map_err(|_| fail(RequestError::Timeout))??;
    if got == expected {
        Ok(())
    } else {
        Err(fail(FragmentError::BodyLength { expected, got }))
    }
}
