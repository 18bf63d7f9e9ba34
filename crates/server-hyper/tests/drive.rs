//! OneDrive drive items over a real server: upload sessions to drive paths with
//! each conflict behaviour and with `deferCommit`, the `driveItem` answers and
//! their hashes, reading back (whole and by `Range`), deleting, `If-Match`, and
//! hashes that survive a restart mid-upload.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use reqwest::Method;
use serde_json::{Value, json};
use upsession_core::quickxor::QuickXorHash;
use upsession_testbed::kit::{TestServer, expect_graph_error, seeded, sha256_hex};

/// 320 KiB, OneDrive's fragment unit.
const UNIT: usize = 320 * 1024;

/// `POST {path}:/createUploadSession` with `body`: the uploadUrl.
async fn session(server: &TestServer, path: &str, body: Value) -> String {
    let res = server
        .request(Method::POST, &format!("{path}/createUploadSession"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "OneDrive answers a new session 200");
    let json: Value = res.json().await.unwrap();
    json["uploadUrl"].as_str().unwrap().to_owned()
}

/// `PUT`s `data[start..start + len]` (or the rest).
async fn put(
    server: &TestServer,
    url: &str,
    data: &[u8],
    start: usize,
    len: usize,
) -> reqwest::Response {
    let end = (start + len).min(data.len());
    server
        .http
        .put(url)
        .header(
            "Content-Range",
            format!("bytes {start}-{}/{}", end - 1, data.len()),
        )
        .body(data[start..end].to_vec())
        .send()
        .await
        .unwrap()
}

/// Uploads `data` in fragments of `len`, every answer but the last 202; the last.
async fn upload(server: &TestServer, url: &str, data: &[u8], len: usize) -> reqwest::Response {
    let mut start = 0;
    loop {
        let res = put(server, url, data, start, len).await;
        if start + len >= data.len() {
            return res;
        }
        assert_eq!(
            res.status(),
            202,
            "fragment at {start}: {}",
            res.text().await.unwrap()
        );
        let json: Value = res.json().await.unwrap();
        start += len;
        assert_eq!(
            json["nextExpectedRanges"][0],
            format!("{start}-{}", data.len() - 1)
        );
    }
}

fn quick_xor(data: &[u8]) -> String {
    let mut h = QuickXorHash::new();
    h.update(data);
    h.finish_base64()
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    server.request(Method::GET, path).send().await.unwrap()
}

/// The bytes `GET {path}` answers.
async fn content(server: &TestServer, path: &str) -> Vec<u8> {
    get(server, path).await.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_file_uploaded_to_a_drive_path_reads_back_with_its_hashes() {
    let server = TestServer::start().await;
    let data = seeded(3 * 1024 * 1024 + 17, 1);
    let url = session(
        &server,
        "/me/drive/root:/Reports/Q3/big%20file%20%231.bin:",
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail", "description": "d"}}),
    )
    .await;
    let res = upload(&server, &url, &data, 4 * UNIT).await;
    assert_eq!(res.status(), 201, "a new file");
    let item: Value = res.json().await.unwrap();
    assert_eq!(item["name"], "big file #1.bin");
    assert_eq!(item["size"], data.len() as u64);
    assert_eq!(item["description"], "d");
    assert_eq!(item["file"]["hashes"]["quickXorHash"], quick_xor(&data));
    assert_eq!(
        item["file"]["hashes"]["sha256Hash"],
        sha256_hex(&data).to_uppercase()
    );
    assert_eq!(item["parentReference"]["path"], "/drive/root:/Reports/Q3");
    let id = item["id"].as_str().unwrap();
    // The Python SDK re-sends the last range after completion: the same file.
    let again = put(&server, &url, &data, 8 * UNIT, 4 * UNIT).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id);
    // Read back by id and by path, whole and by range.
    let by_id: Value = get(&server, &format!("/me/drive/items/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_id["eTag"], item["eTag"]);
    let drive: Value = get(&server, "/me/drive").await.json().await.unwrap();
    let drive_id = drive["id"].as_str().unwrap();
    let by_path = get(
        &server,
        &format!("/drives/{drive_id}/root:/reports/q3/BIG FILE %231.bin"),
    )
    .await;
    assert_eq!(by_path.status(), 200, "names are found in any case");
    let bytes = get(&server, &format!("/me/drive/items/{id}/content"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&bytes), sha256_hex(&data));
    let part = server
        .request(
            Method::GET,
            "/me/drive/root:/Reports/Q3/big%20file%20%231.bin:/content",
        )
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), &data[1000..2000]);
    // The folders were made on the way.
    let folder: Value = get(&server, "/me/drive/root:/Reports")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(folder["folder"]["childCount"], 1);
    assert_eq!(folder["size"], data.len() as u64);
}

#[tokio::test]
async fn each_conflict_behaviour_does_what_onedrive_does() {
    let server = TestServer::start().await;
    let first = seeded(UNIT + 10, 2);
    let second = seeded(2 * UNIT + 20, 3);
    let path = "/me/drive/root:/a.txt:";
    let url = session(&server, path, json!({})).await;
    let made: Value = upload(&server, &url, &first, UNIT)
        .await
        .json()
        .await
        .unwrap();
    // fail: the last fragment is refused 409, and the session waits for it.
    let url = session(
        &server,
        path,
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail"}}),
    )
    .await;
    assert_eq!(put(&server, &url, &second, 0, 2 * UNIT).await.status(), 202);
    let res = put(&server, &url, &second, 2 * UNIT, UNIT).await;
    expect_graph_error(res, 409, "nameAlreadyExists").await;
    let status: Value = server.session_status(&url).await;
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{}-{}", 2 * UNIT, second.len() - 1)
    );
    // Once the name is free the same fragment completes it.
    let deleted = server
        .request(
            Method::DELETE,
            &format!("/me/drive/items/{}", made["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let res = put(&server, &url, &second, 2 * UNIT, UNIT).await;
    assert_eq!(res.status(), 201);
    let kept: Value = res.json().await.unwrap();
    // replace (the default): the same item, new bytes, new tags, 200.
    let url = session(&server, path, json!({"item": {"name": "a.txt"}})).await;
    let res = upload(&server, &url, &first, UNIT).await;
    assert_eq!(res.status(), 200, "an existing file replaced");
    let replaced: Value = res.json().await.unwrap();
    assert_eq!(replaced["id"], kept["id"]);
    assert_ne!(replaced["eTag"], kept["eTag"]);
    assert_ne!(replaced["cTag"], kept["cTag"]);
    let bytes = content(&server, "/me/drive/root:/a.txt:/content").await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&first));
    // rename: a new file beside it.
    let url = session(
        &server,
        "/me/drive/root:/a.txt:",
        json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}),
    )
    .await;
    let res = upload(&server, &url, &second, UNIT).await;
    assert_eq!(res.status(), 201);
    let renamed: Value = res.json().await.unwrap();
    assert_eq!(renamed["name"], "a 1.txt");
    let bytes = content(&server, "/me/drive/root:/a 1.txt:/content").await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&second));
}

#[tokio::test]
async fn a_deferred_upload_appears_only_at_its_commit() {
    let server = TestServer::start().await;
    let data = seeded(2 * UNIT + 5, 4);
    let url = session(
        &server,
        "/me/drive/root:/later.bin:",
        json!({"deferCommit": true}),
    )
    .await;
    // Committing early says what is missing.
    let early = server
        .http
        .post(&url)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    expect_graph_error(early, 400, "invalidRequest").await;
    let last = upload(&server, &url, &data, UNIT).await;
    assert_eq!(last.status(), 202, "every byte, but no file yet");
    let json: Value = last.json().await.unwrap();
    assert_eq!(json["nextExpectedRanges"], json!([]));
    assert_eq!(
        get(&server, "/me/drive/root:/later.bin").await.status(),
        404
    );
    let commit = server
        .http
        .post(&url)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), 201);
    let item: Value = commit.json().await.unwrap();
    assert_eq!(item["file"]["hashes"]["quickXorHash"], quick_xor(&data));
    let bytes = content(&server, "/me/drive/root:/later.bin:/content").await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&data));
    // Committed, the session is done; a session that commits by itself cannot
    // be committed.
    assert_eq!(server.http.get(&url).send().await.unwrap().status(), 404);
    let url = session(&server, "/me/drive/root:/now.bin:", json!({})).await;
    let res = server
        .http
        .post(&url)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 400, "invalidRequest").await;
}

#[tokio::test]
async fn hashes_go_on_where_they_were_after_a_restart() {
    let mut server = TestServer::start().await;
    let data = seeded(3 * UNIT + 99, 5);
    // No fileSize: the first fragment says the size.
    let url = session(&server, "/me/drive/items/root:/r.bin:", json!({})).await;
    let created: Value = server.session_status(&url).await;
    assert_eq!(created["nextExpectedRanges"], json!(["0-"]));
    assert_eq!(put(&server, &url, &data, 0, 2 * UNIT).await.status(), 202);
    server.restart().await;
    let res = put(&server, &url, &data, 2 * UNIT, 2 * UNIT).await;
    assert_eq!(res.status(), 201);
    let item: Value = res.json().await.unwrap();
    assert_eq!(item["file"]["hashes"]["quickXorHash"], quick_xor(&data));
    assert_eq!(
        item["file"]["hashes"]["sha256Hash"],
        sha256_hex(&data).to_uppercase()
    );
}

#[tokio::test]
async fn stale_etags_deletes_and_strangers_get_onedrives_answers() {
    let server = TestServer::start().await;
    let data = seeded(UNIT, 6);
    let url = session(&server, "/me/drive/root:/d/x.bin:", json!({})).await;
    let item: Value = upload(&server, &url, &data, UNIT)
        .await
        .json()
        .await
        .unwrap();
    let id = item["id"].as_str().unwrap();
    // A stale eTag: 412 on a new session and on a delete.
    let stale = "\"{nope},1\"";
    let res = server
        .request(Method::POST, "/me/drive/root:/d/x.bin:/createUploadSession")
        .header("If-Match", stale)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 412, "resourceModified").await;
    let res = server
        .request(Method::DELETE, &format!("/me/drive/items/{id}"))
        .header("If-Match", stale)
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 412, "resourceModified").await;
    // The current one: accepted.
    let res = server
        .request(Method::POST, "/me/drive/root:/d/x.bin:/createUploadSession")
        .header("If-Match", item["eTag"].as_str().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Deleting the folder deletes what it holds.
    let folder = item["parentReference"]["id"].as_str().unwrap();
    let res = server
        .request(Method::DELETE, &format!("/me/drive/items/{folder}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    expect_graph_error(
        get(&server, &format!("/me/drive/items/{id}")).await,
        404,
        "itemNotFound",
    )
    .await;
    // Names OneDrive refuses, the root, another's drive.
    let res = server
        .request(
            Method::POST,
            "/me/drive/root:/a%3Cb.txt:/createUploadSession",
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 400, "invalidRequest").await;
    let res = server
        .request(Method::DELETE, "/me/drive/root")
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 403, "accessDenied").await;
    expect_graph_error(
        get(&server, "/drives/b-someone-else/root").await,
        404,
        "itemNotFound",
    )
    .await;
}

/// The file `dir/sub/*.json` whose name starts with `id`, read.
fn record(dir: &std::path::Path, sub: &str, id: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(sub).join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[tokio::test]
async fn a_completion_cut_short_by_a_crash_gets_the_hashes_of_every_byte() {
    // The crash this stands for: the finished upload's record was written, the
    // session's record and the drive's were not (a kill -9 between them). Its
    // records are put back as they were before the last fragment.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), |c| c).await;
    let data = seeded(UNIT + 123, 8);
    // No fileSize, one fragment: the record before it does not know the size.
    let url = session(&server, "/me/drive/root:/cut.bin:", json!({})).await;
    let sid = url
        .split("/uploads/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let drive: Value = get(&server, "/me/drive").await.json().await.unwrap();
    let drive_id = drive["id"].as_str().unwrap().to_owned();
    let (session_path, before) = record(dir.path(), "sessions", &sid);
    let (drive_path, drive_before) = record(dir.path(), "drives", &drive_id);
    let done = put(&server, &url, &data, 0, 2 * UNIT).await;
    assert_eq!(done.status(), 201);
    let addr = server.addr();
    server.shutdown().await;
    std::fs::write(&session_path, before).unwrap();
    std::fs::write(&drive_path, drive_before).unwrap();
    // On the same address: the uploadUrl names it.
    let server = TestServer::start_in(dir.path(), |c| c.with_listen(addr)).await;
    assert_eq!(get(&server, "/me/drive/root:/cut.bin").await.status(), 404);
    // The client, never answered, sends its fragment again.
    let again = put(&server, &url, &data, 0, 2 * UNIT).await;
    assert_eq!(again.status(), 201);
    let item: Value = again.json().await.unwrap();
    assert_eq!(item["size"], data.len() as u64);
    assert_eq!(item["file"]["hashes"]["quickXorHash"], quick_xor(&data));
    assert_eq!(
        item["file"]["hashes"]["sha256Hash"],
        sha256_hex(&data).to_uppercase()
    );
    let bytes = content(&server, "/me/drive/root:/cut.bin:/content").await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&data));
}

#[tokio::test]
async fn bytes_no_file_names_are_given_back_and_replaced_uploads_never_return() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), |c| c).await;
    let (a, b) = (seeded(UNIT, 9), seeded(UNIT + 1, 10));
    let first = session(&server, "/me/drive/root:/r.bin:", json!({})).await;
    let made: Value = upload(&server, &first, &a, UNIT)
        .await
        .json()
        .await
        .unwrap();
    let second = session(&server, "/me/drive/root:/r.bin:", json!({})).await;
    assert_eq!(upload(&server, &second, &b, UNIT).await.status(), 200);
    // The replaced upload's session is closed: a late re-send of its last
    // fragment cannot bring the old bytes back.
    let late = put(&server, &first, &a, 0, UNIT).await;
    expect_graph_error(late, 404, "itemNotFound/uploadSessionNotFound").await;
    let bytes = content(&server, "/me/drive/root:/r.bin:/content").await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&b));
    let blobs = || {
        std::fs::read_dir(dir.path().join("attachments"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "bin")
            })
            .count()
    };
    assert_eq!(blobs(), 1, "the replaced file's bytes are gone");
    // A file the drive's record lost (a crash between its change and the
    // deletion it allowed, set up here by hand): its bytes go at start-up.
    let drive: Value = get(&server, "/me/drive").await.json().await.unwrap();
    let drive_id = drive["id"].as_str().unwrap().to_owned();
    server.shutdown().await;
    let (path, text) = record(dir.path(), "drives", &drive_id);
    let mut tree: Value = serde_json::from_str(&text).unwrap();
    let id = made["id"].as_str().unwrap();
    tree["tree"]["entries"].as_object_mut().unwrap().remove(id);
    std::fs::write(&path, tree.to_string()).unwrap();
    // Its session had expired too (a live one would still answer for it).
    for entry in std::fs::read_dir(dir.path().join("sessions")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let _server = TestServer::start_in(dir.path(), |c| c).await;
    assert_eq!(blobs(), 0, "bytes no file names are given back at start-up");
}

#[tokio::test]
async fn reads_make_no_drive_and_a_size_learnt_late_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), |c| {
        c.with_quota(
            upsession_core::quota::QuotaLimits::DEFAULT.with_declared_bytes(2 * UNIT as u64),
        )
    })
    .await;
    for path in ["/me/drive", "/me/drive/root", "/users/someone/drive"] {
        assert_eq!(get(&server, path).await.status(), 200, "{path}");
    }
    let drives = std::fs::read_dir(dir.path().join("drives"))
        .unwrap()
        .count();
    assert_eq!(drives, 0, "reading made no drive");
    // The root's id is the same before and after the drive is stored.
    let root: Value = get(&server, "/me/drive/root").await.json().await.unwrap();
    let url = session(&server, "/me/drive/root:/q.bin:", json!({})).await;
    let stored: Value = get(&server, "/me/drive/root").await.json().await.unwrap();
    assert_eq!(root["id"], stored["id"]);
    // Without fileSize, the first fragment's total counts against the token's
    // declared bytes: 507 past them.
    let big = seeded(3 * UNIT, 11);
    let res = put(&server, &url, &big, 0, UNIT).await;
    expect_graph_error(res, 507, "quotaLimitReached/declaredBytesLimitReached").await;
    // The body's name must be the path's.
    let res = server
        .request(Method::POST, "/me/drive/root:/x.bin:/createUploadSession")
        .json(&json!({"item": {"name": "y.bin"}}))
        .send()
        .await
        .unwrap();
    expect_graph_error(res, 400, "invalidRequest").await;
}
