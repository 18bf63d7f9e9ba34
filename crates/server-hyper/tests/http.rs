//! The server on 127.0.0.1 driven over real HTTP: every route and error of the contract.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upsession_core::Limits;
use upsession_server_hyper::{Config, Fsync, Server};
use upsession_testbed::kit::{
    Graph, TOKEN, TestServer, attachment, client_trusting, expect_graph_error, json_of, location,
    partial_put, read_answer, seeded, self_signed, server_config, sha256_hex,
};

#[path = "http/retention.rs"]
mod retention;

fn limits() -> Limits {
    Limits::default()
        .with_min_size(10)
        .with_max_size(10_000_000)
        .with_max_fragment(1000)
}

/// This file's limits and timeouts on the kit's configuration.
fn config(c: Config) -> Config {
    c.with_limits(limits())
        .with_timeouts(Duration::from_secs(5), Duration::from_secs(2))
}

/// [`config`]'s header timeout with a body idle timeout of `idle`.
fn body_idle(idle: Duration) -> impl FnOnce(Config) -> Config {
    move |c| c.with_timeouts(Duration::from_secs(5), idle)
}

/// The kit's server with [`config`], then `change`.
async fn start_with(change: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start_with(|c| change(config(c))).await
}

async fn start() -> TestServer {
    start_with(|c| c).await
}

fn data(len: usize) -> Vec<u8> {
    seeded(len, len as u64)
}

/// A server with `change`, a draft on it, and [`data`] of some length with a
/// session open for it.
struct Opened {
    h: TestServer,
    /// The draft's id.
    id: String,
    data: Vec<u8>,
    url: String,
}

async fn opened(len: usize, change: impl FnOnce(Config) -> Config) -> Opened {
    let h = start_with(change).await;
    let id = h.draft().await;
    let url = h.session(&id, len).await;
    Opened {
        h,
        id,
        data: data(len),
        url,
    }
}

/// An answer's status and `error.code`.
fn error_code((status, body): &(StatusCode, Value)) -> (u16, Option<&str>) {
    (status.as_u16(), body["error"]["code"].as_str())
}

#[tokio::test]
async fn health_needs_no_token_and_graph_routes_do() {
    let h = start().await;
    let health = h
        .http
        .get(format!("{}/healthz", h.origin()))
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
    let (wrong, _) = Graph::new(h.base(), "nope")
        .call(Method::POST, "/me/messages", Some(json!({"subject": "x"})))
        .await;
    assert_eq!(wrong, 401);
}

#[tokio::test]
async fn whole_upload_then_attachment_is_listed_fetched_and_downloaded() {
    let Opened { h, id, data, url } = opened(2500, |c| c).await;

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
    let location = location(&last);
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

    let value = h.value(&location).await;
    assert_eq!(value.status(), 200);
    assert_eq!(value.headers()["content-length"], "2500");
    assert_eq!(sha256_hex(&value.bytes().await.unwrap()), sha256_hex(&data));

    let (status, list) = h
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["value"][0]["id"], aid);
    let (_, item) = h
        .call(Method::GET, &format!("/me/messages/{id}"), None)
        .await;
    assert_eq!(item["hasAttachments"], true);
}

#[tokio::test]
async fn a_download_answers_one_range_with_206_and_a_range_past_the_end_with_416() {
    let Opened { h, data, url, .. } = opened(2500, |c| c).await;
    let done = h.upload(&url, &data, 1000).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    let get = |range: Option<&'static str>, if_range: bool| {
        let mut req = h.http.get(format!("{location}/$value")).bearer_auth(TOKEN);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        if if_range {
            req = req.header("if-range", "\"some-etag\"");
        }
        req.send()
    };
    // One range, in each form: its bytes, their place and the total.
    for (range, from, to) in [
        ("bytes=0-0", 0, 1),
        ("bytes=100-1999", 100, 2000),
        ("bytes=2000-", 2000, 2500),
        ("bytes=-300", 2200, 2500),
        ("bytes=2400-9999", 2400, 2500),
    ] {
        let res = get(Some(range), false).await.unwrap();
        assert_eq!(res.status(), 206, "{range}");
        let headers = res.headers().clone();
        assert_eq!(
            headers["content-range"],
            format!("bytes {from}-{}/2500", to - 1),
            "{range}"
        );
        assert_eq!(
            headers["content-length"],
            (to - from).to_string(),
            "{range}"
        );
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(res.bytes().await.unwrap(), &data[from..to], "{range}");
    }
    // Nothing there: 416, saying the length, in Graph's error shape.
    let res = get(Some("bytes=2500-"), false).await.unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["content-range"], "bytes */2500");
    assert_eq!(json_of(res).await["error"]["code"], "invalidRange");
    // Ranges it does not serve (several, another unit, malformed) and an
    // If-Range it cannot check: the whole attachment, 200.
    for (range, if_range) in [
        (Some("bytes=0-1,5-9"), false),
        (Some("items=0-9"), false),
        (Some("bytes=9-1"), false),
        (Some("bytes=0-9"), true),
        (None, false),
    ] {
        let res = get(range, if_range).await.unwrap();
        assert_eq!(res.status(), 200, "{range:?}");
        assert_eq!(res.headers()["accept-ranges"], "bytes");
        assert!(res.headers().get("content-range").is_none());
        assert_eq!(res.bytes().await.unwrap(), data, "{range:?}");
    }
}

#[tokio::test]
async fn events_calendar_view_beta_users_and_the_beta_spelling_all_open_sessions() {
    let h = start().await;
    let ev = h
        .create_item("/me/events", json!({"Subject": "meeting"}))
        .await;
    let body = json!({"attachmentItem": {"attachmentType": "file", "name": "a", "size": 20}});
    for path in [
        format!("/me/events/{ev}/attachments/createUploadSession"),
        format!("/me/calendarView/{ev}/attachments/createUploadSession"),
        format!("/users/someone@example.com/events/{ev}/attachments/createUploadSession"),
        format!("/me/events/{ev}/attachments/whatever/createUploadSession"),
    ] {
        let (status, json) = h.call(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, 201, "{path}: {json}");
        let url = json["uploadUrl"].as_str().unwrap();
        let parsed = reqwest::Url::parse(url).unwrap();
        assert!(parsed.path_segments().unwrap().count() >= 2);
        assert_eq!(parsed.query_pairs().count(), 1);
        assert!(!parsed.query().unwrap().contains('$'));
    }
    let beta = Graph::new(format!("{}/beta", h.origin()), TOKEN);
    let (status, _) = beta
        .create_session(&format!("/me/events/{ev}"), body.clone())
        .await;
    assert_eq!(status, 201);
    // A message id on the events route is unknown there.
    let msg = h.draft().await;
    let answer = h.create_session(&format!("/me/events/{msg}"), body).await;
    assert_eq!(error_code(&answer), (404, Some("ErrorItemNotFound")));
}

#[tokio::test]
async fn resend_of_final_fragment_answers_201_again_with_the_same_location() {
    let Opened { h, id, data, url } = opened(1500, |c| c).await;
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
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(
        list["value"].as_array().unwrap().len(),
        1,
        "re-sends make no second attachment"
    );
}

#[tokio::test]
async fn resend_of_an_acknowledged_fragment_is_answered_not_rejected() {
    let Opened { h, data, url, .. } = opened(3000, |c| c).await;
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
    let Opened { h, data, url, .. } = opened(3000, |c| c).await;
    expect_graph_error(
        h.put(&url, &data, 1000, 1999).await,
        416,
        "fragmentOutOfOrder",
    )
    .await;
    expect_graph_error(
        h.put(&url, &data, 0, 1000).await,
        413,
        "maxFragmentLengthExceeded",
    )
    .await;
    // Bad headers: (Content-Range, body length, code).
    for (range, len, code) in [
        (Some("bytes=0-9/3000"), 10, "invalidRange"),
        (Some("bytes 0-9/2999"), 10, "invalidRange"),
        (Some("bytes 0-9/3000"), 9, "fragmentLengthMismatch"),
        (None, 10, "invalidRange"),
    ] {
        let mut put = h.http.put(&url).body(vec![0; len]);
        if let Some(range) = range {
            put = put.header("Content-Range", range);
        }
        expect_graph_error(put.send().await.unwrap(), 400, code).await;
    }
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    expect_graph_error(h.put(&url, &data, 500, 1499).await, 416, "fragmentOverlap").await;
    let status = h.session_status(&url).await;
    assert_eq!(status["nextExpectedRanges"], json!(["1000-2999"]));
}

#[tokio::test]
async fn create_session_refusals() {
    let h = start().await;
    let id = h.draft().await;
    let item = format!("/me/messages/{id}");
    let create = |size: usize| h.create_session(&item, attachment("n", size));
    assert_eq!(
        error_code(&create(9).await),
        (
            400,
            Some("ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
        )
    );
    let (s, _) = create(10_000_001).await;
    assert_eq!(s, 413);
    let answer = h.create_session(&item, json!({"nope": 1})).await;
    assert_eq!(error_code(&answer), (400, Some("RequestBodyRead")));
    let answer = h
        .create_session("/me/messages/unknown", attachment("n", 20))
        .await;
    assert_eq!(error_code(&answer), (404, Some("ErrorItemNotFound")));
    let huge = "x".repeat(100 * 1024);
    let (s, _) = h
        .call(Method::POST, "/me/messages", Some(json!({"subject": huge})))
        .await;
    assert_eq!(s, 413);
    let (s, _) = h.call(Method::GET, "/me/contacts", None).await;
    assert_eq!(s, 404);
    let (s, _) = h.call(Method::DELETE, "/me/messages", None).await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn tampered_missing_and_cross_session_credentials_are_refused() {
    let h = start().await;
    let id = h.draft().await;
    let a = h.session(&id, 100).await;
    let b = h.session(&id, 100).await;
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
    let h = start().await;
    let id = h.draft().await;
    let url = h.session(&id, 100).await;
    let res = h.http.delete(&url).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(h.http.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 404);

    let data = data(100);
    let url = h.session(&id, 100).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 204);
    let (_, list) = h
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let parts: Vec<_> = std::fs::read_dir(h.dir().join("sessions"))
        .unwrap()
        .collect();
    assert!(
        parts.is_empty(),
        "cancelled sessions leave no files: {parts:?}"
    );
}

#[tokio::test]
async fn expired_sessions_answer_404_and_their_bytes_are_swept() {
    let ttl = limits().with_ttl(Duration::from_secs(1));
    let Opened { h, data, url, .. } = opened(3000, |c| c.with_limits(ttl)).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    let sessions = h.dir().join("sessions");
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
    // The uploadUrl's credential lives as long as the session could (7 days): it is
    // still good, so the answer is about the session, which is gone.
    let res = h.put(&url, &data, 1000, 1999).await;
    expect_graph_error(res, 404, "itemNotFound/uploadSessionNotFound").await;
}

#[tokio::test]
async fn acknowledged_fragments_survive_a_restart_and_the_upload_completes() {
    let Opened {
        mut h, data, url, ..
    } = opened(2500, |c| c).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    h.restart().await;
    let status = h.session_status(&url).await;
    assert_eq!(status["nextExpectedRanges"], json!(["1000-2499"]));
    assert_eq!(h.put(&url, &data, 1000, 1999).await.status(), 200);
    let done = h.put(&url, &data, 2000, 2499).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    h.restart().await;
    assert_eq!(sha256_hex(&h.download(&location).await), sha256_hex(&data));
}

#[tokio::test]
async fn a_data_directory_serves_one_server_at_a_time() {
    let h = start().await;
    let second = Server::start(config(server_config(h.dir()))).await;
    let err = second.expect_err("a second server on the same directory is refused");
    let text = err.to_string();
    assert!(text.contains("in use"), "{text}");
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    // Once the first has shut down, the directory is free at once.
    let dir = h.dir().to_path_buf();
    h.shutdown().await;
    let again = Server::start(config(server_config(&dir))).await.unwrap();
    again.shutdown().await;
}

#[tokio::test]
async fn start_up_sets_unusable_records_aside_and_lists_no_attachment_without_bytes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let h = TestServer::start_in(dir, config).await;
    let id = h.draft().await;
    let data = seeded(100, 1);
    let done = h.upload(&h.session(&id, 100).await, &data, 1000).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    let old_origin = h.origin().to_owned();
    h.shutdown().await;
    // A torn record, a record of no known shape, and an attachment's bytes gone.
    std::fs::write(dir.join("sessions/torn.json"), b"{\"id\": \"torn\", ").unwrap();
    std::fs::write(dir.join("items/odd.json"), b"[1, 2, 3]").unwrap();
    for entry in std::fs::read_dir(dir.join("attachments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let h = TestServer::start_in(dir, config).await;
    // Served, with the bad records moved aside and counted.
    let aside: Vec<String> = std::fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(aside.len(), 3, "{aside:?}");
    assert!(
        aside.contains(&"sessions-torn.json".to_owned()),
        "{aside:?}"
    );
    assert!(aside.contains(&"items-odd.json".to_owned()), "{aside:?}");
    let metrics = h
        .http
        .get(format!("{}/metrics", h.origin()))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("upsession_records_quarantined_total 3"),
        "{metrics}"
    );
    // The attachment without bytes is not listed, and its URL is a 404, not a 500.
    let (status, list) = h
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["value"], json!([]));
    let res = h.value(&location.replace(&old_origin, h.origin())).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn without_fsync_bytes_a_power_loss_took_are_asked_for_again_never_served() {
    // The kit's server runs with `--fsync never`: after a power loss, a record may
    // count bytes whose writes never reached the disk.
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let h = TestServer::start_in(dir, config).await;
    let data = seeded(3000, 7);
    let url = h.session(&h.draft().await, 3000).await;
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
    assert_eq!(h.put(&url, &data, 1000, 1999).await.status(), 200);
    let old_origin = h.origin().to_owned();
    h.shutdown().await;
    // The second fragment's bytes, as a power loss leaves unsynced pages: zeros.
    let part = std::fs::read_dir(dir.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "part"))
        .unwrap();
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[1000..2000].fill(0);
    std::fs::write(&part, bytes).unwrap();
    let h = TestServer::start_in(dir, config).await;
    let url = url.replace(&old_origin, h.origin());
    let status = h.session_status(&url).await;
    assert_eq!(status["nextExpectedRanges"], json!(["1000-2999"]));
    // The client sends them again, and the attachment is exact.
    let done = h.upload_from(&url, &data, 1000, 1000, |_| {}).await;
    assert_eq!(done.status(), 201);
    assert_eq!(
        sha256_hex(&h.download(&location(&done)).await),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn a_cut_off_fragment_leaves_no_trace() {
    let Opened { h, data, url, .. } = opened(3000, |c| c).await;
    let stream = partial_put(&url, &data, 0, 1000, 400).await;
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
    assert_eq!(
        done.status(),
        201,
        "the final fragment completes the upload"
    );
    assert_eq!(
        sha256_hex(&h.download(&location(&done)).await),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn a_retry_of_a_stalled_fragment_takes_over_at_once() {
    // A body that stalls would hold its fragment for a minute: the retry must not wait.
    let Opened { h, data, url, .. } = opened(3000, body_idle(Duration::from_secs(60))).await;
    let mut stale = partial_put(&url, &data, 0, 1000, 500).await;
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
    let answer = read_answer(&mut stale, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let done = h.upload(&url, &data, 1000).await;
    assert_eq!(done.status(), 201);
    assert_eq!(h.download(&location(&done)).await, data);
}

#[tokio::test]
async fn a_stalled_body_times_out_and_frees_the_session() {
    let Opened { h, data, url, .. } = opened(3000, body_idle(Duration::from_millis(300))).await;
    let mut stalled = partial_put(&url, &data, 0, 1000, 10).await;
    let answer = read_answer(&mut stalled, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(h.put(&url, &data, 0, 999).await.status(), 200);
}

#[tokio::test]
async fn public_url_shapes_upload_urls_and_locations() {
    let Opened { h: _h, url, .. } =
        opened(100, |c| c.with_public_url("https://files.example.com/")).await;
    assert!(
        url.starts_with("https://files.example.com/uploads/"),
        "{url}"
    );
}

#[tokio::test]
async fn metrics_count_sessions_bytes_and_errors() {
    let Opened { h, data, url, .. } = opened(100, |c| c).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    let _ = h
        .request(Method::GET, "/me/messages/none")
        .send()
        .await
        .unwrap();
    // A credential would leak through a label made of a path, a query or an error
    // message: send one where such labels come from (a refused fragment on its
    // uploadUrl, an unknown item named by it), then look for it.
    let credential = url.split_once("authtoken=").unwrap().1.to_owned();
    let mac = credential.split_once('.').unwrap().1.to_owned();
    assert!(mac.len() >= 32, "a credential's MAC: {credential}");
    let refused = h.http.put(&url).header("Content-Range", "bytes 0-0/7");
    let refused = refused.body("x").send().await.unwrap().status();
    assert!(refused.is_client_error(), "{refused}");
    let path = format!("/me/messages/{credential}");
    assert_eq!(
        h.request(Method::GET, &path).send().await.unwrap().status(),
        404
    );
    // Without an Accept for it, the classic text format; Prometheus gets OpenMetrics.
    // Both also under the versions, as every route.
    let page = |path: &str, accept: Option<&str>| {
        let mut req = h.http.get(format!("{}{path}", h.origin()));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send()
    };
    let text = page("/metrics", None).await.unwrap().text().await.unwrap();
    for counted in [
        "upsession_sessions_created_total 1",
        "upsession_sessions_completed_total 1",
        "upsession_received_bytes_total 100",
        "code=\"ErrorItemNotFound\"",
    ] {
        assert!(text.contains(counted), "{counted}: {text}");
    }
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(samples >= 10, "a real metrics page: {text}");
    let leaks = |text: &str| {
        text.contains(&credential) || text.contains(&mac) || text.contains("authtoken")
    };
    assert!(
        leaks(&format!("{text}{url}")),
        "the check sees a credential"
    );
    assert!(!leaks(&text), "no credential in metrics: {text}");

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
    // Ready too: the local store answers while it is open.
    let ready = page("/readyz", None).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready\n");
}

#[tokio::test]
async fn a_fragment_refused_from_its_headers_is_answered_even_if_the_client_sends_the_body_first() {
    let size = 4 * 1024 * 1024;
    let Opened {
        h: _h, data, url, ..
    } = opened(size, |c| c).await;
    // One 4 MiB fragment, over the 1000-byte maximum: refused from the headers while
    // the client is still sending, as an HTTP client that writes the body before
    // reading does.
    let mut stream = partial_put(&url, &data, 0, size, 0).await;
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
    let h = start_with(|c| c.with_dialect(upsession_core::Dialect::OUTLOOK)).await;
    let id = h.draft().await;
    let data = data(2500);
    let (status, created) = h
        .create_session(&format!("/me/messages/{id}"), attachment("f.bin", 2500))
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
    let location = location(&done);
    assert!(location.contains("/api/v2.0/me/Messages('"), "{location}");
    // Its path, on the server's own origin.
    let path = reqwest::Url::parse(&location).unwrap().path().to_owned();
    let at_origin = Graph::new(h.origin(), TOKEN);
    let meta = at_origin.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(json_of(meta).await["size"], 2500);
    assert_eq!(
        sha256_hex(&at_origin.download(&at_origin.url(&path)).await),
        sha256_hex(&data)
    );
}

#[tokio::test]
async fn the_onedrive_dialect_answers_202_refuses_resends_and_odd_fragments() {
    let q = 320 * 1024;
    let h = start_with(|c| {
        c.with_dialect(upsession_core::Dialect::ONEDRIVE)
            .with_limits(limits().with_max_fragment(4 * q as u64))
    })
    .await;
    let id = h.draft().await;
    let data = data(2 * q + 7);
    let (status, created) = h
        .create_session(
            &format!("/me/messages/{id}"),
            attachment("f.bin", data.len()),
        )
        .await;
    assert_eq!(status, 200, "OneDrive answers creation with 200");
    let url = created["uploadUrl"].as_str().unwrap().to_owned();
    let odd = h.put(&url, &data, 0, q - 2).await;
    assert_eq!(odd.status(), 400);
    let first = h.put(&url, &data, 0, q - 1).await;
    assert_eq!(first.status(), 202);
    assert_eq!(
        json_of(first).await["nextExpectedRanges"],
        json!([format!("{q}-")])
    );
    let again = h.put(&url, &data, 0, q - 1).await;
    assert_eq!(again.status(), 416);
    expect_graph_error(again, 416, "invalidRange/fragmentOverlap").await;
    assert_eq!(h.put(&url, &data, q, 2 * q - 1).await.status(), 202);
    assert_eq!(h.put(&url, &data, 2 * q, 2 * q + 6).await.status(), 201);
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_before_reading_the_body() {
    use upsession_core::throttle::ThrottleLimits;
    let limits = ThrottleLimits::OUTLOOK.with_upload_bytes(1500, Duration::from_secs(300));
    let Opened { h, data, url, .. } = opened(3000, |c| c.with_throttle(limits)).await;
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
    assert_eq!(
        h.session_status(&url).await["nextExpectedRanges"],
        json!(["1000-2999"]),
        "the throttled fragment was not stored"
    );
}

#[tokio::test]
async fn faults_are_injected_as_specified_and_inspectable() {
    let Opened { h, data, url, .. } = opened(3000, |c| c.with_admin_token("admin")).await;
    let admin = Graph::new(h.origin(), "admin");

    let set = |spec: &'static str| {
        admin
            .request(Method::PUT, "/_upsession/faults")
            .body(spec)
            .send()
    };
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
    assert!(h.try_put(&url, &data, 0, 999).await.is_err(), "no answer");
    // Lost: the fragment is kept, but no answer comes.
    set("seed=1,put:lost:1.0").await.unwrap();
    assert!(h.try_put(&url, &data, 0, 999).await.is_err(), "no answer");
    set("").await.unwrap();
    assert_eq!(
        h.session_status(&url).await["nextExpectedRanges"],
        json!(["1000-2999"]),
        "the lost fragment was stored, the reset one was not"
    );

    let bad = set("put:explode:1").await.unwrap();
    assert_eq!(bad.status(), 400);
    let sessions = admin
        .request(Method::GET, "/_upsession/sessions")
        .send()
        .await
        .unwrap();
    let sessions = json_of(sessions).await;
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
        .get(admin.url("/_upsession/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
}

#[tokio::test]
async fn the_fragment_that_crosses_the_message_size_limit_is_refused_mid_upload() {
    let Opened { h, id, data, url } = opened(200, |c| c.with_message_size_limit(250)).await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    // The session opens, as on the live service; its fragment past 250 B does not.
    let more = &data[..100];
    let url = h.session(&id, 100).await;
    assert_eq!(h.put(&url, more, 0, 39).await.status(), 200);
    expect_graph_error(
        h.put(&url, more, 40, 99).await,
        413,
        "ErrorMessageSizeExceeded",
    )
    .await;
    let (_, list) = h
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_client_that_hangs_up_after_its_body_never_leaves_the_session_busy() {
    let Opened { h, data, url, .. } = opened(3000, |c| c.with_fsync(Fsync::Always)).await;
    for _ in 0..20 {
        // The whole body, then the connection closes before the answer is read.
        let stream = partial_put(&url, &data, 0, 1000, 1000).await;
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

#[tokio::test]
async fn with_a_certificate_it_serves_https_and_hands_out_https_urls() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(certs.path());
    let server = start_with(|c| c.with_tls(&cert, &key)).await;
    let base = server.running().base_url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let tls = Graph::with_client(client_trusting(&pem), base, TOKEN);
    let draft = tls
        .create_item("/me/messages", json!({"subject": "tls"}))
        .await;
    let res = tls
        .request(
            Method::POST,
            &format!("/me/messages/{draft}/attachments/createUploadSession"),
        )
        .json(&attachment("t.bin", 1500))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    let url = json_of(res).await["uploadUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let data = data(1500);
    assert_eq!(tls.put(&url, &data, 0, 999).await.status(), 200);
    let done = tls.put(&url, &data, 1000, 1499).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    assert!(location.starts_with("https://"), "{location}");
    assert_eq!(tls.download(&location).await, data);
    // A plain-http client gets nothing it could mistake for an answer.
    let plain = Client::new()
        .get(format!("http://{}/healthz", server.addr()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let tls = config(server_config(dir.path()))
        .with_tls(dir.path().join("nope.pem"), dir.path().join("nope.key"));
    let err = Server::start(tls).await.unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

/// The first 1000 of 1500 bytes to `url`, with an `Authorization` header.
async fn put_with_authorization(
    h: &TestServer,
    url: &str,
    data: &[u8],
    authorization: &str,
) -> reqwest::Response {
    h.http
        .put(url)
        .header("Authorization", authorization)
        .header("Content-Range", "bytes 0-999/1500")
        .body(data[..1000].to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_authorization_header_on_the_upload_url_is_refused_only_when_asked() {
    let bearer = format!("Bearer {TOKEN}");
    // By default a client may send one (the contract: the server does not mind).
    let Opened { h, data, url, .. } = opened(1500, |c| c).await;
    let res = put_with_authorization(&h, &url, &data, &bearer).await;
    assert_eq!(res.status(), 200);
    // Under the flag, the same request is 401 and changes nothing.
    let strict = start_with(Config::with_upload_authorization_refused).await;
    let url = strict.open_session(1500).await;
    let res = put_with_authorization(&strict, &url, &data, &bearer).await;
    let seen = expect_graph_error(res, 401, "InvalidAuthenticationToken").await;
    assert!(
        seen.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pre-authenticated")
    );
    assert_eq!(strict.put(&url, &data, 0, 999).await.status(), 200);
    // As a fault of the test double, too.
    let faulty = start_with(|c| c.with_faults("put:auth401:1".parse().unwrap())).await;
    let url = faulty.open_session(1500).await;
    let res = put_with_authorization(&faulty, &url, &data, "Bearer leaked").await;
    expect_graph_error(res, 401, "InvalidAuthenticationToken").await;
    assert_eq!(faulty.put(&url, &data, 0, 999).await.status(), 200);
}

#[tokio::test]
async fn a_draft_created_in_the_drafts_folder_takes_an_upload_session() {
    let h = start().await;
    let drafts = "/me/mailFolders/Drafts/messages";
    let id = h
        .create_item(drafts, json!({"subject": "as python-o365 does"}))
        .await;
    let data = data(1500);
    let url = h
        .upload_session(&format!("{drafts}/{id}"), "f.bin", 1500)
        .await;
    assert_eq!(h.upload(&url, &data, 1000).await.status(), 201);
    let (status, list) = h
        .call(Method::GET, &format!("/me/messages/{id}/attachments"), None)
        .await;
    assert_eq!(
        (status.as_u16(), list["value"][0]["size"].as_u64()),
        (200, Some(1500))
    );
}

/// The attachment record of the one attachment in `dir`, and its path.
fn only_attachment_record(dir: &std::path::Path) -> (std::path::PathBuf, Value) {
    let path = std::fs::read_dir(dir.join("attachments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("an attachment record");
    let record = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, record)
}

#[tokio::test]
async fn a_completion_answered_before_its_bytes_were_synced_is_checked_at_start_up() {
    // `--fsync never` answers the last fragment before its bytes reach the disk,
    // the attachment record carrying their sums until a sync after the answer.
    // A power loss in between: the record got to the disk, the bytes did not.
    // (bytes lost, rename of the `.part` to `.bin` lost)
    for (lost, renamed_back) in [(false, false), (true, false), (false, true), (true, true)] {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let h = TestServer::start_in(dir, config).await;
        let id = h.draft().await;
        let data = seeded(3000, 11);
        let url = h.session(&id, data.len()).await;
        let done = h.upload(&url, &data, 1000).await;
        assert_eq!(done.status(), 201);
        let location = location(&done);
        let old_origin = h.origin().to_owned();
        h.shutdown().await;
        // (Settled after the answer, or, stopped first, left for the next start
        // to check: either way it is made to carry them here.)
        let (record_path, mut record) = only_attachment_record(dir);
        // As the power loss would have left it: the record still with its sums
        // (they are the session's), and, when lost, bytes that never got there.
        let session = std::fs::read_dir(dir.join("sessions"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        let session: Value = serde_json::from_slice(&std::fs::read(session).unwrap()).unwrap();
        record["unsynced"] = session["sums"].clone();
        assert_eq!(record["unsynced"].as_array().unwrap().len(), 3);
        std::fs::write(&record_path, record.to_string()).unwrap();
        let mut bytes_path = record_path.with_extension("bin");
        if renamed_back {
            // The completion's rename did not last: the bytes are still the
            // session's `.part`.
            let part = dir
                .join("sessions")
                .join(format!("{}.part", session["id"].as_str().unwrap()));
            std::fs::rename(&bytes_path, &part).unwrap();
            bytes_path = part;
        }
        if lost {
            let mut bytes = std::fs::read(&bytes_path).unwrap();
            bytes[2500] ^= 0xff;
            std::fs::write(&bytes_path, bytes).unwrap();
        }
        let h = TestServer::start_in(dir, config).await;
        let value = h.value(&location.replace(&old_origin, h.origin())).await;
        let status = h
            .http
            .get(url.replace(&old_origin, h.origin()))
            .send()
            .await
            .unwrap()
            .status();
        if lost {
            // Never served with a wrong byte: set aside, and the session gone, so
            // the client starts the upload again.
            assert_eq!(value.status(), 404, "renamed back: {renamed_back}");
            assert_eq!(status, 404, "the session of a lost completion");
            let aside: Vec<String> = std::fs::read_dir(dir.join("quarantine"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let record_name = record_path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                aside.contains(&format!("attachments-{record_name}")),
                "{aside:?}"
            );
        } else {
            assert_eq!(value.status(), 200, "renamed back: {renamed_back}");
            assert_eq!(sha256_hex(&value.bytes().await.unwrap()), sha256_hex(&data));
            assert!(
                !bytes_path.exists() || !renamed_back,
                "promoted from the .part"
            );
            let (_, record) = only_attachment_record(dir);
            assert!(
                record.get("unsynced").is_none(),
                "checked, synced, recorded: {record}"
            );
        }
    }
}
