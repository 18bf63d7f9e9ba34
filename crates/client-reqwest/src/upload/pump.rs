//! One upload driven to its end: the loop that pumps a [`Planner`], and the
//! planner's settings for it.
//!
//! The loop is the adapter of the core's pump: ask `planner.next(now)`, do the
//! request it names (or sleep until its `Wait`), hand the answer or the transport
//! error back, drain its events into progress reports and resume state, repeat. It
//! decides nothing itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use reqwest::Method;
use tokio::io::{AsyncRead, AsyncSeek};
use upsession_core::planner::{Action, Completion, Event, Planner, PlannerConfig, UploadError};
use upsession_core::time::format_graph_time;
use upsession_core::wire::AttachmentItem;

use super::options::Uploaded;
use crate::error::{Error, Result};
use crate::progress::{ProgressKind, ProgressSink};
use crate::redact::UploadUrl;
use crate::resume::{FileIdentity, ResumeState, StateStore, run_blocking};
use crate::target::Target;
use crate::transport::{Inner, Reply};

/// One upload being driven.
pub(super) struct Job<'a> {
    pub(super) inner: &'a Inner,
    pub(super) label: Arc<str>,
    /// The path named in I/O errors (the file, or the label for readers).
    pub(super) source: PathBuf,
    pub(super) progress: &'a ProgressSink,
    /// What to create the session on; `None` when continuing one.
    pub(super) create: Option<(Target, AttachmentItem)>,
    pub(super) identity: Option<FileIdentity>,
    /// Where to save the resume state, and the state (its uploadUrl is filled in
    /// when the session is created).
    pub(super) state: Option<(PathBuf, ResumeState)>,
    /// When progress was last written to the state.
    pub(super) progress_saved: Option<std::time::Instant>,
    pub(super) name: String,
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
            create,
            identity: None,
            state: None,
            progress_saved: None,
            name,
        }
    }
}

impl Job<'_> {
    /// Runs the upload to its end and reports it.
    pub(super) async fn run<R>(mut self, mut planner: Planner, mut reader: R) -> Result<Uploaded>
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
                    self.to_session(planner, Method::GET, "GET session status")
                        .await?
                }
                Action::Delete => {
                    self.to_session(planner, Method::DELETE, "DELETE session")
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
                    self.save_progress(planner, acknowledged, total).await;
                    self.emit(ProgressKind::Acknowledged {
                        acknowledged,
                        total,
                    });
                }
                Event::Retrying(retry) => {
                    tracing::info!(file = %self.label, attempt = retry.attempt, wait = ?retry.wait, reason = %retry.reason, "retrying");
                    self.emit(ProgressKind::Retrying(retry));
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

    /// Writes the acknowledged bytes to the resume state, if any. Informational
    /// (resume asks the session anyway), so written at most once a second, without
    /// the directory sync: a state write and two fsyncs per fragment cost as much as
    /// the upload.
    async fn save_progress(&mut self, planner: &Planner, acknowledged: u64, total: u64) {
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
