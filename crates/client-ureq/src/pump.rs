//! One upload driven to its end: the blocking loop that pumps a [`Planner`]. Ask
//! `planner.next(now)`, do the request it names (or sleep until its `Wait`), hand
//! the answer or the transport error back, turn its events into progress and resume
//! state, repeat. It decides nothing itself.

use std::io::{Read, Seek};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use upsession_client_shared::{
    Error, FileHashing, ProgressEvent, ProgressKind, Result, ResumeState, StateStore, Uploaded,
    ending,
};
use upsession_core::ContentRange;
use upsession_core::planner::{Action, Completion, Event, Planner, TransportError, UploadError};
use upsession_core::redact::{RedactedUrl, UploadUrl};
use upsession_core::target::Target;
use upsession_core::wire::AttachmentItem;

use crate::Client;
use crate::cancel::CancelToken;
use crate::transport::{Reply, Source, put_fragment, send};
use crate::upload::Progress;

/// Least time between two progress updates of a resume state.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// One upload being driven.
pub(crate) struct Job<'a> {
    pub(crate) client: &'a Client,
    pub(crate) progress: Progress,
    pub(crate) cancel: Option<CancelToken>,
    /// The upload's name in reports, and the attachment's.
    pub(crate) label: Arc<str>,
    pub(crate) name: String,
    /// The file (or, for a reader, its label), for I/O errors, and its identity.
    pub(crate) source: PathBuf,
    /// The file's identity, its hashes taken beside the upload.
    pub(crate) file: Option<FileHashing>,
    /// The session to create (`None` when continuing one); the item, to list its
    /// attachments when the end is in doubt.
    pub(crate) create: Option<(Target, AttachmentItem)>,
    pub(crate) target: Option<Target>,
    /// The resume state, its file, when it was last written, and the bytes the
    /// session held when resumed.
    pub(crate) state: Option<(PathBuf, ResumeState)>,
    pub(crate) progress_saved: Option<Instant>,
    pub(crate) resumed_at: u64,
    /// The first request's URL (redacted) and the last failure's cause, to name a
    /// server never reached.
    pub(crate) first_url: Option<String>,
    pub(crate) last_cause: Option<String>,
}

impl Job<'_> {
    /// Runs the upload to its end and reports it.
    pub(crate) fn run<R: Read + Seek>(
        mut self,
        mut planner: Planner,
        mut reader: R,
    ) -> Result<Uploaded> {
        let total = planner.total();
        for kind in ProgressKind::at_start(total, self.resumed_at) {
            self.emit(kind);
        }
        if self.target.as_ref().is_some_and(|t| !t.is_drive()) && self.client.has_token() {
            planner.settle_doubt_by_listing(self.name.clone());
        }
        let result = self.drive(&mut planner, &mut reader);
        if (result.is_ok() || result.as_ref().is_err_and(Error::session_is_gone))
            && let Some((path, _)) = self.state.take()
            && let Err(e) = StateStore::remove(&path)
        {
            tracing::warn!(error = %e, "could not remove the resume state");
        }
        match result.and_then(|completion| self.completed(completion, total)) {
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

    /// A drive file whose hashes are not the bytes sent is an error.
    fn completed(&mut self, completion: Completion, total: u64) -> Result<Uploaded> {
        let file_changed = self.file.as_ref().and_then(|file| {
            file.identity()
                .check_unchanged()
                .err()
                .map(|e| e.to_string())
        });
        self.emit(ProgressKind::completed(&completion));
        let identity = self.file.as_mut().map(FileHashing::finish);
        let uploaded =
            Uploaded::completed(self.name.clone(), total, completion, identity, file_changed);
        match uploaded.drive_hashes_differ(identity) {
            Some(why) => Err(Error::Protocol(why)),
            None => Ok(uploaded),
        }
    }

    /// The pump: the planner decides, this does the I/O.
    fn drive<R: Read + Seek>(
        &mut self,
        planner: &mut Planner,
        reader: &mut R,
    ) -> Result<Completion> {
        let mut cancel_told = false;
        loop {
            if !cancel_told && self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                tracing::info!(file = %self.label, "cancelled; deleting the session");
                cancel_told = true;
                planner.cancel();
            }
            let action = planner.next(SystemTime::now());
            if let Action::Wait { until } = action {
                let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
                // A cancel cuts the wait short; the loop's top tells the planner.
                match &self.cancel {
                    Some(token) => _ = token.sleep(wait),
                    None => std::thread::sleep(wait),
                }
                continue;
            }
            let reply = match ending(action, |e| self.failure(e)) {
                ControlFlow::Break(end) => return end,
                ControlFlow::Continue(Action::Put(range)) => self.put(planner, range, reader)?,
                ControlFlow::Continue(other) => self.request(planner, &other)?,
            };
            let now = SystemTime::now();
            match reply {
                Reply::Answer(answer) => planner.handle_response(now, &answer),
                Reply::NoAnswer(kind, why) => {
                    tracing::warn!(file = %self.label, ?kind, error = %why, "no answer");
                    self.last_cause = Some(why);
                    planner.handle_transport_error(now, kind);
                }
            }
            self.drain(planner)?;
        }
    }

    /// One fragment: the file checked, the mailbox's budget kept, the bytes sent.
    fn put<R: Read + Seek>(
        &self,
        planner: &Planner,
        range: ContentRange,
        reader: &mut R,
    ) -> Result<Reply> {
        if let Some(file) = &self.file {
            file.identity().check_unchanged()?;
        }
        self.client
            .pace(range.range().len(), self.cancel.as_ref(), |wait| {
                self.emit(ProgressKind::Paced { wait });
            });
        let url = session_url(planner)?;
        let (start, total) = (range.range().start(), range.total());
        let on_sent = |sent: u64| {
            self.emit(ProgressKind::Sent {
                sent: start + sent,
                total,
            });
        };
        let cancel = self.cancel.as_ref();
        match put_fragment(
            &self.client.agent,
            &url,
            range,
            Source {
                reader,
                path: &self.source,
                hashing: self.file.as_ref(),
            },
            on_sent,
            cancel,
        ) {
            // A cancelled body: the planner deletes the session next.
            Err(_) if cancel.is_some_and(CancelToken::is_cancelled) => {
                Ok(Reply::NoAnswer(TransportError::Lost, "cancelled".into()))
            }
            other => other,
        }
    }

    /// A request without a streamed body.
    fn request(&mut self, planner: &Planner, action: &Action) -> Result<Reply> {
        let client = self.client;
        let request = match action {
            Action::CreateSession => {
                let Some((target, item)) = &self.create else {
                    return Err(Error::Protocol(
                        "the planner asked to create a session for an upload that has one".into(),
                    ));
                };
                let url = client.session_url(target);
                self.first_url = Some(RedactedUrl(&url).to_string());
                client.json_post(&url, target.session_body(item).to_string())?
            }
            Action::QueryStatus => to_session(planner, Method::GET)?,
            Action::Delete => to_session(planner, Method::DELETE)?,
            Action::ListAttachments => {
                let Some(target) = &self.target else {
                    return Err(Error::Protocol(
                        "the planner asked to list an unknown item".into(),
                    ));
                };
                let url = client.attachments_url(target, &[]);
                client
                    .authorize(http::Request::get(url))?
                    .body(Vec::new())
                    .map_err(|e| Error::InvalidInput(e.to_string()))?
            }
            other => {
                return Err(Error::Protocol(format!(
                    "the upload planner asked for {other:?}, which is not a request"
                )));
            }
        };
        send(&client.agent, request)
    }

    /// The planner's failure as the shared error; a server never reached is named.
    fn failure(&mut self, error: UploadError) -> Error {
        let (first_url, last_cause) = (self.first_url.take(), self.last_cause.take());
        Error::of_planner(error, first_url, last_cause, &self.client.base)
    }

    /// Reports the planner's events and keeps the resume state up to date.
    fn drain(&mut self, planner: &mut Planner) -> Result<()> {
        while let Some(event) = planner.poll_event() {
            let kind = match event {
                Event::SessionCreated {
                    upload_url,
                    expires,
                } => {
                    let upload_url = UploadUrl::new(upload_url);
                    tracing::info!(file = %self.label, url = %upload_url, "upload session created");
                    if let Some((path, state)) = &mut self.state {
                        state.session_created(upload_url.clone(), expires, SystemTime::now());
                        state.save(path)?;
                        self.progress_saved = Some(Instant::now());
                    }
                    ProgressKind::SessionCreated {
                        upload_url,
                        expires,
                    }
                }
                other => {
                    if let Event::Progress {
                        acknowledged,
                        total,
                    } = other
                    {
                        self.save_progress(planner, acknowledged, total);
                    }
                    let Some(kind) = ProgressKind::of_event(&other) else {
                        continue;
                    };
                    kind
                }
            };
            self.emit(kind);
        }
        Ok(())
    }

    /// Writes the acknowledged bytes to the resume state, at most once a second
    /// (resume asks the session anyway), and at once when the file's hash has
    /// just become known.
    fn save_progress(&mut self, planner: &Planner, acknowledged: u64, total: u64) {
        let now = SystemTime::now();
        let Some((path, state)) = &mut self.state else {
            return;
        };
        let hashed = self.file.as_mut().is_some_and(|f| f.poll_into(state));
        let due = hashed
            || self
                .progress_saved
                .is_none_or(|at| at.elapsed() >= PROGRESS_SAVE_INTERVAL);
        if due
            && state.record_progress(
                acknowledged,
                total,
                planner.expires(),
                planner.fragment_size(),
                now,
            )
        {
            self.progress_saved = Some(Instant::now());
            if let Err(e) = state.save_progress(path) {
                tracing::warn!(error = %e, "could not update the resume state");
            }
        }
    }

    fn emit(&self, kind: ProgressKind) {
        if let Some(progress) = &self.progress {
            progress(&ProgressEvent::new(Arc::clone(&self.label), kind));
        }
    }
}

/// `GET` or `DELETE` on the session's uploadUrl, without `Authorization`.
fn to_session(planner: &Planner, method: Method) -> Result<http::Request<Vec<u8>>> {
    let url = session_url(planner)?;
    http::Request::builder()
        .method(method)
        .uri(url.expose_secret())
        .body(Vec::new())
        .map_err(|_| Error::Protocol(format!("the uploadUrl {url} is not a URL")))
}

fn session_url(planner: &Planner) -> Result<UploadUrl> {
    planner.upload_url().map(UploadUrl::from).ok_or_else(|| {
        Error::Protocol("the planner asked for the session before it existed".into())
    })
}
