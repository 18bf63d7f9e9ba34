//! One running case: its state (the sessions' models, the steps of its script, the
//! stats), the recording of every request it sends, and the script shown on a
//! failure.
//!
//! The requests themselves are `Exec` methods in the sibling modules, one per kind:
//! `sessions` (create, status, delete), `put` (plain fragments), `raw` (malformed
//! on the wire), `concurrent` (two `PUT`s at once) and `attachments`; `judge` holds
//! the judgement of answers against the `model`, and `case` runs a whole case.

use std::fmt::Write as _;

use http::Method;
use reqwest::Url;
use upsession_core::Dialect;
use upsession_core::session::Limits;

use super::Config;
use super::http::{Outgoing, Reply};
use super::model::Model;
use super::ops::Len;
use super::verdict::Violation;
use crate::outcome::Report;
use crate::rule::Rule;

/// One line of the script.
#[derive(Debug)]
struct Step {
    line: String,
    notes: Vec<String>,
    answer: Option<String>,
    verdict: Option<String>,
}

/// Runs one case against the server.
#[derive(Debug)]
pub(crate) struct Exec<'a> {
    pub(super) cfg: &'a Config,
    pub(super) http: &'a reqwest::Client,
    base: Url,
    raw_ok: bool,
    pub(super) limits: Limits,
    pub(super) case_seed: u64,
    steps: Vec<Step>,
    pub(super) sessions: Vec<Model>,
    pub(crate) stats: Report,
}

impl<'a> Exec<'a> {
    pub(crate) fn new(
        cfg: &'a Config,
        http: &'a reqwest::Client,
        base: Url,
        case_seed: u64,
    ) -> Self {
        Self {
            cfg,
            http,
            raw_ok: base.scheme() == "http",
            base,
            limits: cfg.limits(),
            case_seed,
            steps: Vec::new(),
            sessions: Vec::new(),
            stats: Report::default(),
        }
    }

    /// The dialect the server is checked in.
    pub(super) fn dialect(&self) -> &'a Dialect {
        &self.cfg.dialect
    }

    /// Whether `rule` is judged in the checked dialect.
    pub(super) fn applies(&self, rule: Rule) -> bool {
        rule.applies_to(self.dialect())
    }

    /// The dialect's fragment quantum; 1 when it has none.
    pub(super) fn quantum(&self) -> u64 {
        self.limits.fragment_quantum.unwrap_or(1).max(1)
    }

    // ----- recording -----

    pub(super) fn record(
        &mut self,
        req: &Outgoing,
        content_length: Option<u64>,
        notes: Vec<String>,
    ) -> usize {
        let mut all = Vec::new();
        all.extend(req.body_note.clone());
        all.extend(notes);
        self.steps.push(Step {
            line: req.curl(content_length),
            notes: all,
            answer: None,
            verdict: None,
        });
        self.stats.requests += 1;
        if req.method == Method::PUT {
            self.stats.bytes += req.body.len() as u64;
        }
        self.steps.len()
    }

    pub(super) fn answered(&mut self, step: usize, reply: &Result<Reply, String>) {
        self.steps[step - 1].answer = Some(match reply {
            Ok(r) => r.brief(),
            Err(e) => format!("no answer: {e}"),
        });
    }

    pub(super) async fn send(&mut self, req: &Outgoing) -> (usize, Result<Reply, String>) {
        let step = self.record(req, None, Vec::new());
        let reply = req.send(self.http).await;
        self.answered(step, &reply);
        (step, reply)
    }

    /// Adds a note to a step of the script.
    pub(super) fn note(&mut self, step: usize, note: impl Into<String>) {
        self.steps[step - 1].notes.push(note.into());
    }

    /// Marks a step whose answer the checker did not wait for.
    pub(super) fn not_awaited(&mut self, step: usize) {
        self.steps[step - 1].answer =
            Some("(not awaited: the checker closed the connection)".into());
    }

    /// Marks the step and prefixes the message with it.
    pub(super) fn at(&mut self, step: usize, v: Violation) -> Violation {
        let Violation { rule, message } = v;
        self.steps[step - 1].verdict = Some(format!("VIOLATION of `{rule}`: {message}"));
        Violation {
            rule,
            message: format!("step {step}: {message}"),
        }
    }

    pub(super) fn script(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# the minimal failing case, one request per step ($TOKEN: the bearer token; \
             <from step N>: the uploadUrl credential step N returned)"
        );
        if *self.dialect() != Dialect::UPSESSION {
            let _ = writeln!(
                out,
                "# the server is checked in the {} dialect (--dialect {})",
                self.dialect().name,
                self.dialect().name
            );
        }
        for m in &self.sessions {
            let _ = writeln!(
                out,
                "# file {}: {} bytes, generated from case seed {}",
                m.file,
                m.size(),
                self.case_seed
            );
        }
        for (n, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "{:>3}  {}", n + 1, step.line);
            for note in &step.notes {
                let _ = writeln!(out, "     # {note}");
            }
            if let Some(answer) = &step.answer {
                let _ = writeln!(out, "     # => {answer}");
            }
            if let Some(verdict) = &step.verdict {
                let _ = writeln!(out, "     # !! {verdict}");
            }
        }
        out
    }

    // ----- requests -----

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub(super) fn upload_request(&self, i: usize, method: Method) -> Outgoing {
        let m = &self.sessions[i];
        Outgoing::new(method, m.url.clone(), m.shown_url.clone())
    }

    /// The next expected fragment of session `i`, `len` long within the limits (and
    /// the dialect's quantum).
    pub(super) fn next_fragment(&self, i: usize, len: Len) -> Option<(u64, u64)> {
        let m = &self.sessions[i];
        let next = m.next_start()?;
        let n = len.pick_allowed(m.size() - next, self.limits.max_fragment, self.quantum(), 0)?;
        Some((next, next + n - 1))
    }

    /// The next whole fragment of session `i` for a request written by hand on a
    /// socket; `None` when there is none, or when the base URL is `https`.
    pub(super) fn raw_fragment(&self, i: usize) -> Option<(u64, u64)> {
        if !self.raw_ok {
            return None;
        }
        self.next_fragment(i, Len::Full)
    }
}
