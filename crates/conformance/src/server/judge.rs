//! The judgement of an answer against what the model expects: the status, Graph's
//! error JSON and its codes, the uploadSession JSON and its ranges, the 201 with
//! its `Location`; and the rules each judgement counts as checked.

use upsession_core::RangeSet;

use super::exec::Exec;
use super::http::{Reply, graph_error_code};
use super::model::Expect;
use super::shape::{self, Via, show};
use super::verdict::{Violation, violation};
use crate::rule::Rule;

/// The result of a successful judgement, applied once accepted.
#[derive(Debug)]
pub(super) struct Judged {
    rules: Vec<Rule>,
    location: Option<String>,
}

impl Judged {
    /// Judged by `rules`, with no `Location` to remember.
    fn by(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            location: None,
        }
    }
}

impl Exec<'_> {
    /// Whether `reply` is the answer `expect` says for session `i`; `rule` is the
    /// one a wrong answer breaks.
    pub(super) fn assess(
        &self,
        i: usize,
        reply: &Reply,
        expect: &Expect,
        rule: Rule,
    ) -> Result<Judged, Violation> {
        match expect {
            Expect::Unknown => Err(violation(
                Rule::Harness,
                "the reference model gave an answer this checker does not know; update upsession-conformance",
            )),
            Expect::Deleted => {
                if reply.status == 204 {
                    Ok(Judged::by(vec![rule]))
                } else {
                    Err(violation(
                        rule,
                        format!("expected exactly 204, got {}", reply.brief()),
                    ))
                }
            }
            Expect::Error {
                status,
                code,
                inner,
            } => assess_error(reply, *status, code, *inner, rule),
            Expect::Progress {
                ranges: set,
                status,
                via,
            } => self.assess_progress(i, reply, set, *status, *via, rule),
            Expect::Completed { status } => self.assess_completed(i, reply, *status, rule),
        }
    }

    /// Judges an answer the model gives as `status` with the uploadSession JSON
    /// listing `set`, asked for `via` a `PUT` or a `GET`.
    fn assess_progress(
        &self,
        i: usize,
        reply: &Reply,
        set: &RangeSet,
        status: u16,
        via: Via,
        rule: Rule,
    ) -> Result<Judged, Violation> {
        if reply.status != status {
            return Err(violation(
                rule,
                format!(
                    "expected {status} with nextExpectedRanges {}, got {}",
                    show(set),
                    reply.brief()
                ),
            ));
        }
        let closed = self.applies(Rule::ClosedRanges);
        let size = self.sessions[i].size();
        let got = shape::progress_json(reply, size, self.dialect(), via, closed)?;
        if got != *set {
            return Err(violation(
                rule,
                format!(
                    "nextExpectedRanges is {} but the session must expect {}",
                    show(&got),
                    show(set)
                ),
            ));
        }
        let mut rules = vec![rule, Rule::ProgressShape];
        if closed {
            rules.push(Rule::ClosedRanges);
        }
        Ok(Judged::by(rules))
    }

    /// Judges an answer the model gives as `status` (201) with a `Location`: the
    /// same one on every answer to the session.
    fn assess_completed(
        &self,
        i: usize,
        reply: &Reply,
        status: u16,
        rule: Rule,
    ) -> Result<Judged, Violation> {
        let previous = self.sessions[i].location.as_deref();
        let shape_rule = if previous.is_some() {
            Rule::FinalReplay
        } else {
            Rule::Completion
        };
        if reply.status != status {
            return Err(violation(
                rule,
                format!("expected {status} with a Location, got {}", reply.brief()),
            ));
        }
        let Some(location) = reply.header("location") else {
            return Err(violation(
                shape_rule,
                "the 201 answer has no Location header",
            ));
        };
        if !(location.starts_with("http://") || location.starts_with("https://")) {
            return Err(violation(
                shape_rule,
                format!("Location `{location}` is not an absolute URL"),
            ));
        }
        // Outlook's dialect writes an Outlook REST `Location`.
        shape::location_style(location, &self.sessions[i].item, self.dialect())
            .map_err(|m| violation(shape_rule, m))?;
        if !reply.body.is_empty() {
            return Err(violation(
                shape_rule,
                format!(
                    "the 201 answer has a {}-byte body; it must be empty",
                    reply.body.len()
                ),
            ));
        }
        if let Some(ct) = reply.header("content-type")
            && ct.to_ascii_lowercase().contains("json")
        {
            return Err(violation(
                shape_rule,
                format!(
                    "the empty 201 answer claims Content-Type `{ct}`; an SDK parses it as JSON and fails"
                ),
            ));
        }
        if let Some(previous) = previous
            && previous != location
        {
            return Err(violation(
                Rule::FinalReplay,
                format!("the Location changed: first `{previous}`, now `{location}`"),
            ));
        }
        Ok(Judged {
            rules: vec![rule, shape_rule],
            location: Some(location.to_owned()),
        })
    }

    /// Counts the rules of an accepted judgement, and remembers the first
    /// `Location` of session `i`.
    pub(super) fn apply(&mut self, i: usize, mut judged: Judged) {
        judged.rules.sort_unstable();
        judged.rules.dedup();
        for rule in judged.rules {
            self.stats.checked(rule);
        }
        if let Some(location) = judged.location
            && self.sessions[i].location.is_none()
        {
            self.sessions[i].location = Some(location);
            self.stats.completed += 1;
        }
    }

    /// Judges `reply` (step `step`) as `expect`; a violation is marked on the step.
    pub(super) fn judge(
        &mut self,
        i: usize,
        step: usize,
        reply: &Result<Reply, String>,
        expect: &Expect,
        rule: Rule,
    ) -> Result<(), Violation> {
        let outcome = match reply {
            Err(e) => Err(violation(rule, format!("no answer: {e}"))),
            Ok(reply) => self.assess(i, reply, expect, rule),
        };
        match outcome {
            Ok(judged) => {
                self.apply(i, judged);
                Ok(())
            }
            Err(v) => Err(self.at(step, v)),
        }
    }
}

/// Judges an answer the model gives as Graph's error JSON with `status`, `code`
/// and `inner`.
fn assess_error(
    reply: &Reply,
    status: u16,
    code: &str,
    inner: Option<&str>,
    rule: Rule,
) -> Result<Judged, Violation> {
    let want = expected_codes(code, inner);
    if reply.status != status {
        return Err(violation(
            rule,
            format!("expected {status} {want}, got {}", reply.brief()),
        ));
    }
    let Some(got) = graph_error_code(&reply.body) else {
        return Err(violation(
            Rule::ErrorShape,
            format!(
                "the {status} answer is not Graph's error JSON: {}",
                reply.brief()
            ),
        ));
    };
    if !got.are(code, inner) {
        return Err(violation(
            rule,
            format!("expected {status} {want}, got {status} with code {got}"),
        ));
    }
    Ok(Judged::by(vec![rule, Rule::ErrorShape]))
}

/// Judges only an error the model expects (any other answer passes).
pub(super) fn assess_error_only(
    reply: &Reply,
    expect: &Expect,
    rule: Rule,
) -> Result<(), Violation> {
    let Expect::Error {
        status,
        code,
        inner,
    } = expect
    else {
        return Ok(());
    };
    if reply.status != *status
        || !graph_error_code(&reply.body).is_some_and(|got| got.are(code, *inner))
    {
        let want = expected_codes(code, *inner);
        return Err(violation(
            rule,
            format!("expected {status} {want}, got {}", reply.brief()),
        ));
    }
    Ok(())
}

/// Whether an answer is Graph's 409 `fragmentInProgress` or `fragmentSuperseded`; a
/// 409 that is not Graph's error JSON breaks `error-shape`.
pub(super) fn busy(reply: &Result<Reply, String>) -> Result<bool, Violation> {
    let Ok(reply) = reply else {
        return Ok(false);
    };
    if reply.status != 409 {
        return Ok(false);
    }
    match graph_error_code(&reply.body) {
        None => Err(violation(
            Rule::ErrorShape,
            format!(
                "the 409 answer is not Graph's error JSON: {}",
                reply.brief()
            ),
        )),
        // Refused while the other is stored, or taken over by it (the new request wins).
        Some(codes) => Ok(matches!(
            codes.detail(),
            "fragmentInProgress" | "fragmentSuperseded"
        )),
    }
}

/// `code` or `code/inner`, as an expectation is shown.
fn expected_codes(code: &str, inner: Option<&str>) -> String {
    inner.map_or_else(|| code.to_owned(), |inner| format!("{code}/{inner}"))
}
