//! A Graph-like upload server in memory that misbehaves on purpose: the other side
//! of client conformance, and (with one [`Break`]) the proof that each server rule
//! of [`crate::server`] catches the bug it is about.
//!
//! Built on hyper 1 and the core: every range and session decision is
//! `upsession_core::session::Session`'s, every answer is rendered by
//! `upsession_core::respond` or the core's [`Dialect`](upsession_core::Dialect). On
//! top of that it can
//!
//! - speak like real Graph instead of like our server ([`Quirks`]: a dialect such
//!   as Outlook's PascalCase `ExpirationDateTime`, bare `"N"` or open `"N-"` ranges,
//!   `@odata.context`; PascalCase everywhere; completion as 200 with the
//!   attachment's `id`, or as 201 with the attachment's JSON);
//! - fail the way networks and services fail ([`Faults`]: 429/503 with `Retry-After`
//!   in seconds or as an HTTP date, 500, 403, 413, a connection reset mid-body, a
//!   lost answer after the fragment was stored, a stall, an expired session, a
//!   redirect to another host, ranges that forget stored bytes or claim unsent
//!   ones), scripted request by request or by method and number
//!   ([`Faults::on_nth`], also while it runs: [`RunningFake::inject`]), drawn per
//!   request from a seed ([`Faults::random`]), or from the core's seeded
//!   [`FaultPlan`](upsession_core::fault::FaultPlan) (the `upsession serve --faults`
//!   spec);
//! - break one conformance rule ([`Break`]), for the checker's own tests;
//! - tell what it saw: every request as it arrived (with its `Authorization` and
//!   query), requests per method, the most answered at once, the attachments.
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

mod breaks;
mod faults;
mod handler;
mod quirks;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::Method;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use upsession_core::route::{ItemKind, ItemPath, User, Version};
use upsession_core::session::{Limits, Session};
use upsession_core::wire::{AttachmentItem, FileAttachment};

pub use breaks::Break;
pub use faults::{Fault, Faults, RetryAfter};
pub use quirks::Quirks;

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
    upsession_core::setters! {
        /// Sets the listen address.
        with_listen(listen: SocketAddr);
        /// Sets the accepted bearer token.
        with_token(token: impl Into<String>) => token = token.into();
    }

    upsession_core::setters! {
        /// Sets the session limits.
        with_limits(limits: Limits);
        /// Sets how answers are written.
        with_quirks(quirks: Quirks);
        /// Sets which requests fail.
        with_faults(faults: Faults);
    }

    /// Adds a deliberate bug.
    #[must_use]
    pub fn with_break(mut self, bug: Break) -> Self {
        self.breaks.push(bug);
        self
    }

    upsession_core::setters! {
        /// Sets the seed of ids and credentials.
        with_seed(seed: u64);
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
    /// The `AttachmentItem` createUploadSession described it with (name, size, content
    /// type, inline, content id).
    pub attachment_item: AttachmentItem,
}

/// One request the fake saw, logged as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedRequest {
    /// `PUT`, `GET`, …
    pub method: String,
    /// The path, with an uploadUrl's credential replaced by `<credential>`.
    pub target: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The query as sent: an uploadUrl's credential, in the clear.
    pub query: Option<String>,
    /// Whether it went to an uploadUrl (where no token belongs).
    pub to_upload_url: bool,
    /// The `Authorization` header, in the clear.
    pub authorization: Option<String>,
    /// The `Content-Range`, if any.
    pub content_range: Option<String>,
    /// The `Content-Length`, if any.
    pub content_length: Option<String>,
    /// The `Transfer-Encoding`, if any.
    pub transfer_encoding: Option<String>,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// The status answered; `None` when the connection was dropped instead, or the
    /// answer is still to come.
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
    log: Vec<LoggedRequest>,
    /// Requests per method, counted as they arrive.
    arrived: HashMap<Method, usize>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}-{:08x}", self.counter, self.rng.u32(..))
    }

    fn add_item(&mut self, path: ItemPath, subject: String, created: SystemTime) {
        let item = Item {
            path,
            subject,
            created,
            attachments: Vec::new(),
        };
        self.items.insert(item.path.id.clone(), item);
    }
}

pub(crate) struct Shared {
    options: FakeOptions,
    local_addr: SocketAddr,
    public_url: String,
    state: Mutex<State>,
    /// Numbers the `request-id`s of error answers.
    requests: AtomicU64,
    /// Woken at each arrival, for [`RunningFake::wait_for_requests`].
    arrival: Notify,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
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
            log: Vec::new(),
            arrived: HashMap::new(),
        };
        let shared = Arc::new(Shared {
            options,
            local_addr,
            public_url: format!("http://{local_addr}"),
            state: Mutex::new(state),
            requests: AtomicU64::new(0),
            arrival: Notify::new(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
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

    /// The origin: `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.shared.public_url
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
        let id = self.shared.state().id("AAMk-item");
        self.create_item_with_id(kind, &id, subject);
        id
    }

    /// Creates a draft message or an event with the id `id` (any text; a path names
    /// it percent-encoded), replacing one of that id.
    pub fn create_item_with_id(&self, kind: ItemKind, id: &str, subject: &str) {
        let path = ItemPath {
            version: Version::V1,
            user: User::Me,
            kind,
            id: id.to_owned(),
        };
        let mut state = self.shared.state();
        state.add_item(path, subject.to_owned(), SystemTime::now());
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

    /// Every request so far, in the order they arrived; the ones still being
    /// answered have no status yet.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared.state().log.clone()
    }

    /// How many requests with `method` have arrived, answered or not.
    pub fn count(&self, method: &Method) -> usize {
        self.shared
            .state()
            .arrived
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` requests with `method` have arrived (wrap it in a timeout).
    pub async fn wait_for_requests(&self, method: &Method, n: usize) {
        loop {
            // Registered before the check, so an arrival in between still wakes it.
            let arrival = self.shared.arrival.notified();
            if self.count(method) >= n {
                return;
            }
            arrival.await;
        }
    }

    /// The most requests the fake was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Gives the `n`-th request with `method` (counted from 1 since the start, over
    /// every route) `fault`, as [`Faults::on_nth`] does before the start. A number
    /// already reached never comes again.
    pub fn inject(&self, method: Method, n: usize, fault: Fault) {
        self.shared.state().faults.insert_nth(method, n, fault);
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
