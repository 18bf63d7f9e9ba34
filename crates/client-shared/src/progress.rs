//! Progress reports: what each client's progress sink is given.
//!
//! Every upload tells its client's progress sink what happens to it, as
//! [`ProgressEvent`]s: the session was created, bytes were acknowledged, a request
//! is retried, the upload is done or failed. Events are reports, not decisions: the
//! planner has already decided.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use upsession_core::planner::{Completion, Event, Retry};

use upsession_core::redact::UploadUrl;

/// One thing that happened to one upload.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProgressEvent {
    /// Which upload: the file's path as given, or the attachment's name for an
    /// upload from a reader.
    pub label: Arc<str>,
    /// What happened.
    pub kind: ProgressKind,
}

impl ProgressEvent {
    /// `kind` happened to the upload labelled `label`.
    pub fn new(label: Arc<str>, kind: ProgressKind) -> Self {
        Self { label, kind }
    }
}

impl ProgressKind {
    /// The reports of an upload starting on `total` bytes, of which the session
    /// already holds `resumed_at`: progress continues from there, never from 0.
    pub fn at_start(total: u64, resumed_at: u64) -> Vec<Self> {
        let mut kinds = vec![Self::Started { total }];
        if resumed_at > 0 {
            kinds.push(Self::Acknowledged {
                acknowledged: resumed_at,
                total,
            });
        }
        kinds
    }

    /// The report of a completed upload.
    pub fn completed(completion: &Completion) -> Self {
        Self::Completed {
            attachment_id: completion.attachment_id.clone(),
            location: completion.location.clone(),
        }
    }

    /// The report of a planner event about progress, retries or fragment sizes;
    /// `None` for the others (a client reports those its own way).
    pub fn of_event(event: &Event) -> Option<Self> {
        Some(match event {
            Event::Progress {
                acknowledged,
                total,
            } => Self::Acknowledged {
                acknowledged: *acknowledged,
                total: *total,
            },
            Event::Retrying(retry) => Self::Retrying(retry.clone()),
            Event::FragmentShrunk { fragment_size } => Self::FragmentShrunk {
                fragment_size: *fragment_size,
            },
            _ => return None,
        })
    }
}

/// What happened, in [`ProgressEvent::kind`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ProgressKind {
    /// The upload started (or resumed) for `total` bytes.
    Started {
        /// File size.
        total: u64,
    },
    /// The session exists; its resume state, if any, is saved.
    SessionCreated {
        /// The session's uploadUrl. Displays redacted; see [`UploadUrl::expose_secret`].
        upload_url: UploadUrl,
        /// When the session expires, if the server said.
        expires: Option<SystemTime>,
    },
    /// `sent` of `total` bytes have been handed to the connection: those the
    /// server acknowledged and those of the fragment on its way, counted as the
    /// connection takes them (several times per fragment). Not yet acknowledged:
    /// a fragment that fails is sent again, and `sent` goes back to where it
    /// starts. On resume it starts where the session was, never at 0.
    Sent {
        /// Bytes sent, from the start of the file.
        sent: u64,
        /// File size.
        total: u64,
    },
    /// The server now holds `acknowledged` of `total` bytes.
    Acknowledged {
        /// Bytes the server has acknowledged.
        acknowledged: u64,
        /// File size.
        total: u64,
    },
    /// A request failed and will be sent again after [`Retry::wait`].
    Retrying(Retry),
    /// A `413` made the upload send smaller fragments.
    FragmentShrunk {
        /// The new fragment size.
        fragment_size: u64,
    },
    /// The mailbox's upload budget is spent; the next fragment waits.
    Paced {
        /// How long.
        wait: Duration,
    },
    /// The attachment exists.
    Completed {
        /// Its id, when the server said.
        attachment_id: Option<String>,
        /// Its URL (`Location`), when the server said.
        location: Option<String>,
    },
    /// The upload stopped with an error (the call returns it too).
    Failed {
        /// The error's message.
        message: String,
    },
}

impl fmt::Display for ProgressEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = &self.label;
        match &self.kind {
            ProgressKind::Started { total } => write!(f, "{label}: uploading {total} bytes"),
            ProgressKind::SessionCreated { upload_url, .. } => {
                write!(f, "{label}: upload session {upload_url}")
            }
            ProgressKind::Sent { sent, total } => {
                write!(f, "{label}: {sent} of {total} bytes sent")
            }
            ProgressKind::Acknowledged {
                acknowledged,
                total,
            } => write!(f, "{label}: {acknowledged} of {total} bytes acknowledged"),
            ProgressKind::Retrying(retry) => write!(
                f,
                "{label}: retrying in {:.1} s (attempt {}): {}",
                retry.wait.as_secs_f64(),
                retry.attempt,
                retry.reason
            ),
            ProgressKind::FragmentShrunk { fragment_size } => {
                write!(f, "{label}: fragments shrunk to {fragment_size} bytes")
            }
            ProgressKind::Paced { wait } => write!(
                f,
                "{label}: mailbox upload budget spent, waiting {:.1} s",
                wait.as_secs_f64()
            ),
            // A drive file has an id and no Location.
            ProgressKind::Completed {
                attachment_id: Some(id),
                location: None,
            } => write!(f, "{label}: done, item {id}"),
            ProgressKind::Completed {
                attachment_id,
                location,
            } => write!(
                f,
                "{label}: done, attachment {} at {}",
                attachment_id.as_deref().unwrap_or("(id not given)"),
                location.as_deref().unwrap_or("(location not given)")
            ),
            ProgressKind::Failed { message } => write!(f, "{label}: failed: {message}"),
        }
    }
}
