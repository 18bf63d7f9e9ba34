//! Uploads: the [`Client`] methods that start, continue and resume uploads, one
//! file or many.
//!
//! Each builds a [`Planner`] and the `Job` that pumps it (`pump`); the public
//! types live in `options`, resuming from saved state in `resuming`.

mod options;
mod pump;
mod resuming;
mod small;

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncSeek};
use upsession_core::planner::Planner;

pub use options::{UploadOptions, Uploaded};

use self::pump::Job;
use self::small::SmallFile;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::progress::ProgressKind;
use crate::resume::{FileHashing, ResumeState, run_blocking};
use crate::source::{FileChunks, Reader};
use upsession_client_shared::FileHashes;
use upsession_core::redact::UploadUrl;
use upsession_core::target::Target;

impl Client {
    /// Uploads a file as an attachment of `target`: creates the upload session with
    /// the full `AttachmentItem`, then streams the file in fragments, one at a time,
    /// never reading it whole into memory.
    ///
    /// A file smaller than [`ClientBuilder::small_file_limit`] (default
    /// [`SMALL_FILE_LIMIT`](crate::SMALL_FILE_LIMIT), 3,000,000 bytes) is attached
    /// with one `POST …/attachments` instead, its bytes as base64 `contentBytes`,
    /// as Graph wants files under 3 MB; the result is the same [`Uploaded`]
    /// (attachment id and location), and no resume state is kept for it.
    ///
    /// ```no_run
    /// use upsession_client_reqwest::{Client, Target, UploadOptions};
    ///
    /// # async fn run() -> Result<(), upsession_client_reqwest::Error> {
    /// let client = Client::builder().token("…").build()?;
    /// let draft = client.create_draft("Two files").await?;
    /// // 1 KiB: one POST. 40 MB: an upload session. Same call, same result.
    /// for file in ["notes.txt", "video.mp4"] {
    ///     let done = client.upload_file(&draft, file, UploadOptions::new()).await?;
    ///     println!("{file}: {:?} at {:?}", done.attachment_id, done.location);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The file is read once: its CRC-64/NVME, the identity that
    /// [`Client::resume`] checks, is taken from the bytes read for the fragments
    /// (with its SHA-256 too when [`UploadOptions::sha256`] asks). If the client has a state directory
    /// (or `options.state_file` is set), a [`ResumeState`] is saved as soon as the
    /// session exists and updated as fragments are acknowledged; it is removed when
    /// the upload completes.
    ///
    /// [`ClientBuilder::small_file_limit`]: crate::ClientBuilder::small_file_limit
    pub async fn upload_file(
        &self,
        target: &Target,
        path: impl AsRef<Path>,
        options: UploadOptions,
    ) -> Result<Uploaded> {
        let given = path.as_ref();
        let label: Arc<str> = given.display().to_string().into();
        match self.prepare_file(target, given, &label, &options).await {
            Ok(Prepared::Session(session)) => {
                let (job, planner, file) = *session;
                job.run(planner, file).await
            }
            Ok(Prepared::Small(small)) => small.run().await,
            Err(e) => {
                options.progress.emit(
                    &label,
                    ProgressKind::Failed {
                        message: e.to_string(),
                    },
                );
                Err(e)
            }
        }
    }

    /// Everything before the first request: identity, attachment, and either the
    /// one `POST` of a small file or the session's state and planner.
    async fn prepare_file<'a>(
        &'a self,
        target: &Target,
        given: &Path,
        label: &Arc<str>,
        options: &'a UploadOptions,
    ) -> Result<Prepared<'a>> {
        let inner = &*self.inner;
        let path = tokio::fs::canonicalize(given)
            .await
            .map_err(|e| Error::io("open", given, e))?;
        let identity = crate::resume::identify(&path).await?;
        if identity.size == 0 {
            return Err(Error::InvalidInput(format!(
                "{} is empty; an upload session needs at least one byte",
                given.display()
            )));
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let meta = options.meta(file_name.as_deref())?;
        // OneDrive has no small-file route of this kind: a drive file always takes
        // a session.
        if identity.size < inner.small_file_limit && !target.is_drive() {
            let kinds = FileHashes::for_upload(false, options.sha256);
            let (bytes, identity) = small::read_file(&identity, kinds).await?;
            return Ok(Prepared::Small(Box::new(SmallFile {
                inner,
                label: Arc::clone(label),
                target: target.clone(),
                meta,
                bytes,
                identity: Some(identity),
                progress: &options.progress,
                cancel: options.cancel.clone(),
            })));
        }
        let item = meta.to_item(identity.size);
        let cfg = inner.planner_config(None);
        let state_path = options
            .state_file
            .clone()
            .or_else(|| inner.states.as_ref().map(|s| s.new_state_path(&path)));
        let state = state_path.map(|p| {
            let mut state = ResumeState::before_session(
                inner.base.to_string(),
                inner.user.clone(),
                target.clone(),
                identity.clone(),
                meta.clone(),
                cfg.fragment_size,
            );
            state.take_sha256 = options.sha256;
            (p, state)
        });
        let file = open(&path, identity.size).await?;
        let planner = Planner::new(identity.size, cfg);
        let mut job = Job::unsaved(
            inner,
            meta.name,
            &options.progress,
            Some((target.clone(), item)),
        );
        job.label = Arc::clone(label);
        job.source = path;
        let kinds = FileHashes::for_upload(target.is_drive(), options.sha256);
        job.file = Some(FileHashing::start_for(identity, kinds));
        job.state = state;
        job.cancel.clone_from(&options.cancel);
        Ok(Prepared::Session(Box::new((job, planner, file))))
    }

    /// Uploads `size` bytes from any seekable reader (a file already open, a buffer,
    /// a decrypting stream…) as an attachment of `target`. `options.name` is
    /// required. No resume state is saved: the reader has no identity to check; keep
    /// the uploadUrl from [`ProgressKind::SessionCreated`] and use
    /// [`Client::continue_upload`] to continue.
    pub async fn upload_reader(
        &self,
        target: &Target,
        reader: impl Source,
        size: u64,
        options: UploadOptions,
    ) -> Result<Uploaded> {
        nonempty(size)?;
        let meta = options.meta(None)?;
        if size < self.inner.small_file_limit && !target.is_drive() {
            let mut reader = reader;
            let small = SmallFile {
                inner: &self.inner,
                label: meta.name.as_str().into(),
                target: target.clone(),
                bytes: small::read_source(&mut reader, size).await?,
                meta,
                identity: None,
                progress: &options.progress,
                cancel: options.cancel.clone(),
            };
            return small.run().await;
        }
        let item = meta.to_item(size);
        let mut job = Job::unsaved(
            &self.inner,
            meta.name,
            &options.progress,
            Some((target.clone(), item)),
        );
        job.cancel.clone_from(&options.cancel);
        let planner = Planner::new(size, self.inner.planner_config(None));
        job.run(planner, Reader(reader)).await
    }

    /// Continues an existing session at `upload_url` with `size` bytes from
    /// `reader`, which must hold the same bytes as when the session was started:
    /// asks the session what it has, then sends the rest. `options.name` (default
    /// `upload`) only labels progress and the result.
    pub async fn continue_upload(
        &self,
        upload_url: &UploadUrl,
        reader: impl Source,
        size: u64,
        options: UploadOptions,
    ) -> Result<Uploaded> {
        nonempty(size)?;
        let name = options.name.clone().unwrap_or_else(|| "upload".into());
        let mut job = Job::unsaved(&self.inner, name, &options.progress, None);
        job.cancel.clone_from(&options.cancel);
        let planner = Planner::resume(
            size,
            upload_url.expose_secret().to_owned(),
            None,
            self.inner.planner_config(None),
        );
        job.run(planner, Reader(reader)).await
    }

    /// Uploads many files to `target`, at most [`ClientBuilder::concurrency`] at
    /// once (each file's fragments in order), and returns each file's result in
    /// the order given. One file failing does not stop the others.
    ///
    /// [`ClientBuilder::concurrency`]: crate::ClientBuilder::concurrency
    pub async fn upload_many<I, P>(&self, target: &Target, files: I) -> Vec<Result<Uploaded>>
    where
        I: IntoIterator<Item = (P, UploadOptions)>,
        P: AsRef<Path>,
    {
        self.upload_files(
            files
                .into_iter()
                .map(|(path, options)| (target.clone(), path, options)),
        )
        .await
    }

    /// [`Client::upload_many`], each file to its own target (drive files each
    /// have their own path).
    pub async fn upload_files<I, P>(&self, files: I) -> Vec<Result<Uploaded>>
    where
        I: IntoIterator<Item = (Target, P, UploadOptions)>,
        P: AsRef<Path>,
    {
        futures_util::stream::iter(files)
            .map(|(target, path, options)| async move {
                self.upload_file(&target, path, options).await
            })
            .buffered(self.inner.concurrency)
            .collect()
            .await
    }
}

/// What a file upload starts as: a session to pump, or one `POST`.
enum Prepared<'a> {
    Session(Box<(Job<'a>, Planner, FileChunks)>),
    Small(Box<SmallFile<'a>>),
}

/// Opens the file at `path`, of `size` bytes, to read its fragments from.
async fn open(path: &Path, size: u64) -> Result<FileChunks> {
    let p = path.to_path_buf();
    run_blocking(path, "open", move || {
        std::fs::File::open(&p)
            .map(|file| FileChunks::new(file, size))
            .map_err(|e| Error::io("open", &p, e))
    })
    .await
}

/// Refuses an upload of nothing: an upload session needs at least one byte.
fn nonempty(size: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidInput(
            "an upload session needs at least one byte".into(),
        ));
    }
    Ok(())
}

/// Where an upload's bytes come from: anything readable and seekable (a file, a
/// buffer, a decrypting stream…), since a fragment may be sent again from its start.
pub trait Source: AsyncRead + AsyncSeek + Unpin + Send {}

impl<T: AsyncRead + AsyncSeek + Unpin + Send> Source for T {}
