//! The connections a [`Server`](crate::Server) holds: where each is from, whether a
//! request is in flight on it, when it must close, and which one gives way when the
//! server, or one source address, is full.
//!
//! Sockets alone never keep a real client out. A connection with no request in
//! flight is closed once idle for the idle timeout, and before its first request
//! once the header timeout passes (whichever is shorter): an HTTP/2 preface, or a
//! TLS handshake, does not count as a request. At a cap, the newcomer takes the
//! place of a connection with no request in flight (of the source holding the
//! most connections, the longest idle first) instead of being refused; only when
//! every connection it could replace has a request in flight is it answered 503.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a closing connection with no request in flight has to finish its
/// goodbye (HTTP/2: GOAWAY, a PING answered, the last GOAWAY) before it is cut: a
/// client that never answers the PING, or an HTTP/1 head that stalls, cannot keep
/// a closing connection open.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What bounds the connections: from the [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caps {
    /// Most connections open at once (closing ones aside).
    pub(crate) total: usize,
    /// Most connections open at once from one source (see [`Source`]).
    pub(crate) per_source: usize,
    /// Longest wait for the first request's headers.
    pub(crate) header_timeout: Duration,
    /// Longest time a connection stays open with no request in flight.
    pub(crate) idle_timeout: Duration,
}

impl Caps {
    /// Most open connections still waiting for their first request (a quarter):
    /// past it, the longest idle of them (of the busiest source) gives way. Such
    /// a connection costs the server ~20 KiB of buffers; this keeps thousands of
    /// preface-only sockets from costing it 100 MiB, and a burst of new clients
    /// each sends its request within milliseconds.
    pub(crate) fn unproven(&self) -> usize {
        (self.total / 4).max(16)
    }

    /// Most connections closing at once: each still holds a descriptor for up to
    /// [`CLOSE_GRACE`]. Past it, making room cuts the oldest closing one at once
    /// (a burst of newcomers does not pile up descriptors, nor is it refused).
    pub(crate) fn closing(&self) -> usize {
        (self.total / 16).max(16)
    }
}

/// A client's address as counted: IPv4 whole, IPv6 by its /64 prefix (one host's
/// usual allocation, which would otherwise count as 2^64 sources).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Source(IpAddr);

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => Self(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
            },
        }
    }
}

/// Why a connection is closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Why {
    /// No request in flight for the idle timeout (or no first request within the
    /// header timeout).
    Idle,
    /// It gave way to a newcomer at a cap.
    Evicted,
    /// The server is shutting down.
    Stopping,
}

/// Why a newcomer was refused: every connection it could replace has a request
/// in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server holds `total` connections.
    Full,
    /// Its source holds `per_source` connections.
    SourceFull,
}

/// What the task serving a connection does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Serve on until the connection ends, something changes, or this instant.
    Wait(Option<Instant>),
    /// Start closing gracefully, for this reason (told once).
    Close(Why),
    /// The goodbye took [`CLOSE_GRACE`]: drop the connection.
    Cut,
}

#[derive(Debug)]
struct Entry {
    source: Source,
    in_flight: usize,
    /// Responses whose body is being sent.
    sending: usize,
    /// When a response's body last moved (a frame taken by the connection).
    sent_at: Instant,
    /// Since when no request has been in flight (the accept, at first).
    idle_since: Instant,
    /// Whether a request has arrived: until one does, the header timeout bounds it.
    served: bool,
    /// When and why it was asked to close, and whether its task was told.
    closing: Option<(Instant, Why, bool)>,
    /// To be dropped at once, without waiting out its goodbye.
    cut: bool,
    wake: Arc<Notify>,
}

impl Entry {
    /// When its task must act unless a request comes first.
    fn deadline(&self, caps: &Caps) -> Option<Instant> {
        if self.in_flight > 0 {
            // A response the client stops taking (an HTTP/2 window never opened,
            // a TCP window kept full) holds the connection no longer than idling.
            return (self.sending > 0).then(|| self.sent_at + caps.idle_timeout);
        }
        if self.cut {
            return Some(self.idle_since);
        }
        Some(match self.closing {
            Some((since, ..)) => since.max(self.idle_since) + CLOSE_GRACE,
            None if !self.served => self.idle_since + caps.header_timeout.min(caps.idle_timeout),
            None => self.idle_since + caps.idle_timeout,
        })
    }
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Open (not closing) connections by source.
    per_source: HashMap<Source, usize>,
    open: usize,
    closing: usize,
    /// Open connections with no request yet.
    unproven: usize,
}

impl Table {
    /// Marks `id` as closing (once) and, unless its task already knows (`told`),
    /// wakes it.
    fn close(&mut self, id: u64, why: Why, now: Instant, told: bool) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.closing.is_some() {
            return;
        }
        entry.closing = Some((now, why, told));
        if !told {
            entry.wake.notify_one();
        }
        if !entry.served {
            self.unproven -= 1;
        }
        let source = entry.source;
        self.forget_open(source);
        self.closing += 1;
    }

    fn forget_open(&mut self, source: Source) {
        self.open -= 1;
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Cuts the connection that started closing first among those with no
    /// request in flight; whether there was one.
    fn cut_oldest_closing(&mut self) -> bool {
        let oldest = self
            .entries
            .values_mut()
            .filter(|e| e.in_flight == 0 && !e.cut)
            .filter_map(|e| Some((e.closing?.0, e)))
            .min_by_key(|(since, _)| *since);
        let Some((_, entry)) = oldest else {
            return false;
        };
        entry.cut = true;
        entry.wake.notify_one();
        true
    }

    /// The connection a newcomer replaces: one with no request in flight, from
    /// `only` if given, else from the source holding the most; the longest idle.
    /// With `unproven`, only one that never had a request.
    fn victim(&self, only: Option<Source>, unproven: bool) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.in_flight == 0 && e.closing.is_none())
            .filter(|(_, e)| only.is_none_or(|s| s == e.source) && !(unproven && e.served))
            .max_by_key(|(_, e)| {
                let held = self.per_source.get(&e.source).copied().unwrap_or(0);
                (held, std::cmp::Reverse(e.idle_since))
            })
            .map(|(id, _)| *id)
    }
}

/// Every connection of one server. See the module's documentation.
#[derive(Debug)]
pub(crate) struct Connections {
    table: Mutex<Table>,
    caps: Caps,
}

impl Connections {
    pub(crate) fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table::default()),
            caps,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent at every unlock: a panic elsewhere cannot
        // leave it half changed.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a new connection from `peer`, making room if needed: `Ok` with its
    /// handle and whether another connection was asked to give way.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(Conn, bool), Refused> {
        let now = Instant::now();
        let source = Source::of(peer);
        let mut t = self.lock();
        let held = t.per_source.get(&source).copied().unwrap_or(0);
        let (refusal, only) = if held >= self.caps.per_source {
            (Some(Refused::SourceFull), Some(source))
        } else if t.open >= self.caps.total {
            (Some(Refused::Full), None)
        } else {
            (None, None)
        };
        let mut evicted = false;
        if let Some(refusal) = refusal {
            let victim = t.victim(only, false).ok_or(refusal)?;
            if t.closing >= self.caps.closing() && !t.cut_oldest_closing() {
                return Err(refusal);
            }
            t.close(victim, Why::Evicted, now, false);
            evicted = true;
        }
        if t.unproven >= self.caps.unproven()
            && let Some(victim) = t.victim(None, true)
        {
            if t.closing >= self.caps.closing() {
                t.cut_oldest_closing();
            }
            t.close(victim, Why::Evicted, now, false);
            evicted = true;
        }
        let id = t.next_id;
        t.next_id += 1;
        let wake = Arc::new(Notify::new());
        t.entries.insert(
            id,
            Entry {
                source,
                in_flight: 0,
                sending: 0,
                sent_at: now,
                idle_since: now,
                served: false,
                closing: None,
                cut: false,
                wake: Arc::clone(&wake),
            },
        );
        *t.per_source.entry(source).or_default() += 1;
        t.open += 1;
        t.unproven += 1;
        let conn = Conn {
            all: Arc::clone(self),
            id,
            wake,
        };
        Ok((conn, evicted))
    }

    /// How many connections are open and how many closing.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let t = self.lock();
        (t.open, t.closing)
    }
}

/// One connection's place in [`Connections`], held by the task serving it; its
/// place is freed when dropped.
#[derive(Debug)]
pub(crate) struct Conn {
    all: Arc<Connections>,
    id: u64,
    wake: Arc<Notify>,
}

impl Conn {
    /// A request arrived: the connection is busy until the guard is dropped (with
    /// the response's last byte).
    pub(crate) fn begin(&self) -> InFlight {
        let mut t = self.all.lock();
        if let Some(e) = t.entries.get_mut(&self.id) {
            e.in_flight += 1;
            let first = !e.served && e.closing.is_none();
            e.served = true;
            if first {
                t.unproven -= 1;
            }
        }
        drop(t);
        InFlight {
            all: Arc::clone(&self.all),
            id: self.id,
            sending: false,
        }
    }

    /// Asks this connection to close (the server is stopping).
    pub(crate) fn close(&self, why: Why) {
        self.all.lock().close(self.id, why, Instant::now(), false);
    }

    /// What to do next, at `now`.
    pub(crate) fn next_step(&self, now: Instant) -> Step {
        let caps = self.all.caps;
        let mut t = self.all.lock();
        let Some(entry) = t.entries.get_mut(&self.id) else {
            return Step::Cut;
        };
        if entry.cut && entry.in_flight == 0 {
            return Step::Cut;
        }
        if let Some((_, why, told @ false)) = &mut entry.closing {
            *told = true;
            return Step::Close(*why);
        }
        let deadline = entry.deadline(&caps);
        match deadline {
            Some(at) if at <= now => {
                if entry.closing.is_some() || entry.in_flight > 0 {
                    // Past its goodbye, or a response stalled: dropped.
                    return Step::Cut;
                }
                t.close(self.id, Why::Idle, now, true);
                Step::Close(Why::Idle)
            }
            _ => Step::Wait(deadline),
        }
    }

    /// Resolves when something changed (a request ended, a close was asked).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut t = self.all.lock();
        if let Some(entry) = t.entries.remove(&self.id) {
            if entry.closing.is_some() {
                t.closing -= 1;
            } else {
                t.forget_open(entry.source);
                if !entry.served {
                    t.unproven -= 1;
                }
            }
        }
    }
}

/// A request in flight on a connection; dropped with the response's last byte
/// (or when the request is abandoned).
#[derive(Debug)]
pub(crate) struct InFlight {
    all: Arc<Connections>,
    id: u64,
    /// Its response is being sent.
    sending: bool,
}

impl InFlight {
    /// Its response's body moved (or starts to be sent): the stall clock restarts.
    pub(crate) fn progress(&mut self) {
        if let Some(e) = self.all.lock().entries.get_mut(&self.id) {
            if !self.sending {
                self.sending = true;
                e.sending += 1;
            }
            e.sent_at = Instant::now();
            e.wake.notify_one();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.all.lock().entries.get_mut(&self.id) {
            if self.sending {
                e.sending -= 1;
            }
            e.in_flight -= 1;
            if e.in_flight == 0 {
                e.idle_since = Instant::now();
                e.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    fn caps(total: usize, per_source: usize) -> Caps {
        Caps {
            total,
            per_source,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn at_the_cap_the_busiest_sources_longest_idle_connection_gives_way() {
        let all = Connections::new(caps(3, 10));
        let (a1, _) = all.admit(ip(2)).unwrap();
        let (a2, _) = all.admit(ip(2)).unwrap();
        let (b, _) = all.admit(ip(3)).unwrap();
        // Full: 127.0.0.2 holds the most; its longest idle one (a1) gives way.
        let (_c, evicted) = all.admit(ip(4)).unwrap();
        assert!(evicted);
        assert_eq!(a1.next_step(Instant::now()), Step::Close(Why::Evicted));
        assert!(matches!(a2.next_step(Instant::now()), Step::Wait(Some(_))));
        assert!(matches!(b.next_step(Instant::now()), Step::Wait(Some(_))));
        assert_eq!(all.counts(), (3, 1));
        drop(a1);
        assert_eq!(all.counts(), (3, 0));
    }

    #[test]
    fn past_the_closing_bound_the_oldest_closing_connection_is_cut_at_once() {
        let all = Connections::new(caps(16, 100));
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(all.admit(ip(2)).unwrap().0);
        }
        // Sixteen newcomers: each makes one give way; the closing bound (16) is met.
        for _ in 0..16 {
            held.push(all.admit(ip(3)).unwrap().0);
        }
        assert_eq!(all.counts(), (16, 16));
        assert_eq!(held[0].next_step(Instant::now()), Step::Close(Why::Evicted));
        // One more: the first to start closing is cut without its grace.
        let (_more, evicted) = all.admit(ip(4)).unwrap();
        assert!(evicted);
        assert_eq!(held[0].next_step(Instant::now()), Step::Cut);
        assert!(matches!(held[1].next_step(Instant::now()), Step::Close(_)));
    }

    #[test]
    fn past_a_quarter_waiting_for_a_first_request_the_longest_waiting_gives_way() {
        let all = Connections::new(caps(64, 100));
        let (proven, _) = all.admit(ip(3)).unwrap();
        drop(proven.begin());
        let mut waiting = Vec::new();
        for _ in 0..16 {
            waiting.push(all.admit(ip(2)).unwrap().0);
        }
        assert_eq!(all.counts(), (17, 0));
        // The 17th waiting: the first of them gives way, never the proven one.
        let (_more, evicted) = all.admit(ip(2)).unwrap();
        assert!(evicted);
        assert_eq!(
            waiting[0].next_step(Instant::now()),
            Step::Close(Why::Evicted)
        );
        assert!(matches!(
            proven.next_step(Instant::now()),
            Step::Wait(Some(_))
        ));
        assert_eq!(all.counts(), (17, 1));
    }

    #[test]
    fn busy_connections_are_never_replaced_and_the_newcomer_is_refused() {
        let all = Connections::new(caps(2, 10));
        let (a, _) = all.admit(ip(2)).unwrap();
        let (b, _) = all.admit(ip(3)).unwrap();
        let (_ga, _gb) = (a.begin(), b.begin());
        assert_eq!(all.admit(ip(4)).unwrap_err(), Refused::Full);
        assert_eq!(a.next_step(Instant::now()), Step::Wait(None));
    }

    #[test]
    fn a_source_at_its_cap_replaces_only_its_own_idle_connections() {
        let all = Connections::new(caps(100, 2));
        let (other, _) = all.admit(ip(3)).unwrap();
        let (a1, _) = all.admit(ip(2)).unwrap();
        let (a2, _) = all.admit(ip(2)).unwrap();
        let _busy = a2.begin();
        let (a3, evicted) = all.admit(ip(2)).unwrap();
        assert!(evicted);
        assert_eq!(a1.next_step(Instant::now()), Step::Close(Why::Evicted));
        assert!(matches!(
            other.next_step(Instant::now()),
            Step::Wait(Some(_))
        ));
        // Both of its open connections busy: nothing of its own to replace.
        let _busy3 = a3.begin();
        assert_eq!(all.admit(ip(2)).unwrap_err(), Refused::SourceFull);
        assert!(all.admit(ip(4)).is_ok(), "another source is served");
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of(IpAddr::from([10, 0, 0, 1])));
    }

    #[test]
    fn deadlines_first_request_then_idle_then_the_close_grace() {
        let all = Connections::new(caps(10, 10));
        let start = Instant::now();
        let (c, _) = all.admit(ip(2)).unwrap();
        let Step::Wait(Some(first)) = c.next_step(start) else {
            panic!("a first-request deadline")
        };
        assert!(first <= start + Duration::from_secs(6));
        drop(c.begin());
        let Step::Wait(Some(idle)) = c.next_step(Instant::now()) else {
            panic!("an idle deadline")
        };
        assert!(idle >= start + Duration::from_secs(59));
        // Past it: closed gracefully, then cut once the grace is over.
        assert_eq!(c.next_step(idle), Step::Close(Why::Idle));
        assert!(matches!(c.next_step(idle), Step::Wait(Some(_))));
        assert_eq!(c.next_step(idle + CLOSE_GRACE), Step::Cut);
    }
}
