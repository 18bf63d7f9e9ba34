//! Shared by the CLI's process tests: a real `upsession serve` child process.

#![allow(dead_code, clippy::pedantic)] // each test file uses a part; test code favours brevity

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// The built `upsession` binary.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_upsession"));
    cmd.env("RUST_LOG", "warn")
        .env_remove("UPSESSION_TOKEN")
        .env_remove("UPSESSION_BASE_URL");
    cmd
}

/// `upsession serve` on `listen`; killed (SIGKILL) when dropped.
pub(crate) struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT/v1.0`
    pub(crate) base: String,
    /// `127.0.0.1:PORT`
    pub(crate) addr: String,
    /// The banner's lines after the first (token note, upload line).
    pub(crate) banner: Vec<String>,
    // Kept open: the server must be able to write to its stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    /// Starts `upsession serve --listen LISTEN --data-dir DIR EXTRA...` and reads its
    /// banner: `upsession serving http://127.0.0.1:PORT/v1.0 (listening on 127.0.0.1:PORT)`.
    pub(crate) fn start(dir: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::start_with_env(dir, listen, extra, &[])
    }

    /// [`Serve::start`] with extra environment variables.
    pub(crate) fn start_with_env(
        dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let mut child = bin()
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the upsession binary runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
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
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let done = line.trim_start().starts_with("upsession upload");
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

    /// SIGKILL, and wait for the process to be gone.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a draft on `base` and opens an upload session of `size` bytes on it;
/// returns the uploadUrl.
pub(crate) async fn open_session(base: &str, token: &str, size: usize) -> String {
    let http = reqwest::Client::new();
    let draft: serde_json::Value = http
        .post(format!("{base}/me/messages"))
        .bearer_auth(token)
        .json(&serde_json::json!({"subject": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = serde_json::json!({"AttachmentItem": {"attachmentType": "file", "name": "test.bin", "size": size}});
    let session: serde_json::Value = http
        .post(format!(
            "{base}/me/messages/{}/attachments/createUploadSession",
            draft["id"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .json(&item)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    session["uploadUrl"]
        .as_str()
        .expect("an uploadUrl")
        .to_owned()
}

/// `PUT`s the fragment of `data` at `start` (at most `fragment` bytes) to `url`.
pub(crate) async fn put(
    http: &reqwest::Client,
    url: &str,
    data: &[u8],
    start: usize,
    fragment: usize,
) -> reqwest::Result<reqwest::Response> {
    let end = (start + fragment).min(data.len());
    http.put(url)
        .header(
            "Content-Range",
            format!("bytes {start}-{}/{}", end - 1, data.len()),
        )
        .body(data[start..end].to_vec())
        .send()
        .await
}

/// Starts that `PUT` over a raw socket and sends `sent` of its body bytes (maybe
/// all), leaving the connection open: a fragment in flight.
pub(crate) async fn partial_put(
    url: &str,
    data: &[u8],
    start: usize,
    fragment: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let parsed = reqwest::Url::parse(url).unwrap();
    let end = (start + fragment).min(data.len());
    let mut s =
        tokio::net::TcpStream::connect((parsed.host_str().unwrap(), parsed.port().unwrap()))
            .await
            .unwrap();
    let head = format!(
        "PUT {}?{} HTTP/1.1\r\nHost: x\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\n\r\n",
        parsed.path(),
        parsed.query().unwrap(),
        end - 1,
        data.len(),
        end - start
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[start..start + sent.min(end - start)])
        .await
        .unwrap();
    s
}

/// The bytes of the attachment at `location` (`GET {location}/$value`).
pub(crate) async fn download(http: &reqwest::Client, location: &str, token: &str) -> Vec<u8> {
    let res = http
        .get(format!("{location}/$value"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "GET {location}/$value");
    res.bytes().await.unwrap().to_vec()
}

pub(crate) mod cluster;
pub(crate) mod interop;
