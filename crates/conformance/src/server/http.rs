//! Requests as the server check sends them: through reqwest, or written by hand on
//! a TCP socket when the request must be malformed (a lying `Content-Length`, a
//! body cut short, a body held open); and each as a curl-like script line.

use std::fmt::Write as _;
use std::time::Duration;

use http::Method;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// An answer: status, headers and the whole body.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// One line: status, the headers that matter, and the start of the body.
    pub(crate) fn brief(&self) -> String {
        let mut out = self.status.to_string();
        for name in ["location", "content-type", "retry-after"] {
            if let Some(v) = self.header(name) {
                let _ = write!(out, " {name}: {v};");
            }
        }
        if self.body.is_empty() {
            out.push_str(" (empty body)");
        } else {
            let text = redact_upload_urls(&String::from_utf8_lossy(&self.body));
            let text: String = text.chars().take(240).collect();
            let _ = write!(out, " {}", text.trim());
            if self.body.len() > 240 {
                out.push('…');
            }
        }
        out
    }
}

/// Replaces the query of every `uploadUrl` in a JSON text by `<credential>`: the
/// credential never reaches a script or a message.
pub(crate) fn redact_upload_urls(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("uploadurl\"") {
        let after_key = search + found + "uploadurl\"".len();
        search = after_key;
        // `: "` with any spacing, then the value up to its closing quote.
        let rest = &text[after_key..];
        let Some(colon) = rest
            .find(|c: char| !c.is_whitespace())
            .filter(|&i| rest[i..].starts_with(':'))
        else {
            continue;
        };
        let after_colon = &rest[colon + 1..];
        let Some(quote) = after_colon
            .find(|c: char| !c.is_whitespace())
            .filter(|&i| after_colon[i..].starts_with('"'))
        else {
            continue;
        };
        let value_start = after_key + colon + 1 + quote + 1;
        let value_len = text[value_start..]
            .find('"')
            .unwrap_or(text.len() - value_start);
        let value = &text[value_start..value_start + value_len];
        if let Some(q) = value.find('?') {
            out.push_str(&text[done..value_start + q]);
            out.push_str("?<credential>");
            done = value_start + value_len;
        }
        search = value_start + value_len;
    }
    out.push_str(&text[done..]);
    out
}

/// The `error.code` of a Graph error body, if the body is one.
pub(crate) fn graph_error_code(body: &[u8]) -> Option<ErrorCodes> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    error.get("message")?;
    let code = error.get("code")?.as_str()?.to_owned();
    // Live answers write `innerError`, the docs' schema `innererror`.
    let inner = error
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("innerError"))
        .and_then(|(_, v)| v.get("code")?.as_str().map(str::to_owned));
    Some(ErrorCodes { code, inner })
}

/// The codes of a Graph error answer: top-level and `innerError.code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ErrorCodes {
    pub(crate) code: String,
    pub(crate) inner: Option<String>,
}

impl ErrorCodes {
    /// The most specific code.
    pub(crate) fn detail(&self) -> &str {
        self.inner.as_deref().unwrap_or(&self.code)
    }

    /// Whether these are `code` with `inner`.
    pub(crate) fn are(&self, code: &str, inner: Option<&str>) -> bool {
        self.code == code && self.inner.as_deref() == inner
    }
}

impl std::fmt::Display for ErrorCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "{}/{inner}", self.code),
            None => f.write_str(&self.code),
        }
    }
}

/// A request to send, with what the script shows of it.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// The URL as the script shows it (credential redacted).
    pub(crate) shown_url: String,
    /// Send `Authorization: Bearer {token}`.
    pub(crate) bearer: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// What the body is, for the script (`bytes A..=B of file K`, or the JSON itself).
    pub(crate) body_note: Option<String>,
    pub(crate) json: bool,
}

impl Outgoing {
    pub(crate) fn new(method: Method, url: Url, shown_url: String) -> Self {
        Self {
            method,
            url,
            shown_url,
            bearer: None,
            headers: Vec::new(),
            body: Vec::new(),
            body_note: None,
            json: false,
        }
    }

    pub(crate) fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_owned());
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn json_body(mut self, value: &serde_json::Value) -> Self {
        self.body = value.to_string().into_bytes();
        self.json = true;
        self
    }

    pub(crate) fn bytes(mut self, body: Vec<u8>, note: String) -> Self {
        self.body = body;
        self.body_note = Some(note);
        self
    }

    /// The request as a curl command line; `content_length` shows a hand-written
    /// `Content-Length`.
    pub(crate) fn curl(&self, content_length: Option<u64>) -> String {
        let mut line = format!("curl -sS -X {} '{}'", self.method, self.shown_url);
        if self.bearer.is_some() {
            line.push_str(" -H 'Authorization: Bearer $TOKEN'");
        }
        for (name, value) in &self.headers {
            let _ = write!(line, " -H '{name}: {value}'");
        }
        if let Some(n) = content_length {
            let _ = write!(line, " -H 'Content-Length: {n}'");
        }
        if self.json {
            let _ = write!(
                line,
                " -H 'Content-Type: application/json' --data '{}'",
                String::from_utf8_lossy(&self.body)
            );
        } else if !self.body.is_empty() {
            line.push_str(" --data-binary @-");
        }
        line
    }

    /// Sends the request through reqwest and reads the whole answer.
    pub(crate) async fn send(&self, client: &reqwest::Client) -> Result<Reply, String> {
        let mut request = client.request(self.method.clone(), self.url.clone());
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if self.json {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if !self.body.is_empty() || self.method == Method::PUT || self.method == Method::POST {
            request = request.body(self.body.clone());
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| describe(&e))?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// The request head as written by hand: HTTP/1.1, `Connection: close`, and the
    /// given `Content-Length`.
    fn raw_head(&self, content_length: u64) -> Result<String, String> {
        let host = self.url.host_str().ok_or("the URL has no host")?;
        let port = self
            .url
            .port_or_known_default()
            .ok_or("the URL has no port")?;
        let target = match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let mut head = format!(
            "{} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n",
            self.method
        );
        if let Some(token) = &self.bearer {
            let _ = write!(head, "Authorization: Bearer {token}\r\n");
        }
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(head, "Content-Length: {content_length}\r\n\r\n");
        Ok(head)
    }
}

/// An error and its causes on one line.
pub(crate) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// A request written by hand on its own connection, possibly in pieces.
#[derive(Debug)]
pub(crate) struct RawConn {
    stream: TcpStream,
}

impl RawConn {
    /// Connects and writes the head (announcing `content_length` body bytes) and
    /// `first` body bytes.
    pub(crate) async fn start(
        request: &Outgoing,
        content_length: u64,
        first: &[u8],
        timeout: Duration,
    ) -> Result<Self, String> {
        let head = request.raw_head(content_length)?;
        let host = request.url.host_str().ok_or("the URL has no host")?;
        let port = request
            .url
            .port_or_known_default()
            .ok_or("the URL has no port")?;
        let connect = TcpStream::connect((host, port));
        let mut stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("writing the request failed: {e}"))?;
        if !first.is_empty() {
            stream
                .write_all(first)
                .await
                .map_err(|e| format!("writing the body failed: {e}"))?;
        }
        Ok(Self { stream })
    }

    /// Writes more body bytes. A failure is not reported: the server may have
    /// answered and closed already, which [`RawConn::answer`] shows.
    pub(crate) async fn send(&mut self, more: &[u8]) {
        let _ = self.stream.write_all(more).await;
    }

    /// Reads the answer until the server closes the connection.
    pub(crate) async fn answer(mut self, timeout: Duration) -> Result<Reply, String> {
        let mut raw = Vec::new();
        let read = tokio::time::timeout(timeout, async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    // A reset after the answer arrived still leaves the answer.
                    Err(e) if !raw.is_empty() => {
                        let _ = e;
                        return Ok(());
                    }
                    Err(e) => return Err(format!("reading the answer failed: {e}")),
                }
            }
        })
        .await
        .map_err(|_| "no answer in time".to_owned())?;
        read?;
        parse_response(&raw)
    }
}

/// Parses an HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> Result<Reply, String> {
    if raw.is_empty() {
        return Err("the connection closed without an answer".into());
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    let rest = &raw[end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest.get(..len)
            .ok_or("the answer's body is shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    // Every chunk needs at least a size line; the bound keeps a hostile answer finite.
    for _ in 0..=rest.len() {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk is cut off")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Err("the chunked body does not end".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn parses_length_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"hi"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcd");
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn upload_url_credentials_are_redacted() {
        let text = r#"{"uploadUrl":"http://h/uploads/1?authtoken=secret","x":1,"UploadUrl" : "https://a/b?k=v"}"#;
        let red = redact_upload_urls(text);
        assert!(!red.contains("secret") && !red.contains("k=v"), "{red}");
        assert!(red.contains("http://h/uploads/1?<credential>"));
    }

    #[test]
    fn graph_error_codes_are_read_only_from_graph_errors() {
        let codes = graph_error_code(br#"{"error":{"code":"invalidRange","message":"m"}}"#);
        assert_eq!(
            codes.map(|c| c.to_string()).as_deref(),
            Some("invalidRange")
        );
        let codes = graph_error_code(
            br#"{"error":{"code":"invalidRange","message":"m","innererror":{"code":"fragmentOverlap"}}}"#,
        )
        .unwrap();
        assert!(codes.are("invalidRange", Some("fragmentOverlap")));
        assert_eq!(codes.detail(), "fragmentOverlap");
        assert_eq!(graph_error_code(b"invalidRange"), None);
        assert_eq!(graph_error_code(br#"{"error":{"code":"x"}}"#), None);
    }
}
