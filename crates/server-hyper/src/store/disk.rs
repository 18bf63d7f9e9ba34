//! The files of the local store under `--data-dir`.
//!
//! ```text
//! server.key                 32-byte HMAC key for uploadUrl credentials (0600)
//! items/{id}.json            a draft message or an event
//! sessions/{id}.json         an open (or completed, until expiry) upload session
//! sessions/{id}.part         its bytes so far, written at their offsets, and
//!                            past the file's size its progress journal
//!                            (`store::journal`: one entry per fragment)
//! attachments/{id}.json      a finished attachment's metadata
//! attachments/{id}.bin       its bytes (the `.part`, renamed on completion); a
//!                            drive file's bytes are a finished upload's too
//! drives/{id}.json           a drive: its folders and files (`core::drive::Tree`)
//! tmp/                       records being written; emptied at start-up
//! quarantine/                records start-up could not use, set aside for an
//!                            operator (`{dir}-{file}`)
//! lock                       locked (flock) by the process serving the directory;
//!                            holds its pid
//! clean                      left by a server that stopped with every commit
//!                            finished (`--fsync always`); taken at start-up
//! ```
//!
//! Every record is written whole to `tmp/`, synced (with `--fsync always`), and
//! renamed over the old one, so a crash leaves the old record or the new one, never
//! a torn one. A fragment's progress is the exception: it is an entry appended to
//! the session's journal, flushed with the fragment's bytes by one `fdatasync`
//! (a rewrite of the record cost three flushes and grew with every fragment).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use upsession_core::ByteRange;

use super::files::{FileHandle, Files};
use super::{ByteStream, FragmentSum, FragmentWriter, journal, safe};
use crate::config::Fsync;

/// The mark of a clean stop ([`Disk::mark_clean`]).
const CLEAN: &str = "clean";

/// Records and bytes under one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    files: Arc<dyn Files>,
    root: Arc<PathBuf>,
    fsync: Fsync,
}

/// Runs a flush on the request's own thread ([`tokio::task::block_in_place`]:
/// the worker hands its other tasks to another thread first, off the request's
/// path). A fragment's commit waits for its flush anyway; a hop to the blocking
/// pool put two thread wake-ups on every fragment's path (7-8 % of one upload's
/// throughput under `--fsync always`). A current-thread runtime (tests) cannot give its thread away: the
/// blocking pool then.
async fn flush<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(f);
    }
    blocking(f).await
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
    pub(crate) fn open(files: Arc<dyn Files>, root: &Path, fsync: Fsync) -> io::Result<Self> {
        for dir in [
            "items",
            "sessions",
            "attachments",
            "drives",
            "tmp",
            "quarantine",
        ] {
            files.create_dir_all(&root.join(dir))?;
        }
        for path in files.list(&root.join("tmp"))? {
            let _ = files.remove(&path);
        }
        Ok(Self {
            files,
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
        let files = Arc::clone(&self.files);
        let write = move || {
            files.write_file(&tmp, &bytes, sync, false)?;
            files.rename(&tmp, &target)?;
            if sync {
                files.sync_dir(&dir_path)?;
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
        for path in self.files.list(&self.root.join(dir))? {
            if path.extension().is_some_and(|e| e == "json") {
                // One bad file must not stop the server: it is set aside.
                let read = self
                    .files
                    .read(&path)
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
        let to = self.root.join("quarantine").join(&name);
        // A session's or an attachment's bytes go with its record, for the
        // operator to look at (and out of reach of the orphan sweep).
        for ext in ["part", "bin"] {
            let bytes = path.with_extension(ext);
            if path.extension().is_some_and(|e| e == "json") && self.files.len(&bytes).is_ok() {
                let to = self
                    .root
                    .join("quarantine")
                    .join(Path::new(&name).with_extension(ext));
                let _ = self.files.rename(&bytes, &to);
            }
        }
        match self.files.rename(path, &to) {
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
    /// file. A file longer than that whose bytes past `size` are a journal entry
    /// kept its session's journal (a power loss took the cut, not the rename,
    /// under `--fsync never`): cut now. Any other length is not in place.
    pub(crate) async fn attachment_in_place(&self, id: &str, size: u64) -> bool {
        let Ok(path) = self.path("attachments", id, "bin") else {
            return false;
        };
        let (files, sync) = (Arc::clone(&self.files), self.fsync == Fsync::Always);
        let checked = blocking(move || {
            let len = files.len(&path)?;
            if len > size {
                if !journal::starts_entry(&files.read_at(&path, size, journal::HEADER)?) {
                    return Ok(false);
                }
                let file = files.open_writer(&path)?;
                file.set_len(size)?;
                if sync {
                    file.sync_data()?;
                }
                return Ok(true);
            }
            Ok(len == size)
        });
        checked.await.unwrap_or(false)
    }

    /// How many bytes the session `id` has in its partial file, if it has one.
    pub(crate) async fn part_len(&self, id: &str) -> Option<u64> {
        self.len("sessions", id, "part").await
    }

    async fn len(&self, dir: &str, id: &str, ext: &str) -> Option<u64> {
        let path = self.path(dir, id, ext).ok()?;
        let files = Arc::clone(&self.files);
        blocking(move || files.len(&path)).await.ok()
    }

    /// Reads the server key, creating it (0600) on first start.
    fn key_file(&self) -> io::Result<[u8; 32]> {
        let path = self.root.join("server.key");
        match self.files.read(&path) {
            Ok(text) => parse_key(String::from_utf8_lossy(&text).trim()).ok_or_else(|| {
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
                self.files.write_file(&path, hex.as_bytes(), true, true)?;
                self.files.sync_dir(&self.root)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }
}

/// The CRC-32C of the bytes `start..end` of `path`, read a MiB at a time; an
/// error when the file ends before `end`.
fn crc_of(files: &dyn Files, path: &Path, start: u64, end: u64) -> io::Result<u32> {
    const CHUNK: u64 = 1 << 20;
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut at = start;
    while at < end {
        let want = (end - at).min(CHUNK);
        let bytes = files.read_at(path, at, usize::try_from(want).unwrap_or(usize::MAX))?;
        if bytes.len() as u64 != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is short",
            ));
        }
        digest.update(&bytes);
        at += want;
    }
    Ok(u32::try_from(digest.finalize()).unwrap_or_default())
}

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
pub(crate) struct Loaded<I, A, S, D> {
    pub(crate) items: Vec<I>,
    pub(crate) drives: Vec<D>,
    pub(crate) attachments: Vec<A>,
    pub(crate) sessions: Vec<S>,
    pub(crate) unreadable: Vec<PathBuf>,
}

impl Disk {
    /// Leaves `{root}/clean` behind a server that stopped with every commit
    /// finished (`--fsync always`): the next start need not check the last
    /// journal entry of each session against its bytes (every entry's flush
    /// ended). Synced, with its directory.
    pub(crate) async fn mark_clean(&self) -> io::Result<()> {
        let (files, root) = (Arc::clone(&self.files), Arc::clone(&self.root));
        blocking(move || {
            files.write_file(&root.join(CLEAN), b"", true, false)?;
            files.sync_dir(&root)
        })
        .await
    }

    /// Whether the last server stopped cleanly ([`Disk::mark_clean`]); the mark
    /// is taken away (durably) before anything else, so that a crash of this
    /// server is never taken for a clean stop.
    pub(crate) async fn take_clean(&self) -> io::Result<bool> {
        let (files, root) = (Arc::clone(&self.files), Arc::clone(&self.root));
        blocking(move || match files.remove(&root.join(CLEAN)) {
            Ok(()) => files.sync_dir(&root).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// The server key (created on first start).
    pub(crate) async fn server_key(&self) -> io::Result<[u8; 32]> {
        let this = self.clone();
        blocking(move || this.key_file()).await
    }

    /// Writes the record `id` of `dir` (`items`, `sessions`, `attachments`,
    /// `drives`).
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

    /// Removes an attachment's record, then its bytes (absent is fine). Bytes that
    /// cannot be removed now are an orphan the next start-up removes.
    pub(crate) async fn delete_attachment(&self, id: &str) -> io::Result<()> {
        self.remove("attachments", id, "json").await?;
        if let Err(e) = self.remove("attachments", id, "bin").await {
            tracing::warn!(attachment = %id, error = %e, "could not delete a deleted attachment's bytes");
        }
        Ok(())
    }

    /// Removes the file `id.ext` of `dir`; absent is fine.
    async fn remove(&self, dir: &'static str, id: &str, ext: &'static str) -> io::Result<()> {
        let path = self.path(dir, id, ext)?;
        let files = Arc::clone(&self.files);
        blocking(move || match files.remove(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Every record, for start-up.
    pub(crate) async fn load<I, A, S, D>(&self) -> io::Result<Loaded<I, A, S, D>>
    where
        D: for<'de> Deserialize<'de> + Send + 'static,
        I: for<'de> Deserialize<'de> + Send + 'static,
        A: for<'de> Deserialize<'de> + Send + 'static,
        S: for<'de> Deserialize<'de> + Send + 'static,
    {
        let this = self.clone();
        blocking(move || {
            let mut unreadable = Vec::new();
            Ok(Loaded {
                items: this.read_dir_json("items", &mut unreadable)?,
                drives: this.read_dir_json("drives", &mut unreadable)?,
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
/// frame cost more than the copy itself (two context switches per 64 KiB). Nothing
/// is synced here: the commit's one `fdatasync` takes the fragment's bytes and its
/// journal entry together ([`super::journal`]). With `--fsync always` the device's
/// writeback of each MiB is started as it is written (`start_writeback`, a hint),
/// so that `fdatasync` waits for the fragment's last MiB only; durability comes
/// from the `fdatasync` alone.
struct DiskWriter {
    file: Arc<dyn FileHandle>,
    offset: u64,
    /// With `--fsync always`, where the bytes not yet handed to the device's
    /// writeback start.
    unstarted: Option<u64>,
}

/// Bytes written before their writeback is started (`--fsync always`): the
/// commit's flush then waits for the last of them only.
const WRITEBACK_STEP: u64 = 1 << 20;

#[async_trait]
impl FragmentWriter for DiskWriter {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.file.write_at(&chunk, self.offset)?;
        self.offset += chunk.len() as u64;
        if let Some(from) = self.unstarted
            && self.offset - from >= WRITEBACK_STEP
        {
            self.file.start_writeback(from, self.offset - from);
            self.unstarted = Some(self.offset);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

impl Disk {
    /// Makes the (empty) file of a new session's bytes.
    pub(crate) async fn create_part(&self, session_id: &str) -> io::Result<()> {
        let path = self.path("sessions", session_id, "part")?;
        let files = Arc::clone(&self.files);
        blocking(move || files.write_file(&path, &[], false, false)).await
    }

    /// The session's `.part`, open for writes (kept open by its session).
    pub(crate) async fn open_part(&self, session_id: &str) -> io::Result<Arc<dyn FileHandle>> {
        let path = self.path("sessions", session_id, "part")?;
        let files = Arc::clone(&self.files);
        blocking(move || files.open_writer(&path).map(Arc::from)).await
    }

    /// A writer for one fragment into `part`, at `range`.
    pub(crate) fn writer(
        &self,
        part: &Arc<dyn FileHandle>,
        range: ByteRange,
    ) -> Box<dyn FragmentWriter> {
        Box::new(DiskWriter {
            file: Arc::clone(part),
            offset: range.start(),
            unstarted: (self.fsync == Fsync::Always).then_some(range.start()),
        })
    }

    /// Writes a journal entry at `offset` of `part`, and with `--fsync always`
    /// makes it durable together with every byte written to `part` before it: the
    /// one flush a fragment costs.
    pub(crate) async fn append_entry(
        &self,
        part: &Arc<dyn FileHandle>,
        offset: u64,
        entry: Vec<u8>,
    ) -> io::Result<()> {
        if self.fsync == Fsync::Always {
            let part = Arc::clone(part);
            return flush(move || {
                part.write_at(&entry, offset)?;
                part.sync_data()
            })
            .await;
        }
        part.write_at(&entry, offset)
    }

    /// With `--fsync always`, makes the bytes written to `part` durable (before a
    /// record that counts them).
    pub(crate) async fn sync_written(&self, part: &Arc<dyn FileHandle>) -> io::Result<()> {
        if self.fsync == Fsync::Always {
            let part = Arc::clone(part);
            return flush(move || part.sync_data()).await;
        }
        Ok(())
    }

    /// Sets `part`'s length to `len`, the file's size: a journal the record now
    /// counts, or bytes past a size learned late, are cut; a file not yet that
    /// long grows a hole. Not synced: what it drops no longer counts anyway.
    pub(crate) async fn cut(&self, part: &Arc<dyn FileHandle>, len: u64) -> io::Result<()> {
        let part = Arc::clone(part);
        blocking(move || part.set_len(len)).await
    }

    /// The journals of sessions, given as their ids and where each one's journal
    /// starts in its `.part` (`None` when its size is not known yet: none), or
    /// `None` for a session without a `.part`: at most [`journal::COMPACT_AT`] and
    /// one entry of each (a longer one was folded into its record), all read in one trip to
    /// the blocking pool (one trip each took start-up with ten thousand sessions
    /// past a second).
    pub(crate) async fn read_journals(
        &self,
        parts: Vec<(String, Option<u64>)>,
    ) -> io::Result<Vec<Option<Vec<u8>>>> {
        let (files, root) = (Arc::clone(&self.files), Arc::clone(&self.root));
        blocking(move || {
            let most = journal::COMPACT_AT + (journal::HEADER + journal::MAX_ENTRY) as u64;
            parts
                .into_iter()
                .map(|(id, base)| {
                    let path = root.join("sessions").join(format!("{}.part", safe(&id)?));
                    match (files.len(&path), base) {
                        (Ok(len), Some(base)) if len > base => {
                            let want = usize::try_from((len - base).min(most)).unwrap_or(0);
                            files.read_at(&path, base, want).map(Some)
                        }
                        (Ok(_), _) => Ok(Some(Vec::new())),
                        // No bytes' file (never made durable): start-up makes one.
                        (Err(e), _) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                        (Err(e), _) => Err(e),
                    }
                })
                .collect()
        })
        .await
    }

    /// Makes a session's bytes durable, whatever `--fsync` says: for a completion
    /// under `--fsync never` of a record without sums (from before they were
    /// kept), and at start-up for bytes checked against an attachment's sums.
    pub(crate) async fn sync_part(&self, session_id: &str) -> io::Result<()> {
        let path = self.path("sessions", session_id, "part")?;
        let files = Arc::clone(&self.files);
        blocking(move || files.open_writer(&path)?.sync_data()).await
    }

    /// Whether each fragment's bytes are synced with the record that counts them
    /// (`--fsync always`). When not, start-up checks them against their sums.
    pub(crate) fn fragments_synced(&self) -> bool {
        self.fsync == Fsync::Always
    }

    /// How far a session's bytes check out: the end of the last fragment, in
    /// order, whose bytes in the `.part` have the CRC-32C of its [`FragmentSum`].
    /// Bytes before the first sum (counted by a record written before sums were
    /// kept) are taken as they are.
    pub(crate) async fn intact_prefix(&self, session_id: &str, sums: &[FragmentSum]) -> u64 {
        let Ok(path) = self.path("sessions", session_id, "part") else {
            return 0;
        };
        self.intact(path, sums).await
    }

    /// Whether the bytes of the attachment `id` are all there with their `sums`
    /// (which must start at 0 and run to its end without a gap).
    pub(crate) async fn attachment_intact(
        &self,
        id: &str,
        size: u64,
        sums: &[FragmentSum],
    ) -> bool {
        let Ok(path) = self.path("attachments", id, "bin") else {
            return false;
        };
        sums.first().is_some_and(|s| s.start == 0)
            && sums.last().is_some_and(|s| s.end == size)
            && self.intact(path, sums).await == size
    }

    /// Makes the attachment `id`'s bytes durable.
    pub(crate) async fn sync_attachment(&self, id: &str) -> io::Result<()> {
        let path = self.path("attachments", id, "bin")?;
        let files = Arc::clone(&self.files);
        blocking(move || files.open_writer(&path)?.sync_data()).await
    }

    /// Makes every file's data on the attachments' file system durable at once
    /// (unsupported on a simulated one, and off Linux).
    pub(crate) async fn sync_all(&self) -> io::Result<()> {
        let (files, dir) = (Arc::clone(&self.files), self.root.join("attachments"));
        blocking(move || files.sync_file_system(&dir)).await
    }

    /// Whether a sync may run in the background, nobody waiting for it.
    pub(crate) fn background_syncs(&self) -> bool {
        self.files.background_syncs()
    }

    /// [`Disk::intact_prefix`] of the file at `path`.
    async fn intact(&self, path: PathBuf, sums: &[FragmentSum]) -> u64 {
        let Some(first) = sums.first() else {
            return u64::MAX;
        };
        let (files, sums, mut intact) = (Arc::clone(&self.files), sums.to_vec(), first.start);
        let checked = blocking(move || {
            for sum in &sums {
                let whole = sum.start == intact
                    && crc_of(&*files, &path, sum.start, sum.end).is_ok_and(|c| c == sum.crc32c);
                if !whole {
                    break;
                }
                intact = sum.end;
            }
            Ok(intact)
        });
        checked.await.unwrap_or(0)
    }

    /// Drops a session's partial bytes (absent is fine).
    pub(crate) async fn discard(&self, session_id: &str) -> io::Result<()> {
        self.remove("sessions", session_id, "part").await
    }

    /// Turns a complete session's bytes into its attachment's (idempotent): cut to
    /// the file's `size` (its journal goes), then renamed.
    ///
    /// Nothing is flushed in the usual case, in either `--fsync` mode: the bytes
    /// were flushed with the last fragment, and start-up repairs what a crash
    /// undoes here (a `.part` of a finished attachment is promoted again; a
    /// `.bin` that kept its journal is cut: `attachment_in_place`). Only a tail
    /// that does not start with a journal entry (a failed entry's zeroed header,
    /// bytes past the size a drive upload declared late), which start-up could
    /// not tell from damage, is cut durably under `--fsync always`.
    pub(crate) async fn promote(
        &self,
        session_id: &str,
        attachment_id: &str,
        size: u64,
    ) -> io::Result<()> {
        let from = self.path("sessions", session_id, "part")?;
        let to = self.path("attachments", attachment_id, "bin")?;
        let sync = self.fsync == Fsync::Always;
        let files = Arc::clone(&self.files);
        blocking(move || {
            match files.len(&from) {
                Ok(len) if len > size => {
                    // A tail that cannot be read is treated as not an entry.
                    let unrecognised = sync
                        && files
                            .read_at(&from, size, journal::HEADER)
                            .map_or(true, |tail| !journal::starts_entry(&tail));
                    let part = files.open_writer(&from)?;
                    part.set_len(size)?;
                    if unrecognised {
                        part.sync_data()?;
                    }
                }
                _ => {}
            }
            match files.rename(&from, &to) {
                // Already promoted by an earlier attempt: the attachment is there.
                Err(e) if e.kind() == io::ErrorKind::NotFound && files.len(&to).is_ok() => {
                    return Ok(());
                }
                other => other?,
            }
            Ok(())
        })
        .await
    }

    /// The bytes `window` of an attachment.
    pub(crate) async fn read(
        &self,
        attachment_id: &str,
        window: ByteRange,
    ) -> io::Result<ByteStream> {
        let path = self.path("attachments", attachment_id, "bin")?;
        let files = Arc::clone(&self.files);
        blocking(move || files.stream(&path, window)).await
    }

    /// Removes partial bytes of sessions not in `live` that no record owns, and
    /// attachment bytes whose record is gone (a delete cut short).
    pub(crate) async fn sweep_orphans(&self, live: &[String]) -> io::Result<usize> {
        let live: HashSet<String> = live.iter().map(|s| format!("{s}.part")).collect();
        let sessions = self.sweep_dir("sessions", "part", live).await?;
        // A completion writes the attachment's record before its bytes, so bytes
        // without a record are only ever a deletion's leftovers.
        Ok(sessions + self.sweep_dir("attachments", "bin", HashSet::new()).await?)
    }

    /// Removes the `.ext` files of `dir` not named in `live` and with no record
    /// (`.json`) beside them: a record we could not read still owns its bytes.
    async fn sweep_dir(
        &self,
        dir: &'static str,
        ext: &'static str,
        live: HashSet<String>,
    ) -> io::Result<usize> {
        let dir = self.root.join(dir);
        let files = Arc::clone(&self.files);
        blocking(move || {
            let entries = files.list(&dir)?;
            let mut removed = 0;
            for path in &entries {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(name) = name else { continue };
                let is_bytes = path.extension().is_some_and(|e| e == ext);
                let record = path.with_extension("json");
                if is_bytes && !live.contains(&name) && !entries.contains(&record) {
                    files.remove(path)?;
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
    use crate::store::files::RealFiles;
    use std::fs;

    #[test]
    fn ids_from_outside_never_become_paths() {
        use super::super::safe;
        for bad in ["", "../x", "a/b", "a.b", ".", "x\0"] {
            assert!(safe(bad).is_err(), "{bad:?}");
        }
        assert!(safe("AAMk-abc_09").is_ok());
    }

    #[tokio::test]
    async fn an_attachment_longer_than_its_size_is_cut_only_where_a_journal_follows() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(Arc::new(RealFiles), dir.path(), Fsync::Never).unwrap();
        let bin = |id: &str| dir.path().join("attachments").join(format!("{id}.bin"));
        let (record, _) = crate::store::tests::new_session("s", "i", 100);
        let entry = journal::Entry::of(
            &{
                let mut r = record.clone();
                r.sums.push(FragmentSum {
                    start: 0,
                    end: 10,
                    crc32c: 1,
                });
                r
            },
            0,
        )
        .unwrap()
        .encode();
        // The file's bytes, then its session's journal (the cut a power loss took).
        fs::write(bin("a"), [vec![7; 100], entry].concat()).unwrap();
        assert!(disk.attachment_in_place("a", 100).await);
        assert_eq!(fs::read(bin("a")).unwrap(), vec![7; 100]);
        // Anything else past the size is not ours to cut: not in place, untouched.
        fs::write(bin("b"), vec![7; 150]).unwrap();
        assert!(!disk.attachment_in_place("b", 100).await);
        assert_eq!(fs::metadata(bin("b")).unwrap().len(), 150);
        // Short is not in place either.
        assert!(!disk.attachment_in_place("b", 200).await);
    }

    /// A `.part` that records the writeback it is asked to start.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<(u64, u64)>>);

    impl FileHandle for Recording {
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn start_writeback(&self, offset: u64, len: u64) {
            self.0.lock().unwrap().push((offset, len));
        }
    }

    #[tokio::test]
    async fn with_fsync_always_writeback_starts_each_mib_as_it_is_written() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        for (fsync, expected) in [
            (
                Fsync::Always,
                vec![(5, MIB), (5 + MIB, MIB), (5 + 2 * MIB, MIB)],
            ),
            (Fsync::Never, vec![]),
        ] {
            let disk = Disk::open(Arc::new(RealFiles), dir.path(), fsync).unwrap();
            let recording = Arc::new(Recording::default());
            let part: Arc<dyn FileHandle> = recording.clone();
            let mut writer = disk.writer(&part, ByteRange::new(5, 5 + 3 * MIB + 100).unwrap());
            for _ in 0..6 {
                writer.write(Bytes::from(vec![0; 512 << 10])).await.unwrap();
            }
            // The tail, under a MiB, is the commit's fdatasync's to wait for.
            writer.write(Bytes::from(vec![0; 100])).await.unwrap();
            assert_eq!(*recording.0.lock().unwrap(), expected, "{fsync:?}");
        }
    }

    #[test]
    fn server_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(Arc::new(RealFiles), dir.path(), Fsync::Never).unwrap();
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
