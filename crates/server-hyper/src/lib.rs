//! A Microsoft Graph-compatible upload-session server on hyper, durable on local disk.
//!
//! It serves the routes of Graph's `attachment: createUploadSession` flow (drafts
//! and events, upload sessions, fragment `PUT`s, status, cancel, attachment listing
//! and download) under `/v1.0` and `/beta`, for `/me` and `/users/{id}`. Every
//! decision about ranges, sessions and errors is `upsession-core`'s; this crate moves
//! bytes between sockets and disk, keeps the time, and persists state so that a
//! fragment answered 2xx survives a crash.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use upsession_server_hyper::{Config, Server};
//!
//! let config = Config::new("/var/lib/upsession").with_token("s3cret");
//! let running = Server::start(config).await?;
//! println!("listening on {}", running.base_url());
//! running.wait_for_signal().await; // until Ctrl-C or SIGTERM, then drains in-flight requests
//! # Ok(()) }
//! ```

mod app;
mod config;
mod metrics;
mod store;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{Config, Fsync, Storage, Tls};

use app::{App, PublicUrl};
use store::pg::Postgres;
use store::s3::S3;
use store::{BlobStore, Disk, MetaStore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened or read.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared store (`Storage::Shared`) could not be opened or reached.
    #[error("shared storage: {0}")]
    Store(#[source] std::io::Error),
    /// `public_url` is not an absolute http(s) URL.
    #[error("public URL `{0}` must start with http:// or https://")]
    PublicUrl(String),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The server. See [`Server::start`].
#[derive(Debug)]
pub struct Server;

/// A started server: its address, and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    public_url: String,
    follows_host: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Opens the data directory, loads what it holds (finishing any completion a
    /// crash interrupted), binds the listener and starts serving in the background.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        let data_dir = config.data_dir.display().to_string();
        let data_err = |source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        };
        let (meta, blobs): (Arc<dyn MetaStore>, Arc<dyn BlobStore>) = match &config.storage {
            Storage::Disk => {
                let disk = Arc::new(Disk::open(&config.data_dir, config.fsync).map_err(data_err)?);
                (disk.clone(), disk)
            }
            Storage::Shared { store, meta } => {
                let s3 = S3::open(store).map_err(StartError::Store)?;
                // A node that stops answering keeps a session locked at most this long.
                let lock_timeout = config.fragment_timeout + std::time::Duration::from_secs(60);
                let pg = Postgres::connect(meta, lock_timeout)
                    .await
                    .map_err(StartError::Store)?;
                s3.check().await.map_err(StartError::Store)?;
                (Arc::new(pg), Arc::new(s3))
            }
        };
        let shared = meta.shared();
        let state_err = |source| {
            if shared {
                StartError::Store(source)
            } else {
                data_err(source)
            }
        };
        let key = meta.server_key().await.map_err(state_err)?;
        let tls = match &config.tls {
            Some(t) => Some(tls::acceptor(&t.cert, &t.key).map_err(StartError::Tls)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        // On every interface without a public URL, URLs follow each request's Host;
        // this process itself (and a request without a Host) uses loopback.
        let public = match &config.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                PublicUrl::Fixed(url.trim_end_matches('/').to_owned())
            }
            Some(url) => return Err(StartError::PublicUrl(url.clone())),
            None if local_addr.ip().is_unspecified() => {
                let loopback = if local_addr.is_ipv4() {
                    std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                PublicUrl::FromHost {
                    scheme,
                    fallback: format!(
                        "{scheme}://{}",
                        SocketAddr::new(loopback, local_addr.port())
                    ),
                }
            }
            None => PublicUrl::Fixed(format!("{scheme}://{local_addr}")),
        };
        let follows_host = matches!(public, PublicUrl::FromHost { .. });
        let public_url = match &public {
            PublicUrl::Fixed(url) | PublicUrl::FromHost { fallback: url, .. } => url.clone(),
        };
        let app = App::start(config, public, key, meta, blobs, SystemTime::now())
            .await
            .map_err(state_err)?;
        let app = Arc::new(app);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(expiry_driver(Arc::clone(&app), stopped.clone()));
        let task = tokio::spawn(accept_loop(listener, tls, app, stopped));
        info!(%local_addr, %public_url, follows_host, "serving");
        Ok(Running {
            local_addr,
            public_url,
            follows_host,
            stop,
            task,
        })
    }
}

impl Running {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The public base URL (without a version segment). When the server listens on
    /// every interface without a configured public URL, this is its loopback URL,
    /// and the URLs it hands out follow each request's `Host` instead
    /// ([`Running::public_url_follows_host`]).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether uploadUrls and `Location`s are built from each request's `Host`
    /// (listening on `0.0.0.0` or `::` with no public URL configured).
    pub fn public_url_follows_host(&self) -> bool {
        self.follows_host
    }

    /// The Graph base URL clients use: `{public_url}/v1.0`.
    pub fn base_url(&self) -> String {
        format!("{}/v1.0", self.public_url)
    }

    /// Stops accepting, lets requests in flight finish (up to the configured grace
    /// period), and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn wait_for_signal(self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler can be installed");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutting down");
        self.shutdown().await;
    }
}

/// Sleeps until the next session expiry (or a change of timers) and sweeps. With
/// a shared store, other nodes' sessions expire too: it looks every few seconds.
async fn expiry_driver(app: Arc<App>, mut stopped: watch::Receiver<bool>) {
    if app.shared() {
        // A steady tick that requests cannot push back.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => app.sweep(SystemTime::now()).await,
                _ = stopped.changed() => return,
            }
        }
    }
    loop {
        let sleep = match app.poll_timeout() {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => app.sweep(SystemTime::now()).await,
            () = app.timer_changed.notified() => {}
            _ = stopped.changed() => return,
        }
    }
}

/// The bytes hyper-util's version detection reads (the HTTP/2 preface) before
/// HTTP/1's header timeout starts.
const PREFACE_LEN: u64 = 24;

/// A connection whose first [`PREFACE_LEN`] bytes must arrive within the header
/// timeout. hyper-util's HTTP/1-or-2 detection reads them with no timeout of its
/// own, so without this a client that connects and sends nothing (or drips the
/// preface) would hold its connection, and a file descriptor, forever.
///
/// Over TLS it wraps the decrypted stream: the handshake has a deadline of its own.
struct FirstBytesDeadline<S> {
    inner: S,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    seen: u64,
}

impl<S> FirstBytesDeadline<S> {
    fn new(inner: S, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            seen: 0,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstBytesDeadline<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within the header timeout",
            )));
        }
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_some() {
            this.seen += (buf.filled().len() - before) as u64;
            if this.seen >= PREFACE_LEN {
                this.deadline = None;
            }
        }
        res
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstBytesDeadline<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `--max-connections`, kept under the open-file limit (with room for data
/// files, the database and the listener): past that limit `accept` itself fails,
/// and no client would get the 503.
fn connection_cap(configured: usize) -> usize {
    const RESERVE: usize = 256;
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        });
    let mut cap = configured.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    if let Some(soft) = soft
        && cap + RESERVE > soft
    {
        cap = soft.saturating_sub(RESERVE).max(16);
        warn!(
            configured,
            open_file_limit = soft,
            using = cap,
            "--max-connections is above what the open-file limit allows; raise `ulimit -n` to use it"
        );
    }
    cap
}

/// Answers a connection over `--max-connections` with `503` and Graph's error JSON
/// before reading its request, then reads (and drops) what it already sent for a
/// moment, so that closing does not reset the connection before the answer is read.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use std::fmt::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Spread the retries of many refused clients over a few seconds.
    let err = upsession_core::error::RequestError::Unavailable {
        retry_after_secs: fastrand::u64(1..=4),
    };
    let res = upsession_core::respond::error(&err, "connection-limit", SystemTime::now());
    let mut head = format!("HTTP/1.1 {}\r\nconnection: close\r\n", res.status());
    for (name, value) in res.headers() {
        if let Ok(v) = value.to_str() {
            let _ = write!(head, "{name}: {v}\r\n");
        }
    }
    let _ = write!(head, "content-length: {}\r\n\r\n", res.body().len());
    let limit = std::time::Duration::from_millis(500);
    let answered = tokio::time::timeout(limit, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(res.body()).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(answered, Ok(Ok(()))) {
        let mut sink = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(limit, async {
            let mut seen = 0;
            while seen < 64 * 1024 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        })
        .await;
    }
}

/// The largest request line plus headers a request may carry: 64 KiB, as browsers
/// and proxies allow and far above what Graph's clients send.
const MAX_HEAD_BYTES: usize = 64 * 1024;

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).expect("64 KiB fits"));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap(
        app.config.max_connections,
    )));
    // Refusals in progress: past this many, a surplus connection is just closed.
    let refusals = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            app.metrics.connections_refused.inc();
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let timeout = app.config.header_timeout;
        let app = Arc::clone(&app);
        let service = service_fn(move |req| {
            let app = Arc::clone(&app);
            async move {
                // A panic in a handler becomes a 500 for that request, not a dead server.
                // `Err` (a `reset` or `lost` fault) makes hyper drop the connection.
                let res = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                    app.handle(req),
                ))
                .await;
                res.unwrap_or_else(|_| Ok(app::internal_error()))
            }
        });
        let Some(tls) = &tls else {
            let stream = FirstBytesDeadline::new(stream, timeout);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let watched = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
            continue;
        };
        // The handshake runs in the connection's own task, under the header timeout.
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => FirstBytesDeadline::new(stream, timeout),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = app.config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {grace:?}; stopping anyway");
    }
}
