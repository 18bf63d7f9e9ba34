//! Power-loss testing of the local store. [`SimFs`] is a [`Files`] in memory that,
//! at a power loss, keeps what was synced and only a random part of what was not:
//! of each file's unsynced writes, any 4 KiB pieces (holes read as zeros); of the
//! unsynced directory changes, any prefix in order plus those a directory sync
//! made durable. [`run_with`] drives the engine through uploads over it, crashes it at
//! a random file operation (every later operation fails, as if the process died),
//! cuts the power, starts again and checks:
//!
//! - with `--fsync always`, every acknowledged session, fragment and attachment is
//!   still there;
//! - in either mode, every attachment served, and every upload resumed from what
//!   the session says it still expects, has exactly the bytes that were sent.
//!
//! [`Skip`] pretends one kind of sync was made when it was not: the tests show the
//! checks then fail, so a sync removed from the store cannot go unnoticed.
//! [`run_with`] can also fail one operation before the crash (an I/O error the
//! process lives through; a failed sync's writes never reach the disk, as on
//! Linux), and the client sends that fragment again.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use upsession_core::drive::{ContentHasher, DriveUpload};
use upsession_core::identity::Mailbox;
use upsession_core::route::{Drive, DriveBase, DrivePath, ItemKind, ItemPath, User, Version};
use upsession_core::session::{Answer, Limits};
use upsession_core::wire::AttachmentItem;
use upsession_core::{ByteRange, RangeSet};

use super::ByteStream;
use super::files::{FileHandle, Files, InUse};
use super::local::LocalStore;
use crate::config::Fsync;
use crate::engine::{Engine, Fragment, Rules};
use crate::metrics::Metrics;
use crate::store::SessionRecord;

/// A sync the simulation takes and ignores: what removing it from the store would do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Every sync is made.
    #[default]
    Nothing,
    /// A fragment's `fdatasync` (`FileHandle::sync_data`).
    FragmentData,
    /// The `fdatasync` of a record written whole (`write_file` with `sync`).
    RecordData,
    /// A directory's sync (`sync_dir`).
    Directory,
}

type Ino = u64;

/// A change to one file's bytes not yet synced.
#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate,
    SetLen(u64),
}

/// A change to the names not yet made durable.
#[derive(Clone, Debug)]
enum NameOp {
    Link {
        path: PathBuf,
        ino: Ino,
    },
    Unlink {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: Ino,
    },
}

impl NameOp {
    fn touches(&self, dir: &Path) -> bool {
        let parent = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            Self::Link { path, .. } | Self::Unlink { path } => parent(path),
            // A journalling file system commits a rename as one change, with
            // either directory's sync.
            Self::Rename { from, to, .. } => parent(from) || parent(to),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What survives a power loss for sure.
    durable: Vec<u8>,
    /// What a read sees.
    current: Vec<u8>,
    /// What was written since the last sync, in order.
    pending: Vec<DataOp>,
}

fn apply(content: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(bytes);
        }
        DataOp::Truncate => content.clear(),
        DataOp::SetLen(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Debug)]
struct State {
    rng: fastrand::Rng,
    skip: Skip,
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    /// The names a process sees.
    live: BTreeMap<PathBuf, Ino>,
    /// The names a power loss keeps for sure.
    durable: BTreeMap<PathBuf, Ino>,
    /// Name changes since the last power loss, and whether each is durable.
    log: Vec<(NameOp, bool)>,
    /// Changing operations so far.
    ops: u64,
    /// The changing operation at which the process dies.
    crash_at: Option<u64>,
    crashed: bool,
    /// The changing operation that fails once (an I/O error), the process living on.
    fail_at: Option<u64>,
    /// Which lock holder, if any, holds `{root}/lock` (bumped at each power loss).
    locked: Option<u64>,
    epoch: u64,
}

impl State {
    /// One changing operation: refused once the process has died.
    fn step(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("the process died (simulated crash)"));
        }
        self.ops += 1;
        if self.crash_at.is_some_and(|at| self.ops >= at) {
            self.crashed = true;
            return Err(io::Error::other("the process died (simulated crash)"));
        }
        if self.fail_at == Some(self.ops) {
            self.fail_at = None;
            return Err(io::Error::other("simulated I/O error"));
        }
        Ok(())
    }

    /// A failed sync, as Linux does it: the file's unsynced writes stay in the page
    /// cache (reads see them) but are marked clean and never reach the disk.
    fn sync_failed(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.pending.clear();
        }
    }

    fn ino(&self, path: &Path) -> io::Result<Ino> {
        self.live
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn write(&mut self, ino: Ino, op: DataOp) {
        let inode = self.inodes.entry(ino).or_default();
        apply(&mut inode.current, &op);
        inode.pending.push(op);
    }

    fn sync_data(&mut self, ino: Ino) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            // What a sync writes is what was not yet written, not the page cache as
            // it stands: writes an earlier failed sync dropped stay lost.
            for op in std::mem::take(&mut inode.pending) {
                apply(&mut inode.durable, &op);
            }
        }
    }

    /// What one file holds after the power loss: its durable bytes, then each
    /// unsynced write's 4 KiB pieces kept with probability `keep`.
    fn survive(rng: &mut fastrand::Rng, inode: &Inode, keep: f64) -> Vec<u8> {
        let mut content = inode.durable.clone();
        for op in &inode.pending {
            match op {
                DataOp::Truncate | DataOp::SetLen(_) => {
                    if rng.f64() < keep {
                        apply(&mut content, op);
                    }
                }
                DataOp::Write { offset, bytes } => {
                    for (i, piece) in bytes.chunks(4096).enumerate() {
                        if rng.f64() < keep {
                            let offset = offset + (i * 4096) as u64;
                            let bytes = piece.to_vec();
                            apply(&mut content, &DataOp::Write { offset, bytes });
                        }
                    }
                }
            }
        }
        content
    }

    fn power_loss(&mut self) {
        // An I/O error still to come was the dead process's.
        self.fail_at = None;
        // Sometimes the page cache reached the disk whole, sometimes not at all.
        let keep = [0.0, 0.5, 1.0][self.rng.usize(..3)];
        let prefix = self.rng.usize(..=self.log.len());
        let mut names = std::mem::take(&mut self.durable);
        for (i, (op, durable)) in self.log.drain(..).enumerate() {
            if !(durable || i < prefix) {
                continue;
            }
            match op {
                NameOp::Link { path, ino } => {
                    names.insert(path, ino);
                }
                NameOp::Unlink { path } => {
                    names.remove(&path);
                }
                NameOp::Rename { from, to, ino } => {
                    names.remove(&from);
                    names.insert(to, ino);
                }
            }
        }
        let mut inodes = HashMap::new();
        for ino in names.values() {
            if let Some(inode) = self.inodes.get(ino) {
                let content = Self::survive(&mut self.rng, inode, keep);
                inodes.insert(
                    *ino,
                    Inode {
                        durable: content.clone(),
                        current: content,
                        pending: Vec::new(),
                    },
                );
            }
        }
        self.inodes = inodes;
        self.live = names.clone();
        self.durable = names;
        self.ops = 0;
        self.crash_at = None;
        self.crashed = false;
        self.locked = None;
        self.epoch += 1;
    }
}

/// A file system in memory that forgets, at a power loss, what was never synced.
#[derive(Clone, Debug)]
pub(crate) struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub(crate) fn new(seed: u64, skip: Skip) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                skip,
                inodes: HashMap::new(),
                next_ino: 1,
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                log: Vec::new(),
                ops: 0,
                crash_at: None,
                crashed: false,
                fail_at: None,
                locked: None,
                epoch: 0,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim lock")
    }

    /// The process dies at its `at`th changing operation from now.
    pub(crate) fn crash_at(&self, at: u64) {
        let mut state = self.state();
        state.ops = 0;
        state.crash_at = Some(at);
    }

    /// The `at`th changing operation from now fails once, the process living on.
    pub(crate) fn fail_at(&self, at: u64) {
        self.state().fail_at = Some(at);
    }

    /// Whether the process has died.
    fn crashed(&self) -> bool {
        self.state().crashed
    }

    /// Changing operations since the last [`SimFs::crash_at`] or power loss.
    pub(crate) fn ops(&self) -> u64 {
        self.state().ops
    }

    /// The power goes: what was not durable is kept only in part, and the next
    /// process starts on what is left.
    pub(crate) fn power_loss(&self) {
        self.state().power_loss();
    }
}

/// The sim's `{root}/lock`: free when dropped, unless a power loss freed it first.
#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("sim lock");
        if state.locked == Some(self.epoch) {
            state.locked = None;
        }
    }
}

struct SimHandle {
    state: Arc<Mutex<State>>,
    ino: Ino,
}

impl FileHandle for SimHandle {
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim lock");
        state.step()?;
        let bytes = bytes.to_vec();
        state.write(self.ino, DataOp::Write { offset, bytes });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim lock");
        if let Err(e) = state.step() {
            if !state.crashed {
                state.sync_failed(self.ino);
            }
            return Err(e);
        }
        if state.skip != Skip::FragmentData {
            state.sync_data(self.ino);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().expect("sim lock");
        state.step()?;
        state.write(self.ino, DataOp::SetLen(len));
        Ok(())
    }
}

impl Files for SimFs {
    fn lock(&self, _root: &Path) -> io::Result<Box<dyn fmt::Debug + Send + Sync>> {
        let mut state = self.state();
        if state.locked.is_some() {
            let pid = Some(std::process::id());
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, InUse { pid }));
        }
        state.locked = Some(state.epoch);
        let epoch = state.epoch;
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            epoch,
        }))
    }

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(()) // directories are implied by the names under them
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let state = self.state();
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state();
        let ino = state.ino(path)?;
        Ok(state.inodes[&ino].current.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let content = self.read(path)?;
        let start = (offset as usize).min(content.len());
        let end = start.saturating_add(len).min(content.len());
        Ok(content[start..end].to_vec())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.read(path)?.len() as u64)
    }

    fn write_file(&self, path: &Path, bytes: &[u8], sync: bool, private: bool) -> io::Result<()> {
        let mut state = self.state();
        state.step()?;
        let ino = match state.live.get(path) {
            Some(_) if private => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
            }
            Some(&ino) => {
                state.write(ino, DataOp::Truncate);
                ino
            }
            None => {
                let ino = state.next_ino;
                state.next_ino += 1;
                state.inodes.insert(ino, Inode::default());
                state.live.insert(path.to_owned(), ino);
                let link = NameOp::Link {
                    path: path.to_owned(),
                    ino,
                };
                state.log.push((link, false));
                ino
            }
        };
        let bytes = bytes.to_vec();
        state.write(ino, DataOp::Write { offset: 0, bytes });
        if sync && state.skip != Skip::RecordData {
            state.sync_data(ino);
        }
        Ok(())
    }

    fn open_writer(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let ino = self.state().ino(path)?;
        Ok(Box::new(SimHandle {
            state: Arc::clone(&self.state),
            ino,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.step()?;
        let ino = state.ino(from)?;
        state.live.remove(from);
        state.live.insert(to.to_owned(), ino);
        let (from, to) = (from.to_owned(), to.to_owned());
        state.log.push((NameOp::Rename { from, to, ino }, false));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.step()?;
        state.ino(path)?;
        state.live.remove(path);
        let path = path.to_owned();
        state.log.push((NameOp::Unlink { path }, false));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.step()?;
        if state.skip != Skip::Directory {
            for (op, durable) in &mut state.log {
                *durable |= op.touches(dir);
            }
        }
        Ok(())
    }

    fn stream(&self, path: &Path, window: ByteRange) -> io::Result<ByteStream> {
        let content = Bytes::from(self.read(path)?);
        let end = usize::try_from(window.end())
            .unwrap_or(usize::MAX)
            .min(content.len());
        let start = usize::try_from(window.start())
            .unwrap_or(usize::MAX)
            .min(end);
        let content = content.slice(start..end);
        Ok(Box::pin(futures_util::stream::once(
            async move { Ok(content) },
        )))
    }
}

// ----- the run: upload, crash, power loss, restart, check -----

/// The data directory's path inside the sim.
const ROOT: &str = "/data";

/// One upload of the run: what was sent, and what the server acknowledged.
#[derive(Debug)]
struct Upload {
    data: Vec<u8>,
    fragment: u64,
    session: String,
    attachment: String,
    /// Fragments answered with success.
    acked: RangeSet,
    /// Where its next fragment starts.
    sent: u64,
    /// The last fragment was answered `201`.
    completed: bool,
    /// A drive upload's file (its bytes and hashes are the drive item's).
    drive: Option<DrivePath>,
}

/// What a run uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Attachments of a message.
    Attachment,
    /// Files of a drive whose size the session's creation gives.
    DriveSized,
    /// Files of a drive whose size only the first fragment's `Content-Range`
    /// gives (no `fileSize` at creation): that fragment's commit rewrites the
    /// record with the size it learned (no journal before it).
    DriveUnsized,
}

/// The drive path of a run's `n`th file.
fn drive_path(n: usize) -> DrivePath {
    DrivePath {
        version: Version::V1,
        drive: Drive::Of(User::Me),
        base: DriveBase::Root,
        path: vec![format!("f{n}.bin")],
    }
}

/// What the server acknowledged before it died.
#[derive(Debug, Default)]
struct Acked {
    item: Option<String>,
    uploads: Vec<Upload>,
}

fn path(item: &str) -> ItemPath {
    ItemPath {
        version: Version::V1,
        user: User::Me,
        kind: ItemKind::Message,
        id: item.to_owned(),
    }
}

async fn engine(fs: &SimFs, fsync: Fsync) -> io::Result<Arc<Engine>> {
    let files: Arc<dyn Files> = Arc::new(fs.clone());
    let store = LocalStore::open_on(files, Path::new(ROOT), fsync).await?;
    let rules = Rules {
        limits: Limits::default().with_min_size(1),
        message_size_limit: None,
        fragment_timeout: Duration::from_secs(60),
        quota: upsession_core::quota::QuotaLimits::UNLIMITED,
        clock_skew_secs: 0,
    };
    Ok(Arc::new(Engine::new(
        Arc::new(store),
        rules,
        Arc::new(Metrics::new()),
    )))
}

/// Sends `data[range]` to session `id`; the answer (and the session's record)
/// only when acknowledged. A drive upload's last fragment is acknowledged once its
/// file is in the drive (the answer names the file).
async fn send(
    engine: &Arc<Engine>,
    id: &str,
    data: &[u8],
    range: ByteRange,
    drive: bool,
) -> Option<(Answer, SessionRecord)> {
    let header = format!("bytes {}-{}/{}", range.start(), range.end() - 1, data.len());
    let now = SystemTime::now();
    let begun = engine
        .begin_fragment(id, Some(&header), Some(range.len()), now)
        .await
        .ok()?;
    let (answer, record) = match begun {
        // Bytes it already has: answered as before, and a drive upload's last
        // fragment again with its file (`graph.rs` does the same).
        Fragment::Replay { answer, record, .. } if drive && answer == Answer::Completed => {
            (answer, record)
        }
        Fragment::Replay { .. } => return None, // nothing new acknowledged
        Fragment::Write(writing) => {
            let bytes = Bytes::copy_from_slice(&data[range.start() as usize..range.end() as usize]);
            let body = Box::pin(futures_util::stream::iter([Ok(bytes)]));
            writing.store(body, SystemTime::now).await.ok()?
        }
    };
    if drive && answer == Answer::Completed {
        engine.drive_upload_done(&record, now).await.ok()?;
    }
    Some((answer, record))
}

/// Uploads two files, fragment by fragment and in turn, until done or dead.
/// What the client sends after an I/O error made a fragment fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The same fragment again.
    Same,
    /// Everything from the same offset to the end, as one fragment (the session
    /// then completes with bytes written over a failed journal entry's place).
    Rest,
}

async fn upload(
    fs: &SimFs,
    fsync: Fsync,
    files: &[(Vec<u8>, u64)],
    (kind, retry): (Kind, Retry),
) -> Acked {
    let mut acked = Acked::default();
    let Ok(engine) = engine(fs, fsync).await else {
        return acked;
    };
    let now = SystemTime::now();
    let Ok(item) = engine
        .create_item(ItemKind::Message, "power".into(), &Mailbox::sole(), now)
        .await
    else {
        return acked;
    };
    acked.item = Some(item.id.clone());
    for (n, (data, fragment)) in files.iter().enumerate() {
        let drive = (kind != Kind::Attachment).then(|| drive_path(n));
        let created = match &drive {
            None => {
                let file = AttachmentItem::file("f.bin", data.len() as u64);
                engine
                    .create_session(&path(&item.id), &Mailbox::sole(), file, "app", now)
                    .await
            }
            Some(at) => {
                let upload = DriveUpload {
                    file_size: (kind == Kind::DriveSized).then_some(data.len() as u64),
                    ..DriveUpload::default()
                };
                engine
                    .create_drive_session(at, &Mailbox::sole(), upload, None, "app", now)
                    .await
            }
        };
        let Ok((record, _)) = created else {
            return acked;
        };
        acked.uploads.push(Upload {
            data: data.clone(),
            fragment: *fragment,
            session: record.id,
            attachment: record.attachment_id,
            acked: RangeSet::default(),
            sent: 0,
            completed: false,
            drive,
        });
    }
    // Each upload's next fragment in turn, each at its own size.
    while acked.uploads.iter().any(|u| u.sent < u.data.len() as u64) {
        for u in &mut acked.uploads {
            let (at, total) = (u.sent, u.data.len() as u64);
            if at >= total {
                continue;
            }
            let mut range = ByteRange::new(at, (at + u.fragment).min(total)).expect("non-empty");
            let drive = u.drive.is_some();
            let mut answer = send(&engine, &u.session, &u.data, range, drive).await;
            if answer.is_none() && !fs.crashed() {
                // An I/O error, not a death: the client sends the fragment again,
                // or the whole rest.
                if retry == Retry::Rest {
                    range = ByteRange::new(at, total).expect("non-empty");
                }
                answer = send(&engine, &u.session, &u.data, range, drive).await;
            }
            match answer {
                Some((answer, _)) => {
                    u.acked.insert(range);
                    u.sent = range.end();
                    u.completed = answer == Answer::Completed;
                }
                None => return acked, // the process died, or failed twice
            }
        }
    }
    engine.finish_commits().await;
    acked
}

async fn attachment_bytes(engine: &Engine, item: &str, id: &str) -> Option<Vec<u8>> {
    let att = engine
        .attachment(&path(item), &Mailbox::sole(), id)
        .await
        .ok()?;
    let whole = ByteRange::new(0, att.meta.size)?;
    let stream = engine.attachment_bytes(&att, whole).await.ok()?;
    let chunks: Vec<Bytes> = stream.try_collect().await.ok()?;
    Some(chunks.concat())
}

/// The bytes of the drive file at `at`, after checking that its hashes are those
/// of `data` (an error when they are not).
async fn drive_bytes(
    engine: &Engine,
    at: &DrivePath,
    data: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let Ok((file, att)) = engine
        .drive_content(at, &Mailbox::sole(), SystemTime::now())
        .await
    else {
        return Ok(None);
    };
    if file.size != att.meta.size {
        // `GET …/content` answers 404 for this.
        return Err(format!(
            "drive file {:?} and its bytes differ in size",
            at.path
        ));
    }
    let mut hasher = ContentHasher::default();
    hasher.update(data);
    if file.hashes != hasher.finish() {
        return Err(format!("drive file {:?} has other hashes", at.path));
    }
    let Some(whole) = ByteRange::new(0, att.meta.size) else {
        return Ok(Some(Vec::new()));
    };
    let stream = engine.attachment_bytes(&att, whole).await.ok();
    let chunks: Option<Vec<Bytes>> = match stream {
        Some(s) => s.try_collect().await.ok(),
        None => None,
    };
    Ok(chunks.map(|c| c.concat()))
}

/// What upload `u` serves: its attachment's bytes, or its drive file's.
async fn served(engine: &Engine, item: &str, u: &Upload) -> Result<Option<Vec<u8>>, String> {
    match &u.drive {
        None => Ok(attachment_bytes(engine, item, &u.attachment).await),
        Some(at) => drive_bytes(engine, at, &u.data).await,
    }
}

/// After the power loss: what must have survived did, and each upload, resumed
/// from what its session still expects, ends with exactly the bytes sent.
async fn check(fs: &SimFs, fsync: Fsync, acked: &Acked) -> Result<(), String> {
    let engine = engine(fs, fsync)
        .await
        .map_err(|e| format!("start-up failed after the power loss: {e}"))?;
    let strict = fsync == Fsync::Always;
    let Some(item) = &acked.item else {
        return Ok(());
    };
    // As the server's start-up does: the bytes of finished uploads that no file
    // names and no session answers for are given back (a completed upload whose
    // file is not in its drive yet keeps its session: its resend below makes it).
    engine.reconcile_drives().await;
    if strict && engine.item(&path(item), &Mailbox::sole()).await.is_err() {
        return Err("an acknowledged item is gone".into());
    }
    let sessions: HashMap<String, _> = engine
        .sessions()
        .await
        .map_err(|e| format!("sessions unreadable: {e:?}"))?
        .into_iter()
        .map(|(record, session)| (record.id.clone(), (record, session)))
        .collect();
    for u in &acked.uploads {
        let served_now = served(&engine, item, u).await?;
        if served_now.as_ref().is_some_and(|b| *b != u.data) {
            return Err(format!("attachment {} serves other bytes", u.attachment));
        }
        if served_now.is_some() {
            continue;
        }
        if strict && u.completed {
            return Err(format!("acknowledged attachment {} is gone", u.attachment));
        }
        let Some((record, session)) = sessions.get(&u.session) else {
            if strict {
                return Err(format!("acknowledged session {} is gone", u.session));
            }
            continue;
        };
        let received = session.received();
        if strict
            && u.acked
                .ranges()
                .iter()
                .any(|r| !received.contains_range(*r))
        {
            return Err(format!(
                "session {} lost acknowledged bytes: acked {:?}, kept {:?}",
                u.session,
                u.acked.ranges(),
                received.ranges()
            ));
        }
        // Resume: send what it asks for (a session that never learned its size
        // asks for everything, "0-"); the attachment must then be the file.
        let expected = session.next_expected();
        let total = u.data.len() as u64;
        let drive = u.drive.is_some();
        for range in expected.ranges() {
            let Some(range) = ByteRange::new(range.start(), range.end().min(total)) else {
                continue;
            };
            if send(&engine, &u.session, &u.data, range, drive)
                .await
                .is_none()
            {
                return Err(format!(
                    "resuming session {} failed at {range:?}",
                    u.session
                ));
            }
        }
        if drive && expected.is_empty() {
            // Every byte was there: the client sends its last fragment again and
            // gets the file, which the answer makes if it was not made.
            let last = ByteRange::new(total.saturating_sub(u.fragment), total).expect("non-empty");
            if send(&engine, &u.session, &u.data, last, drive)
                .await
                .is_none()
            {
                return Err(format!(
                    "the resend of drive upload {}'s last fragment failed (record {:?})",
                    u.session, record.snapshot
                ));
            }
        }
        match served(&engine, item, u).await? {
            Some(bytes) if bytes == u.data => {}
            Some(_) => return Err(format!("resumed upload {} serves other bytes", u.session)),
            None => {
                let item_kept = engine.item(&path(item), &Mailbox::sole()).await.is_ok();
                return Err(format!(
                    "resumed upload {} has no attachment (item kept: {item_kept}, expected {:?}, received {:?})",
                    u.session,
                    expected.ranges(),
                    received.ranges()
                ));
            }
        }
    }
    engine.finish_commits().await;
    Ok(())
}

/// One seeded run of `kind` uploads: a crash at a random operation, a power
/// loss, a restart and the checks; with one operation failing (an I/O error)
/// before the crash when `failing` says what the client sends then.
pub(crate) async fn run_with(
    seed: u64,
    fsync: Fsync,
    skip: Skip,
    failing: Option<Retry>,
    kind: Kind,
) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let files: Vec<(Vec<u8>, u64)> = (0..2)
        .map(|_| {
            let len = rng.usize(1..40_000);
            let data: Vec<u8> = (0..len).map(|_| rng.u8(1..)).collect();
            (data, rng.u64(4_000..16_000))
        })
        .collect();
    // How many changing operations the whole run takes, to crash within it.
    let dry = SimFs::new(seed, skip);
    dry.crash_at(u64::MAX);
    let whole = upload(&dry, fsync, &files, (kind, Retry::Same)).await;
    if whole.uploads.len() != files.len() || whole.uploads.iter().any(|u| !u.completed) {
        // Without a crash every upload must finish, or the run checks nothing.
        let done: Vec<bool> = whole.uploads.iter().map(|u| u.completed).collect();
        return Err(format!(
            "the run without a crash did not finish: {} of {} uploads made, completed {done:?}",
            whole.uploads.len(),
            files.len()
        ));
    }
    let total = dry.ops();

    let fs = SimFs::new(seed, skip);
    fs.crash_at(rng.u64(1..=total + 1));
    if failing.is_some() {
        // Somewhere before the crash, one operation fails and the process goes on.
        fs.fail_at(rng.u64(1..=total));
    }
    let acked = upload(&fs, fsync, &files, (kind, failing.unwrap_or(Retry::Same))).await;
    fs.power_loss();
    check(&fs, fsync, &acked).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs per test; `UPSESSION_POWER_LOSS_RUNS` asks for more (a longer hunt).
    fn runs() -> u64 {
        std::env::var("UPSESSION_POWER_LOSS_RUNS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300)
    }

    async fn failures(fsync: Fsync, skip: Skip) -> Vec<String> {
        failures_of(fsync, skip, Kind::Attachment).await
    }

    async fn failures_of(fsync: Fsync, skip: Skip, kind: Kind) -> Vec<String> {
        let mut failed = Vec::new();
        for seed in 0..runs() {
            if let Err(e) = run_with(seed, fsync, skip, None, kind).await {
                failed.push(format!("seed {seed}: {e}"));
            }
        }
        failed
    }

    async fn every_run_passes(fsync: Fsync) {
        let failed = failures(fsync, Skip::Nothing).await;
        let runs = runs();
        assert!(
            failed.is_empty(),
            "{} of {runs} runs failed: {failed:#?}",
            failed.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_always_loses_nothing_acknowledged_at_any_crash_point() {
        every_run_passes(Fsync::Always).await;
    }

    /// A failed write, sync or rename (a full disk, an I/O error) is answered as a
    /// failure, and the client sends the fragment again; then the crash and the
    /// power loss. With `--fsync always` nothing acknowledged is lost, whatever
    /// failed (a failed sync's writes never reach the disk, as on Linux).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_io_error_loses_nothing_acknowledged_before_or_after_it() {
        io_errors_lose_nothing(Retry::Same).await;
    }

    /// The same, with the client sending the whole rest of its file after the
    /// failure: the session completes over the place of a failed journal entry
    /// (whose header was zeroed), so its attachment's file has a tail that is not
    /// a journal entry until the cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_io_error_then_the_rest_in_one_fragment_loses_nothing() {
        io_errors_lose_nothing(Retry::Rest).await;
    }

    async fn io_errors_lose_nothing(retry: Retry) {
        for fsync in [Fsync::Always, Fsync::Never] {
            let mut failed = Vec::new();
            for seed in 0..runs() {
                if let Err(e) =
                    run_with(seed, fsync, Skip::Nothing, Some(retry), Kind::Attachment).await
                {
                    failed.push(format!("seed {seed}: {e}"));
                }
            }
            assert!(failed.is_empty(), "{fsync:?}, {retry:?}: {failed:#?}");
        }
    }

    /// Drive uploads, their size given at creation or only by the first
    /// fragment, in both modes, with and without an I/O error before the crash:
    /// the drive file (bytes and hashes) is exactly what was sent, and with
    /// `--fsync always` nothing acknowledged is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drive_uploads_sized_or_not_lose_nothing_acknowledged() {
        let mut failed = Vec::new();
        for kind in [Kind::DriveSized, Kind::DriveUnsized] {
            for fsync in [Fsync::Always, Fsync::Never] {
                for seed in 0..runs() {
                    let failing = (seed % 2 == 1).then_some(Retry::Same);
                    if let Err(e) = run_with(seed, fsync, Skip::Nothing, failing, kind).await {
                        failed.push(format!("{kind:?}, {fsync:?}, seed {seed}: {e}"));
                    }
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{} runs failed: {failed:#?}",
            failed.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fsync_never_may_forget_but_never_serves_a_wrong_byte() {
        every_run_passes(Fsync::Never).await;
    }

    /// The proof that the runs above can fail: take away any one kind of sync and
    /// some run loses acknowledged bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_any_one_sync_a_power_loss_loses_acknowledged_bytes() {
        for (skip, kind) in [Skip::FragmentData, Skip::RecordData, Skip::Directory]
            .into_iter()
            .flat_map(|skip| [(skip, Kind::Attachment), (skip, Kind::DriveUnsized)])
        {
            let failed = failures_of(Fsync::Always, skip, kind).await;
            println!(
                "without {skip:?} ({kind:?}): {} of {} runs failed",
                failed.len(),
                runs()
            );
            if let Some(first) = failed.first() {
                println!("  e.g. {first}");
            }
            assert!(
                !failed.is_empty(),
                "no run noticed the missing {skip:?} sync ({kind:?})"
            );
        }
    }
}
