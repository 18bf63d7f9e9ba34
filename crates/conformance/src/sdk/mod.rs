//! Models of the official Microsoft Graph SDKs' large-file upload tasks, and the
//! SDK × dialect matrix in `docs/PROTOCOL.md`.
//!
//! Each SDK's `LargeFileUploadTask` is written down here as a sans-IO state machine,
//! read line by line from its public source at a named commit ([`Profile`]): answers
//! in, requests out, no I/O and no clock (time is an argument). A model reproduces
//! what the SDK puts on the wire, byte for byte where it matters (the
//! `Content-Range` string, the length, which bytes of the file), how it reads each
//! answer (property casing, the `"a-b"`, `"a-"` and bare `"a"` range forms), its
//! off-by-ones, its retries, and the exception it raises when it cannot go on.
//!
//! ```text
//!   driver::run ── POST draft, createUploadSession ──► server under test
//!        │  Answer                                          ▲
//!        ▼                                                  │ Request (exactly as asked)
//!   SdkModel::start / on_answer / on_transport_error / on_wait_over / resume
//!        │
//!        └──► Step::Send(Request) | Wait(d) | Done { location } | Failed(SdkFailure)
//! ```
//!
//! Drive a model by calling [`SdkModel::start`] with the createUploadSession answer,
//! then feed it the answer to every [`Step::Send`] it returns
//! ([`SdkModel::on_answer`], or [`SdkModel::on_transport_error`] when none came) and
//! call [`SdkModel::on_wait_over`] after every [`Step::Wait`], until it returns
//! [`Step::Done`] or [`Step::Failed`]. A model never panics on a server's answer: what
//! the SDK cannot read ends in the exception the SDK would raise. After a
//! [`Step::Failed`], [`SdkModel::resume`] starts the application's way back in (the
//! SDK's own resume), driven the same way.
//!
//! Only default settings are modelled: each SDK's default chunk size (Go has none;
//! its profile says where its value comes from), its default HTTP pipeline, and the
//! authentication providers' habit of keeping the bearer token off upload hosts.
//!
//! - [`driver::run`] runs a model against a real server and judges the result.
//! - [`matrix`] names the server variants and file sizes, and renders the table.

mod dotnet;
pub mod driver;
mod go;
mod java;
mod javascript;
pub mod matrix;
mod passes;
mod php;
mod ported;
mod python;
mod retry;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub use dotnet::DotNet;
pub use go::Go;
pub use java::Java;
pub use javascript::JavaScript;
pub use php::Php;
pub use python::Python;

/// One SDK's identity: what is modelled, from which source, with which defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Profile {
    /// Short name, the matrix's row: `Python`, `JavaScript`, ….
    pub name: &'static str,
    /// The package users install, with the version the modelled commit carries.
    pub package: &'static str,
    /// The GitHub repository (`owner/name`) of the source modelled.
    pub repo: &'static str,
    /// The file holding the upload task, inside `repo`.
    pub path: &'static str,
    /// The commit of `repo` whose `path` is modelled (40 hex digits).
    pub commit: &'static str,
    /// The chunk (slice) size the model uses, in bytes.
    pub chunk: u64,
    /// Where `chunk` comes from: the SDK's default, or for Go (no default) Graph's docs.
    pub chunk_source: &'static str,
    /// What the SDK's Graph client throws on an error answer, as the application
    /// meets it when createUploadSession is refused: kiota's `ODataError`, or
    /// JavaScript's `GraphError`.
    pub client_error: &'static str,
    /// Its quirks in one line, for the matrix legend.
    pub summary: &'static str,
    /// The SDK's own issues about failures that also happen against the live
    /// service, each with what fails.
    pub live_issues: &'static [(&'static str, &'static str)],
}

/// An HTTP answer as a model reads it: status, headers (names in any case), body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Every header, in the order received; names compare case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer with `status`, `headers` and `body`.
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// A `status` answer with a JSON body and `Content-Type: application/json`.
    pub fn json(status: u16, body: &Value) -> Self {
        Self::new(
            status,
            vec![("Content-Type".into(), "application/json".into())],
            body.to_string().into_bytes(),
        )
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Content-Type` up to its first `;`, as written (no trimming, no case
    /// folding: each SDK does its own).
    pub(crate) fn media_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or(v))
    }

    /// The body as JSON, if it is JSON.
    pub(crate) fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// An HTTP method an upload task uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// A slice.
    Put,
    /// The session's status.
    Get,
    /// Cancelling the session.
    Delete,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Put => "PUT",
            Self::Get => "GET",
            Self::Delete => "DELETE",
        })
    }
}

/// Which bytes a request carries: `len` bytes of the file from `offset`, then
/// `zero_fill` zero bytes (Java's slice buffer when its stream ran dry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Body {
    /// First file byte sent.
    pub offset: u64,
    /// File bytes sent.
    pub len: u64,
    /// Zero bytes sent after them.
    pub zero_fill: u64,
}

impl Body {
    /// No body.
    pub const EMPTY: Self = Self {
        offset: 0,
        len: 0,
        zero_fill: 0,
    };

    /// `len` file bytes from `offset`.
    pub const fn file(offset: u64, len: u64) -> Self {
        Self {
            offset,
            len,
            zero_fill: 0,
        }
    }

    /// Bytes on the wire.
    pub const fn total(&self) -> u64 {
        self.len + self.zero_fill
    }
}

/// A request exactly as the SDK sends it (the `Content-Type` of a slice is always
/// `application/octet-stream`, and no SDK sends `Authorization` to an upload host).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// PUT, GET or DELETE.
    pub method: Method,
    /// The URL as the SDK builds it from the uploadUrl.
    pub url: String,
    /// The `Content-Range` header as the SDK writes it.
    pub content_range: Option<String>,
    /// The `Content-Length` the SDK declares.
    pub content_length: Option<u64>,
    /// The bytes it sends.
    pub body: Body,
}

impl Request {
    /// A slice: `PUT url` with `range` and `body`, its `Content-Length` the body's.
    pub(crate) fn put(url: &str, range: String, body: Body) -> Self {
        Self {
            method: Method::Put,
            url: url.to_owned(),
            content_range: Some(range),
            content_length: Some(body.total()),
            body,
        }
    }

    /// A status query: `GET url`.
    pub(crate) fn get(url: &str) -> Self {
        Self {
            method: Method::Get,
            url: url.to_owned(),
            content_range: None,
            content_length: None,
            body: Body::EMPTY,
        }
    }
}

/// What an SDK raises (or, for Go, returns) when the upload fails.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SdkFailure {
    /// The exception as the SDK's language prints it, e.g.
    /// `ValueError: invalid literal for int() with base 10: ''`.
    pub exception: String,
    /// A few words for the matrix, e.g. `ValueError on range "5242880-" (int(''))`.
    pub short: String,
    /// The SDK's own issue when this is a known bug that also happens against the
    /// live service, e.g. `microsoftgraph/msgraph-sdk-java#2581`.
    pub issue: Option<&'static str>,
}

impl SdkFailure {
    /// A failure with its full and short texts.
    pub fn new(exception: impl Into<String>, short: impl Into<String>) -> Self {
        Self {
            exception: exception.into(),
            short: short.into(),
            issue: None,
        }
    }

    upsession_core::setters! {
        /// The same failure, known as the SDK's `issue`.
        with_issue(issue: &'static str) => issue = Some(issue);
    }
}

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.exception)?;
        if let Some(issue) = self.issue {
            write!(f, " ({issue})")?;
        }
        Ok(())
    }
}

/// What a model wants next.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Send this request and report its answer with [`SdkModel::on_answer`] (or
    /// [`SdkModel::on_transport_error`]).
    Send(Request),
    /// The SDK sleeps this long; then call [`SdkModel::on_wait_over`].
    Wait(Duration),
    /// The SDK returns normally. `location` is what its result names as the
    /// uploaded item, if anything.
    Done {
        /// The result's location (a `Location` header, or Python's uploadUrl).
        location: Option<String>,
    },
    /// The SDK raises (or reports failure).
    Failed(SdkFailure),
}

impl Step {
    /// Fails with `exception` and `short`.
    pub(crate) fn fail(exception: impl Into<String>, short: impl Into<String>) -> Self {
        Self::Failed(SdkFailure::new(exception, short))
    }
}

/// One SDK's upload task, sans IO. See the [module documentation](self) for the
/// order of calls.
pub trait SdkModel: Send {
    /// What this model is, and from which source.
    fn profile(&self) -> &'static Profile;

    /// Starts the upload of a `file_size`-byte file, given the createUploadSession
    /// answer and the time. The application's Graph client reads the answer first:
    /// a refusal, or a body that is not JSON, throws [`Profile::client_error`] before
    /// any upload task exists; otherwise the task begins ([`SdkModel::begin`]).
    fn start(&mut self, now: SystemTime, session: &Answer, file_size: u64) -> Step {
        let Some(json) = session.json_body().filter(|_| session.is_success()) else {
            let error = self.profile().client_error;
            return Step::fail(
                format!("{error}: createUploadSession answered {}", session.status),
                format!("createUploadSession refused ({error})"),
            );
        };
        self.begin(now, &json, file_size)
    }

    /// The SDK's upload task, made from `session` (the createUploadSession
    /// answer's JSON, read as the SDK's generated session model reads it) for a
    /// `file_size`-byte file, begins at `now`: its first step. [`SdkModel::start`]
    /// calls it; call that instead.
    fn begin(&mut self, now: SystemTime, session: &Value, file_size: u64) -> Step;

    /// The answer to the request last asked for, received at `now`.
    fn on_answer(&mut self, now: SystemTime, answer: &Answer) -> Step;

    /// The request last asked for got no answer (connection refused, reset, …).
    fn on_transport_error(&mut self, what: &str) -> Step;

    /// The last [`Step::Wait`] is over.
    fn on_wait_over(&mut self) -> Step;

    /// After a [`Step::Failed`] (a dropped connection, say), the application resumes
    /// the upload by the SDK's own means, and this is its first step; drive it as
    /// after [`SdkModel::start`].
    ///
    /// JavaScript's `resume()`, .NET's `ResumeAsync`, Java's `resume()` and Go's
    /// `Resume` ask the session (`GET uploadUrl`) and upload what it expects.
    /// Python's and PHP's `resume()` take an in-memory session instead, so the
    /// application asks `GET uploadUrl` itself, builds the SDK's session model from
    /// the answer (keeping the uploadUrl, which a status answer need not carry), and
    /// resumes a new task on the same stream, as
    /// `crates/cli/tests/interop/msgraph_upload.py` does.
    fn resume(&mut self) -> Step;
}

/// A constructor of every SDK's model, in the matrix's order.
pub fn factories() -> [fn() -> Box<dyn SdkModel>; 6] {
    [
        || Box::new(Python::new()),
        || Box::new(JavaScript::new()),
        || Box::new(DotNet::new()),
        || Box::new(Java::new()),
        || Box::new(Go::new()),
        || Box::new(Php::new()),
    ]
}

/// A fresh model of every SDK, in the matrix's order.
pub fn models() -> Vec<Box<dyn SdkModel>> {
    factories().iter().map(|new| new()).collect()
}

/// A file read through a stream with a position, as Python's `BytesIO`, PHP's
/// Guzzle stream and Java's `InputStream` are: reads start where the last ended
/// unless the SDK seeks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stream {
    pos: u64,
    size: u64,
}

impl Stream {
    pub(crate) fn new(size: u64) -> Self {
        Self { pos: 0, size }
    }

    pub(crate) fn seek(&mut self, to: u64) {
        self.pos = to;
    }

    /// Reads up to `n` bytes (fewer at the end of the file).
    pub(crate) fn read(&mut self, n: u64) -> Body {
        let len = n.min(self.size.saturating_sub(self.pos));
        let body = Body::file(self.pos.min(self.size), len);
        self.pos += len;
        body
    }

    /// Reads everything left (Python's `read(-1)`).
    pub(crate) fn read_rest(&mut self) -> Body {
        self.read(u64::MAX)
    }
}

/// The value of property `name` of a JSON object, matched exactly (kiota's
/// generated models in Python, Java, Go and PHP); `None` when absent.
pub(crate) fn field<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    object.as_object()?.get(name)
}

/// A JSON value as a list of strings, as kiota's `getCollectionOfPrimitiveValues`
/// returns it: `None` for null or a non-array; numbers and other scalars as text.
pub(crate) fn strings(value: &Value) -> Option<Vec<String>> {
    let items = value.as_array()?;
    Some(items.iter().map(text_of).collect())
}

/// A JSON scalar as its text (a string without quotes).
pub(crate) fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `nextExpectedRanges` entry for a short message, quoted.
pub(crate) fn quoted(range: &str) -> String {
    let shown: String = range.chars().take(40).collect();
    format!("{shown:?}")
}
