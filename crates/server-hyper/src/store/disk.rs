//! The files of the local store under `--data-dir`.
//!
//! ```text
//! server.key                 32-byte HMAC key for uploadUrl credentials (0600)
//! items/{id}.json            a draft message or an event
//! sessions/{id}.json         an open (or completed, until expiry) upload session
//! sessions/{id}.part         its bytes so far, written at their offsets
//! attachments/{id}.json      a finished attachment's metadata
//! attachments/{id}.bin       its bytes (the `.part`, renamed on completion)
//! tmp/                       records being written; emptied at start-up
//! quarantine/                records start-up could not use, set aside for an
//!                            operator (`{dir}-{file}`)
//! lock                       locked (flock) by the process serving the directory;
//!                            holds its pid
//! ```
//!
//! Every record is written whole to `tmp/`, synced (with `--fsync always`), and
//! renamed over the old one, so a crash leaves the old record or the new one, never
//! a torn one. Write-and-rename was chosen over an append-only log because records
//! are small and per-session, start-up reads one small file per session (no replay,
//! no compaction), and the shared store keeps the same shape in PostgreSQL.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use upsession_core::ByteRange;

use super::{ByteStream, FragmentWriter, safe};
use crate::config::Fsync;

/// Records and bytes under one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    root: Arc<PathBuf>,
    fsync: Fsync,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl Disk {
    /// Opens (creating) the layout under `root` and clears leftovers in `tmp/`.
    pub(crate) fn open(root: &Path, fsync: Fsync) -> io::Result<Self> {
        for dir in ["items", "sessions", "attachments", "tmp", "quarantine"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
            fsync,
        })
    }

    fn path(&self, dir: &str, id: &str, ext: &str) -> io::Result<PathBuf> {
        Ok(self.root.join(dir).join(format!("{}.{ext}", safe(id)?)))
    }

    /// Writes `value` to `dir/id.json` atomically.
    async fn put_json<T: Serialize>(
        &self,
        dir: &'static str,
        id: &str,
        value: &T,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
        let target = self.path(dir, id, "json")?;
        // Unique per write: two writes of one record never share a temporary file.
        let tmp = self.root.join("tmp").join(format!(
            "{dir}-{}-{:016x}.json",
            safe(id)?,
            fastrand::u64(..)
        ));
        let dir_path = self.root.join(dir);
        let sync = self.fsync == Fsync::Always;
        let write = move || {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            if sync {
                f.sync_data()?;
            }
            drop(f);
            fs::rename(&tmp, &target)?;
            if sync {
                File::open(&dir_path)?.sync_all()?;
            }
            Ok(())
        };
        if sync {
            // Syncs wait for the disk: off the async threads.
            return blocking(write).await;
        }
        // Without syncs this is a few page-cache operations, cheaper than the hop.
        write()
    }

    fn read_dir_json<T: for<'de> Deserialize<'de>>(
        &self,
        dir: &str,
        unreadable: &mut Vec<PathBuf>,
    ) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                // One bad file must not stop the server: it is set aside.
                let read = fs::read(&path)
                    .and_then(|b| serde_json::from_slice(&b).map_err(io::Error::other));
                match read {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        self.quarantine_file(&path, &e.to_string());
                        unreadable.push(path);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Moves `path` (a record under the data directory) to `quarantine/`, saying
    /// why in the log. A record that cannot be moved stays where it is.
    fn quarantine_file(&self, path: &Path, why: &str) {
        let name = match (path.parent().and_then(Path::file_name), path.file_name()) {
            (Some(dir), Some(file)) => {
                format!("{}-{}", dir.to_string_lossy(), file.to_string_lossy())
            }
            _ => format!("record-{:016x}", fastrand::u64(..)),
        };
        let to = self.root.join("quarantine").join(name);
        match fs::rename(path, &to) {
            Ok(()) => tracing::error!(
                record = %path.display(), moved_to = %to.display(), reason = why,
                "unusable record set aside"
            ),
            Err(e) => tracing::error!(
                record = %path.display(), reason = why, error = %e,
                "unusable record skipped (it could not be set aside)"
            ),
        }
    }

    /// Sets the record `id` of `dir` aside (see [`Disk::quarantine_file`]).
    pub(crate) async fn quarantine(&self, dir: &'static str, id: &str, why: String) {
        let Ok(path) = self.path(dir, id, "json") else {
            return;
        };
        let this = self.clone();
        let _ = blocking(move || {
            this.quarantine_file(&path, &why);
            Ok(())
        })
        .await;
    }

    /// Whether the bytes of the attachment `id` are in place: `size` bytes in its
    /// file.
    pub(crate) async fn attachment_in_place(&self, id: &str, size: u64) -> bool {
        self.len("attachments", id, "bin").await == Some(size)
    }

    /// How many bytes the session `id` has in its partial file, if it has one.
    pub(crate) async fn part_len(&self, id: &str) -> Option<u64> {
        self.len("sessions", id, "part").await
    }

    async fn len(&self, dir: &str, id: &str, ext: &str) -> Option<u64> {
        let path = self.path(dir, id, ext).ok()?;
        tokio::fs::metadata(path).await.ok().map(|m| m.len())
    }

    /// Reads the server key, creating it (0600) on first start.
    fn key_file(&self) -> io::Result<[u8; 32]> {
        let path = self.root.join("server.key");
        match fs::read_to_string(&path) {
            Ok(text) => parse_key(text.trim()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a 64-digit hex key", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                let hex = key.iter().fold(String::with_capacity(64), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(hex.as_bytes())?;
                f.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }
}

/// Takes `{root}/lock` for this process (creating `root`), or says which process
/// holds it. The lock goes with the file handle: when the process dies, however
/// it dies, the directory is free.
pub(crate) fn lock_dir(root: &Path) -> io::Result<File> {
    use std::io::{Read as _, Seek as _};
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
    Ok(file)
}

/// The data directory is served by another process.
#[derive(Debug)]
pub(crate) struct InUse {
    /// That process, as its lock file names it.
    pid: Option<u32>,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// What [`Disk::load`] finds: every record that could be read, and the files of
/// those that could not.
#[derive(Debug, Default)]
pub(crate) struct Loaded<I, A, S> {
    pub(crate) items: Vec<I>,
    pub(crate) attachments: Vec<A>,
    pub(crate) sessions: Vec<S>,
    pub(crate) unreadable: Vec<PathBuf>,
}

impl Disk {
    /// The server key (created on first start).
    pub(crate) async fn server_key(&self) -> io::Result<[u8; 32]> {
        let this = self.clone();
        blocking(move || this.key_file()).await
    }

    /// Writes the record `id` of `dir` (`items`, `sessions`, `attachments`).
    pub(crate) async fn put<T: Serialize>(
        &self,
        dir: &'static str,
        id: &str,
        value: &T,
    ) -> io::Result<()> {
        self.put_json(dir, id, value).await
    }

    /// Removes a session's record (absent is fine).
    pub(crate) async fn delete_session(&self, id: &str) -> io::Result<()> {
        self.remove("sessions", id, "json").await
    }

    /// Removes the file `id.ext` of `dir`; absent is fine.
    async fn remove(&self, dir: &'static str, id: &str, ext: &'static str) -> io::Result<()> {
        let path = self.path(dir, id, ext)?;
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Every record, for start-up.
    pub(crate) async fn load<I, A, S>(&self) -> io::Result<Loaded<I, A, S>>
    where
        I: for<'de> Deserialize<'de> + Send + 'static,
        A: for<'de> Deserialize<'de> + Send + 'static,
        S: for<'de> Deserialize<'de> + Send + 'static,
    {
        let this = self.clone();
        blocking(move || {
            let mut unreadable = Vec::new();
            Ok(Loaded {
                items: this.read_dir_json("items", &mut unreadable)?,
                attachments: this.read_dir_json("attachments", &mut unreadable)?,
                sessions: this.read_dir_json("sessions", &mut unreadable)?,
                unreadable,
            })
        })
        .await
    }
}

/// Writes body frames at their offsets as they arrive.
///
/// The positioned writes go straight into the page cache from the connection's own
/// thread, as the benchmark's no-logic sink does: a hop to the blocking pool per
/// frame cost more than the copy itself (two context switches per 64 KiB). Only
/// `fdatasync`, which waits for the disk, runs on the blocking pool.
struct DiskWriter {
    file: Arc<File>,
    offset: u64,
    sync: bool,
}

#[async_trait]
impl FragmentWriter for DiskWriter {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.file.write_all_at(&chunk, self.offset)?;
        self.offset += chunk.len() as u64;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> io::Result<()> {
        if self.sync {
            let file = Arc::clone(&self.file);
            blocking(move || file.sync_data()).await?;
        }
        Ok(())
    }
}

impl Disk {
    /// Makes the (empty) file of a new session's bytes.
    pub(crate) async fn create_part(&self, session_id: &str) -> io::Result<()> {
        let path = self.path("sessions", session_id, "part")?;
        blocking(move || File::create(path).map(drop)).await
    }

    /// A writer for one fragment of `session_id`, at `range`.
    pub(crate) async fn writer(
        &self,
        session_id: &str,
        range: ByteRange,
    ) -> io::Result<Box<dyn FragmentWriter>> {
        let offset = range.start();
        let path = self.path("sessions", session_id, "part")?;
        let file = blocking(move || OpenOptions::new().write(true).open(path)).await?;
        Ok(Box::new(DiskWriter {
            file: Arc::new(file),
            offset,
            sync: self.fsync == Fsync::Always,
        }))
    }

    /// Drops a session's partial bytes (absent is fine).
    pub(crate) async fn discard(&self, session_id: &str) -> io::Result<()> {
        self.remove("sessions", session_id, "part").await
    }

    /// Turns a complete session's bytes into its attachment's (idempotent).
    pub(crate) async fn promote(&self, session_id: &str, attachment_id: &str) -> io::Result<()> {
        let from = self.path("sessions", session_id, "part")?;
        let to = self.path("attachments", attachment_id, "bin")?;
        let dir = self.root.join("attachments");
        let sync = self.fsync == Fsync::Always;
        blocking(move || {
            match fs::rename(&from, &to) {
                // Already promoted by an earlier attempt: the attachment is there.
                Err(e) if e.kind() == io::ErrorKind::NotFound && to.exists() => return Ok(()),
                other => other?,
            }
            if sync {
                File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
    }

    /// An attachment's bytes.
    pub(crate) async fn read(&self, attachment_id: &str) -> io::Result<ByteStream> {
        let path = self.path("attachments", attachment_id, "bin")?;
        let file = tokio::fs::File::open(path).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        )))
    }

    /// Removes partial bytes of sessions not in `live` that no record owns.
    pub(crate) async fn sweep_orphans(&self, live: &[String]) -> io::Result<usize> {
        let dir = self.root.join("sessions");
        let live: HashSet<String> = live.iter().map(|s| format!("{s}.part")).collect();
        blocking(move || {
            let mut removed = 0;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_part = Path::new(&name).extension().is_some_and(|e| e == "part");
                // A record we could not read still owns its bytes: only a `.part`
                // with no record beside it is an orphan.
                let has_record = Path::new(&name).with_extension("json");
                if is_part
                    && !live.contains(&name)
                    && !entry.path().with_file_name(has_record).exists()
                {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    #[test]
    fn ids_from_outside_never_become_paths() {
        use super::super::safe;
        for bad in ["", "../x", "a/b", "a.b", ".", "x\0"] {
            assert!(safe(bad).is_err(), "{bad:?}");
        }
        assert!(safe("AAMk-abc_09").is_ok());
    }

    #[test]
    fn server_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), Fsync::Never).unwrap();
        let k1 = disk.key_file().unwrap();
        let k2 = disk.key_file().unwrap();
        assert_eq!(k1, k2);
        let mode = fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}
