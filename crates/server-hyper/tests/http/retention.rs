//! Retention over real HTTP: attachments deleted with their bytes, and the
//! per-token limits on what sessions hold open.

use upsession_core::quota::QuotaLimits;

use super::*;

/// An attachment of `len` bytes uploaded to the item at `item` (`/me/messages/ID`);
/// its id, `Location`, uploadUrl and bytes.
async fn uploaded(h: &TestServer, item: &str, len: usize) -> (String, String, String, Vec<u8>) {
    let data = data(len);
    let url = h.upload_session(item, "f.bin", len).await;
    let done = h.upload(&url, &data, 1000).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    let aid = location.rsplit('/').next().unwrap().to_owned();
    (aid, location, url, data)
}

/// The ids of the item's attachments, as listed.
async fn listed(h: &TestServer, item: &str) -> Vec<String> {
    let (status, list) = h
        .call(Method::GET, &format!("{item}/attachments"), None)
        .await;
    assert_eq!(status, 200, "{list}");
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn delete(h: &TestServer, path: &str) -> reqwest::Response {
    h.request(Method::DELETE, path).send().await.unwrap()
}

#[tokio::test]
async fn deleting_an_attachment_on_every_route_form_answers_204_and_removes_record_and_bytes() {
    let h = start().await;
    let message = h.draft().await;
    let event = h.create_item("/me/events", json!({"subject": "e"})).await;
    for item in [
        format!("/me/messages/{message}"),
        format!("/me/events/{event}"),
        format!("/me/calendarView/{event}"),
        format!("/users/someone@example.com/messages/{message}"),
    ] {
        let (aid, location, url, data) = uploaded(&h, &item, 1500).await;
        let bin = h.dir().join("attachments").join(format!("{aid}.bin"));
        let record = bin.with_extension("json");
        assert!(bin.exists() && record.exists(), "{item}: stored");

        let res = delete(&h, &format!("{item}/attachments/{aid}")).await;
        assert_eq!(res.status(), 204, "{item}");
        assert!(res.bytes().await.unwrap().is_empty());

        let got = h.http.get(&location).bearer_auth(TOKEN).send().await;
        expect_graph_error(got.unwrap(), 404, "ErrorItemNotFound").await;
        expect_graph_error(h.value(&location).await, 404, "ErrorItemNotFound").await;
        assert!(!listed(&h, &item).await.contains(&aid), "{item}");
        assert!(!bin.exists() && !record.exists(), "{item}: files gone");
        // The session that made it is gone with it: the SDKs' re-send of the last
        // fragment learns that, never a Location that answers 404.
        let resend = h.put(&url, &data, 1000, 1499).await;
        expect_graph_error(resend, 404, "itemNotFound/uploadSessionNotFound").await;
        assert_eq!(h.http.get(&url).send().await.unwrap().status(), 404);
        // Deleted once.
        let again = delete(&h, &format!("{item}/attachments/{aid}")).await;
        expect_graph_error(again, 404, "ErrorItemNotFound").await;
    }
    let sessions: Vec<_> = std::fs::read_dir(h.dir().join("sessions"))
        .unwrap()
        .collect();
    assert!(sessions.is_empty(), "no session record left: {sessions:?}");
}

#[tokio::test]
async fn deleting_a_missing_attachment_is_404_and_deleting_needs_the_bearer_token() {
    let h = start().await;
    let id = h.draft().await;
    let item = format!("/me/messages/{id}");
    let missing = delete(&h, &format!("{item}/attachments/AAMk-none")).await;
    expect_graph_error(missing, 404, "ErrorItemNotFound").await;
    let on_no_item = delete(&h, "/me/messages/AAMk-none/attachments/AAMk-none").await;
    expect_graph_error(on_no_item, 404, "ErrorItemNotFound").await;

    let (aid, location, ..) = uploaded(&h, &item, 100).await;
    let path = format!("{item}/attachments/{aid}");
    let anonymous = h.http.delete(h.url(&path)).send().await.unwrap();
    expect_graph_error(anonymous, 401, "InvalidAuthenticationToken").await;
    let wrong = Graph::new(h.base(), "not-the-token");
    let wrong = wrong.request(Method::DELETE, &path).send().await.unwrap();
    expect_graph_error(wrong, 401, "InvalidAuthenticationToken").await;
    // Its bytes and the list are not deleted that way.
    let value = delete(&h, &format!("{path}/$value")).await;
    expect_graph_error(value, 405, "MethodNotAllowed").await;
    // An event's attachment is not deleted through the message's path.
    let event_path = format!("/me/events/{id}/attachments/{aid}");
    expect_graph_error(delete(&h, &event_path).await, 404, "ErrorItemNotFound").await;
    assert_eq!(h.download(&location).await, data(100), "still there");
}

#[tokio::test]
async fn deleting_an_attachment_gives_its_bytes_back_to_the_message_size_limit() {
    let h = start_with(|c| c.with_message_size_limit(250)).await;
    let id = h.draft().await;
    let item = format!("/me/messages/{id}");
    let (aid, ..) = uploaded(&h, &item, 200).await;
    let more = data(100);
    let url = h.session(&id, 100).await;
    expect_graph_error(
        h.put(&url, &more, 0, 99).await,
        413,
        "ErrorMessageSizeExceeded",
    )
    .await;
    assert_eq!(
        delete(&h, &format!("{item}/attachments/{aid}"))
            .await
            .status(),
        204
    );
    let done = h.put(&url, &more, 0, 99).await;
    assert_eq!(done.status(), 201);
    assert_eq!(h.download(&location(&done)).await, more);
}

/// Sessions per token limited to `sessions`, declared bytes to `bytes`.
fn quota(sessions: u32, bytes: u64) -> impl FnOnce(Config) -> Config {
    move |c| {
        c.with_quota(
            QuotaLimits::DEFAULT
                .with_sessions(sessions)
                .with_declared_bytes(bytes),
        )
        .with_token("second-token")
    }
}

async fn create(h: &TestServer, item: &str, size: usize) -> reqwest::Response {
    let path = format!("{item}/attachments/createUploadSession");
    h.request(Method::POST, &path)
        .json(&attachment("f.bin", size))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_session_past_the_per_token_limit_is_429_until_one_is_cancelled_or_completed() {
    let h = start_with(quota(2, u64::MAX)).await;
    let item = format!("/me/messages/{}", h.draft().await);
    let first = h.upload_session(&item, "a", 100).await;
    let _second = h.upload_session(&item, "b", 100).await;

    let refused = create(&h, &item, 100).await;
    assert_eq!(refused.headers()["retry-after"], "60");
    let seen = expect_graph_error(refused, 429, "activityLimitReached/tooManyUploadSessions").await;
    assert!(seen.body["error"]["message"].to_string().contains('2'));
    // Another token has its own allowance.
    let other = Graph::new(h.base(), "second-token");
    other.upload_session(&item, "c", 100).await;

    assert_eq!(h.http.delete(&first).send().await.unwrap().status(), 204);
    let third = h.upload_session(&item, "d", 100).await;
    assert_eq!(create(&h, &item, 100).await.status(), 429);
    // A completed session no longer counts, though it answers re-sends until it
    // expires.
    assert_eq!(h.upload(&third, &data(100), 1000).await.status(), 201);
    assert_eq!(create(&h, &item, 100).await.status(), 201);
}

#[tokio::test]
async fn a_session_declaring_more_than_the_byte_budget_is_507() {
    let h = start_with(quota(100, 1000)).await;
    let item = format!("/me/messages/{}", h.draft().await);
    let alone = create(&h, &item, 1001).await;
    expect_graph_error(alone, 507, "quotaLimitReached/declaredBytesLimitReached").await;
    let url = h.upload_session(&item, "a", 600).await;
    let past = create(&h, &item, 401).await;
    let seen = expect_graph_error(past, 507, "quotaLimitReached/declaredBytesLimitReached").await;
    assert!(seen.body["error"]["message"].to_string().contains("1000"));
    h.upload_session(&item, "b", 400).await;
    // Cancelling gives the declared bytes back.
    assert_eq!(h.http.delete(&url).send().await.unwrap().status(), 204);
    h.upload_session(&item, "c", 600).await;
}

#[tokio::test]
async fn open_sessions_loaded_at_start_up_count_against_the_limits_again() {
    let mut h = start_with(quota(2, u64::MAX)).await;
    let item = format!("/me/messages/{}", h.draft().await);
    let first = h.upload_session(&item, "a", 100).await;
    let done = h.upload_session(&item, "b", 100).await;
    let data = data(100);
    assert_eq!(h.upload(&done, &data, 1000).await.status(), 201);
    h.upload_session(&item, "c", 100).await;
    h.restart().await;
    // Two open (a, c); the completed one is not counted.
    assert_eq!(create(&h, &item, 100).await.status(), 429);
    assert_eq!(h.http.delete(&first).send().await.unwrap().status(), 204);
    assert_eq!(create(&h, &item, 100).await.status(), 201);
}

#[tokio::test]
async fn metrics_show_what_tokens_hold_open_refusals_and_deletions() {
    let h = start_with(quota(2, 1000)).await;
    let item = format!("/me/messages/{}", h.draft().await);
    let (aid, ..) = uploaded(&h, &item, 100).await;
    h.upload_session(&item, "a", 300).await;
    h.upload_session(&item, "b", 200).await;
    assert_eq!(create(&h, &item, 100).await.status(), 429);
    let other = Graph::new(h.base(), "second-token");
    let (status, _) = other.create_session(&item, attachment("big", 2000)).await;
    assert_eq!(status, 507);
    assert_eq!(
        delete(&h, &format!("{item}/attachments/{aid}"))
            .await
            .status(),
        204
    );
    let page = h
        .http
        .get(format!("{}/metrics", h.origin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "upsession_sessions_uploading 2\n",
        "upsession_declared_bytes 500\n",
        "upsession_sessions_refused_total{reason=\"sessions\"} 1\n",
        "upsession_sessions_refused_total{reason=\"bytes\"} 1\n",
        "upsession_attachments_deleted_total 1\n",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    assert!(
        !page.contains("second-token") && !page.contains(TOKEN),
        "{page}"
    );
}

#[tokio::test]
async fn bytes_of_a_deletion_cut_short_are_removed_at_start_up() {
    let mut h = start().await;
    let item = format!("/me/messages/{}", h.draft().await);
    let (cut, ..) = uploaded(&h, &item, 100).await;
    let (kept, location, ..) = uploaded(&h, &item, 200).await;
    let attachments = h.dir().join("attachments");
    // A deletion that removed the record and died before the bytes (with the
    // server down: running, it may still be writing the record after its sync).
    h.restart_after(|| std::fs::remove_file(attachments.join(format!("{cut}.json"))).unwrap())
        .await;
    assert!(!attachments.join(format!("{cut}.bin")).exists());
    assert_eq!(listed(&h, &item).await, vec![kept]);
    assert_eq!(h.download(&location).await, data(200));
}
