//! What upsession's clients share besides their transport, so that the reqwest
//! client (async) and the ureq client (blocking) behave alike and read each other's
//! resume states.
//!
//! Decisions (what to send, what an answer means, retries) are `upsession_core`'s
//! [`Planner`](upsession_core::Planner); redaction and targets are in the core too
//! ([`upsession_core::redact`](mod@upsession_core::redact), [`upsession_core::target`]). This crate holds what
//! is not a decision but needs the file system or is the clients' common API:
//!
//! - [`Error`]: every way an upload or a request can fail, one sentence each;
//! - [`ResumeState`] files (written atomically, owner-only), [`StateStore`], and
//!   [`FileIdentity`] (size, modification time, SHA-256) to notice a changed file;
//! - [`ProgressEvent`]s, [`Uploaded`], [`guess_content_type`], and [`Pacing`]'s
//!   budget arithmetic ([`Window`]).
//!
//! Its file operations are blocking `std::fs` calls; it uses no async runtime.

mod content_type;
mod error;
mod pacing;
mod progress;
mod resume;
mod status;
mod uploaded;

pub use content_type::{OCTET_STREAM, guess_content_type};
pub use error::{Error, Result, ending};
pub use pacing::{Pacing, Window};
pub use progress::{ProgressEvent, ProgressKind};
pub use resume::{AttachmentMeta, FileIdentity, ResumeState, STATE_VERSION, StateStore, hex};
pub use status::SessionStatus;
pub use uploaded::{Uploaded, attached, created_draft, remote_error, throttled};
