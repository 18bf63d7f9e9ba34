//! Resume state, shared with the other clients ([`upsession_client_shared`]), and
//! its blocking file work run off the async threads.

use std::io;
use std::path::Path;

pub(crate) use upsession_client_shared::FileHashing;
pub use upsession_client_shared::{
    AttachmentMeta, FileIdentity, ResumeState, STATE_VERSION, StateStore,
};

use crate::error::{Error, Result};

/// Runs blocking file work off the async threads.
pub(crate) async fn run_blocking<T: Send + 'static>(
    path: &Path,
    action: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(action, path, io::Error::other(e)))?
}

/// [`FileIdentity::stat`] on a blocking thread.
pub(crate) async fn identify(path: &Path) -> Result<FileIdentity> {
    let p = path.to_path_buf();
    run_blocking(path, "read", move || FileIdentity::stat(&p)).await
}

/// [`FileIdentity::verify`] on a blocking thread.
pub(crate) async fn verify(identity: &FileIdentity) -> Result<FileIdentity> {
    let id = identity.clone();
    run_blocking(&identity.path, "read", move || id.verify()).await
}

/// [`FileIdentity::check_unchanged`] on a blocking thread.
pub(crate) async fn check_unchanged(identity: &FileIdentity) -> Result<()> {
    let id = identity.clone();
    run_blocking(&identity.path, "read", move || id.check_unchanged()).await
}
