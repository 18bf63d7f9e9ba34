//! Resume: an upload stopped part way continues from its saved state with the exact
//! bytes; a changed file or an expired session is refused before anything is sent.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use http::Method;
use upsession_client_reqwest::{
    Client, Error, ProgressKind, ProgressSink, ResumeState, StateStore, UploadOptions,
};
use upsession_conformance::fake::{Fault, RunningFake};
use upsession_testbed::kit::crc64_hex;

/// Starts an upload of `path` that the server stalls on PUT number `stall_at`,
/// waits until that PUT reached the server, and kills the upload (as Ctrl-C would).
async fn interrupt(server: &RunningFake, client: &Client, path: &Path, stall_at: usize) {
    server.inject(Method::PUT, stall_at, Fault::Stall(Duration::from_secs(60)));
    let (c, p) = (client.clone(), path.to_path_buf());
    let task = tokio::spawn(async move { c.upload_file(&m1(), &p, UploadOptions::new()).await });
    wait_for(server, &Method::PUT, stall_at).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

/// An upload of a seeded file, interrupted at PUT number `stall_at`, by a client
/// that keeps its state in `store`; the one state it left.
struct Interrupted {
    server: FakeWithFile,
    client: Client,
    store: StateStore,
    state_path: PathBuf,
    state: ResumeState,
}

async fn interrupted(name: &str, len: usize, seed: u64, stall_at: usize) -> Interrupted {
    let server = FakeWithFile::new(fake().await, name, len, seed);
    let store = StateStore::new(server.dir().join("states"));
    let client = builder(&server).state_dir(store.dir()).build().unwrap();
    interrupt(&server, &client, &server.path, stall_at).await;
    let mut states = store.list().unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    let (state_path, state) = states.pop().unwrap();
    Interrupted {
        server,
        client,
        store,
        state_path,
        state: state.unwrap(),
    }
}

impl Interrupted {
    /// Resumes from the state file.
    async fn resume(&self) -> Result<upsession_client_reqwest::Uploaded, Error> {
        self.client
            .resume(&self.state_path, &ProgressSink::none())
            .await
    }
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_its_state_file_with_exact_bytes() {
    let Interrupted {
        server,
        state_path,
        state,
        ..
    } = interrupted("big.zip", 5 * FRAGMENT as usize + 99, 40, 3).await;
    let bytes = &server.bytes;
    // Progress is informational (resume asks the session) and written at most
    // once a second, so it may trail what the server acknowledged.
    assert!(state.acknowledged <= 2 * FRAGMENT, "{}", state.acknowledged);
    assert_eq!(state.file.path, server.path.canonicalize().unwrap());
    assert_eq!(state.file.size, bytes.len() as u64);
    // Hashed from the bytes the upload read: the whole file's hash only at its
    // end; a state saved before that may carry the hashes of the bytes read so far.
    assert_eq!((state.file.crc64, state.file.sha256.as_ref()), (None, None));
    if let Some(sent) = &state.file.sent_crc64 {
        let len = usize::try_from(sent.len).unwrap();
        assert_eq!(crc64_hex(&bytes[..len]), format!("{:016x}", sent.crc64));
    }
    assert_eq!(state.file.sent_hashes, None, "no SHA-256 asked for");
    assert_eq!(state.attachment.name, "big.zip");
    assert_eq!(
        state.attachment.content_type.as_deref(),
        Some("application/zip")
    );
    assert_eq!(state.target, m1());
    assert!(state.expires_at().is_some());
    let before = server.log().len();

    // A fresh client, as after a reboot; no token is needed to resume.
    let resumer = Client::builder().planner(fast_planner()).build().unwrap();
    let up = resumer
        .resume(&state_path, &ProgressSink::none())
        .await
        .unwrap();
    server.assert_stored(&up);
    assert_eq!(up.crc64.as_deref(), Some(crc64_hex(bytes).as_str()));
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
    let server = with_file(2 * FRAGMENT as usize, 41).await;
    let state_file = server.dir().join("one.json");
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
    let up = server.upload(&client(&server), options).await.unwrap();
    assert!(checked.load(std::sync::atomic::Ordering::SeqCst));
    server.assert_stored(&up);
    assert!(!state_file.exists());
}

#[tokio::test]
async fn resume_refuses_a_modified_file_before_sending_anything() {
    let it = interrupted("a.bin", 4 * FRAGMENT as usize, 42, 2).await;
    let path = &it.server.path;

    // Same size, one byte different, in the part not yet sent.
    let mut bytes = it.server.bytes.clone();
    bytes[3 * FRAGMENT as usize] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
    let before = it.server.log().len();
    let err = it.resume().await.unwrap_err();
    let Error::FileChanged { path: p, what } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(p, &path.canonicalize().unwrap());
    // The state has no hash of the part not yet sent: its time is the check.
    assert!(what.contains("modified"), "{what}");
    assert!(
        err.to_string()
            .contains("has changed since the upload started"),
        "{err}"
    );
    assert_eq!(it.server.log().len(), before, "nothing was sent");
    assert!(
        it.state_path.exists(),
        "the state is kept: the file may be restored"
    );

    // A different size is caught too.
    std::fs::write(path, b"short").unwrap();
    assert!(matches!(it.resume().await, Err(Error::FileChanged { .. })));
}

#[tokio::test]
async fn a_touched_but_unchanged_file_resumes() {
    let it = interrupted("a.bin", 3 * FRAGMENT as usize, 43, 2).await;
    // The hash reaches the state once its thread has finished (a state saved
    // before it is checked by size and modification time, so a touch is then a
    // change): this test is about a state that has it.
    let mut state = ResumeState::load(&it.state_path).unwrap();
    state.file.crc64 = Some(u64::from_str_radix(&crc64_hex(&it.server.bytes), 16).unwrap());
    state.save(&it.state_path).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(&it.server.path)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let up = it.resume().await.unwrap();
    it.server.assert_stored(&up);
}

#[tokio::test]
async fn resume_refuses_a_session_past_its_expiry_without_asking() {
    let mut it = interrupted("a.bin", 3 * FRAGMENT as usize, 44, 2).await;
    it.state.expires = Some("2001-01-01T00:00:00Z".into());
    it.state.save(&it.state_path).unwrap();

    let before = it.server.log().len();
    let err = it.resume().await.unwrap_err();
    assert!(
        matches!(err, Error::SessionExpired { remote: None }),
        "{err:?}"
    );
    assert_eq!(it.server.log().len(), before, "nothing was sent");
    assert!(!it.state_path.exists(), "a dead session's state is removed");
}

#[tokio::test]
async fn resume_reports_a_session_the_server_forgot_as_expired() {
    let it = interrupted("a.bin", 3 * FRAGMENT as usize, 45, 2).await;
    it.server.inject(Method::GET, 1, Fault::Expire);

    let err = it.resume().await.unwrap_err();
    let remote = expired_remote(&err);
    assert_eq!(
        (
            remote.status.as_u16(),
            remote.code.as_str(),
            remote.inner_code.as_deref()
        ),
        (404, "itemNotFound", Some("uploadSessionNotFound"))
    );
    assert!(!it.state_path.exists());
}

#[tokio::test]
async fn resume_all_continues_every_unfinished_upload() {
    let Interrupted {
        server,
        client,
        store,
        ..
    } = interrupted("a.bin", 3 * FRAGMENT as usize, 46, 2).await;
    let (b, b_bytes) = seeded_file(server.dir(), "b.bin", 2 * FRAGMENT as usize + 1, 47);
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
            &server.bytes
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
