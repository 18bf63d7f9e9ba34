//! The client planner against the server session, in memory, on a virtual clock,
//! over a seeded lossy network: requests and answers are dropped, duplicated,
//! delayed, throttled, cut off mid-body, and the server restarts keeping only what
//! it acknowledged. Every seed must end with the exact bytes.
//!
//! `SIM_SEEDS=N` runs N seeds (default 5000); `SIM_SEED=S` replays one seed.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;
use sha2::{Digest, Sha256};
use upsession_core::error::{RequestError, SessionError};
use upsession_core::planner::{
    Action, Completion, Planner, PlannerConfig, TransportError, UploadError,
};
use upsession_core::session::{Limits, PutDecision, Session, SessionSnapshot};
use upsession_core::{ContentRange, Dialect, respond};

struct Stored {
    session: Session,
    /// What the server would find after a crash: the last persisted snapshot.
    persisted: SessionSnapshot,
    /// The partial file: may hold bytes of writes that were never acknowledged.
    file: Vec<u8>,
}

struct Server {
    limits: Limits,
    sessions: HashMap<u64, Stored>,
    next_id: u64,
    restarts: u32,
}

type Reply = Result<Response<Vec<u8>>, TransportError>;

impl Server {
    fn location(id: u64) -> String {
        format!("https://sim/v1.0/me/messages/m/attachments/att-{id}")
    }

    fn session_id(url: &str) -> u64 {
        url.rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn restart(&mut self) {
        self.restarts += 1;
        for s in self.sessions.values_mut() {
            s.session = Session::restore(&s.persisted).expect("persisted snapshots are valid");
        }
    }

    fn create(&mut self, now: SystemTime, total: u64) -> Response<Vec<u8>> {
        let session = Session::open(now, total, &self.limits).expect("sizes are within limits");
        self.next_id += 1;
        let id = self.next_id;
        let url = format!("https://sim/up/{id}");
        let res = Dialect::UPSESSION.created(&url, session.expires_at(), &session.next_expected());
        let persisted = session.snapshot();
        let file = vec![0; usize::try_from(total).unwrap()];
        self.sessions.insert(
            id,
            Stored {
                session,
                persisted,
                file,
            },
        );
        res
    }

    /// A PUT whose body is `source[range]`; `cut` makes the body stop half-way.
    fn put(
        &mut self,
        now: SystemTime,
        id: u64,
        cr: ContentRange,
        source: &[u8],
        cut: bool,
    ) -> Reply {
        let Some(s) = self.sessions.get_mut(&id) else {
            return Ok(respond::error(&RequestError::SessionNotFound, "r", now));
        };
        match s
            .session
            .handle_put(now, Some(&cr.to_string()), Some(cr.range().len()))
        {
            Ok(PutDecision::Write(ticket)) => {
                let r = ticket.range();
                let (a, b) = (
                    usize::try_from(r.start()).unwrap(),
                    usize::try_from(r.end()).unwrap(),
                );
                if cut {
                    // Half the body reaches the disk, then the connection drops.
                    let mid = a + (b - a) / 2;
                    s.file[a..mid].copy_from_slice(&source[a..mid]);
                    s.session.write_failed(ticket);
                    return Err(TransportError::Lost);
                }
                s.file[a..b].copy_from_slice(&source[a..b]);
                match s.session.commit(now, ticket) {
                    Ok(answer) => {
                        s.persisted = s.session.snapshot();
                        Ok(Dialect::UPSESSION.answer(&answer, &Self::location(id)))
                    }
                    Err(e) => Ok(respond::error(&e, "r", now)),
                }
            }
            Ok(PutDecision::Replay { answer, .. }) => {
                Ok(Dialect::UPSESSION.answer(&answer, &Self::location(id)))
            }
            Err(e) => Ok(respond::error(&e, "r", now)),
        }
    }

    fn status(&mut self, now: SystemTime, id: u64) -> Response<Vec<u8>> {
        match self.sessions.get_mut(&id).map(|s| s.session.status(now)) {
            Some(Ok(answer)) => Dialect::UPSESSION.answer(&answer, &Self::location(id)),
            Some(Err(e)) => respond::error(&e, "r", now),
            None => respond::error(&RequestError::SessionNotFound, "r", now),
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    faults: u64,
    restarts: u32,
    client_restarts: u32,
    /// Runs that ended at once because their first request never left.
    unreachable: u32,
}

fn source_bytes(rng: &mut fastrand::Rng, len: u64) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Runs one seeded upload to completion; returns what happened or why it failed.
fn run(seed: u64) -> Result<Stats, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = rng.u64(1..=40_000);
    let source = source_bytes(&mut rng, total);
    let fault_rate = rng.f64() * 0.25;
    let limits = Limits::default()
        .with_min_size(1)
        .with_max_fragment(8192)
        .with_ttl(Duration::from_secs(3600));
    let mut server = Server {
        limits,
        sessions: HashMap::new(),
        next_id: 0,
        restarts: 0,
    };
    let cfg = PlannerConfig::default()
        .with_fragment_size(rng.u64(512..=8192))
        .with_jitter_seed(seed);
    let mut planner = Planner::new(total, cfg.clone());
    let mut now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut stats = Stats::default();
    let budget = 20 * (total / 512 + 1) + 400;
    let mut answered = false;

    loop {
        while planner.poll_event().is_some() {}
        if rng.f64() < fault_rate * 0.1 {
            server.restart();
        }
        if rng.f64() < fault_rate * 0.05
            && let Some(url) = planner.upload_url()
        {
            // The client process dies; a new one resumes from its saved state.
            stats.client_restarts += 1;
            planner = Planner::resume(total, url.to_owned(), planner.expires(), cfg.clone());
        }
        let action = planner.next(now);
        let fault = matches!(
            action,
            Action::CreateSession | Action::Put(_) | Action::QueryStatus
        ) && rng.f64() < fault_rate;
        if fault {
            stats.faults += 1;
        }
        if matches!(
            action,
            Action::CreateSession | Action::Put(_) | Action::QueryStatus
        ) {
            // Each request costs a little virtual time, now and then a lot.
            now += Duration::from_millis(rng.u64(0..50));
            if rng.u8(..) == 0 {
                now += Duration::from_secs(rng.u64(1..30));
            }
        }
        let reply: Reply = match action {
            Action::Wait { until } => {
                if until < now {
                    return Err(format!("asked to wait until the past: {until:?} < {now:?}"));
                }
                now = until;
                continue;
            }
            Action::Done(Completion { location, .. }) => {
                stats.restarts = server.restarts;
                let location = location.ok_or("completed without a Location")?;
                let id: u64 = location.rsplit("att-").next().unwrap().parse().unwrap();
                let file = &server.sessions[&id].file;
                if Sha256::digest(file) != Sha256::digest(&source) {
                    return Err(format!("session {id} completed with different bytes"));
                }
                return Ok(stats);
            }
            // A first request that never left, before any answer: nothing exists,
            // and the planner says so at once rather than retry a server that may
            // not be there.
            Action::Failed(UploadError::Unreachable) if !answered && server.sessions.is_empty() => {
                stats.unreachable += 1;
                return Ok(stats);
            }
            Action::Failed(e) => return Err(format!("upload failed: {e}")),
            Action::CreateSession => {
                stats.requests += 1;
                match fault.then(|| rng.u8(0..4)) {
                    Some(0) => Err(TransportError::NotSent),
                    Some(1) => {
                        let _ = server.create(now, total); // created, answer lost
                        Err(TransportError::Lost)
                    }
                    Some(2) => Ok(throttled(&mut rng, now)),
                    Some(_) => Ok(respond::error(&RequestError::Internal, "r", now)),
                    None => Ok(server.create(now, total)),
                }
            }
            Action::Put(cr) => {
                stats.requests += 1;
                let id = Server::session_id(planner.upload_url().unwrap());
                match fault.then(|| rng.u8(0..7)) {
                    Some(0) => Err(TransportError::NotSent),
                    Some(1) => Err(TransportError::Lost),
                    Some(2) => Ok(throttled(&mut rng, now)),
                    Some(3) => server.put(now, id, cr, &source, true),
                    Some(4) => {
                        // Stored and acknowledged, but the answer is lost.
                        let _ = server.put(now, id, cr, &source, false);
                        Err(TransportError::Lost)
                    }
                    Some(5) => {
                        // Delivered twice; the client sees the second answer.
                        let _ = server.put(now, id, cr, &source, false);
                        server.put(now, id, cr, &source, false)
                    }
                    Some(_) => {
                        // A duplicate arrives while the first is still being written:
                        // the new request wins, and the stale write never counts.
                        let s = server.sessions.get_mut(&id).unwrap();
                        match s.session.handle_put(now, Some(&cr.to_string()), None) {
                            Ok(PutDecision::Write(stale)) => {
                                let fresh = server.put(now, id, cr, &source, false);
                                let s = server.sessions.get_mut(&id).unwrap();
                                assert_eq!(
                                    s.session.commit(now, stale),
                                    Err(SessionError::Superseded)
                                );
                                fresh
                            }
                            _ => server.put(now, id, cr, &source, false),
                        }
                    }
                    None => server.put(now, id, cr, &source, false),
                }
            }
            Action::QueryStatus => {
                stats.requests += 1;
                let id = Server::session_id(planner.upload_url().unwrap());
                match fault.then(|| rng.u8(0..3)) {
                    Some(0) => Err(TransportError::Lost),
                    Some(1) => Ok(throttled(&mut rng, now)),
                    Some(_) => Ok(respond::error(&RequestError::Internal, "r", now)),
                    None => Ok(server.status(now, id)),
                }
            }
            other => return Err(format!("unexpected action {other:?}")),
        };
        match reply {
            Ok(res) => {
                answered = true;
                planner.handle_response(now, &res);
            }
            Err(e) => planner.handle_transport_error(now, e),
        }
        if stats.requests > budget {
            return Err(format!("no completion within {budget} requests"));
        }
    }
}

fn throttled(rng: &mut fastrand::Rng, now: SystemTime) -> Response<Vec<u8>> {
    let secs = rng.u64(0..5);
    let err = if rng.bool() {
        RequestError::Throttled {
            retry_after_secs: secs,
        }
    } else {
        RequestError::Unavailable {
            retry_after_secs: secs,
        }
    };
    let mut res = respond::error(&err, "r", now);
    if rng.bool() {
        // Retry-After as an HTTP date instead of seconds.
        let date = upsession_core::time::format_http_date(now + Duration::from_secs(secs));
        res.headers_mut()
            .insert("retry-after", date.parse().unwrap());
    }
    res
}

#[test]
fn planner_and_session_agree_on_the_bytes_over_a_lossy_network() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed = seed.parse().expect("SIM_SEED is a number");
        let stats = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        eprintln!("seed {seed}: {stats:?}");
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let (mut requests, mut faults, mut restarts, mut client_restarts) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for seed in 0..seeds {
        match run(seed) {
            Ok(s) => {
                requests += s.requests;
                faults += s.faults;
                restarts += u64::from(s.restarts);
                client_restarts += u64::from(s.client_restarts);
            }
            Err(e) => failures.push(format!("seed {seed}: {e} (replay: SIM_SEED={seed})")),
        }
    }
    eprintln!(
        "{seeds} seeds: {requests} requests, {faults} faults, {restarts} server restarts, {client_restarts} client restarts"
    );
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
