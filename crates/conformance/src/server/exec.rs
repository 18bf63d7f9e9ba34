//! One server case: the reference model, the requests it turns into, and the
//! judgement of every answer against what the model says.
//!
//! The model of each session is `upsession_core::session::Session`, opened with the
//! limits the check was given and driven on a frozen clock: every `PUT` the checker
//! sends is first put to the model (`handle_put`, then `commit` for a write), and
//! the server's answer must be the one `upsession_core::respond` and the checked
//! dialect (`upsession_core::Dialect`) would render for the model's decision
//! (status, Graph `error.code`, `nextExpectedRanges`). The model takes the
//! dialect's fragment rules (`Limits::with_rules_of`); how its answers look is
//! read off the dialect's renderer (see `shape`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use reqwest::Url;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::{Answer, Limits, Phase, PutDecision, Session};
use upsession_core::wire::AttachmentItem;
use upsession_core::{ByteRange, Dialect, GraphError, RangeSet};

use super::Config;
use super::http::{Outgoing, RawConn, Reply, graph_error_code};
use super::ops::{BAD_RANGE_VARIANTS, Case, Len, Op};
use super::shape::{self, Via, show};
use super::verdict::{Violation, violation};
use crate::outcome::Report;
use crate::rule::Rule;
use crate::runner::{CaseFailure, mix};

/// The model's frozen clock: sessions never expire during a case.
fn model_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// How long to wait for the concurrent `PUT`'s answer before finishing the first.
const CONCURRENT_WAIT: Duration = Duration::from_millis(300);

/// Most attempts at re-sending a cut fragment while the server still answers 409
/// (within the request timeout in all: a server may only notice the dropped
/// connection when its body timeout fires).
const BUSY_RETRIES: u32 = 400;

/// What the model says the answer must be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// `status` (the dialect's: 200, or OneDrive's 202 to a fragment) with the
    /// uploadSession JSON and these ranges, asked for `via` a `PUT` or a `GET`.
    Progress {
        ranges: RangeSet,
        status: u16,
        via: Via,
    },
    /// `status` (201) with a `Location`.
    Completed { status: u16 },
    /// Graph's error JSON with this status, top-level code and `innerError.code`.
    Error {
        status: u16,
        code: &'static str,
        inner: Option<&'static str>,
    },
    /// 204 to a `DELETE`.
    Deleted,
    /// An answer of the model this checker does not know.
    Unknown,
}

impl Expect {
    /// The model's `answer` to a `PUT` or a `GET`, with the status `dialect` gives it.
    fn from_answer(answer: Answer, dialect: &Dialect, via: Via) -> Self {
        let status = shape::answer(dialect, &answer, via).status;
        match answer {
            Answer::Progress { next_expected, .. } => Self::Progress {
                ranges: next_expected,
                status,
                via,
            },
            Answer::Completed => Self::Completed { status },
            _ => Self::Unknown,
        }
    }

    fn completes(&self) -> bool {
        matches!(self, Self::Completed { .. })
    }

    fn from_error<E: GraphError + ?Sized>(err: &E) -> Self {
        Self::Error {
            status: err.status().as_u16(),
            code: err.code(),
            inner: err.inner_code(),
        }
    }
}

/// What a `PUT` is meant to test, which decides the rule its answer is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Next,
    Again,
    Resend,
    ResendFinal,
    Skip,
    Overlap,
    TooLarge,
    BadRange,
    WrongTotal,
    LengthMismatch,
    OddLength,
}

fn rule_for(kind: Kind, expect: &Expect, cancelled: bool) -> Rule {
    if cancelled {
        return Rule::Cancel;
    }
    let completes = expect.completes();
    match kind {
        Kind::Next | Kind::Again if completes => Rule::Completion,
        Kind::Next => Rule::NextFragment,
        Kind::Again => Rule::IncompleteBody,
        Kind::Resend if completes => Rule::FinalReplay,
        Kind::Resend => Rule::Replay,
        Kind::ResendFinal => Rule::FinalReplay,
        Kind::Skip => Rule::OutOfOrder,
        Kind::Overlap => Rule::Overlap,
        Kind::TooLarge => Rule::FragmentTooLarge,
        Kind::BadRange => Rule::InvalidRange,
        Kind::WrongTotal => Rule::TotalMismatch,
        Kind::LengthMismatch => Rule::LengthMismatch,
        Kind::OddLength => Rule::FragmentMultiple,
    }
}

/// A plain `PUT`: its `Content-Range` (or none), the file bytes of its body, what
/// it tests, and whether it carries an `Authorization` header the server must ignore.
#[derive(Debug)]
struct PutPlan {
    header: Option<String>,
    body: (u64, u64),
    kind: Kind,
    auth: bool,
}

/// One upload session as the model sees it.
#[derive(Debug)]
struct Model {
    /// The file's number in the script (1-based).
    file: usize,
    data: Vec<u8>,
    /// The message or event the attachment goes to.
    item: ItemPath,
    session: Session,
    url: Url,
    /// The uploadUrl with its credential redacted.
    shown_url: String,
    /// Fragments answered 2xx that the model stored, in order.
    acked: Vec<ByteRange>,
    /// The `Location` of the first 201.
    location: Option<String>,
}

impl Model {
    fn size(&self) -> u64 {
        self.session.size()
    }

    fn cancelled(&self) -> bool {
        self.session.phase() == Phase::Cancelled
    }

    /// The first expected byte of an open session with bytes left.
    fn next_start(&self) -> Option<u64> {
        if self.session.phase() != Phase::Open {
            return None;
        }
        self.session.next_expected().first().map(ByteRange::start)
    }

    fn slice(&self, first: u64, last: u64) -> Vec<u8> {
        let (a, b) = (to_usize(first), to_usize(last));
        self.data[a..=b].to_vec()
    }

    fn note(&self, first: u64, last: u64) -> String {
        format!("body: bytes {first}..={last} of file {}", self.file)
    }

    /// Puts a fragment to the model as if its body arrived whole; the answer is
    /// rendered in `dialect`.
    fn expect_put(
        &mut self,
        dialect: &Dialect,
        content_range: Option<&str>,
        content_length: Option<u64>,
    ) -> (Expect, Option<ByteRange>) {
        let now = model_now();
        let expect = |answer| Expect::from_answer(answer, dialect, Via::Put);
        match self.session.handle_put(now, content_range, content_length) {
            Ok(PutDecision::Write(ticket)) => {
                let range = ticket.range();
                match self.session.commit(now, ticket) {
                    Ok(answer) => (expect(answer), Some(range)),
                    Err(e) => (Expect::from_error(&e), None),
                }
            }
            Ok(PutDecision::Replay { answer, .. }) => (expect(answer), None),
            Err(e) => (Expect::from_error(&e), None),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The bytes of file `file` of a case: reproducible from the case seed alone.
fn file_data(case_seed: u64, file: usize, size: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(mix(case_seed ^ mix(file as u64)));
    let mut data = vec![0u8; to_usize(size)];
    rng.fill(&mut data);
    data
}

/// A `Content-Range` that is wrong in one of [`BAD_RANGE_VARIANTS`] ways (`None`:
/// no header at all), for the fragment `a..=b` of an `n`-byte file.
fn bad_range(variant: u8, a: u64, b: u64, n: u64) -> Option<String> {
    Some(match variant % BAD_RANGE_VARIANTS {
        0 => return None,
        1 => format!("bytes={a}-{b}/{n}"),
        2 => format!("bytes {a}-{b}"),
        3 => format!("bytes */{n}"),
        4 => format!("bytes {a}-{b}/*"),
        5 => format!("items {a}-{b}/{n}"),
        6 => format!("bytes {}-{a}/{n}", a + 1),
        7 => format!("bytes {a}-{n}/{n}"),
        8 => format!("bytes  {a}-{b}/{n}"),
        9 => format!("bytes -{b}/{n}"),
        10 => format!("bytes {a}-{b}/{n}x"),
        11 => format!("bytes 0x{a:x}-{b}/{n}"),
        12 => format!("bytes {a}-18446744073709551616/{n}"),
        _ => format!("bytes +{a}-{b}/{n}"),
    })
}

/// The uploadUrl as scripts show it: each query value replaced by `<from step N>`.
fn redact(url: &Url, step: usize) -> String {
    let mut bare = url.clone();
    bare.set_query(None);
    let pairs: Vec<String> = url
        .query_pairs()
        .map(|(k, _)| format!("{k}=<from step {step}>"))
        .collect();
    if pairs.is_empty() {
        bare.to_string()
    } else {
        format!("{bare}?{}", pairs.join("&"))
    }
}

/// The result of a successful judgement, applied once accepted.
#[derive(Debug)]
struct Judged {
    rules: Vec<Rule>,
    location: Option<String>,
}

/// One line of the script.
#[derive(Debug)]
struct Step {
    line: String,
    notes: Vec<String>,
    answer: Option<String>,
    verdict: Option<String>,
}

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

/// Runs one case against the server.
#[derive(Debug)]
pub(crate) struct Exec<'a> {
    cfg: &'a Config,
    http: &'a reqwest::Client,
    base: Url,
    raw_ok: bool,
    limits: Limits,
    case_seed: u64,
    steps: Vec<Step>,
    sessions: Vec<Model>,
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
    fn dialect(&self) -> &'a Dialect {
        &self.cfg.dialect
    }

    /// Whether `rule` is judged in the checked dialect.
    fn applies(&self, rule: Rule) -> bool {
        rule.applies_to(self.dialect())
    }

    /// The dialect's fragment quantum; 1 when it has none.
    fn quantum(&self) -> u64 {
        self.limits.fragment_quantum.unwrap_or(1).max(1)
    }

    /// Runs the case; on a violation returns it with the script of what happened.
    pub(crate) async fn run(&mut self, case: &Case) -> Result<(), CaseFailure> {
        let outcome = self.run_ops(case).await;
        outcome.map_err(|v| CaseFailure {
            rule: v.rule,
            message: v.message,
            script: self.script(),
        })
    }

    async fn run_ops(&mut self, case: &Case) -> Result<(), Violation> {
        self.op(&case.first).await?;
        for op in &case.ops {
            self.op(op).await?;
        }
        self.check_attachments().await
    }

    // ----- recording -----

    fn record(&mut self, req: &Outgoing, content_length: Option<u64>, notes: Vec<String>) -> usize {
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

    fn answered(&mut self, step: usize, reply: &Result<Reply, String>) {
        self.steps[step - 1].answer = Some(match reply {
            Ok(r) => r.brief(),
            Err(e) => format!("no answer: {e}"),
        });
    }

    async fn send(&mut self, req: &Outgoing) -> (usize, Result<Reply, String>) {
        let step = self.record(req, None, Vec::new());
        let reply = req.send(self.http).await;
        self.answered(step, &reply);
        (step, reply)
    }

    /// Marks the step and prefixes the message with it.
    fn at(&mut self, step: usize, v: Violation) -> Violation {
        let Violation { rule, message } = v;
        self.steps[step - 1].verdict = Some(format!("VIOLATION of `{rule}`: {message}"));
        Violation {
            rule,
            message: format!("step {step}: {message}"),
        }
    }

    fn script(&self) -> String {
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

    // ----- judging -----

    fn assess(
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
                    Ok(Judged {
                        rules: vec![rule],
                        location: None,
                    })
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
            } => {
                let want = expected_codes(code, *inner);
                if reply.status != *status {
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
                if !got.are(code, *inner) {
                    return Err(violation(
                        rule,
                        format!("expected {status} {want}, got {status} with code {got}"),
                    ));
                }
                Ok(Judged {
                    rules: vec![rule, Rule::ErrorShape],
                    location: None,
                })
            }
            Expect::Progress {
                ranges: set,
                status,
                via,
            } => {
                if reply.status != *status {
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
                let got = shape::progress_json(reply, size, self.dialect(), *via, closed)?;
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
                Ok(Judged {
                    rules,
                    location: None,
                })
            }
            Expect::Completed { status } => self.assess_completed(i, reply, *status, rule),
        }
    }

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

    fn apply(&mut self, i: usize, mut judged: Judged) {
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

    fn judge(
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

    // ----- requests -----

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn upload_request(&self, i: usize, method: Method) -> Outgoing {
        let m = &self.sessions[i];
        Outgoing::new(method, m.url.clone(), m.shown_url.clone())
    }

    fn pick(&self, s: u8) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| usize::from(s) % self.sessions.len())
    }

    /// The next expected fragment of session `i`, `len` long within the limits (and
    /// the dialect's quantum).
    fn next_fragment(&self, i: usize, len: Len) -> Option<(u64, u64)> {
        let m = &self.sessions[i];
        let next = m.next_start()?;
        let n = len.pick_allowed(m.size() - next, self.limits.max_fragment, self.quantum(), 0)?;
        Some((next, next + n - 1))
    }

    /// The next fragment if there is one, else the first.
    fn some_fragment(&self, i: usize) -> (u64, u64) {
        self.next_fragment(i, Len::Full).unwrap_or_else(|| {
            let size = self.sessions[i].size();
            (0, size.min(self.limits.max_fragment) - 1)
        })
    }

    async fn put(&mut self, i: usize, first: u64, last: u64, kind: Kind) -> Result<(), Violation> {
        let header = format!("bytes {first}-{last}/{}", self.sessions[i].size());
        self.put_with(i, Some(header), (first, last), kind, &[])
            .await
    }

    /// A `PUT` with this `Content-Range` (or none) and the bytes `body` of the file.
    async fn put_with(
        &mut self,
        i: usize,
        content_range: Option<String>,
        body: (u64, u64),
        kind: Kind,
        extra: &[(&str, &str)],
    ) -> Result<(), Violation> {
        let dialect = self.dialect();
        let m = &mut self.sessions[i];
        let cancelled = m.cancelled();
        let len = body.1 - body.0 + 1;
        let (expect, wrote) = m.expect_put(dialect, content_range.as_deref(), Some(len));
        let rule = rule_for(kind, &expect, cancelled);
        let mut req = self.upload_request(i, Method::PUT);
        if let Some(h) = content_range {
            req = req.header("Content-Range", h);
        }
        for (name, value) in extra {
            req = req.header(name, *value);
        }
        let m = &self.sessions[i];
        let req = req.bytes(m.slice(body.0, body.1), m.note(body.0, body.1));
        let (step, reply) = self.send(&req).await;
        self.judge(i, step, &reply, &expect, rule)?;
        self.sessions[i].acked.extend(wrote);
        Ok(())
    }

    async fn op(&mut self, op: &Op) -> Result<(), Violation> {
        let s = match *op {
            Op::Open { event, extra } => return self.open(event, extra).await,
            Op::PutNext { s, .. }
            | Op::Finish { s }
            | Op::Resend { s, .. }
            | Op::ResendFinal { s }
            | Op::Status { s }
            | Op::Delete { s }
            | Op::SkipAhead { s, .. }
            | Op::Overlap { s, .. }
            | Op::TooLarge { s, .. }
            | Op::OddLength { s, .. }
            | Op::BadRange { s, .. }
            | Op::WrongTotal { s, .. }
            | Op::LengthMismatch { s, .. }
            | Op::CutBody { s, .. }
            | Op::Concurrent { s } => s,
        };
        let Some(i) = self.pick(s) else {
            return Ok(());
        };
        match *op {
            Op::Finish { .. } => self.finish(i).await,
            Op::Status { .. } => self.status(i, None).await,
            Op::Delete { .. } => self.delete(i).await,
            Op::LengthMismatch { delta, .. } => self.length_mismatch(i, delta).await,
            Op::CutBody { keep, .. } => self.cut_body(i, keep).await,
            Op::Concurrent { .. } => self.concurrent(i).await,
            _ => match self.plan_put(i, op) {
                Some(plan) => {
                    let extra: &[(&str, &str)] = if plan.auth {
                        &[("Authorization", "Bearer not-needed-on-upload-urls")]
                    } else {
                        &[]
                    };
                    self.put_with(i, plan.header, plan.body, plan.kind, extra)
                        .await
                }
                None => Ok(()),
            },
        }
    }

    /// The `PUT` a plain operation makes of session `i` as the model stands, or
    /// `None` when the operation makes no sense there (nothing acknowledged yet,
    /// nothing left to skip to, ...).
    fn plan_put(&self, i: usize, op: &Op) -> Option<PutPlan> {
        let model = &self.sessions[i];
        let size = model.size();
        let max = self.limits.max_fragment;
        let quantum = self.quantum();
        let plain = |first: u64, last: u64, kind: Kind| PutPlan {
            header: Some(format!("bytes {first}-{last}/{size}")),
            body: (first, last),
            kind,
            auth: false,
        };
        match *op {
            Op::PutNext { len, auth, .. } => {
                let (first, last) = self.next_fragment(i, len)?;
                Some(PutPlan {
                    auth,
                    ..plain(first, last, Kind::Next)
                })
            }
            Op::Resend { back, .. } => {
                let acked = &model.acked;
                let count = acked.len();
                let range = *acked.get(count.checked_sub(1)? - usize::from(back) % count)?;
                Some(plain(range.start(), range.last(), Kind::Resend))
            }
            Op::ResendFinal { .. } => {
                model.location.as_ref()?;
                let range = model.acked.iter().rev().find(|r| r.end() == size)?;
                Some(plain(range.start(), range.last(), Kind::ResendFinal))
            }
            Op::SkipAhead { gap, len, .. } => {
                let next = model.next_start()?;
                if next + 1 >= size {
                    return None;
                }
                let start = next + 1 + u64::from(gap) % (size - next - 1);
                let n = len.pick_allowed(size - start, max, quantum, 0)?;
                Some(plain(start, start + n - 1, Kind::Skip))
            }
            Op::Overlap { back, len, .. } => {
                let next = model.next_start()?;
                if next == 0 || max < 2 {
                    return None;
                }
                let old = 1 + u64::from(back) % next.min(max - 1);
                // Longer than the `old` bytes it repeats: it reaches past them.
                let start = next - old;
                let n = len.pick_allowed(size - start, max, quantum, old)?;
                Some(plain(start, start + n - 1, Kind::Overlap))
            }
            Op::OddLength { len, .. } => {
                let next = model.next_start()?;
                // Shorter than the rest of the file: not the last fragment.
                let cap = max.min(size - next - 1);
                if quantum < 2 || cap == 0 {
                    return None;
                }
                let mut n = 1 + u64::from(len) % cap;
                if n.is_multiple_of(quantum) {
                    n -= 1;
                }
                Some(plain(next, next + n - 1, Kind::OddLength))
            }
            Op::TooLarge { extra, .. } => {
                let n = max + u64::from(extra);
                let start = match model.next_start() {
                    Some(next) if next + n <= size => next,
                    _ if size >= n => size - n,
                    _ => return None,
                };
                Some(plain(start, start + n - 1, Kind::TooLarge))
            }
            Op::BadRange { variant, .. } => {
                let (first, last) = self.some_fragment(i);
                Some(PutPlan {
                    header: bad_range(variant, first, last, size),
                    ..plain(first, last, Kind::BadRange)
                })
            }
            Op::WrongTotal { delta, .. } => {
                let (first, last) = self.some_fragment(i);
                let shift = u64::from(delta.unsigned_abs());
                let mut total = if delta > 0 {
                    size + shift
                } else {
                    size.saturating_sub(shift).max(last + 1)
                };
                if total == size {
                    total = size + 1;
                }
                Some(PutPlan {
                    header: Some(format!("bytes {first}-{last}/{total}")),
                    ..plain(first, last, Kind::WrongTotal)
                })
            }
            _ => None,
        }
    }

    async fn finish(&mut self, i: usize) -> Result<(), Violation> {
        let full = (self.limits.max_fragment / self.quantum() * self.quantum()).max(1);
        let bound = self.sessions[i].size() / full + 2;
        for _ in 0..bound {
            let Some((first, last)) = self.next_fragment(i, Len::Full) else {
                break;
            };
            self.put(i, first, last, Kind::Next).await?;
        }
        Ok(())
    }

    async fn open(&mut self, event: bool, extra: u64) -> Result<(), Violation> {
        let cfg = self.cfg;
        let size = (cfg.min_size + extra % (cfg.span() + 1)).max(1);
        let file = self.sessions.len() + 1;
        let collection = if event { "events" } else { "messages" };

        let url = self.url(&["me", collection]);
        let req = Outgoing::new(Method::POST, url.clone(), url.to_string())
            .bearer(&cfg.token)
            .json_body(&json!({ "subject": format!("upsession conformance, file {file}") }));
        let (step, reply) = self.send(&req).await;
        self.stats.checked(Rule::CreateSession);
        let create = |m: String| violation(Rule::CreateSession, m);
        let id = match &reply {
            Err(e) => Err(create(format!("no answer: {e}"))),
            Ok(r) if r.status != 201 => Err(create(format!(
                "creating {collection} must answer 201, got {}",
                r.brief()
            ))),
            Ok(r) => serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
                .ok_or_else(|| create(format!("the 201 answer has no string `id`: {}", r.brief()))),
        };
        let id = id.map_err(|v| self.at(step, v))?;
        let item_path = ItemPath {
            version: Version::V1,
            user: User::Me,
            kind: if event {
                ItemKind::Event
            } else {
                ItemKind::Message
            },
            id: id.clone(),
        };

        let url = self.url(&["me", collection, &id, "attachments", "createUploadSession"]);
        let item = AttachmentItem::file(format!("file-{file}.bin"), size);
        let req = Outgoing::new(Method::POST, url.clone(), url.to_string())
            .bearer(&cfg.token)
            .json_body(&item.to_request_json());
        let (step, reply) = self.send(&req).await;
        let session = match Session::open(model_now(), size, &self.limits) {
            Ok(session) => session,
            Err(e) => {
                // Not generated by the check's own strategy, but keeps the model honest.
                let expect = Expect::from_error(&e);
                let rule = Rule::CreateSession;
                let outcome = match &reply {
                    Err(err) => Err(violation(rule, format!("no answer: {err}"))),
                    Ok(r) => assess_error_only(r, &expect, rule),
                };
                return outcome.map_err(|v| self.at(step, v));
            }
        };
        let opened = match &reply {
            Err(e) => Err(create(format!("no answer: {e}"))),
            Ok(r) => self.created(r, size),
        };
        let upload_url = opened.map_err(|v| self.at(step, v))?;
        self.stats.sessions += 1;
        self.sessions.push(Model {
            file,
            data: file_data(self.case_seed, file, size),
            item: item_path,
            session,
            shown_url: redact(&upload_url, step),
            url: upload_url,
            acked: Vec::new(),
            location: None,
        });
        Ok(())
    }

    /// Checks a createUploadSession answer and returns its uploadUrl.
    fn created(&mut self, reply: &Reply, size: u64) -> Result<Url, Violation> {
        self.stats.checked(Rule::CreateSession);
        let status = shape::created(self.dialect(), &RangeSet::full(size)).status;
        if reply.status != status {
            return Err(violation(
                Rule::CreateSession,
                format!(
                    "createUploadSession must answer {status}, got {}",
                    reply.brief()
                ),
            ));
        }
        let closed = self.applies(Rule::ClosedRanges);
        if closed {
            self.stats.checked(Rule::ClosedRanges);
        }
        shape::created_json(reply, size, self.dialect(), closed)
    }

    /// `GET {uploadUrl}`. After a cut body or a concurrent `PUT` (`context`), wrong
    /// ranges break that rule; a wrong status is always `status`'s (or `cancel`'s).
    async fn status(&mut self, i: usize, context: Option<Rule>) -> Result<(), Violation> {
        let dialect = self.dialect();
        let m = &mut self.sessions[i];
        let cancelled = m.cancelled();
        let expect = match m.session.status(model_now()) {
            Ok(answer) => Expect::from_answer(answer, dialect, Via::Status),
            Err(e) => Expect::from_error(&e),
        };
        let req = self.upload_request(i, Method::GET);
        let (step, reply) = self.send(&req).await;
        let status_differs = match (&reply, &expect) {
            (Ok(r), Expect::Progress { status, .. } | Expect::Error { status, .. }) => {
                r.status != *status
            }
            _ => true,
        };
        let rule = match context {
            _ if cancelled => Rule::Cancel,
            Some(context) if !status_differs => context,
            _ => Rule::Status,
        };
        self.judge(i, step, &reply, &expect, rule)
    }

    async fn delete(&mut self, i: usize) -> Result<(), Violation> {
        let expect = match self.sessions[i].session.cancel(model_now()) {
            Ok(_closed) => Expect::Deleted,
            Err(e) => Expect::from_error(&e),
        };
        let req = self.upload_request(i, Method::DELETE);
        let (step, reply) = self.send(&req).await;
        self.judge(i, step, &reply, &expect, Rule::Cancel)
    }

    async fn length_mismatch(&mut self, i: usize, delta: i16) -> Result<(), Violation> {
        if !self.raw_ok {
            return Ok(());
        }
        let Some((first, last)) = self.next_fragment(i, Len::Full) else {
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

    async fn cut_body(&mut self, i: usize, keep: u16) -> Result<(), Violation> {
        if !self.raw_ok {
            return Ok(());
        }
        let Some((first, last)) = self.next_fragment(i, Len::Full) else {
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
        self.steps[step - 1].answer =
            Some("(not awaited: the checker closed the connection)".into());
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
        let deadline = std::time::Instant::now() + self.cfg.request_timeout;
        for attempt in 1..=BUSY_RETRIES {
            let (step, reply) = self.send(&req).await;
            let is_busy = busy(&reply).map_err(|bad| self.at(step, bad))?;
            if attempt < BUSY_RETRIES && is_busy && std::time::Instant::now() < deadline {
                self.steps[step - 1]
                    .notes
                    .push("409 while the server notices the cut connection: sent again".into());
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

    async fn concurrent(&mut self, i: usize) -> Result<(), Violation> {
        if !self.raw_ok {
            return Ok(());
        }
        let Some((first, last)) = self.next_fragment(i, Len::Full) else {
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
        let swapped = again != expect && !busy1 && !busy2 && {
            let fits = |r: &Result<Reply, String>, e: &Expect| {
                r.as_ref()
                    .is_ok_and(|reply| self.assess(i, reply, e, Rule::ConcurrentPut).is_ok())
            };
            !fits(r1, expect) && fits(r1, again) && fits(r2, expect)
        };
        // The newer request may have taken the fragment over (the new request wins):
        // then the first must show it was not stored, or get what a re-send gets.
        let (second_won, first_fits_again) = {
            let fits = |r: &Result<Reply, String>, e: &Expect| {
                r.as_ref()
                    .is_ok_and(|reply| self.assess(i, reply, e, Rule::ConcurrentPut).is_ok())
            };
            (
                !busy1 && !busy2 && r1.is_ok() && fits(r2, expect) && !fits(r1, expect),
                fits(r1, again),
            )
        };
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
                let wanted = if again == expect {
                    "the first's answer"
                } else {
                    "the answer to a re-send of it"
                };
                let outcome = match r2 {
                    Err(err) => Err(violation(Rule::ConcurrentPut, format!("no answer: {err}"))),
                    Ok(reply) => self
                        .assess(i, reply, again, Rule::ConcurrentPut)
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
                    Ok(judged) => self.apply(i, judged),
                    Err(bad) => return Err(self.at(step2, bad)),
                }
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

    async fn check_attachments(&mut self) -> Result<(), Violation> {
        for i in 0..self.sessions.len() {
            let Some(location) = self.sessions[i].location.clone() else {
                continue;
            };
            let text = format!("{}/$value", location.trim_end_matches('/'));
            let Ok(url) = Url::parse(&text) else {
                return Err(violation(
                    Rule::Completion,
                    format!("`{text}` is not a URL"),
                ));
            };
            let req = Outgoing::new(Method::GET, url, text).bearer(&self.cfg.token);
            let (step, reply) = self.send(&req).await;
            self.stats.checked(Rule::AttachmentBytes);
            let m = &self.sessions[i];
            let outcome = match &reply {
                Err(e) => Err(format!("no answer: {e}")),
                Ok(r) if r.status != 200 => Err(format!(
                    "fetching the attachment of file {} must answer 200, got {}",
                    m.file,
                    r.brief()
                )),
                Ok(r) if r.body != m.data => Err(difference(&r.body, &m.data, m.file)),
                Ok(_) => Ok(()),
            };
            if let Err(message) = outcome {
                let v = violation(Rule::AttachmentBytes, message);
                return Err(self.at(step, v));
            }
        }
        Ok(())
    }
}

fn assess_error_only(reply: &Reply, expect: &Expect, rule: Rule) -> Result<(), Violation> {
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
/// 409 that is not Graph's
/// error JSON breaks `error-shape`.
fn busy(reply: &Result<Reply, String>) -> Result<bool, Violation> {
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

fn difference(got: &[u8], want: &[u8], file: usize) -> String {
    let sha = |b: &[u8]| {
        Sha256::digest(b).iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.len().min(want.len()));
    format!(
        "the attachment of file {file} is {} bytes with SHA-256 {}, but file {file} is {} bytes \
         with SHA-256 {}; first difference at byte {first}",
        got.len(),
        sha(got),
        want.len(),
        sha(want)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;
    use upsession_core::ContentRange;

    #[test]
    fn every_bad_range_variant_is_refused_by_the_core_parser() {
        for v in 1..BAD_RANGE_VARIANTS {
            let h = bad_range(v, 0, 9, 100).unwrap();
            assert!(h.parse::<ContentRange>().is_err(), "{h} parsed");
        }
        assert_eq!(bad_range(0, 0, 9, 100), None);
    }

    #[test]
    fn redaction_keeps_parameter_names_only() {
        let url = Url::parse("http://h:1/uploads/abc?authtoken=secret").unwrap();
        assert_eq!(
            redact(&url, 2),
            "http://h:1/uploads/abc?authtoken=<from step 2>"
        );
    }

    #[test]
    fn file_data_is_reproducible() {
        assert_eq!(file_data(1, 1, 100), file_data(1, 1, 100));
        assert_ne!(file_data(1, 1, 100), file_data(1, 2, 100));
    }
}
