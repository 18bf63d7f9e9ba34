//! Uploads: a file or a reader to an item, a small file as one `POST`, and resuming
//! from a resume state.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use upsession_client_shared::{
    AttachmentMeta, Error, FileHashes, FileHashing, FileIdentity, ProgressEvent, ProgressKind,
    Result, ResumeState, StateStore, Uploaded, attached,
};
use upsession_core::planner::{Planner, PlannerConfig};
use upsession_core::target::Target;
use upsession_core::wire::NewFileAttachment;

use crate::Client;
use crate::cancel::CancelToken;
use crate::pump::Job;
use crate::transport::Reply;

/// Where an upload reports its progress, if anywhere.
pub(crate) type Progress = Option<Arc<dyn Fn(&ProgressEvent) + Send + Sync>>;

/// How one file is attached, where its progress goes, and what cancels it: built
/// with the methods below, from [`UploadOptions::new`].
#[derive(Clone, Default)]
pub struct UploadOptions {
    progress: Progress,
    cancel: Option<CancelToken>,
    state_file: Option<PathBuf>,
    name: Option<String>,
    content_type: Option<String>,
    content_id: Option<String>,
    sha256: bool,
}

impl fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadOptions")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("content_id", &self.content_id)
            .field("sha256", &self.sha256)
            .field("state_file", &self.state_file)
            .field("cancel", &self.cancel.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl UploadOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    upsession_core::setters! {
        /// Calls `f` with every progress event, on the uploading thread: keep it quick.
        on_progress(f: impl Fn(&ProgressEvent) + Send + Sync + 'static)
            => progress = Some(Arc::new(f));
        /// The resume state goes to `path` (by default, to a new file in the
        /// client's state directory if it has one; nowhere otherwise).
        state_file(path: impl Into<PathBuf>) => state_file = Some(path.into());
        /// The attachment is called `name` (by default, the file's name).
        name(name: impl Into<String>) => name = Some(name.into());
        /// The attachment's MIME type (by default, guessed from its name).
        content_type(content_type: impl Into<String>) => content_type = Some(content_type.into());
        /// An inline attachment, which the HTML body shows as `cid:{content_id}`.
        inline(content_id: impl Into<String>) => content_id = Some(content_id.into());
        /// Takes the file's SHA-256 too, in the same read, and returns it in
        /// [`Uploaded::sha256`]. Every file upload takes the file's CRC-64/NVME
        /// (its resume identity, [`Uploaded::crc64`]); a drive file's SHA-256 is
        /// taken anyway, to check the answer's.
        sha256(on: bool) => sha256 = on;
        /// Cancels the upload when `token` is cancelled (from any thread): a fragment
        /// being sent is abandoned, a wait cut short, the session deleted, the resume
        /// state removed, and the call returns [`Error::Cancelled`].
        cancel_on(token: CancelToken) => cancel = Some(token);
    }
}

impl Client {
    /// Uploads the file at `path` to `target`: one `POST` below the small-file
    /// limit, an upload session otherwise (resumable when a state is saved).
    pub fn upload_file(
        &self,
        target: &Target,
        path: impl AsRef<Path>,
        options: &UploadOptions,
    ) -> Result<Uploaded> {
        let given = path.as_ref();
        let path = std::path::absolute(given).map_err(|e| Error::io("find", given, e))?;
        let identity = FileIdentity::stat(&path)?;
        nonempty(identity.size)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let meta = meta(options, file_name.as_deref())?;
        let label: Arc<str> = given.display().to_string().into();
        // A drive file always takes a session.
        if identity.size < self.small_file_limit && !target.is_drive() {
            let kinds = FileHashes::for_upload(false, options.sha256);
            let (bytes, identity) = identity.read_whole(kinds)?;
            let mut done = self.small(target, &meta, bytes, &label, options)?;
            done.set_file_hashes(&identity);
            return Ok(done);
        }
        let cfg = self.planner_config(None);
        let state_path = options
            .state_file
            .clone()
            .or_else(|| self.states.as_ref().map(|s| s.new_state_path(&path)));
        let state = state_path.map(|p| {
            let mut state = ResumeState::before_session(
                self.base.clone(),
                self.user.clone(),
                target.clone(),
                identity.clone(),
                meta.clone(),
                cfg.fragment_size,
            );
            state.take_sha256 = options.sha256;
            (p, state)
        });
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let kinds = FileHashes::for_upload(target.is_drive(), options.sha256);
        let mut job = self.job(label, path, options, Some((target, &meta, identity.size)));
        let size = identity.size;
        job.file = Some(FileHashing::start_for(identity, kinds));
        job.state = state;
        job.run(Planner::new(size, cfg), file)
    }

    /// Uploads `size` bytes read from `reader` (from its start) to `target`, as an
    /// attachment that `options` must name. Not resumable after a restart: nothing
    /// identifies a reader's bytes.
    pub fn upload_reader<R: Read + Seek>(
        &self,
        target: &Target,
        mut reader: R,
        size: u64,
        options: &UploadOptions,
    ) -> Result<Uploaded> {
        nonempty(size)?;
        let meta = meta(options, None)?;
        let label: Arc<str> = meta.name.as_str().into();
        if size < self.small_file_limit && !target.is_drive() {
            let io = |e| Error::io("read", "the upload's reader", e);
            reader.seek(SeekFrom::Start(0)).map_err(io)?;
            let len = usize::try_from(size).map_err(|_| Error::InvalidInput("too large".into()))?;
            let mut bytes = vec![0; len];
            reader.read_exact(&mut bytes).map_err(io)?;
            return self.small(target, &meta, bytes, &label, options);
        }
        let source = PathBuf::from(&meta.name);
        let job = self.job(label, source, options, Some((target, &meta, size)));
        job.run(Planner::new(size, self.planner_config(None)), reader)
    }

    /// Continues the upload saved in the state file `state_path` (written by this
    /// client or the reqwest one), after checking the file as [`ResumeState`]
    /// says. It takes the hashes the state's upload took (`options.sha256` does
    /// not change them). The state is removed when the upload completes or its
    /// session is gone.
    pub fn resume(
        &self,
        state_path: impl AsRef<Path>,
        options: &UploadOptions,
    ) -> Result<Uploaded> {
        let state_path = state_path.as_ref();
        let state = ResumeState::load(state_path)?;
        if state.is_expired(SystemTime::now()) {
            let _ = StateStore::remove(state_path);
            return Err(Error::SessionExpired { remote: None });
        }
        let identity = state.file.verify()?;
        let path = identity.path.clone();
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        tracing::info!(file = %path.display(), url = %state.upload_url, "resuming upload");
        let planner = Planner::resume(
            state.file.size,
            state.upload_url.expose_secret().to_owned(),
            state.expires_at(),
            self.planner_config(Some(state.fragment_size)),
        );
        let label: Arc<str> = path.display().to_string().into();
        let mut job = self.job(label, path, options, None);
        job.name.clone_from(&state.attachment.name);
        job.file = Some(FileHashing::start_for(identity, state.file_hashes()));
        let same_mailbox = state.base_url == self.base && state.user == self.user;
        job.target = same_mailbox.then(|| state.target.clone());
        job.resumed_at = state.acknowledged;
        job.state = Some((state_path.to_path_buf(), state));
        job.run(planner, file)
    }

    /// A job for `label`, creating a session of `size` bytes on the target when asked.
    fn job(
        &self,
        label: Arc<str>,
        source: PathBuf,
        options: &UploadOptions,
        create: Option<(&Target, &AttachmentMeta, u64)>,
    ) -> Job<'_> {
        Job {
            client: self,
            name: create
                .map(|(_, meta, _)| meta.name.clone())
                .unwrap_or_default(),
            label,
            source,
            progress: options.progress.clone(),
            target: create.map(|(target, _, _)| target.clone()),
            create: create.map(|(target, meta, size)| (target.clone(), meta.to_item(size))),
            file: None,
            state: None,
            progress_saved: None,
            resumed_at: 0,
            cancel: options.cancel.clone(),
            first_url: None,
            last_cause: None,
        }
    }

    /// The planner's settings for one upload, with a fresh jitter seed.
    fn planner_config(&self, fragment_size: Option<u64>) -> PlannerConfig {
        let mut cfg = self.planner.clone();
        if let Some(size) = fragment_size {
            cfg = cfg.with_fragment_size(size);
        }
        if self.random_jitter {
            let seed = cfg.jitter_seed ^ getrandom::u64().unwrap_or(0x5eed);
            cfg = cfg.with_jitter_seed(seed);
        }
        cfg
    }

    /// A small file as one `POST …/attachments`, reported like a session upload.
    fn small(
        &self,
        target: &Target,
        meta: &AttachmentMeta,
        bytes: Vec<u8>,
        label: &Arc<str>,
        options: &UploadOptions,
    ) -> Result<Uploaded> {
        let emit = |kind| {
            if let Some(progress) = &options.progress {
                progress(&ProgressEvent::new(Arc::clone(label), kind));
            }
        };
        let total = bytes.len() as u64;
        emit(ProgressKind::Started { total });
        let result = self.post_small(target, meta, bytes, options.cancel.as_ref());
        match &result {
            Ok(done) => {
                emit(ProgressKind::Acknowledged {
                    acknowledged: total,
                    total,
                });
                emit(ProgressKind::Completed {
                    attachment_id: done.attachment_id.clone(),
                    location: done.location.clone(),
                });
            }
            Err(e) => emit(ProgressKind::Failed {
                message: e.to_string(),
            }),
        }
        result
    }

    fn post_small(
        &self,
        target: &Target,
        meta: &AttachmentMeta,
        bytes: Vec<u8>,
        cancel: Option<&CancelToken>,
    ) -> Result<Uploaded> {
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(Error::Cancelled);
        }
        let url = self.attachments_url(target, &[]);
        let total = bytes.len() as u64;
        let body = NewFileAttachment::new(meta.to_item(total), bytes)
            .to_request_json()
            .to_string();
        match self.send_throttled(&|| self.json_post(&url, body.clone()))? {
            Reply::Answer(answer) => attached(&answer, &meta.name, total, |id| {
                self.attachments_url(target, &[id])
            }),
            Reply::NoAnswer(kind, why) => Err(Error::post_unanswered(kind, why, &url)),
        }
    }
}

/// The attachment's properties from `options`, named `default_name` unless named.
fn meta(options: &UploadOptions, default_name: Option<&str>) -> Result<AttachmentMeta> {
    AttachmentMeta::for_upload(
        options.name.as_deref(),
        default_name,
        options.content_type.as_deref(),
        options.content_id.as_deref(),
    )
}

fn nonempty(size: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidInput(
            "an empty file cannot be attached".into(),
        ));
    }
    Ok(())
}
