//! Resume: an upload stopped part way continues from its saved state with the exact
//! bytes; a changed file or an expired session is refused before anything is sent.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use http::Method;
use upsession_client_reqwest::{
    Client, Error, ProgressKind, ProgressSink, ResumeState, StateStore, Target, UploadOptions,
};
use upsession_conformance::fake::{Fault, RunningFake};

/// Starts an upload of `path` that the server stalls on PUT number `stall_at`,
/// waits until that PUT reached the server, and kills the upload (as Ctrl-C would).
async fn interrupt(server: &RunningFake, client: &Client, path: &Path, stall_at: usize) {
    server.inject(Method::PUT, stall_at, Fault::Stall(Duration::from_secs(60)));
    let (c, p) = (client.clone(), path.to_path_buf());
    let task = tokio::spawn(async move {
        c.upload_file(&Target::message("m1"), &p, UploadOptions::new())
            .await
    });
    wait_for(server, &Method::PUT, stall_at).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

fn only_state(store: &StateStore) -> (PathBuf, ResumeState) {
    let mut states = store.list().unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    let (path, state) = states.pop().unwrap();
    (path, state.unwrap())
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_its_state_file_with_exact_bytes() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (path, bytes) = make_file(dir.path(), "big.zip", 5 * FRAGMENT as usize + 99, 40);
    interrupt(&server, &client, &path, 3).await;

    let (state_path, state) = only_state(&store);
    // Progress is informational (resume asks the session) and written at most
    // once a second, so it may trail what the server acknowledged.
    assert!(state.acknowledged <= 2 * FRAGMENT, "{}", state.acknowledged);
    assert_eq!(state.file.path, path.canonicalize().unwrap());
    assert_eq!(state.file.size, bytes.len() as u64);
    assert_eq!(state.file.sha256, sha256(&bytes));
    assert_eq!(state.attachment.name, "big.zip");
    assert_eq!(
        state.attachment.content_type.as_deref(),
        Some("application/zip")
    );
    assert_eq!(state.target, Target::message("m1"));
    assert!(state.expires_at().is_some());
    let before = server.log().len();

    // A fresh client, as after a reboot; no token is needed to resume.
    let resumer = Client::builder().planner(fast_planner()).build().unwrap();
    let up = resumer
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap();
    assert_stored(&server, up.attachment_id.as_deref(), &bytes);
    assert_eq!(up.sha256.as_deref(), Some(sha256(&bytes).as_str()));
    assert!(
        !state_path.exists(),
        "the state is removed once the upload is done"
    );

    let after: Vec<_> = server.log().into_iter().skip(before).collect();
    assert_eq!(after[0].method, "GET", "resume asks the session first");
    assert!(
        after.iter().all(|r| r.to_upload_url),
        "resume only talks to the uploadUrl"
    );
    assert_eq!(
        after[1].content_range.as_deref(),
        Some(
            format!(
                "bytes {}-{}/{}",
                2 * FRAGMENT,
                3 * FRAGMENT - 1,
                bytes.len()
            )
            .as_str()
        ),
        "it continues where the session is"
    );
    assert_eq!(server.count(&Method::POST), 1, "no second session");
    assert_token_only_to_graph(&server);
}

#[tokio::test]
async fn the_state_is_saved_before_the_first_fragment_is_sent() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("one.json");
    let (path, bytes) = make_file(dir.path(), "a.bin", 2 * FRAGMENT as usize, 41);
    let checked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sf, seen) = (state_file.clone(), checked.clone());
    let options = UploadOptions::new()
        .state_file(&state_file)
        .on_progress(move |e| {
            if let ProgressKind::SessionCreated { upload_url, .. } = &e.kind {
                let state = ResumeState::load(&sf).expect("saved when the session exists");
                assert_eq!(&state.upload_url, upload_url);
                assert_eq!(state.acknowledged, 0);
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    let up = client(&server)
        .upload_file(&Target::message("m1"), &path, options)
        .await
        .unwrap();
    assert!(checked.load(std::sync::atomic::Ordering::SeqCst));
    assert_stored(&server, up.attachment_id.as_deref(), &bytes);
    assert!(!state_file.exists());
}

#[tokio::test]
async fn resume_refuses_a_modified_file_before_sending_anything() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (path, mut bytes) = make_file(dir.path(), "a.bin", 4 * FRAGMENT as usize, 42);
    interrupt(&server, &client, &path, 2).await;
    let (state_path, _) = only_state(&store);

    // Same size, one byte different, in the part not yet sent.
    bytes[3 * FRAGMENT as usize] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let before = server.log().len();
    let err = client
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap_err();
    let Error::FileChanged { path: p, what } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(p, &path.canonicalize().unwrap());
    assert!(what.contains("content"), "{what}");
    assert!(
        err.to_string()
            .contains("has changed since the upload started"),
        "{err}"
    );
    assert_eq!(server.log().len(), before, "nothing was sent");
    assert!(
        state_path.exists(),
        "the state is kept: the file may be restored"
    );

    // A different size is caught too.
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        client.resume(&state_path, &ProgressSink::none()).await,
        Err(Error::FileChanged { .. })
    ));
}

#[tokio::test]
async fn a_touched_but_unchanged_file_resumes() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (path, bytes) = make_file(dir.path(), "a.bin", 3 * FRAGMENT as usize, 43);
    interrupt(&server, &client, &path, 2).await;
    let (state_path, _) = only_state(&store);
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let up = client
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap();
    assert_stored(&server, up.attachment_id.as_deref(), &bytes);
}

#[tokio::test]
async fn resume_refuses_a_session_past_its_expiry_without_asking() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (path, _) = make_file(dir.path(), "a.bin", 3 * FRAGMENT as usize, 44);
    interrupt(&server, &client, &path, 2).await;
    let (state_path, mut state) = only_state(&store);
    state.expires = Some("2001-01-01T00:00:00Z".into());
    state.save(&state_path).unwrap();

    let before = server.log().len();
    let err = client
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SessionExpired { remote: None }),
        "{err:?}"
    );
    assert_eq!(server.log().len(), before, "nothing was sent");
    assert!(!state_path.exists(), "a dead session's state is removed");
}

#[tokio::test]
async fn resume_reports_a_session_the_server_forgot_as_expired() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (path, _) = make_file(dir.path(), "a.bin", 3 * FRAGMENT as usize, 45);
    interrupt(&server, &client, &path, 2).await;
    let (state_path, _) = only_state(&store);
    server.inject(Method::GET, 1, Fault::Expire);

    let err = client
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap_err();
    let Error::SessionExpired {
        remote: Some(remote),
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        (
            remote.status.as_u16(),
            remote.code.as_str(),
            remote.inner_code.as_deref()
        ),
        (404, "itemNotFound", Some("uploadSessionNotFound"))
    );
    assert!(!state_path.exists());
}

#[tokio::test]
async fn resume_all_continues_every_unfinished_upload() {
    let server = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    let (a, a_bytes) = make_file(dir.path(), "a.bin", 3 * FRAGMENT as usize, 46);
    let (b, b_bytes) = make_file(dir.path(), "b.bin", 2 * FRAGMENT as usize + 1, 47);
    interrupt(&server, &client, &a, 2).await;
    interrupt(&server, &client, &b, 4).await;
    assert_eq!(store.list().unwrap().len(), 2);
    // A state file that cannot be read is reported, not fatal.
    std::fs::write(store.dir().join("broken.json"), b"{").unwrap();

    let results = client
        .resume_all(&store, &ProgressSink::none())
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let mut done = 0;
    for (state_path, result) in results {
        if state_path.ends_with("broken.json") {
            assert!(
                matches!(result, Err(Error::InvalidState { .. })),
                "{result:?}"
            );
            continue;
        }
        let up = result.unwrap();
        let expected = if up.name == "a.bin" {
            &a_bytes
        } else {
            &b_bytes
        };
        assert_stored(&server, up.attachment_id.as_deref(), expected);
        done += 1;
    }
    assert_eq!(done, 2);
    assert_eq!(
        store.list().unwrap().len(),
        1,
        "only the broken state is left"
    );
}
