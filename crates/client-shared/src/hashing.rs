//! The file's hashes, taken from the bytes the upload reads anyway.
//!
//! Every upload takes its file's CRC-64/NVME, the identity that a resume checks
//! (the whole-object checksum S3 uses; about eight times cheaper than SHA-256 on
//! the same core, which on a loaded machine is the difference between hashing
//! beside the upload and slowing it down). The SHA-256 is taken only when wanted
//! ([`FileHashes`]): when asked for, and for a drive file, whose answer carries
//! its SHA-256 and QuickXorHash to check.
//!
//! An upload reads its file once: each chunk read for a fragment is also offered
//! to [`FileHashing`], whose thread hashes it (in parallel with the sending, with
//! no second read of the file). The thread reads the file itself only for what the
//! stream did not bring it: chunks it was too slow to take (the offer never
//! blocks the upload), bytes the server already had when an upload resumed, and
//! the rest of a file whose upload ended early. A resume state saved during the
//! upload carries the hashes so far ([`FileIdentity::sent_crc64`],
//! [`FileIdentity::sent_hashes`]), so that a resume checks the bytes already sent
//! against the file before sending more.

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

/// The CRC every upload takes.
const CRC64: crc_fast::CrcAlgorithm = crc_fast::CrcAlgorithm::Crc64Nvme;

/// Which hashes an upload takes of its file, beside the CRC-64/NVME it always
/// takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileHashes {
    /// The CRC-64/NVME alone.
    #[default]
    Crc64,
    /// The SHA-256 too (asked for).
    Sha256,
    /// The SHA-256 and the QuickXorHash too (a drive file: its answer carries
    /// both, and they are checked).
    Drive,
}

impl FileHashes {
    /// What an upload takes: a drive file's hashes, or the SHA-256 when asked.
    #[must_use]
    pub fn for_upload(drive: bool, sha256: bool) -> Self {
        match (drive, sha256) {
            (true, _) => Self::Drive,
            (false, true) => Self::Sha256,
            (false, false) => Self::Crc64,
        }
    }

    /// Whether the SHA-256 is among them.
    #[must_use]
    pub fn sha256(self) -> bool {
        self != Self::Crc64
    }

    fn content(self) -> Option<ContentHasher> {
        match self {
            Self::Crc64 => None,
            Self::Sha256 => Some(ContentHasher::sha256_only()),
            Self::Drive => Some(ContentHasher::default()),
        }
    }

    /// The kinds that hashes saved as `content` take.
    pub(crate) fn of_saved(content: Option<&ContentHasher>) -> Self {
        match content {
            None => Self::Crc64,
            Some(c) if c.quick_xor_base64().is_some() => Self::Drive,
            Some(_) => Self::Sha256,
        }
    }
}

/// The CRC-64/NVME of a file's first bytes, saved in a resume state while the
/// upload has not read them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Crc64Prefix {
    /// How many bytes.
    pub len: u64,
    /// Their CRC-64/NVME (in JSON as 16 hex digits, as [`crc64_hex`] writes it).
    #[serde(with = "hex_u64")]
    pub crc64: u64,
}

/// The hashes of a file's first bytes, taken in order: the CRC-64/NVME, and the
/// SHA-256 (with the QuickXorHash) when wanted.
#[derive(Clone, Debug)]
pub(crate) struct Hasher {
    crc: crc_fast::Digest,
    len: u64,
    content: Option<ContentHasher>,
}

impl Hasher {
    pub(crate) fn new(kinds: FileHashes) -> Self {
        Self {
            crc: crc_fast::Digest::new(CRC64),
            len: 0,
            content: kinds.content(),
        }
    }

    /// Goes on from hashes saved at the same length: the CRC's `prefix`, and the
    /// `content` hashes when wanted; `None` when they do not fit together.
    fn resume(prefix: Crc64Prefix, content: Option<ContentHasher>, size: u64) -> Option<Self> {
        if prefix.len > size || content.as_ref().is_some_and(|c| c.len() != prefix.len) {
            return None;
        }
        // The digest's state is the CRC before its final xor (which a fresh
        // digest shows: its state is the initial value, its CRC that xored).
        let fresh = crc_fast::Digest::new(CRC64);
        let unfinished = prefix.crc64 ^ fresh.finalize() ^ fresh.get_state();
        Some(Self {
            crc: crc_fast::Digest::new_with_init_state(CRC64, unfinished),
            len: prefix.len,
            content,
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        if let Some(c) = &mut self.content {
            c.update(bytes);
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn crc64(&self) -> u64 {
        self.crc.finalize()
    }

    pub(crate) fn prefix(&self) -> Crc64Prefix {
        Crc64Prefix {
            len: self.len,
            crc64: self.crc64(),
        }
    }

    pub(crate) fn quick_xor_base64(&self) -> Option<String> {
        self.content
            .as_ref()
            .and_then(ContentHasher::quick_xor_base64)
    }

    pub(crate) fn sha256_hex(&self) -> Option<String> {
        self.content.as_ref().map(ContentHasher::sha256_lower_hex)
    }

    pub(crate) fn content(&self) -> Option<&ContentHasher> {
        self.content.as_ref()
    }
}

/// `crc` as a file identity shows it: 16 lowercase hex digits.
#[must_use]
pub fn crc64_hex(crc: u64) -> String {
    format!("{crc:016x}")
}

/// A CRC in JSON as 16 hex digits: a JSON number that large is not exact in
/// every reader (JavaScript's).
pub(crate) mod hex_u64 {
    use serde::{Deserialize as _, Deserializer, Serializer};

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference
    pub(crate) fn serialize<S: Serializer>(crc: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::crc64_hex(*crc))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let hex = std::borrow::Cow::<str>::deserialize(d)?;
        u64::from_str_radix(&hex, 16).map_err(serde::de::Error::custom)
    }

    /// The same, for an optional CRC.
    pub(crate) mod option {
        use serde::{Deserialize as _, Deserializer, Serializer};

        #[allow(clippy::ref_option)] // serde's `with` passes a reference
        pub(crate) fn serialize<S: Serializer>(crc: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match crc {
                Some(crc) => super::serialize(crc, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<u64>, D::Error> {
            Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
                .map(|hex| u64::from_str_radix(&hex, 16).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// The hashes of an upload's file, taken from the chunks the upload reads.
///
/// Each chunk read for a fragment is [offered](FileHashing::offer) to a thread of
/// its own, which hashes it beside the sending: the file is read once. The thread
/// reads the file itself only for what the stream did not bring it: chunks it was
/// too slow to take (an offer never blocks the upload), bytes the server already
/// had when an upload resumed, and the rest of a file whose upload ended early. A
/// resume state saved during the upload carries the hashes so far
/// ([`FileIdentity::sent_crc64`]), so that a resume checks the bytes already
/// sent against the file before sending more.
#[derive(Debug)]
pub struct FileHashing {
    identity: FileIdentity,
    /// Where chunks are offered; `None` once the upload has ended (the thread then
    /// reads whatever it was not given).
    feed: Option<SyncSender<(u64, Chunk)>>,
    /// The hashes of the file's first bytes as far as the thread has taken them,
    /// for the resume state.
    so_far: Arc<Mutex<Option<Hasher>>>,
    thread: Option<std::thread::JoinHandle<Option<Hasher>>>,
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
    /// Starts hashing the file of `identity` (its CRC-64/NVME), unless its hash
    /// is known.
    pub fn start(identity: FileIdentity) -> Self {
        Self::start_for(identity, FileHashes::Crc64)
    }

    /// [`FileHashing::start`], with the SHA-256 (and QuickXorHash) too as `kinds`
    /// says. Hashes of the bytes already sent, which [`FileIdentity::verify`]
    /// checked against the file, are continued rather than taken again.
    pub fn start_for(identity: FileIdentity, kinds: FileHashes) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let so_far = Arc::new(Mutex::new(None));
        let known = identity.crc64.is_some()
            && (!kinds.sha256() || identity.sha256.is_some())
            && (kinds != FileHashes::Drive || identity.quick_xor.is_some());
        let (feed, thread) = if known {
            (None, None)
        } else {
            let content = identity.sent_hashes.as_deref().cloned();
            let start = identity
                .sent_crc64
                .filter(|_| FileHashes::of_saved(content.as_ref()) == kinds || !kinds.sha256())
                .and_then(|prefix| {
                    Hasher::resume(prefix, content.filter(|_| kinds.sha256()), identity.size)
                })
                .unwrap_or_else(|| Hasher::new(kinds));
            // A resume state saved before the thread takes its first chunk
            // keeps the hashes it goes on from.
            *so_far.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(start.clone()).filter(|h| h.len() > 0);
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
            return self.identity.crc64.is_some();
        }
        false
    }

    /// [`FileHashing::poll`], then what is known into `state`'s file: the whole
    /// file's hash, or else the hashes of its bytes taken so far. `true` when the
    /// whole hash has just become known, so that the state is saved now.
    pub fn poll_into(&mut self, state: &mut ResumeState) -> bool {
        let new = self.poll();
        state.file.crc64 = self.identity.crc64;
        state.file.sha256.clone_from(&self.identity.sha256);
        state.file.quick_xor.clone_from(&self.identity.quick_xor);
        let so_far = if self.identity.crc64.is_some() {
            None
        } else {
            self.so_far
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .filter(|h| h.len() > 0)
        };
        state.file.sent_crc64 = so_far.as_ref().map(Hasher::prefix);
        state.file.sent_hashes = so_far.and_then(|h| h.content).map(Box::new);
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
                // What was hashed, and nothing older.
                self.identity.crc64 = Some(hasher.crc64());
                self.identity.sha256 = hasher.sha256_hex();
                self.identity.quick_xor = hasher.quick_xor_base64();
            } else {
                self.identity.crc64 = None;
                (self.identity.sha256, self.identity.quick_xor) = (None, None);
            }
            (self.identity.sent_crc64, self.identity.sent_hashes) = (None, None);
        }
    }
}

/// The hashing thread's side.
struct Follow {
    path: std::path::PathBuf,
    size: u64,
    /// Opened the first time bytes must be read from the file.
    file: Option<fs::File>,
    hasher: Hasher,
    so_far: Arc<Mutex<Option<Hasher>>>,
    stop: Arc<AtomicBool>,
}

impl Follow {
    /// The hashes of the whole file; `None` when it did not read as `size` bytes,
    /// or when stopped.
    fn run(mut self, chunks: &Receiver<(u64, Chunk)>) -> Option<Hasher> {
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
        let mut hasher = self.hasher.clone();
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
        let mut hasher = self.hasher.clone();
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
    hasher: &mut Hasher,
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
    hasher: &mut Hasher,
    stop: &AtomicBool,
) -> io::Result<Option<()>> {
    let end = range.end;
    if hash_range(file, range, hasher, stop)?.is_none() {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(end))?;
    Ok((read_some(file, &mut [0_u8; 1])? == 0).then_some(()))
}

/// The hashes (`kinds`) of the file at `path`, which must hold `size` bytes;
/// `None` when it does not. Blocking.
pub(crate) fn hashes_of(path: &Path, size: u64, kinds: FileHashes) -> Result<Option<Hasher>> {
    let mut file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Hasher::new(kinds);
    let whole = hash_to_end(&mut file, 0..size, &mut hasher, &AtomicBool::new(false))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(whole.map(|()| hasher))
}

/// The hashes (`kinds`) of `bytes`, a whole small file.
pub(crate) fn hashes_of_bytes(bytes: &[u8], kinds: FileHashes) -> Hasher {
    let mut hasher = Hasher::new(kinds);
    hasher.update(bytes);
    hasher
}

fn read_some(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The file's first `len` bytes hashed as `kinds` says, for comparing with
/// hashes saved of them. Blocking.
pub(crate) fn hashes_of_prefix(path: &Path, len: u64, kinds: FileHashes) -> Result<Hasher> {
    let mut hasher = Hasher::new(kinds);
    let mut file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    match hash_range(&mut file, 0..len, &mut hasher, &AtomicBool::new(false)) {
        Ok(Some(())) => Ok(hasher),
        Ok(None) => Err(Error::FileChanged {
            path: path.to_path_buf(),
            what: "it is shorter than the part already sent".into(),
        }),
        Err(e) => Err(Error::io("read", path, e)),
    }
}
