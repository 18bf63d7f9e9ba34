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

/// The limits a session is opened under.
///
/// The defaults are those every official Graph SDK's defaults fit: files of
/// 2,097,152 B (the live service's measured minimum) to 150 MB (decimal), fragments
/// of at most 60 MiB (the SDKs send 5 MiB, and some one byte more; Graph's "up to
/// 4 MB" is the opt-in `with_max_fragment(4 << 20)`), sessions that live 24 hours past
/// their last fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Smallest file an upload session may carry.
    pub min_size: u64,
    /// Largest file an upload session may carry.
    pub max_size: u64,
    /// Largest fragment one `PUT` may carry.
    pub max_fragment: u64,
    /// How long a session lives after it is opened or last received a fragment.
    pub ttl: Duration,
    /// The longest a session can live in all, however many fragments extend it. The
    /// uploadUrl's credential expires then too.
    pub max_age: Duration,
    /// Refuse re-sent bytes with 416 instead of answering them (OneDrive's rule).
    pub reject_resend: bool,
    /// Every fragment but the last must be a multiple of this (OneDrive's 320 KiB).
    pub fragment_quantum: Option<u64>,
    /// Each stored fragment moves the expiry to `now + ttl` (OneDrive). When false
    /// the expiry stays as createUploadSession answered it (Outlook: it "remains the
    /// same as returned by the initial uploadSession").
    pub sliding_expiry: bool,
}

/// The smallest file an upload session takes by default: 2 MiB, as the live
/// service was measured to accept (its documents say 3 MB).
pub const DEFAULT_MIN_SIZE: u64 = 2_097_152;

/// The largest fragment by default: 60 MiB, OneDrive's documented maximum, above
/// every official SDK's default slice (5 MiB, plus the one byte Python and PHP add).
pub const DEFAULT_MAX_FRAGMENT: u64 = 60 * 1024 * 1024;

/// Graph's documented fragment size for Outlook, "up to 4 MB", read as 4 MiB: the
/// strict, opt-in limit.
pub const STRICT_MAX_FRAGMENT: u64 = 4 * 1024 * 1024;

impl Limits {
    /// Sets the smallest file size.
    #[must_use]
    pub const fn with_min_size(mut self, min_size: u64) -> Self {
        self.min_size = min_size;
        self
    }

    /// Sets the largest file size.
    #[must_use]
    pub const fn with_max_size(mut self, max_size: u64) -> Self {
        self.max_size = max_size;
        self
    }

    /// Sets the largest fragment.
    #[must_use]
    pub const fn with_max_fragment(mut self, max_fragment: u64) -> Self {
        self.max_fragment = max_fragment;
        self
    }

    /// Sets the session lifetime after each fragment.
    #[must_use]
    pub const fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets whether each stored fragment moves the expiry.
    #[must_use]
    pub const fn with_sliding_expiry(mut self, sliding: bool) -> Self {
        self.sliding_expiry = sliding;
        self
    }

    /// Sets the longest total lifetime of a session.
    #[must_use]
    pub const fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_size: DEFAULT_MIN_SIZE,
            max_size: 150_000_000,
            max_fragment: DEFAULT_MAX_FRAGMENT,
            ttl: Duration::from_secs(24 * 60 * 60),
            max_age: Duration::from_secs(7 * 24 * 60 * 60),
            reject_resend: false,
            fragment_quantum: None,
            sliding_expiry: true,
        }
    }
}

/// A message's size limit, as [`Session::set_message_limit`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimit {
    /// The largest the message's attachments may be in all.
    pub limit: u64,
    /// The size of its other attachments.
    pub attached: u64,
}

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

/// Permission to store one fragment, handed out by [`Session::handle_put`].
///
/// It must be given back exactly once, to [`Session::commit`] or
/// [`Session::write_failed`]; until then the session refuses other fragments.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be committed or failed, or the session stays busy"]
pub struct WriteTicket {
    range: ByteRange,
    id: u64,
    /// The [`Session`] value that issued it: a ticket never counts in another (one
    /// restored from a snapshot, say), in release builds too.
    instance: u64,
    supersedes: bool,
}

impl WriteTicket {
    /// The bytes to read from the body and store, at `range().start()`.
    pub const fn range(&self) -> ByteRange {
        self.range
    }

    /// This ticket took over the same fragment from a write still in flight (a
    /// stalled or half-open request: the new request wins). That write's ticket
    /// can no longer commit; the adapter must stop it storing bytes before storing
    /// these.
    pub const fn supersedes(&self) -> bool {
        self.supersedes
    }
}

/// Where each [`Session`] value gets its identity: tickets of one never count in
/// another. A counter, not a clock or a random source.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_instance() -> u64 {
    INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

/// A commit decided but not yet applied: [`Session::prepare_commit`] hands it out
/// with the snapshot to persist; the adapter persists it, then calls
/// [`Session::confirm`] (it is durable) or [`Session::abort`] (it is not).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a pending commit must be confirmed or aborted, or the session stays busy"]
pub struct PendingCommit {
    ticket: WriteTicket,
    snapshot: SessionSnapshot,
    expires_at: SystemTime,
    answer: Answer,
}

impl PendingCommit {
    /// The session as it will be once this commit is confirmed: persist it first.
    pub const fn snapshot(&self) -> &SessionSnapshot {
        &self.snapshot
    }

    /// The answer the fragment gets once confirmed.
    pub const fn answer(&self) -> &Answer {
        &self.answer
    }

    /// The fragment being counted.
    pub const fn range(&self) -> ByteRange {
        self.ticket.range
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
        let cr: ContentRange = content_range
            .unwrap_or("")
            .parse()
            .map_err(FragmentError::InvalidRange)?;
        if cr.total() != self.size {
            return Err(FragmentError::TotalMismatch {
                sent: cr.total(),
                declared: self.size,
            }
            .into());
        }
        let range = cr.range();
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

    /// The fragment of `ticket` is stored (durably, if the server promised that):
    /// count it, extend the expiry, and return the answer to send. For an adapter
    /// with nothing to persist; one that writes a record uses
    /// [`Session::prepare_commit`], then [`Session::confirm`] or [`Session::abort`].
    ///
    /// Fails if the session was cancelled or expired while the bytes were being
    /// written, or if another request took the fragment over; the adapter then
    /// discards them.
    pub fn commit(&mut self, now: SystemTime, ticket: WriteTicket) -> Result<Answer, SessionError> {
        let pending = self.prepare_commit(now, ticket)?;
        Ok(self.confirm(pending))
    }

    /// Decides the commit of `ticket`'s stored bytes without applying it: the
    /// returned [`PendingCommit`] holds the snapshot to persist and the answer to
    /// send. Until it is confirmed or aborted the session stays as it was, and busy.
    ///
    /// Fails, consuming the ticket, when the session is closed or the ticket is not
    /// the write in flight (superseded, or issued by another session value).
    pub fn prepare_commit(
        &mut self,
        now: SystemTime,
        ticket: WriteTicket,
    ) -> Result<PendingCommit, SessionError> {
        let State::Open {
            received,
            in_flight,
        } = &self.state
        else {
            return match self.state {
                State::Expired => Err(SessionError::Expired),
                State::Cancelled => Err(SessionError::Cancelled),
                // Only a write another request took over can still be out.
                _ => Err(SessionError::Superseded),
            };
        };
        if ticket.instance != self.instance || in_flight.map(|(_, id)| id) != Some(ticket.id) {
            return Err(SessionError::Superseded);
        }
        let mut received = received.clone();
        received.insert(ticket.range);
        let expires_at = if self.sliding_expiry {
            self.expires_at.max(now + self.ttl).min(self.hard_expiry)
        } else {
            self.expires_at
        };
        let whole = ByteRange::new(0, self.size).expect("sessions are never empty");
        let (phase, answer) = if received.contains_range(whole) {
            (Phase::Completed, Answer::Completed)
        } else {
            let next_expected = received.next_expected(self.size);
            (
                Phase::Open,
                Answer::Progress {
                    next_expected,
                    expires_at,
                },
            )
        };
        let mut snapshot = self.snapshot();
        snapshot.expires_at = expires_at;
        snapshot.phase = phase;
        snapshot.received = received
            .ranges()
            .iter()
            .map(|r| [r.start(), r.end()])
            .collect();
        Ok(PendingCommit {
            ticket,
            snapshot,
            expires_at,
            answer,
        })
    }

    /// The pending commit is durable: count its bytes and return its answer.
    pub fn confirm(&mut self, pending: PendingCommit) -> Answer {
        if let State::Open {
            received,
            in_flight,
        } = &mut self.state
            && pending.ticket.instance == self.instance
            && in_flight.map(|(_, id)| id) == Some(pending.ticket.id)
        {
            *in_flight = None;
            received.insert(pending.ticket.range);
            self.expires_at = pending.expires_at;
            if pending.answer == Answer::Completed {
                self.state = State::Completed;
            }
        }
        pending.answer
    }

    /// The pending commit could not be made durable: nothing is counted, and the
    /// session expects the same bytes again.
    pub fn abort(&mut self, pending: PendingCommit) {
        self.write_failed(pending.ticket);
    }

    /// The fragment of `ticket` was not (wholly) stored: forget it. The session
    /// expects the same bytes again.
    #[allow(clippy::needless_pass_by_value)] // consumed so that it cannot be used twice
    pub fn write_failed(&mut self, ticket: WriteTicket) {
        if let State::Open { in_flight, .. } = &mut self.state
            && ticket.instance == self.instance
            && in_flight.is_some_and(|(_, id)| id == ticket.id)
        {
            *in_flight = None;
        }
    }

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

    /// The durable part of the session, for the adapter to persist after each
    /// `open`, `commit`, `cancel` and expiry. A write in flight is not part of it.
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            size: self.size,
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
        if size == 0 {
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
}

/// The persisted form of a [`Session`]: everything but a write in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionSnapshot {
    /// Declared file size.
    pub size: u64,
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

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use crate::error::GraphError;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn limits(max_fragment: u64) -> Limits {
        Limits::default()
            .with_min_size(1)
            .with_max_size(1 << 40)
            .with_max_fragment(max_fragment)
            .with_ttl(Duration::from_secs(100))
            .with_max_age(Duration::from_secs(1000))
    }

    fn put(
        s: &mut Session,
        now: SystemTime,
        first: u64,
        last: u64,
    ) -> Result<PutDecision, SessionError> {
        let header = format!("bytes {first}-{last}/{}", s.size());
        s.handle_put(now, Some(&header), Some(last - first + 1))
    }

    fn write(s: &mut Session, now: SystemTime, first: u64, last: u64) -> Answer {
        match put(s, now, first, last).unwrap() {
            PutDecision::Write(ticket) => s.commit(now, ticket).unwrap(),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    /// The status and the most specific Graph code of a refusal.
    fn code(r: Result<PutDecision, SessionError>) -> (u16, &'static str) {
        let e = r.unwrap_err();
        (e.status().as_u16(), e.detail())
    }

    #[test]
    fn open_checks_size_limits() {
        let l = Limits::default().with_min_size(10).with_max_size(20);
        assert_eq!(
            Session::open(t(0), 9, &l).unwrap_err(),
            CreateError::TooSmall { size: 9, min: 10 }
        );
        assert_eq!(
            Session::open(t(0), 21, &l).unwrap_err(),
            CreateError::TooLarge { size: 21, max: 20 }
        );
        assert!(Session::open(t(0), 10, &l).is_ok());
        assert!(Session::open(t(0), 20, &l).is_ok());
    }

    #[test]
    fn bad_headers_get_their_graph_errors_and_change_nothing() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let before = s.clone();
        assert_eq!(code(s.handle_put(t(0), None, None)), (400, "invalidRange"));
        assert_eq!(
            code(s.handle_put(t(0), Some("bytes 0-9/99"), None)),
            (400, "invalidRange")
        );
        assert_eq!(
            code(s.handle_put(t(0), Some("bytes 0-9/100"), Some(9))),
            (400, "fragmentLengthMismatch")
        );
        assert_eq!(
            code(put(&mut s, t(0), 0, 10)),
            (413, "maxFragmentLengthExceeded")
        );
        assert_eq!(code(put(&mut s, t(0), 10, 19)), (416, "fragmentOutOfOrder"));
        assert_eq!(s, before);
    }

    #[test]
    fn content_length_may_be_absent() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        assert!(matches!(
            s.handle_put(t(0), Some("bytes 0-9/100"), None),
            Ok(PutDecision::Write(_))
        ));
    }

    #[test]
    fn partial_overlap_is_refused_but_exact_resend_is_replayed() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        write(&mut s, t(0), 0, 9);
        assert_eq!(code(put(&mut s, t(0), 5, 14)), (416, "fragmentOverlap"));
        let replay = put(&mut s, t(1), 0, 9).unwrap();
        let PutDecision::Replay {
            answer: Answer::Progress { next_expected, .. },
            ..
        } = replay
        else {
            panic!("{replay:?}")
        };
        assert_eq!(next_expected.ranges(), &[ByteRange::new(10, 100).unwrap()]);
        // A sub-range of stored bytes is a re-send too.
        assert!(matches!(
            put(&mut s, t(1), 2, 3).unwrap(),
            PutDecision::Replay { .. }
        ));
    }

    #[test]
    fn onedrive_rules_refuse_resends_and_odd_fragments() {
        let l = limits(10)
            .with_rules_of(&crate::dialect::Dialect::ONEDRIVE)
            .with_max_fragment(1 << 20);
        let q = 320 * 1024;
        let mut s = Session::open(t(0), 2 * q + 5, &l).unwrap();
        assert_eq!(code(put(&mut s, t(0), 0, q - 2)), (400, "invalidRange"));
        write(&mut s, t(0), 0, q - 1);
        assert_eq!(code(put(&mut s, t(0), 0, q - 1)), (416, "fragmentOverlap"));
        write(&mut s, t(0), q, 2 * q - 1);
        assert_eq!(
            write(&mut s, t(0), 2 * q, 2 * q + 4),
            Answer::Completed,
            "the last may be short"
        );
    }

    #[test]
    fn another_offset_is_busy_until_the_write_in_flight_is_answered() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
            panic!()
        };
        assert!(!ticket.supersedes());
        assert_eq!(code(put(&mut s, t(0), 10, 19)), (409, "fragmentInProgress"));
        s.write_failed(ticket);
        assert_eq!(
            s.next_expected().ranges()[0].start(),
            0,
            "a failed write counts nothing"
        );
        assert!(matches!(
            put(&mut s, t(0), 0, 9).unwrap(),
            PutDecision::Write(_)
        ));
    }

    #[test]
    fn the_new_request_for_the_same_offset_wins_and_the_stale_one_never_counts() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let PutDecision::Write(stale) = put(&mut s, t(0), 0, 9).unwrap() else {
            panic!()
        };
        let PutDecision::Write(fresh) = put(&mut s, t(1), 0, 9).unwrap() else {
            panic!("the retry takes over")
        };
        assert!(fresh.supersedes());
        assert_eq!(s.commit(t(2), stale), Err(SessionError::Superseded));
        assert_eq!(
            s.received(),
            RangeSet::new(),
            "the stale write counts nothing"
        );
        // A write that failed after being superseded does not free the new one's place.
        assert_eq!(code(put(&mut s, t(2), 10, 19)), (409, "fragmentInProgress"));
        assert!(matches!(s.commit(t(2), fresh), Ok(Answer::Progress { .. })));
        assert_eq!(s.next_expected().ranges()[0].start(), 10);
    }

    #[test]
    fn while_another_request_writes_only_resends_and_header_refusals_are_answered() {
        let mut committed = Session::open(t(0), 100, &limits(10)).unwrap();
        write(&mut committed, t(0), 0, 9);
        let busy = |s: &mut Session, first, last| code(while_busy(put(s, t(1), first, last)));
        assert_eq!(
            busy(&mut committed.clone(), 10, 19),
            (409, "fragmentInProgress")
        );
        assert_eq!(
            busy(&mut committed.clone(), 30, 39),
            (409, "fragmentInProgress")
        );
        assert_eq!(
            busy(&mut committed.clone(), 5, 14),
            (409, "fragmentInProgress")
        );
        assert_eq!(
            busy(&mut committed.clone(), 10, 40),
            (413, "maxFragmentLengthExceeded")
        );
        assert!(matches!(
            while_busy(put(&mut committed, t(1), 0, 9)),
            Ok(PutDecision::Replay { .. })
        ));
    }

    #[test]
    fn a_ticket_never_counts_in_a_session_restored_under_it() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
            panic!()
        };
        let mut restored = Session::restore(&s.snapshot()).unwrap();
        let PutDecision::Write(own) = put(&mut restored, t(0), 0, 9).unwrap() else {
            panic!()
        };
        assert_eq!(
            restored.commit(t(1), ticket),
            Err(SessionError::Superseded),
            "a ticket of another session value"
        );
        assert!(restored.commit(t(1), own).is_ok());
    }

    #[test]
    fn a_pending_commit_counts_only_once_confirmed() {
        let mut s = Session::open(t(0), 20, &limits(10)).unwrap();
        let PutDecision::Write(ticket) = put(&mut s, t(5), 0, 9).unwrap() else {
            panic!()
        };
        let pending = s.prepare_commit(t(5), ticket).unwrap();
        assert_eq!(pending.snapshot().received, vec![[0, 10]]);
        assert_eq!(
            s.received(),
            RangeSet::new(),
            "nothing counted before confirm"
        );
        assert_eq!(code(put(&mut s, t(5), 10, 19)), (409, "fragmentInProgress"));
        s.abort(pending);
        assert_eq!(s.received(), RangeSet::new());
        let PutDecision::Write(ticket) = put(&mut s, t(6), 0, 9).unwrap() else {
            panic!("the same bytes are expected again")
        };
        let pending = s.prepare_commit(t(6), ticket).unwrap();
        let snapshot = pending.snapshot().clone();
        assert!(matches!(s.confirm(pending), Answer::Progress { .. }));
        assert_eq!(
            s.snapshot(),
            snapshot,
            "what was persisted is what the session is"
        );
    }

    #[test]
    fn every_closing_leaves_one_cleanup_to_poll() {
        let mut s = Session::open(t(0), 20, &limits(10)).unwrap();
        write(&mut s, t(0), 0, 9);
        // A request finds it expired: the clean-up waits for the adapter.
        assert_eq!(s.status(t(500)), Err(SessionError::Expired));
        assert_eq!(
            s.poll_cleanup(),
            Some(Closed {
                discard_partial: true
            })
        );
        assert_eq!(s.poll_cleanup(), None, "once");
        let mut done = Session::open(t(0), 10, &limits(10)).unwrap();
        write(&mut done, t(0), 0, 9);
        let _ = done.cancel(t(1)).unwrap();
        assert_eq!(
            done.poll_cleanup(),
            Some(Closed {
                discard_partial: false
            })
        );
    }

    #[test]
    fn recovery_finishes_a_completion_cut_short_and_resumes_the_rest() {
        let mut s = Session::open(t(0), 20, &limits(10)).unwrap();
        write(&mut s, t(0), 0, 9);
        let snapshot = s.snapshot();
        match Recovery::decide(&snapshot, true).unwrap() {
            Recovery::FinishCompletion(done) => assert_eq!(done.phase(), Phase::Completed),
            other => panic!("{other:?}"),
        }
        match Recovery::decide(&snapshot, false).unwrap() {
            Recovery::Resume(open) => assert_eq!(open.received(), s.received()),
            other => panic!("{other:?}"),
        }
        let mut broken = snapshot;
        broken.size = 0;
        assert!(Recovery::decide(&broken, false).is_err());
    }

    #[test]
    fn an_empty_body_is_a_length_mismatch_while_the_session_is_open() {
        let mut s = Session::open(t(0), 20, &limits(10)).unwrap();
        let e = s
            .handle_put(t(0), Some("bytes 0-9/20"), Some(0))
            .unwrap_err();
        assert_eq!(e.inner_code(), Some("fragmentLengthMismatch"));
    }

    #[test]
    fn without_sliding_the_expiry_stays_as_created() {
        let fixed = limits(10).with_sliding_expiry(false);
        let mut s = Session::open(t(0), 30, &fixed).unwrap();
        let created = s.expires_at();
        write(&mut s, t(50), 0, 9);
        assert_eq!(s.expires_at(), created);
        let back = Session::restore(&s.snapshot()).unwrap();
        assert_eq!(back.snapshot(), s.snapshot());
        assert!(!s.snapshot().sliding_expiry);
        let mut sliding = Session::open(t(0), 30, &limits(10)).unwrap();
        write(&mut sliding, t(50), 0, 9);
        assert_eq!(sliding.expires_at(), t(150));
    }

    #[test]
    fn the_fragment_that_crosses_the_message_limit_is_refused() {
        let mut s = Session::open(t(0), 30, &limits(10)).unwrap();
        s.set_message_limit(Some(MessageLimit {
            limit: 35,
            attached: 15,
        }));
        write(&mut s, t(0), 0, 9);
        write(&mut s, t(0), 10, 19);
        let e = put(&mut s, t(0), 20, 29).unwrap_err();
        assert_eq!(
            e,
            SessionError::Fragment(FragmentError::MessageSizeExceeded {
                total: 45,
                limit: 35
            })
        );
        assert_eq!(
            (e.status().as_u16(), e.code()),
            (413, "ErrorMessageSizeExceeded")
        );
        // Nothing changed: a re-send of stored bytes is still answered.
        assert!(matches!(
            put(&mut s, t(0), 10, 19).unwrap(),
            PutDecision::Replay { .. }
        ));
        s.set_message_limit(None);
        assert_eq!(write(&mut s, t(0), 20, 29), Answer::Completed);
    }

    #[test]
    fn resend_of_final_fragment_answers_completed_again_until_retention_ends() {
        let mut s = Session::open(t(0), 20, &limits(10)).unwrap();
        write(&mut s, t(0), 0, 9);
        assert_eq!(write(&mut s, t(50), 10, 19), Answer::Completed);
        assert_eq!(s.phase(), Phase::Completed);
        let replay = put(&mut s, t(60), 10, 19).unwrap();
        assert_eq!(
            replay,
            PutDecision::Replay {
                range: ByteRange::new(10, 20).unwrap(),
                body_len: 10,
                answer: Answer::Completed
            }
        );
        // The same range with an empty body (the Python SDK's re-send of a file that
        // fit in one chunk) is answered the same way, reading no body.
        let empty = s
            .handle_put(t(60), Some("bytes 10-19/20"), Some(0))
            .unwrap();
        assert_eq!(
            empty,
            PutDecision::Replay {
                range: ByteRange::new(10, 20).unwrap(),
                body_len: 0,
                answer: Answer::Completed
            }
        );
        // An earlier fragment re-sent is answered as it was the first time.
        let PutDecision::Replay {
            answer: Answer::Progress { next_expected, .. },
            ..
        } = put(&mut s, t(60), 0, 9).unwrap()
        else {
            panic!()
        };
        assert_eq!(next_expected.ranges(), &[ByteRange::new(10, 20).unwrap()]);
        assert_eq!(
            s.handle_timeout(t(150)),
            Some(Closed {
                discard_partial: false
            })
        );
        assert_eq!(
            code(put(&mut s, t(151), 10, 19)),
            (404, "uploadSessionNotFound")
        );
    }

    #[test]
    fn each_fragment_extends_the_expiry() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        assert_eq!(s.expires_at(), t(100));
        write(&mut s, t(90), 0, 9);
        assert_eq!(s.expires_at(), t(190));
        assert_eq!(s.poll_timeout(), Some(t(190)));
        assert_eq!(
            s.handle_timeout(t(189)),
            None,
            "early timeouts are harmless"
        );
        assert_eq!(
            s.handle_timeout(t(190)),
            Some(Closed {
                discard_partial: true
            })
        );
        assert_eq!(
            s.handle_timeout(t(191)),
            None,
            "repeated timeouts are harmless"
        );
        assert_eq!(s.phase(), Phase::Expired);
        assert_eq!(s.status(t(191)).unwrap_err(), SessionError::Expired);
    }

    #[test]
    fn expiry_never_passes_the_maximum_age() {
        let mut s = Session::open(t(0), 1000, &limits(10)).unwrap();
        for i in 0..11 {
            write(&mut s, t(i * 95), i * 10, i * 10 + 9);
        }
        assert_eq!(s.expires_at(), t(1000));
        assert_eq!(s.hard_expiry(), t(1000));
    }

    #[test]
    fn a_write_in_flight_holds_expiry_off() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let PutDecision::Write(ticket) = put(&mut s, t(99), 0, 9).unwrap() else {
            panic!()
        };
        assert_eq!(s.handle_timeout(t(150)), None);
        assert!(s.commit(t(150), ticket).is_ok());
        assert_eq!(s.expires_at(), t(250));
    }

    #[test]
    fn expired_session_refuses_puts_without_a_timeout_call() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        assert_eq!(
            code(put(&mut s, t(100), 0, 9)),
            (404, "uploadSessionNotFound")
        );
    }

    #[test]
    fn cancel_discards_partial_bytes_but_keeps_a_completed_attachment() {
        let mut open = Session::open(t(0), 100, &limits(10)).unwrap();
        assert_eq!(
            open.cancel(t(1)),
            Ok(Closed {
                discard_partial: true
            })
        );
        assert_eq!(open.cancel(t(1)), Err(SessionError::Cancelled));
        let mut done = Session::open(t(0), 5, &limits(10)).unwrap();
        write(&mut done, t(0), 0, 4);
        assert_eq!(
            done.cancel(t(1)),
            Ok(Closed {
                discard_partial: false
            })
        );
        assert_eq!(
            code(put(&mut done, t(1), 0, 4)),
            (404, "uploadSessionNotFound")
        );
    }

    #[test]
    fn cancel_during_a_write_makes_the_commit_fail() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        let PutDecision::Write(ticket) = put(&mut s, t(0), 0, 9).unwrap() else {
            panic!()
        };
        let _ = s.cancel(t(0)).unwrap();
        assert_eq!(s.commit(t(0), ticket), Err(SessionError::Cancelled));
    }

    #[test]
    fn snapshot_round_trips_without_the_write_in_flight() {
        let mut s = Session::open(t(0), 100, &limits(10)).unwrap();
        write(&mut s, t(0), 0, 9);
        let _ticket = put(&mut s, t(0), 10, 19).unwrap();
        let restored = Session::restore(&s.snapshot()).unwrap();
        assert_eq!(restored.in_flight(), None);
        assert_eq!(restored.received(), s.received());
        assert_eq!(restored.expires_at(), s.expires_at());
        let json = serde_json::to_string(&s.snapshot()).unwrap();
        let back: SessionSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s.snapshot());
    }

    #[test]
    fn restore_refuses_inconsistent_snapshots() {
        let mut snap = Session::open(t(0), 100, &limits(10)).unwrap().snapshot();
        snap.received = vec![[0, 101]];
        assert!(Session::restore(&snap).is_err());
        snap.received = vec![[5, 5]];
        assert!(Session::restore(&snap).is_err());
    }

    proptest! {
        /// Whatever fragments arrive, in whatever order, with writes that fail, the
        /// session counts exactly the committed bytes and never skips one.
        #[test]
        fn state_machine_never_counts_a_byte_twice_or_skips_one(
            size in 1u64..200,
            ops in proptest::collection::vec((0u64..200, 1u64..40, any::<bool>()), 1..60),
        ) {
            let mut s = Session::open(t(0), size, &limits(32)).unwrap();
            let mut model = vec![false; usize::try_from(size).unwrap()];
            for (start, len, succeed) in ops {
                let first = start % size;
                let last = (first + len - 1).min(size - 1);
                match put(&mut s, t(0), first, last) {
                    Ok(PutDecision::Write(ticket)) => {
                        let r = ticket.range();
                        // Only ever the next missing byte onward.
                        prop_assert_eq!(r.start(), model.iter().position(|b| !b).unwrap() as u64);
                        if succeed {
                            s.commit(t(0), ticket).unwrap();
                            for i in r.start()..r.end() {
                                prop_assert!(!model[i as usize], "byte {} counted twice", i);
                                model[i as usize] = true;
                            }
                        } else {
                            s.write_failed(ticket);
                        }
                    }
                    Ok(PutDecision::Replay { range, .. }) => {
                        for i in range.start()..range.end() { prop_assert!(model[i as usize]); }
                    }
                    Err(_) => {}
                }
                let stored = model.iter().filter(|b| **b).count() as u64;
                prop_assert_eq!(s.received().covered(), stored);
                prop_assert_eq!(s.received().contiguous_prefix(), stored, "received bytes are always a prefix");
                prop_assert_eq!(s.phase() == Phase::Completed, stored == size);
            }
        }
    }
}
