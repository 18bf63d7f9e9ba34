//! `POST …/{id}/attachments`: a small file attached in one request, as Graph wants
//! files under 3 MB, then listed, read and downloaded exactly as a session-made one.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use upsession_testbed::kit::{TestServer, expect_graph_error, seeded, sha256_hex};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The body of a small file attachment of `bytes` named `name`.
fn file_attachment(name: &str, bytes: &[u8]) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": name,
        "contentType": "text/plain",
        "contentBytes": b64(bytes),
    })
}

/// `POST {path}` with the token and `body`.
async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    server
        .request(Method::POST, path)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_small_file_is_attached_listed_and_downloaded_like_a_session_made_one() {
    let server = TestServer::start().await;
    let draft = server.draft().await;
    let event = server
        .create_item("/me/events", json!({"subject": "meet"}))
        .await;
    let data = seeded(1024, 7);
    // The calendar view names the event; the Location names it as an event.
    for (item_path, named) in [
        (
            format!("/me/messages/{draft}"),
            format!("/v1.0/me/messages/{draft}"),
        ),
        (
            format!("/users/adele@contoso.com/events/{event}"),
            format!("/v1.0/users/adele@contoso.com/events/{event}"),
        ),
        (
            format!("/me/calendarView/{event}"),
            format!("/v1.0/me/events/{event}"),
        ),
    ] {
        let res = post(
            &server,
            &format!("{item_path}/attachments"),
            &file_attachment("a.txt", &data),
        )
        .await;
        assert_eq!(res.status(), 201, "{item_path}");
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(body["@odata.type"], "#microsoft.graph.fileAttachment");
        assert_eq!(
            (body["name"].as_str(), body["size"].as_u64()),
            (Some("a.txt"), Some(1024))
        );
        assert_eq!(body["contentType"], "text/plain");
        assert!(
            location.ends_with(&format!("{named}/attachments/{id}")),
            "{location}"
        );
        assert_eq!(
            sha256_hex(&server.download(&location).await),
            sha256_hex(&data)
        );
        let (status, one) = server
            .call(Method::GET, &format!("{item_path}/attachments/{id}"), None)
            .await;
        assert_eq!((status.as_u16(), one["size"].as_u64()), (200, Some(1024)));
    }
    assert_eq!(listed(&server, &format!("/me/events/{event}")).await, 2);
    // Under beta too.
    let res = server
        .http
        .post(format!(
            "{}/beta/me/messages/{draft}/attachments",
            server.origin()
        ))
        .bearer_auth(server.token())
        .json(&file_attachment("b.txt", b"hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(listed(&server, &format!("/me/messages/{draft}")).await, 2);
}

/// How many attachments the item at `item_path` lists.
async fn listed(server: &TestServer, item_path: &str) -> usize {
    let (_, list) = server
        .call(Method::GET, &format!("{item_path}/attachments"), None)
        .await;
    list["value"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_small_attachments_are_graphs_errors() {
    let server = TestServer::start().await;
    let path = format!("/me/messages/{}/attachments", server.draft().await);
    let mut no_type = file_attachment("a.txt", b"x");
    no_type.as_object_mut().unwrap().remove("@odata.type");
    let mut no_bytes = file_attachment("a.txt", b"x");
    no_bytes.as_object_mut().unwrap().remove("contentBytes");
    let mut item = file_attachment("a.txt", b"x");
    item["@odata.type"] = json!("#microsoft.graph.itemAttachment");
    let mut inline = file_attachment("a.txt", b"x");
    inline["isInline"] = json!(true);
    let cases = [
        (
            json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a", "contentBytes": "not base64!"}),
            400,
            "RequestBodyRead",
        ),
        (no_type, 400, "RequestBodyRead"),
        (no_bytes, 400, "RequestBodyRead"),
        (file_attachment("", b"x"), 400, "ErrorInvalidRequest"),
        (item, 400, "ErrorInvalidRequest"),
        (inline, 400, "ErrorInvalidRequest"),
        (
            file_attachment("a.txt", &seeded(3 * 1024 * 1024 + 1, 1)),
            413,
            "ErrorAttachmentSizeExceeded",
        ),
    ];
    for (body, status, code) in cases {
        expect_graph_error(post(&server, &path, &body).await, status, code).await;
    }
    // Nothing was attached, and an unknown item is 404.
    let (_, list) = server.call(Method::GET, &path, None).await;
    assert_eq!(list["value"], json!([]));
    let res = post(
        &server,
        "/me/messages/AAMknope/attachments",
        &file_attachment("a", b"x"),
    )
    .await;
    expect_graph_error(res, 404, "ErrorItemNotFound").await;
}

#[tokio::test]
async fn small_attachments_count_towards_the_message_size_limit() {
    let server = TestServer::start_with(|c| c.with_message_size_limit(3_000_000)).await;
    let path = format!("/me/messages/{}/attachments", server.draft().await);
    let res = post(&server, &path, &file_attachment("a", &seeded(2_000_000, 1))).await;
    assert_eq!(res.status(), 201);
    let res = post(&server, &path, &file_attachment("b", &seeded(1_500_000, 2))).await;
    expect_graph_error(res, 413, "ErrorMessageSizeExceeded").await;
    assert_eq!(
        listed(&server, path.trim_end_matches("/attachments")).await,
        1
    );
}
