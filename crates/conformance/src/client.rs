//! Client conformance: the caller's upload code against a [`FakeGraph`] that answers
//! like real Graph and fails like a real network.
//!
//! Each generated case is a file size, a fragment-size hint, a set of [`Quirks`]
//! (Outlook's PascalCase, bare `"N"` and open `"N-"` ranges, `@odata.context`, 200 on
//! creation, 202 per fragment, completion as 200 with an `id`, Outlook REST
//! `Location`s) and a scripted schedule of [`Fault`]s (429/503 with `Retry-After` in
//! seconds or as an HTTP date, 500, a connection reset mid-body, a lost answer after
//! the fragment was stored, an expired session). For each case a fresh fake is
//! started, a draft message is made on it, the file is written to a temporary
//! directory, and the caller's closure uploads it. Then the outcome is judged:
//!
//! - success claimed ⇒ the fake holds exactly one finished attachment on the
//!   message, with exactly the file's bytes, and the id or `Location` the client
//!   reported is that attachment's ([`Rule::ClientSuccessIsComplete`],
//!   [`Rule::ClientReportsAttachment`]);
//! - failure claimed ⇒ it says why ([`Rule::ClientFailureIsClear`]), and only when a
//!   fault made the upload impossible (an expired session) ([`Rule::ClientCompletes`]);
//! - either within the case's time limit ([`Rule::ClientFinishes`]).
//!
//! Never a silent incomplete upload. On a failure the case is shrunk and the
//! [`Failure`] shows the case and every request the fake saw.
//!
//! ```no_run
//! # async fn run() {
//! use upsession_conformance::client::{self, ClientReport, Config, Target};
//!
//! let report = client::check(&Config::default(), |target: Target| async move {
//!     // Upload target.file to target.message_id at target.base_url with target.token,
//!     // using fragments of target.fragment_size bytes if the client lets you choose.
//!     Ok::<_, String>(ClientReport { location: None, attachment_id: None })
//! })
//! .await;
//! # }
//! ```

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};
use upsession_core::Dialect;
use upsession_core::Limits;
use upsession_core::dialect::{LocationStyle, RangeForm};
use upsession_core::route::ItemKind;

use crate::fake::{FakeGraph, FakeOptions, Fault, Faults, Quirks, RetryAfter, StoredAttachment};
use crate::outcome::{Failure, Report};
use crate::rule::Rule;
use crate::runner::{self, CaseFailure, cases_from_env, mix, seed_from_env};

/// The default number of cases.
pub const DEFAULT_CASES: u32 = 500;

/// What to check and how hard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Cases to run (default 500; `UPSESSION_CONFORMANCE_CASES` overrides the default).
    pub cases: u32,
    /// The seed of the run; random when `None` (`UPSESSION_CONFORMANCE_SEED` sets it).
    pub seed: Option<u64>,
    /// Smallest file.
    pub min_size: u64,
    /// Largest file.
    pub max_size: u64,
    /// The fragment sizes a case suggests to the client ([`Target::fragment_size`]).
    pub fragment_sizes: Vec<u64>,
    /// Inject faults.
    pub faults: bool,
    /// Answer with Graph's quirks.
    pub quirks: bool,
    /// Longest a client may take for one case.
    pub case_timeout: Duration,
    /// Most extra runs spent shrinking a failing case.
    pub max_shrink_iters: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cases: cases_from_env(DEFAULT_CASES),
            seed: seed_from_env(),
            min_size: 1,
            max_size: 12_000,
            fragment_sizes: vec![1024, 2048, 4096, 8192],
            faults: true,
            quirks: true,
            case_timeout: Duration::from_secs(60),
            max_shrink_iters: 128,
        }
    }
}

impl Config {
    crate::runner::run_setters!();

    upsession_core::setters! {
        /// Sets the file sizes.
        with_sizes(min_size: u64, max_size: u64);
    }

    upsession_core::setters! {
        /// Sets the suggested fragment sizes.
        with_fragment_sizes(fragment_sizes: Vec<u64>);
        /// Turns fault injection on or off.
        with_faults(faults: bool);
        /// Turns Graph's quirks on or off.
        with_quirks(quirks: bool);
        /// Sets the longest a client may take for one case.
        with_case_timeout(case_timeout: Duration);
    }
}

/// What the client under test is asked to do in one case.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// The Graph base URL, e.g. `http://127.0.0.1:PORT/v1.0`.
    pub base_url: String,
    /// The bearer token.
    pub token: String,
    /// The draft message to attach the file to (`/me/messages/{message_id}`).
    pub message_id: String,
    /// The file to upload.
    pub file: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The fragment size to use, for clients that can be told (several fragments
    /// per file exercise more); the fake accepts up to 4 MiB.
    pub fragment_size: u64,
}

impl Target {
    /// A target made by hand, e.g. to run an upload closure outside the check.
    pub fn new(
        base_url: impl Into<String>,
        token: impl Into<String>,
        message_id: impl Into<String>,
        file: impl Into<PathBuf>,
        size: u64,
        fragment_size: u64,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            token: token.into(),
            message_id: message_id.into(),
            file: file.into(),
            size,
            fragment_size,
        }
    }
}

/// What the client says it made, on success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// The `Location` of the attachment, if the client knows it.
    pub location: Option<String>,
    /// The attachment's id, if the client knows it.
    pub attachment_id: Option<String>,
}

/// The quirks of one case, as plain data that shrinks to "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // independent quirks, each on or off, not a state
struct QuirkSet {
    pascal: bool,
    created_ranges: RangeForm,
    ranges: RangeForm,
    odata: bool,
    create_200: bool,
    progress_202: bool,
    completion_with_id: bool,
    outlook_location: bool,
}

impl QuirkSet {
    const NONE: Self = Self {
        pascal: false,
        created_ranges: RangeForm::Closed,
        ranges: RangeForm::Closed,
        odata: false,
        create_200: false,
        progress_202: false,
        completion_with_id: false,
        outlook_location: false,
    };

    fn quirks(self) -> Quirks {
        let mut dialect = Dialect::UPSESSION;
        dialect.created_ranges = self.created_ranges;
        dialect.ranges = self.ranges;
        dialect.odata_context = self.odata;
        if self.create_200 {
            dialect.create_status = http::StatusCode::OK;
        }
        if self.progress_202 {
            dialect.progress_status = http::StatusCode::ACCEPTED;
        }
        if self.outlook_location {
            dialect.location = LocationStyle::OutlookRest;
        }
        Quirks::dialect(dialect)
            .with_pascal_case(self.pascal)
            .with_completion_with_id(self.completion_with_id)
    }

    fn describe(self) -> String {
        if self == Self::NONE {
            return "none".into();
        }
        let mut parts = Vec::new();
        if self.pascal {
            parts.push("PascalCase properties".to_owned());
        }
        if self.created_ranges != RangeForm::Closed {
            parts.push(format!("{:?} ranges on creation", self.created_ranges));
        }
        if self.ranges != RangeForm::Closed {
            parts.push(format!("{:?} ranges after fragments", self.ranges));
        }
        if self.odata {
            parts.push("@odata.context".into());
        }
        if self.create_200 {
            parts.push("createUploadSession answers 200".into());
        }
        if self.progress_202 {
            parts.push("fragments answered 202".into());
        }
        if self.completion_with_id {
            parts.push("completion as 200 with an id".into());
        }
        if self.outlook_location {
            parts.push("Outlook REST Location".into());
        }
        parts.join(", ")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Case {
    size: u64,
    fragment: u64,
    quirks: QuirkSet,
    schedule: Vec<Option<Fault>>,
}

fn range_form() -> impl Strategy<Value = RangeForm, Tree: Send> {
    prop_oneof![
        Just(RangeForm::Closed),
        Just(RangeForm::Open),
        Just(RangeForm::Bare)
    ]
}

fn quirk_set(on: bool) -> impl Strategy<Value = QuirkSet, Tree: Send> {
    (
        any::<bool>(),
        range_form(),
        range_form(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |q| {
            if !on {
                return QuirkSet::NONE;
            }
            QuirkSet {
                pascal: q.0,
                created_ranges: q.1,
                ranges: q.2,
                odata: q.3,
                create_200: q.4,
                progress_202: q.5,
                completion_with_id: q.6,
                outlook_location: q.7,
            }
        })
}

fn fault() -> impl Strategy<Value = Fault, Tree: Send> {
    let retry_after = prop_oneof![
        12 => Just(RetryAfter::Seconds(0)),
        1 => Just(RetryAfter::Seconds(1)),
        4 => Just(RetryAfter::HttpDate(0)),
        1 => Just(RetryAfter::HttpDate(1)),
    ];
    prop_oneof![
        4 => (any::<bool>(), retry_after).prop_map(|(unavailable, retry_after)| Fault::Throttle { unavailable, retry_after }),
        3 => Just(Fault::ServerError),
        3 => Just(Fault::ResetMidBody),
        3 => Just(Fault::LoseResponse),
        1 => Just(Fault::Expire),
    ]
}

fn schedule(on: bool) -> impl Strategy<Value = Vec<Option<Fault>>, Tree: Send> {
    let most = if on { 32 } else { 0 };
    proptest::collection::vec(
        prop_oneof![85 => Just(None), 15 => fault().prop_map(Some)],
        0..=most,
    )
}

fn cases(config: &Config) -> impl Strategy<Value = Case, Tree: Send> {
    let sizes = if config.fragment_sizes.is_empty() {
        vec![4 * 1024 * 1024]
    } else {
        config.fragment_sizes.clone()
    };
    let (min, max) = (
        config.min_size.max(1),
        config.max_size.max(config.min_size.max(1)),
    );
    (
        min..=max,
        proptest::sample::select(sizes),
        quirk_set(config.quirks),
        schedule(config.faults),
    )
        .prop_map(|(size, fragment, quirks, schedule)| Case {
            size,
            fragment,
            quirks,
            schedule,
        })
}

/// Runs the check: `upload` is called once per case (and again while shrinking a
/// failure) and returns the client's verdict. See the [module documentation](self).
pub async fn check<F, Fut>(config: &Config, upload: F) -> Result<Report, Failure>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<ClientReport, String>>,
{
    let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
    let strategy = cases(config);
    let upload = &upload;
    runner::run(
        &strategy,
        config.cases,
        seed,
        config.max_shrink_iters,
        |case, case_seed| async move { run_case(config, upload, &case, case_seed).await },
    )
    .await
}

fn harness(message: String) -> CaseFailure {
    CaseFailure {
        rule: Rule::Harness,
        message,
        script: String::new(),
    }
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

async fn run_case<F, Fut>(
    config: &Config,
    upload: &F,
    case: &Case,
    case_seed: u64,
) -> (Report, Result<(), CaseFailure>)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<ClientReport, String>>,
{
    let mut stats = Report::default();
    let limits = Limits::default()
        .with_min_size(1)
        .with_max_size(case.size.max(150_000_000));
    let options = FakeOptions::default()
        .with_limits(limits)
        .with_quirks(case.quirks.quirks())
        .with_faults(Faults::scripted(case.schedule.clone()))
        .with_seed(case_seed);
    let fake = match FakeGraph::start(options).await {
        Ok(fake) => fake,
        Err(e) => {
            return (
                stats,
                Err(harness(format!("cannot start the fake Graph: {e}"))),
            );
        }
    };
    let message_id = fake.create_item(ItemKind::Message, "upsession client conformance");
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return (
                stats,
                Err(harness(format!("cannot make a temporary directory: {e}"))),
            );
        }
    };
    let mut data = vec![0u8; usize::try_from(case.size).unwrap_or(0)];
    fastrand::Rng::with_seed(mix(case_seed)).fill(&mut data);
    let file = dir.path().join(format!("upload-{}.bin", case.size));
    if let Err(e) = tokio::fs::write(&file, &data).await {
        return (
            stats,
            Err(harness(format!("cannot write the file to upload: {e}"))),
        );
    }
    let target = Target {
        base_url: fake.base_url(),
        token: fake.token().to_owned(),
        message_id: message_id.clone(),
        file,
        size: case.size,
        fragment_size: case.fragment,
    };
    let outcome = tokio::time::timeout(config.case_timeout, upload(target)).await;
    let log = fake.log();
    let attachments: Vec<StoredAttachment> = fake
        .attachments()
        .into_iter()
        .filter(|a| a.item_id == message_id)
        .collect();
    fake.shutdown().await;
    drop(dir);

    stats.requests = log.len() as u64;
    stats.sessions = log
        .iter()
        .filter(|r| r.target.ends_with("createUploadSession") && r.status.is_some_and(|s| s < 300))
        .count() as u64;
    stats.bytes = case.size;
    let excused = log
        .iter()
        .filter_map(|r| r.fault)
        .any(|f| !f.is_recoverable());

    let verdict = judge(config, &outcome, &attachments, &data, excused, &mut stats);
    let result = verdict.map_err(|(rule, message)| CaseFailure {
        rule,
        message,
        script: script(case, case_seed, &outcome, &log, &attachments),
    });
    (stats, result)
}

/// The verdict on one case's outcome.
fn judge(
    config: &Config,
    outcome: &Result<Result<ClientReport, String>, tokio::time::error::Elapsed>,
    attachments: &[StoredAttachment],
    data: &[u8],
    excused: bool,
    stats: &mut Report,
) -> Result<(), (Rule, String)> {
    match outcome {
        Err(_) => {
            stats.checked(Rule::ClientFinishes);
            Err((
                Rule::ClientFinishes,
                format!("the client did not return within {:?}", config.case_timeout),
            ))
        }
        Ok(Ok(report)) => {
            stats.completed += 1;
            stats.checked(Rule::ClientFinishes);
            stats.checked(Rule::ClientSuccessIsComplete);
            judge_success(report, attachments, data, stats)
        }
        Ok(Err(message)) => {
            stats.declined += 1;
            stats.checked(Rule::ClientFinishes);
            stats.checked(Rule::ClientFailureIsClear);
            stats.checked(Rule::ClientCompletes);
            if message.trim().is_empty() {
                Err((
                    Rule::ClientFailureIsClear,
                    "the client reported failure without saying why".into(),
                ))
            } else if excused {
                Ok(())
            } else {
                Err((
                    Rule::ClientCompletes,
                    format!(
                        "the client gave up (\"{message}\") although every injected fault was recoverable"
                    ),
                ))
            }
        }
    }
}

fn judge_success(
    report: &ClientReport,
    attachments: &[StoredAttachment],
    data: &[u8],
    stats: &mut Report,
) -> Result<(), (Rule, String)> {
    let success = Rule::ClientSuccessIsComplete;
    match attachments {
        [] => Err((
            success,
            "the client reported success, but the server holds no finished attachment on the message".into(),
        )),
        [one] if one.bytes != data => Err((
            success,
            format!(
                "the client reported success, but the attachment holds {} bytes with SHA-256 {} \
                 where the file has {} bytes with SHA-256 {}",
                one.bytes.len(),
                sha(&one.bytes),
                data.len(),
                sha(data)
            ),
        )),
        [one] => {
            stats.checked(Rule::ClientReportsAttachment);
            if let Some(id) = &report.attachment_id
                && *id != one.id
            {
                return Err((
                    Rule::ClientReportsAttachment,
                    format!("the client reported attachment `{id}`, but the server made `{}`", one.id),
                ));
            }
            if let Some(location) = &report.location
                && *location != one.location
            {
                return Err((
                    Rule::ClientReportsAttachment,
                    format!(
                        "the client reported Location `{location}`, but the attachment is at `{}`",
                        one.location
                    ),
                ));
            }
            Ok(())
        }
        many => Err((
            success,
            format!(
                "{} finished attachments on the message; one upload must make exactly one",
                many.len()
            ),
        )),
    }
}

fn script(
    case: &Case,
    case_seed: u64,
    outcome: &Result<Result<ClientReport, String>, tokio::time::error::Elapsed>,
    log: &[crate::fake::LoggedRequest],
    attachments: &[StoredAttachment],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# client case: a {}-byte file (generated from case seed {case_seed}), fragment size {}",
        case.size, case.fragment
    );
    let _ = writeln!(out, "# quirks: {}", case.quirks.describe());
    let faults: Vec<String> = case
        .schedule
        .iter()
        .enumerate()
        .filter_map(|(n, f)| f.map(|f| format!("#{} {f}", n + 1)))
        .collect();
    let _ = writeln!(
        out,
        "# faults by upload-session request: {}",
        if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        }
    );
    let _ = match outcome {
        Err(_) => writeln!(out, "# the client did not return in time"),
        Ok(Ok(report)) => writeln!(
            out,
            "# the client reported success: location {:?}, attachment id {:?}",
            report.location, report.attachment_id
        ),
        Ok(Err(message)) => writeln!(out, "# the client reported failure: {message:?}"),
    };
    let _ = writeln!(out, "# what the fake Graph saw:");
    for (n, request) in log.iter().enumerate() {
        let _ = writeln!(out, "{:>3}  {request}", n + 1);
    }
    if attachments.is_empty() {
        let _ = writeln!(out, "# finished attachments on the message: none");
    }
    for a in attachments {
        let _ = writeln!(
            out,
            "# finished attachment {}: {} bytes, SHA-256 {}, at {}",
            a.id,
            a.bytes.len(),
            sha(&a.bytes),
            a.location
        );
    }
    out
}
