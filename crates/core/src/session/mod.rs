//! The server side of one upload session: what a fragment means, when bytes count.
//!
//! # Driving a [`Session`]
//!
//! Methods fall into four groups, in the manner of `quinn-proto`'s `Connection`:
//!
//! - **getters**: [`Session::size`], [`Session::phase`], [`Session::expires_at`],
//!   [`Session::received`], [`Session::next_expected`];
//! - **input**: [`Session::handle_put`] (a fragment's headers arrived),
//!   [`Session::commit`] / [`Session::write_failed`] (the storage I/O that a
//!   [`PutDecision::Write`] asked for finished or failed), [`Session::handle_timeout`];
//! - **commands**: [`Session::cancel`];
//! - **output**: [`Session::status`] and [`Session::poll_timeout`] (when to call
//!   `handle_timeout` next).
//!
//! A fragment goes: `handle_put(now, headers)` → `PutDecision::Write(ticket)` → the
//! adapter streams exactly `ticket.range().len()` body bytes to storage at
//! `ticket.range().start()` (and syncs them if it promised to) → `commit(now, ticket)`
//! → the [`Answer`] to send. Only `commit` moves `nextExpectedRanges`, so a byte is
//! never counted before it is stored. If the body is short, the connection drops or
//! the write fails, the adapter calls `write_failed(ticket)` and nothing changed.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use upsession_core::session::{Answer, Limits, PutDecision, Session};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
//! let limits = Limits::default().with_min_size(1);
//! let mut session = Session::open(now, 10, &limits).unwrap();
//!
//! let PutDecision::Write(ticket) = session.handle_put(now, Some("bytes 0-5/10"), Some(6)).unwrap() else {
//!     panic!("a fresh session takes its first fragment");
//! };
//! // ... the adapter writes 6 bytes at offset 0 ...
//! let Answer::Progress { next_expected, .. } = session.commit(now, ticket).unwrap() else { panic!() };
//! assert_eq!(next_expected.ranges()[0].start(), 6);
//!
//! let PutDecision::Write(ticket) = session.handle_put(now, Some("bytes 6-9/10"), Some(4)).unwrap() else { panic!() };
//! assert_eq!(session.commit(now, ticket).unwrap(), Answer::Completed);
//!
//! // The last fragment re-sent after a lost answer is answered the same way again.
//! let again = session.handle_put(now, Some("bytes 6-9/10"), Some(4)).unwrap();
//! assert!(matches!(again, PutDecision::Replay { answer: Answer::Completed, .. }));
//! ```

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{CreateError, FragmentError, SessionError};
use crate::header::ContentRange;
use crate::range::{ByteRange, RangeSet};

mod commit;
mod limits;
mod snapshot;

pub use commit::{PendingCommit, WriteTicket};
pub use limits::{
    DEFAULT_MAX_FRAGMENT, DEFAULT_MIN_SIZE, Limits, MessageLimit, STRICT_MAX_FRAGMENT,
};
pub use snapshot::{Recovery, SessionSnapshot, SnapshotError};

use commit::next_instance;

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Phase {
    /// Taking fragments.
    Open,
    /// Every byte is stored; the attachment exists. Re-sends are still answered.
    Completed,
    /// Cancelled by `DELETE`.
    Cancelled,
    /// Expired before completing, or a completed session past its retention.
    Expired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Open {
        received: RangeSet,
        in_flight: Option<(ByteRange, u64)>,
    },
    Completed,
    Cancelled,
    Expired,
}

/// Whether a request for `incoming` takes the place of a write still in flight for
/// `held`: it starts at the same byte, so it is that fragment sent again (its first
/// request stalled, or its connection died half-open). The new request wins.
pub fn takes_over(held: ByteRange, incoming: ByteRange) -> bool {
    held.start() == incoming.start()
}

/// What a fragment gets while another request holds its session to write (where
/// the session a decision was made on does not know of that write: read from the
/// last commit, say): re-sends and header refusals are answered as decided; new
/// bytes, and refusals of where they start, wait their turn (409
/// `fragmentInProgress`), as [`Session::handle_put`] answers with the write in flight.
pub fn while_busy(
    decision: Result<PutDecision, SessionError>,
) -> Result<PutDecision, SessionError> {
    match decision {
        Ok(PutDecision::Write(_))
        | Err(SessionError::Fragment(
            FragmentError::OutOfOrder { .. } | FragmentError::Overlap { .. },
        )) => Err(FragmentError::Busy.into()),
        other => other,
    }
}

/// What the adapter does with a fragment whose headers were accepted.
// Exhaustive on purpose: an adapter that did not handle a new decision would be wrong.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum PutDecision {
    /// New bytes: read exactly `ticket.range().len()` body bytes, store them at
    /// `ticket.range().start()`, then call `commit` (or `write_failed`).
    Write(WriteTicket),
    /// A re-send of bytes already stored: read and discard exactly `body_len` body
    /// bytes, then send `answer` — the answer the first copy got.
    Replay {
        /// The re-sent range.
        range: ByteRange,
        /// The body bytes to read and discard: the range's length, or 0 for an empty
        /// re-send to a completed session.
        body_len: u64,
        /// What to answer.
        answer: Answer,
    },
}

/// What a successful request to the session is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// The upload goes on: `200` with the uploadSession JSON.
    Progress {
        /// Half-open ranges still expected.
        next_expected: RangeSet,
        /// When the session expires.
        expires_at: SystemTime,
    },
    /// The file is whole: `201` with the attachment's `Location`.
    Completed,
}

/// What the adapter must clean up after [`Session::cancel`] or [`Session::handle_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Closed {
    /// The partial bytes of an unfinished upload are to be deleted. When false the
    /// session had completed, and its attachment stays.
    pub discard_partial: bool,
}

/// One upload session on the server. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    size: u64,
    /// While the size is not known yet (a drive upload without `fileSize`): the
    /// largest the first fragment's `Content-Range` total may be.
    unsized_max: Option<u64>,
    max_fragment: u64,
    ttl: Duration,
    expires_at: SystemTime,
    hard_expiry: SystemTime,
    reject_resend: bool,
    fragment_quantum: Option<u64>,
    sliding_expiry: bool,
    /// The message's size limit and its other attachments, as the adapter last
    /// said; not persisted.
    message: Option<MessageLimit>,
    state: State,
    tickets: u64,
    instance: u64,
    /// What the adapter must still clean up after the session closed; see
    /// [`Session::poll_cleanup`].
    cleanup: Option<Closed>,
}

impl Session {
    /// Opens a session for a file of `size` bytes at `now`, checking the limits.
    pub fn open(now: SystemTime, size: u64, limits: &Limits) -> Result<Self, CreateError> {
        if size < limits.min_size {
            return Err(CreateError::TooSmall {
                size,
                min: limits.min_size,
            });
        }
        if size > limits.max_size {
            return Err(CreateError::TooLarge {
                size,
                max: limits.max_size,
            });
        }
        Ok(Self {
            size,
            unsized_max: None,
            max_fragment: limits.max_fragment.max(1),
            ttl: limits.ttl,
            expires_at: now + limits.ttl.min(limits.max_age),
            hard_expiry: now + limits.max_age,
            reject_resend: limits.reject_resend,
            fragment_quantum: limits.fragment_quantum.filter(|q| *q > 0),
            sliding_expiry: limits.sliding_expiry,
            message: None,
            state: State::Open {
                received: RangeSet::new(),
                in_flight: None,
            },
            tickets: 0,
            instance: next_instance(),
            cleanup: None,
        })
    }

    /// Opens a session at `now` for a file whose size the first fragment's
    /// `Content-Range` total will say (OneDrive takes uploads without `fileSize`),
    /// at most `limits.max_size`. Until then it expects `"0-"`.
    pub fn open_unsized(now: SystemTime, limits: &Limits) -> Self {
        let mut session = Self::open(
            now,
            limits.max_size.max(1),
            &limits.clone().with_min_size(0),
        )
        .expect("a size within the limits");
        session.size = 0;
        session.unsized_max = Some(limits.max_size);
        session
    }

    /// Whether the file's size is known (always, but for [`Session::open_unsized`]
    /// before its first fragment).
    pub const fn size_known(&self) -> bool {
        self.unsized_max.is_none()
    }

    /// Sets the message's size limit and the size of its other attachments (`None`:
    /// no limit). A fragment that would take the message past it is refused with
    /// `ErrorMessageSizeExceeded`, as the live service refuses the fragment that
    /// crosses a message's limit, mid-upload. Call it before [`Session::handle_put`]
    /// with current figures; it is not part of the snapshot.
    pub fn set_message_limit(&mut self, message: Option<MessageLimit>) {
        self.message = message;
    }

    /// Declared size of the file.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// When the session expires unless a fragment arrives first.
    pub const fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// When the session expires at the latest, however many fragments arrive.
    pub const fn hard_expiry(&self) -> SystemTime {
        self.hard_expiry
    }

    /// Where the session is in its life.
    pub const fn phase(&self) -> Phase {
        match self.state {
            State::Open { .. } => Phase::Open,
            State::Completed => Phase::Completed,
            State::Cancelled => Phase::Cancelled,
            State::Expired => Phase::Expired,
        }
    }

    /// The bytes stored so far (all of them once completed, none once closed).
    pub fn received(&self) -> RangeSet {
        match &self.state {
            State::Open { received, .. } => received.clone(),
            State::Completed => RangeSet::full(self.size),
            State::Cancelled | State::Expired => RangeSet::new(),
        }
    }

    /// The ranges still expected: Graph's `nextExpectedRanges`, half-open.
    pub fn next_expected(&self) -> RangeSet {
        if !self.size_known() {
            // Everything, to an end not known yet: written `"0-"`.
            return ByteRange::new(0, u64::MAX).map_or_else(RangeSet::new, RangeSet::from_range);
        }
        match &self.state {
            State::Open { received, .. } => received.next_expected(self.size),
            _ => RangeSet::new(),
        }
    }

    /// The range being written right now, if any.
    pub fn in_flight(&self) -> Option<ByteRange> {
        match &self.state {
            State::Open { in_flight, .. } => in_flight.map(|(r, _)| r),
            _ => None,
        }
    }

    /// Expires the session if its time has come; returns the error a request now gets.
    fn check_alive(&mut self, now: SystemTime) -> Result<(), SessionError> {
        let _ = self.handle_timeout(now);
        match self.state {
            State::Open { .. } | State::Completed => Ok(()),
            State::Cancelled => Err(SessionError::Cancelled),
            State::Expired => Err(SessionError::Expired),
        }
    }

    /// Decides what to do with a fragment from its headers alone, before any body
    /// byte is read: `content_range` is the `Content-Range` value, `content_length`
    /// the `Content-Length` if the request has one.
    ///
    /// On `Err` the session is unchanged and the body must not be stored.
    pub fn handle_put(
        &mut self,
        now: SystemTime,
        content_range: Option<&str>,
        content_length: Option<u64>,
    ) -> Result<PutDecision, SessionError> {
        self.check_alive(now)?;
        let range = self.fragment_range(content_range)?;
        if self.state == State::Completed && content_length == Some(0) {
            // An empty re-send to a finished session cannot change anything: answer it
            // as the first copy was. The Python SDK's task re-sends its last range after
            // completion, with an empty body when the file fits in one chunk
            // (msgraph-sdk-python-core#718).
            let answer = self.replay_after_completion(range);
            return Ok(PutDecision::Replay {
                range,
                body_len: 0,
                answer,
            });
        }
        self.check_fragment(range, content_length)?;
        if self.state == State::Completed {
            let answer = self.replay_after_completion(range);
            return Ok(PutDecision::Replay {
                range,
                body_len: range.len(),
                answer,
            });
        }
        self.put_open(range)
    }

    /// The range a `Content-Range` names, if it is one of this file. The first
    /// fragment of a session without a size says it.
    fn fragment_range(&mut self, content_range: Option<&str>) -> Result<ByteRange, FragmentError> {
        let cr: ContentRange = content_range
            .unwrap_or("")
            .parse()
            .map_err(FragmentError::InvalidRange)?;
        if let Some(max) = self.unsized_max {
            if cr.total() > max {
                return Err(FragmentError::FileTooLarge {
                    size: cr.total(),
                    max,
                });
            }
            // Durable with the fragment's commit (the snapshot holds it), and only
            // then: a refused first fragment leaves the size open.
            self.size = cr.total();
            self.unsized_max = None;
        }
        if cr.total() != self.size {
            return Err(FragmentError::TotalMismatch {
                sent: cr.total(),
                declared: self.size,
            });
        }
        Ok(cr.range())
    }

    /// A fragment for an open session: a re-send, the next bytes, or a refusal.
    fn put_open(&mut self, range: ByteRange) -> Result<PutDecision, SessionError> {
        let expires_at = self.expires_at;
        let size = self.size;
        let message = self.message;
        match &mut self.state {
            State::Open {
                received,
                in_flight,
            } => {
                if received.contains_range(range) && !self.reject_resend {
                    let next_expected = received.next_expected(size);
                    return Ok(PutDecision::Replay {
                        range,
                        body_len: range.len(),
                        answer: Answer::Progress {
                            next_expected,
                            expires_at,
                        },
                    });
                }
                if let Some(m) = message {
                    let total = m.attached.saturating_add(range.end());
                    if total > m.limit {
                        return Err(FragmentError::MessageSizeExceeded {
                            total,
                            limit: m.limit,
                        }
                        .into());
                    }
                }
                // The new request wins: a fragment from the offset a write in flight
                // started at takes that write's place (its client stalled or hung
                // up half-open, and retried). Another offset waits its turn.
                let supersedes = match in_flight {
                    Some((held, _)) if takes_over(*held, range) => true,
                    Some(_) => return Err(FragmentError::Busy.into()),
                    None => false,
                };
                // Fragments are taken in order: the next one starts at the first
                // missing byte. That keeps every file a prefix plus nothing.
                let expected = received
                    .next_expected(size)
                    .first()
                    .map_or(size, ByteRange::start);
                if received.intersects(range) {
                    return Err(FragmentError::Overlap {
                        start: range.start(),
                        last: range.last(),
                        expected,
                    }
                    .into());
                }
                if range.start() != expected {
                    return Err(FragmentError::OutOfOrder {
                        start: range.start(),
                        expected,
                    }
                    .into());
                }
                self.tickets += 1;
                *in_flight = Some((range, self.tickets));
                Ok(PutDecision::Write(WriteTicket {
                    range,
                    id: self.tickets,
                    instance: self.instance,
                    supersedes,
                }))
            }
            State::Completed | State::Cancelled | State::Expired => {
                unreachable!("completed answered above; closed returned by check_alive")
            }
        }
    }

    /// The rules a fragment's headers must follow, whatever the session holds.
    fn check_fragment(
        &self,
        range: ByteRange,
        content_length: Option<u64>,
    ) -> Result<(), FragmentError> {
        if let Some(len) = content_length
            && len != range.len()
        {
            return Err(FragmentError::LengthMismatch {
                content_length: len,
                range_len: range.len(),
            });
        }
        if range.len() > self.max_fragment {
            return Err(FragmentError::TooLarge {
                len: range.len(),
                max: self.max_fragment,
            });
        }
        if let Some(quantum) = self.fragment_quantum
            && range.end() < self.size
            && !range.len().is_multiple_of(quantum)
        {
            return Err(FragmentError::NotMultiple {
                len: range.len(),
                quantum,
            });
        }
        Ok(())
    }

    /// The answer a range re-sent to a completed session gets: as the first copy
    /// was answered, 201 for the final fragment and the rest of the file for any
    /// earlier one.
    fn replay_after_completion(&self, range: ByteRange) -> Answer {
        match ByteRange::new(range.end(), self.size) {
            None => Answer::Completed,
            Some(rest) => Answer::Progress {
                next_expected: RangeSet::from_range(rest),
                expires_at: self.expires_at,
            },
        }
    }
}

impl Session {
    /// The answer to `GET {uploadUrl}`. A completed session expects nothing.
    pub fn status(&mut self, now: SystemTime) -> Result<Answer, SessionError> {
        self.check_alive(now)?;
        Ok(Answer::Progress {
            next_expected: self.next_expected(),
            expires_at: self.expires_at,
        })
    }

    /// `DELETE {uploadUrl}`: closes the session. A completed session's attachment
    /// stays; an open session's partial bytes are to be discarded.
    pub fn cancel(&mut self, now: SystemTime) -> Result<Closed, SessionError> {
        self.check_alive(now)?;
        let closed = Closed {
            discard_partial: matches!(self.state, State::Open { .. }),
        };
        self.state = State::Cancelled;
        self.cleanup = Some(closed);
        Ok(closed)
    }

    /// What the adapter must still clean up since the session closed (by
    /// [`Session::cancel`], [`Session::handle_timeout`], or a request that found it
    /// expired), once: the next call answers `None`. Every closing path ends here,
    /// so clean-up is written once.
    pub fn poll_cleanup(&mut self) -> Option<Closed> {
        self.cleanup.take()
    }

    /// When [`Session::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        match self.state {
            State::Open { .. } | State::Completed => Some(self.expires_at),
            State::Cancelled | State::Expired => None,
        }
    }

    /// Expires the session if `now` is past its expiry. Early or repeated calls do
    /// nothing. A fragment being written holds expiry off until it is committed or
    /// failed, so bytes being acknowledged are never thrown away under it.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Option<Closed> {
        if now < self.expires_at {
            return None;
        }
        let discard_partial = match &self.state {
            State::Open {
                in_flight: Some(_), ..
            }
            | State::Cancelled
            | State::Expired => return None,
            State::Open {
                in_flight: None, ..
            } => true,
            State::Completed => false,
        };
        self.state = State::Expired;
        let closed = Closed { discard_partial };
        self.cleanup = Some(closed);
        Some(closed)
    }
}

#[cfg(test)]
mod tests;
