//! A Graph-like upload server in memory that misbehaves on purpose: the other side
//! of client conformance, and (with one [`Break`]) the proof that each server rule
//! of [`crate::server`] catches the bug it is about.
//!
//! Built on hyper 1 and the core: every range and session decision is
//! `upsession_core::session::Session`'s, every answer is rendered by
//! `upsession_core::respond` or the core's [`Dialect`]. On top of that it can
//!
//! - speak like real Graph instead of like our server ([`Quirks`]: a [`Dialect`]
//!   such as Outlook's PascalCase `ExpirationDateTime`, bare `"N"` or open `"N-"`
//!   ranges, `@odata.context`; PascalCase `NextExpectedRanges`; completion as 200 with
//!   the attachment's `id`);
//! - fail the way networks and services fail ([`Faults`]: 429/503 with `Retry-After`
//!   in seconds or as an HTTP date, 500, a connection reset mid-body, a lost answer
//!   after the fragment was stored, an expired session), scripted request by
//!   request, drawn per request from a seed ([`Faults::random`]), or from the core's
//!   seeded [`FaultPlan`] (the `upsession serve --faults` spec);
//! - break one conformance rule ([`Break`]), for the checker's own tests.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use upsession_conformance::fake::{FakeGraph, FakeOptions, Faults, Fault};
//! use upsession_core::route::ItemKind;
//!
//! let fake = FakeGraph::start(
//!     FakeOptions::default().with_faults(Faults::scripted(vec![None, Some(Fault::ResetMidBody)])),
//! )
//! .await?;
//! let message = fake.create_item(ItemKind::Message, "draft");
//! // ... point a client at fake.base_url() with fake.token() ...
//! for attachment in fake.attachments() {
//!     println!("{} holds {} bytes", attachment.id, attachment.bytes.len());
//! }
//! fake.shutdown().await;
//! # Ok(()) }
//! ```

mod handler;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use upsession_core::Dialect;
use upsession_core::fault::{self, FaultPlan, FaultRoute};
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::{Limits, Session};
use upsession_core::wire::{AttachmentItem, FileAttachment};

use crate::rule::Rule;

/// How the fake writes its answers, beyond our server's tidy form.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quirks {
    /// The core's dialect: statuses, `ExpirationDateTime` casing, range forms,
    /// `@odata.context`, `Location` style, and (OneDrive) its fragment rules.
    pub dialect: Dialect,
    /// Also `UploadUrl` and `NextExpectedRanges` in PascalCase (Outlook REST's
    /// heritage; the dialect covers `ExpirationDateTime` only).
    pub pascal_case: bool,
    /// The completing fragment is answered 200 with the attachment's JSON (an `id`)
    /// instead of 201 with a `Location`.
    pub completion_with_id: bool,
}

impl Quirks {
    /// Our server's answers.
    pub fn none() -> Self {
        Self {
            dialect: Dialect::UPSESSION,
            pascal_case: false,
            completion_with_id: false,
        }
    }

    /// Answers in `dialect`.
    pub fn dialect(dialect: Dialect) -> Self {
        Self {
            dialect,
            ..Self::none()
        }
    }

    /// Sets PascalCase property names.
    #[must_use]
    pub fn with_pascal_case(mut self, on: bool) -> Self {
        self.pascal_case = on;
        if on {
            self.dialect = self
                .dialect
                .with_casing(upsession_core::dialect::Casing::Pascal);
        }
        self
    }

    /// Sets completion as 200 with an `id`.
    #[must_use]
    pub fn with_completion_with_id(mut self, on: bool) -> Self {
        self.completion_with_id = on;
        self
    }
}

impl Default for Quirks {
    fn default() -> Self {
        Self::none()
    }
}

/// How long a throttled client is told to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAfter {
    /// `Retry-After: N` (seconds).
    Seconds(u8),
    /// `Retry-After: <HTTP date>` this many whole seconds from now (0 names the
    /// current second, which is already past: no wait).
    HttpDate(u8),
}

/// One injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// 429 (or 503 when `unavailable`) with `Retry-After`, before any body byte is read.
    Throttle {
        /// 503 `serviceNotAvailable` instead of 429 `ApplicationThrottled`.
        unavailable: bool,
        /// How the wait is written.
        retry_after: RetryAfter,
    },
    /// 500 `generalException`; nothing is applied.
    ServerError,
    /// 403 `ErrorAccessDenied`; nothing is applied.
    AccessDenied,
    /// The connection is dropped part-way through the request body; nothing is stored.
    ResetMidBody,
    /// The request is carried out (the fragment stored), then the connection is
    /// dropped without an answer.
    LoseResponse,
    /// The answer waits this long.
    Slow(Duration),
    /// The session expires just before the request.
    Expire,
}

impl Fault {
    /// Whether a correct client can still finish the upload after this fault.
    pub const fn is_recoverable(self) -> bool {
        !matches!(self, Self::Expire | Self::AccessDenied)
    }

    fn from_core(fault: fault::Fault) -> Option<Self> {
        Some(match fault {
            fault::Fault::Throttled => Self::Throttle {
                unavailable: false,
                retry_after: RetryAfter::Seconds(1),
            },
            fault::Fault::Unavailable => Self::Throttle {
                unavailable: true,
                retry_after: RetryAfter::Seconds(1),
            },
            fault::Fault::Internal => Self::ServerError,
            fault::Fault::AccessDenied => Self::AccessDenied,
            fault::Fault::Reset => Self::ResetMidBody,
            fault::Fault::Lost => Self::LoseResponse,
            fault::Fault::Slow(d) => Self::Slow(d),
            fault::Fault::Expire => Self::Expire,
            _ => return None,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Throttle {
                unavailable,
                retry_after,
            } => {
                let status = if *unavailable { 503 } else { 429 };
                match retry_after {
                    RetryAfter::Seconds(s) => write!(f, "{status} with Retry-After: {s}"),
                    RetryAfter::HttpDate(s) => {
                        write!(f, "{status} with Retry-After as an HTTP date {s} s ahead")
                    }
                }
            }
            Self::ServerError => f.write_str("500"),
            Self::AccessDenied => f.write_str("403"),
            Self::ResetMidBody => f.write_str("connection reset mid-body"),
            Self::LoseResponse => f.write_str("carried out, answer lost"),
            Self::Slow(d) => write!(f, "answer delayed {} ms", d.as_millis()),
            Self::Expire => f.write_str("session expired first"),
        }
    }
}

/// Which requests fail, and how.
///
/// Faults apply to the upload-session requests (createUploadSession and every
/// request to an uploadUrl). A scripted schedule gives the `n`-th such request
/// `schedule[n]`; past its end, the seeded random faults or the plan (if any)
/// decide per request.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    schedule: Vec<Option<Fault>>,
    plan: Option<FaultPlan>,
    random: Option<RandomFaults>,
}

/// Faults drawn per request with one probability from a seeded generator.
#[derive(Clone, Debug)]
struct RandomFaults {
    rng: fastrand::Rng,
    probability: f64,
}

impl RandomFaults {
    /// A fault with the probability, of a kind weighted as real trouble comes: mostly
    /// throttling (with waits of 0 or 1 s, in seconds or as an HTTP date), resets,
    /// lost answers and 500s, rarely an expired session.
    fn draw(&mut self) -> Option<Fault> {
        if self.rng.f64() >= self.probability {
            return None;
        }
        let retry_after = match self.rng.u8(0..18) {
            0..12 => RetryAfter::Seconds(0),
            12 => RetryAfter::Seconds(1),
            13..17 => RetryAfter::HttpDate(0),
            _ => RetryAfter::HttpDate(1),
        };
        Some(match self.rng.u8(0..14) {
            0..4 => Fault::Throttle {
                unavailable: self.rng.bool(),
                retry_after,
            },
            4..7 => Fault::ServerError,
            7..10 => Fault::ResetMidBody,
            10..13 => Fault::LoseResponse,
            _ => Fault::Expire,
        })
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// The `n`-th upload-session request gets `schedule[n]`.
    pub fn scripted(schedule: Vec<Option<Fault>>) -> Self {
        Self {
            schedule,
            ..Self::default()
        }
    }

    /// Faults drawn per request from the core's seeded plan, the same spec as
    /// `upsession serve --faults` (e.g. `seed=5,put:503:0.2,put:lost:0.1`).
    pub fn plan(plan: FaultPlan) -> Self {
        Self {
            plan: Some(plan),
            ..Self::default()
        }
    }

    /// Each upload-session request fails with `probability`, the fault drawn from a
    /// generator seeded with `seed`: 429/503 (`Retry-After` of 0 or 1 s, in seconds
    /// or as an HTTP date), 500, a reset mid-body, a lost answer, rarely an expired
    /// session.
    pub fn random(seed: u64, probability: f64) -> Self {
        Self {
            random: Some(RandomFaults {
                rng: fastrand::Rng::with_seed(seed),
                probability: probability.clamp(0.0, 1.0),
            }),
            ..Self::default()
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &[Option<Fault>] {
        &self.schedule
    }
}

/// A deliberate bug, one per server rule, for the checker's own tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Break {
    /// createUploadSession answers 200 instead of 201.
    CreateAnswers200,
    /// Fragments that do not complete the file are answered 200 but not counted.
    DropsFragments,
    /// Intermediate 200 answers carry an `id`.
    IdInProgress,
    /// `nextExpectedRanges` written `"N-"`.
    OpenRanges,
    /// The completing fragment is answered 200 with an `id` (no `Location`).
    CompletionAs200,
    /// An exact re-send of received bytes is refused 416 (OneDrive's rule).
    ResendIs416,
    /// The final fragment re-sent after completion is answered 200 without a `Location`.
    FinalResendIs200,
    /// A fragment that skips ahead is answered 200 (and ignored).
    AcceptsSkip,
    /// A partly overlapping fragment is trimmed to its new bytes and stored.
    TrimsOverlap,
    /// Fragments of any length are taken.
    NoFragmentLimit,
    /// Fragments that are not a multiple of the dialect's quantum are taken (only a
    /// bug in a dialect that has one: run the fake and the check with
    /// `Dialect::ONEDRIVE`).
    TakesOddFragments,
    /// `bytes=a-b/t` and doubled spaces in `Content-Range` are accepted.
    LenientRange,
    /// A `Content-Range` total is ignored.
    IgnoresTotal,
    /// `Content-Length` is ignored; a longer body is cut to the range.
    IgnoresContentLength,
    /// A fragment is counted before its body has arrived.
    CountsBeforeBody,
    /// `GET {uploadUrl}` of a completed session answers 404 (as real Graph forgets it).
    ForgetsCompleted,
    /// `DELETE {uploadUrl}` answers 200 with a JSON body.
    DeleteAnswers200,
    /// A second concurrent fragment (refused, or taken over by a newer one) is
    /// answered 500 instead of 409.
    BusyIs500,
    /// The last byte of each fragment is not stored (an inclusive-range slip).
    DropsLastByte,
    /// Errors are plain text instead of Graph's JSON.
    PlainTextErrors,
}

impl Break {
    /// Every break.
    pub const ALL: &'static [Self] = &[
        Self::CreateAnswers200,
        Self::DropsFragments,
        Self::IdInProgress,
        Self::OpenRanges,
        Self::CompletionAs200,
        Self::ResendIs416,
        Self::FinalResendIs200,
        Self::AcceptsSkip,
        Self::TrimsOverlap,
        Self::NoFragmentLimit,
        Self::TakesOddFragments,
        Self::LenientRange,
        Self::IgnoresTotal,
        Self::IgnoresContentLength,
        Self::CountsBeforeBody,
        Self::ForgetsCompleted,
        Self::DeleteAnswers200,
        Self::BusyIs500,
        Self::DropsLastByte,
        Self::PlainTextErrors,
    ];

    /// The server rule this break violates.
    pub const fn rule(self) -> Rule {
        match self {
            Self::CreateAnswers200 => Rule::CreateSession,
            Self::DropsFragments => Rule::NextFragment,
            Self::IdInProgress => Rule::ProgressShape,
            Self::OpenRanges => Rule::ClosedRanges,
            Self::CompletionAs200 => Rule::Completion,
            Self::ResendIs416 => Rule::Replay,
            Self::FinalResendIs200 => Rule::FinalReplay,
            Self::AcceptsSkip => Rule::OutOfOrder,
            Self::TrimsOverlap => Rule::Overlap,
            Self::NoFragmentLimit => Rule::FragmentTooLarge,
            Self::TakesOddFragments => Rule::FragmentMultiple,
            Self::LenientRange => Rule::InvalidRange,
            Self::IgnoresTotal => Rule::TotalMismatch,
            Self::IgnoresContentLength => Rule::LengthMismatch,
            Self::CountsBeforeBody => Rule::IncompleteBody,
            Self::ForgetsCompleted => Rule::Status,
            Self::DeleteAnswers200 => Rule::Cancel,
            Self::BusyIs500 => Rule::ConcurrentPut,
            Self::DropsLastByte => Rule::AttachmentBytes,
            Self::PlainTextErrors => Rule::ErrorShape,
        }
    }
}

/// How to start a [`FakeGraph`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FakeOptions {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// The bearer token Graph routes accept.
    pub token: String,
    /// Session limits (default: files of 1 byte to 150 MB, fragments up to 4 MiB).
    pub limits: Limits,
    /// How answers are written.
    pub quirks: Quirks,
    /// Which requests fail.
    pub faults: Faults,
    /// Deliberate bugs.
    pub breaks: Vec<Break>,
    /// Seed of the ids and credentials the fake makes.
    pub seed: u64,
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "fake-token".into(),
            limits: Limits::default().with_min_size(1),
            quirks: Quirks::none(),
            faults: Faults::none(),
            breaks: Vec::new(),
            seed: 0,
        }
    }
}

impl FakeOptions {
    /// Sets the listen address.
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the accepted bearer token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Sets the session limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how answers are written.
    #[must_use]
    pub fn with_quirks(mut self, quirks: Quirks) -> Self {
        self.quirks = quirks;
        self
    }

    /// Sets which requests fail.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Adds a deliberate bug.
    #[must_use]
    pub fn with_break(mut self, bug: Break) -> Self {
        self.breaks.push(bug);
        self
    }

    /// Sets the seed of ids and credentials.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A finished attachment the fake holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredAttachment {
    /// The attachment id.
    pub id: String,
    /// The message or event it belongs to.
    pub item_id: String,
    /// Its name.
    pub name: String,
    /// The `Location` the completing answer gave (or would have given).
    pub location: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// One request the fake saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// `PUT`, `GET`, …
    pub method: String,
    /// The path, with an uploadUrl's credential replaced by `<credential>`.
    pub target: String,
    /// The `Content-Range`, if any.
    pub content_range: Option<String>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// The status answered; `None` when the connection was dropped instead.
    pub status: Option<u16>,
}

impl fmt::Display for LoggedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(range) = &self.content_range {
            write!(f, " (Content-Range: {range})")?;
        }
        if let Some(fault) = &self.fault {
            write!(f, " [fault: {fault}]")?;
        }
        match self.status {
            Some(status) => write!(f, " => {status}"),
            None => f.write_str(" => connection dropped, no answer"),
        }
    }
}

struct Item {
    path: ItemPath,
    subject: String,
    created: SystemTime,
    attachments: Vec<String>,
}

struct FakeSession {
    session: Session,
    item: ItemPath,
    attachment_id: String,
    attachment: AttachmentItem,
    credential: String,
    bytes: Vec<u8>,
}

struct State {
    rng: fastrand::Rng,
    counter: u64,
    items: HashMap<String, Item>,
    sessions: HashMap<String, FakeSession>,
    attachments: Vec<StoredAttachment>,
    meta: HashMap<String, FileAttachment>,
    faults: Faults,
    eligible: usize,
    log: Vec<LoggedRequest>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}-{:08x}", self.counter, self.rng.u32(..))
    }

    fn next_fault(&mut self, route: FaultRoute) -> Option<Fault> {
        if matches!(
            route,
            FaultRoute::Create | FaultRoute::Put | FaultRoute::Status | FaultRoute::Cancel
        ) {
            let n = self.eligible;
            self.eligible += 1;
            if let Some(fault) = self.faults.schedule.get(n) {
                return *fault;
            }
        }
        if let Some(random) = self.faults.random.as_mut() {
            return random.draw();
        }
        let plan = self.faults.plan.as_mut()?;
        plan.decide(route).and_then(Fault::from_core)
    }
}

pub(crate) struct Shared {
    options: FakeOptions,
    public_url: String,
    state: Mutex<State>,
    /// Numbers the `request-id`s of error answers.
    requests: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn breaks(&self, bug: Break) -> bool {
        self.options.breaks.contains(&bug)
    }
}

/// The fake server. See [`FakeGraph::start`] and the [module documentation](self).
#[derive(Debug)]
pub struct FakeGraph;

/// A started fake: its address, what it holds, and the handle to stop it. Dropping
/// it stops the server too.
pub struct RunningFake {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningFake")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FakeGraph {
    /// Binds and starts serving in the background (on the current tokio runtime).
    pub async fn start(options: FakeOptions) -> std::io::Result<RunningFake> {
        let listener = TcpListener::bind(options.listen).await?;
        let local_addr = listener.local_addr()?;
        let state = State {
            rng: fastrand::Rng::with_seed(options.seed),
            counter: 0,
            items: HashMap::new(),
            sessions: HashMap::new(),
            attachments: Vec::new(),
            meta: HashMap::new(),
            faults: options.faults.clone(),
            eligible: 0,
            log: Vec::new(),
        };
        let shared = Arc::new(Shared {
            options,
            public_url: format!("http://{local_addr}"),
            state: Mutex::new(state),
            requests: std::sync::atomic::AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(RunningFake {
            shared,
            local_addr,
            task: Some(task),
        })
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |req| handler::handle(Arc::clone(&shared), req));
                    // A dropped connection (a fault, or the client) ends here; nothing to report.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

impl RunningFake {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Graph base URL: `http://127.0.0.1:PORT/v1.0`.
    pub fn base_url(&self) -> String {
        format!("{}/v1.0", self.shared.public_url)
    }

    /// The bearer token it accepts.
    pub fn token(&self) -> &str {
        &self.shared.options.token
    }

    /// Creates a draft message or an event directly (no request, no fault) and
    /// returns its id.
    pub fn create_item(&self, kind: ItemKind, subject: &str) -> String {
        let mut state = self.shared.state();
        let id = state.id("AAMk-item");
        let path = ItemPath {
            version: Version::V1,
            user: User::Me,
            kind,
            id: id.clone(),
        };
        state.items.insert(
            id.clone(),
            Item {
                path,
                subject: subject.to_owned(),
                created: SystemTime::now(),
                attachments: Vec::new(),
            },
        );
        id
    }

    /// The finished attachments, in the order they completed.
    pub fn attachments(&self) -> Vec<StoredAttachment> {
        self.shared.state().attachments.clone()
    }

    /// The bytes of attachment `id`, if it exists.
    pub fn stored(&self, id: &str) -> Option<Vec<u8>> {
        self.shared
            .state()
            .attachments
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.bytes.clone())
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared.state().log.clone()
    }

    /// The faults injected so far, in order.
    pub fn faults_fired(&self) -> Vec<Fault> {
        self.shared
            .state()
            .log
            .iter()
            .filter_map(|r| r.fault)
            .collect()
    }

    /// Stops serving and drops every connection.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for RunningFake {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
