//! OneDrive's drive items over the same sessions: a drive upload is a session
//! whose finished bytes (an attachment of the drive, in store terms) become a
//! file of the drive's [`Tree`]. The tree's decisions are the core's; here they
//! are read, changed over the version read ([`Engine::change_drive`]), and their
//! files' bytes kept or given back.
//!
//! A file appears when its upload's last fragment is committed (in the commit's
//! own task, so a client that hangs up does not stop it), or at the explicit
//! commit of a `deferCommit` upload. Its answer is the file as the tree then has
//! it; a re-send of the last fragment asks again and gets the same file.

use std::time::SystemTime;

use upsession_core::content_type::guess_content_type;
use upsession_core::drive::{
    ContentHasher, DRIVE_TYPE, DriveItem, DriveUpload, FileEntry, MAX_FILE_SIZE, NewFile, Tree,
};
use upsession_core::error::{DriveError, RequestError};
use upsession_core::identity::Mailbox;
use upsession_core::route::{Drive, DrivePath, ItemKind};
use upsession_core::session::{Phase, Session};
use upsession_core::wire::AttachmentItem;
use upsession_core::{Dialect, Limits};

use super::{Engine, Failure, fail, random_id, restore, storage_failure};
use crate::store::{AttachmentRecord, DriveRecord, DriveSession, Locked, SessionRecord, Wait};

/// Drive changes retried at most this often when other requests keep changing
/// the same drive first.
const CHANGE_TRIES: usize = 16;

/// The id of `mailbox`'s drive: the same on every node, with no table to keep.
pub(crate) fn drive_id(mailbox: &Mailbox) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("upsession drive\0{}", mailbox.as_str()));
    format!(
        "b-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
    )
}

/// A drive file: its driveItem, and whether the upload made it (201) rather than
/// gave an existing one new bytes (200).
pub(crate) struct DriveFile {
    pub(crate) item: DriveItem,
    pub(crate) created: bool,
}

impl Engine {
    /// The session rules of drive uploads: OneDrive's sizes and its expiry that
    /// moves with each fragment, this server's configured fragment rules (the
    /// 320 KiB multiple under `--dialect onedrive`; the official Python SDK's
    /// default fragments are one byte more than a multiple, which the live service
    /// takes).
    pub(crate) fn drive_limits(&self) -> Limits {
        self.rules
            .limits
            .clone()
            .with_min_size(1)
            .with_max_size(MAX_FILE_SIZE)
            .with_sliding_expiry(true)
    }

    /// The drive a route names for `mailbox` (`/drives/{id}` must be the
    /// caller's). A drive not stored yet reads as empty; it is stored at its
    /// first write (`make`), so that reads never write.
    pub(crate) async fn drive(
        &self,
        drive: &Drive,
        mailbox: &Mailbox,
        now: SystemTime,
        make: bool,
    ) -> Result<DriveRecord, Failure> {
        let own = drive_id(mailbox);
        if let Drive::Id(id) = drive
            && *id != own
        {
            // Another's drive, or none: not found, as for another's item.
            return Err(fail(DriveError::ItemNotFound));
        }
        loop {
            if let Some(found) = self.store.drive(&own).await.map_err(storage_failure)? {
                return Ok(found);
            }
            // The root's id follows from the drive's: the same before and after
            // the drive is stored.
            let made = DriveRecord {
                owner: mailbox.clone(),
                tree: Tree::new(&own, &format!("01{}", &own[2..]), now),
            };
            if !make {
                return Ok(made);
            }
            if self
                .store
                .put_drive(&made, None)
                .await
                .map_err(storage_failure)?
            {
                return Ok(made);
            }
            // Made by another request meanwhile: read that one.
        }
    }

    /// Applies `change` to the drive `id` and stores it over the version read;
    /// read again and retried when another change came first.
    async fn change_drive<T>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Tree) -> Result<T, DriveError>,
    ) -> Result<(T, DriveRecord), Failure> {
        for _ in 0..CHANGE_TRIES {
            let mut drive = self
                .store
                .drive(id)
                .await
                .map_err(storage_failure)?
                .ok_or_else(|| fail(DriveError::ItemNotFound))?;
            let read = drive.tree.version;
            let out = change(&mut drive.tree).map_err(fail)?;
            if drive.tree.version == read {
                return Ok((out, drive));
            }
            if self
                .store
                .put_drive(&drive, Some(read))
                .await
                .map_err(storage_failure)?
            {
                return Ok((out, drive));
            }
        }
        tracing::warn!(drive = %id, "too many concurrent changes to one drive");
        Err(fail(RequestError::Unavailable {
            retry_after_secs: 1,
        }))
    }

    /// Opens a session for a drive upload to `at`, created by `app`.
    /// `if_match`, when given, must name the current version of the file it
    /// replaces.
    pub(crate) async fn create_drive_session(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        upload: DriveUpload,
        if_match: Option<&str>,
        app: &str,
        now: SystemTime,
    ) -> Result<(SessionRecord, Session), Failure> {
        let drive = self.drive(&at.drive, mailbox, now, true).await?;
        let target = drive.tree.target(&at.base, &at.path).map_err(fail)?;
        if let (Some(given), Some(named)) = (&upload.name, at.path.last())
            && given != named
        {
            return Err(fail(DriveError::NameMismatch));
        }
        if let Some(tags) = if_match {
            let current = drive
                .tree
                .resolve(&at.base, &at.path)
                .ok()
                .and_then(|e| drive.tree.drive_item(&e.id, DRIVE_TYPE));
            if !current.is_some_and(|item| item.matches(tags)) {
                return Err(fail(DriveError::Modified));
            }
        }
        let name = drive.tree.name_of(&target).unwrap_or_default();
        let limits = self.drive_limits();
        let session = match upload.file_size {
            Some(size) => Session::open(now, size, &limits).map_err(fail)?,
            None => Session::open_unsized(now, &limits),
        };
        let mut attachment = AttachmentItem::file(name.clone(), upload.file_size.unwrap_or(0));
        attachment.content_type = Some(guess_content_type(name.as_ref()).to_owned());
        let record = SessionRecord {
            id: random_id(""),
            item_id: drive.tree.id.clone(),
            kind: ItemKind::Message,
            beta: false,
            user: None,
            attachment_id: random_id("01"),
            app: app.to_owned(),
            attachment,
            owner: mailbox.clone(),
            snapshot: session.snapshot(),
            parts: Vec::new(),
            sums: Vec::new(),
            drive: Some(Box::new(DriveSession {
                drive: drive.tree.id.clone(),
                target,
                conflict: upload.conflict,
                defer_commit: upload.defer_commit,
                description: upload.description,
                hasher: ContentHasher::default(),
            })),
            journal_epoch: 0,
        };
        self.register(record, session).await
    }

    /// The drive a route names (read, never made) and the id of the item its
    /// path names there.
    async fn named(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Result<(DriveRecord, String), Failure> {
        let drive = self.drive(&at.drive, mailbox, now, false).await?;
        let id = drive
            .tree
            .resolve(&at.base, &at.path)
            .map_err(fail)?
            .id
            .clone();
        Ok((drive, id))
    }

    /// A finished upload's record (the bytes of a drive file); not found when it
    /// was given back meanwhile.
    async fn finished_upload(&self, blob: &str) -> Result<AttachmentRecord, Failure> {
        self.store
            .attachment(blob)
            .await
            .map_err(storage_failure)?
            .ok_or_else(|| fail(DriveError::ItemNotFound))
    }

    /// The item a drive route names, in its drive.
    pub(crate) async fn drive_item(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Result<DriveItem, Failure> {
        let (drive, id) = self.named(at, mailbox, now).await?;
        drive
            .tree
            .drive_item(&id, DRIVE_TYPE)
            .ok_or_else(|| fail(DriveError::ItemNotFound))
    }

    /// The file a drive route names and the finished upload holding its bytes.
    pub(crate) async fn drive_content(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        now: SystemTime,
    ) -> Result<(FileEntry, AttachmentRecord), Failure> {
        let (drive, id) = self.named(at, mailbox, now).await?;
        let file = drive
            .tree
            .get(&id)
            .and_then(|e| e.file.clone())
            .ok_or_else(|| fail(DriveError::NotAFile))?;
        // Replaced or deleted between the two reads: not found.
        let bytes = self.finished_upload(&file.blob).await?;
        Ok((file, bytes))
    }

    /// `DELETE` of a drive item: a folder with everything in it; the files'
    /// bytes are given back after the tree no longer names them.
    pub(crate) async fn delete_drive_item(
        &self,
        at: &DrivePath,
        mailbox: &Mailbox,
        if_match: Option<&str>,
        now: SystemTime,
    ) -> Result<(), Failure> {
        let (drive, id) = self.named(at, mailbox, now).await?;
        let (blobs, _) = self
            .change_drive(&drive.tree.id, |tree| {
                if let Some(tags) = if_match
                    && !tree
                        .drive_item(&id, DRIVE_TYPE)
                        .is_some_and(|item| item.matches(tags))
                {
                    return Err(DriveError::Modified);
                }
                tree.remove(&id, now)
            })
            .await?;
        for blob in blobs {
            self.discard_upload(&blob).await;
        }
        tracing::info!(item = %id, "drive item deleted");
        Ok(())
    }

    /// Gives back a finished upload's bytes no file names any more; its session
    /// (kept to answer re-sends of its last fragment) goes first, as an
    /// attachment's does.
    async fn discard_upload(&self, blob: &str) {
        match self.store.attachment(blob).await {
            Ok(Some(att)) => {
                if let Some(session) = &att.session
                    && let Err(e) = self.forget_completed(session).await
                {
                    tracing::warn!(upload = %blob, error = %e.detail(), "could not close a finished drive upload's session");
                }
                if let Err(e) = self.store.delete_attachment(&att).await {
                    tracing::warn!(upload = %blob, error = %e, "could not delete an unused drive upload's bytes");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(upload = %blob, error = %e, "could not look up an unused drive upload");
            }
        }
    }

    /// Before the last fragment of a drive upload is committed: whether its file
    /// can go where it is going (409 `nameAlreadyExists` under `fail`).
    pub(super) async fn check_drive_upload(&self, record: &SessionRecord) -> Result<(), Failure> {
        let Some(up) = &record.drive else {
            return Ok(());
        };
        let drive = self
            .store
            .drive(&up.drive)
            .await
            .map_err(storage_failure)?
            .ok_or_else(|| fail(DriveError::ItemNotFound))?;
        drive.tree.check(&up.target, up.conflict).map_err(fail)
    }

    /// The file a completed drive upload made, putting it in the tree if it is
    /// not there yet (idempotent: the tree knows which upload holds each file's
    /// bytes). A replaced file's old bytes are given back.
    pub(crate) async fn put_drive_upload(
        &self,
        record: &SessionRecord,
        now: SystemTime,
    ) -> Result<DriveFile, Failure> {
        let up = record
            .drive
            .as_ref()
            .ok_or_else(|| fail(RequestError::Internal))?;
        // The finished upload's own record says its size and hashes (its
        // session's record may be a fragment behind, after a crash).
        let done = self.finished_upload(&record.attachment_id).await?;
        let file = NewFile {
            content: FileEntry {
                size: done.meta.size,
                mime_type: done.meta.content_type.clone(),
                hashes: done.hashes.clone().unwrap_or_else(|| up.hasher.finish()),
                blob: record.attachment_id.clone(),
            },
            description: up.description.clone(),
        };
        let mut new_id = || random_id("01");
        let (put, drive) = self
            .change_drive(&up.drive, |tree| {
                tree.put_file(&up.target, up.conflict, file.clone(), now, &mut new_id)
            })
            .await?;
        if let Some(old) = &put.replaced {
            self.discard_upload(old).await;
        }
        let item = drive
            .tree
            .drive_item(&put.id, DRIVE_TYPE)
            .ok_or_else(|| fail(RequestError::Internal))?;
        Ok(DriveFile {
            item,
            created: put.created,
        })
    }

    /// A completed drive upload's answer: its file (made now if it was not).
    /// A `deferCommit` upload's file waits for the explicit commit.
    pub(crate) async fn drive_upload_done(
        &self,
        record: &SessionRecord,
        now: SystemTime,
    ) -> Result<Option<DriveFile>, Failure> {
        match &record.drive {
            Some(up) if !up.defer_commit => self.put_drive_upload(record, now).await.map(Some),
            _ => Ok(None),
        }
    }

    /// `POST {uploadUrl}` with no body: commits a `deferCommit` upload whose
    /// every byte arrived, then closes its session.
    pub(crate) async fn commit_deferred(
        &self,
        sid: &str,
        now: SystemTime,
    ) -> Result<DriveFile, Failure> {
        let guard = match self
            .store
            .lock(sid, Wait::ForRelease)
            .await
            .map_err(super::store_failure)?
        {
            Locked::Held(guard) => guard,
            Locked::Missing => return Err(fail(RequestError::SessionNotFound)),
            Locked::Busy => return Err(fail(upsession_core::error::FragmentError::Busy)),
        };
        let record = guard.record().clone();
        if record.drive.as_ref().is_none_or(|d| !d.defer_commit) {
            return Err(fail(DriveError::NotDeferred));
        }
        let mut session = restore(&record)?;
        session.status(now).map_err(fail)?;
        if session.phase() != Phase::Completed {
            let got: u64 = session.received().ranges().iter().map(|r| r.len()).sum();
            let missing = session.size().saturating_sub(got);
            return Err(fail(DriveError::Incomplete(missing)));
        }
        let file = self.put_drive_upload(&record, now).await?;
        // Committed: the session has nothing more to answer.
        if let Err(e) = guard.close(false).await {
            tracing::warn!(session = %sid, error = %e, "committed, but the session record stays until it expires");
        } else {
            self.closed(sid, false, false);
        }
        Ok(file)
    }

    /// After a drive upload's session closed (expired or cancelled): bytes of a
    /// finished upload that no file names (a `deferCommit` upload never
    /// committed, a conflict that stopped it) are given back.
    pub(super) async fn drive_session_closed(&self, record: &SessionRecord) {
        let Some(up) = &record.drive else {
            return;
        };
        if record.snapshot.phase != Phase::Completed {
            return;
        }
        // Retired in the tree first: a request that was about to put it (a late
        // re-send) then finds it gone, rather than naming bytes deleted below.
        let blob = &record.attachment_id;
        match self
            .change_drive(&up.drive, |tree| Ok(tree.forget_upload(blob)))
            .await
        {
            Ok((true, _)) => self.discard_upload(blob).await,
            Ok((false, _)) => {}
            Err(e) => {
                tracing::warn!(session = %record.id, error = %e.detail(), "could not retire a drive upload; its bytes are kept");
            }
        }
    }
}

impl Engine {
    /// Start-up's reconciliation: the bytes of finished drive uploads that no
    /// file names and no session still answers for (a crash between a tree's
    /// change and the deletion of what it let go, a deletion that failed) are
    /// given back.
    pub(crate) async fn reconcile_drives(&self) {
        let (uploads, sessions) = match (
            self.store.drive_uploads().await,
            self.store.list_sessions().await,
        ) {
            (Ok(u), Ok(s)) => (u, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "could not reconcile the drives' bytes");
                return;
            }
        };
        let live: std::collections::HashSet<&str> =
            sessions.iter().map(|s| s.attachment_id.as_str()).collect();
        let mut trees: std::collections::HashMap<String, Option<Tree>> =
            std::collections::HashMap::new();
        let mut given_back = 0;
        for upload in uploads
            .iter()
            .filter(|u| !live.contains(u.meta.id.as_str()))
        {
            if !trees.contains_key(&upload.item_id) {
                let tree = self
                    .store
                    .drive(&upload.item_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|d| d.tree);
                trees.insert(upload.item_id.clone(), tree);
            }
            let Some(Some(tree)) = trees.get(&upload.item_id) else {
                continue;
            };
            if tree.holding(&upload.meta.id).is_some() {
                continue;
            }
            let blob = &upload.meta.id;
            if let Ok((true, _)) = self
                .change_drive(&upload.item_id, |tree| Ok(tree.forget_upload(blob)))
                .await
            {
                self.discard_upload(blob).await;
                given_back += 1;
            }
        }
        if given_back > 0 {
            tracing::info!(given_back, "unused drive uploads' bytes given back");
        }
    }
}

/// The dialect drive answers are written in: OneDrive's statuses (200 on
/// creation, 202 per fragment), with the range forms configured (closed by
/// default, which every official SDK reads; OneDrive's `"a-"` under `--dialect
/// onedrive`).
pub(crate) fn drive_dialect(configured: &Dialect) -> Dialect {
    let mut d = Dialect::ONEDRIVE;
    d.created_ranges = configured.created_ranges;
    d.ranges = configured.ranges;
    d
}
