//! Where sessions, items, attachments and their bytes are kept: one
//! [`SessionStore`] trait, and its two implementations.
//!
//! - [`local::LocalStore`]: one process, everything under `--data-dir` (the file
//!   layout is in [`disk`]), records also held in memory.
//! - [`shared::SharedStore`]: any number of nodes, records in PostgreSQL ([`pg`])
//!   and bytes in an S3-compatible bucket ([`s3`]); nothing cached across requests.
//!
//! The engine changes a session only through a [`SessionGuard`], which
//! [`SessionStore::lock`] hands out to one request at a time (a mutex per session
//! on one node, a lease in the session's row across nodes). How a store makes a fragment durable,
//! how it finishes an attachment, and what it deletes on expiry are its own
//! business: no code outside this module asks which store it has.
//!
//! A contributor adds a store by implementing both traits and passing the generic
//! suite in `tests` below (`store_suite`), which runs against every store.

use std::io;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use upsession_core::ByteRange;
use upsession_core::drive::{ConflictBehavior, ContentHasher, Hashes, Target, Tree};
use upsession_core::error::RequestError;
use upsession_core::identity::Mailbox;
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::{Answer, PendingCommit, Phase, SessionSnapshot};
use upsession_core::wire::{AttachmentItem, FileAttachment};

pub(crate) mod disk;
pub(crate) mod files;
pub(crate) mod journal;
pub(crate) mod local;
pub(crate) mod pg;
pub(crate) mod pg_tls;
#[cfg(test)]
pub(crate) mod power_loss;
pub(crate) mod s3;
pub(crate) mod shared;

/// A draft message or an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ItemRecord {
    pub(crate) id: String,
    pub(crate) kind: ItemKind,
    pub(crate) subject: String,
    pub(crate) created: SystemTime,
    /// Whose mailbox holds it (records from before identities: the sole user's).
    #[serde(default)]
    pub(crate) owner: Mailbox,
}

/// A finished attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttachmentRecord {
    pub(crate) item_id: String,
    pub(crate) meta: FileAttachment,
    /// The session that made it: it answers re-sends of the last fragment until it
    /// expires, and its fragment objects hold the bytes (shared store). Records
    /// written before it was kept by the local store have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
    /// Those fragments, in order (shared store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parts: Vec<s3::Part>,
    /// Under `--fsync never`, while its bytes are not known to be on the disk (the
    /// completion answers before they are synced): their sums, in order. Start-up
    /// checks an attachment that still has them and sets it aside if a power loss
    /// took its bytes; the sync after the answer clears them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) unsynced: Vec<FragmentSum>,
    /// A drive upload's hashes of every byte, taken as they came in. Kept here,
    /// with the proof of completion, so that a completion finished at start-up
    /// (its session record one fragment behind) still has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hashes: Option<Hashes>,
}

/// A drive: whose it is, and its folders and files. Its bytes are finished
/// uploads' ([`AttachmentRecord`]s whose `item_id` is the drive's id).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DriveRecord {
    pub(crate) owner: Mailbox,
    pub(crate) tree: Tree,
}

/// Where a drive upload puts its file, and its hashes so far.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DriveSession {
    /// The drive's id.
    pub(crate) drive: String,
    pub(crate) target: Target,
    pub(crate) conflict: ConflictBehavior,
    /// The file appears only at an explicit commit (an empty `POST`).
    #[serde(default)]
    pub(crate) defer_commit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// QuickXorHash and SHA-256 of the bytes committed so far.
    #[serde(default)]
    pub(crate) hasher: ContentHasher,
}

/// An upload session: where it will attach, and the core session's snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRecord {
    pub(crate) id: String,
    pub(crate) item_id: String,
    pub(crate) kind: ItemKind,
    /// The API version and user of the create request, for the `Location`.
    pub(crate) beta: bool,
    pub(crate) user: Option<String>,
    /// Chosen at creation so that a crash during completion can be finished.
    pub(crate) attachment_id: String,
    /// Which app created the session (a digest of its token), for throttling.
    #[serde(default)]
    pub(crate) app: String,
    pub(crate) attachment: AttachmentItem,
    /// The mailbox of its item (records from before identities: the sole user's).
    #[serde(default)]
    pub(crate) owner: Mailbox,
    pub(crate) snapshot: SessionSnapshot,
    /// Acknowledged fragments, listed here by records the shared store wrote
    /// before it kept them in a table of their own (`session_parts`); read, never
    /// added to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parts: Vec<s3::Part>,
    /// The CRC-32C of every acknowledged fragment, in order (records written
    /// before these were kept have none). On disk, the local store's record has
    /// those up to its last rewrite; its journal has the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) sums: Vec<FragmentSum>,
    /// A drive upload's destination (then `item_id` is the drive's id, and
    /// `kind`, `beta` and `user` mean nothing); `None` for an attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) drive: Option<Box<DriveSession>>,
    /// The local store's progress journal that continues this record: only its
    /// entries of this epoch count ([`journal`]). 0 at creation, then random,
    /// drawn anew at each rewrite of the record; the shared store keeps no
    /// journal (always 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) journal_epoch: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
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
            kind: self.kind,
            id: self.item_id.clone(),
        }
    }

    /// The attachment this session makes once complete, finished at `now`.
    pub(crate) fn attachment_record(&self, now: SystemTime) -> AttachmentRecord {
        AttachmentRecord {
            item_id: self.item_id.clone(),
            meta: FileAttachment::new(self.attachment_id.clone(), &self.attachment, now),
            session: Some(self.id.clone()),
            parts: Vec::new(),
            unsynced: Vec::new(),
            hashes: self.drive.as_ref().map(|d| d.hasher.finish()),
        }
    }
}

/// A fragment's commit, as a store makes it durable (see [`SessionGuard::commit`]).
#[derive(Debug)]
pub(crate) struct Commit {
    /// The fragment whose bytes (written and finished) now count.
    pub(crate) range: ByteRange,
    /// The session's record after it, with the core session's new snapshot.
    pub(crate) record: SessionRecord,
    /// The attachment it made, when it completed the upload.
    pub(crate) completed: Option<AttachmentRecord>,
}

/// A stored fragment and the CRC-32C of its bytes, so that start-up can tell
/// bytes a power loss took (never synced, under `--fsync never`) from bytes that
/// are there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FragmentSum {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) crc32c: u32,
}

impl SessionRecord {
    /// The commit of `range` (whose bytes have the CRC-32C `crc32c`, and take a
    /// drive upload's hashes to `hasher`) that `pending` prepared, at `now`.
    pub(crate) fn commit(
        &self,
        range: ByteRange,
        (crc32c, hasher): (u32, Option<ContentHasher>),
        pending: &PendingCommit,
        now: SystemTime,
    ) -> Commit {
        let mut record = self.clone();
        record.snapshot = pending.snapshot().clone();
        // A drive upload may learn its size from its first fragment.
        record.attachment.size = record.snapshot.size;
        record.sums.push(FragmentSum {
            start: range.start(),
            end: range.end(),
            crc32c,
        });
        if let (Some(drive), Some(hasher)) = (&mut record.drive, hasher) {
            drive.hasher = hasher;
        }
        let completed =
            (*pending.answer() == Answer::Completed).then(|| record.attachment_record(now));
        Commit {
            range,
            record,
            completed,
        }
    }
}

/// An item and its finished attachments, as one request sees them.
#[derive(Clone, Debug)]
pub(crate) struct ItemView {
    pub(crate) record: ItemRecord,
    pub(crate) attachments: Vec<AttachmentRecord>,
}

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The disk, the database or the bucket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store cannot take this request, for a reason the client is told.
    #[error(transparent)]
    Refused(RequestError),
}

/// What [`SessionStore::lock`] found.
pub(crate) enum Locked {
    /// The session, ours until the guard is dropped.
    Held(Box<dyn SessionGuard>),
    /// Another request (on this node or, for a shared store, on any) holds it.
    Busy,
    /// No such session.
    Missing,
}

/// How [`SessionStore::lock`] treats a session another request holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Answer [`Locked::Busy`] at once.
    No,
    /// Wait (a bounded time) for the holder to let go: it was asked to.
    ForRelease,
}

/// An attachment's bytes, in order.
pub(crate) type ByteStream = futures_util::stream::BoxStream<'static, io::Result<Bytes>>;

/// Where everything is kept.
#[async_trait]
pub(crate) trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The key that signs uploadUrl credentials, created on first use; every node
    /// of a shared store gets the same one.
    async fn server_key(&self) -> io::Result<[u8; 32]>;
    /// Stores a new draft or event.
    async fn put_item(&self, item: &ItemRecord) -> io::Result<()>;
    /// An item and its finished attachments.
    async fn item(&self, id: &str) -> io::Result<Option<ItemView>>;
    /// The bytes `window` of an attachment (all of them, or a download's
    /// `Range`), streamed: never the whole attachment in memory.
    async fn read_attachment(
        &self,
        attachment: &AttachmentRecord,
        window: ByteRange,
    ) -> io::Result<ByteStream>;
    /// Removes an attachment: its record first (from then on it is neither listed
    /// nor served), then its bytes. `false` when it was not there (any more).
    async fn delete_attachment(&self, attachment: &AttachmentRecord) -> io::Result<bool>;
    /// Stores a new session (its record, and room for its bytes).
    async fn create_session(&self, record: &SessionRecord) -> io::Result<()>;
    /// A session's last committed record, without locking it (for a status request).
    async fn peek(&self, id: &str) -> io::Result<Option<SessionRecord>>;
    /// The exclusive right to change a session.
    async fn lock(&self, id: &str, wait: Wait) -> Result<Locked, StoreError>;
    /// Sessions whose expiry may have come by `now`, at most `limit`.
    async fn due(&self, now: SystemTime, limit: usize) -> io::Result<Vec<String>>;
    /// When [`SessionStore::due`] may next find something; `None`: nothing is
    /// pending. Stores that can't tell (shared ones) answer a steady tick.
    fn next_due(&self, now: SystemTime) -> Option<SystemTime>;
    /// How many records opening the store set aside as unusable.
    fn quarantined(&self) -> usize {
        0
    }
    /// Waits for the work a store goes on with after answering (the local store's
    /// syncs after completions under `--fsync never`); called when the server stops.
    async fn settled(&self) {}
    /// A drive.
    async fn drive(&self, id: &str) -> io::Result<Option<DriveRecord>>;
    /// Stores `drive` if the stored one is still at version `read` (`None`: there
    /// is none yet); `false` when another change came first (read it again).
    async fn put_drive(&self, drive: &DriveRecord, read: Option<u64>) -> io::Result<bool>;
    /// A finished attachment (or drive file's bytes) by id.
    async fn attachment(&self, id: &str) -> io::Result<Option<AttachmentRecord>>;
    /// Every finished drive upload (an attachment whose item is a drive), with
    /// its drive, for start-up's reconciliation.
    async fn drive_uploads(&self) -> io::Result<Vec<AttachmentRecord>>;
    /// The store's time, given this node's (`local`): a shared store's is its
    /// database's, so that every node decides expiry by one clock, whatever the
    /// nodes' own clocks say.
    fn now(&self, local: SystemTime) -> SystemTime {
        local
    }
    /// Measures the store's clock against this node's (`local` reads it); the
    /// sweep calls it every time.
    async fn sync_clock(&self, _local: &(dyn Fn() -> SystemTime + Send + Sync)) {}
    /// Whether the store can serve requests now: its database and its bucket
    /// answer (`/readyz`). The local store is ready while it is open.
    async fn ready(&self) -> io::Result<()> {
        Ok(())
    }
    /// Deletes stored bytes that no record names any more (a deletion of a
    /// record whose bytes could not go then); how many sessions' bytes went.
    /// The local store does this at start-up, when it opens.
    async fn collect_garbage(&self) -> io::Result<usize> {
        Ok(0)
    }
    /// Every session this node knows of, for the test double's inspection route.
    async fn list_sessions(&self) -> io::Result<Vec<SessionRecord>>;
    /// Every session still uploading (in the open phase), as the per-token limits
    /// count them: `(app, session id, declared size)`.
    async fn uploading(&self) -> io::Result<Vec<Uploading>>;
}

/// A session still uploading: `(app, session id, declared size)`.
pub(crate) type Uploading = (String, String, u64);

impl SessionRecord {
    /// The record as the per-token limits count it, while it is still uploading.
    pub(crate) fn uploading(&self) -> Option<Uploading> {
        (self.snapshot.phase == Phase::Open)
            .then(|| (self.app.clone(), self.id.clone(), self.snapshot.size))
    }
}

/// Writes one fragment's bytes, in order, at increasing offsets.
#[async_trait]
pub(crate) trait FragmentWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> io::Result<()>;
    /// Everything written is on the store: in the bucket (shared store), or in
    /// the file, made durable by the commit that counts it (local store).
    async fn finish(self: Box<Self>) -> io::Result<()>;
}

/// A session held by one request. Dropping it changes nothing and lets go.
#[async_trait]
pub(crate) trait SessionGuard: Send {
    /// The session's record as last committed.
    fn record(&self) -> &SessionRecord;
    /// A writer for the bytes of `range`; a store that cannot take the fragment
    /// refuses it here.
    async fn writer(&mut self, range: ByteRange) -> Result<Box<dyn FragmentWriter>, StoreError>;
    /// Makes a fragment's [`Commit`] durable: its bytes count, the session's record
    /// is its record, and, if it completed the upload, its attachment exists. All of
    /// it or none of it is kept.
    async fn commit(&mut self, commit: Commit) -> io::Result<()>;
    /// Lets go now, changing nothing (dropping the guard lets go too, but a shared
    /// store's row may stay locked a moment longer).
    async fn release(self: Box<Self>);
    /// Removes the closed session's record and, with `discard_partial`, its
    /// bytes; a completed session's attachment stays.
    async fn close(self: Box<Self>, discard_partial: bool) -> io::Result<()>;
}

/// When a session recorded as `snapshot` is next due for expiry (the core decides);
/// a record left behind in a closed phase is due at once.
pub(crate) fn deadline(snapshot: &SessionSnapshot) -> Option<SystemTime> {
    let mut session = upsession_core::session::Session::restore(snapshot).ok()?;
    if session.poll_cleanup().is_some() {
        return Some(SystemTime::UNIX_EPOCH);
    }
    session.poll_timeout()
}

/// Whether `e`, or any error it was caused by, satisfies `test`.
pub(crate) fn any_cause(
    e: &(dyn std::error::Error + 'static),
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if test(c) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether `e` is a socket error that says the other end is out of reach: the
/// connection refused, reset, cut or timed out, or no route to it. A shared
/// store's database and bucket both answer such a request 503 (`ConnectionAborted`).
pub(crate) fn socket_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::TimedOut
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
        )
    })
}

/// Names from the outside world are never used in paths or keys; ids are ours,
/// but check.
pub(crate) fn safe(id: &str) -> io::Result<&str> {
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

#[cfg(test)]
pub(crate) mod tests;
