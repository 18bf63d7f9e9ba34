//! Resuming uploads from their saved [`ResumeState`]: one state file, a state in
//! memory, or every state in a [`StateStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use upsession_core::planner::Planner;

use super::options::Uploaded;
use super::pump::Job;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::progress::{ProgressKind, ProgressSink};
use crate::resume::{FileHashing, ResumeState, StateStore, run_blocking};

impl Client {
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
        // The file is checked (its hashes, or its time and the bytes already
        // sent) before any byte is sent.
        let identity = crate::resume::verify(&state.file).await.map_err(fail)?;
        let path = identity.path.clone();
        let file = super::open(&path, identity.size).await.map_err(fail)?;
        tracing::info!(file = %label, url = %state.upload_url, "resuming upload");
        let planner = Planner::resume(
            state.file.size,
            state.upload_url.expose_secret().to_owned(),
            state.expires_at(),
            self.inner.planner_config(Some(state.fragment_size)),
        );
        let mut job = Job::unsaved(&self.inner, state.attachment.name.clone(), progress, None);
        job.label = label;
        job.source = path;
        job.file = Some(FileHashing::start_for(identity, state.file_hashes()));
        // The item can be asked only where this client talks to it.
        let same_mailbox =
            state.base_url == self.inner.base.as_str() && state.user == self.inner.user;
        job.target = same_mailbox.then(|| state.target.clone());
        job.resumed_at = state.acknowledged;
        job.state = state_path.map(|p| (p, state));
        job.run(planner, file).await
    }
}
