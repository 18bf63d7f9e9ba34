//! Storage behind two traits: [`MetaStore`] for records (items, attachments,
//! sessions) and [`BlobStore`] for bytes (partial uploads and finished attachments),
//! with local disk as the implementation of both.
//!
//! # Disk layout (`--data-dir`)
//!
//! ```text
//! server.key                 32-byte HMAC key for uploadUrl credentials (0600)
//! items/{id}.json            a draft message or an event
//! sessions/{id}.json         an open (or completed, until expiry) upload session
//! sessions/{id}.part         its bytes so far, written at their offsets
//! attachments/{id}.json      a finished attachment's metadata
//! attachments/{id}.bin       its bytes (the `.part`, renamed on completion)
//! tmp/                       records being written; emptied at start-up
//! ```
//!
//! Every record is written whole to `tmp/`, synced (with `--fsync always`), and
//! renamed over the old one, so a crash leaves the old record or the new one, never
//! a torn one. Write-and-rename was chosen over an append-only log because records
//! are small and per-session, start-up reads one small file per session (no replay,
//! no compaction), and the S3/PostgreSQL backends later keep the same shape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use upsession_core::ByteRange;
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::SessionSnapshot;
use upsession_core::wire::{AttachmentItem, FileAttachment};

use crate::config::Fsync;

pub(crate) mod pg;
pub(crate) mod s3;

/// A draft message or an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ItemRecord {
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) subject: String,
    pub(crate) created: SystemTime,
}

/// [`ItemKind`] as records spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Kind {
    Message,
    Event,
}

impl From<ItemKind> for Kind {
    fn from(k: ItemKind) -> Self {
        match k {
            ItemKind::Message => Self::Message,
            ItemKind::Event => Self::Event,
        }
    }
}

impl From<Kind> for ItemKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Message => Self::Message,
            Kind::Event => Self::Event,
        }
    }
}

/// A finished attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttachmentRecord {
    pub(crate) item_id: String,
    pub(crate) meta: FileAttachment,
    /// The session whose bytes these are, where the byte store keeps fragments
    /// apart ([`BlobStore::keeps_parts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
    /// The fragments that make the attachment, in order (see `session`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parts: Vec<[u64; 2]>,
}

/// An upload session: where it will attach, and the core session's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRecord {
    pub(crate) id: String,
    pub(crate) item_id: String,
    pub(crate) kind: Kind,
    /// The API version and user of the create request, for the `Location`.
    pub(crate) beta: bool,
    pub(crate) user: Option<String>,
    /// Chosen at creation so that a crash during completion can be finished.
    pub(crate) attachment_id: String,
    /// Which app created the session (a digest of its token), for throttling.
    #[serde(default)]
    pub(crate) app: String,
    pub(crate) attachment: AttachmentItem,
    pub(crate) snapshot: SessionSnapshot,
    /// Acknowledged fragments as `[start, end)`, kept only where the byte store
    /// keeps fragments apart ([`BlobStore::keeps_parts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parts: Vec<[u64; 2]>,
}

impl SessionRecord {
    /// The path of the item, as the session was created through.
    pub(crate) fn item_path(&self) -> ItemPath {
        ItemPath {
            version: if self.beta {
                Version::Beta
            } else {
                Version::V1
            },
            user: self.user.clone().map_or(User::Me, User::Id),
            kind: self.kind.into(),
            id: self.item_id.clone(),
        }
    }
}

/// Everything [`MetaStore::load`] finds.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) items: Vec<ItemRecord>,
    pub(crate) attachments: Vec<AttachmentRecord>,
    pub(crate) sessions: Vec<SessionRecord>,
}

/// Where records live.
///
/// A store is either private to this process (disk: the server keeps every record
/// in memory and the store is its journal) or *shared* by several server nodes
/// (PostgreSQL): then nothing is cached across requests, each request reads what
/// it needs, and changes to a session happen under [`MetaStore::lock_session`].
#[async_trait]
pub(crate) trait MetaStore: Send + Sync + std::fmt::Debug {
    /// Other processes write to this store too.
    fn shared(&self) -> bool {
        false
    }
    /// The key that signs uploadUrl credentials, created on first use; every node
    /// of a shared store gets the same one.
    async fn server_key(&self) -> io::Result<[u8; 32]>;
    async fn put_item(&self, item: &ItemRecord) -> io::Result<()>;
    async fn put_attachment(&self, attachment: &AttachmentRecord) -> io::Result<()>;
    async fn put_session(&self, session: &SessionRecord) -> io::Result<()>;
    async fn delete_session(&self, id: &str) -> io::Result<()>;
    /// Everything stored, for start-up (a shared store returns nothing: it is read
    /// per request).
    async fn load(&self) -> io::Result<Loaded>;
    /// An item and its attachments (shared stores; others answer `None`).
    async fn get_item(&self, _id: &str) -> io::Result<Option<(ItemRecord, Vec<AttachmentRecord>)>> {
        Ok(None)
    }
    /// A session's record (shared stores; others answer `None`).
    async fn get_session(&self, _id: &str) -> io::Result<Option<SessionRecord>> {
        Ok(None)
    }
    /// The exclusive right to change a session, across every node (shared stores).
    async fn lock_session(&self, _id: &str) -> io::Result<Locked> {
        Ok(Locked::Missing)
    }
    /// Sessions whose deadline has passed (shared stores), at most `limit`.
    async fn due_sessions(&self, _now: SystemTime, _limit: u32) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// What [`MetaStore::lock_session`] found.
pub(crate) enum Locked {
    /// The session, now ours until the lock is saved or dropped.
    Held(Box<dyn SessionLock>),
    /// Another request (on any node) holds it.
    Busy,
    /// Too many sessions are locked on this node already: try again shortly.
    Saturated,
    /// No such session.
    Missing,
}

/// A session held exclusively. Dropping it without [`SessionLock::save`] changes
/// nothing.
#[async_trait]
pub(crate) trait SessionLock: Send + Sync {
    /// The session's record as it was when locked.
    fn record(&self) -> &SessionRecord;
    /// Writes the new record (or deletes it, with `None`) and, with it, a finished
    /// attachment, all or nothing; then releases the lock.
    async fn save(
        self: Box<Self>,
        session: Option<&SessionRecord>,
        attachment: Option<&AttachmentRecord>,
    ) -> io::Result<()>;
    /// Releases the lock, changing nothing, before the request is answered (a
    /// dropped lock is released too, but only some time later).
    async fn release(self: Box<Self>);
}

/// Writes one fragment's bytes, in order, at increasing offsets.
#[async_trait]
pub(crate) trait FragmentWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()>;
    /// Everything written is on the store (synced, if the policy says so).
    async fn finish(self: Box<Self>) -> io::Result<()>;
}

/// An attachment's bytes, in order.
pub(crate) type ByteStream = futures_util::stream::BoxStream<'static, io::Result<Bytes>>;

/// Where bytes live.
#[async_trait]
pub(crate) trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Fragments are stored apart (one object each), so sessions record them in
    /// [`SessionRecord::parts`] and attachments are read part by part.
    fn keeps_parts(&self) -> bool {
        false
    }
    /// Makes room for a new session's bytes.
    async fn create(&self, session_id: &str) -> io::Result<()>;
    /// A writer for the bytes of one fragment of `session_id`, `range`.
    async fn writer(
        &self,
        session_id: &str,
        range: ByteRange,
    ) -> io::Result<Box<dyn FragmentWriter>>;
    /// Drops a session's partial bytes (absent is fine).
    async fn discard(&self, session_id: &str) -> io::Result<()>;
    /// Turns a complete session's bytes into the attachment's (idempotent).
    async fn promote(&self, session: &SessionRecord) -> io::Result<()>;
    /// The attachment's bytes.
    async fn read(&self, attachment: &AttachmentRecord) -> io::Result<ByteStream>;
    /// Removes partial bytes of sessions not in `live`.
    async fn sweep_orphans(&self, live: &[String]) -> io::Result<usize>;
}

/// Records and bytes under one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    root: Arc<PathBuf>,
    fsync: Fsync,
}

/// Names from the outside world are never used in paths; ids are ours, but check.
fn safe(id: &str) -> io::Result<&str> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a valid id",
        ))
    }
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
        for dir in ["items", "sessions", "attachments", "tmp"] {
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

    fn read_dir_json<T: for<'de> Deserialize<'de>>(&self, dir: &str) -> io::Result<Vec<T>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join(dir))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path)?;
                match serde_json::from_slice(&bytes) {
                    Ok(v) => out.push(v),
                    // A record we cannot read is left in place for an operator to
                    // look at, and skipped: one bad file must not stop the server.
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "unreadable record skipped");
                    }
                }
            }
        }
        Ok(out)
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

#[async_trait]
impl MetaStore for Disk {
    async fn server_key(&self) -> io::Result<[u8; 32]> {
        let this = self.clone();
        blocking(move || this.key_file()).await
    }

    async fn put_item(&self, item: &ItemRecord) -> io::Result<()> {
        self.put_json("items", &item.id, item).await
    }

    async fn put_attachment(&self, attachment: &AttachmentRecord) -> io::Result<()> {
        self.put_json("attachments", &attachment.meta.id, attachment)
            .await
    }

    async fn put_session(&self, session: &SessionRecord) -> io::Result<()> {
        self.put_json("sessions", &session.id, session).await
    }

    async fn delete_session(&self, id: &str) -> io::Result<()> {
        let path = self.path("sessions", id, "json")?;
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    async fn load(&self) -> io::Result<Loaded> {
        let this = self.clone();
        blocking(move || {
            Ok(Loaded {
                items: this.read_dir_json("items")?,
                attachments: this.read_dir_json("attachments")?,
                sessions: this.read_dir_json("sessions")?,
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

#[async_trait]
impl BlobStore for Disk {
    async fn create(&self, session_id: &str) -> io::Result<()> {
        let path = self.path("sessions", session_id, "part")?;
        blocking(move || File::create(path).map(drop)).await
    }

    async fn writer(
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

    async fn discard(&self, session_id: &str) -> io::Result<()> {
        let path = self.path("sessions", session_id, "part")?;
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    async fn promote(&self, session: &SessionRecord) -> io::Result<()> {
        let from = self.path("sessions", &session.id, "part")?;
        let to = self.path("attachments", &session.attachment_id, "bin")?;
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

    async fn read(&self, attachment: &AttachmentRecord) -> io::Result<ByteStream> {
        let path = self.path("attachments", &attachment.meta.id, "bin")?;
        let file = tokio::fs::File::open(path).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        )))
    }

    async fn sweep_orphans(&self, live: &[String]) -> io::Result<usize> {
        let dir = self.root.join("sessions");
        let live: HashMap<String, ()> = live.iter().map(|s| (format!("{s}.part"), ())).collect();
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
                    && !live.contains_key(&name)
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
