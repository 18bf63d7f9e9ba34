//! Bytes in an S3-compatible object store (`--store s3://bucket?endpoint=…`),
//! shared by every server node.
//!
//! Fragments are at most a few MiB and S3's multipart parts must be at least
//! 5 MiB (but the last), so fragments are not parts: **each acknowledged fragment
//! is its own object**, `sessions/{session}/{start}-{end}.{attempt}` (zero-padded;
//! the attempt is the lease that wrote it), written with one `PUT` before the
//! fragment is acknowledged. The database lists the fragments a session counted
//! ([`Part`]); at completion that list becomes the attachment's manifest and
//! `$value` streams the objects in order. Nothing is copied at completion, so
//! finishing a 150 MB upload costs one metadata transaction.
//!
//! Keys are unique per attempt: a fragment re-sent, raced by another node, or
//! finished late by a holder whose lease ran out writes an object of its own, and
//! can never replace bytes already counted. Objects that were stored but never
//! counted are deleted at completion, cancellation or expiry, with the rest of
//! the session's prefix.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;
use upsession_core::ByteRange;

use serde::{Deserialize, Serialize};

use super::{AttachmentRecord, ByteStream, FragmentWriter, SessionRecord, safe};

/// An access key, where it is not taken from `AWS_*` variables.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct S3Credentials {
    pub(crate) key_id: String,
    pub(crate) secret: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// An S3 bucket.
#[derive(Debug, Clone)]
pub(crate) struct S3 {
    /// Writes, deletes, listings and probes: retried briefly ([`retry_config`]).
    store: Arc<dyn ObjectStore>,
    /// Reads of attachments, with object_store's own retries: a body streamed to
    /// a slow client and cut short (its 30 s request time-out, a reset) is picked
    /// up where it stopped by ranged GETs for up to three minutes from its start,
    /// which the brief budget would end after ten seconds.
    reader: Arc<dyn ObjectStore>,
}

/// The store's error as an `io::Error`: `NotFound` for a missing object, and
/// `ConnectionAborted` when the bucket could not be reached (the request may be
/// tried again in a moment: 503), as the database's errors say it.
fn s3_err(e: object_store::Error) -> io::Error {
    if let object_store::Error::NotFound { .. } = e {
        return io::Error::new(io::ErrorKind::NotFound, e);
    }
    let unreachable = super::any_cause(&e, out_of_reach) || unavailable_status(&e.to_string());
    let kind = if unreachable {
        io::ErrorKind::ConnectionAborted
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, format!("object store: {e}"))
}

/// [`s3_err`] for an error object_store's writer already made an `io::Error`.
fn io_s3_err(e: io::Error) -> io::Error {
    // An io::Error's own `source` skips the error it wraps: look at that too.
    let wrapped = e.get_ref().is_some_and(|inner| {
        let inner: &(dyn std::error::Error + 'static) = inner;
        super::any_cause(inner, out_of_reach)
    });
    let unreachable =
        wrapped || super::any_cause(&e, out_of_reach) || unavailable_status(&e.to_string());
    if unreachable && e.kind() != io::ErrorKind::ConnectionAborted {
        return io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("object store: {e}"),
        );
    }
    e
}

/// Whether the store's message says it answered 502, 503 or 504 after its
/// retries (Garage without a quorum of its nodes, a gateway in front of S3): a
/// bucket out of reach for now. object_store's error type for it is private, so
/// its message (`Server returned non-2xx status code: 503 …`) is what says so.
fn unavailable_status(message: &str) -> bool {
    ["502", "503", "504"]
        .iter()
        .any(|code| message.contains(&format!("non-2xx status code: {code}")))
}

/// Whether `e` itself says the bucket's endpoint could not be reached or did not
/// answer: an HTTP connection, request or time-out failure, or a socket error.
fn out_of_reach(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
        use object_store::client::HttpErrorKind;
        return matches!(
            http.kind(),
            HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
        );
    }
    super::socket_lost(e)
}

/// How the S3 client retries a failed write or listing: three more tries (their
/// backoff sleeps under a second in all), none started after ten seconds, so that
/// a bucket out of reach answers the upload's request (503, `Retry-After`) in
/// about a second when refused, or within its time-outs when silent, instead of
/// holding it for the client's default of up to three minutes.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(10),
    }
}

fn prefix(session: &str) -> io::Result<Path> {
    Ok(Path::from(format!("sessions/{}", safe(session)?)))
}

/// One counted fragment of a session in the bucket: its bytes `[start, end)` and
/// the attempt whose object holds them. Stored as `[start, end, "attempt"]`;
/// records from before attempts were named hold `[start, end]`, whose object's
/// key has no attempt.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "PartForm", into = "PartForm")]
pub(crate) struct Part {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) attempt: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum PartForm {
    Named(u64, u64, String),
    Bare([u64; 2]),
}

impl From<PartForm> for Part {
    fn from(form: PartForm) -> Self {
        match form {
            PartForm::Named(start, end, attempt) => Self {
                start,
                end,
                attempt: Some(attempt),
            },
            PartForm::Bare([start, end]) => Self {
                start,
                end,
                attempt: None,
            },
        }
    }
}

impl From<Part> for PartForm {
    fn from(part: Part) -> Self {
        match part.attempt {
            Some(attempt) => Self::Named(part.start, part.end, attempt),
            None => Self::Bare([part.start, part.end]),
        }
    }
}

/// `sessions/{session}/{start}-{end}.{attempt}` (zero-padded; no `.{attempt}`
/// for a part recorded before attempts were named).
fn part_key(session: &str, part: &Part) -> io::Result<Path> {
    let (start, end) = (part.start, part.end);
    let mut key = format!("sessions/{}/{start:020}-{end:020}", safe(session)?);
    if let Some(attempt) = &part.attempt {
        key.push('.');
        key.push_str(safe(attempt)?);
    }
    Ok(Path::from(key))
}

impl S3 {
    /// Opens `s3://BUCKET[?endpoint=URL][&region=R]`. Credentials and anything
    /// not in the URL come from the usual `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION`).
    pub(crate) fn open(url: &str, credentials: Option<&S3Credentials>) -> io::Result<Self> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{url}` is not an S3 store URL: {why}"),
            )
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("it must start with s3://"))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(invalid("it must name one bucket, as s3://BUCKET"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(c) = credentials {
            builder = builder
                .with_access_key_id(&c.key_id)
                .with_secret_access_key(&c.secret);
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            builder = match key {
                "endpoint" => builder
                    .with_allow_http(value.to_ascii_lowercase().starts_with("http://"))
                    .with_endpoint(value),
                "region" => builder.with_region(value),
                other => return Err(invalid(&format!("unknown parameter `{other}`"))),
            };
        }
        let reader = builder
            .clone()
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        let store = builder
            .with_retry(retry_config())
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            reader: Arc::new(reader),
        })
    }

    /// Checks that the bucket answers with these credentials, so that a wrong key
    /// or endpoint stops the server at start-up, not at the first fragment.
    pub(crate) async fn check(&self) -> io::Result<()> {
        match self
            .store
            .head(&Path::from("upsession-start-up-probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_err(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &Path, keep: &[Path]) -> io::Result<usize> {
        let doomed = self
            .store
            .list(Some(prefix))
            .map_ok(|m| m.location)
            .try_filter(|p| std::future::ready(!keep.contains(p)))
            .try_collect::<Vec<_>>()
            .await
            .map_err(s3_err)?;
        let n = doomed.len();
        // Batched deletes where the store has them (S3's DeleteObjects).
        let mut results = self
            .store
            .delete_stream(futures_util::stream::iter(doomed.into_iter().map(Ok)).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_err(e)),
            }
        }
        Ok(n)
    }
}

/// `%XX` escapes in a query value (an endpoint URL usually needs none).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Up to this much of a fragment is held in memory and stored with one `PUT`;
/// a larger fragment (the OneDrive dialect allows 60 MiB) streams as a multipart
/// upload in parts of this size, so memory per fragment stays bounded.
const BUFFER: usize = 8 * 1024 * 1024;

/// Streams one fragment into its object.
struct S3Writer {
    /// `None` once finished.
    writer: Option<BufWriter>,
}

#[async_trait]
impl FragmentWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("the fragment's object is finished"))?;
        writer.put(chunk).await.map_err(s3_err)
    }

    async fn finish(mut self: Box<Self>) -> io::Result<()> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        // A fragment's object is whole or absent: a failed single `PUT` leaves
        // nothing, and a multipart upload whose parts or completion failed is
        // aborted by object_store itself. (`BufWriter::abort` after a shutdown
        // began panics: it must not be called here.) In a task of its own, so
        // that a request dropped meanwhile (its client gone, a newer request)
        // does not leave a multipart upload half completed, unseen: it
        // completes (an object never counted, deleted with its session's
        // others) or is aborted.
        tokio::spawn(async move { writer.shutdown().await })
            .await
            .map_err(io::Error::other)?
            .map_err(io_s3_err)
    }
}

impl Drop for S3Writer {
    /// A fragment given up before it was finished (its client hung up, a newer
    /// request took it over, it timed out): a multipart upload begun for it is
    /// aborted, so that its parts do not stay in the bucket, unseen and paid for.
    fn drop(&mut self) {
        if let Some(mut writer) = self.writer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        }
    }
}

impl S3 {
    /// A writer for the object of one fragment of `session_id`, `part`.
    pub(crate) fn writer(
        &self,
        session_id: &str,
        part: &Part,
    ) -> io::Result<Box<dyn FragmentWriter>> {
        let key = part_key(session_id, part)?;
        Ok(Box::new(S3Writer {
            writer: Some(
                BufWriter::with_capacity(Arc::clone(&self.store), key, BUFFER)
                    .with_max_concurrency(2),
            ),
        }))
    }

    /// The ids of the sessions that have objects in the bucket.
    pub(crate) async fn session_ids(&self) -> io::Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from("sessions")))
            .await
            .map_err(s3_err)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Deletes every object of a session.
    pub(crate) async fn discard(&self, session_id: &str) -> io::Result<()> {
        self.delete_prefix(&prefix(session_id)?, &[])
            .await
            .map(drop)
    }

    /// Deletes the objects of a completed session that its record did not count.
    pub(crate) async fn promote(&self, session: &SessionRecord, parts: &[Part]) -> io::Result<()> {
        // The counted parts stay where they are; stored-but-uncounted ones go.
        let keep = parts
            .iter()
            .map(|p| part_key(&session.id, p))
            .collect::<io::Result<Vec<_>>>()?;
        self.delete_prefix(&prefix(&session.id)?, &keep)
            .await
            .map(drop)
    }

    /// The bytes `window` of an attachment, its fragment objects streamed in
    /// order, each asked only for the part of it inside the window.
    pub(crate) async fn read(
        &self,
        attachment: &AttachmentRecord,
        window: ByteRange,
    ) -> io::Result<ByteStream> {
        let session = attachment
            .session
            .clone()
            .ok_or_else(|| io::Error::other("attachment has no part list"))?;
        let mut parts = attachment.parts.clone();
        parts.sort_unstable();
        // Counted fragments never overlap, but read as if they might: each object
        // gives only the bytes after what the previous ones gave.
        let mut reads = Vec::with_capacity(parts.len());
        let mut pos = 0u64;
        for part in parts {
            let (start, end) = (part.start, part.end);
            if end <= pos {
                continue;
            }
            if start > pos {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "attachment {} misses bytes {pos}-{start}",
                        attachment.meta.id
                    ),
                ));
            }
            // This object gives the attachment's bytes pos..end: the window's
            // share of them, at their place in the object.
            let (from, to) = (pos.max(window.start()), end.min(window.end()));
            if from < to {
                reads.push((
                    part_key(&session, &part)?,
                    from - start,
                    to - start,
                    end - start,
                ));
            }
            pos = end;
        }
        if pos != attachment.meta.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "attachment {} misses bytes {pos}-{}",
                    attachment.meta.id, attachment.meta.size
                ),
            ));
        }
        let get = |store: Arc<dyn ObjectStore>, (key, from, to, len): (Path, u64, u64, u64)| async move {
            let options = GetOptions {
                range: (from > 0 || to < len).then_some(GetRange::Bounded(from..to)),
                ..GetOptions::default()
            };
            let got = store.get_opts(&key, options).await.map_err(s3_err)?;
            Ok::<_, io::Error>(got.into_stream().map_err(s3_err))
        };
        // The first object is asked for before the answer starts: a missing one is
        // a 500, not a 200 cut short.
        let mut reads = reads.into_iter();
        let first = match reads.next() {
            Some(read) => Some(get(Arc::clone(&self.reader), read).await?),
            None => None,
        };
        let store = Arc::clone(&self.reader);
        let rest = futures_util::stream::iter(reads)
            .then(move |read| get(Arc::clone(&store), read))
            .try_flatten();
        let stream = futures_util::stream::iter(first).flatten().chain(rest);
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::unavailable_status;

    #[test]
    fn only_a_gateway_or_unavailable_status_counts_as_out_of_reach() {
        let said = |status: &str| {
            format!(
                "Generic S3 error: Error performing PUT http://h/b/k in 650ms, after 3 retries, \
                 max_retries: 3, retry_timeout: 10s  - Server returned non-2xx status code: {status}: <Error/>"
            )
        };
        for status in [
            "502 Bad Gateway",
            "503 Service Unavailable",
            "504 Gateway Timeout",
        ] {
            assert!(unavailable_status(&said(status)), "{status}");
        }
        for status in [
            "400 Bad Request",
            "403 Forbidden",
            "404 Not Found",
            "409 Conflict",
            "500 Internal Server Error",
        ] {
            assert!(!unavailable_status(&said(status)), "{status}");
        }
    }
}
