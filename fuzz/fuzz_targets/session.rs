//! The server's `Session` state machine driven by arbitrary requests on a moving
//! virtual clock, checked after every step against a model of the bytes stored.
//!
//! Input: five bytes of limits (size, max fragment, TTL, max age, dialect rules),
//! then ops: an op byte and its arguments. Ops are `PUT`s (well-formed, near the
//! next expected byte, or a garbage header), `commit`/`write_failed` of the ticket
//! held, `GET` status, `DELETE`, `handle_timeout`, clock steps and
//! snapshot → restore.
//!
//! Invariants: the bytes received are always a prefix of the file and each is
//! counted once, by `commit` only; `next_expected` is their complement; the phase
//! follows the model (a closed session never reopens, `Completed` iff every byte
//! is stored); a refused `PUT` changes nothing but a due expiry; a snapshot
//! restores to the same session (also through JSON).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use upsession_core::session::{Answer, Phase, PutDecision, SessionSnapshot, WriteTicket};
use upsession_core::{ByteRange, Limits, RangeSet, Session};

/// Reads the input a byte at a time; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

struct Model {
    size: u64,
    stored: Vec<bool>,
    phase: Phase,
}

impl Model {
    fn prefix(&self) -> u64 {
        self.stored.iter().take_while(|b| **b).count() as u64
    }

    fn set(&self) -> RangeSet {
        ByteRange::new(0, self.prefix()).map_or_else(RangeSet::new, RangeSet::from_range)
    }

    fn all_stored(&self) -> bool {
        self.stored.iter().all(|b| *b)
    }
}

fn check(s: &Session, m: &Model, ticket: Option<&WriteTicket>) {
    assert_eq!(s.phase(), m.phase);
    assert_eq!(s.size(), m.size);
    assert!(s.expires_at() <= s.hard_expiry());
    let received = s.received();
    let expected = s.next_expected();
    for w in received.ranges().windows(2) {
        assert!(w[0].end() < w[1].start());
    }
    match m.phase {
        Phase::Open => {
            // A prefix, and exactly the bytes committed.
            assert_eq!(received, m.set(), "received is not the committed prefix");
            assert_eq!(received.contiguous_prefix(), received.covered());
            assert_eq!(expected, received.complement(m.size));
            assert_eq!(expected.covered() + received.covered(), m.size);
            assert!(!m.all_stored(), "every byte stored but still open");
            assert_eq!(s.in_flight(), ticket.map(WriteTicket::range));
            assert_eq!(s.poll_timeout(), Some(s.expires_at()));
        }
        Phase::Completed => {
            assert!(m.all_stored());
            assert_eq!(received, RangeSet::full(m.size));
            assert!(expected.is_empty());
            assert_eq!(s.in_flight(), None);
            assert_eq!(s.poll_timeout(), Some(s.expires_at()));
        }
        _ => {
            assert!(received.is_empty() && expected.is_empty());
            assert_eq!(s.in_flight(), None);
            assert_eq!(s.poll_timeout(), None);
        }
    }

    // Snapshot → restore keeps everything durable (not the write in flight).
    let snapshot = s.snapshot();
    let restored = Session::restore(&snapshot).expect("a session's own snapshot restores");
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.phase(), s.phase());
    assert_eq!(restored.received(), received);
    assert_eq!(restored.next_expected(), expected);
    assert_eq!(restored.expires_at(), s.expires_at());
    assert_eq!(restored.hard_expiry(), s.hard_expiry());
    assert_eq!(restored.in_flight(), None);
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: SessionSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
}

/// Whether a request at `now` finds the session expired (what `check_alive` does).
fn expires_at_now(s: &Session, now: SystemTime) -> bool {
    s.clone().handle_timeout(now).is_some()
}

/// Closes the model after a request found the session due.
fn expire(m: &mut Model) {
    assert!(matches!(m.phase, Phase::Open | Phase::Completed));
    m.phase = Phase::Expired;
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let size = 1 + u64::from(input.byte() % 64);
    let max_fragment = 1 + u64::from(input.byte() % 16);
    let ttl = Duration::from_secs(1 + u64::from(input.byte() % 20));
    let max_age = ttl + Duration::from_secs(u64::from(input.byte() % 60));
    let rules = input.byte();
    let mut limits = Limits::default()
        .with_min_size(1)
        .with_max_size(64)
        .with_max_fragment(max_fragment)
        .with_ttl(ttl)
        .with_max_age(max_age);
    limits.reject_resend = rules & 1 == 1;
    limits.fragment_quantum = (rules & 2 == 2).then_some(1 + u64::from(rules >> 2) % 4);
    let quantum = limits.fragment_quantum;

    let mut now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut s = Session::open(now, size, &limits).expect("size is within the limits");
    let mut m = Model {
        size,
        stored: vec![false; size as usize],
        phase: Phase::Open,
    };
    let mut ticket: Option<WriteTicket> = None;
    // Tickets another request took over (the new request wins): never to count.
    let mut stale: Vec<WriteTicket> = Vec::new();
    check(&s, &m, None);

    while !input.0.is_empty() {
        let op = input.byte();
        match op % 11 {
            // PUT: a header built from numbers near the file, or garbage.
            0..=2 => {
                let (header, length) = match op % 11 {
                    0 => {
                        let first = u64::from(input.byte()) % (size + 2);
                        let last = first + u64::from(input.byte()) % (max_fragment + 2);
                        let last = last.wrapping_sub(u64::from(input.byte() & 1));
                        let total = match input.byte() % 8 {
                            0 => size + 1,
                            1 => size - 1,
                            _ => size,
                        };
                        let len = last.wrapping_sub(first).wrapping_add(1);
                        (format!("bytes {first}-{last}/{total}"), len)
                    }
                    1 => {
                        // The next expected bytes, as a good client sends them.
                        let first = m.prefix().min(size - 1);
                        let mut len = 1 + u64::from(input.byte()) % max_fragment;
                        if let Some(q) = quantum {
                            len = (len / q).max(1) * q;
                        }
                        let last = (first + len - 1).min(size - 1);
                        (format!("bytes {first}-{last}/{size}"), last - first + 1)
                    }
                    _ => {
                        let n = usize::from(input.byte() % 32);
                        let text = String::from_utf8_lossy(input.take(n)).into_owned();
                        (text, u64::from(input.byte()))
                    }
                };
                let header = match input.byte() % 16 {
                    0 => None,
                    _ => Some(header.as_str()),
                };
                let length = match input.byte() % 4 {
                    0 => None,
                    1 => Some(u64::from(input.byte())),
                    _ => Some(length),
                };
                let before = s.clone();
                let due = expires_at_now(&s, now);
                let result = s.handle_put(now, header, length);
                if due {
                    expire(&mut m);
                }
                match result {
                    Ok(PutDecision::Write(t)) => {
                        assert_eq!(m.phase, Phase::Open);
                        match ticket.take() {
                            Some(old) => {
                                assert!(t.supersedes(), "a second write while one is in flight");
                                assert_eq!(old.range().start(), t.range().start());
                                stale.push(old);
                            }
                            None => assert!(!t.supersedes()),
                        }
                        let r = t.range();
                        assert_eq!(r.start(), m.prefix(), "not the next missing byte");
                        assert!(r.end() <= size && r.len() <= max_fragment);
                        if let Some(q) = quantum
                            && r.end() < size
                        {
                            assert_eq!(r.len() % q, 0);
                        }
                        assert!((r.start()..r.end()).all(|i| !m.stored[i as usize]));
                        if let Some(len) = length {
                            assert_eq!(len, r.len());
                        }
                        assert_eq!(s.received(), before.received(), "counted before commit");
                        ticket = Some(t);
                    }
                    Ok(PutDecision::Replay {
                        range,
                        body_len,
                        answer,
                    }) => {
                        assert!(range.end() <= size);
                        // The whole range is read, but for an empty re-send to a
                        // completed session, which reads nothing.
                        let empty = m.phase == Phase::Completed && length == Some(0);
                        assert_eq!(body_len, if empty { 0 } else { range.len() });
                        assert!((range.start()..range.end()).all(|i| m.stored[i as usize]));
                        match m.phase {
                            Phase::Open => {
                                assert!(
                                    !limits.reject_resend,
                                    "re-send answered under OneDrive rules"
                                );
                                let Answer::Progress { next_expected, .. } = answer else {
                                    panic!("open session replayed {answer:?}");
                                };
                                assert_eq!(next_expected, m.set().complement(size));
                            }
                            Phase::Completed => {
                                let done = answer == Answer::Completed;
                                assert_eq!(done, range.end() == size);
                            }
                            phase => panic!("replay in phase {phase:?}"),
                        }
                        assert_eq!(s, before, "a replay changed the session");
                    }
                    Err(e) => {
                        if due {
                            assert_eq!(e, upsession_core::error::SessionError::Expired);
                        } else {
                            assert_eq!(s, before, "a refused PUT changed the session: {e:?}");
                        }
                    }
                }
            }
            // The storage write of the ticket held finished.
            3 | 4 => {
                if let Some(t) = ticket.take() {
                    let r = t.range();
                    let phase = m.phase;
                    let answer = s.commit(now, t);
                    match phase {
                        Phase::Open => {
                            let answer = answer.expect("an open session takes its commit");
                            for i in r.start()..r.end() {
                                assert!(!m.stored[i as usize], "byte {i} counted twice");
                                m.stored[i as usize] = true;
                            }
                            if m.all_stored() {
                                assert_eq!(answer, Answer::Completed);
                                m.phase = Phase::Completed;
                            } else {
                                let Answer::Progress {
                                    next_expected,
                                    expires_at,
                                } = answer
                                else {
                                    panic!("{answer:?} with bytes missing");
                                };
                                assert_eq!(next_expected, m.set().complement(size));
                                assert_eq!(expires_at, s.expires_at());
                                assert!(expires_at >= now.min(s.hard_expiry()));
                            }
                        }
                        _ => assert!(answer.is_err(), "commit on a {phase:?} session"),
                    }
                }
            }
            // The storage write failed; or a stale request finished its write.
            5 => {
                if let Some(t) = ticket.take() {
                    let before = s.received();
                    s.write_failed(t);
                    assert_eq!(s.received(), before);
                } else if let Some(old) = stale.pop() {
                    let before = s.clone();
                    let result = s.commit(now, old);
                    assert!(result.is_err(), "a superseded write counted: {result:?}");
                    assert_eq!(s.received(), before.received());
                }
            }
            // GET {uploadUrl}.
            6 => {
                let due = expires_at_now(&s, now);
                let result = s.status(now);
                if due {
                    expire(&mut m);
                }
                match m.phase {
                    Phase::Open | Phase::Completed => {
                        let Ok(Answer::Progress { next_expected, .. }) = result else {
                            panic!("status of a live session: {result:?}");
                        };
                        assert_eq!(next_expected, s.next_expected());
                    }
                    _ => assert!(result.is_err()),
                }
            }
            // DELETE {uploadUrl}.
            7 => {
                let due = expires_at_now(&s, now);
                let phase = m.phase;
                let result = s.cancel(now);
                if due {
                    expire(&mut m);
                    assert!(result.is_err());
                } else {
                    match phase {
                        Phase::Open | Phase::Completed => {
                            let closed = result.expect("a live session cancels");
                            assert_eq!(closed.discard_partial, phase == Phase::Open);
                            m.phase = Phase::Cancelled;
                        }
                        _ => assert!(result.is_err()),
                    }
                }
            }
            // The expiry timer fired (maybe early).
            8 => {
                let phase = m.phase;
                let due = now >= s.expires_at();
                let closed = s.handle_timeout(now);
                let live = matches!(phase, Phase::Open | Phase::Completed);
                let held = phase == Phase::Open && ticket.is_some();
                assert_eq!(closed.is_some(), due && live && !held);
                if let Some(closed) = closed {
                    assert_eq!(closed.discard_partial, phase == Phase::Open);
                    m.phase = Phase::Expired;
                }
            }
            // Time passes.
            9 => {
                now += Duration::from_millis(u64::from(input.byte()) * 100);
            }
            // A restart: the session comes back from its snapshot.
            _ => {
                if ticket.is_none() {
                    s = Session::restore(&s.snapshot()).unwrap();
                }
            }
        }
        check(&s, &m, ticket.as_ref());
    }
});
