//! Uploads a 40 MB file from a `Planner` to an in-memory `Session` on a virtual
//! clock, losing one answer in five, and prints what each side did.
//!
//! `cargo run -p upsession-core --example simulate`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Response;

use upsession_core::planner::{Action, Event, Planner, PlannerConfig, TransportError};
use upsession_core::session::{Limits, PutDecision, Session};
use upsession_core::{ContentRange, Dialect, respond};

fn main() {
    const TOTAL: u64 = 40_000_000;
    let mut now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut rng = fastrand::Rng::with_seed(42);
    let mut session = None;
    let mut planner = Planner::new(TOTAL, PlannerConfig::default().with_jitter_seed(7));
    let mut stored = 0u64;

    loop {
        let reply = match planner.next(now) {
            Action::CreateSession => {
                let s = Session::open(now, TOTAL, &Limits::default()).expect("within limits");
                let res = Dialect::UPSESSION.created(
                    "https://example.invalid/up/1?sig=x",
                    s.expires_at(),
                    &s.next_expected(),
                );
                session = Some(s);
                Ok(res)
            }
            Action::Put(cr) => {
                let s = session.as_mut().expect("created first");
                let res = put(s, now, cr, &mut stored);
                println!("server: PUT {cr} -> {}", res.status());
                // One answer in five is lost on the way back.
                if rng.u8(0..5) == 0 {
                    Err(TransportError::Lost)
                } else {
                    Ok(res)
                }
            }
            Action::QueryStatus => {
                let s = session.as_mut().expect("created first");
                Ok(match s.status(now) {
                    Ok(answer) => Dialect::UPSESSION.answer(&answer, LOCATION),
                    Err(e) => respond::error(&e, "sim", now),
                })
            }
            Action::Wait { until } => {
                println!(
                    "client: waiting {:?}",
                    until.duration_since(now).unwrap_or_default()
                );
                now = until;
                continue;
            }
            Action::Done(done) => {
                println!(
                    "client: done, attachment at {}",
                    done.location.unwrap_or_default()
                );
                println!("server stored {stored} bytes for a {TOTAL}-byte file");
                return;
            }
            Action::Failed(e) => {
                eprintln!("client: failed: {e}");
                std::process::exit(1);
            }
            other => unreachable!("this example never cancels: {other:?}"),
        };
        now += Duration::from_millis(20);
        match reply {
            Ok(res) => planner.handle_response(now, &res),
            Err(e) => {
                println!("network: the answer was lost");
                planner.handle_transport_error(now, e);
            }
        }
        report(&mut planner);
    }
}

const LOCATION: &str = "https://example.invalid/v1.0/me/messages/m1/attachments/a1";

/// What the server does with a fragment: a real one writes the bytes where this
/// counts them.
fn put(s: &mut Session, now: SystemTime, cr: ContentRange, stored: &mut u64) -> Response<Vec<u8>> {
    match s.handle_put(now, Some(&cr.to_string()), Some(cr.range().len())) {
        Ok(PutDecision::Write(ticket)) => {
            *stored += ticket.range().len();
            match s.commit(now, ticket) {
                Ok(answer) => Dialect::UPSESSION.answer(&answer, LOCATION),
                Err(e) => respond::error(&e, "sim", now),
            }
        }
        Ok(PutDecision::Replay { answer, .. }) => Dialect::UPSESSION.answer(&answer, LOCATION),
        Err(e) => respond::error(&e, "sim", now),
    }
}

/// Prints what the planner reports.
fn report(planner: &mut Planner) {
    while let Some(event) = planner.poll_event() {
        match event {
            Event::Progress {
                acknowledged,
                total,
            } => println!("client: {acknowledged}/{total} bytes acknowledged"),
            Event::Retrying(retry) => {
                println!("client: retry #{}: {}", retry.attempt, retry.reason);
            }
            _ => {}
        }
    }
}
