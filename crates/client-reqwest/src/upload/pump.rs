//! One upload driven to its end: the loop that pumps a [`Planner`], and the
//! planner's settings for it.
//!
//! The loop is the adapter of the core's pump: ask `planner.next(now)`, do the
//! request it names (or sleep until its `Wait`), hand the answer or the transport
//! error back, drain its events into progress reports and resume state, repeat. It
//! decides nothing itself.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::Either;
use reqwest::Method;
use tokio_util::sync::CancellationToken;
use upsession_core::ContentRange;
use upsession_core::planner::{
    Action, Completion, Event, Planner, PlannerConfig, TransportError, UploadError,
};
use upsession_core::wire::AttachmentItem;

use upsession_client_shared::ending;

use super::options::Uploaded;
use crate::error::{Error, Result};
use crate::progress::{ProgressKind, ProgressSink};
use crate::resume::{FileHashing, ResumeState, StateStore, check_unchanged, run_blocking};
use crate::source::FragmentSource;
use crate::transport::{Inner, Reply};
use upsession_core::redact::{RedactedUrl, UploadUrl};
use upsession_core::target::Target;

/// One upload being driven.
pub(super) struct Job<'a> {
    pub(super) inner: &'a Inner,
    pub(super) label: Arc<str>,
    /// The path named in I/O errors (the file, or the label for readers).
    pub(super) source: PathBuf,
    pub(super) progress: &'a ProgressSink,
    /// What to create the session on; `None` when continuing one.
    pub(super) create: Option<(Target, AttachmentItem)>,
    /// The file's identity, its hashes taken beside the upload.
    pub(super) file: Option<FileHashing>,
    /// Where to save the resume state, and the state (its uploadUrl is filled in
    /// when the session is created).
    pub(super) state: Option<(PathBuf, ResumeState)>,
    /// When progress was last written to the state.
    pub(super) progress_saved: Option<std::time::Instant>,
    pub(super) name: String,
    /// The item, when known: a doubt about the final fragment is settled by
    /// listing its attachments.
    pub(super) target: Option<Target>,
    /// Bytes the session held when this upload resumed it, as saved.
    pub(super) resumed_at: u64,
    /// Cancels the upload when triggered.
    pub(super) cancel: Option<CancellationToken>,
    /// The planner was told of the cancel.
    pub(super) cancel_told: bool,
    /// The first request's URL (redacted), to name a server never reached.
    pub(super) first_url: Option<String>,
    /// Why the last request got no answer.
    pub(super) last_cause: Option<String>,
}

impl<'a> Job<'a> {
    /// An upload from a reader named `name`: no file identity to check, no resume
    /// state; `create` is what to create the session on (`None`: continuing one).
    pub(super) fn unsaved(
        inner: &'a Inner,
        name: String,
        progress: &'a ProgressSink,
        create: Option<(Target, AttachmentItem)>,
    ) -> Self {
        Self {
            inner,
            label: name.as_str().into(),
            source: PathBuf::from(&name),
            progress,
            target: create.as_ref().map(|(t, _)| t.clone()),
            create,
            file: None,
            state: None,
            progress_saved: None,
            name,
            resumed_at: 0,
            cancel: None,
            cancel_told: false,
            first_url: None,
            last_cause: None,
        }
    }
}

impl Job<'_> {
    /// Runs the upload to its end and reports it.
    pub(super) async fn run<S>(mut self, mut planner: Planner, mut bytes: S) -> Result<Uploaded>
    where
        S: FragmentSource,
    {
        let total = planner.total();
        for kind in ProgressKind::at_start(total, self.resumed_at) {
            self.emit(kind);
        }
        if self.target.as_ref().is_some_and(|t| !t.is_drive()) && self.inner.token.is_some() {
            planner.settle_doubt_by_listing(self.name.clone());
        }
        // Boxed: the pump's state is large, and callers nest this future in theirs.
        let result = Box::pin(self.drive(&mut planner, &mut bytes)).await;
        if result.as_ref().is_ok() || result.as_ref().is_err_and(Error::session_is_gone) {
            self.forget_state().await;
        }
        let result = match result {
            Ok(completion) => self.completed(completion, total).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(uploaded) => Ok(uploaded),
            Err(e) => {
                tracing::warn!(file = %self.label, error = %e, "upload failed");
                self.emit(ProgressKind::Failed {
                    message: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// The finished upload, reported. A file that changed during its last fragment
    /// is caught here and said, but the attachment exists: its id is kept.
    /// A drive file whose hashes are not the bytes sent is an error.
    async fn completed(&mut self, completion: Completion, total: u64) -> Result<Uploaded> {
        let file_changed = match &self.file {
            Some(file) => check_unchanged(file.identity())
                .await
                .err()
                .map(|e| e.to_string()),
            None => None,
        };
        if let Some(why) = &file_changed {
            tracing::warn!(file = %self.label, "{why}; the attachment holds the bytes sent");
        }
        tracing::info!(
            file = %self.label,
            attachment_id = completion.attachment_id.as_deref().unwrap_or(""),
            "upload complete"
        );
        self.emit(ProgressKind::completed(&completion));
        // The hash has almost always finished by now; waiting for it blocks.
        let identity = match self.file.take() {
            Some(mut file) => tokio::task::spawn_blocking(move || file.finish().clone())
                .await
                .ok(),
            None => None,
        };
        let uploaded = Uploaded::completed(
            self.name.clone(),
            total,
            completion,
            identity.as_ref(),
            file_changed,
        );
        match uploaded.drive_hashes_differ(identity.as_ref()) {
            Some(why) => Err(Error::Protocol(why)),
            None => Ok(uploaded),
        }
    }

    /// The pump: the planner decides, this does the I/O.
    async fn drive<S>(&mut self, planner: &mut Planner, bytes: &mut S) -> Result<Completion>
    where
        S: FragmentSource,
    {
        loop {
            if !self.cancel_told
                && self
                    .cancel
                    .as_ref()
                    .is_some_and(CancellationToken::is_cancelled)
            {
                tracing::info!(file = %self.label, "cancelled; deleting the session");
                self.cancel_told = true;
                planner.cancel();
            }
            let action = match ending(planner.next(SystemTime::now()), |e| self.failure(e)) {
                ControlFlow::Break(end) => return end,
                ControlFlow::Continue(action) => action,
            };
            let reply = match action {
                Action::Wait { until } => {
                    let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
                    // A cancel wakes the wait; the loop's top then tells the planner.
                    let _ = self.unless_cancelled(tokio::time::sleep(wait)).await;
                    continue;
                }
                Action::Put(range) => {
                    match self.unless_cancelled(self.put(planner, range, bytes)).await {
                        Some(reply) => reply?,
                        // Abandoned: the planner deletes the session next.
                        None => Reply::NoAnswer(TransportError::Lost, "cancelled".into()),
                    }
                }
                other => self.request(planner, &other).await?,
            };
            let now = SystemTime::now();
            match reply {
                Reply::Answer(answer) => {
                    tracing::debug!(file = %self.label, status = answer.status().as_u16(), "answer");
                    planner.handle_response(now, &answer);
                }
                Reply::NoAnswer(kind, why) => {
                    tracing::warn!(file = %self.label, ?kind, error = %why, "no answer");
                    self.last_cause = Some(why);
                    planner.handle_transport_error(now, kind);
                }
            }
            self.drain(planner).await?;
        }
    }

    /// `future`'s output, or `None` if the upload is cancelled first.
    async fn unless_cancelled<T>(&self, future: impl Future<Output = T>) -> Option<T> {
        let Some(token) = &self.cancel else {
            return Some(future.await);
        };
        let future = std::pin::pin!(future);
        let cancelled = std::pin::pin!(token.cancelled());
        match futures_util::future::select(future, cancelled).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(((), _)) => None,
        }
    }

    /// One fragment: the file checked, the mailbox's budget kept, the bytes sent.
    async fn put<S>(&self, planner: &Planner, range: ContentRange, bytes: &mut S) -> Result<Reply>
    where
        S: FragmentSource,
    {
        if let Some(file) = &self.file {
            check_unchanged(file.identity()).await?;
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
        let (progress, label) = (self.progress.clone(), Arc::clone(&self.label));
        let (start, total) = (range.range().start(), range.total());
        let on_sent = move |sent: u64| {
            let sent = start + sent;
            progress.emit(&label, ProgressKind::Sent { sent, total });
        };
        // Boxed: the request and its body pump are large, and every upload nests
        // this future.
        Box::pin(self.inner.put_fragment(
            &url,
            range,
            bytes,
            &self.source,
            on_sent,
            self.file.as_ref(),
        ))
        .await
    }

    /// A request without a body: creating the session, asking it, deleting it,
    /// listing the item's attachments.
    async fn request(&mut self, planner: &Planner, action: &Action) -> Result<Reply> {
        match action {
            Action::CreateSession => {
                let Some((target, item)) = &self.create else {
                    return Err(Error::Protocol(
                        "the planner asked to create a session for an upload that has one".into(),
                    ));
                };
                let url = self.inner.session_url(target);
                self.first_url = Some(RedactedUrl(url.as_str()).to_string());
                let request = self.inner.create_session_request(target, item).await?;
                self.inner.send(request).await
            }
            Action::QueryStatus => {
                self.to_session(planner, Method::GET, "GET session status")
                    .await
            }
            Action::Delete => {
                self.to_session(planner, Method::DELETE, "DELETE session")
                    .await
            }
            Action::ListAttachments => {
                let Some(target) = &self.target else {
                    return Err(Error::Protocol(
                        "the planner asked to list an unknown item".into(),
                    ));
                };
                let url = self.inner.attachments_url(target, &[]);
                tracing::info!(file = %self.label, url = %url, "final answer in doubt; listing the attachments");
                let request = self.inner.authorize(self.inner.http.get(url)).await?;
                self.inner.send(request).await
            }
            other => Err(Error::Protocol(format!(
                "the upload planner asked for {other:?}, which is not a request"
            ))),
        }
    }

    /// The planner's failure as this crate's error; a server never reached is
    /// named with its URL and the cause.
    fn failure(&mut self, error: UploadError) -> Error {
        let (first_url, last_cause) = (self.first_url.take(), self.last_cause.take());
        Error::of_planner(error, first_url, last_cause, self.inner.base.as_str())
    }

    /// A request without a body to the session's uploadUrl: `GET` (its status) or
    /// `DELETE`; `what` names it in the log.
    async fn to_session(&self, planner: &Planner, method: Method, what: &str) -> Result<Reply> {
        let url = session_url(planner)?;
        tracing::debug!(url = %url, "{what}");
        self.inner
            .send(self.inner.http.request(method, url.expose_secret()))
            .await
    }

    /// Turns the planner's events into progress reports and resume state.
    async fn drain(&mut self, planner: &mut Planner) -> Result<()> {
        while let Some(event) = planner.poll_event() {
            if let Event::SessionCreated {
                upload_url,
                expires,
            } = event
            {
                let upload_url = UploadUrl::new(upload_url);
                tracing::info!(file = %self.label, url = %upload_url, "upload session created");
                if let Some((path, state)) = &mut self.state {
                    state.session_created(upload_url.clone(), expires, SystemTime::now());
                    save(path.clone(), state.clone()).await?;
                    self.progress_saved = Some(std::time::Instant::now());
                }
                self.emit(ProgressKind::SessionCreated {
                    upload_url,
                    expires,
                });
            } else if let Some(kind) = ProgressKind::of_event(&event) {
                // Every event but the session's creation, whose Debug shows the
                // uploadUrl whole.
                tracing::debug!(file = %self.label, event = ?event, "planner event");
                if let Event::Progress {
                    acknowledged,
                    total,
                } = event
                {
                    self.save_progress(planner, acknowledged, total).await;
                }
                self.emit(kind);
            }
        }
        Ok(())
    }

    /// Writes the acknowledged bytes to the resume state, if any. Informational
    /// (resume asks the session anyway), so written at most once a second, without
    /// the directory sync: a state write and two fsyncs per fragment cost as much as
    /// the upload. Written at once when the file's hash has just become known.
    async fn save_progress(&mut self, planner: &Planner, acknowledged: u64, total: u64) {
        let (expires, fragment_size) = (planner.expires(), planner.fragment_size());
        if let Some((path, state)) = &mut self.state
            && (self.file.as_mut().is_some_and(|f| f.poll_into(state))
                || self
                    .progress_saved
                    .is_none_or(|at| at.elapsed() >= PROGRESS_SAVE_INTERVAL))
            && state.record_progress(
                acknowledged,
                total,
                expires,
                fragment_size,
                SystemTime::now(),
            )
        {
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

impl Inner {
    /// The client's planner settings for one upload: its fragment size (when
    /// resuming, the one the session was started with) and a fresh jitter seed.
    pub(super) fn planner_config(&self, fragment_size: Option<u64>) -> PlannerConfig {
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
