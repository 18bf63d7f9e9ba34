//! A round-robin HTTP proxy: each request goes to the next backend, so the
//! fragments of one upload alternate between nodes even on one kept-alive
//! connection. A backend that refuses connections is skipped (nothing was sent to
//! it), as a load balancer's health check would.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type ProxyBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct RoundRobin {
    addr: SocketAddr,
    task: JoinHandle<()>,
    counts: Arc<Vec<AtomicUsize>>,
}

struct Shared {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    counts: Arc<Vec<AtomicUsize>>,
    client: Client<HttpConnector, Incoming>,
}

impl RoundRobin {
    /// Listens on a free loopback port and forwards to `backends` in turn.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(backends: Vec<SocketAddr>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let shared = Arc::new(Shared {
            backends,
            next: AtomicUsize::new(0),
            counts: Arc::clone(&counts),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| forward(Arc::clone(&shared), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task, counts })
    }

    /// `http://ADDR`: what clients (and `--public-url` of every node) use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded to each backend so far.
    pub fn counts(&self) -> Vec<usize> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    use http_body_util::BodyExt;
    let n = shared.backends.len();
    let first = shared.next.fetch_add(1, Ordering::Relaxed);
    // Find a backend that accepts connections before giving it the request: a
    // request body can be sent only once.
    for i in 0..n {
        let k = (first + i) % n;
        let backend = shared.backends[k];
        if tokio::net::TcpStream::connect(backend).await.is_err() {
            continue;
        }
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        parts.uri = format!("http://{backend}{path}")
            .parse()
            .expect("an address and a path make a URI");
        shared.counts[k].fetch_add(1, Ordering::Relaxed);
        return match shared
            .client
            .request(Request::from_parts(parts, body))
            .await
        {
            Ok(res) => Ok(res.map(BodyExt::boxed_unsync)),
            Err(e) => {
                eprintln!("round-robin proxy: {backend}: {e:?}");
                Ok(bad_gateway())
            }
        };
    }
    Ok(bad_gateway())
}

fn bad_gateway() -> Response<ProxyBody> {
    use http_body_util::BodyExt as _;
    let mut res = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}
