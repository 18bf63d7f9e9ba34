//! The blocking client against our real server on 127.0.0.1 (run on a background
//! tokio runtime, a dev-dependency only): byte-exact uploads, the small-file
//! `POST`, resume across clients, cancellation from another thread, faults, and the
//! conformance crate's client rules.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use upsession_client_ureq::{
    CancelToken, Client, ClientBuilder, Error, PlannerConfig, ProgressKind, Target, UploadOptions,
    UploadUrl, Uploaded,
};
use upsession_testbed::kit::{TOKEN, TestServer, seeded_file, sha256_hex};

/// A blocking client of `base` with `token`, short backoffs and a 50 s deadline.
fn quick_client(base: &str, token: &str) -> ClientBuilder {
    let planner = PlannerConfig::default()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .with_deadline(Some(Duration::from_secs(50)));
    Client::builder()
        .base_url(base)
        .token(token)
        .planner(planner)
}

/// A blocking client of `server`, with fragments of 320 KiB.
fn client_of(server: &TestServer) -> ClientBuilder {
    quick_client(server.base(), TOKEN).fragment_size(320 * 1024)
}

/// Runs blocking client code off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the blocking call ends")
}

/// Asserts that the attachment `done` made on `server` holds exactly `data`.
async fn assert_stored(server: &TestServer, done: &Uploaded, data: &[u8]) {
    let location = done.location.as_deref().expect("a Location");
    assert_eq!(
        sha256_hex(&server.download(location).await),
        sha256_hex(data)
    );
}

/// A new draft on `server`, through the blocking client.
async fn draft(server: &TestServer) -> Target {
    let client = client_of(server).build().unwrap();
    blocking(move || client.create_draft("ureq")).await.unwrap()
}

fn file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    seeded_file(dir, &format!("f{len}.bin"), len, len as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_fragment_upload_is_byte_exact_and_a_small_file_goes_by_post() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let target = draft(&server).await;
    for len in [3_300_000, 1024] {
        let (path, data) = file(dir.path(), len);
        let client = client_of(&server).build().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let options = UploadOptions::new().on_progress(move |e| {
            seen.lock().unwrap().push(e.kind.clone());
        });
        let t = target.clone();
        let done = blocking(move || client.upload_file(&t, &path, &options))
            .await
            .unwrap();
        assert_eq!(done.size, len as u64);
        assert_stored(&server, &done, &data).await;
        let events = events.lock().unwrap();
        let sessions = events
            .iter()
            .filter(|k| matches!(k, ProgressKind::SessionCreated { .. }))
            .count();
        // Below 3,000,000 bytes: one POST, no session.
        assert_eq!(sessions, usize::from(len >= 3_000_000), "{len}: {events:?}");
        assert!(matches!(
            events.last(),
            Some(ProgressKind::Completed { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_finish_byte_exact_through_faults() {
    use upsession_core::fault::FaultPlan;
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = file(dir.path(), 3_300_000);
    for spec in [
        "seed=11,put:reset:0.15,put:lost:0.15,status:500:0.2",
        "seed=12,put:503:0.05,put:429:0.05,any:slow=20:0.1",
    ] {
        let faults = spec.parse::<FaultPlan>().unwrap();
        let server = TestServer::start_with(|c| c.with_faults(faults)).await;
        let target = draft(&server).await;
        let client = client_of(&server).build().unwrap();
        let p = path.clone();
        let done = blocking(move || client.upload_file(&target, &p, &UploadOptions::new()))
            .await
            .unwrap_or_else(|e| panic!("under {spec}: {e}"));
        assert_stored(&server, &done, &data).await;
        server.shutdown().await;
    }
}

/// A progress callback that dies with the upload after its first acknowledged
/// fragment, as a killed process would: the state stays on disk.
fn dies_after_first_fragment(event: &upsession_client_ureq::ProgressEvent) {
    if let ProgressKind::Acknowledged { acknowledged, .. } = event.kind
        && acknowledged > 0
    {
        panic!("the process dies here (on purpose)");
    }
}

/// A server, a 3.3 MB file (path and bytes), where its state goes, and a draft.
async fn interrupted_upload_setup(dir: &Path) -> (TestServer, PathBuf, Vec<u8>, PathBuf, Target) {
    let server = TestServer::start().await;
    let (path, data) = file(dir, 3_300_000);
    let target = draft(&server).await;
    (server, path, data, dir.join("state.json"), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_written_by_the_reqwest_client_resumes_here() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path, data, state, target) = interrupted_upload_setup(dir.path()).await;
    let reqwest = upsession_client_reqwest::Client::builder()
        .base_url(server.base())
        .token(TOKEN)
        .fragment_size(320 * 1024)
        .build()
        .unwrap();
    let options = upsession_client_reqwest::UploadOptions::new()
        .state_file(&state)
        .on_progress(dies_after_first_fragment);
    let died = tokio::spawn(async move { reqwest.upload_file(&target, &path, options).await });
    assert!(
        died.await.is_err() && state.exists(),
        "killed, its state kept"
    );

    let client = client_of(&server).build().unwrap();
    let s = state.clone();
    let done = blocking(move || client.resume(&s, &UploadOptions::new())).await;
    assert_stored(&server, &done.unwrap(), &data).await;
    assert!(!state.exists(), "the state is removed once done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_written_here_resumes_with_the_reqwest_client() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path, data, state, target) = interrupted_upload_setup(dir.path()).await;
    let client = client_of(&server).build().unwrap();
    let options = UploadOptions::new()
        .state_file(&state)
        .on_progress(dies_after_first_fragment);
    let died = tokio::task::spawn_blocking(move || client.upload_file(&target, &path, &options));
    assert!(
        died.await.is_err() && state.exists(),
        "killed, its state kept"
    );

    // Resuming needs no token: only the uploadUrl is spoken to.
    let reqwest = upsession_client_reqwest::Client::builder().build().unwrap();
    let progress = upsession_client_reqwest::ProgressSink::none();
    let done = reqwest.resume(&state, &progress).await.unwrap();
    assert_stored(&server, &done, &data).await;
    assert!(!state.exists(), "the state is removed once done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_from_another_thread_deletes_the_session_and_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let (path, _) = file(dir.path(), 6_000_000);
    let state = dir.path().join("state.json");
    let target = draft(&server).await;
    let client = Arc::new(client_of(&server).build().unwrap());

    let cancel = CancelToken::new();
    let (tx, rx) = mpsc::channel::<()>();
    let stopper = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            rx.recv().unwrap();
            cancel.cancel();
        })
    };
    let url: Arc<Mutex<Option<UploadUrl>>> = Arc::default();
    let seen = Arc::clone(&url);
    let options = UploadOptions::new()
        .state_file(&state)
        .cancel_on(cancel)
        .on_progress(move |event| match &event.kind {
            ProgressKind::SessionCreated { upload_url, .. } => {
                *seen.lock().unwrap() = Some(upload_url.clone());
            }
            ProgressKind::Acknowledged { acknowledged, .. } if *acknowledged > 0 => {
                let _ = tx.send(());
                // Slow enough that the other thread cancels mid-upload.
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => {}
        });
    let c = Arc::clone(&client);
    let result = blocking(move || c.upload_file(&target, &path, &options)).await;
    stopper.join().unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(!state.exists(), "the state is removed");
    let url = url.lock().unwrap().clone().expect("a session was created");
    let query = url.expose_secret().split_once('?').unwrap().1.to_owned();
    let shown = format!("{url} {url:?} {result:?}");
    assert!(
        !shown.contains(&query),
        "the credential never shows: {shown}"
    );
    let status = blocking(move || client.status(&url)).await;
    match status {
        Err(Error::SessionExpired { remote: Some(r) }) => assert_eq!(r.status, 404, "{r}"),
        other => panic!("the session must be gone (404): {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_client_passes_the_conformance_client_rules() {
    use upsession_conformance::client::{self, ClientReport, Config};
    let config = Config::default();
    let report = client::check(&config, |target| async move {
        blocking(move || {
            // The fake has no small-file route: every file through a session.
            let client = quick_client(&target.base_url, &target.token)
                .small_file_limit(0)
                .fragment_size(target.fragment_size)
                .build()
                .map_err(|e| e.to_string())?;
            let item = Target::message(target.message_id.clone());
            let done = client
                .upload_file(&item, &target.file, &UploadOptions::new())
                .map_err(|e| e.to_string())?;
            Ok(ClientReport {
                location: done.location,
                attachment_id: done.attachment_id,
            })
        })
        .await
    })
    .await
    .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert_eq!(report.cases, config.cases, "{report}");
}

/// A source that cancels its upload once `at` bytes of it have been read: the
/// cancel lands in the middle of a fragment's body.
struct CancelsMidBody {
    inner: std::io::Cursor<Vec<u8>>,
    at: u64,
    token: CancelToken,
}

impl std::io::Read for CancelsMidBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inner.position() >= self.at {
            self.token.cancel();
        }
        let n = buf.len().min(16 * 1024);
        self.inner.read(&mut buf[..n])
    }
}

impl std::io::Seek for CancelsMidBody {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_the_middle_of_a_fragment_abandons_it_and_deletes_the_session() {
    let server = TestServer::start().await;
    let target = draft(&server).await;
    let client = client_of(&server).build().unwrap();
    assert!(!format!("{client:?}").contains(TOKEN), "{client:?}");
    let token = CancelToken::new();
    let source = CancelsMidBody {
        inner: std::io::Cursor::new(upsession_testbed::kit::seeded(3_300_000, 3)),
        at: 400 * 1024,
        token: token.clone(),
    };
    let options = UploadOptions::new().name("mid.bin").cancel_on(token);
    let result = blocking(move || client.upload_reader(&target, source, 3_300_000, &options)).await;
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drive_file_uploads_through_faults_and_its_hashes_are_checked() {
    use upsession_client_ureq::ConflictBehavior;
    let server = TestServer::start_with(|c| {
        c.with_faults("seed=3,put:503:0.3,put:lost:0.2".parse().unwrap())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = file(dir.path(), 3 * 320 * 1024 + 11);
    let client = client_of(&server).build().unwrap();
    let target = Target::drive("ureq/f.bin", ConflictBehavior::Fail);
    let done = blocking(move || client.upload_file(&target, &path, &UploadOptions::new()))
        .await
        .unwrap();
    let item = done.drive_item.as_ref().expect("the driveItem");
    assert_eq!(
        (item.name.as_str(), item.size),
        ("f.bin", data.len() as u64)
    );
    let res = server
        .request(http::Method::GET, "/me/drive/root:/ureq/f.bin:/content")
        .send()
        .await
        .unwrap();
    assert_eq!(sha256_hex(&res.bytes().await.unwrap()), sha256_hex(&data));
}
