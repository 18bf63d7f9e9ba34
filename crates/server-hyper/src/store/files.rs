//! The file operations of the local store, behind a trait: [`RealFiles`] is the
//! operating system's; a test puts a power-loss simulation in its place
//! (`store/power_loss.rs`), which forgets, at a crash, what was never synced.
//!
//! Every method blocks. [`super::disk::Disk`] runs those that wait for the disk
//! (syncs, renames, reads) on the blocking pool or with the worker handed off
//! (`block_in_place`); a fragment's `write_at` into the page cache and its
//! `start_writeback` hint run on the connection's own thread, as the sink's
//! writes do.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use upsession_core::ByteRange;

use super::ByteStream;

/// What the local store does with files.
pub(crate) trait Files: Send + Sync + fmt::Debug + 'static {
    /// Takes `{root}/lock` for this process, or says which process holds it; the
    /// lock lasts as long as the returned value.
    fn lock(&self, root: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes at `offset` (fewer at the end of the file).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The file's length.
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Creates (or truncates) `path` holding `bytes`; with `sync`, its data is on
    /// the disk when this returns. `private`: readable by the owner only, and
    /// never over an existing file.
    fn write_file(&self, path: &Path, bytes: &[u8], sync: bool, private: bool) -> io::Result<()>;
    /// An existing file, for writes at offsets.
    fn open_writer(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
    /// Renames `from` over `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes `path` (absent is an error of kind `NotFound`).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The file's bytes `window` as a stream, for answers.
    fn stream(&self, path: &Path, window: ByteRange) -> io::Result<ByteStream>;
    /// Whether a sync may run in the background, nobody waiting for it (the
    /// operating system's files). A simulated file system says no: it orders
    /// every step.
    fn background_syncs(&self) -> bool {
        false
    }
    /// Makes every file's data on the file system of `dir` durable at once
    /// (`syncfs`): one journal commit, where a sync per file takes one each.
    fn sync_file_system(&self, dir: &Path) -> io::Result<()> {
        let _ = dir;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A file open for writes at offsets.
pub(crate) trait FileHandle: Send + Sync {
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Starts writing `len` bytes from `offset` to the device without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later
    /// [`FileHandle::sync_data`] finds less to wait for. Durability still comes
    /// only from that sync; a hint the system does not take is no error.
    fn start_writeback(&self, _offset: u64, _len: u64) {}
}

/// The operating system's files.
#[derive(Debug, Default)]
pub(crate) struct RealFiles;

impl Files for RealFiles {
    fn background_syncs(&self) -> bool {
        true
    }

    #[cfg(target_os = "linux")]
    fn sync_file_system(&self, dir: &Path) -> io::Result<()> {
        rustix::fs::syncfs(File::open(dir)?).map_err(io::Error::from)
    }

    fn lock(&self, root: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        fs::create_dir_all(root)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(root.join("lock"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim().parse().ok();
                return Err(io::Error::new(io::ErrorKind::ResourceBusy, InUse { pid }));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Box::new(file))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let mut buf = vec![0; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn write_file(&self, path: &Path, bytes: &[u8], sync: bool, private: bool) -> io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true);
        if private {
            options.create_new(true).mode(0o600);
        } else {
            options.create(true).truncate(true);
        }
        let mut file = options.open(path)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn open_writer(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        Ok(Box::new(OpenOptions::new().write(true).open(path)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn stream(&self, path: &Path, window: ByteRange) -> io::Result<ByteStream> {
        let mut file = File::open(path)?;
        file.seek(io::SeekFrom::Start(window.start()))?;
        Ok(read_ahead(Arc::new(file), window.len()))
    }
}

/// Bytes read per step of [`read_ahead`].
const READ_CHUNK: u64 = 256 * 1024;

/// `len` bytes of `file` from where it stands, as a stream: each chunk read on
/// the blocking pool straight into the buffer that is sent (one copy; tokio's
/// `File` reads into its own buffer and copies again), the next one read while
/// this one is sent.
fn read_ahead(file: Arc<File>, len: u64) -> ByteStream {
    fn start(file: &Arc<File>, left: u64) -> tokio::task::JoinHandle<io::Result<Vec<u8>>> {
        let file = Arc::clone(file);
        let want = left.min(READ_CHUNK);
        // Allocated here, on a runtime worker (every chunk, the first too: the
        // stream starts reading when first polled): buffers allocated on
        // blocking-pool threads came from their own malloc arenas, and a dozen
        // arenas kept freed chunks (peak RSS 41-49 MiB at 16 uploads with their
        // verifying reads, 31-34 without).
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(usize::MAX));
        tokio::task::spawn_blocking(move || {
            (&*file).take(want).read_to_end(&mut buf)?;
            Ok(buf)
        })
    }
    Box::pin(futures_util::stream::unfold(
        (file, len, None),
        |(file, left, reading)| async move {
            let reading = match reading {
                Some(reading) => reading,
                None if left > 0 => start(&file, left),
                None => return None,
            };
            let chunk = match reading.await {
                Ok(Ok(chunk)) if !chunk.is_empty() => chunk,
                Ok(Ok(_)) => {
                    let short = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ends before the bytes asked for",
                    );
                    return Some((Err(short), (file, 0, None)));
                }
                Ok(Err(e)) => return Some((Err(e), (file, 0, None))),
                Err(e) => return Some((Err(io::Error::other(e)), (file, 0, None))),
            };
            let left = left.saturating_sub(chunk.len() as u64);
            let next = (left > 0).then(|| start(&file, left));
            Some((Ok(bytes::Bytes::from(chunk)), (file, left, next)))
        },
    ))
}

impl FileHandle for File {
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        Self::sync_data(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        Self::set_len(self, len)
    }

    #[cfg(target_os = "linux")]
    fn start_writeback(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd as _;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // The workspace's one `unsafe` (`cargo xtask tidy` allows it here only).
        // SAFETY: a system call on a descriptor this `File` owns, borrowed for
        // the whole call, so it stays open; no memory is passed. (Its failure
        // is ignored: the call is a hint.)
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::sync_file_range(self.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
}

/// The data directory is served by another process.
#[derive(Debug)]
pub(crate) struct InUse {
    /// That process, as its lock file names it.
    pub(crate) pid: Option<u32>,
}

impl fmt::Display for InUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) if pid == std::process::id() => {
                write!(
                    f,
                    "it is in use by this process (pid {pid}), by another server"
                )
            }
            Some(pid) => write!(f, "it is in use by another upsession process (pid {pid})"),
            None => f.write_str("it is in use by another upsession process"),
        }
    }
}

impl std::error::Error for InUse {}
