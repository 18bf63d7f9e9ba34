//! Python's upload task as PHP ported it: msgraph-sdk-php-core's
//! `LargeFileUploadTask` copies msgraph-core's (Python) line for line, so the two
//! models share the task's state ([`Task`]), the range logic of `next_chunk` /
//! `nextChunk`, and the application's way back in through `resume()`.
//!
//! What PHP changed is a [`Port`], one per model, given to every call: the chunk
//! (5 MiB, 4 MiB), the iteration budget (`int(S / C + 0.5)`, `ceil(S / C)`), how
//! the stream reads a negative length (`BytesIO` reads to the end, Guzzle throws),
//! and the exceptions' names. How a range's halves are read (`int()` raises,
//! `intval` never does) and everything about answers stay in the models.

use serde_json::Value;

use super::{Answer, Body, Request, SdkFailure, Step, Stream, field};

/// What one of the two SDKs does where the other does otherwise.
#[derive(Debug)]
pub(crate) struct Port {
    /// `max_chunk_size` / `$maxChunkSize`.
    pub(crate) chunk: u64,
    /// The constructor's `self.chunks` / `$this->chunks` for a file of `size` bytes.
    pub(crate) budget: fn(u64) -> i64,
    /// The stream's read of a signed length: `BytesIO.read(n)` or Guzzle's
    /// `Stream::read($length)`.
    pub(crate) read: fn(&mut Stream, i128) -> Result<Body, Step>,
    /// What `get_validated_upload_url` / `getValidatedUploadUrl` raises:
    /// `RuntimeError`, `RuntimeException`.
    pub(crate) runtime_error: &'static str,
    /// What the JSON parser raises on a status answer that is not JSON: the
    /// exception, and a few words.
    pub(crate) unreadable: [&'static str; 2],
}

/// The task between calls: what the constructor sets and `upload()` moves on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Task {
    /// The session's uploadUrl; empty when it was missing or blank.
    pub(crate) upload_url: String,
    /// The file's size, from the stream.
    pub(crate) size: u64,
    /// The stream the caller gave, with its position.
    pub(crate) stream: Stream,
    /// `self.chunks` / `$this->chunks`: the iteration budget.
    pub(crate) chunks: i64,
}

impl Task {
    /// The constructor on the createUploadSession `session`, with a fresh stream
    /// of `size` bytes.
    pub(crate) fn new(session: &Value, size: u64, port: &Port) -> Self {
        let url = field(session, "uploadUrl").and_then(Value::as_str);
        Self {
            upload_url: url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or("")
                .to_owned(),
            size,
            stream: Stream::new(size),
            chunks: (port.budget)(size),
        }
    }

    /// `get_validated_upload_url` / `getValidatedUploadUrl`: `The upload URL
    /// cannot be empty.`
    pub(crate) fn check_url(&self, port: &Port) -> Result<(), Step> {
        if !self.upload_url.is_empty() {
            return Ok(());
        }
        let exception = port.runtime_error;
        Err(Step::fail(
            format!("{exception}: The upload URL cannot be empty."),
            format!("{exception}: no uploadUrl"),
        ))
    }

    /// The application's resume on the answer to its `GET uploadUrl` (`resume()`
    /// takes a session object and never asks the server itself): the session the
    /// SDK's JSON parser reads from a 200, and a new task on the same stream, wherever
    /// it stands, with a fresh budget. The model's other state is all set again
    /// before it is read: `resume()` names the range, `upload()` sends it.
    pub(crate) fn renew(&mut self, answer: &Answer, port: &Port) -> Result<Value, Step> {
        if answer.status != 200 {
            return Err(Step::fail(
                format!("the application's GET uploadUrl answered {}", answer.status),
                "GET uploadUrl refused",
            ));
        }
        let [exception, short] = port.unreadable;
        let session = answer
            .json_body()
            .ok_or_else(|| Step::Failed(SdkFailure::new(exception, short)))?;
        self.chunks = (port.budget)(self.size);
        Ok(session)
    }

    /// `upload()` up to its first `next_chunk`: the stream rewound, and the end of
    /// the first chunk's range (`0` to `min(C, S) - 1`).
    pub(crate) fn rewind(&mut self, port: &Port) -> u64 {
        self.stream.seek(0);
        port.chunk.min(self.size).saturating_sub(1)
    }

    /// The range logic of `next_chunk` (Python, lines 150-184) and `nextChunk`
    /// (PHP) on `start` and `end`, the halves of the next range as the SDK's parser
    /// read them (a missing end is 0). Two branches read from wherever the stream
    /// is, without seeking; a closed range sends one byte more than the chunk.
    pub(crate) fn chunk(&mut self, port: &Port, start: i128, end: i128) -> Result<Request, Step> {
        let (c, s) = (i128::from(port.chunk), i128::from(self.size));
        let mut end = end;
        let body = if start == 0 && end == 0 {
            end = (c - 1).min(s - 1);
            self.stream.read(port.chunk) // no seek: from wherever the stream is
        } else if start == 0 {
            (port.read)(&mut self.stream, end + 1)? // no seek either
        } else if end == 0 {
            self.stream.seek(offset(start));
            let body = self.stream.read(port.chunk);
            end = start + i128::from(body.len) - 1;
            body
        } else {
            self.stream.seek(offset(start));
            end = end.min(c + start); // the off-by-one: C + 1 bytes
            (port.read)(&mut self.stream, end - start + 1)?
        };
        Ok(Request::put(
            &self.upload_url,
            format!("bytes {start}-{end}/{}", self.size),
            body,
        ))
    }
}

/// A signed position or length as a stream offset (negative ones do not occur
/// after `split('-')`).
pub(crate) fn offset(n: i128) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(u64::MAX)
}
