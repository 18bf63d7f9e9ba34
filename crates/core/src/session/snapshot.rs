//! The persisted form of a session, and what start-up does with one.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::commit::next_instance;
use super::{Closed, Phase, Session, State};
use crate::range::{ByteRange, RangeSet};

impl Session {
    /// The durable part of the session, for the adapter to persist after each
    /// `open`, `commit`, `cancel` and expiry. A write in flight is not part of it.
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            size: self.size,
            unsized_max: self.unsized_max,
            max_fragment: self.max_fragment,
            ttl_secs: self.ttl.as_secs(),
            expires_at: self.expires_at,
            hard_expiry: self.hard_expiry,
            reject_resend: self.reject_resend,
            fragment_quantum: self.fragment_quantum,
            sliding_expiry: self.sliding_expiry,
            phase: self.phase(),
            received: self
                .received()
                .ranges()
                .iter()
                .map(|r| [r.start(), r.end()])
                .collect(),
        }
    }

    /// Rebuilds a session from a snapshot, checking that it is consistent.
    pub fn restore(snapshot: &SessionSnapshot) -> Result<Self, SnapshotError> {
        let size = snapshot.size;
        if size == 0 && (snapshot.unsized_max.is_none() || !snapshot.received.is_empty()) {
            return Err(SnapshotError("size is zero"));
        }
        let mut received = RangeSet::new();
        for &[start, end] in &snapshot.received {
            let r = ByteRange::new(start, end).ok_or(SnapshotError("empty or inverted range"))?;
            if r.end() > size {
                return Err(SnapshotError("range past the end of the file"));
            }
            received.insert(r);
        }
        // A record left in a closed phase (its deletion failed) still has to go;
        // its bytes are kept, since whether an attachment uses them is no longer
        // known (the orphan sweep finds unreferenced ones).
        let keep = Closed {
            discard_partial: false,
        };
        let (state, cleanup) = match snapshot.phase {
            Phase::Open => (
                State::Open {
                    received,
                    in_flight: None,
                },
                None,
            ),
            Phase::Completed => (State::Completed, None),
            Phase::Cancelled => (State::Cancelled, Some(keep)),
            Phase::Expired => (State::Expired, Some(keep)),
        };
        Ok(Self {
            size,
            unsized_max: if size == 0 {
                snapshot.unsized_max
            } else {
                None
            },
            max_fragment: snapshot.max_fragment.max(1),
            ttl: Duration::from_secs(snapshot.ttl_secs),
            expires_at: snapshot.expires_at.min(snapshot.hard_expiry),
            hard_expiry: snapshot.hard_expiry,
            reject_resend: snapshot.reject_resend,
            fragment_quantum: snapshot.fragment_quantum,
            sliding_expiry: snapshot.sliding_expiry,
            message: None,
            state,
            tickets: 0,
            instance: next_instance(),
            cleanup,
        })
    }
}

/// What start-up does with a session record it finds in storage.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Recovery {
    /// The session goes on as recorded.
    Resume(Session),
    /// Its completion was cut short after the attachment record was written (the
    /// record that proves the upload whole): make the attachment's bytes from the
    /// session's, then persist this session, now completed.
    FinishCompletion(Session),
    /// Stored bytes failed their check (a power loss took writes that were never
    /// synced): the session goes on without them, and must be persisted so; the
    /// client is asked for them again.
    Forget {
        /// The session without the forgotten bytes.
        session: Session,
        /// How many bytes it forgot.
        forgotten: u64,
    },
}

impl Recovery {
    /// Decides what becomes of a recorded session; `attachment_recorded` says
    /// whether the attachment record of its upload exists. A record that cannot be
    /// a session is an error, for the adapter to set aside.
    pub fn decide(
        snapshot: &SessionSnapshot,
        attachment_recorded: bool,
    ) -> Result<Self, SnapshotError> {
        if snapshot.phase == Phase::Open && attachment_recorded {
            let mut done = snapshot.clone();
            done.phase = Phase::Completed;
            done.received = vec![[0, snapshot.size]];
            return Session::restore(&done).map(Self::FinishCompletion);
        }
        Session::restore(snapshot).map(Self::Resume)
    }

    /// [`Recovery::decide`], knowing that of the session's stored bytes only those
    /// before `intact` check out (the adapter keeps a checksum per fragment): the
    /// bytes past it are forgotten, never counted or served.
    pub fn decide_checked(
        snapshot: &SessionSnapshot,
        attachment_recorded: bool,
        intact: u64,
    ) -> Result<Self, SnapshotError> {
        let decided = Self::decide(snapshot, attachment_recorded)?;
        if !matches!(decided, Self::Resume(_)) || snapshot.phase != Phase::Open {
            return Ok(decided);
        }
        let mut kept = snapshot.clone();
        kept.received = snapshot
            .received
            .iter()
            .filter(|r| r[0] < intact)
            .map(|r| [r[0], r[1].min(intact)])
            .collect();
        let total = |s: &SessionSnapshot| s.received.iter().map(|r| r[1] - r[0]).sum::<u64>();
        let forgotten = total(snapshot) - total(&kept);
        if forgotten == 0 {
            return Ok(decided);
        }
        Ok(Self::Forget {
            session: Session::restore(&kept)?,
            forgotten,
        })
    }
}

/// The persisted form of a [`Session`]: everything but a write in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionSnapshot {
    /// Declared file size (0 while [`SessionSnapshot::unsized_max`] is set).
    pub size: u64,
    /// The largest the file may be, while its size is not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsized_max: Option<u64>,
    /// Largest fragment accepted.
    pub max_fragment: u64,
    /// Lifetime after each fragment, in seconds.
    pub ttl_secs: u64,
    /// Current expiry.
    pub expires_at: SystemTime,
    /// Latest possible expiry.
    pub hard_expiry: SystemTime,
    /// Re-sent bytes are refused.
    #[serde(default)]
    pub reject_resend: bool,
    /// Required fragment multiple.
    #[serde(default)]
    pub fragment_quantum: Option<u64>,
    /// Whether each fragment moves the expiry (records written before this field
    /// existed slid, so it defaults to true).
    #[serde(default = "yes")]
    pub sliding_expiry: bool,
    /// Phase.
    pub phase: Phase,
    /// Stored ranges, half-open `[start, end]` pairs.
    pub received: Vec<[u64; 2]>,
}

const fn yes() -> bool {
    true
}

/// A snapshot that cannot be a session (a corrupt or hand-edited record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid session snapshot: {0}")]
pub struct SnapshotError(&'static str);
