//! Resume state: what an interrupted upload needs to continue, saved atomically as
//! JSON. The rules are on [`ResumeState`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use upsession_core::drive::ContentHasher;
use upsession_core::time::{format_graph_time, parse_graph_time};
use upsession_core::wire::AttachmentItem;

use crate::error::{Error, Result};
pub use crate::hashing::FileHashing;
use crate::hashing::{
    Crc64Prefix, FileHashes, Hasher, hashes_of, hashes_of_bytes, hashes_of_prefix,
};
use upsession_core::content_type::guess_content_type;
use upsession_core::redact::UploadUrl;
use upsession_core::target::{Target, User};

/// The format version this crate writes and reads.
pub const STATE_VERSION: u32 = 3;

/// The attachment's properties, as sent in createUploadSession's `AttachmentItem`
/// (its `size` is the file's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AttachmentMeta {
    /// Display name.
    pub name: String,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Whether the attachment is inline.
    #[serde(default)]
    pub is_inline: bool,
    /// The `cid:` an HTML body refers to, for inline attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
}

impl AttachmentMeta {
    /// The properties of a new attachment: `name` (else `default_name`, the file's
    /// name), `content_type` (else guessed from the name), inline when `content_id`
    /// is given. A blank name is refused.
    pub fn for_upload(
        name: Option<&str>,
        default_name: Option<&str>,
        content_type: Option<&str>,
        content_id: Option<&str>,
    ) -> Result<Self> {
        let name = name
            .or(default_name)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Error::InvalidInput("the attachment needs a name".into()))?
            .to_owned();
        let content_type = content_type
            .unwrap_or_else(|| guess_content_type(Path::new(&name)))
            .to_owned();
        Ok(Self {
            name,
            content_type: Some(content_type),
            is_inline: content_id.is_some(),
            content_id: content_id.map(str::to_owned),
        })
    }

    /// The createUploadSession `AttachmentItem` for a file of `size` bytes.
    pub fn to_item(&self, size: u64) -> AttachmentItem {
        let mut item = AttachmentItem::file(self.name.clone(), size);
        item.content_type.clone_from(&self.content_type);
        if self.is_inline {
            item.is_inline = Some(true);
        }
        item.content_id.clone_from(&self.content_id);
        item
    }
}

/// A path in JSON without loss: text when it is UTF-8, its bytes otherwise.
mod os_path {
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub(super) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => Stored::Text(text.to_owned()),
            None => Stored::Bytes(bytes(path)),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Text(text) => PathBuf::from(text),
            Stored::Bytes(raw) => from_bytes(raw),
        })
    }

    #[cfg(unix)]
    fn bytes(path: &Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt as _;
        path.as_os_str().as_bytes().to_vec()
    }

    #[cfg(unix)]
    fn from_bytes(raw: Vec<u8>) -> PathBuf {
        use std::os::unix::ffi::OsStringExt as _;
        std::ffi::OsString::from_vec(raw).into()
    }

    // Elsewhere a path that is not Unicode is rare; it is kept as lossy text.
    #[cfg(not(unix))]
    fn bytes(path: &Path) -> Vec<u8> {
        path.to_string_lossy().into_owned().into_bytes()
    }

    #[cfg(not(unix))]
    fn from_bytes(raw: Vec<u8>) -> PathBuf {
        PathBuf::from(String::from_utf8_lossy(&raw).into_owned())
    }
}

/// Which file an upload reads, precisely enough to notice that it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FileIdentity {
    /// Absolute path. Stored as a JSON string, or, for a name that is not UTF-8
    /// (Unix allows any bytes), as the array of its bytes.
    #[serde(with = "os_path")]
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (RFC 3339, UTC, 100 ns precision), if the platform has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// CRC-64/NVME of the whole file, once known: an upload takes it from the
    /// bytes it reads ([`FileHashing`]), so a state saved during an upload has
    /// [`FileIdentity::sent_crc64`] instead. Resuming checks it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::hashing::hex_u64::option"
    )]
    pub crc64: Option<u64>,
    /// SHA-256 of the whole file, lowercase hex, when it was taken: asked for, a
    /// drive file, or a state written by a version that took it always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// OneDrive's QuickXorHash of the whole file (base64), taken with the
    /// SHA-256: a drive file's answer carries it, and the client compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick_xor: Option<String>,
    /// The CRC-64/NVME of the file's first bytes, as far as an upload that has
    /// not finished had read them: resuming checks that the file still starts
    /// with those bytes, and continues the CRC from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_crc64: Option<Crc64Prefix>,
    /// The SHA-256 (and QuickXorHash) of the same first bytes, when those are
    /// taken; checked and continued alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_hashes: Option<Box<ContentHasher>>,
}

impl FileIdentity {
    /// Reads `path` whole to take its identity, CRC-64/NVME and SHA-256
    /// included (blocking: async callers run it on a blocking thread).
    pub fn of(path: &Path) -> Result<Self> {
        Self::hashed(path, FileHashes::Sha256)
    }

    /// Reads `path` whole to take its identity with the hashes `kinds` names.
    fn hashed(path: &Path, kinds: FileHashes) -> Result<Self> {
        let mut identity = Self::stat(path)?;
        let hasher = hashes_of(path, identity.size, kinds)?
            .ok_or_else(|| changed(path, "it changed while it was being read".into()))?;
        identity.set_whole(&hasher);
        Ok(identity)
    }

    /// Takes the hashes of the whole file from `hasher`.
    fn set_whole(&mut self, hasher: &Hasher) {
        self.crc64 = Some(hasher.crc64());
        self.sha256 = hasher.sha256_hex();
        self.quick_xor = hasher.quick_xor_base64();
    }

    /// The identity from the file's metadata alone (size, modification time; it
    /// must be a regular file), without hashes: nothing is read, so an upload
    /// starts at once and [`FileHashing`] takes them beside it.
    pub fn stat(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|e| Error::io("read the metadata of", path, e))?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            size: meta.len(),
            modified: modified(&meta),
            crc64: None,
            sha256: None,
            quick_xor: None,
            sent_crc64: None,
            sent_hashes: None,
        })
    }

    /// The whole file (a small one, for one `POST`), and this identity with its
    /// hashes (`kinds`) taken from those bytes; refused if the file no longer
    /// has this identity's size. Blocking.
    pub fn read_whole(&self, kinds: FileHashes) -> Result<(Vec<u8>, Self)> {
        let bytes = fs::read(&self.path).map_err(|e| Error::io("read", &self.path, e))?;
        if bytes.len() as u64 != self.size {
            return Err(changed(
                &self.path,
                "its size changed while it was being read".into(),
            ));
        }
        let mut hashed = self.clone();
        hashed.set_whole(&hashes_of_bytes(&bytes, kinds));
        Ok((bytes, hashed))
    }

    /// Checks that the file still has this identity: the same size, then the
    /// same whole-file hashes (CRC-64/NVME, and SHA-256 if it has one; this reads
    /// it whole), so a new modification time alone is accepted. An identity saved
    /// before its hash was known is checked by size and modification time, and
    /// then its bytes already sent against their hashes
    /// ([`FileIdentity::sent_crc64`], [`FileIdentity::sent_hashes`]; carried into
    /// the identity returned). Returns the file's identity as it is now. Blocking.
    pub fn verify(&self) -> Result<Self> {
        if self.crc64.is_none() && self.sha256.is_none() {
            self.check_unchanged()?;
            let mut now = Self::stat(&self.path)?;
            let content = self.sent_hashes.as_deref();
            let len = self
                .sent_crc64
                .map(|p| p.len)
                .or(content.map(ContentHasher::len));
            if let Some(len) = len {
                let kinds = FileHashes::of_saved(content);
                let read = hashes_of_prefix(&self.path, len, kinds)?;
                let crc_differs = self.sent_crc64.is_some_and(|p| p != read.prefix());
                let content_differs = content.is_some_and(|c| Some(c) != read.content());
                if crc_differs || content_differs {
                    return Err(changed(
                        &self.path,
                        format!(
                            "same size and time, different content in the {len} bytes already sent"
                        ),
                    ));
                }
                now.sent_crc64 = Some(read.prefix());
                now.sent_hashes = read.content().cloned().map(Box::new);
            }
            return Ok(now);
        }
        // The hashes it has, so that an upload going on need not take them again.
        let kinds = match (&self.sha256, &self.quick_xor) {
            (Some(_), Some(_)) => FileHashes::Drive,
            (Some(_), None) => FileHashes::Sha256,
            (None, _) => FileHashes::Crc64,
        };
        let now = Self::hashed(&self.path, kinds).map_err(|e| match e {
            Error::Io { error, .. } if error.kind() == io::ErrorKind::NotFound => {
                changed(&self.path, "it no longer exists".into())
            }
            other => other,
        })?;
        if now.size != self.size {
            return Err(changed(
                &self.path,
                format!("size was {} bytes, is {}", self.size, now.size),
            ));
        }
        let crc_differs = self.crc64.is_some() && self.crc64 != now.crc64;
        let sha_differs = self.sha256.is_some() && self.sha256 != now.sha256;
        let xor_differs = self.quick_xor.is_some() && self.quick_xor != now.quick_xor;
        if crc_differs || sha_differs || xor_differs {
            return Err(changed(&self.path, "same size, different content".into()));
        }
        Ok(now)
    }

    /// The cheap check: size and modification time, from the file's metadata.
    pub fn check_unchanged(&self) -> Result<()> {
        let meta = fs::metadata(&self.path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                changed(&self.path, "it no longer exists".into())
            } else {
                Error::io("read the metadata of", &self.path, e)
            }
        })?;
        if meta.len() != self.size {
            return Err(changed(
                &self.path,
                format!("size was {} bytes, is {}", self.size, meta.len()),
            ));
        }
        if modified(&meta) != self.modified {
            return Err(changed(&self.path, "it was modified".into()));
        }
        Ok(())
    }
}

fn changed(path: &Path, what: String) -> Error {
    Error::FileChanged {
        path: path.to_path_buf(),
        what,
    }
}

fn modified(meta: &fs::Metadata) -> Option<String> {
    meta.modified().ok().map(format_graph_time)
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Everything needed to continue an interrupted upload after Ctrl-C, a crash or a
/// reboot, serialised as camelCase JSON. Its `Debug` output shows the uploadUrl
/// redacted; its JSON holds it whole.
///
/// # What is saved, and when
///
/// A state is written when the session is created (before the first fragment is
/// sent) and rewritten after each acknowledged fragment. Each write goes to a
/// temporary file in the same directory, is flushed to disk (`fsync`), and is
/// renamed over the old state, so a state file is always whole: the old one or the
/// new one. The file holds the uploadUrl, a bearer credential, so it is created
/// readable by its owner only, in a directory made readable by its owner only.
///
/// # How a changed file is detected
///
/// The state records the file's absolute path, size and modification time, and
/// its hashes as far as they are known. The upload hashes the bytes it reads for
/// its fragments ([`FileHashing`]: the file is read once), so a state saved
/// during an upload carries the hashes of the bytes read so far
/// ([`FileIdentity::sent_crc64`], and [`FileIdentity::sent_hashes`] when the
/// SHA-256 is taken) and only a finished upload knows the whole file's hashes.
/// Resuming checks, before any request is made: the size, the modification time,
/// and then that the file still starts with the bytes already hashed (a change
/// there with the time put back is caught too). A change of time is refused even
/// if the bytes are the same, since the part not yet sent was never hashed; a
/// state that does carry the whole file's hashes (its upload had read every byte,
/// or an earlier version hashed the file up front) is checked against them
/// instead, and then a touch alone is accepted. During an upload the size and
/// modification time are checked before every fragment and once more at the end.
///
/// The identity is a CRC-64/NVME unless the SHA-256 was asked for: it catches
/// any accidental change, not one crafted to keep the same CRC; ask for the
/// SHA-256 where that matters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ResumeState {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// The session's uploadUrl (a bearer credential).
    pub upload_url: UploadUrl,
    /// When the session expires, RFC 3339, as last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The Graph base URL the session was created through.
    pub base_url: String,
    /// Whose mailbox.
    pub user: User,
    /// The item the attachment goes to.
    pub target: Target,
    /// The file being uploaded.
    pub file: FileIdentity,
    /// The attachment's properties.
    pub attachment: AttachmentMeta,
    /// Bytes per fragment.
    pub fragment_size: u64,
    /// Bytes the server had acknowledged at the last save.
    pub acknowledged: u64,
    /// When the session was created (RFC 3339).
    pub created: String,
    /// When the state was last saved (RFC 3339).
    pub updated: String,
    /// The upload takes the file's SHA-256 too (asked for), and a resume goes on
    /// taking it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub take_sha256: bool,
}

impl ResumeState {
    /// The state of an upload whose session is not created yet: no uploadUrl,
    /// nothing acknowledged. The client fills in the uploadUrl, expiry and times
    /// when the session exists, before saving it.
    pub fn before_session(
        base_url: String,
        user: User,
        target: Target,
        file: FileIdentity,
        attachment: AttachmentMeta,
        fragment_size: u64,
    ) -> Self {
        Self {
            version: STATE_VERSION,
            upload_url: UploadUrl::new(""),
            expires: None,
            base_url,
            user,
            target,
            file,
            attachment,
            fragment_size,
            acknowledged: 0,
            created: String::new(),
            updated: String::new(),
            take_sha256: false,
        }
    }

    /// The hashes the upload takes of its file: a drive file's, or the SHA-256
    /// when it was asked for (or a state of version 2 carries one).
    #[must_use]
    pub fn file_hashes(&self) -> FileHashes {
        // Versions before 3 took the SHA-256 always.
        let sha256 = self.take_sha256
            || self.version < 3
            || self.file.sha256.is_some()
            || self.file.sent_hashes.is_some();
        FileHashes::for_upload(self.target.is_drive(), sha256)
    }

    /// Reads and checks a state file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::io("read the resume state", path, e))?;
        let invalid = |reason: String| Error::InvalidState {
            path: Some(path.to_path_buf()),
            reason,
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        state.validate().map_err(invalid)?;
        Ok(state)
    }

    /// Writes the state to `path` atomically (temporary file, `fsync`, rename),
    /// readable by its owner only. Creates the directory if needed.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.write(path, true)
    }

    /// [`ResumeState::save`] without syncing the directory: the file is always
    /// whole, but after a power loss the rename may not have happened and the
    /// previous version is read. For progress updates, which resume does not rely
    /// on.
    pub fn save_progress(&self, path: &Path) -> Result<()> {
        self.write(path, false)
    }

    /// Writes the state to `path` atomically; `sync_dir` makes the rename durable.
    fn write(&self, path: &Path, sync_dir: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidState {
            path: Some(path.to_path_buf()),
            reason: e.to_string(),
        })?;
        write_atomic(path, &bytes, sync_dir)
            .map_err(|e| Error::io("write the resume state", path, e))
    }

    /// Records the session just created, at `now`; save the state next (before any
    /// fragment is sent: without it there is no resume).
    pub fn session_created(
        &mut self,
        upload_url: UploadUrl,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) {
        let now = format_graph_time(now);
        self.upload_url = upload_url;
        self.expires = expires.map(format_graph_time);
        self.created.clone_from(&now);
        self.updated = now;
    }

    /// Records `acknowledged` of `total` bytes and the planner's current expiry and
    /// fragment size, at `now`. Says whether there is anything worth saving (a
    /// session, and an upload not yet complete).
    pub fn record_progress(
        &mut self,
        acknowledged: u64,
        total: u64,
        expires: Option<SystemTime>,
        fragment_size: u64,
        now: SystemTime,
    ) -> bool {
        if self.upload_url.expose_secret().is_empty() || acknowledged >= total {
            return false;
        }
        self.acknowledged = acknowledged;
        self.expires = expires.map(format_graph_time);
        self.fragment_size = fragment_size;
        self.updated = format_graph_time(now);
        true
    }

    /// The session's expiry, if known and readable.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires.as_deref().and_then(parse_graph_time)
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|e| now >= e)
    }

    /// Checks what serde cannot: the version and that the numbers agree.
    pub fn validate(&self) -> Result<(), String> {
        // Version 2 may save a file's identity before its hash is known; a
        // version 1 state always has it, and reads the same. Version 3 takes a
        // CRC-64/NVME, and the SHA-256 only when asked; a version 2 state's
        // SHA-256 is checked as before.
        if !(1..=STATE_VERSION).contains(&self.version) {
            return Err(format!(
                "it is of version {}, this program reads versions 1 to {STATE_VERSION}",
                self.version
            ));
        }
        let url = self.upload_url.expose_secret();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "the uploadUrl {} is not an http(s) URL",
                self.upload_url
            ));
        }
        if self.file.size == 0 || self.fragment_size == 0 {
            return Err("the file size and fragment size must be positive".into());
        }
        if self.acknowledged > self.file.size {
            return Err("more bytes acknowledged than the file holds".into());
        }
        if !self.file.path.is_absolute() {
            return Err("the file path is not absolute".into());
        }
        if let (Some(crc), Some(hashes)) = (&self.file.sent_crc64, &self.file.sent_hashes)
            && crc.len != hashes.len()
        {
            return Err("the hashes of the bytes sent are of different lengths".into());
        }
        if self.file.sent_crc64.is_some_and(|p| p.len > self.file.size) {
            return Err("more bytes hashed than the file holds".into());
        }
        Ok(())
    }
}

/// A directory of resume states: where uploads save them, and where `resume` with
/// no argument finds every unfinished upload.
///
/// A state file is removed when its upload completes, is cancelled, or its session
/// is known to be gone; it stays after any other failure so that the upload can be
/// resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// A store in `dir` (created, readable by its owner only, on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, unused state file name for an upload of `file`.
    pub fn new_state_path(&self, file: &Path) -> PathBuf {
        let stem: String = file
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let stem = if stem.is_empty() {
            "upload".into()
        } else {
            stem
        };
        let mut random = [0_u8; 8];
        if getrandom::fill(&mut random).is_err() {
            // No OS randomness: the time is unique enough for one user's uploads.
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes();
            random.copy_from_slice(&nanos[..8]);
        }
        self.dir.join(format!("{stem}.{}.json", hex(&random)))
    }

    /// Every state file in the directory, oldest name first, each with its state or
    /// the reason it cannot be read. A missing directory holds none.
    pub fn list(&self) -> Result<Vec<(PathBuf, Result<ResumeState>)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.dir, e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            paths.push(entry.path());
        }
        paths.sort();
        Ok(paths
            .into_iter()
            .map(|p| {
                let state = ResumeState::load(&p);
                (p, state)
            })
            .collect())
    }

    /// Removes a state file; one already gone is fine.
    pub fn remove(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove the resume state", path, e)),
        }
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of
/// `bytes`, even across a crash: temporary file in the same directory, `fsync`,
/// rename, and (when `durable`) `fsync` of the directory, which makes the rename
/// itself survive a power loss.
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_private_dir(dir)?;
    // tempfile creates the file readable by its owner only.
    let mut tmp = tempfile::Builder::new()
        .prefix(".upsession-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Always: a rename that reaches the disk before the data can leave an empty
    // file after a power loss (XFS, ext4 with `noauto_da_alloc`).
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        sync_dir(dir);
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes a rename durable. Best effort: not every platform can open a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    fn state(dir: &Path) -> ResumeState {
        ResumeState {
            version: STATE_VERSION,
            upload_url: UploadUrl::new("https://h/uploads/1?tempauth=SECRET"),
            expires: Some("2100-01-01T00:00:00.0000000Z".into()),
            base_url: "https://graph.microsoft.com/v1.0".into(),
            user: User::Me,
            target: Target::message("m1"),
            file: FileIdentity {
                path: dir.join("a.bin"),
                size: 10,
                modified: None,
                crc64: Some(0),
                sha256: Some("00".into()),
                quick_xor: None,
                sent_crc64: None,
                sent_hashes: None,
            },
            attachment: AttachmentMeta {
                name: "a.bin".into(),
                content_type: None,
                is_inline: false,
                content_id: None,
            },
            fragment_size: 5,
            acknowledged: 5,
            created: "2026-01-01T00:00:00Z".into(),
            updated: "2026-01-01T00:00:00Z".into(),
            take_sha256: false,
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_file_path_that_is_not_utf8_round_trips() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path());
        s.file.path = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.bin"));
        let json = serde_json::to_value(&s.file).unwrap();
        assert!(json["path"].is_array(), "{json}");
        let back: FileIdentity = serde_json::from_value(json).unwrap();
        assert_eq!(back, s.file);
        // UTF-8 paths stay readable text.
        let json = serde_json::to_value(&state(dir.path()).file).unwrap();
        assert!(json["path"].as_str().unwrap().ends_with("a.bin"));
    }

    #[test]
    fn state_round_trips_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("states"));
        let path = store.new_state_path(Path::new("/x/my report.pdf"));
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("my_report_pdf.")
        );
        let s = state(dir.path());
        s.save(&path).unwrap();
        assert_eq!(ResumeState::load(&path).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "state files are private: {mode:o}");
        }
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.as_ref().unwrap(), &s);
        StateStore::remove(&path).unwrap();
        StateStore::remove(&path).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn debug_of_a_state_hides_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{:?}", state(dir.path()));
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("https://h/uploads/1?<redacted>"));
    }

    #[test]
    fn bad_states_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut s = state(dir.path());
        s.version = 99;
        s.save(&path).unwrap();
        let e = ResumeState::load(&path).unwrap_err();
        assert!(matches!(e, Error::InvalidState { .. }), "{e}");
        assert!(e.to_string().contains("version 99"), "{e}");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            ResumeState::load(&path),
            Err(Error::InvalidState { .. })
        ));
    }

    #[test]
    fn states_of_version_1_still_read_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path());
        s.version = 1;
        assert_eq!(s.validate(), Ok(()));
        s.version = STATE_VERSION + 1;
        assert!(
            s.validate().unwrap_err().contains("versions 1 to"),
            "{:?}",
            s.validate()
        );
    }

    /// Waits until `hashing` has taken `len` bytes (or the whole hash).
    fn hashed_up_to(hashing: &mut FileHashing, state: &mut ResumeState, len: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let whole = hashing.poll_into(state);
            if whole || state.file.sent_crc64.is_some_and(|p| p.len >= len) {
                return whole;
            }
            assert!(std::time::Instant::now() < deadline, "never hashed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn the_hash_is_taken_from_the_chunks_offered_and_the_file_fills_the_gaps() {
        for kinds in [FileHashes::Crc64, FileHashes::Sha256] {
            hashes_come_from_the_chunks_and_the_gaps(kinds);
        }
    }

    /// An identity's whole-file hashes.
    fn hashes(id: &FileIdentity) -> (Option<u64>, Option<String>) {
        (id.crc64, id.sha256.clone())
    }

    fn crc64(bytes: &[u8]) -> u64 {
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes)
    }

    fn hashes_come_from_the_chunks_and_the_gaps(kinds: FileHashes) {
        const MIB: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let bytes: Vec<u8> = (0..3 * MIB).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        let identity = FileIdentity::stat(&path).unwrap();
        assert_eq!((identity.size, hashes(&identity)), (3 << 20, (None, None)));
        let whole = FileIdentity::of(&path).unwrap();
        assert_eq!(whole.crc64, Some(crc64(&bytes)));
        let want = (whole.crc64, whole.sha256.clone().filter(|_| kinds.sha256()));
        let mut state = state(dir.path());
        state.file = identity.clone();

        // The first MiB as the upload read it: the state carries its hashes.
        let mut hashing = FileHashing::start_for(identity.clone(), kinds);
        hashing.offer(0, Box::new(bytes[..MIB].to_vec()));
        assert!(!hashed_up_to(&mut hashing, &mut state, MIB as u64));
        assert_eq!(hashes(&state.file), (None, None));
        let sent_crc = state.file.sent_crc64.unwrap();
        assert_eq!(sent_crc.len, MIB as u64);
        assert_eq!(sent_crc.crc64, crc64(&bytes[..MIB]));
        let sent = state.file.sent_hashes.clone();
        assert_eq!(sent.is_some(), kinds.sha256(), "{kinds:?}");
        assert!(sent.as_ref().is_none_or(|h| h.len() == MIB as u64));
        // Chunks offered twice (a fragment sent again) count once; a chunk past a
        // gap makes the thread read the gap from the file.
        hashing.offer(MIB as u64 / 2, Box::new(bytes[MIB / 2..MIB].to_vec()));
        hashing.offer(2 * MIB as u64, Box::new(bytes[2 * MIB..].to_vec()));
        // The whole hash: known once the thread has also checked the file ends.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !hashing.poll_into(&mut state) {
            assert!(
                std::time::Instant::now() < deadline,
                "the whole hash never came"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(hashes(&state.file), want);
        assert_eq!(
            (state.file.sent_crc64, state.file.sent_hashes.clone()),
            (None, None),
            "the whole hash replaces them"
        );
        assert!(!hashing.poll_into(&mut state), "said once");
        assert_eq!(hashes(hashing.finish()), want);

        // What was offered is what is hashed: the file is not read again (bytes
        // unlike the file's show it).
        let mut offered = FileHashing::start_for(identity.clone(), kinds);
        let other = vec![9_u8; 3 * MIB];
        offered.offer(0, Box::new(other[..2 * MIB].to_vec()));
        offered.offer(2 * MIB as u64, Box::new(other[2 * MIB..].to_vec()));
        let mut unlike = ContentHasher::sha256_only();
        unlike.update(&other);
        let unlike = kinds.sha256().then(|| unlike.sha256_lower_hex());
        assert_eq!(hashes(offered.finish()), (Some(crc64(&other)), unlike));

        // An upload that ended early: the rest is read from the file.
        let mut early = FileHashing::start_for(identity.clone(), kinds);
        early.offer(0, Box::new(bytes[..MIB].to_vec()));
        assert_eq!(hashes(early.finish()), want);

        // Resuming from the hashes of the first MiB: checked against the file,
        // continued from there.
        let saved = FileIdentity {
            sent_crc64: Some(sent_crc),
            sent_hashes: sent.clone(),
            ..identity.clone()
        };
        let now = saved.verify().unwrap();
        assert_eq!(
            (now.sent_crc64, now.sent_hashes.clone()),
            (Some(sent_crc), sent)
        );
        assert_eq!(hashes(FileHashing::start_for(now, kinds).finish()), want);

        // A byte changed in the part already sent, the file's time put back: the
        // hashes see it. In the part not yet sent, nothing can (the time is the
        // check there), and the upload would send the file as it is.
        let put_back = |b: &[u8]| {
            let modified = fs::metadata(&path).unwrap().modified().unwrap();
            fs::write(&path, b).unwrap();
            let f = fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(modified).unwrap();
        };
        let mut changed = bytes.clone();
        changed[MIB - 1] ^= 1;
        put_back(&changed);
        let err = saved.verify().unwrap_err();
        assert!(err.to_string().contains("already sent"), "{err}");
        let mut changed = bytes.clone();
        changed[MIB] ^= 1;
        put_back(&changed);
        saved.verify().unwrap();
        // A new time is a change wherever the bytes are.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(saved.verify(), Err(Error::FileChanged { .. })));

        // A file cut short has no hash.
        let mut cut = FileHashing::start_for(
            FileIdentity {
                size: 4 << 20,
                ..identity
            },
            kinds,
        );
        assert_eq!(hashes(cut.finish()), (None, None));
    }

    #[test]
    fn a_state_of_version_2_is_checked_by_its_sha256_and_goes_on_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, b"hello world").unwrap();
        let of = FileIdentity::of(&path).unwrap();
        // What version 2 saved: the SHA-256, no CRC.
        let v2 = FileIdentity {
            crc64: None,
            ..of.clone()
        };
        let mut state = state(dir.path());
        (state.version, state.file) = (2, v2.clone());
        let state: ResumeState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(state.file_hashes(), FileHashes::Sha256);
        assert_eq!(
            v2.verify().unwrap(),
            of,
            "checked by its SHA-256, the CRC taken"
        );
        // Saved before any hash was known: version 2 took the SHA-256 always.
        let mut early = state.clone();
        (early.file.sha256, early.file.sent_hashes) = (None, None);
        assert_eq!(early.file_hashes(), FileHashes::Sha256);
        early.version = STATE_VERSION;
        assert_eq!(
            early.file_hashes(),
            FileHashes::Crc64,
            "version 3: when asked"
        );
        early.take_sha256 = true;
        assert_eq!(early.file_hashes(), FileHashes::Sha256);
        fs::write(&path, b"hello World").unwrap();
        assert!(matches!(v2.verify(), Err(Error::FileChanged { .. })));
    }

    #[test]
    fn hashes_of_the_bytes_sent_must_agree_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = state(dir.path());
        let mut hashes = ContentHasher::sha256_only();
        hashes.update(b"abcd");
        state.file.sent_crc64 = Some(Crc64Prefix { len: 3, crc64: 1 });
        state.file.sent_hashes = Some(Box::new(hashes));
        assert!(state.validate().unwrap_err().contains("different lengths"));
        state.file.sent_hashes = None;
        state.validate().unwrap();
        state.file.sent_crc64 = Some(Crc64Prefix { len: 11, crc64: 1 });
        assert!(state.validate().unwrap_err().contains("more bytes hashed"));
    }

    #[test]
    fn the_crc_is_saved_as_hex_and_read_back() {
        let prefix = Crc64Prefix {
            len: 3,
            crc64: u64::MAX - 1,
        };
        let json = serde_json::to_value(prefix).unwrap();
        assert_eq!(json["crc64"], "fffffffffffffffe");
        assert_eq!(serde_json::from_value::<Crc64Prefix>(json).unwrap(), prefix);
        let dir = tempfile::tempdir().unwrap();
        let mut state = state(dir.path());
        state.file.crc64 = Some(0xab);
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["file"]["crc64"], "00000000000000ab");
        assert!(serde_json::from_value::<ResumeState>(json).unwrap() == state);
        let bad = r#"{"len": 3, "crc64": "xyz"}"#;
        assert!(serde_json::from_str::<Crc64Prefix>(bad).is_err());
    }

    #[test]
    fn identity_detects_content_changes_but_not_touches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        fs::write(&path, b"hello world").unwrap();
        let id = FileIdentity::of(&path).unwrap();
        assert_eq!(id.size, 11);
        assert_eq!(
            id.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        let mut hashing =
            FileHashing::start_for(FileIdentity::stat(&path).unwrap(), FileHashes::Sha256);
        assert_eq!(hashing.finish(), &id, "the same identity, hashed beside");
        let crc_only = FileIdentity {
            sha256: None,
            ..id.clone()
        };
        let mut hashing = FileHashing::start(FileIdentity::stat(&path).unwrap());
        assert_eq!(hashing.finish(), &crc_only, "the CRC alone by default");
        assert_eq!(crc_only.verify().unwrap(), crc_only);
        assert_eq!(id.verify().unwrap(), id);
        id.check_unchanged().unwrap();
        fs::write(&path, b"hello World").unwrap();
        assert!(matches!(id.verify(), Err(Error::FileChanged { .. })));
        fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            id.check_unchanged(),
            Err(Error::FileChanged { .. })
        ));
        assert!(matches!(crc_only.verify(), Err(Error::FileChanged { .. })));
        fs::remove_file(&path).unwrap();
        assert!(matches!(id.verify(), Err(Error::FileChanged { .. })));
    }
}
