//! Serving an [`UploadService`] on a socket: [`Server::start`] binds, speaks TLS
//! when asked, caps connections, bounds slow clients, and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::exchange::{DropConnection, RequestId, ResBody, error_response};
use crate::graph::PublicUrl;
use crate::layers::MAX_HEAD_BYTES;
use crate::service::UploadService;
use crate::{StartError, tls};

/// What the accept loop needs of the configuration.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
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
    /// Opens the store (loading and recovering what it holds), binds the listener
    /// and starts serving in the background.
    pub async fn start(config: Config) -> Result<Running, StartError> {
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
        let limits = Limits {
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
            shutdown_grace: config.shutdown_grace,
        };
        let service = UploadService::build(config, public).await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, tls, service, limits, stopped));
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
    /// period), cuts those still running, waits for the commits they started, and
    /// returns; the data directory is free for another server then.
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
    fn new(inner: S, timeout: Duration) -> Self {
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
    let limit = Duration::from_millis(500);
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

/// The connection is to be dropped without an answer (a `reset` or `lost` fault).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the fault plan")]
struct Dropped;

/// The answer for a handler that panicked: nothing it did was acknowledged.
fn internal_error() -> http::Response<ResBody> {
    let err = crate::engine::fail(upsession_core::error::RequestError::Internal);
    error_response(&err, &RequestId("panic".into()))
}

/// The [`UploadService`] as hyper serves it: incoming bodies boxed, a panic a 500,
/// and a response marked [`DropConnection`] an error (hyper then drops the
/// connection without an answer).
fn hyper_service(
    upload: UploadService,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = http::Response<ResBody>,
    Error = Dropped,
    Future = impl Future<Output = Result<http::Response<ResBody>, Dropped>> + Send,
> + Clone {
    service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let answer = upload.serve(req.map(|b| {
            http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                b,
                std::io::Error::other,
            ))
        }));
        async move {
            // A panic in a handler becomes a 500 for that request, not a dead server.
            let res = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(answer))
                .await
                .unwrap_or_else(|_| internal_error());
            if res.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            Ok(res)
        }
    })
}

/// Serves one accepted connection to its end, its TLS handshake first where TLS is
/// on (in the connection's own task, under the header timeout). `slot` is its place
/// under `--max-connections`, held until it closes.
#[allow(clippy::too_many_arguments)] // one connection's parts, as the accept loop holds them
async fn serve_one(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    service: UploadService,
    timeout: Duration,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let stream = match tls {
        None => tokio_util::either::Either::Left(stream),
        Some(tls) => match tokio::time::timeout(timeout, tls.accept(stream)).await {
            Ok(Ok(stream)) => tokio_util::either::Either::Right(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let io = TokioIo::new(FirstBytesDeadline::new(stream, timeout));
    let conn = builder.serve_connection_with_upgrades(io, hyper_service(service));
    let served = watcher.watch(conn.into_owned()).await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(slot);
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: UploadService,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).expect("64 KiB fits"));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap(
        limits.max_connections,
    )));
    // Refusals in progress: past this many, a surplus connection is just closed.
    let refusals = Arc::new(tokio::sync::Semaphore::new(64));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            // Reaps finished connections, so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            service.engine.metrics().connections_refused.inc();
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        connections.spawn(serve_one(
            stream,
            peer,
            tls.clone(),
            builder.clone(),
            graceful.watcher(),
            service.clone(),
            limits.header_timeout,
            slot,
        ));
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after {grace:?}; stopping anyway");
    }
    // Nothing of this server may run on once `shutdown` returns: another may open
    // the same data directory next.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    service.engine.finish_commits().await;
}
