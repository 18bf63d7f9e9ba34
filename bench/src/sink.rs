//! The benchmark's baseline: a no-logic hyper server that speaks just enough of the
//! Graph upload protocol for `loadgen` and writes each ranged `PUT` at its offset.
//! No auth, no sessions, no records: what an upload server costs at the least.
//!
//! ```text
//! sink --listen 127.0.0.1:PORT --dir DIR [--fsync]
//! ```

#![allow(clippy::cast_possible_truncation)] // offsets fit in usize on the 64-bit bench hosts

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

struct Sink {
    dir: PathBuf,
    fsync: bool,
    base: String,
    next: AtomicU64,
    files: Mutex<HashMap<u64, (Arc<File>, u64)>>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *res.status_mut() = status;
    res
}

fn json_res(status: StatusCode, v: &Value) -> Response<Body> {
    let mut res = full(status, v.to_string().into_bytes());
    res.headers_mut()
        .insert("content-type", "application/json".parse().expect("valid"));
    res
}

impl Sink {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (req.method().as_str(), segs.as_slice()) {
            ("POST", [_, "me", "messages"]) => json_res(StatusCode::CREATED, &json!({"id": "m"})),
            ("POST", [.., "createUploadSession"]) => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .unwrap_or_default();
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let size = v["AttachmentItem"]["size"].as_u64().unwrap_or(0);
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let file =
                    File::create(self.dir.join(format!("{n}.bin"))).expect("sink dir writable");
                self.files
                    .lock()
                    .expect("lock")
                    .insert(n, (Arc::new(file), size));
                json_res(
                    StatusCode::CREATED,
                    &json!({"uploadUrl": format!("{}/up/{n}?k=x", self.base), "nextExpectedRanges": ["0-"]}),
                )
            }
            ("PUT", ["up", n]) => self.put(n.parse().unwrap_or(u64::MAX), req).await,
            // A status GET, answered from memory as cheaply as it can be: the
            // floor for the status probe under load (`loadgen --probe`).
            ("GET", ["up", n]) => {
                let n: u64 = n.parse().unwrap_or(u64::MAX);
                match self.files.lock().expect("lock").get(&n) {
                    Some((_, size)) => json_res(
                        StatusCode::OK,
                        &json!({"nextExpectedRanges": [format!("0-{}", size.saturating_sub(1))]}),
                    ),
                    None => full(StatusCode::NOT_FOUND, Vec::new()),
                }
            }
            ("GET", ["att", n, "$value"]) => {
                let n: u64 = n.parse().unwrap_or(u64::MAX);
                match tokio::fs::File::open(self.dir.join(format!("{n}.bin"))).await {
                    Ok(f) => {
                        let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024);
                        let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(
                            stream,
                            |r| r.map(Frame::data),
                        ));
                        Response::new(http_body_util::BodyExt::boxed(body))
                    }
                    Err(_) => full(StatusCode::NOT_FOUND, Vec::new()),
                }
            }
            _ => full(StatusCode::NOT_FOUND, Vec::new()),
        }
    }

    async fn put(&self, n: u64, req: Request<Incoming>) -> Response<Body> {
        let Some((file, size)) = self.files.lock().expect("lock").get(&n).cloned() else {
            return full(StatusCode::NOT_FOUND, Vec::new());
        };
        let range = req
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let Some((first, last)) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            return full(StatusCode::BAD_REQUEST, Vec::new());
        };
        let mut offset = first;
        let mut body = req.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(chunk) = frame.into_data() {
                if file.write_all_at(&chunk, offset).is_err() {
                    return full(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
                }
                offset += chunk.len() as u64;
            }
        }
        if self.fsync && file.sync_data().is_err() {
            return full(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
        }
        if last + 1 >= size {
            let mut res = full(StatusCode::CREATED, Vec::new());
            res.headers_mut().insert(
                "location",
                format!("{}/att/{n}", self.base).parse().expect("valid"),
            );
            res
        } else {
            json_res(
                StatusCode::OK,
                &json!({"nextExpectedRanges": [format!("{}-{}", last + 1, size - 1)]}),
            )
        }
    }
}

/// Where the sink listens and writes.
#[derive(Debug, clap::Parser)]
#[command(
    name = "sink",
    about = "A no-logic upload server: the baseline upsession is measured against."
)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where the uploaded files go [default: the system's temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `fdatasync` each fragment before answering.
    #[arg(long)]
    fsync: bool,
}

#[tokio::main]
async fn main() {
    let Args { listen, dir, fsync } = <Args as clap::Parser>::parse();
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).expect("sink dir");
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}");
    // Same first line as `upsession serve`, so one harness starts both.
    println!("upsession serving {base}/v1.0 (listening on {addr})");
    let sink = Arc::new(Sink {
        dir,
        fsync,
        base,
        next: AtomicU64::new(0),
        files: Mutex::new(HashMap::new()),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let sink = Arc::clone(&sink);
                async move { Ok::<_, Infallible>(sink.handle(req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
