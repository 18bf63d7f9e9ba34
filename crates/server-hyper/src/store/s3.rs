//! Bytes in an S3-compatible object store (`--store s3://bucket?endpoint=…`),
//! shared by every server node.
//!
//! Fragments are at most a few MiB and S3's multipart parts must be at least
//! 5 MiB (but the last), so fragments are not parts: **each acknowledged fragment
//! is its own object**, `sessions/{session}/{start}-{end}` (zero-padded), written
//! with one `PUT` before the fragment is acknowledged. The session's record lists
//! the fragments it counted; at completion that list becomes the attachment's
//! manifest and `$value` streams the objects in order. Nothing is copied at
//! completion, so finishing a 150 MB upload costs one metadata transaction.
//!
//! A fragment re-sent after a lost answer writes the same key with the same bytes;
//! objects of fragments that were stored but never counted (the node died before
//! the record was written) are deleted at completion, cancellation or expiry,
//! with the rest of the session's prefix.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutPayload};

use super::{AttachmentRecord, BlobStore, ByteStream, FragmentWriter, SessionRecord, safe};

/// An S3 bucket.
#[derive(Debug, Clone)]
pub(crate) struct S3 {
    store: Arc<dyn ObjectStore>,
}

fn s3_err(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(format!("object store: {e}")),
    }
}

fn prefix(session: &str) -> io::Result<Path> {
    Ok(Path::from(format!("sessions/{}", safe(session)?)))
}

fn part_key(session: &str, [start, end]: [u64; 2]) -> io::Result<Path> {
    Ok(Path::from(format!(
        "sessions/{}/{start:020}-{end:020}",
        safe(session)?
    )))
}

impl S3 {
    /// Opens `s3://BUCKET[?endpoint=URL][&region=R]`. Credentials and anything
    /// not in the URL come from the usual `AWS_*` environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION`).
    pub(crate) fn open(url: &str) -> io::Result<Self> {
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
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            builder = match key {
                "endpoint" => builder
                    .with_allow_http(value.starts_with("http://"))
                    .with_endpoint(value),
                "region" => builder.with_region(value),
                other => return Err(invalid(&format!("unknown parameter `{other}`"))),
            };
        }
        let store = builder.build().map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
        })
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
        for path in doomed {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
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

/// Collects one fragment's frames and stores them as one object.
struct S3Writer {
    store: Arc<dyn ObjectStore>,
    session: String,
    start: u64,
    len: u64,
    chunks: Vec<Bytes>,
}

#[async_trait]
impl FragmentWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.len += chunk.len() as u64;
        self.chunks.push(chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> io::Result<()> {
        let key = part_key(&self.session, [self.start, self.start + self.len])?;
        let payload: PutPayload = self.chunks.into_iter().collect();
        self.store
            .put(&key, payload)
            .await
            .map_err(s3_err)
            .map(drop)
    }
}

#[async_trait]
impl BlobStore for S3 {
    fn keeps_parts(&self) -> bool {
        true
    }

    async fn create(&self, _session_id: &str) -> io::Result<()> {
        Ok(())
    }

    async fn writer(&self, session_id: &str, offset: u64) -> io::Result<Box<dyn FragmentWriter>> {
        safe(session_id)?;
        Ok(Box::new(S3Writer {
            store: Arc::clone(&self.store),
            session: session_id.to_owned(),
            start: offset,
            len: 0,
            chunks: Vec::new(),
        }))
    }

    async fn discard(&self, session_id: &str) -> io::Result<()> {
        self.delete_prefix(&prefix(session_id)?, &[])
            .await
            .map(drop)
    }

    async fn promote(&self, session: &SessionRecord) -> io::Result<()> {
        // The counted parts stay where they are; stored-but-uncounted ones go.
        let keep = session
            .parts
            .iter()
            .map(|p| part_key(&session.id, *p))
            .collect::<io::Result<Vec<_>>>()?;
        self.delete_prefix(&prefix(&session.id)?, &keep)
            .await
            .map(drop)
    }

    async fn read(&self, attachment: &AttachmentRecord) -> io::Result<ByteStream> {
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
        for [start, end] in parts {
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
            reads.push((part_key(&session, [start, end])?, pos - start, end - start));
            pos = end;
        }
        let store = Arc::clone(&self.store);
        let stream = futures_util::stream::iter(reads)
            .then(move |(key, from, to)| {
                let store = Arc::clone(&store);
                async move {
                    let options = GetOptions {
                        range: (from > 0).then_some(GetRange::Bounded(from..to)),
                        ..GetOptions::default()
                    };
                    let got = store.get_opts(&key, options).await.map_err(s3_err)?;
                    Ok::<_, io::Error>(got.into_stream().map_err(s3_err))
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    async fn sweep_orphans(&self, _live: &[String]) -> io::Result<usize> {
        // Other nodes' sessions live in the same bucket: a node never sweeps by
        // listing. Expiry deletes each session's prefix.
        Ok(0)
    }
}
