//! Serving an [`UploadService`] on a socket: [`Server::start`] binds, speaks TLS
//! when asked, caps connections, bounds slow clients, and shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::connections::{Caps, Conn, Connections, InFlight, Refused, Step, Why};
use crate::exchange::{DropConnection, RequestId, ResBody, error_response};
use crate::graph::PublicUrl;
use crate::layers::MAX_HEAD_BYTES;
use crate::metrics::Metrics;
use crate::service::UploadService;
use crate::{StartError, tls};

/// What the accept loop needs of the configuration.
#[derive(Clone, Copy, Debug)]
struct Limits {
    caps: Caps,
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
            caps: Caps {
                total: config.max_connections,
                per_source: config.max_connections_per_ip,
                header_timeout: config.header_timeout,
                idle_timeout: config.idle_timeout,
            },
            shutdown_grace: config.shutdown_grace,
        };
        // SIGHUP re-reads a tokens file or JWKS; with neither, it keeps its
        // default (a closed terminal still ends the server).
        let reloads = config.auth != crate::config::AuthMode::Token;
        let service = UploadService::build(config, public).await?;
        let (stop, stopped) = watch::channel(false);
        if reloads {
            reload_on_sighup();
        }
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

/// `--max-connections`, kept under the open-file limit (with room for data
/// files, the database, the listener and the connections closing to make room,
/// [`Caps::closing`]): past that limit `accept` itself fails,
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
        && cap + cap / 16 + RESERVE > soft
    {
        cap = (soft.saturating_sub(RESERVE) * 16 / 17).max(16);
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

/// A response body that keeps its request counted as in flight on its connection
/// until hyper is done with it (its last byte sent, or the stream gone).
struct Tracked {
    body: ResBody,
    in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_ready() {
            self.in_flight.progress();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The [`UploadService`] as hyper serves it on the connection `conn`: incoming
/// bodies boxed, each request counted in flight until its response is sent, a
/// panic a 500, and a response marked [`DropConnection`] an error (hyper then
/// drops the connection without an answer).
fn hyper_service(
    upload: UploadService,
    conn: Arc<Conn>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked>,
    Error = Dropped,
    Future = impl Future<Output = Result<http::Response<Tracked>, Dropped>> + Send,
> + Clone {
    service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(crate::exchange::Peer(peer));
        let in_flight = conn.begin();
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
            let mut in_flight = in_flight;
            // Answered: from here a client that stops taking the body stalls it.
            in_flight.progress();
            Ok(res.map(|body| Tracked { body, in_flight }))
        }
    })
}

/// How one connection's serving ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    /// hyper ended it with an error.
    #[error(transparent)]
    Hyper(Box<dyn std::error::Error + Send + Sync>),
    /// Closing, it had no request in flight for [`CLOSE_GRACE`](crate::connections::CLOSE_GRACE).
    #[error("cut after its close grace")]
    Cut,
}

/// Serves `conn` until it ends, closing it as [`Conn::next_step`] says: gracefully
/// (HTTP/2: GOAWAY) once idle, evicted or the server stopping, and cut when that
/// goodbye outlasts [`CLOSE_GRACE`](crate::connections::CLOSE_GRACE) with no request in flight.
async fn drive<C>(
    conn: C,
    place: &Conn,
    stopped: &mut watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<(), Ended>
where
    C: GracefulConnection,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        if !stopping && *stopped.borrow() {
            stopping = true;
            place.close(Why::Stopping);
        }
        let deadline = match place.next_step(tokio::time::Instant::now()) {
            Step::Wait(deadline) => deadline,
            Step::Close(why) => {
                if why == Why::Idle {
                    metrics.connections_closed_idle.inc();
                }
                conn.as_mut().graceful_shutdown();
                continue;
            }
            Step::Cut => return Err(Ended::Cut),
        };
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = conn.as_mut() => return served.map_err(|e| Ended::Hyper(e.into())),
            () = expired => {}
            () = place.changed() => {}
            // A stop is seen at the top of the loop; the sender gone is one too.
            changed = stopped.changed(), if !stopping => if changed.is_err() {
                stopping = true;
                place.close(Why::Stopping);
            },
        }
    }
}

/// SIGHUP makes the tokens file or JWKS be read again at once (they are also
/// read again within a second of changing). Installed once per process.
fn reload_on_sighup() {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(mut hangups) => {
                    tokio::spawn(async move {
                        while hangups.recv().await.is_some() {
                            tracing::info!("SIGHUP: the tokens file or JWKS is read again");
                            crate::identity::reload_all();
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "SIGHUP cannot be watched"),
            }
        });
    }
}

/// One accepted connection as the accept loop hands it over.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    /// Its place among the server's connections, freed when it closes.
    place: Conn,
}

/// Serves one accepted connection to its end, its TLS handshake first where TLS is
/// on (in the connection's own task, under the header timeout).
async fn serve_one(
    accepted: Accepted,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    mut stopped: watch::Receiver<bool>,
    service: UploadService,
    timeout: Duration,
) {
    let Accepted {
        stream,
        peer,
        place,
    } = accepted;
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
    let place = Arc::new(place);
    let engine = Arc::clone(&service.engine);
    let metrics = engine.metrics();
    metrics.connections_open.inc();
    let conn = builder
        .serve_connection_with_upgrades(
            TokioIo::new(stream),
            hyper_service(service, Arc::clone(&place), peer),
        )
        .into_owned();
    if let Err(e) = drive(conn, &place, &mut stopped, metrics).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    metrics.connections_open.dec();
}

/// hyper-util's builder: HTTP/1 with its header timeout, HTTP/2 with keep-alive
/// pings and bounded streams (idle and handshake deadlines are [`drive`]'s).
fn builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEAD_BYTES).expect("64 KiB fits"))
        // RFC 9113 §6.5.2 advises at least 100; an upload client uses a handful.
        .max_concurrent_streams(100)
        // A peer gone without a FIN is dropped within 40 s of its last frame,
        // even with a stream open (a request's own timeouts bound it too).
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Answers a connection that cannot be admitted (503, in its own task, at most
/// 64 at a time; past that it is just closed), and counts it.
fn turn_away(
    stream: tokio::net::TcpStream,
    why: Refused,
    refusals: &Arc<tokio::sync::Semaphore>,
    metrics: &Metrics,
) {
    metrics.connections_refused.inc();
    if why == Refused::SourceFull {
        metrics.connections_refused_per_ip.inc();
    }
    if let Ok(permit) = Arc::clone(refusals).try_acquire_owned() {
        tokio::spawn(async move {
            refuse(stream).await;
            drop(permit);
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: UploadService,
    limits: Limits,
    stopped: watch::Receiver<bool>,
) {
    let builder = builder(limits.caps.header_timeout);
    let all = Connections::new(Caps {
        total: connection_cap(limits.caps.total),
        ..limits.caps
    });
    // Refusals in progress: past this many, a surplus connection is just closed.
    let refusals = Arc::new(tokio::sync::Semaphore::new(64));
    let metrics = service.engine.metrics();
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = stopped.clone();
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
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let place = match all.admit(peer.ip()) {
            Ok((place, evicted)) => {
                if evicted {
                    metrics.connections_evicted.inc();
                }
                place
            }
            Err(why) => {
                turn_away(stream, why, &refusals, metrics);
                continue;
            }
        };
        let accepted = Accepted {
            stream,
            peer,
            place,
        };
        connections.spawn(serve_one(
            accepted,
            tls.clone(),
            builder.clone(),
            stopped.clone(),
            service.clone(),
            limits.caps.header_timeout,
        ));
    }
    drop(listener);
    // Every connection saw the stop: idle ones close within their grace, busy
    // ones once their requests are answered.
    let grace = limits.shutdown_grace;
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!("requests still in flight after {grace:?}; stopping anyway");
    }
    // Nothing of this server may run on once `shutdown` returns: another may open
    // the same data directory next.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    service.engine.finish_commits().await;
}
