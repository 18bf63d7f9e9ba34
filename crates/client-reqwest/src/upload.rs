//! Uploads: the loop that drives a [`Planner`], and the [`Client`] methods that
//! start, continue and resume uploads.
//!
//! The loop is the adapter of the core's pump: ask `planner.next(now)`, do the
//! request it names (or sleep until its `Wait`), hand the answer or the transport
//! error back, drain its events into progress reports and resume state, repeat. It
//! decides nothing itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncSeek};
use upsession_core::planner::{Action, Completion, Event, Planner, PlannerConfig, UploadError};
use upsession_core::time::format_graph_time;

use crate::client::Client;
use crate::content_type::guess_content_type;
use crate::error::{Error, Result};
use crate::progress::{ProgressKind, ProgressSink};
use crate::redact::UploadUrl;
use crate::resume::{
    AttachmentMeta, FileIdentity, ResumeState, STATE_VERSION, StateStore, run_blocking,
};
use crate::target::Target;
use crate::transport::Inner;
use crate::transport::Reply;

/// How one file is attached, and where its progress goes.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct UploadOptions {
    /// The attachment's name (default: the file's name).
    pub name: Option<String>,
    /// Its MIME type (default: guessed from the name's extension,
    /// `application/octet-stream` when unknown).
    pub content_type: Option<String>,
    /// For an inline attachment, the `cid:` the HTML body refers to.
    pub content_id: Option<String>,
    /// Where progress goes.
    pub progress: ProgressSink,
    /// Where to save the resume state (default: a new file in the client's state
    /// directory, if it has one).
    pub state_file: Option<PathBuf>,
}

impl UploadOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the attachment's name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the MIME type.
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Makes the attachment inline, referred to as `cid:{content_id}`.
    #[must_use]
    pub fn inline(mut self, content_id: impl Into<String>) -> Self {
        self.content_id = Some(content_id.into());
        self
    }

    /// Reports progress to `sink`.
    #[must_use]
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// Reports progress to a callback.
    #[must_use]
    pub fn on_progress(
        mut self,
        f: impl Fn(&crate::ProgressEvent) + Send + Sync + 'static,
    ) -> Self {
        self.progress = ProgressSink::callback(f);
        self
    }

    /// Saves the resume state to `path`.
    #[must_use]
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    fn meta(&self, default_name: Option<&str>) -> Result<AttachmentMeta> {
        let name = self
            .name
            .clone()
            .or_else(|| default_name.map(str::to_owned))
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| Error::InvalidInput("the attachment needs a name".into()))?;
        let content_type = self
            .content_type
            .clone()
            .unwrap_or_else(|| guess_content_type(Path::new(&name)).to_owned());
        Ok(AttachmentMeta {
            name,
            content_type: Some(content_type),
            is_inline: self.content_id.is_some(),
            content_id: self.content_id.clone(),
        })
    }
}

/// A finished upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Uploaded {
    /// The attachment's name.
    pub name: String,
    /// Bytes uploaded.
    pub size: u64,
    /// The attachment's id, from the final answer's body or its `Location`.
    pub attachment_id: Option<String>,
    /// The attachment's URL, the final answer's `Location`.
    pub location: Option<String>,
    /// SHA-256 of the file, lowercase hex (file uploads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One upload being driven.
struct Job<'a> {
    inner: &'a Inner,
    label: Arc<str>,
    /// The path named in I/O errors (the file, or the label for readers).
    source: PathBuf,
    progress: &'a ProgressSink,
    /// What to create the session on; `None` when continuing one.
    create: Option<(Target, upsession_core::wire::AttachmentItem)>,
    identity: Option<FileIdentity>,
    /// Where to save the resume state, and the state (its uploadUrl is filled in
    /// when the session is created).
    state: Option<(PathBuf, ResumeState)>,
    /// When progress was last written to the state.
    progress_saved: Option<std::time::Instant>,
    name: String,
}

impl Job<'_> {
    /// Runs the upload to its end and reports it.
    async fn run<R>(mut self, mut planner: Planner, mut reader: R) -> Result<Uploaded>
    where
        R: AsyncRead + AsyncSeek + Unpin + Send,
    {
        let total = planner.total();
        self.emit(ProgressKind::Started { total });
        let result = self.drive(&mut planner, &mut reader).await;
        let result = match result {
            Ok(completion) => {
                self.forget_state().await;
                match &self.identity {
                    // A change during the last fragment is caught here, not hidden.
                    Some(identity) => identity.check_unchanged().await.map(|()| completion),
                    None => Ok(completion),
                }
            }
            Err(e) => {
                if e.session_is_gone() {
                    self.forget_state().await;
                }
                Err(e)
            }
        };
        match result {
            Ok(completion) => {
                tracing::info!(
                    file = %self.label,
                    attachment_id = completion.attachment_id.as_deref().unwrap_or(""),
                    "upload complete"
                );
                self.emit(ProgressKind::Completed {
                    attachment_id: completion.attachment_id.clone(),
                    location: completion.location.clone(),
                });
                Ok(Uploaded {
                    name: self.name.clone(),
                    size: total,
                    attachment_id: completion.attachment_id,
                    location: completion.location,
                    sha256: self.identity.as_ref().map(|i| i.sha256.clone()),
                })
            }
            Err(e) => {
                tracing::warn!(file = %self.label, error = %e, "upload failed");
                self.emit(ProgressKind::Failed {
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// The pump: the planner decides, this does the I/O.
    async fn drive<R>(&mut self, planner: &mut Planner, reader: &mut R) -> Result<Completion>
    where
        R: AsyncRead + AsyncSeek + Unpin + Send,
    {
        loop {
            let reply = match planner.next(SystemTime::now()) {
                Action::CreateSession => {
                    let Some((target, item)) = &self.create else {
                        return Err(Error::Protocol(
                            "the planner asked to create a session for an upload that has one"
                                .into(),
                        ));
                    };
                    let request = self.inner.create_session_request(target, item).await?;
                    self.inner.send(request).await?
                }
                Action::Put(range) => {
                    if let Some(identity) = &self.identity {
                        identity.check_unchanged().await?;
                    }
                    if let Some(pacer) = &self.inner.pacer {
                        pacer
                            .send_bytes(range.range().len(), |wait| {
                                tracing::info!(file = %self.label, ?wait, "mailbox budget spent; waiting");
                                self.emit(ProgressKind::Paced { wait });
                            })
                            .await;
                    }
                    let url = session_url(planner)?;
                    self.inner
                        .put_fragment(&url, range, reader, &self.source)
                        .await?
                }
                Action::QueryStatus => {
                    let url = session_url(planner)?;
                    tracing::debug!(url = %url, "GET session status");
                    self.inner
                        .send(self.inner.http.get(url.expose_secret()))
                        .await?
                }
                Action::Delete => {
                    let url = session_url(planner)?;
                    tracing::debug!(url = %url, "DELETE session");
                    self.inner
                        .send(self.inner.http.delete(url.expose_secret()))
                        .await?
                }
                Action::Wait { until } => {
                    let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Action::Pending => {
                    return Err(Error::Protocol(
                        "the upload planner is waiting for an answer that was already given".into(),
                    ));
                }
                Action::Done(completion) => return Ok(completion),
                Action::Failed(error) => return Err(failure(error)),
                Action::Cancelled => return Err(Error::Cancelled),
            };
            let now = SystemTime::now();
            match reply {
                Reply::Answer(answer) => {
                    tracing::debug!(file = %self.label, status = answer.status().as_u16(), "answer");
                    planner.handle_response(now, &answer);
                }
                Reply::NoAnswer(kind, why) => {
                    tracing::warn!(file = %self.label, ?kind, error = %why, "no answer");
                    planner.handle_transport_error(now, kind);
                }
            }
            self.drain(planner).await?;
        }
    }

    /// Turns the planner's events into progress reports and resume state.
    async fn drain(&mut self, planner: &mut Planner) -> Result<()> {
        while let Some(event) = planner.poll_event() {
            match event {
                Event::SessionCreated {
                    upload_url,
                    expires,
                } => {
                    let upload_url = UploadUrl::new(upload_url);
                    tracing::info!(file = %self.label, url = %upload_url, "upload session created");
                    if let Some((path, state)) = &mut self.state {
                        let now = format_graph_time(SystemTime::now());
                        state.upload_url = upload_url.clone();
                        state.expires = expires.map(format_graph_time);
                        state.created.clone_from(&now);
                        state.updated = now;
                        // Saved before any fragment is sent; without it there is no resume.
                        save(path.clone(), state.clone()).await?;
                        self.progress_saved = Some(std::time::Instant::now());
                    }
                    self.emit(ProgressKind::SessionCreated {
                        upload_url,
                        expires,
                    });
                }
                Event::Progress {
                    acknowledged,
                    total,
                } => {
                    tracing::debug!(file = %self.label, acknowledged, total, "progress");
                    // Informational (resume asks the session anyway), so written at
                    // most once a second, without the directory sync: a state write
                    // and two fsyncs per fragment cost as much as the upload.
                    let due = self
                        .progress_saved
                        .is_none_or(|at| at.elapsed() >= PROGRESS_SAVE_INTERVAL);
                    if let Some((path, state)) = &mut self.state
                        && !state.upload_url.expose_secret().is_empty()
                        && acknowledged < total
                        && due
                    {
                        state.acknowledged = acknowledged;
                        state.expires = planner.expires().map(format_graph_time);
                        state.fragment_size = planner.fragment_size();
                        state.updated = format_graph_time(SystemTime::now());
                        self.progress_saved = Some(std::time::Instant::now());
                        let (p, st) = (path.clone(), state.clone());
                        let saved = run_blocking(path, "write the resume state to", move || {
                            st.save_progress(&p)
                        })
                        .await;
                        if let Err(e) = saved {
                            tracing::warn!(error = %e, "could not update the resume state");
                        }
                    }
                    self.emit(ProgressKind::Acknowledged {
                        acknowledged,
                        total,
                    });
                }
                Event::Retrying {
                    attempt,
                    wait,
                    reason,
                } => {
                    tracing::info!(file = %self.label, attempt, ?wait, %reason, "retrying");
                    self.emit(ProgressKind::Retrying {
                        attempt,
                        wait,
                        reason,
                    });
                }
                Event::FragmentShrunk { fragment_size } => {
                    tracing::info!(file = %self.label, fragment_size, "fragments shrunk after a 413");
                    self.emit(ProgressKind::FragmentShrunk { fragment_size });
                }
                other => tracing::debug!(file = %self.label, event = ?other, "planner event"),
            }
        }
        Ok(())
    }

    /// Removes the resume state file, if any.
    async fn forget_state(&mut self) {
        if let Some((path, _)) = self.state.take() {
            let p = path.clone();
            if let Err(e) = run_blocking(&path, "remove", move || StateStore::remove(&p)).await {
                tracing::warn!(error = %e, "could not remove the resume state");
            }
        }
    }

    fn emit(&self, kind: ProgressKind) {
        self.progress.emit(&self.label, kind);
    }
}

/// Least time between two progress updates of a resume state.
const PROGRESS_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn save(path: PathBuf, state: ResumeState) -> Result<()> {
    let p = path.clone();
    run_blocking(&path, "write the resume state to", move || state.save(&p)).await
}

fn session_url(planner: &Planner) -> Result<UploadUrl> {
    planner.upload_url().map(UploadUrl::from).ok_or_else(|| {
        Error::Protocol("the planner asked for the session before it existed".into())
    })
}

/// The planner's failure as this crate's error.
fn failure(error: UploadError) -> Error {
    match error {
        UploadError::SessionExpired => Error::SessionExpired { remote: None },
        UploadError::SessionNotFound(remote) => Error::SessionExpired {
            remote: Some(remote),
        },
        other => Error::Upload(other),
    }
}

impl Inner {
    fn planner_config(&self, fragment_size: Option<u64>) -> PlannerConfig {
        let mut cfg = self.planner.clone();
        if let Some(size) = fragment_size {
            cfg = cfg.with_fragment_size(size);
        }
        if self.random_jitter {
            let random = getrandom::u64().unwrap_or_else(|_| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos()
                    .into()
            });
            let seed = cfg.jitter_seed ^ random;
            cfg = cfg.with_jitter_seed(seed);
        }
        cfg
    }
}

impl Client {
    /// Uploads a file as an attachment of `target`: creates the upload session with
    /// the full `AttachmentItem`, then streams the file in fragments, one at a time,
    /// never reading it whole into memory.
    ///
    /// Before the session is created the file is read once to take its SHA-256, the
    /// identity that [`Client::resume`] checks. If the client has a state directory
    /// (or `options.state_file` is set), a [`ResumeState`] is saved as soon as the
    /// session exists and updated as fragments are acknowledged; it is removed when
    /// the upload completes.
    pub async fn upload_file(
        &self,
        target: &Target,
        path: impl AsRef<Path>,
        options: UploadOptions,
    ) -> Result<Uploaded> {
        let given = path.as_ref();
        let label: Arc<str> = given.display().to_string().into();
        match self.prepare_file(target, given, &label, &options).await {
            Ok((job, planner, file)) => job.run(planner, file).await,
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

    /// Everything before the first request: identity, attachment, state, planner.
    async fn prepare_file<'a>(
        &'a self,
        target: &Target,
        given: &Path,
        label: &Arc<str>,
        options: &'a UploadOptions,
    ) -> Result<(Job<'a>, Planner, tokio::fs::File)> {
        let inner = &*self.inner;
        let path = tokio::fs::canonicalize(given)
            .await
            .map_err(|e| Error::io("open", given, e))?;
        let identity = FileIdentity::of(&path).await?;
        if identity.size == 0 {
            return Err(Error::InvalidInput(format!(
                "{} is empty; an upload session needs at least one byte",
                given.display()
            )));
        }
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let meta = options.meta(file_name.as_deref())?;
        let item = meta.to_item(identity.size);
        let cfg = inner.planner_config(None);
        let state_path = options
            .state_file
            .clone()
            .or_else(|| inner.states.as_ref().map(|s| s.new_state_path(&path)));
        let state = state_path.map(|p| {
            let state = ResumeState {
                version: STATE_VERSION,
                upload_url: UploadUrl::new(""),
                expires: None,
                base_url: inner.base.to_string(),
                user: inner.user.clone(),
                target: target.clone(),
                file: identity.clone(),
                attachment: meta.clone(),
                fragment_size: cfg.fragment_size,
                acknowledged: 0,
                created: String::new(),
                updated: String::new(),
            };
            (p, state)
        });
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io("open", &path, e))?;
        let planner = Planner::new(identity.size, cfg);
        let job = Job {
            inner,
            label: Arc::clone(label),
            source: path,
            progress: &options.progress,
            create: Some((target.clone(), item)),
            identity: Some(identity),
            state,
            progress_saved: None,
            name: meta.name,
        };
        Ok((job, planner, file))
    }

    /// Uploads `size` bytes from any seekable reader (a file already open, a buffer,
    /// a decrypting stream…) as an attachment of `target`. `options.name` is
    /// required. No resume state is saved: the reader has no identity to check; keep
    /// the uploadUrl from [`ProgressKind::SessionCreated`] and use
    /// [`Client::continue_upload`] to continue.
    pub async fn upload_reader<R>(
        &self,
        target: &Target,
        reader: R,
        size: u64,
        options: UploadOptions,
    ) -> Result<Uploaded>
    where
        R: AsyncRead + AsyncSeek + Unpin + Send,
    {
        if size == 0 {
            return Err(Error::InvalidInput(
                "an upload session needs at least one byte".into(),
            ));
        }
        let meta = options.meta(None)?;
        let label: Arc<str> = meta.name.as_str().into();
        let job = Job {
            inner: &self.inner,
            source: PathBuf::from(meta.name.as_str()),
            label,
            progress: &options.progress,
            create: Some((target.clone(), meta.to_item(size))),
            identity: None,
            state: None,
            progress_saved: None,
            name: meta.name,
        };
        let planner = Planner::new(size, self.inner.planner_config(None));
        job.run(planner, reader).await
    }

    /// Continues an existing session at `upload_url` with `size` bytes from
    /// `reader`, which must hold the same bytes as when the session was started:
    /// asks the session what it has, then sends the rest. `options.name` (default
    /// `upload`) only labels progress and the result.
    pub async fn continue_upload<R>(
        &self,
        upload_url: &UploadUrl,
        reader: R,
        size: u64,
        options: UploadOptions,
    ) -> Result<Uploaded>
    where
        R: AsyncRead + AsyncSeek + Unpin + Send,
    {
        if size == 0 {
            return Err(Error::InvalidInput(
                "an upload session needs at least one byte".into(),
            ));
        }
        let name = options.name.clone().unwrap_or_else(|| "upload".into());
        let job = Job {
            inner: &self.inner,
            label: name.as_str().into(),
            source: PathBuf::from(&name),
            progress: &options.progress,
            create: None,
            identity: None,
            state: None,
            progress_saved: None,
            name,
        };
        let planner = Planner::resume(
            size,
            upload_url.expose_secret().to_owned(),
            None,
            self.inner.planner_config(None),
        );
        job.run(planner, reader).await
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
        futures_util::stream::iter(files)
            .map(|(path, options)| async move { self.upload_file(target, path, options).await })
            .buffered(self.inner.concurrency)
            .collect()
            .await
    }

    /// Resumes the upload saved in the state file at `state_path`.
    ///
    /// Before any request: refuses an expired session ([`Error::SessionExpired`],
    /// and the state file is removed) and a file whose size or content changed
    /// ([`Error::FileChanged`], the state file is kept). Then asks the session what
    /// it has (`GET {uploadUrl}`) and sends the rest, updating the state file;
    /// removes it when the upload completes or the session turns out to be gone.
    pub async fn resume(
        &self,
        state_path: impl AsRef<Path>,
        progress: &ProgressSink,
    ) -> Result<Uploaded> {
        let state_path = state_path.as_ref();
        let state = ResumeState::load(state_path)?;
        self.resume_inner(state, Some(state_path.to_path_buf()), progress)
            .await
    }

    /// Resumes from a state held in memory; nothing is written or removed.
    pub async fn resume_state(
        &self,
        state: &ResumeState,
        progress: &ProgressSink,
    ) -> Result<Uploaded> {
        state
            .validate()
            .map_err(|reason| Error::InvalidState { path: None, reason })?;
        self.resume_inner(state.clone(), None, progress).await
    }

    /// Resumes every upload saved in `store`, at most
    /// [`ClientBuilder::concurrency`](crate::ClientBuilder::concurrency) at once,
    /// returning each state file with its result.
    pub async fn resume_all(
        &self,
        store: &StateStore,
        progress: &ProgressSink,
    ) -> Result<Vec<(PathBuf, Result<Uploaded>)>> {
        let store = store.clone();
        let dir = store.dir().to_path_buf();
        let states = run_blocking(&dir, "list", move || store.list()).await?;
        Ok(futures_util::stream::iter(states)
            .map(|(path, state)| async move {
                let result = match state {
                    Ok(state) => self.resume_inner(state, Some(path.clone()), progress).await,
                    Err(e) => Err(e),
                };
                (path, result)
            })
            .buffered(self.inner.concurrency)
            .collect()
            .await)
    }

    async fn resume_inner(
        &self,
        state: ResumeState,
        state_path: Option<PathBuf>,
        progress: &ProgressSink,
    ) -> Result<Uploaded> {
        let label: Arc<str> = state.file.path.display().to_string().into();
        let fail = |e: Error| {
            progress.emit(
                &label,
                ProgressKind::Failed {
                    message: e.to_string(),
                },
            );
            e
        };
        if state.is_expired(SystemTime::now()) {
            if let Some(path) = &state_path {
                let p = path.clone();
                let _ = run_blocking(path, "remove", move || StateStore::remove(&p)).await;
            }
            return Err(fail(Error::SessionExpired { remote: None }));
        }
        // Every byte of the file is checked before any byte is sent.
        let identity = state.file.verify().await.map_err(fail)?;
        let path = identity.path.clone();
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| fail(Error::io("open", &path, e)))?;
        tracing::info!(file = %label, url = %state.upload_url, "resuming upload");
        let planner = Planner::resume(
            state.file.size,
            state.upload_url.expose_secret().to_owned(),
            state.expires_at(),
            self.inner.planner_config(Some(state.fragment_size)),
        );
        let job = Job {
            inner: &self.inner,
            label,
            source: path,
            progress,
            create: None,
            identity: Some(identity),
            name: state.attachment.name.clone(),
            state: state_path.map(|p| (p, state)),
            progress_saved: None,
        };
        job.run(planner, file).await
    }
}
