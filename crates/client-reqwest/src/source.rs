//! Where a fragment's bytes come from, chunk by chunk, into the request body.
//!
//! Two kinds: any seekable reader ([`Reader`]: seek to the fragment, read it
//! through), and a file ([`FileChunks`]), read at its offset on a blocking thread
//! straight into a buffer that then goes to the connection as it is: one copy from
//! the page cache, where a `tokio::fs::File` takes two (into its own buffer, then
//! into the caller's). Those buffers are reused once the connection and the hash
//! are done with them, so a long upload does not fault in fresh memory for every
//! chunk.

use std::fs::File;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::resume::FileHashing;
use crate::upload::Source;

/// Bytes read per body chunk.
const CHUNK: usize = 512 * 1024;

/// Buffers kept for reuse by one [`FileChunks`]: those in the body channel, in the
/// connection's queue and waiting for the hash, with room to spare.
const POOL: usize = 24;

/// Where the chunks of a fragment go: the request body, and the file's hash
/// (`tap`: the hashing, and the fragment's first byte in the file).
pub(crate) struct Sink<'h> {
    pub(crate) body: mpsc::Sender<io::Result<Bytes>>,
    pub(crate) tap: Option<(&'h FileHashing, u64)>,
}

impl Sink<'_> {
    /// Hands `chunk`, the bytes at `at` in the fragment, to the hash and the body;
    /// `false` when the request no longer wants them.
    async fn give(&self, at: u64, chunk: Bytes) -> bool {
        if let Some((hashing, start)) = self.tap {
            hashing.offer(start + at, Box::new(chunk.clone()));
        }
        self.body.send(Ok(chunk)).await.is_ok()
    }

    /// Ends the body with `e`, so that the request fails rather than sending a
    /// short fragment, and returns it.
    async fn fail(&self, e: io::Error) -> io::Error {
        let _ = self
            .body
            .send(Err(io::Error::new(e.kind(), "reading the source failed")))
            .await;
        e
    }
}

/// The source ended before the fragment did.
fn ended_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the source ended early")
}

/// Reads the bytes of fragments into request bodies.
pub(crate) trait FragmentSource: Send {
    /// Gets ready to read from `start`, before the request is sent (a reader
    /// seeks there, so that a failure is said before any byte goes out).
    fn prepare(&mut self, start: u64) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads `len` bytes from `start` (prepared) into `sink`, chunk by chunk. Stops quietly
    /// when the request no longer wants them; a read error or a short source is
    /// sent into the body too and returned.
    fn pump(
        &mut self,
        start: u64,
        len: u64,
        sink: Sink<'_>,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// Any seekable reader: each fragment seeks to its start and reads through.
pub(crate) struct Reader<R>(pub(crate) R);

impl<R: Source> FragmentSource for Reader<R> {
    async fn prepare(&mut self, start: u64) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(start)).await.map(drop)
    }

    async fn pump(&mut self, _start: u64, len: u64, sink: Sink<'_>) -> io::Result<()> {
        let mut stream = ReaderStream::with_capacity((&mut self.0).take(len), CHUNK);
        let mut at = 0_u64;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    let n = bytes.len() as u64;
                    if !sink.give(at, bytes).await {
                        return Ok(());
                    }
                    at += n;
                }
                Err(e) => return Err(sink.fail(e).await),
            }
        }
        if at < len {
            return Err(sink.fail(ended_early()).await);
        }
        Ok(())
    }
}

/// A file, read at each chunk's offset on a blocking thread into reused buffers.
pub(crate) struct FileChunks {
    file: Arc<File>,
    /// The file's size when the upload began: nothing is read ahead past it.
    size: u64,
    pool: Pool,
    /// The chunk after the last fragment's end (where the next fragment most
    /// likely starts), read while that fragment's answer is awaited: its offset,
    /// length and read.
    ahead: Option<(u64, usize, Read)>,
}

/// A chunk being read on a blocking thread.
type Read = tokio::task::JoinHandle<io::Result<BytesMut>>;

impl FileChunks {
    pub(crate) fn new(file: File, size: u64) -> Self {
        Self {
            file: Arc::new(file),
            size,
            pool: Pool::default(),
            ahead: None,
        }
    }

    /// Starts reading `n` bytes at `offset` into a buffer from the pool.
    fn read(&mut self, offset: u64, n: usize) -> Read {
        let mut buf = self.pool.take(n);
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || read_exact_at(&file, &mut buf, offset).map(|()| buf))
    }
}

impl FragmentSource for FileChunks {
    async fn prepare(&mut self, _start: u64) -> io::Result<()> {
        Ok(())
    }

    async fn pump(&mut self, start: u64, len: u64, sink: Sink<'_>) -> io::Result<()> {
        let mut at = 0_u64;
        while at < len {
            let n = usize::try_from(len - at).map_or(CHUNK, |rest| rest.min(CHUNK));
            let offset = start + at;
            let read = match self.ahead.take() {
                Some((o, m, read)) if (o, m) == (offset, n) => read,
                _ => self.read(offset, n),
            };
            let chunk = match read.await.unwrap_or_else(|e| Err(io::Error::other(e))) {
                Ok(buf) => buf.freeze(),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(sink.fail(ended_early()).await);
                }
                Err(e) => return Err(sink.fail(e).await),
            };
            self.pool.lend(chunk.clone());
            if !sink.give(at, chunk).await {
                return Ok(());
            }
            at += n as u64;
        }
        // The next fragment's first chunk, as long as a chunk (or the rest of the
        // file) goes; a fragment that starts elsewhere or shorter reads its own.
        let next = start + len;
        self.ahead = usize::try_from(self.size.saturating_sub(next))
            .map_or(Some(CHUNK), |rest| Some(rest.min(CHUNK)).filter(|&n| n > 0))
            .map(|n| (next, n, self.read(next, n)));
        Ok(())
    }
}

/// Fills `buf` with the file's bytes at `offset`, without moving a shared
/// position; `UnexpectedEof` when the file ends first.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fills `buf` with the file's bytes at `offset`; `UnexpectedEof` when the file
/// ends first.
#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Chunk buffers lent to the body and the hash, taken back once both have
/// dropped them.
#[derive(Default)]
struct Pool {
    lent: Vec<Bytes>,
}

impl Pool {
    /// A buffer of `n` bytes whose contents will be overwritten: one no longer in
    /// use when there is one (the last one lent, still warm in the CPU's
    /// caches), else a new one.
    fn take(&mut self, n: usize) -> BytesMut {
        let free = self.lent.iter().rposition(Bytes::is_unique);
        let reused = free.and_then(|i| self.lent.swap_remove(i).try_into_mut().ok());
        match reused {
            Some(mut buf) => {
                // The old bytes stay where they are and are read over; only a
                // longer chunk than before has new bytes to zero.
                if buf.len() >= n {
                    buf.truncate(n);
                } else {
                    buf.resize(n, 0);
                }
                buf
            }
            None => BytesMut::zeroed(n),
        }
    }

    /// Keeps a handle on `chunk`'s buffer, to take it back when it is free. Past
    /// [`POOL`] handles the oldest is let go (its buffer is freed when its last
    /// user drops it).
    fn lend(&mut self, chunk: Bytes) {
        if self.lent.len() >= POOL {
            self.lent.remove(0);
        }
        self.lent.push(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_once_every_handle_on_it_is_dropped() {
        let mut pool = Pool::default();
        let first = pool.take(8);
        let ptr = first.as_ptr();
        let chunk = first.freeze();
        pool.lend(chunk.clone());
        let held = pool.take(8);
        assert_ne!(held.as_ptr(), ptr, "still held by the body: a new buffer");
        drop(chunk);
        let again = pool.take(4);
        assert_eq!((again.as_ptr(), again.len()), (ptr, 4), "free: reused");
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_handles() {
        let mut pool = Pool::default();
        let held: Vec<Bytes> = (0..POOL + 5)
            .map(|_| {
                let b = pool.take(4).freeze();
                pool.lend(b.clone());
                b
            })
            .collect();
        assert_eq!(pool.lent.len(), POOL);
        drop(held);
        assert!(pool.lent.iter().all(Bytes::is_unique));
    }

    async fn pumped(
        source: &mut impl FragmentSource,
        start: u64,
        len: u64,
    ) -> (Vec<u8>, io::Result<()>) {
        let (tx, mut rx) = mpsc::channel(64);
        source.prepare(start).await.unwrap();
        let result = source
            .pump(
                start,
                len,
                Sink {
                    body: tx,
                    tap: None,
                },
            )
            .await;
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => break,
            }
        }
        (got, result)
    }

    #[tokio::test]
    #[allow(clippy::cast_possible_truncation)] // small test sizes
    async fn a_file_and_a_reader_give_the_same_bytes_and_the_same_short_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let mut file = FileChunks::new(File::open(&path).unwrap(), bytes.len() as u64);
        let mut reader = Reader(io::Cursor::new(bytes.clone()));
        for (start, len) in [
            (0, bytes.len() as u64),
            (5, 2 * CHUNK as u64 + 3),
            (CHUNK as u64, 1),
        ] {
            let range = start as usize..(start + len) as usize;
            let (got, r) = pumped(&mut file, start, len).await;
            assert!(r.is_ok());
            assert_eq!(got, bytes[range.clone()]);
            let (got, r) = pumped(&mut reader, start, len).await;
            assert!(r.is_ok());
            assert_eq!(got, bytes[range]);
        }
        // Fragments in order: each one's first chunk was read while the one
        // before was answered.
        let c = CHUNK as u64;
        for (start, len) in [(0, c), (c, c), (2 * c, c + 17)] {
            let range = start as usize..(start + len) as usize;
            if start > 0 {
                let read_ahead = file.ahead.as_ref().map(|(offset, ..)| *offset);
                assert_eq!(read_ahead, Some(start), "read while the last was answered");
            }
            let (got, r) = pumped(&mut file, start, len).await;
            assert!(r.is_ok());
            assert_eq!(got, bytes[range]);
        }
        assert!(file.ahead.is_none(), "nothing is read past the end");
        let past = bytes.len() as u64 - 10;
        for result in [
            pumped(&mut file, past, 20).await.1,
            pumped(&mut reader, past, 20).await.1,
        ] {
            assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
