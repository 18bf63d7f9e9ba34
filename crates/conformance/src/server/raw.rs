//! The requests written by hand on a TCP socket because they must be malformed on
//! the wire: a `Content-Length` that lies about the range, and a body cut short
//! (then sent again whole). Skipped when the base URL is `https`.

use std::time::{Duration, Instant};

use http::Method;
use upsession_core::session::PutDecision;

use super::exec::Exec;
use super::http::RawConn;
use super::judge::busy;
use super::model::{Kind, model_now, rule_for, to_usize};
use super::verdict::{Violation, violation};
use crate::rule::Rule;

/// Most attempts at re-sending a cut fragment while the server still answers 409
/// (within the request timeout in all: a server may only notice the dropped
/// connection when its body timeout fires).
const BUSY_RETRIES: u32 = 400;

impl Exec<'_> {
    /// A `PUT` whose `Content-Length` differs from its range by `delta` (padded
    /// with 0xEE when longer).
    pub(super) async fn length_mismatch(&mut self, i: usize, delta: i16) -> Result<(), Violation> {
        let Some((first, last)) = self.raw_fragment(i) else {
            return Ok(());
        };
        let len = last - first + 1;
        let mut sent = len.saturating_add_signed(i64::from(delta)).max(1);
        if sent == len {
            sent = len + 1;
        }
        let dialect = self.dialect();
        let model = &mut self.sessions[i];
        let header = format!("bytes {first}-{last}/{}", model.size());
        let cancelled = model.cancelled();
        let (expect, wrote) = model.expect_put(dialect, Some(&header), Some(sent));
        let rule = rule_for(Kind::LengthMismatch, &expect, cancelled);
        let mut body = model.slice(first, last);
        body.resize(to_usize(sent), 0xEE);
        let note = format!(
            "raw request: Content-Length {sent} for the {len}-byte range; body: bytes {first}..={} of file {}{}",
            first + sent.min(len) - 1,
            model.file,
            if sent > len {
                ", then 0xEE padding"
            } else {
                ""
            }
        );
        let req = self
            .upload_request(i, Method::PUT)
            .header("Content-Range", header);
        let step = self.record(&req, Some(sent), vec![note]);
        self.stats.bytes += sent;
        let timeout = self.cfg.request_timeout;
        let reply = match RawConn::start(&req, sent, &body, timeout).await {
            Ok(conn) => conn.answer(timeout).await,
            Err(err) => Err(err),
        };
        self.answered(step, &reply);
        self.judge(i, step, &reply, &expect, rule)?;
        self.sessions[i].acked.extend(wrote);
        Ok(())
    }

    /// A `PUT` whose body stops after `keep` bytes and whose connection is closed:
    /// nothing of it may count, and the fragment sent whole afterwards is taken.
    pub(super) async fn cut_body(&mut self, i: usize, keep: u16) -> Result<(), Violation> {
        let Some((first, last)) = self.raw_fragment(i) else {
            return Ok(());
        };
        let len = last - first + 1;
        let keep = u64::from(keep) % len;
        let model = &mut self.sessions[i];
        let header = format!("bytes {first}-{last}/{}", model.size());
        match model
            .session
            .handle_put(model_now(), Some(&header), Some(len))
        {
            Ok(PutDecision::Write(ticket)) => model.session.write_failed(ticket),
            // Not the next fragment after all: nothing to cut.
            Ok(PutDecision::Replay { .. }) | Err(_) => return Ok(()),
        }
        let body = model.slice(first, last);
        let req = self
            .upload_request(i, Method::PUT)
            .header("Content-Range", header);
        let step = self.record(
            &req,
            Some(len),
            vec![format!(
                "raw request: sends {keep} of the {len} body bytes (from byte {first} of file {}), \
                 then closes the connection",
                self.sessions[i].file
            )],
        );
        self.stats.bytes += keep;
        let timeout = self.cfg.request_timeout;
        match RawConn::start(&req, len, &body[..to_usize(keep)], timeout).await {
            Ok(conn) => drop(conn),
            Err(err) => {
                let bad = violation(Rule::IncompleteBody, format!("cannot send: {err}"));
                return Err(self.at(step, bad));
            }
        }
        self.not_awaited(step);
        // Nothing of the cut fragment may count ...
        self.status(i, Some(Rule::IncompleteBody)).await?;
        // ... and the same fragment sent whole is taken (409 while the server notices).
        self.put_again(i, first, last).await
    }

    async fn put_again(&mut self, i: usize, first: u64, last: u64) -> Result<(), Violation> {
        let base = self.upload_request(i, Method::PUT);
        let dialect = self.dialect();
        let model = &mut self.sessions[i];
        let header = format!("bytes {first}-{last}/{}", model.size());
        let (expect, wrote) = model.expect_put(dialect, Some(&header), Some(last - first + 1));
        let rule = rule_for(Kind::Again, &expect, false);
        let req = base
            .header("Content-Range", header)
            .bytes(model.slice(first, last), model.note(first, last));
        let deadline = Instant::now() + self.cfg.request_timeout;
        for attempt in 1..=BUSY_RETRIES {
            let (step, reply) = self.send(&req).await;
            let is_busy = busy(&reply).map_err(|bad| self.at(step, bad))?;
            if attempt < BUSY_RETRIES && is_busy && Instant::now() < deadline {
                self.note(
                    step,
                    "409 while the server notices the cut connection: sent again",
                );
                let pause = Duration::from_millis(10 * u64::from(attempt.min(10)));
                tokio::time::sleep(pause).await;
                continue;
            }
            self.judge(i, step, &reply, &expect, rule)?;
            break;
        }
        self.sessions[i].acked.extend(wrote);
        Ok(())
    }
}
