//! The server on 127.0.0.1 driven over real HTTP: every route and error of the contract.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsession_core::Limits;
use upsession_server_hyper::{Config, Fsync, Running, Server};
use upsession_testbed::kit::expect_graph_error;

const TOKEN: &str = "test-token";

struct Harness {
    server: Option<Running>,
    dir: tempfile::TempDir,
    http: Client,
    base: String,
}

fn limits() -> Limits {
    Limits::default()
        .with_min_size(10)
        .with_max_size(10_000_000)
        .with_max_fragment(1000)
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    async fn start_with(f: impl FnOnce(Config) -> Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(config(dir.path(), f)).await.unwrap();
        // Requests go to the socket, whatever public URL the server hands out.
        let base = format!("http://{}/v1.0", server.local_addr());
        Self {
            server: Some(server),
            dir,
            http: Client::new(),
            base,
        }
    }

    async fn restart(&mut self) {
        let old = self.server.take().unwrap();
        let addr = old.local_addr();
        old.shutdown().await;
        let server = Server::start(config(self.dir.path(), |c| c.with_listen(addr)))
            .await
            .unwrap();
        self.server = Some(server);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn graph(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn draft(&self) -> String {
        let (status, body) = self
            .graph(Method::POST, "/me/messages", Some(json!({"subject": "s"})))
            .await;
        assert_eq!(status, 201);
        body["id"].as_str().unwrap().to_owned()
    }

    async fn session(&self, item_path: &str, size: u64) -> String {
        let body =
            json!({"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": size}});
        let (status, json) = self
            .graph(
                Method::POST,
                &format!("{item_path}/attachments/createUploadSession"),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{json}");
        json["uploadUrl"].as_str().unwrap().to_owned()
    }

    async fn put(&self, url: &str, data: &[u8], first: u64, last: u64) -> reqwest::Response {
        self.http
            .put(url)
            .header(
                "Content-Range",
                format!("bytes {first}-{last}/{}", data.len()),
            )
            .body(data[first as usize..=last as usize].to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A PUT that may get no answer at all.
    async fn put_raw(
        &self,
        url: &str,
        data: &[u8],
        first: u64,
        last: u64,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .put(url)
            .header(
                "Content-Range",
                format!("bytes {first}-{last}/{}", data.len()),
            )
            .body(data[first as usize..=last as usize].to_vec())
            .send()
            .await
    }

    /// Uploads `data` in fragments of `frag`; returns the final answer.
    async fn upload(&self, url: &str, data: &[u8], frag: usize) -> reqwest::Response {
        let mut start = 0;
        loop {
            let last = (start + frag).min(data.len()) - 1;
            let res = self.put(url, data, start as u64, last as u64).await;
            if last + 1 == data.len() {
                return res;
            }
            assert_eq!(res.status(), 200);
            start = last + 1;
        }
    }
}

fn config(dir: &std::path::Path, f: impl FnOnce(Config) -> Config) -> Config {
    f(Config::new(dir)
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_token(TOKEN)
        .with_limits(limits())
        .with_fsync(Fsync::Never)
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(2)))
}

fn data(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    (0..len).map(|_| rng.u8(..)).collect()
}

async fn json_of(res: reqwest::Response) -> Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn health_needs_no_token_and_graph_routes_do() {
    let h = Harness::start().await;
    let health = h
        .http
        .get(h.url("").replace("/v1.0", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let res = h
        .http
        .post(h.url("/me/messages"))
        .json(&json!({"subject": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("request-id"));
    let body = json_of(res).await;
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(body["error"]["innerError"]["request-id"].is_string());
    let wrong = h
        .http
        .post(h.url("/me/messages"))
        .bearer_auth("nope")
        .json(&json!({"subject": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn whole_upload_then_attachment_is_listed_fetched_and_downloaded() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(2500);
    let url = h.session(&format!("/me/messages/{id}"), 2500).await;

    let first = h.put(&url, &data, 0, 999).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/json");
    let body = json_of(first).await;
    assert_eq!(body["nextExpectedRanges"], json!(["1000-2499"]));
    assert!(
        body.get("id").is_none(),
        "an intermediate answer never has an id"
    );
    assert!(body["expirationDateTime"].as_str().unwrap().ends_with('Z'));

    assert_eq!(h.put(&url, &data, 1000, 1999).await.status(), 200);
    let last = h.put(&url, &data, 2000, 2499).await;
    assert_eq!(last.status(), 201);
    assert!(last.headers().get("content-type").is_none());
    let location = last.headers()["location"].to_str().unwrap().to_owned();
    assert!(last.bytes().await.unwrap().is_empty());

    let meta = h
        .http
        .get(&location)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    let meta = json_of(meta).await;
    assert_eq!(
        (meta["name"].as_str(), meta["size"].as_u64()),
        (Some("f.bin"), Some(2500))
    );
    let aid = meta["id"].as_str().unwrap();
    assert!(location.ends_with(aid));

    let value = h
        .http
        .get(format!("{location}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(value.status(), 200);
    assert_eq!(value.headers()["content-length"], "2500");
    assert_eq!(
        Sha256::digest(value.bytes().await.unwrap()),
        Sha256::digest(&data)
    );

    let (status, list) = h
        .graph(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["value"][0]["id"], aid);
    let (_, item) = h
        .graph(Method::GET, &format!("/me/messages/{id}"), None)
        .await;
    assert_eq!(item["hasAttachments"], true);
}

#[tokio::test]
async fn events_calendar_view_beta_users_and_the_beta_spelling_all_open_sessions() {
    let h = Harness::start().await;
    let (status, ev) = h
        .graph(
            Method::POST,
            "/me/events",
            Some(json!({"Subject": "meeting"})),
        )
        .await;
    assert_eq!(status, 201);
    let ev = ev["id"].as_str().unwrap();
    let body = json!({"attachmentItem": {"attachmentType": "file", "name": "a", "size": 20}});
    for path in [
        format!("/me/events/{ev}/attachments/createUploadSession"),
        format!("/me/calendarView/{ev}/attachments/createUploadSession"),
        format!("/users/someone@example.com/events/{ev}/attachments/createUploadSession"),
        format!("/me/events/{ev}/attachments/whatever/createUploadSession"),
    ] {
        let (status, json) = h.graph(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, 201, "{path}: {json}");
        let url = json["uploadUrl"].as_str().unwrap();
        let parsed = reqwest::Url::parse(url).unwrap();
        assert!(parsed.path_segments().unwrap().count() >= 2);
        assert_eq!(parsed.query_pairs().count(), 1);
        assert!(!parsed.query().unwrap().contains('$'));
    }
    let beta = h.base.replace("/v1.0", "/beta");
    let res = h
        .http
        .post(format!(
            "{beta}/me/events/{ev}/attachments/createUploadSession"
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // A message id on the events route is unknown there.
    let msg = h.draft().await;
    let (status, json) = h
        .graph(
            Method::POST,
            &format!("/me/events/{msg}/attachments/createUploadSession"),
            Some(body),
        )
        .await;
    assert_eq!(
        (status.as_u16(), json["error"]["code"].as_str()),
        (404, Some("ErrorItemNotFound"))
    );
}

#[tokio::test]
async fn resend_of_final_fragment_answers_201_again_with_the_same_location() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(1500);
    let url = h.session(&format!("/me/messages/{id}"), 1500).await;
    let done = h.upload(&url, &data, 1000).await;
    assert_eq!(done.status(), 201);
    let location = done.headers()["location"].clone();
    for _ in 0..2 {
        let again = h.put(&url, &data, 1000, 1499).await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers()["location"], location);
    }
    // An earlier fragment re-sent after completion is answered as the first time.
    let early = h.put(&url, &data, 0, 999).await;
    assert_eq!(early.status(), 200);
    assert_eq!(
        json_of(early).await["nextExpectedRanges"],
        json!(["1000-1499"])
    );
    let (_, list) = h
        .graph(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(
        list["value"].as_array().unwrap().len(),
        1,
        "re-sends make no second attachment"
    );
}

#[tokio::test]
async fn resend_of_an_acknowledged_fragment_is_answered_not_rejected() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    let again = h.put(&url, &data, 0, 999).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        json_of(again).await["nextExpectedRanges"],
        json!(["1000-2999"])
    );
}

#[tokio::test]
async fn bad_fragments_get_graph_errors_and_change_nothing() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    let check = |res: reqwest::Response, status: u16, code: &'static str| async move {
        expect_graph_error(res, status, code).await;
    };
    check(
        h.put(&url, &data, 1000, 1999).await,
        416,
        "fragmentOutOfOrder",
    )
    .await;
    check(
        h.put(&url, &data, 0, 1000).await,
        413,
        "maxFragmentLengthExceeded",
    )
    .await;
    let raw = |range: &'static str, body: Vec<u8>| {
        h.http
            .put(&url)
            .header("Content-Range", range)
            .body(body)
            .send()
    };
    check(
        raw("bytes=0-9/3000", vec![0; 10]).await.unwrap(),
        400,
        "invalidRange",
    )
    .await;
    check(
        raw("bytes 0-9/2999", vec![0; 10]).await.unwrap(),
        400,
        "invalidRange",
    )
    .await;
    check(
        raw("bytes 0-9/3000", vec![0; 9]).await.unwrap(),
        400,
        "fragmentLengthMismatch",
    )
    .await;
    check(
        h.http.put(&url).body(vec![0; 10]).send().await.unwrap(),
        400,
        "invalidRange",
    )
    .await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    check(h.put(&url, &data, 500, 1499).await, 416, "fragmentOverlap").await;
    let status = json_of(h.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status["nextExpectedRanges"], json!(["1000-2999"]));
}

#[tokio::test]
async fn create_session_refusals() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let path = format!("/me/messages/{id}/attachments/createUploadSession");
    let item = |size: u64| json!({"AttachmentItem": {"attachmentType": "file", "name": "n", "size": size}});
    let (s, b) = h.graph(Method::POST, &path, Some(item(9))).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (
            400,
            Some("ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
        )
    );
    let (s, _) = h.graph(Method::POST, &path, Some(item(10_000_001))).await;
    assert_eq!(s, 413);
    let (s, b) = h.graph(Method::POST, &path, Some(json!({"nope": 1}))).await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (400, Some("RequestBodyRead"))
    );
    let (s, b) = h
        .graph(
            Method::POST,
            "/me/messages/unknown/attachments/createUploadSession",
            Some(item(20)),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"]["code"].as_str()),
        (404, Some("ErrorItemNotFound"))
    );
    let huge = "x".repeat(100 * 1024);
    let (s, _) = h
        .graph(Method::POST, "/me/messages", Some(json!({"subject": huge})))
        .await;
    assert_eq!(s, 413);
    let (s, _) = h.graph(Method::GET, "/me/contacts", None).await;
    assert_eq!(s, 404);
    let (s, _) = h.graph(Method::DELETE, "/me/messages", None).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn tampered_missing_and_cross_session_credentials_are_refused() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let a = h.session(&format!("/me/messages/{id}"), 100).await;
    let b = h.session(&format!("/me/messages/{id}"), 100).await;
    let (a_path, a_query) = a.split_once('?').unwrap();
    let (_, b_query) = b.split_once('?').unwrap();
    let mut tampered = a.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for url in [
        a_path.to_owned(),
        format!("{a_path}?{b_query}"),
        tampered,
        format!("{a}&{a_query}"),
    ] {
        let res = h.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 401, "{url}");
    }
    // An Authorization header on the uploadUrl is neither needed nor refused.
    let res = h.http.get(&a).bearer_auth("anything").send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn cancel_answers_204_and_the_session_is_gone_but_a_completed_attachment_stays() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let url = h.session(&format!("/me/messages/{id}"), 100).await;
    let res = h.http.delete(&url).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(h.http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 404);

    let data = data(100);
    let url = h.session(&format!("/me/messages/{id}"), 100).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 204);
    let (_, list) = h
        .graph(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let parts: Vec<_> = std::fs::read_dir(h.dir.path().join("sessions"))
        .unwrap()
        .collect();
    assert!(
        parts.is_empty(),
        "cancelled sessions leave no files: {parts:?}"
    );
}

#[tokio::test]
async fn expired_sessions_answer_404_and_their_bytes_are_swept() {
    let h = Harness::start_with(|c| c.with_limits(limits().with_ttl(Duration::from_secs(1)))).await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    let sessions = h.dir.path().join("sessions");
    // Bounded wait for the sweep (the TTL is 1 s).
    let mut swept = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if std::fs::read_dir(&sessions).unwrap().next().is_none() {
            swept = true;
            break;
        }
    }
    assert!(swept, "expired session files were not removed");
    let res = h.put(&url, &data, 1000, 1999).await;
    assert!(
        res.status() == 404 || res.status() == 401,
        "{}",
        res.status()
    );
}

#[tokio::test]
async fn acknowledged_fragments_survive_a_restart_and_the_upload_completes() {
    let mut h = Harness::start().await;
    let id = h.draft().await;
    let data = data(2500);
    let url = h.session(&format!("/me/messages/{id}"), 2500).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    h.restart().await;
    let status = json_of(h.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status["nextExpectedRanges"], json!(["1000-2499"]));
    assert_eq!(h.put(&url, &data, 1000, 1999).await.status(), 200);
    let done = h.put(&url, &data, 2000, 2499).await;
    assert_eq!(done.status(), 201);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    h.restart().await;
    let value = h
        .http
        .get(format!("{location}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        Sha256::digest(value.bytes().await.unwrap()),
        Sha256::digest(&data)
    );
}

/// Sends a PUT over a raw socket with `body` but announcing `announced` bytes.
async fn raw_put(url: &str, range: &str, announced: usize, body: &[u8]) -> tokio::net::TcpStream {
    let parsed = reqwest::Url::parse(url).unwrap();
    let addr = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let target = format!("{}?{}", parsed.path(), parsed.query().unwrap());
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Range: {range}\r\nContent-Length: {announced}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

#[tokio::test]
async fn a_cut_off_fragment_leaves_no_trace() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    let stream = raw_put(&url, "bytes 0-999/3000", 1000, &data[..400]).await;
    drop(stream); // the connection dies mid-body
    // Bounded wait until the server has noticed and freed the session.
    let mut expected = Value::Null;
    for _ in 0..50 {
        let res = h.put(&url, &data, 0, 999).await;
        if res.status() == 200 {
            expected = json_of(res).await["nextExpectedRanges"].clone();
            break;
        }
        assert_eq!(
            res.status(),
            409,
            "only 'busy' may come before the server notices"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        expected,
        json!(["1000-2999"]),
        "the full re-send was accepted from byte 0"
    );
    let done = h.upload(&url, &data, 1000).await;
    assert!(done.status() == 200 || done.status() == 201);
}

#[tokio::test]
async fn a_retry_of_a_stalled_fragment_takes_over_at_once() {
    // A body that stalls would hold its fragment for a minute: the retry must not wait.
    let h =
        Harness::start_with(|c| c.with_timeouts(Duration::from_secs(5), Duration::from_secs(60)))
            .await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    let mut stale = raw_put(&url, "bytes 0-999/3000", 1000, &data[..500]).await;
    // Wait until the server holds the stale fragment (its bytes are being received).
    let mut held = false;
    for _ in 0..100 {
        let res = h.put(&url, &data, 1000, 1999).await;
        if res.status() == 409 {
            expect_graph_error(res, 409, "invalidRange/fragmentInProgress").await;
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        held,
        "another offset was never refused while the fragment was in flight"
    );
    let retry = tokio::time::timeout(Duration::from_secs(20), h.put(&url, &data, 0, 999))
        .await
        .expect("the retry is answered without waiting for the stalled body");
    assert_eq!(retry.status(), 200);
    assert_eq!(
        json_of(retry).await["nextExpectedRanges"],
        json!(["1000-2999"])
    );
    // The stale request is told, and its bytes never count.
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), stale.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 409"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let done = h.upload(&url, &data, 1000).await;
    assert_eq!(done.status(), 201);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    let stored = h
        .http
        .get(format!("{location}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&stored[..], &data[..]);
}

#[tokio::test]
async fn a_stalled_body_times_out_and_frees_the_session() {
    let h = Harness::start_with(|c| {
        c.with_timeouts(Duration::from_secs(5), Duration::from_millis(300))
    })
    .await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    let mut stalled = raw_put(&url, "bytes 0-999/3000", 1000, &data[..10]).await;
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
}

#[tokio::test]
async fn public_url_shapes_upload_urls_and_locations() {
    let h = Harness::start_with(|c| c.with_public_url("https://files.example.com/")).await;
    let id = h.draft().await;
    let url = h.session(&format!("/me/messages/{id}"), 100).await;
    assert!(
        url.starts_with("https://files.example.com/uploads/"),
        "{url}"
    );
}

#[tokio::test]
async fn metrics_count_sessions_bytes_and_errors() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(100);
    let url = h.session(&format!("/me/messages/{id}"), 100).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    let _ = h
        .http
        .get(h.url("/me/messages/none"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let text = h
        .http
        .get(h.url("").replace("/v1.0", "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("upsession_sessions_created_total 1"),
        "{text}"
    );
    assert!(
        text.contains("upsession_sessions_completed_total 1"),
        "{text}"
    );
    assert!(
        text.contains("upsession_received_bytes_total 100"),
        "{text}"
    );
    assert!(text.contains("code=\"ErrorItemNotFound\""), "{text}");
    assert!(!text.contains("authtoken"), "no credential in metrics");

    // Without an Accept for it, the classic text format; Prometheus gets OpenMetrics.
    // Both also under the versions, as every route.
    let page = |path: &str, accept: Option<&str>| {
        let mut req = h.http.get(h.url("").replace("/v1.0", path));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send()
    };
    let classic = page("/v1.0/metrics", None).await.unwrap();
    assert_eq!(classic.status(), 200);
    assert_eq!(
        classic.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = classic.text().await.unwrap();
    assert!(
        classic.contains("# TYPE upsession_sessions_created_total counter"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let open = page("/beta/metrics", Some(prometheus)).await.unwrap();
    assert_eq!(
        open.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));
    assert_eq!(page("/v1.0/healthz", None).await.unwrap().status(), 200);
    assert_eq!(page("/beta/healthz", None).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_fragment_refused_from_its_headers_is_answered_even_if_the_client_sends_the_body_first() {
    let h = Harness::start().await;
    let id = h.draft().await;
    let size = 4 * 1024 * 1024;
    let data = data(size);
    let url = h.session(&format!("/me/messages/{id}"), size as u64).await;
    // One 4 MiB fragment, over the 1000-byte maximum: refused from the headers while
    // the client is still sending, as an HTTP client that writes the body before
    // reading does.
    let range = format!("bytes 0-{}/{size}", size - 1);
    let mut stream = raw_put(&url, &range, size, &[]).await;
    // A client like httpx fails on a write error before it reads any answer.
    stream
        .write_all(&data)
        .await
        .expect("the server reads the refused body instead of resetting");
    let mut answer = Vec::new();
    let mut buf = vec![0; 4096];
    while !String::from_utf8_lossy(&answer).contains("maxFragmentLengthExceeded") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("no answer, {e}: {}", String::from_utf8_lossy(&answer)));
        assert!(
            n > 0,
            "connection closed before the answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 413"));
}

#[tokio::test]
async fn the_outlook_dialect_answers_as_outlook_does_and_its_location_resolves() {
    let h = Harness::start_with(|c| c.with_dialect(upsession_core::Dialect::OUTLOOK)).await;
    let id = h.draft().await;
    let data = data(2500);
    let body = json!({"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 2500}});
    let (status, created) = h
        .graph(
            Method::POST,
            &format!("/me/messages/{id}/attachments/createUploadSession"),
            Some(body),
        )
        .await;
    assert_eq!(status, 201);
    // Closed ranges and camelCase unless asked otherwise: what the SDKs read.
    assert_eq!(created["nextExpectedRanges"], json!(["0-2499"]));
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    let first = json_of(h.put(&url, &data, 0, 999).await).await;
    assert_eq!(first["nextExpectedRanges"], json!(["1000-2499"]));
    assert!(
        first["expirationDateTime"].is_string() && first.get("@odata.context").is_some(),
        "{first}"
    );
    // Outlook's expiry "remains the same as returned by the initial uploadSession".
    assert_eq!(first["expirationDateTime"], created["expirationDateTime"]);
    assert_eq!(h.put(&url, &data, 1000, 1999).await.status(), 200);
    let done = h.put(&url, &data, 2000, 2499).await;
    assert_eq!(done.status(), 201);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("/api/v2.0/me/Messages('"), "{location}");
    let path = reqwest::Url::parse(&location).unwrap().path().to_owned();
    let origin = h.base.trim_end_matches("/v1.0");
    let meta = h
        .http
        .get(format!("{origin}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(meta).await["size"], 2500);
    let value = h
        .http
        .get(format!("{origin}{path}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        Sha256::digest(value.bytes().await.unwrap()),
        Sha256::digest(&data)
    );
}

#[tokio::test]
async fn the_onedrive_dialect_answers_202_refuses_resends_and_odd_fragments() {
    let q = 320 * 1024;
    let h = Harness::start_with(|c| {
        c.with_dialect(upsession_core::Dialect::ONEDRIVE)
            .with_limits(limits().with_max_fragment(4 * q as u64))
    })
    .await;
    let id = h.draft().await;
    let data = data(2 * q + 7);
    let body =
        json!({"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": data.len()}});
    let (status, created) = h
        .graph(
            Method::POST,
            &format!("/me/messages/{id}/attachments/createUploadSession"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "OneDrive answers creation with 200");
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    let odd = h.put(&url, &data, 0, q as u64 - 2).await;
    assert_eq!(odd.status(), 400);
    let first = h.put(&url, &data, 0, q as u64 - 1).await;
    assert_eq!(first.status(), 202);
    assert_eq!(
        json_of(first).await["nextExpectedRanges"],
        json!([format!("{q}-")])
    );
    let again = h.put(&url, &data, 0, q as u64 - 1).await;
    assert_eq!(again.status(), 416);
    expect_graph_error(again, 416, "invalidRange/fragmentOverlap").await;
    assert_eq!(
        h.put(&url, &data, q as u64, 2 * q as u64 - 1)
            .await
            .status(),
        202
    );
    assert_eq!(
        h.put(&url, &data, 2 * q as u64, 2 * q as u64 + 6)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_before_reading_the_body() {
    use upsession_core::throttle::ThrottleLimits;
    let limits = ThrottleLimits::OUTLOOK.with_upload_bytes(1500, Duration::from_secs(300));
    let h = Harness::start_with(|c| c.with_throttle(limits)).await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    let throttled = h.put(&url, &data, 1000, 1999).await;
    assert_eq!(throttled.status(), 429);
    let retry: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(
        json_of(throttled).await["error"]["code"],
        "ApplicationThrottled"
    );
    let status = json_of(h.http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        status["nextExpectedRanges"],
        json!(["1000-2999"]),
        "the throttled fragment was not stored"
    );
}

#[tokio::test]
async fn faults_are_injected_as_specified_and_inspectable() {
    let h = Harness::start_with(|c| c.with_admin_token("admin")).await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    let admin = |method: Method, path: &str| {
        h.http
            .request(method, h.url("").replace("/v1.0", path))
            .bearer_auth("admin")
    };

    let set = |spec: &'static str| admin(Method::PUT, "/_upsession/faults").body(spec).send();
    assert_eq!(set("seed=1,put:503:1.0").await.unwrap().status(), 200);
    let res = h.put(&url, &data, 0, 999).await;
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()["retry-after"].to_str().unwrap()
        ),
        (503, "1")
    );

    // Reset: the connection drops, nothing is kept.
    set("seed=1,put:reset:1.0").await.unwrap();
    assert!(h.put_raw(&url, &data, 0, 999).await.is_err(), "no answer");
    // Lost: the fragment is kept, but no answer comes.
    set("seed=1,put:lost:1.0").await.unwrap();
    assert!(h.put_raw(&url, &data, 0, 999).await.is_err(), "no answer");
    set("").await.unwrap();
    let status = json_of(h.http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        status["nextExpectedRanges"],
        json!(["1000-2999"]),
        "the lost fragment was stored, the reset one was not"
    );

    let bad = set("put:explode:1").await.unwrap();
    assert_eq!(bad.status(), 400);
    let sessions: Value = admin(Method::GET, "/_upsession/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &sessions["value"][0];
    assert_eq!(s["received"], json!([[0, 1000]]));
    let statuses: Vec<u64> = s["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(&statuses[..3], &[503, 500, 200], "{s}");
    assert_eq!(s["requests"][2]["dropped"], true);
    // Without the admin token, the routes do not answer.
    let denied = h
        .http
        .get(h.url("").replace("/v1.0", "/_upsession/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
}

#[tokio::test]
async fn the_fragment_that_crosses_the_message_size_limit_is_refused_mid_upload() {
    let h = Harness::start_with(|c| c.with_message_size_limit(250)).await;
    let id = h.draft().await;
    let data = data(200);
    let url = h.session(&format!("/me/messages/{id}"), 200).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    // The session opens, as on the live service; its fragment past 250 B does not.
    let more = &data[..100];
    let url = h.session(&format!("/me/messages/{id}"), 100).await;
    assert_eq!(h.put(&url, more, 0, 39).await.status(), 200);
    expect_graph_error(
        h.put(&url, more, 40, 99).await,
        413,
        "ErrorMessageSizeExceeded",
    )
    .await;
    let (_, list) = h
        .graph(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_client_that_hangs_up_after_its_body_never_leaves_the_session_busy() {
    let h = Harness::start_with(|c| c.with_fsync(Fsync::Always)).await;
    let id = h.draft().await;
    let data = data(3000);
    let url = h.session(&format!("/me/messages/{id}"), 3000).await;
    for _ in 0..20 {
        // The whole body, then the connection closes before the answer is read.
        let stream = raw_put(&url, "bytes 0-999/3000", 1000, &data[..1000]).await;
        drop(stream);
    }
    // Bounded: the session must settle (the fragment kept or not), never stay busy.
    let mut settled = false;
    for _ in 0..100 {
        let res = h.put(&url, &data, 0, 999).await;
        if res.status() == 200 {
            settled = true;
            break;
        }
        assert_eq!(res.status(), 409);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "the session stayed busy after clients hung up");
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in
/// `dir`; returns (cert path, key path, cert PEM).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.pem())
}

#[tokio::test]
async fn with_a_certificate_it_serves_https_and_hands_out_https_urls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), |c| c.with_tls(&cert, &key)))
        .await
        .unwrap();
    assert!(
        server.base_url().starts_with("https://127.0.0.1:"),
        "{}",
        server.base_url()
    );
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = server.base_url();
    let draft: Value = http
        .post(format!("{base}/me/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"subject": "tls"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = json!({"AttachmentItem": {"attachmentType": "file", "name": "t.bin", "size": 1500}});
    let res = http
        .post(format!(
            "{base}/me/messages/{}/attachments/createUploadSession",
            draft["id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    let url = json_of(res).await["uploadUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let data = data(1500);
    for (first, last, status) in [(0, 999, 200), (1000, 1499, 201)] {
        let res = http
            .put(&url)
            .header("Content-Range", format!("bytes {first}-{last}/1500"))
            .body(data[first..=last].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        if status == 201 {
            let location = res.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.starts_with("https://"), "{location}");
            let bytes = http
                .get(format!("{location}/$value"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(&bytes[..], &data[..]);
        }
    }
    // A plain-http client gets nothing it could mistake for an answer.
    let plain = Client::new()
        .get(format!("http://{}/healthz", server.local_addr()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = Server::start(config(dir.path(), |c| {
        c.with_tls(dir.path().join("nope.pem"), dir.path().join("nope.key"))
    }))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn an_authorization_header_on_the_upload_url_is_refused_only_when_asked() {
    // By default a client may send one (the contract: the server does not mind).
    let h = Harness::start().await;
    let id = h.draft().await;
    let data = data(1500);
    let url = h.session(&format!("/me/messages/{id}"), 1500).await;
    let res = h
        .http
        .put(&url)
        .bearer_auth(TOKEN)
        .header("Content-Range", "bytes 0-999/1500")
        .body(data[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Under the flag, the same request is 401 and changes nothing.
    let strict = Harness::start_with(Config::with_upload_authorization_refused).await;
    let id = strict.draft().await;
    let url = strict.session(&format!("/me/messages/{id}"), 1500).await;
    let res = strict
        .http
        .put(&url)
        .bearer_auth(TOKEN)
        .header("Content-Range", "bytes 0-999/1500")
        .body(data[..1000].to_vec())
        .send()
        .await
        .unwrap();
    let seen = expect_graph_error(res, 401, "InvalidAuthenticationToken").await;
    assert!(
        seen.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pre-authenticated")
    );
    assert_eq!(strict.put(&url, &data, 0, 999).await.status(), 200);
    // As a fault of the test double, too.
    let faulty = Harness::start_with(|c| c.with_faults("put:auth401:1".parse().unwrap())).await;
    let id = faulty.draft().await;
    let url = faulty.session(&format!("/me/messages/{id}"), 1500).await;
    let res = faulty
        .http
        .put(&url)
        .header("Authorization", "Bearer leaked")
        .header("Content-Range", "bytes 0-999/1500")
        .body(data[..1000].to_vec())
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 401, "InvalidAuthenticationToken").await;
    assert_eq!(faulty.put(&url, &data, 0, 999).await.status(), 200);
}

#[tokio::test]
async fn a_draft_created_in_the_drafts_folder_takes_an_upload_session() {
    let h = Harness::start().await;
    let (status, draft) = h
        .graph(
            Method::POST,
            "/me/mailFolders/Drafts/messages",
            Some(json!({"subject": "as python-o365 does"})),
        )
        .await;
    assert_eq!(status, 201);
    let id = draft["id"].as_str().unwrap();
    let data = data(1500);
    let url = h
        .session(&format!("/me/mailFolders/Drafts/messages/{id}"), 1500)
        .await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    let (status, list) = h
        .graph(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(
        (status.as_u16(), list["value"][0]["size"].as_u64()),
        (200, Some(1500))
    );
}
