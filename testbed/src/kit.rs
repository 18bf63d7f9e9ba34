//! What upsession's tests do again and again, written once, for every crate's
//! tests: start our server in this process ([`TestServer`]) or `upsession serve` as
//! a child ([`Serve`]); speak Graph to either ([`Graph`]: a draft, an upload
//! session, fragments, a whole upload, the session's status, a download); send a
//! fragment over a raw socket and leave it in flight ([`partial_put`]); read Graph
//! error answers ([`expect_graph_error`]); and make seeded test data, files,
//! digests and certificates.
//!
//! Everything here panics on what a test would `unwrap`: a kit call that fails is
//! a failed test, with the answer in the message.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use upsession_server_hyper::{Config, Fsync, Running, Server};

/// The bearer token of a [`TestServer`] (and of any test that has no reason for
/// another).
pub const TOKEN: &str = "test-token";

// ----- test data -----

/// `len` pseudo-random bytes, the same for a seed.
pub fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Writes [`seeded`] bytes to `dir/name`; returns the path and the bytes.
pub fn seeded_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let bytes = seeded(len, seed);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("the test file is written");
    (path, bytes)
}

/// SHA-256 in lowercase hex: what tests compare instead of whole files, so a
/// failure prints two short lines.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The CRC-64/NVME of `bytes` as our clients report a file's: 16 lowercase hex
/// digits.
pub fn crc64_hex(bytes: &[u8]) -> String {
    format!(
        "{:016x}",
        crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes)
    )
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as `cert.pem`
/// and `key.pem` in `dir`: (cert path, key path, cert PEM).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("a certificate for loopback");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("the certificate is written");
    std::fs::write(&key_path, signing_key.serialize_pem()).expect("the key is written");
    (cert_path, key_path, cert.pem())
}

/// An HTTP client that trusts `root_pem` besides the usual roots.
pub fn client_trusting(root_pem: &str) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(root_pem.as_bytes()).expect("a PEM certificate");
    reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("an HTTP client")
}

/// Whether this runs under CI (`CI` set, and not empty, `0` or `false`), where a
/// test that cannot set itself up fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        let v = v.trim();
        !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false")
    })
}

/// `test` cannot run here, for `why`: a failure under CI ([`in_ci`]), a skip said
/// on stderr otherwise.
///
/// # Panics
/// Under CI.
pub fn unavailable(test: &str, why: &str) {
    assert!(!in_ci(), "{test} cannot run, and CI is set: {why}");
    eprintln!("SKIPPED {test}: {why}\n(with CI set this is a failure)");
}

// ----- our server in this process -----

/// The configuration every [`TestServer`] starts from: data in `dir`, a free port
/// on 127.0.0.1, [`TOKEN`], and no fsync (tests do not outlive a power loss).
pub fn server_config(dir: &Path) -> Config {
    Config::new(dir)
        .with_listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_token(TOKEN)
        .with_fsync(Fsync::Never)
}

/// Our server, started in this process on [`server_config`] and a test's changes
/// to it; a [`Graph`] on its socket (`http(s)://127.0.0.1:PORT/v1.0`, whatever
/// public URL it hands out) through `Deref`. Stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    running: Option<Running>,
    config: Config,
    graph: Graph,
    /// The temporary data directory, when the kit made it.
    temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// [`server_config`] in a temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    /// [`server_config`] changed by `change`, in a temporary directory.
    pub async fn start_with(change: impl FnOnce(Config) -> Config) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = Self::start_in(dir.path(), change).await;
        server.temp = Some(dir);
        server
    }

    /// [`server_config`] changed by `change`, with its data in `dir` (which the
    /// test keeps).
    pub async fn start_in(dir: &Path, change: impl FnOnce(Config) -> Config) -> Self {
        let config = change(server_config(dir));
        let running = Server::start(config.clone())
            .await
            .expect("the test server starts");
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = format!("{scheme}://{}/v1.0", running.local_addr());
        Self {
            running: Some(running),
            config,
            graph: Graph::new(base, TOKEN),
            temp: None,
        }
    }

    /// The running server.
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the server runs")
    }

    /// Where its data lives.
    pub fn dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.running().local_addr()
    }

    /// Shuts it down and starts it again on the same address, data and
    /// configuration.
    pub async fn restart(&mut self) {
        self.restart_after(|| {}).await;
    }

    /// [`TestServer::restart`] with `between` run while the server is down: what
    /// a test leaves on disk there is what a crash would have left (while it
    /// runs, the server's own background work may still write).
    pub async fn restart_after(&mut self, between: impl FnOnce()) {
        let old = self.running.take().expect("the server runs");
        let addr = old.local_addr();
        old.shutdown().await;
        between();
        let config = self.config.clone().with_listen(addr);
        self.running = Some(Server::start(config).await.expect("the server restarts"));
    }

    /// Shuts it down, letting requests in flight finish.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

impl Deref for TestServer {
    type Target = Graph;

    fn deref(&self) -> &Graph {
        &self.graph
    }
}

// ----- `upsession serve` as a child process -----

/// `upsession serve` in a child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// `http(s)://127.0.0.1:PORT/v1.0`, from the banner.
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The banner's lines after the first (token note, upload line).
    pub banner: Vec<String>,
    // Kept open: the server must be able to write to its stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    /// Spawns `serve`, a `upsession serve ...` command, and reads its banner up to
    /// the upload line: `upsession serving http://127.0.0.1:PORT/v1.0
    /// (listening on 127.0.0.1:PORT)`, ....
    pub fn spawn(serve: &mut Command) -> Self {
        let mut child = serve
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the upsession binary runs");
        let stdout = child.stdout.take().expect("a piped stdout");
        let mut stdout = BufReader::new(stdout);
        let first = read_line(&mut stdout);
        let base = first
            .strip_prefix("upsession serving ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected banner: {first:?}"))
            .to_owned();
        let addr = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches("/v1.0")
            .to_owned();
        assert!(addr.starts_with("127.0.0.1:"), "unexpected banner: {first}");
        let mut banner = Vec::new();
        loop {
            let line = read_line(&mut stdout);
            // `upsession upload FILE …`, or the binary's own path where `upsession`
            // is not on PATH.
            let done = line.contains(" upload FILE ");
            banner.push(line.trim_end().to_owned());
            if done || line.is_empty() {
                break;
            }
        }
        Self {
            child,
            base,
            addr,
            banner,
            _stdout: stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(self) {
        drop(self);
    }
}

/// The next line of a child's output, empty at its end.
fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("the child's output reads");
    line
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- Graph, as a test speaks it -----

/// A Graph endpoint (`…/v1.0`) and the bearer token its Graph routes take.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The client every request goes through.
    pub http: reqwest::Client,
    base: String,
    token: String,
}

/// `{"AttachmentItem": {"attachmentType": "file", "name": NAME, "size": SIZE}}`:
/// the body of createUploadSession.
pub fn attachment(name: &str, size: usize) -> Value {
    json!({"AttachmentItem": {"attachmentType": "file", "name": name, "size": size}})
}

impl Graph {
    /// `base` (`http://HOST:PORT/v1.0`) with `token`, through a new client.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self::with_client(reqwest::Client::new(), base, token)
    }

    /// `base` with `token`, through `http`.
    pub fn with_client(
        http: reqwest::Client,
        base: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            http,
            base: base.into(),
            token: token.into(),
        }
    }

    /// `http://HOST:PORT/v1.0`
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `http://HOST:PORT`: the base without its version.
    pub fn origin(&self) -> &str {
        self.base.trim_end_matches("/v1.0")
    }

    /// `{base}{path}`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `method {base}{path}` with the bearer token, to send as the test likes.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// A Graph call with an optional JSON body: the status and the body as JSON
    /// (`Null` when it is not).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        status_json(req.send().await.expect("Graph answers")).await
    }

    /// Creates an item with `POST {collection}` of `fields` (it must answer 201);
    /// its id.
    pub async fn create_item(&self, collection: &str, fields: Value) -> String {
        let (status, body) = self.call(Method::POST, collection, Some(fields)).await;
        assert_eq!(status, 201, "POST {collection}: {body}");
        body["id"].as_str().expect("an item id").to_owned()
    }

    /// A draft message (`POST /me/messages`); its id.
    pub async fn draft(&self) -> String {
        self.create_item("/me/messages", json!({"subject": "s"}))
            .await
    }

    /// `POST {item_path}/attachments/createUploadSession` with `body`.
    pub async fn create_session(&self, item_path: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("{item_path}/attachments/createUploadSession");
        self.call(Method::POST, &path, Some(body)).await
    }

    /// An upload session for the attachment `name` of `size` bytes on the item at
    /// `item_path` (`/me/messages/ID`); its uploadUrl.
    pub async fn upload_session(&self, item_path: &str, name: &str, size: usize) -> String {
        let (status, body) = self.create_session(item_path, attachment(name, size)).await;
        assert_eq!(status, 201, "createUploadSession: {body}");
        body["uploadUrl"].as_str().expect("an uploadUrl").to_owned()
    }

    /// An upload session of `size` bytes for `f.bin` on the draft `draft`; its
    /// uploadUrl.
    pub async fn session(&self, draft: &str, size: usize) -> String {
        self.upload_session(&format!("/me/messages/{draft}"), "f.bin", size)
            .await
    }

    /// A new draft and an upload session of `size` bytes on it; its uploadUrl.
    pub async fn open_session(&self, size: usize) -> String {
        self.session(&self.draft().await, size).await
    }

    /// `PUT`s `data[first..=last]` to `url`, with `Content-Range` out of
    /// `data.len()`; the answer, or the transport error when none came.
    pub async fn try_put(
        &self,
        url: &str,
        data: &[u8],
        first: usize,
        last: usize,
    ) -> reqwest::Result<Response> {
        self.http
            .put(url)
            .header(
                "Content-Range",
                format!("bytes {first}-{last}/{}", data.len()),
            )
            .body(data[first..=last].to_vec())
            .send()
            .await
    }

    /// [`Graph::try_put`] that must be answered.
    pub async fn put(&self, url: &str, data: &[u8], first: usize, last: usize) -> Response {
        self.try_put(url, data, first, last)
            .await
            .expect("the fragment is answered")
    }

    /// The fragment of `data` at `start`, of `fragment` bytes or the rest.
    pub async fn put_at(&self, url: &str, data: &[u8], start: usize, fragment: usize) -> Response {
        self.put(url, data, start, last_of(start, fragment, data.len()))
            .await
    }

    /// Uploads `data` in fragments of `fragment` bytes; the final answer (every
    /// other one must be 200).
    pub async fn upload(&self, url: &str, data: &[u8], fragment: usize) -> Response {
        self.upload_from(url, data, 0, fragment, |_| {}).await
    }

    /// Uploads `data[start..]` in fragments of `fragment` bytes, calling
    /// `before(i)` before the `i`-th; the final answer (every other one must be
    /// 200).
    pub async fn upload_from(
        &self,
        url: &str,
        data: &[u8],
        mut start: usize,
        fragment: usize,
        mut before: impl FnMut(usize),
    ) -> Response {
        let mut i = 0;
        loop {
            before(i);
            let last = last_of(start, fragment, data.len());
            let res = self.put(url, data, start, last).await;
            if last + 1 == data.len() {
                return res;
            }
            let status = res.status();
            assert_eq!(
                status,
                200,
                "fragment {i} at {start}: {}",
                res.text().await.unwrap_or_default()
            );
            start = last + 1;
            i += 1;
        }
    }

    /// `GET`s the uploadUrl: the session's status as JSON.
    pub async fn session_status(&self, url: &str) -> Value {
        json_of(
            self.http
                .get(url)
                .send()
                .await
                .expect("the session answers"),
        )
        .await
    }

    /// The first byte of the session's first expected range (`None` when it
    /// expects none); the status must be 200.
    pub async fn next_expected(&self, url: &str) -> Option<usize> {
        let res = self
            .http
            .get(url)
            .send()
            .await
            .expect("the session answers");
        assert_eq!(res.status(), 200, "the status of {url}");
        let status = json_of(res).await;
        let first = status["nextExpectedRanges"][0].as_str()?;
        Some(first.split('-').next()?.parse().expect("a range's start"))
    }

    /// `GET {location}/$value` with the bearer token: the attachment's bytes.
    pub async fn value(&self, location: &str) -> Response {
        self.http
            .get(format!("{location}/$value"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("the attachment answers")
    }

    /// The bytes of the attachment at `location` ([`Graph::value`], which must
    /// be 200).
    pub async fn download(&self, location: &str) -> Vec<u8> {
        let res = self.value(location).await;
        assert_eq!(res.status(), 200, "GET {location}/$value");
        res.bytes().await.expect("the attachment's bytes").to_vec()
    }
}

/// The last byte of the fragment at `start`: `fragment` bytes, or the rest.
fn last_of(start: usize, fragment: usize, len: usize) -> usize {
    (start + fragment).min(len) - 1
}

/// [`Graph::download`] through `http` with `token`.
pub async fn download(http: &reqwest::Client, location: &str, token: &str) -> Vec<u8> {
    Graph::with_client(http.clone(), String::new(), token)
        .download(location)
        .await
}

/// An answer's body as JSON.
pub async fn json_of(res: Response) -> Value {
    let bytes = res.bytes().await.expect("the body arrives");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// An answer's status and body as JSON (`Null` when it is not).
pub async fn status_json(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let bytes = res.bytes().await.expect("the body arrives");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An answer's `Location`.
pub fn location(res: &Response) -> String {
    res.headers()["location"]
        .to_str()
        .expect("a text Location")
        .to_owned()
}

// ----- raw sockets -----

/// Starts `PUT url` of the fragment of `data` at `start` (`fragment` bytes, or the
/// rest) over a raw socket and sends `sent` of its body bytes (maybe all, maybe
/// none), leaving the connection open: a fragment in flight, to cut off by
/// dropping the stream.
pub async fn partial_put(
    url: &str,
    data: &[u8],
    start: usize,
    fragment: usize,
    sent: usize,
) -> TcpStream {
    let parsed = reqwest::Url::parse(url).expect("an uploadUrl");
    let host = parsed.host_str().expect("a host");
    let port = parsed.port_or_known_default().expect("a port");
    let mut stream = TcpStream::connect((host, port))
        .await
        .expect("a connection");
    let target = format!("{}?{}", parsed.path(), parsed.query().unwrap_or_default());
    let last = last_of(start, fragment, data.len());
    let len = last + 1 - start;
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes {start}-{last}/{}\r\n\
         Content-Length: {len}\r\n\r\n",
        data.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("the head is sent");
    let body = &data[start..start + sent.min(len)];
    stream.write_all(body).await.expect("the body is sent");
    stream
}

/// What the server wrote back on a raw connection, in one read (at most 1 KiB,
/// within `limit`).
pub async fn read_answer(stream: &mut TcpStream, limit: Duration) -> String {
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(limit, stream.read(&mut answer))
        .await
        .expect("an answer within the limit")
        .expect("the connection reads");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

// ----- HTTP/2 on raw sockets -----

/// The client connection preface of HTTP/2 (RFC 9113 §3.4): all a client must send
/// before the server answers with its SETTINGS.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 frame types a test looks for.
pub mod h2_kind {
    /// HEADERS: a request, or an answer's status.
    pub const HEADERS: u8 = 0x1;
    /// SETTINGS: the first frame each side sends.
    pub const SETTINGS: u8 = 0x4;
    /// PING: the server's keep-alive probe.
    pub const PING: u8 = 0x6;
    /// GOAWAY: the connection is closing.
    pub const GOAWAY: u8 = 0x7;
}

/// One HTTP/2 frame: its `kind`, `flags`, `stream` and `payload`.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small payload");
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// A whole request on stream 1: `GET path` over http, in one HEADERS frame
/// (END_STREAM, END_HEADERS) with literal, unindexed fields.
pub fn h2_get(path: &str) -> Vec<u8> {
    let path_len = u8::try_from(path.len()).expect("a path under 128 bytes");
    assert!(path_len < 128, "a path under 128 bytes");
    // :method GET and :scheme http from the static table, then :path and
    // :authority as literals naming static-table entries 4 and 1.
    let mut block = vec![0x82, 0x86, 0x04, path_len];
    block.extend(path.as_bytes());
    block.extend([0x01, 1, b'x']);
    h2_frame(h2_kind::HEADERS, 0x5, 1, &block)
}

/// The types of the whole frames in what a server sent over HTTP/2, in order.
pub fn h2_frame_kinds(mut bytes: &[u8]) -> Vec<u8> {
    let mut kinds = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        kinds.push(bytes[3]);
        bytes = &bytes[9 + len..];
    }
    kinds
}

/// Connects to `server` from the loopback address `from` (any of 127.0.0.0/8, so
/// one test can be several clients).
pub async fn connect_from(server: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("cannot bind {from}: {e}"));
    socket.connect(server).await.expect("a connection")
}

/// Connects to `server` from `from` (as [`connect_from`]) and sends only the
/// HTTP/2 preface.
pub async fn preface_only(server: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    let mut stream = connect_from(server, from).await;
    stream
        .write_all(H2_PREFACE)
        .await
        .expect("the preface is sent");
    stream
}

/// Reads HTTP/2 frames from `stream` until one of type `kind` has come (or the
/// connection closed, or `limit` passed); the types of all the frames read.
pub async fn h2_read_until(stream: &mut TcpStream, kind: u8, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        while !h2_frame_kinds(&got).contains(&kind) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    h2_frame_kinds(&got)
}

/// Connects to `server` from `from` and leaves a request in flight for as long as
/// the connection lives: an HTTP/2 `GET /healthz` from a client whose flow-control
/// window is 0 (`SETTINGS_INITIAL_WINDOW_SIZE`), so the answer's headers come (read
/// here: the request is in flight then) and its body never can.
pub async fn h2_pinned(server: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    let mut stream = preface_only(server, from).await;
    let mut hello = h2_frame(h2_kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    hello.extend(h2_get("/healthz"));
    stream.write_all(&hello).await.expect("the request is sent");
    let kinds = h2_read_until(&mut stream, h2_kind::HEADERS, Duration::from_secs(10)).await;
    assert!(
        kinds.contains(&h2_kind::HEADERS),
        "the answer's headers came: frames {kinds:?}"
    );
    stream
}

/// How a server took a new connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It answered the preface with SETTINGS: the connection holds a slot.
    Served,
    /// It answered with this (an HTTP/1.1 refusal, read to its end) and closed.
    Refused(String),
    /// It closed, or said nothing within the limit.
    Nothing,
}

/// Reads a new HTTP/2 connection's first answer (within `limit`): served (its
/// SETTINGS frame read whole, so that frames read next start at a frame) or refused.
pub async fn admission(stream: &mut TcpStream, limit: Duration) -> Admission {
    let mut first = [0u8; 9];
    match tokio::time::timeout(limit, stream.read_exact(&mut first)).await {
        Ok(Ok(_)) if first[3] == h2_kind::SETTINGS => {
            let len =
                usize::from(first[0]) << 16 | usize::from(first[1]) << 8 | usize::from(first[2]);
            let mut payload = vec![0u8; len];
            match tokio::time::timeout(limit, stream.read_exact(&mut payload)).await {
                Ok(Ok(_)) => Admission::Served,
                _ => Admission::Nothing,
            }
        }
        Ok(Ok(_)) => {
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await;
            let mut all = first.to_vec();
            all.extend(rest);
            Admission::Refused(String::from_utf8_lossy(&all).into_owned())
        }
        _ => Admission::Nothing,
    }
}

/// Everything the server sends on `stream` until it closes it, within `limit`;
/// whether it closed.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(limit, read_all).await.is_ok();
    (got, closed)
}

// ----- Graph's error answers -----

/// A Graph error answer, as a test saw it.
#[derive(Clone, Debug)]
pub struct GraphErrorSeen {
    /// The HTTP status.
    pub status: u16,
    /// `error.code`, Graph's top-level code.
    pub code: String,
    /// `error.innerError.code`, the detailed code, when there is one.
    pub inner: Option<String>,
    /// The whole body.
    pub body: Value,
}

impl GraphErrorSeen {
    /// The most specific code: `innerError.code` if present, else `error.code`.
    pub fn detail(&self) -> &str {
        self.inner.as_deref().unwrap_or(&self.code)
    }
}

/// Reads a Graph error answer.
///
/// # Panics
/// When the body is not Graph's error JSON (`error.code` and `error.message`
/// strings, `innerError` with `request-id` and `date`).
pub fn graph_error(status: u16, body: &[u8]) -> GraphErrorSeen {
    let text = String::from_utf8_lossy(body);
    let json: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("a {status} answer that is not JSON ({e}): {text}"));
    let error = &json["error"];
    let code = error["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} answer without error.code: {text}"))
        .to_owned();
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a {status} answer without error.message: {text}"
    );
    let inner = &error["innerError"];
    assert!(
        inner["request-id"].is_string() && inner["date"].is_string(),
        "a {status} answer without innerError.request-id and date: {text}"
    );
    GraphErrorSeen {
        status,
        code,
        inner: inner["code"].as_str().map(str::to_owned),
        body: json,
    }
}

/// Asserts that `res` is Graph's error JSON with `status`, and that `code` is its
/// most specific code (`innerError.code`, or `error.code` when there is none) or,
/// written `top/inner`, both of its codes. Returns what was seen.
///
/// # Panics
/// When it is not.
pub async fn expect_graph_error(res: Response, status: u16, code: &str) -> GraphErrorSeen {
    let got = res.status().as_u16();
    let body = res.bytes().await.expect("the answer's body arrives");
    let seen = graph_error(got, &body);
    let matches = match code.split_once('/') {
        Some((top, inner)) => seen.code == top && seen.inner.as_deref() == Some(inner),
        None => seen.detail() == code,
    };
    assert!(
        got == status && matches,
        "expected {status} {code}, got {got} {}{}: {}",
        seen.code,
        seen.inner
            .as_ref()
            .map(|i| format!("/{i}"))
            .unwrap_or_default(),
        seen.body
    );
    seen
}

#[cfg(test)]
mod tests {
    use super::graph_error;

    #[test]
    fn the_detail_is_the_inner_code_when_there_is_one() {
        let body = br#"{"error":{"code":"invalidRange","message":"m","innerError":{"code":"fragmentOverlap","request-id":"r","date":"d"}}}"#;
        let seen = graph_error(416, body);
        assert_eq!(
            (seen.code.as_str(), seen.detail()),
            ("invalidRange", "fragmentOverlap")
        );
        let body = br#"{"error":{"code":"ErrorItemNotFound","message":"m","innerError":{"request-id":"r","date":"d"}}}"#;
        assert_eq!(graph_error(404, body).detail(), "ErrorItemNotFound");
    }

    #[test]
    #[should_panic(expected = "without innerError")]
    fn an_answer_without_a_request_id_is_not_graphs() {
        graph_error(400, br#"{"error":{"code":"x","message":"m"}}"#);
    }
}
