//! Two concurrent `PUT`s of one fragment: the first written by hand and held open
//! half-way while the second is sent, and the judgement of the pair (one stored
//! exactly once, the other refused with 409 or answered as a re-send).

use std::time::Duration;

use http::Method;

use super::exec::Exec;
use super::http::{RawConn, Reply};
use super::judge::busy;
use super::model::{Expect, Kind, rule_for};
use super::verdict::{Violation, violation};
use crate::rule::Rule;

/// How long to wait for the concurrent `PUT`'s answer before finishing the first.
const CONCURRENT_WAIT: Duration = Duration::from_millis(300);

/// Two concurrent `PUT`s of one fragment and their answers.
struct Pair<'r> {
    first: (usize, &'r Result<Reply, String>),
    second: (usize, &'r Result<Reply, String>),
    /// What the writer gets.
    expect: &'r Expect,
    /// What the other gets when it is served after the writer.
    again: &'r Expect,
    /// The rule the writer's answer is judged by.
    rule: Rule,
}

impl Exec<'_> {
    /// Two `PUT`s of session `i`'s next fragment at once, then its status: the
    /// fragment is stored exactly once.
    pub(super) async fn concurrent(&mut self, i: usize) -> Result<(), Violation> {
        let Some((first, last)) = self.raw_fragment(i) else {
            return Ok(());
        };
        let len = last - first + 1;
        let base = self.upload_request(i, Method::PUT);
        let dialect = self.dialect();
        let model = &mut self.sessions[i];
        let header = format!("bytes {first}-{last}/{}", model.size());
        let (expect, wrote) = model.expect_put(dialect, Some(&header), Some(len));
        // What the other copy gets when it is served after the first is stored: the
        // same answer, or (OneDrive's dialect) 416 fragmentOverlap.
        let (again, _) = model.expect_put(dialect, Some(&header), Some(len));
        let first_rule = rule_for(Kind::Next, &expect, false);
        let body = model.slice(first, last);
        let req = base
            .header("Content-Range", header)
            .bytes(body.clone(), model.note(first, last));
        let half = body.len() / 2;
        let timeout = self.cfg.request_timeout;

        let step1 = self.record(
            &req,
            Some(len),
            vec![format!(
                "raw request: sends the head and {half} of {len} body bytes, holds the connection \
                 open while the next step is sent, then sends the rest"
            )],
        );
        let mut first = match RawConn::start(&req, len, &body[..half], timeout).await {
            Ok(conn) => conn,
            Err(err) => {
                let bad = violation(first_rule, format!("cannot send: {err}"));
                return Err(self.at(step1, bad));
            }
        };
        // Lets the server read the first head before the second arrives; not an assertion.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let step2 = self.record(
            &req,
            None,
            vec![format!("sent while step {step1} is in progress")],
        );
        let (client, second_req) = (self.http.clone(), req.clone());
        let mut second = tokio::spawn(async move { second_req.send(&client).await });
        let early = tokio::time::timeout(CONCURRENT_WAIT, &mut second)
            .await
            .ok();
        first.send(&body[half..]).await;
        let r1 = first.answer(timeout).await;
        let joined = match early {
            Some(joined) => joined,
            None => tokio::time::timeout(timeout, second)
                .await
                .unwrap_or_else(|_| Ok(Err("no answer in time".into()))),
        };
        let r2 = joined.unwrap_or_else(|err| Err(format!("the request task failed: {err}")));
        self.answered(step1, &r1);
        self.answered(step2, &r2);

        let pair = Pair {
            first: (step1, &r1),
            second: (step2, &r2),
            expect: &expect,
            again: &again,
            rule: first_rule,
        };
        self.judge_pair(i, &pair)?;
        self.sessions[i].acked.extend(wrote);
        // Stored exactly once.
        self.status(i, Some(Rule::ConcurrentPut)).await
    }

    /// Judges the answers to two concurrent `PUT`s of one fragment: one is the
    /// writer, judged as any next fragment; the other got 409 (in progress, superseded)
    /// or what the fragment gets once stored.
    fn judge_pair(&mut self, i: usize, pair: &Pair<'_>) -> Result<(), Violation> {
        let Pair {
            first: (step1, r1),
            second: (step2, r2),
            expect,
            again,
            rule: first_rule,
        } = *pair;
        let busy1 = busy(r1).map_err(|bad| self.at(step1, bad))?;
        let busy2 = busy(r2).map_err(|bad| self.at(step2, bad))?;
        if busy1 && busy2 {
            let bad = violation(
                Rule::ConcurrentPut,
                "both concurrent PUTs were answered 409: neither was stored",
            );
            return Err(self.at(step2, bad));
        }
        // Normally the first PUT (its head arrived first) is the writer. Where the two
        // answers differ (OneDrive), they may show that the second won the race and
        // the first was served after it.
        let swapped = again != expect
            && !busy1
            && !busy2
            && !self.fits(i, r1, expect)
            && self.fits(i, r1, again)
            && self.fits(i, r2, expect);
        // The newer request may have taken the fragment over (the new request wins):
        // then the first must show it was not stored, or get what a re-send gets.
        let second_won =
            !busy1 && !busy2 && r1.is_ok() && self.fits(i, r2, expect) && !self.fits(i, r1, expect);
        let first_fits_again = self.fits(i, r1, again);
        if second_won {
            self.judge(i, step2, r2, expect, first_rule)?;
            if !first_fits_again {
                let bad = violation(
                    Rule::ConcurrentPut,
                    format!(
                        "the newer PUT was stored; the one it took over must get 409 or the \
                         answer to a re-send, not {}",
                        r1.as_ref().map_or_else(Clone::clone, Reply::brief)
                    ),
                );
                return Err(self.at(step1, bad));
            }
            self.stats.checked(Rule::ConcurrentPut);
            return Ok(());
        }
        if r1.is_ok() && !busy1 && !swapped {
            // The first PUT was the writer: judged as any next fragment.
            self.judge(i, step1, r1, expect, first_rule)?;
            if busy2 {
                self.stats.checked(Rule::ConcurrentPut);
            } else {
                self.judge_served_after(i, pair)?;
            }
        } else {
            // The second one won the race (or the first was refused 409 and closed).
            self.stats.checked(Rule::ConcurrentPut);
            self.judge(i, step2, r2, expect, first_rule)?;
            if swapped {
                self.judge(i, step1, r1, again, Rule::ConcurrentPut)?;
            }
        }
        Ok(())
    }

    /// Judges the second `PUT` when the first stored the fragment and the second was
    /// not refused: it gets what a re-send of the fragment gets.
    fn judge_served_after(&mut self, i: usize, pair: &Pair<'_>) -> Result<(), Violation> {
        let (step2, r2) = pair.second;
        let wanted = if pair.again == pair.expect {
            "the first's answer"
        } else {
            "the answer to a re-send of it"
        };
        let outcome = match r2 {
            Err(err) => Err(violation(Rule::ConcurrentPut, format!("no answer: {err}"))),
            Ok(reply) => self
                .assess(i, reply, pair.again, Rule::ConcurrentPut)
                .map_err(|bad| {
                    violation(
                        bad.rule,
                        format!(
                            "{}; a concurrent PUT of the same fragment must get {wanted} \
                         or 409",
                            bad.message
                        ),
                    )
                }),
        };
        match outcome {
            Ok(judged) => {
                self.apply(i, judged);
                Ok(())
            }
            Err(bad) => Err(self.at(step2, bad)),
        }
    }

    /// Whether `reply` is an answer and the one `expect` says.
    fn fits(&self, i: usize, reply: &Result<Reply, String>, expect: &Expect) -> bool {
        reply
            .as_ref()
            .is_ok_and(|reply| self.assess(i, reply, expect, Rule::ConcurrentPut).is_ok())
    }
}
