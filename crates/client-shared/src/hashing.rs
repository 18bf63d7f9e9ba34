//! The file's hashes, taken from the bytes the upload reads anyway.
//!
//! An upload reads its file once: each chunk read for a fragment is also offered
//! to [`FileHashing`], whose thread hashes it (in parallel with the sending, with
//! no second read of the file). The thread reads the file itself only for what the
//! stream did not bring it: chunks it was too slow to take (the offer never
//! blocks the upload), bytes the server already had when an upload resumed, and
//! the rest of a file whose upload ended early. A resume state saved during the
//! upload carries the hashes so far ([`FileIdentity::sent_hashes`]), so that a
//! resume checks the bytes already sent against the file before sending more.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use upsession_core::drive::ContentHasher;

use crate::error::{Error, Result};
use crate::resume::{FileIdentity, ResumeState};

/// A chunk the upload read, offered to the hash: its bytes, however they are held.
pub type Chunk = Box<dyn AsRef<[u8]> + Send>;

/// Chunks waiting for the hashing thread: past this, an offer is dropped and the
/// thread reads those bytes from the file (about 8 MiB of 512 KiB chunks).
const QUEUE: usize = 16;

/// Bytes read per step when the thread reads the file itself.
const READ_STEP: usize = 256 * 1024;

/// The hashes of an upload's file, taken from the chunks the upload reads.
///
/// Each chunk read for a fragment is [offered](FileHashing::offer) to a thread of
/// its own, which hashes it beside the sending: the file is read once. The thread
/// reads the file itself only for what the stream did not bring it: chunks it was
/// too slow to take (an offer never blocks the upload), bytes the server already
/// had when an upload resumed, and the rest of a file whose upload ended early. A
/// resume state saved during the upload carries the hashes so far
/// ([`FileIdentity::sent_hashes`]), so that a resume checks the bytes already
/// sent against the file before sending more.
#[derive(Debug)]
pub struct FileHashing {
    identity: FileIdentity,
    /// Where chunks are offered; `None` once the upload has ended (the thread then
    /// reads whatever it was not given).
    feed: Option<SyncSender<(u64, Chunk)>>,
    /// The hashes of the file's first bytes as far as the thread has taken them,
    /// for the resume state.
    so_far: Arc<Mutex<Option<ContentHasher>>>,
    thread: Option<std::thread::JoinHandle<Option<ContentHasher>>>,
    /// Set when the upload is given up before the hash is taken: the thread
    /// stops.
    stop: Arc<AtomicBool>,
}

impl Drop for FileHashing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.feed = None;
    }
}

impl FileHashing {
    /// Starts hashing the file of `identity` (its SHA-256), unless its hash is
    /// known.
    pub fn start(identity: FileIdentity) -> Self {
        Self::start_for(identity, false)
    }

    /// [`FileHashing::start`], with the QuickXorHash too when `quick_xor` (an
    /// upload to a drive, whose answer carries it). Hashes of the bytes already
    /// sent, which [`FileIdentity::verify`] checked against the file, are
    /// continued rather than taken again.
    pub fn start_for(identity: FileIdentity, quick_xor: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let so_far = Arc::new(Mutex::new(None));
        let known = identity.sha256.is_some() && (!quick_xor || identity.quick_xor.is_some());
        let (feed, thread) = if known {
            (None, None)
        } else {
            let start = match &identity.sent_hashes {
                Some(h) if h.quick_xor_base64().is_some() == quick_xor => (**h).clone(),
                _ if quick_xor => ContentHasher::default(),
                _ => ContentHasher::sha256_only(),
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            let follow = Follow {
                path: identity.path.clone(),
                size: identity.size,
                file: None,
                hasher: start,
                so_far: Arc::clone(&so_far),
                stop: Arc::clone(&stop),
            };
            (Some(tx), Some(std::thread::spawn(move || follow.run(&rx))))
        };
        Self {
            identity,
            feed,
            so_far,
            thread,
            stop,
        }
    }

    /// Offers `chunk`, the file's bytes from `offset`, just read for the upload.
    /// Never blocks: when the thread is behind, the chunk is dropped and the
    /// thread reads those bytes from the file.
    pub fn offer(&self, offset: u64, chunk: Chunk) {
        if let Some(feed) = &self.feed {
            match feed.try_send((offset, chunk)) {
                Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Whether the hash is still being taken (chunks are worth offering).
    pub fn wants_chunks(&self) -> bool {
        self.feed.is_some() && self.thread.is_some()
    }

    /// The file's identity, with its hash once known.
    pub fn identity(&self) -> &FileIdentity {
        &self.identity
    }

    /// Takes the hash if its thread has finished; `true` when it has just become
    /// known (a resume state saved from then on carries it).
    pub fn poll(&mut self) -> bool {
        if self
            .thread
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            self.join();
            return self.identity.sha256.is_some();
        }
        false
    }

    /// [`FileHashing::poll`], then what is known into `state`'s file: the whole
    /// file's hash, or else the hashes of its bytes taken so far. `true` when the
    /// whole hash has just become known, so that the state is saved now.
    pub fn poll_into(&mut self, state: &mut ResumeState) -> bool {
        let new = self.poll();
        state.file.sha256.clone_from(&self.identity.sha256);
        state.file.quick_xor.clone_from(&self.identity.quick_xor);
        state.file.sent_hashes = if self.identity.sha256.is_some() {
            None
        } else {
            self.so_far
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .filter(|h| !h.is_empty())
                .map(Box::new)
        };
        new
    }

    /// Waits for the hash (blocking: the thread reads from the file whatever it
    /// was not given) and returns the identity with it; without it when the file
    /// did not read whole as it was (a change that
    /// [`FileIdentity::check_unchanged`] reports).
    pub fn finish(&mut self) -> &FileIdentity {
        self.feed = None;
        self.join();
        &self.identity
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.feed = None;
            if let Some(hasher) = thread.join().ok().flatten() {
                self.identity.sha256 = Some(hasher.sha256_lower_hex());
                if let Some(q) = hasher.quick_xor_base64() {
                    self.identity.quick_xor = Some(q);
                }
            } else {
                (self.identity.sha256, self.identity.quick_xor) = (None, None);
            }
            self.identity.sent_hashes = None;
        }
    }
}

/// The hashing thread's side.
struct Follow {
    path: std::path::PathBuf,
    size: u64,
    /// Opened the first time bytes must be read from the file.
    file: Option<fs::File>,
    hasher: ContentHasher,
    so_far: Arc<Mutex<Option<ContentHasher>>>,
    stop: Arc<AtomicBool>,
}

impl Follow {
    /// The hashes of the whole file; `None` when it did not read as `size` bytes,
    /// or when stopped.
    fn run(mut self, chunks: &Receiver<(u64, Chunk)>) -> Option<ContentHasher> {
        while self.hasher.len() < self.size {
            // Ends when the upload drops its side: the rest comes from the file.
            let Ok((offset, chunk)) = chunks.recv() else {
                break;
            };
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let done = self.hasher.len();
            if offset > done {
                // Bytes the stream skipped (dropped offers, or what the server had).
                self.read_in(done..offset.min(self.size)).ok()??;
            }
            let bytes = (*chunk).as_ref();
            let end = offset.saturating_add(bytes.len() as u64).min(self.size);
            if end > self.hasher.len() {
                let from = usize::try_from(self.hasher.len() - offset).ok()?;
                let to = usize::try_from(end - offset).ok()?;
                self.hasher.update(&bytes[from..to]);
            }
            *self.so_far.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.hasher.clone());
        }
        let (done, size) = (self.hasher.len(), self.size);
        let mut hasher = std::mem::take(&mut self.hasher);
        let stop = Arc::clone(&self.stop);
        let file = self.open().ok()?;
        hash_to_end(file, done..size, &mut hasher, &stop)
            .ok()?
            .map(|()| hasher)
    }

    fn open(&mut self) -> io::Result<&mut fs::File> {
        if self.file.is_none() {
            self.file = Some(fs::File::open(&self.path)?);
        }
        Ok(self.file.as_mut().unwrap_or_else(|| unreachable!()))
    }

    /// Hashes the file's bytes in `range`; `Ok(None)` when it ended first or the
    /// hashing was stopped.
    fn read_in(&mut self, range: Range<u64>) -> io::Result<Option<()>> {
        if range.is_empty() {
            return Ok(Some(()));
        }
        let stop = Arc::clone(&self.stop);
        let mut hasher = std::mem::take(&mut self.hasher);
        let file = self.open()?;
        let whole = hash_range(file, range, &mut hasher, &stop);
        self.hasher = hasher;
        whole
    }
}

/// Hashes `file`'s bytes in `range` into `hasher`; `Ok(None)` when the file ended
/// first or `stop` was set.
pub(crate) fn hash_range(
    file: &mut fs::File,
    range: Range<u64>,
    hasher: &mut ContentHasher,
    stop: &AtomicBool,
) -> io::Result<Option<()>> {
    file.seek(SeekFrom::Start(range.start))?;
    let mut left = range.end - range.start;
    let mut buf = vec![0; READ_STEP.min(usize::try_from(left).unwrap_or(READ_STEP))];
    while left > 0 {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        let n = read_some(file, &mut buf[..want])?;
        if n == 0 {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(Some(()))
}

/// [`hash_range`], and then the file must end at `range.end` (a file that grew
/// is not the file of the identity).
fn hash_to_end(
    file: &mut fs::File,
    range: Range<u64>,
    hasher: &mut ContentHasher,
    stop: &AtomicBool,
) -> io::Result<Option<()>> {
    let end = range.end;
    if hash_range(file, range, hasher, stop)?.is_none() {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(end))?;
    Ok((read_some(file, &mut [0_u8; 1])? == 0).then_some(()))
}

/// The SHA-256 (lowercase hex) of the file at `path`, which must hold `size`
/// bytes; `None` when it does not. Blocking.
pub(crate) fn sha256_of(path: &Path, size: u64) -> Result<Option<String>> {
    let mut file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = ContentHasher::sha256_only();
    let whole = hash_to_end(&mut file, 0..size, &mut hasher, &AtomicBool::new(false))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(whole.map(|()| hasher.sha256_lower_hex()))
}

fn read_some(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The file's first `len` bytes hashed as `like` hashes (a fresh hasher of its
/// kind), for comparing with it. Blocking.
pub(crate) fn hashes_of_prefix(path: &Path, like: &ContentHasher) -> Result<ContentHasher> {
    let mut hasher = like.fresh();
    let mut file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    match hash_range(
        &mut file,
        0..like.len(),
        &mut hasher,
        &AtomicBool::new(false),
    ) {
        Ok(Some(())) => Ok(hasher),
        Ok(None) => Err(Error::FileChanged {
            path: path.to_path_buf(),
            what: "it is shorter than the part already sent".into(),
        }),
        Err(e) => Err(Error::io("read", path, e)),
    }
}
