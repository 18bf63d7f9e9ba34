//! Counting stored bytes: tickets, and the commit that makes them count, in one
//! step or in two around the adapter's persistence.

use std::time::SystemTime;

use super::{Answer, Phase, Session, SessionSnapshot, State};
use crate::error::SessionError;
use crate::range::ByteRange;

/// Permission to store one fragment, handed out by [`Session::handle_put`].
///
/// It must be given back exactly once, to [`Session::commit`] or
/// [`Session::write_failed`]; until then the session refuses other fragments.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a ticket must be committed or failed, or the session stays busy"]
pub struct WriteTicket {
    pub(super) range: ByteRange,
    pub(super) id: u64,
    /// The [`Session`] value that issued it: a ticket never counts in another (one
    /// restored from a snapshot, say), in release builds too.
    pub(super) instance: u64,
    pub(super) supersedes: bool,
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

pub(super) fn next_instance() -> u64 {
    INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

impl Session {
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
}
