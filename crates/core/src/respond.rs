//! Renders JSON answers and errors as `http::Response`s, the one place where a
//! status code, a header and a body are put together for the wire (upload-session
//! answers are the [`crate::Dialect`]'s, built on [`json`]).
//!
//! Adapters convert the `Vec<u8>` body into their own body type; they never build
//! an upload answer or an error answer by hand.

use std::time::SystemTime;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::error::GraphError;
use crate::wire::ErrorBody;

/// The header that carries the request id on every answer.
pub const REQUEST_ID: &str = "request-id";

const JSON: &str = "application/json";

/// A JSON answer with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Vec<u8>> {
    // Serialising our own wire types cannot fail: they hold only strings and numbers.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    res
}

/// The answer to a `DELETE` (of an uploadUrl or an attachment): exactly `204`.
pub fn deleted() -> Response<Vec<u8>> {
    let mut res = Response::new(Vec::new());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// Graph's error JSON for `err`, with its status, `request-id` header, and
/// `Retry-After` when the error carries one.
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use upsession_core::{error::RequestError, respond};
///
/// let res = respond::error(&RequestError::Throttled { retry_after_secs: 5 }, "r-1", UNIX_EPOCH);
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "5");
/// assert_eq!(res.headers()["request-id"], "r-1");
/// ```
pub fn error<E: GraphError + ?Sized>(
    err: &E,
    request_id: &str,
    now: SystemTime,
) -> Response<Vec<u8>> {
    let mut res = json(err.status(), &ErrorBody::new(err, request_id, now));
    if let Some(secs) = err.retry_after_secs() {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(v) = err
        .content_range()
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        res.headers_mut().insert(http::header::CONTENT_RANGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}
