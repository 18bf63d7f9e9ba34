//! The store of one process: every record on disk under `--data-dir` ([`Disk`])
//! and in memory, sessions locked by a mutex each, expiry by a timer table.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tracing::{debug, info, warn};
use upsession_core::ByteRange;
use upsession_core::session::{Phase, Recovery};
use upsession_core::timer::Timers;

use super::disk::Disk;
use super::files::{FileHandle, Files, RealFiles};
use super::journal;
use super::{
    AttachmentRecord, ByteStream, Commit, DriveRecord, FragmentSum, FragmentWriter, ItemRecord,
    ItemView, Locked, SessionGuard, SessionRecord, SessionStore, StoreError, Uploading, Wait,
    deadline,
};
use crate::config::Fsync;

/// How long a request that asked the holder of a session to let go waits for it:
/// a holder notices at its next body frame, or once its commit is written.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Records and bytes under one data directory.
#[derive(Clone, Debug)]
pub(crate) struct LocalStore {
    inner: Arc<Inner>,
    /// Records start-up set aside.
    quarantined: usize,
}

#[derive(Debug)]
struct Inner {
    /// `{data-dir}/lock`, locked while this store is open.
    _lock: Box<dyn std::fmt::Debug + Send + Sync>,
    disk: Disk,
    items: RwLock<HashMap<String, LocalItem>>,
    attachments: RwLock<HashMap<String, AttachmentRecord>>,
    sessions: RwLock<HashMap<String, Arc<Slot>>>,
    drives: RwLock<HashMap<String, DriveRecord>>,
    /// One drive change at a time is written (each over the version it read).
    drive_writes: tokio::sync::Mutex<()>,
    timers: Mutex<Timers<String>>,
    /// The syncs after completions' answers (`--fsync never`), waited for when
    /// the server stops.
    settling: tokio_util::task::TaskTracker,
    /// Cancelled when the server stops: the syncs waiting for their time run at
    /// once.
    stopping: tokio_util::sync::CancellationToken,
    /// Completed attachments whose bytes wait for their sync (`--fsync never`),
    /// in the order they completed, each with when it is due; one task,
    /// [`settler`], works through them.
    unsettled: Mutex<std::collections::VecDeque<(tokio::time::Instant, String)>>,
    /// Wakes the settler when it waits on an empty queue.
    settle_wake: Arc<tokio::sync::Notify>,
    /// The settler was started (on the first completion that needs it).
    settler_started: std::sync::atomic::AtomicBool,
    /// Room for [`OPEN_PARTS`] open `.part` files.
    open_parts: Arc<tokio::sync::Semaphore>,
    /// A journal entry's flush failed: its bytes may be on the disk in part, so
    /// the stop is not marked clean (the next start checks last entries).
    entry_failed: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct LocalItem {
    record: ItemRecord,
    attachments: Vec<String>,
}

/// One session: its last committed record, and the lock a request holds it by.
#[derive(Debug)]
struct Slot {
    record: Mutex<SessionRecord>,
    held: Arc<tokio::sync::Mutex<()>>,
    part: Mutex<Part>,
}

/// A session's `.part`, as its fragments use it.
struct Part {
    /// Kept open between fragments (while fewer than [`OPEN_PARTS`] are).
    file: Option<(Arc<dyn FileHandle>, tokio::sync::OwnedSemaphorePermit)>,
    /// Where its next journal entry goes.
    journal_end: u64,
    /// A journal entry failed: the next commit rewrites the record.
    rewrite: bool,
}

/// How many sessions' `.part` files stay open between fragments: a fragment of
/// another opens its file again (a blocking-pool hop), so that ten thousand
/// sessions never take ten thousand descriptors.
const OPEN_PARTS: usize = 256;

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part")
            .field("open", &self.file.is_some())
            .field("journal_end", &self.journal_end)
            .field("rewrite", &self.rewrite)
            .finish()
    }
}

impl LocalStore {
    /// Opens `root` (creating its layout), loads every record, finishes what a
    /// crash cut short, and removes bytes no session owns.
    pub(crate) async fn open(root: &Path, fsync: Fsync) -> io::Result<Self> {
        Self::open_on(Arc::new(RealFiles), root, fsync).await
    }

    /// [`LocalStore::open`] on `files` (a test's power-loss simulation).
    #[allow(clippy::too_many_lines)] // start-up's steps, in their order, each said
    pub(crate) async fn open_on(
        files: Arc<dyn Files>,
        root: &Path,
        fsync: Fsync,
    ) -> io::Result<Self> {
        // Before anything is read or cleared: the directory may be another's.
        let lock = files.lock(root)?;
        let disk = Disk::open(files, root, fsync)?;
        let clean = disk.take_clean().await?;
        let loaded = disk
            .load::<ItemRecord, AttachmentRecord, SessionRecord, DriveRecord>()
            .await?;
        let mut quarantined = loaded.unreadable.len();
        let mut attachments: HashMap<String, AttachmentRecord> = loaded
            .attachments
            .into_iter()
            .map(|a| (a.meta.id.clone(), a))
            .collect();
        // Before the sessions: a completion whose bytes a power loss took is no
        // completion.
        let (lost, lost_completions) = check_unsynced(&disk, &mut attachments).await;
        quarantined += lost;
        let mut sessions = HashMap::new();
        let mut timers = Timers::new();
        // A drive upload's "item" is its drive.
        let item_ids: std::collections::HashSet<&str> = loaded
            .items
            .iter()
            .map(|i| i.id.as_str())
            .chain(loaded.drives.iter().map(|d| d.tree.id.as_str()))
            .collect();
        // Journals are read a batch of sessions at a time: one trip to the blocking
        // pool per batch, and never all of them in memory at once.
        let mut records = loaded.sessions.into_iter().peekable();
        while records.peek().is_some() {
            let batch: Vec<SessionRecord> = records.by_ref().take(JOURNAL_BATCH).collect();
            let mut journals = journals_of(&disk, &batch).await?;
            for record in batch {
                let recorded = attachments.get(&record.attachment_id).map(|a| a.meta.size);
                let has_item = item_ids.contains(record.item_id.as_str());
                let lost_completion = lost_completions
                    .contains(&record.id)
                    .then_some("its completion's bytes are gone after a power loss");
                if let Some(why) = lost_completion
                    .or_else(|| lost_to_power(&disk, &record, has_item, recorded.is_some()))
                {
                    // Forgotten, never half-kept: resuming the upload is 404, and the
                    // client starts it again.
                    warn!(session = %record.id, "{why}: session removed");
                    let _ = disk.delete_session(&record.id).await;
                    let _ = disk.discard(&record.id).await;
                    continue;
                }
                // Read with the journals: start-up looks at a `.part` once.
                let part_missing = journals.get(&record.id).is_some_and(Option::is_none);
                let Some((record, resume)) =
                    recover(&disk, record, recorded, &mut journals, clean).await
                else {
                    quarantined += 1;
                    continue;
                };
                // Attachments recorded before they named their session learn it here.
                if let Some(a) = attachments.get_mut(&record.attachment_id) {
                    a.session.get_or_insert_with(|| record.id.clone());
                } else if part_missing {
                    // The file of its bytes was never made durable (`--fsync never`);
                    // recovery counted none of them, and the upload goes on in a new one.
                    if let Err(e) = disk.create_part(&record.id).await {
                        warn!(session = %record.id, error = %e, "could not recreate the bytes' file");
                    }
                }
                if let Some(at) = deadline(&record.snapshot) {
                    timers.set(record.id.clone(), at);
                }
                sessions.insert(record.id.clone(), Arc::new(Slot::new(record, resume)));
            }
        }
        quarantined += keep_attachments_in_place(&disk, &mut attachments, &sessions).await;
        let items = items_with(loaded.items, &attachments);
        let drives: HashMap<String, DriveRecord> = loaded
            .drives
            .into_iter()
            .map(|d| (d.tree.id.clone(), d))
            .collect();
        let live: Vec<String> = sessions.keys().cloned().collect();
        let orphans = disk.sweep_orphans(&live).await?;
        info!(
            items = items.len(),
            attachments = attachments.len(),
            sessions = sessions.len(),
            orphans_removed = orphans,
            quarantined,
            "state loaded"
        );
        Ok(Self {
            quarantined,
            inner: Arc::new(Inner {
                _lock: lock,
                disk,
                items: RwLock::new(items),
                attachments: RwLock::new(attachments),
                sessions: RwLock::new(sessions),
                drives: RwLock::new(drives),
                drive_writes: tokio::sync::Mutex::new(()),
                timers: Mutex::new(timers),
                settling: tokio_util::task::TaskTracker::new(),
                stopping: tokio_util::sync::CancellationToken::new(),
                unsettled: Mutex::new(std::collections::VecDeque::new()),
                settle_wake: Arc::new(tokio::sync::Notify::new()),
                settler_started: std::sync::atomic::AtomicBool::new(false),
                open_parts: Arc::new(tokio::sync::Semaphore::new(OPEN_PARTS)),
                entry_failed: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// Why a session a power loss left without its item or its completion must go
/// (only where records are not synced, `--fsync never`): kept, it would answer 201
/// for an attachment nobody can read.
fn lost_to_power(
    disk: &Disk,
    record: &SessionRecord,
    has_item: bool,
    recorded: bool,
) -> Option<&'static str> {
    if disk.fragments_synced() {
        return None;
    }
    if !has_item {
        Some("its item is gone after a power loss")
    } else if record.snapshot.phase == Phase::Completed && !recorded {
        Some("its completion is gone after a power loss")
    } else {
        None
    }
}

/// The items, each with its attachments.
fn items_with(
    items: Vec<ItemRecord>,
    attachments: &HashMap<String, AttachmentRecord>,
) -> HashMap<String, LocalItem> {
    let mut items: HashMap<String, LocalItem> = items
        .into_iter()
        .map(|r| {
            let item = LocalItem {
                record: r,
                attachments: Vec::new(),
            };
            (item.record.id.clone(), item)
        })
        .collect();
    for a in attachments.values() {
        if let Some(item) = items.get_mut(&a.item_id) {
            item.attachments.push(a.meta.id.clone());
        }
    }
    items
}

/// Where a recovered session's journal goes on.
#[derive(Clone, Copy, Debug)]
struct Resume {
    /// Where its next entry goes.
    journal_end: u64,
    /// Its next commit rewrites the record (start-up could not).
    rewrite: bool,
}

impl Resume {
    const fn at(journal_end: u64) -> Self {
        Self {
            journal_end,
            rewrite: false,
        }
    }

    const fn rewrite_at(journal_end: u64) -> Self {
        Self {
            journal_end,
            rewrite: true,
        }
    }
}

/// How many sessions' journals start-up reads in one trip to the blocking pool.
const JOURNAL_BATCH: usize = 256;

/// The journals of `sessions`, by session id (`None`: the session has no `.part`).
/// A journal that cannot be read stops start-up: taken as empty, its session's
/// next entries would overwrite acknowledged ones.
async fn journals_of(
    disk: &Disk,
    sessions: &[SessionRecord],
) -> io::Result<HashMap<String, Option<Vec<u8>>>> {
    let with: Vec<(String, Option<u64>)> = sessions
        .iter()
        .map(|r| (r.id.clone(), journal::base(r)))
        .collect();
    let ids: Vec<String> = with.iter().map(|(id, _)| id.clone()).collect();
    Ok(ids
        .into_iter()
        .zip(disk.read_journals(with).await?)
        .collect())
}

/// A session's record brought up to date with its journal's entries (`journal`,
/// its bytes), and where its next entry goes; after a `clean` stop the last
/// entry's bytes are not read back.
async fn replay(
    disk: &Disk,
    mut record: SessionRecord,
    journal: &[u8],
    clean: bool,
) -> (SessionRecord, u64) {
    let mut end = 0;
    // What the last entry changed, to take it back (no copy of the growing sums).
    let mut before_last = None;
    for (entry, next) in journal::decode(journal, 0) {
        let before = (
            record.snapshot.clone(),
            record.drive.as_ref().map(|d| d.hasher.clone()),
            end,
        );
        if !entry.apply(&mut record) {
            break;
        }
        before_last = Some(before);
        end = next;
    }
    // Each entry was flushed with its fragment's bytes before the next was
    // written (`--fsync always`; a failed flush's entry is zeroed and the next
    // commit rewrites the record), so only the last one's flush may have been cut
    // short, leaving the entry without its bytes: they must check out. (Under
    // `--fsync never` start-up checks every fragment's bytes.) After a clean stop
    // every flush had ended: nothing to read back.
    if disk.fragments_synced()
        && !clean
        && let Some((snapshot, hasher, at)) = before_last
        && let Some(sum) = record.sums.last().copied()
        && disk.intact_prefix(&record.id, &[sum]).await != sum.end
    {
        warn!(session = %record.id, "the last journal entry's bytes did not reach the disk: dropped");
        record.sums.pop();
        record.snapshot = snapshot;
        record.attachment.size = record.snapshot.size;
        if let (Some(drive), Some(hasher)) = (&mut record.drive, hasher) {
            drive.hasher = hasher;
        }
        return (record, at);
    }
    (record, end)
}

/// What start-up does with one session record (the core decides, from what the
/// disk holds).
/// `recorded` is the size of the attachment the session made, if its record
/// exists; `journals` the bytes of sessions' journals (its own is taken);
/// `clean` whether the last server stopped cleanly. With the record, where its
/// journal goes on.
async fn recover(
    disk: &Disk,
    record: SessionRecord,
    recorded: Option<u64>,
    journals: &mut HashMap<String, Option<Vec<u8>>>,
    clean: bool,
) -> Option<(SessionRecord, Resume)> {
    let journal = journals.remove(&record.id).flatten().unwrap_or_default();
    let (mut record, journal_end) = replay(disk, record, &journal, clean).await;
    if let Some(size) = recorded
        && record.snapshot.unsized_max.is_some()
    {
        // A drive upload whose one fragment completed it: the record before it
        // did not know the size yet; its attachment does.
        record.snapshot.size = size;
        record.snapshot.unsized_max = None;
    }
    let recorded = recorded.is_some();
    let intact = if disk.fragments_synced() {
        u64::MAX
    } else {
        disk.intact_prefix(&record.id, &record.sums).await
    };
    match Recovery::decide_checked(&record.snapshot, recorded, intact) {
        Ok(Recovery::FinishCompletion(done)) => {
            // One session that cannot be finished now must not stop the server; it
            // is finished at a later start.
            match disk
                .promote(&record.id, &record.attachment_id, record.snapshot.size)
                .await
            {
                Ok(()) => {
                    record.snapshot = done.snapshot();
                    if let Err(e) = disk.put("sessions", &record.id, &record).await {
                        warn!(session = %record.id, error = %e, "could not record an interrupted completion");
                    }
                }
                Err(e) => {
                    warn!(session = %record.id, error = %e, "could not finish an interrupted completion");
                }
            }
            Some((record, Resume::at(journal_end)))
        }
        Ok(Recovery::Forget { session, forgotten }) => {
            // Never served: the client is asked for these bytes again.
            warn!(session = %record.id, forgotten, "bytes that were never synced are gone after a power loss");
            record.snapshot = session.snapshot();
            record.sums.retain(|s| s.end <= intact);
            if let Some(drive) = &mut record.drive {
                // Its hashes took in the lost bytes too and cannot be rewound:
                // the upload starts again from its first byte.
                record.snapshot.received.clear();
                record.sums.clear();
                drive.hasher = upsession_core::drive::ContentHasher::default();
            }
            // The journal's entries counted the lost bytes: never replayed again.
            let epoch = std::mem::replace(&mut record.journal_epoch, journal::new_epoch());
            if let Err(e) = disk.put("sessions", &record.id, &record).await {
                warn!(session = %record.id, error = %e, "could not record the forgotten bytes");
                // The disk still has the old epoch: entries go on in it, after its
                // journal, and the next commit rewrites the record.
                record.journal_epoch = epoch;
                return Some((record, Resume::rewrite_at(journal_end)));
            }
            // The new epoch's journal starts at its beginning.
            Some((record, Resume::at(0)))
        }
        Ok(_) => Some((record, Resume::at(journal_end))),
        Err(e) => {
            disk.quarantine("sessions", &record.id, e.to_string()).await;
            None
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The settler, if it waits on an empty queue, ends.
        self.stopping.cancel();
    }
}

/// How long a completed attachment's bytes are left to the kernel before
/// [`settle`] syncs them (`--fsync never`): Linux writes dirty pages back once
/// they are 30 s old (`vm.dirty_expire_centisecs`) at its flusher's next round,
/// up to 5 s later (`vm.dirty_writeback_centisecs`), so by then the sync mostly
/// finds them written and costs a journal commit, where at once it wrote them
/// itself, beside the uploads still going. A crash in between costs a read-back
/// of those attachments at start-up, as it did before the sync.
const SETTLE_AFTER: Duration = Duration::from_secs(40);

/// How many attachments waiting for their sync at a stop make one `syncfs`
/// worth it, rather than a sync each.
const SYNCFS_FROM: usize = 16;

/// Works through the store's unsettled attachments ([`Inner::unsettled`]) in
/// order, each once it is due, or at once when the server stops; ends when the
/// store is gone, or stopping with nothing left. One task, however many
/// completions wait: each costs a queue entry, not a task.
async fn settler(disk: Disk, store: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = store.upgrade() else {
            return;
        };
        let stopping = inner.stopping.clone();
        let next = inner
            .unsettled
            .lock()
            .expect("settle lock")
            .front()
            .cloned();
        let Some((due, id)) = next else {
            if stopping.is_cancelled() {
                return;
            }
            // A wake sent since the queue was read is kept for this wait; the
            // store is not held meanwhile.
            let wake = Arc::clone(&inner.settle_wake);
            drop(inner);
            tokio::select! {
                () = wake.notified() => {}
                () = stopping.cancelled() => {}
            }
            continue;
        };
        drop(inner);
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = stopping.cancelled() => {}
        }
        if stopping.is_cancelled() {
            // A stop: all that is left at once, with one sync of the file system.
            let Some(inner) = store.upgrade() else {
                return;
            };
            let left: Vec<String> = {
                let mut queue = inner.unsettled.lock().expect("settle lock");
                queue.drain(..).map(|(_, id)| id).collect()
            };
            drop(inner);
            // Past a few, one sync of the whole file system (other programs'
            // writes on it too) takes the journal commit for all of them; each
            // file's own sync after it then finds nothing to commit, and still
            // reports a write error of that file that `syncfs` may not.
            if left.len() >= SYNCFS_FROM
                && let Err(e) = disk.sync_all().await
            {
                debug!(error = %e, "no syncfs; a sync per attachment");
            }
            for id in left {
                settle(disk.clone(), store.clone(), id).await;
            }
            continue;
        }
        settle(disk.clone(), store.clone(), id).await;
        if let Some(inner) = store.upgrade() {
            inner.unsettled.lock().expect("settle lock").pop_front();
        }
    }
}

/// Syncs the bytes of an attachment completed without waiting for them, then
/// drops its sums from its record: start-up need not check it any more. It holds
/// the store only weakly (a stopping server waits for it, see
/// [`SessionStore::settled`]); an attachment deleted meanwhile is left alone, and
/// a record a delete took while it was written is removed again.
async fn settle(disk: Disk, store: std::sync::Weak<Inner>, id: String) {
    // One at a time: many syncs at once competed with the uploads still going.
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let exists = |store: &std::sync::Weak<Inner>| {
        store.upgrade().is_some_and(|s| {
            s.attachments
                .read()
                .expect("attachments lock")
                .contains_key(&id)
        })
    };
    if !exists(&store) {
        return;
    }
    let Ok(_turn) = ONE_AT_A_TIME.acquire().await else {
        return;
    };
    if let Err(e) = disk.sync_attachment(&id).await {
        // Deleted since it was looked for: nothing to sync.
        if e.kind() != io::ErrorKind::NotFound || exists(&store) {
            warn!(attachment = %id, error = %e, "could not sync a completed attachment's bytes; start-up will check them");
        }
        return;
    }
    settled_as_synced(&disk, &store, &id).await;
}

/// Records the attachment `id`, whose bytes are now synced, as synced (its sums
/// dropped): start-up need not check it any more.
async fn settled_as_synced(disk: &Disk, store: &std::sync::Weak<Inner>, id: &str) {
    let Some(store) = store.upgrade() else {
        return;
    };
    let settled = {
        let mut attachments = store.attachments.write().expect("attachments lock");
        attachments.get_mut(id).map(|a| {
            a.unsynced.clear();
            a.clone()
        })
    };
    if let Some(att) = settled
        && let Err(e) = disk.put("attachments", id, &att).await
    {
        warn!(attachment = %id, error = %e, "could not record a completed attachment as synced");
    }
    // Deleted while this record was written: it must not come back.
    let gone = !store
        .attachments
        .read()
        .expect("attachments lock")
        .contains_key(id);
    if gone {
        let _ = disk.delete_attachment(id).await;
    }
}

/// Whether `sums` are of every byte of a file of `size`, in order.
fn covers(sums: &[FragmentSum], size: u64) -> bool {
    sums.first().is_some_and(|s| s.start == 0)
        && sums.last().is_some_and(|s| s.end == size)
        && sums.windows(2).all(|w| w[0].end == w[1].start)
}

/// Keeps the attachments whose bytes are in place, finishing a completion whose
/// last rename was lost where the session's bytes are whole; sets the others
/// aside (an attachment is never listed without its bytes, nor over bytes a
/// power loss took before they were synced). Returns how many were set aside.
async fn keep_attachments_in_place(
    disk: &Disk,
    attachments: &mut HashMap<String, AttachmentRecord>,
    sessions: &HashMap<String, Arc<Slot>>,
) -> usize {
    let mut missing = Vec::new();
    for (id, a) in attachments.iter() {
        if disk.attachment_in_place(id, a.meta.size).await {
            continue;
        }
        let owner = sessions
            .values()
            .find_map(|slot| {
                let record = slot.record.lock().expect("record lock");
                (record.attachment_id == *id).then(|| record.id.clone())
            })
            // The session's record may be gone where its bytes are not.
            .or_else(|| a.session.clone());
        if let Some(session) = owner
            && disk
                .part_len(&session)
                .await
                .is_some_and(|len| len >= a.meta.size)
            && disk.promote(&session, id, a.meta.size).await.is_ok()
        {
            continue;
        }
        missing.push(id.clone());
    }
    for id in &missing {
        attachments.remove(id);
        let why = "its bytes are missing or short".to_owned();
        disk.quarantine("attachments", id, why).await;
    }
    missing.len()
}

/// Checks the attachments completed under `--fsync never` whose bytes were not
/// yet known to be synced against their sums: in the `.bin`, or in the session's
/// `.part` where the rename to `.bin` did not last. Those whose bytes check out
/// are synced and recorded as such; those a power loss took are set aside, so
/// that their sessions count as never completed (and go: the client starts the
/// upload again). Returns how many were set aside.
async fn check_unsynced(
    disk: &Disk,
    attachments: &mut HashMap<String, AttachmentRecord>,
) -> (usize, std::collections::HashSet<String>) {
    let mut lost = Vec::new();
    for (id, a) in attachments.iter_mut() {
        if a.unsynced.is_empty() {
            continue;
        }
        let size = a.meta.size;
        let (intact, synced) = if disk.attachment_in_place(id, size).await {
            let intact = disk.attachment_intact(id, size, &a.unsynced).await;
            (intact, intact && disk.sync_attachment(id).await.is_ok())
        } else if let Some(session) = a.session.as_ref().filter(|_| covers(&a.unsynced, size)) {
            let intact = disk.intact_prefix(session, &a.unsynced).await == size;
            (intact, intact && disk.sync_part(session).await.is_ok())
        } else {
            (false, false)
        };
        if !intact {
            lost.push(id.clone());
        } else if synced {
            a.unsynced.clear();
            let _ = disk.put("attachments", id, &*a).await;
        }
    }
    let mut sessions = std::collections::HashSet::new();
    for id in &lost {
        if let Some(a) = attachments.remove(id) {
            sessions.extend(a.session);
        }
        let why = "its bytes, not yet synced (--fsync never), did not survive a power loss";
        warn!(attachment = %id, "{why}");
        disk.quarantine("attachments", id, why.to_owned()).await;
    }
    (lost.len(), sessions)
}

impl Slot {
    fn new(record: SessionRecord, resume: Resume) -> Self {
        Self {
            record: Mutex::new(record),
            held: Arc::new(tokio::sync::Mutex::new(())),
            part: Mutex::new(Part {
                file: None,
                journal_end: resume.journal_end,
                rewrite: resume.rewrite,
            }),
        }
    }
}

impl Inner {
    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.sessions
            .read()
            .expect("sessions lock")
            .get(id)
            .cloned()
    }

    fn set_timer(&self, id: &str, at: Option<SystemTime>) {
        let mut timers = self.timers.lock().expect("timer lock");
        match at {
            Some(at) => timers.set(id.to_owned(), at),
            None => timers.remove(&id.to_owned()),
        }
    }

    fn add_attachment(&self, att: AttachmentRecord) {
        if let Some(item) = self
            .items
            .write()
            .expect("items lock")
            .get_mut(&att.item_id)
            && !item.attachments.contains(&att.meta.id)
        {
            item.attachments.push(att.meta.id.clone());
        }
        self.attachments
            .write()
            .expect("attachments lock")
            .insert(att.meta.id.clone(), att);
    }

    /// What `pick` picks of every session's record.
    fn each_session<T>(&self, pick: impl Fn(&SessionRecord) -> Option<T>) -> Vec<T> {
        let sessions = self.sessions.read().expect("sessions lock");
        sessions
            .values()
            .filter_map(|slot| pick(&slot.record.lock().expect("record lock")))
            .collect()
    }

    /// Takes the attachment `id` out of the maps; whether it was there.
    fn remove_attachment(&self, id: &str) -> Option<AttachmentRecord> {
        let removed = self
            .attachments
            .write()
            .expect("attachments lock")
            .remove(id)?;
        if let Some(item) = self
            .items
            .write()
            .expect("items lock")
            .get_mut(&removed.item_id)
        {
            item.attachments.retain(|a| a != id);
        }
        Some(removed)
    }
}

#[async_trait]
impl SessionStore for LocalStore {
    async fn server_key(&self) -> io::Result<[u8; 32]> {
        self.inner.disk.server_key().await
    }

    async fn put_item(&self, item: &ItemRecord) -> io::Result<()> {
        self.inner.disk.put("items", &item.id, item).await?;
        self.inner.items.write().expect("items lock").insert(
            item.id.clone(),
            LocalItem {
                record: item.clone(),
                attachments: Vec::new(),
            },
        );
        Ok(())
    }

    async fn item(&self, id: &str) -> io::Result<Option<ItemView>> {
        let items = self.inner.items.read().expect("items lock");
        let attachments = self.inner.attachments.read().expect("attachments lock");
        Ok(items.get(id).map(|item| ItemView {
            record: item.record.clone(),
            attachments: item
                .attachments
                .iter()
                .filter_map(|a| attachments.get(a).cloned())
                .collect(),
        }))
    }

    async fn read_attachment(
        &self,
        attachment: &AttachmentRecord,
        window: ByteRange,
    ) -> io::Result<ByteStream> {
        self.inner.disk.read(&attachment.meta.id, window).await
    }

    async fn delete_attachment(&self, attachment: &AttachmentRecord) -> io::Result<bool> {
        let id = &attachment.meta.id;
        // Taken out first: one of two deletes wins, and no request lists it from
        // here.
        let Some(removed) = self.inner.remove_attachment(id) else {
            return Ok(false);
        };
        if let Err(e) = self.inner.disk.delete_attachment(id).await {
            self.inner.add_attachment(removed);
            return Err(e);
        }
        Ok(true)
    }

    async fn create_session(&self, record: &SessionRecord) -> io::Result<()> {
        self.inner.disk.create_part(&record.id).await?;
        self.inner.disk.put("sessions", &record.id, record).await?;
        self.inner.set_timer(&record.id, deadline(&record.snapshot));
        self.inner.sessions.write().expect("sessions lock").insert(
            record.id.clone(),
            Arc::new(Slot::new(record.clone(), Resume::at(0))),
        );
        Ok(())
    }

    async fn peek(&self, id: &str) -> io::Result<Option<SessionRecord>> {
        Ok(self
            .inner
            .slot(id)
            .map(|slot| slot.record.lock().expect("record lock").clone()))
    }

    async fn lock(&self, id: &str, wait: Wait) -> Result<Locked, StoreError> {
        let Some(slot) = self.inner.slot(id) else {
            return Ok(Locked::Missing);
        };
        let held = Arc::clone(&slot.held);
        let guard = match wait {
            Wait::No => held.try_lock_owned().ok(),
            Wait::ForRelease => tokio::time::timeout(RELEASE_WAIT, held.lock_owned())
                .await
                .ok(),
        };
        let Some(guard) = guard else {
            return Ok(Locked::Busy);
        };
        // The holder may have closed it meanwhile.
        if self.inner.slot(id).is_none() {
            return Ok(Locked::Missing);
        }
        let record = slot.record.lock().expect("record lock").clone();
        Ok(Locked::Held(Box::new(LocalGuard {
            store: Arc::clone(&self.inner),
            slot,
            record,
            file: None,
            _held: guard,
        })))
    }

    async fn due(&self, now: SystemTime, limit: usize) -> io::Result<Vec<String>> {
        let mut due = self.inner.timers.lock().expect("timer lock").expired(now);
        // Past the limit, the rest stay due: the next call takes them.
        for id in due.split_off(limit.min(due.len())) {
            self.inner.set_timer(&id, Some(now));
        }
        Ok(due)
    }

    async fn settled(&self) {
        self.inner.stopping.cancel();
        self.inner.settling.close();
        self.inner.settling.wait().await;
        // Every commit has ended (the engine waited for them before this).
        let failed = self
            .inner
            .entry_failed
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.inner.disk.fragments_synced()
            && !failed
            && let Err(e) = self.inner.disk.mark_clean().await
        {
            warn!(error = %e, "could not mark the stop clean; the next start checks the last fragments");
        }
    }

    fn quarantined(&self) -> usize {
        self.quarantined
    }

    fn next_due(&self, _now: SystemTime) -> Option<SystemTime> {
        self.inner.timers.lock().expect("timer lock").poll_timeout()
    }

    async fn list_sessions(&self) -> io::Result<Vec<SessionRecord>> {
        Ok(self.inner.each_session(|r| Some(r.clone())))
    }

    async fn drive(&self, id: &str) -> io::Result<Option<DriveRecord>> {
        Ok(self
            .inner
            .drives
            .read()
            .expect("drives lock")
            .get(id)
            .cloned())
    }

    async fn put_drive(&self, drive: &DriveRecord, read: Option<u64>) -> io::Result<bool> {
        let _writing = self.inner.drive_writes.lock().await;
        let id = &drive.tree.id;
        let stored = self
            .inner
            .drives
            .read()
            .expect("drives lock")
            .get(id)
            .map(|d| d.tree.version);
        if stored != read {
            return Ok(false);
        }
        self.inner.disk.put("drives", id, drive).await?;
        self.inner
            .drives
            .write()
            .expect("drives lock")
            .insert(id.clone(), drive.clone());
        Ok(true)
    }

    async fn drive_uploads(&self) -> io::Result<Vec<AttachmentRecord>> {
        let drives = self.inner.drives.read().expect("drives lock");
        Ok(self
            .inner
            .attachments
            .read()
            .expect("attachments lock")
            .values()
            .filter(|a| drives.contains_key(&a.item_id))
            .cloned()
            .collect())
    }

    async fn attachment(&self, id: &str) -> io::Result<Option<AttachmentRecord>> {
        Ok(self
            .inner
            .attachments
            .read()
            .expect("attachments lock")
            .get(id)
            .cloned())
    }

    async fn uploading(&self) -> io::Result<Vec<Uploading>> {
        Ok(self.inner.each_session(SessionRecord::uploading))
    }
}

/// A session held by one request of this process.
struct LocalGuard {
    store: Arc<Inner>,
    slot: Arc<Slot>,
    record: SessionRecord,
    /// The `.part`, open for this request when the session keeps none open.
    file: Option<Arc<dyn FileHandle>>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl LocalGuard {
    /// Records a fragment's progress: an entry in the journal (with `--fsync
    /// always` flushed with its bytes); or, for a change that is more than
    /// progress, a failed entry before it, or a journal grown past
    /// [`journal::COMPACT_AT`], a rewrite of the record under a new epoch.
    async fn progress(
        &self,
        mut record: SessionRecord,
        part: &Arc<dyn FileHandle>,
    ) -> io::Result<SessionRecord> {
        let disk = &self.store.disk;
        let (at, rewrite) = {
            let p = self.slot.part.lock().expect("part lock");
            (p.journal_end, p.rewrite)
        };
        let base = journal::base(&self.record).filter(|b| journal::base(&record) == Some(*b));
        if let Some(base) = base.filter(|_| !rewrite && at < journal::COMPACT_AT) {
            let entry = journal::Entry::of(&record, at)
                .ok_or_else(|| io::Error::other("a fragment's commit without its sum"))?
                .encode();
            let next = at + entry.len() as u64;
            if let Err(e) = disk.append_entry(part, base + at, entry).await {
                // Not acknowledged, so it must not count after a restart: its
                // header zeroed (best effort; a kill -9 keeps the page cache), and
                // the next commit rewrites the record under a new epoch, so that
                // later entries never sit behind one a failed flush left out.
                let _ = part.write_at(&[0; 4], base + at);
                self.slot.part.lock().expect("part lock").rewrite = true;
                self.store
                    .entry_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
            self.slot.part.lock().expect("part lock").journal_end = next;
            return Ok(record);
        }
        // The bytes first, then the record that counts them.
        disk.sync_written(part).await?;
        record.journal_epoch = journal::new_epoch();
        disk.put("sessions", &record.id, &record).await?;
        {
            let mut p = self.slot.part.lock().expect("part lock");
            p.journal_end = 0;
            p.rewrite = false;
        }
        if let Some(base) = journal::base(&record) {
            // Tidiness, not safety: what lies past the file's size is of an older
            // epoch now.
            let _ = disk.cut(part, base).await;
        }
        Ok(record)
    }

    /// The session's `.part`: kept open for its next fragments where there is
    /// room, else for this request's.
    async fn part(&mut self) -> io::Result<Arc<dyn FileHandle>> {
        if let Some(file) = &self.file {
            return Ok(Arc::clone(file));
        }
        if let Some((file, _)) = &self.slot.part.lock().expect("part lock").file {
            return Ok(Arc::clone(file));
        }
        let file = self.store.disk.open_part(&self.record.id).await?;
        match Arc::clone(&self.store.open_parts).try_acquire_owned() {
            Ok(permit) => {
                self.slot.part.lock().expect("part lock").file = Some((Arc::clone(&file), permit));
            }
            Err(_) => self.file = Some(Arc::clone(&file)),
        }
        Ok(file)
    }
}

#[async_trait]
impl SessionGuard for LocalGuard {
    fn record(&self) -> &SessionRecord {
        &self.record
    }

    async fn writer(&mut self, range: ByteRange) -> Result<Box<dyn FragmentWriter>, StoreError> {
        let part = self.part().await?;
        Ok(self.store.disk.writer(&part, range))
    }

    async fn commit(&mut self, commit: Commit) -> io::Result<()> {
        let Commit {
            mut record,
            completed,
            ..
        } = commit;
        let part = self.part().await?;
        let disk = &self.store.disk;
        if let Some(mut att) = completed {
            // The attachment record goes first: start-up takes it as the proof that
            // every byte is stored, and finishes a completion it finds half done.
            // So its bytes are durable before it (`--fsync always`), or it carries
            // their sums (`--fsync never`: the answer does not wait for the disk,
            // as a page-cache server's would not; start-up checks the bytes of an
            // attachment that still carries them).
            disk.sync_written(&part).await?;
            let deferred = !disk.fragments_synced() && covers(&record.sums, att.meta.size);
            if deferred {
                att.unsynced.clone_from(&record.sums);
            } else if !disk.fragments_synced() {
                // A record from before sums were kept: synced now, as then.
                disk.sync_part(&record.id).await?;
            }
            disk.put("attachments", &att.meta.id, &att).await?;
            self.slot.part.lock().expect("part lock").file = None;
            disk.promote(&record.id, &record.attachment_id, att.meta.size)
                .await?;
            let id = att.meta.id.clone();
            self.store.add_attachment(att);
            // Done, even if the session record cannot be updated now.
            if let Err(e) = disk.put("sessions", &record.id, &record).await {
                warn!(session = %record.id, error = %e, "completed, but the session record was not updated");
            }
            if deferred {
                let store = Arc::downgrade(&self.store);
                if disk.background_syncs() {
                    let inner = &self.store;
                    {
                        // Stamped under the lock: the queue stays in order.
                        let mut queue = inner.unsettled.lock().expect("settle lock");
                        queue.push_back((tokio::time::Instant::now() + SETTLE_AFTER, id));
                    }
                    if !inner
                        .settler_started
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        inner.settling.spawn(settler(disk.clone(), store));
                    }
                    inner.settle_wake.notify_one();
                } else {
                    settle(disk.clone(), store, id).await;
                }
            }
        } else {
            record = self.progress(record, &part).await?;
        }
        self.store.set_timer(&record.id, deadline(&record.snapshot));
        *self.slot.record.lock().expect("record lock") = record.clone();
        self.record = record;
        Ok(())
    }

    async fn release(self: Box<Self>) {}

    async fn close(self: Box<Self>, discard_partial: bool) -> io::Result<()> {
        let id = &self.record.id;
        self.store.disk.delete_session(id).await?;
        // Gone for every request from here, before the lock is let go.
        self.store
            .sessions
            .write()
            .expect("sessions lock")
            .remove(id);
        self.store.set_timer(id, None);
        if discard_partial && let Err(e) = self.store.disk.discard(id).await {
            // The record is gone: start-up's orphan sweep removes the bytes.
            warn!(session = %id, error = %e, "could not delete a closed session's bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    /// The mark that lets a start skip reading back last fragments is left only by
    /// a clean stop under `--fsync always`, and taken by the next start (a crash
    /// of that one must not pass for a clean stop).
    #[tokio::test]
    async fn a_clean_stop_is_marked_and_the_next_start_takes_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let clean = dir.path().join("clean");
        let store = LocalStore::open(dir.path(), Fsync::Always).await.unwrap();
        assert!(!clean.exists());
        store.settled().await;
        assert!(clean.exists());
        drop(store);
        let store = LocalStore::open(dir.path(), Fsync::Always).await.unwrap();
        assert!(!clean.exists(), "taken at start-up");
        drop(store);
        let store = LocalStore::open(dir.path(), Fsync::Never).await.unwrap();
        store.settled().await;
        assert!(
            !clean.exists(),
            "--fsync never checks every fragment anyway"
        );
    }
}
