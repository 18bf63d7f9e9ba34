//! The client as a user meets it, against our real server on 127.0.0.1: small and
//! large files with the same call, cancelling, a server that is not there, and
//! progress by the byte.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use upsession_client_reqwest::{
    CancellationToken, Client, ClientBuilder, Error, ProgressKind, ProgressSink, StateStore,
    Target, UploadOptions, UploadUrl,
};
use upsession_testbed::kit::{TOKEN, TestServer, crc64_hex, seeded_file, sha256_hex};

fn client_of(server: &TestServer) -> ClientBuilder {
    Client::builder().base_url(server.base()).token(TOKEN)
}

/// Every progress event's kind, in order, and the sink that records them.
fn recorded() -> (ProgressSink, Arc<Mutex<Vec<ProgressKind>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let sink = ProgressSink::callback(move |e| seen.lock().unwrap().push(e.kind.clone()));
    (sink, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_and_a_large_file_attach_with_the_same_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let client = client_of(&server).build().unwrap();
    let draft = client.create_draft("two files").await.unwrap();
    for (len, seed) in [(1024, 1), (3_500_000, 2)] {
        let (path, data) = seeded_file(dir.path(), &format!("f{len}.bin"), len, seed);
        // The SHA-256 when asked, small file (one POST) or not.
        let sha = len > 2000;
        let done = client
            .upload_file(&draft, &path, UploadOptions::new().sha256(sha))
            .await
            .unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_eq!(done.size, len as u64);
        assert_eq!(done.crc64.as_deref(), Some(crc64_hex(&data).as_str()));
        let want = sha.then(|| sha256_hex(&data));
        assert_eq!(done.sha256, want);
        let location = done.location.expect("a location");
        let id = done.attachment_id.expect("an attachment id");
        assert!(location.ends_with(&id), "{location}");
        assert_eq!(
            sha256_hex(&server.download(&location).await),
            sha256_hex(&data),
            "{len} bytes"
        );
    }
    let Target::Message(id) = &draft else {
        panic!()
    };
    let (_, list) = server
        .call(
            reqwest::Method::GET,
            &format!("/me/messages/{id}/attachments"),
            None,
        )
        .await;
    assert_eq!(list["value"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_deletes_the_session_and_the_resume_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let states = StateStore::new(dir.path().join("states"));
    let client = client_of(&server)
        .fragment_size(1024 * 1024)
        .state_dir(states.dir())
        .build()
        .unwrap();
    let (path, _) = seeded_file(dir.path(), "big.bin", 20_000_000, 3);
    let draft = client.create_draft("cancel").await.unwrap();
    let cancel = CancellationToken::new();
    let upload_url: Arc<Mutex<Option<UploadUrl>>> = Arc::default();
    let (token, url) = (cancel.clone(), Arc::clone(&upload_url));
    let options = UploadOptions::new()
        .cancel_on(cancel)
        .on_progress(move |e| match &e.kind {
            ProgressKind::SessionCreated { upload_url, .. } => {
                *url.lock().unwrap() = Some(upload_url.clone());
            }
            // In the middle of the third fragment: a PUT is abandoned.
            ProgressKind::Sent { sent, .. } if *sent > 2 * 1024 * 1024 + 1000 => token.cancel(),
            _ => {}
        });
    let err = client
        .upload_file(&draft, &path, options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(
        states.list().unwrap().len(),
        0,
        "the resume state is removed"
    );
    let url = upload_url
        .lock()
        .unwrap()
        .clone()
        .expect("the session was created");
    let status = reqwest::get(url.expose_secret()).await.unwrap().status();
    assert_eq!(status, 404, "the session is gone");
    let err = client.status(&url).await.unwrap_err();
    assert!(matches!(err, Error::SessionExpired { .. }), "{err}");
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}/v1.0", closed_port());
    let client = Client::builder()
        .base_url(&base)
        .token(TOKEN)
        .build()
        .unwrap();
    let (small, _) = seeded_file(dir.path(), "small.bin", 1000, 4);
    let (large, _) = seeded_file(dir.path(), "large.bin", 3_100_000, 5);
    let target = Target::message("AAMk1");
    let started = Instant::now();
    let errors = [
        client.create_draft("x").await.unwrap_err(),
        client
            .upload_file(&target, &small, UploadOptions::new())
            .await
            .unwrap_err(),
        client
            .upload_file(&target, &large, UploadOptions::new())
            .await
            .unwrap_err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let paths = [
        "/me/messages",
        "/me/messages/AAMk1/attachments",
        "/me/messages/AAMk1/attachments/createUploadSession",
    ];
    for (err, path) in errors.iter().zip(paths) {
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot reach {base}{path}: connection refused")
        );
    }
    // An unknown host says so.
    let client = Client::builder()
        .base_url("http://upsession-test.invalid/v1.0")
        .token(TOKEN)
        .build()
        .unwrap();
    let err = client
        .upload_file(&target, &large, UploadOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("cannot reach http://upsession-test.invalid/v1.0/me/messages/AAMk1/attachments/createUploadSession: unknown host"), "{err}");
}

/// The byte counts of `Sent` and `Acknowledged` events, in order, marked `s`/`a`.
fn counts(events: &[ProgressKind]) -> Vec<(char, u64)> {
    events
        .iter()
        .filter_map(|k| match k {
            ProgressKind::Sent { sent, .. } => Some(('s', *sent)),
            ProgressKind::Acknowledged { acknowledged, .. } => Some(('a', *acknowledged)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_moves_within_a_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let client = client_of(&server).build().unwrap();
    let (path, _) = seeded_file(dir.path(), "p.bin", 9_000_000, 6);
    let draft = client.create_draft("progress").await.unwrap();
    let (sink, events) = recorded();
    client
        .upload_file(&draft, &path, UploadOptions::new().progress(sink))
        .await
        .unwrap();
    let counts = counts(&events.lock().unwrap());
    let fragment = upsession_client_reqwest::DEFAULT_FRAGMENT_SIZE;
    // Before the first fragment is acknowledged, its bytes are counted as they go.
    let first_ack = counts.iter().position(|&(k, n)| k == 'a' && n > 0).unwrap();
    let within: Vec<_> = counts[..first_ack]
        .iter()
        .filter(|&&(k, n)| k == 's' && 0 < n && n < fragment)
        .collect();
    assert!(within.len() >= 3, "{counts:?}");
    assert!(
        counts.windows(2).all(|w| w[0].1 <= w[1].1),
        "never backwards: {counts:?}"
    );
    assert_eq!(counts.last(), Some(&('a', 9_000_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_progress_starts_where_the_session_is() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let states = StateStore::new(dir.path().join("states"));
    let fragment = 320 * 1024;
    let client = client_of(&server)
        .fragment_size(fragment)
        .state_dir(states.dir())
        .build()
        .unwrap();
    let (path, data) = seeded_file(dir.path(), "r.bin", 4_000_000, 7);
    let draft = client.create_draft("resume").await.unwrap();
    // Stopped (as by a crash) once three fragments are acknowledged.
    stop_after(&client, &draft, &path, 3 * fragment).await;
    let (state_path, _) = states.list().unwrap().pop().unwrap();
    let (sink, events) = recorded();
    let done = client.resume(&state_path, &sink).await.unwrap();
    assert_eq!(
        sha256_hex(&server.download(&done.location.unwrap()).await),
        sha256_hex(&data)
    );
    let counts = counts(&events.lock().unwrap());
    // The first count is what the session held (at least three fragments, or
    // the saved state's count if it was saved since), never 0, and it only grows.
    assert!(counts[0].1 > 0, "never from 0: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0].1 <= w[1].1), "{counts:?}");
    let first_sent = counts.iter().find(|&&(k, _)| k == 's').unwrap().1;
    assert!(
        first_sent > 3 * fragment,
        "it continues where it was: {counts:?}"
    );
}

/// Uploads `path` and drops the upload once `acknowledged` bytes are.
async fn stop_after(client: &Client, target: &Target, path: &Path, acknowledged: u64) {
    let reached = CancellationToken::new();
    let seen = reached.clone();
    let options = UploadOptions::new().on_progress(move |e| {
        if matches!(e.kind, ProgressKind::Acknowledged { acknowledged: n, .. } if n >= acknowledged)
        {
            seen.cancel();
        }
    });
    tokio::select! {
        done = client.upload_file(target, path, options) => panic!("finished: {done:?}"),
        () = reached.cancelled() => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_during_its_last_fragment_keeps_its_attachment_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let client = client_of(&server).build().unwrap();
    let (path, data) = seeded_file(dir.path(), "changing.bin", 5_000_000, 9);
    let draft = client.create_draft("changed").await.unwrap();
    let fragment = upsession_client_reqwest::DEFAULT_FRAGMENT_SIZE;
    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (file, flag) = (path.clone(), Arc::clone(&changed));
    // While the last fragment goes, its first byte (long sent) changes on disk.
    let sink = ProgressSink::callback(move |e| {
        if let ProgressKind::Sent { sent, .. } = e.kind
            && sent > fragment
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            // In place: truncating and rewriting would let the reader see
            // a short file, a different change than the one tested here.
            use std::io::{Read, Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)
                .unwrap();
            let mut first = [0u8; 1];
            f.read_exact(&mut first).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&[first[0] ^ 0xff]).unwrap();
        }
    });
    let done = client
        .upload_file(&draft, &path, UploadOptions::new().progress(sink))
        .await
        .expect("the attachment exists: not an error");
    assert!(changed.load(std::sync::atomic::Ordering::SeqCst));
    let why = done.file_changed.expect("the change is said");
    assert!(why.contains("changed"), "{why}");
    let location = done.location.expect("a location");
    assert!(done.attachment_id.is_some_and(|id| location.ends_with(&id)));
    // The attachment holds the bytes that were sent: the file as it was.
    assert_eq!(
        sha256_hex(&server.download(&location).await),
        sha256_hex(&data)
    );
}
