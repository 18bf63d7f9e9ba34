//! The client against our real server on 127.0.0.1, in every dialect: sizes at the
//! limits, odd tails, exactly one fragment, several files at once, byte-exact.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::path::{Path, PathBuf};

use upsession_client_reqwest::{Client, ClientBuilder, UploadOptions, Uploaded};
use upsession_core::Dialect;
use upsession_testbed::kit::{TOKEN, TestServer, seeded_file, sha256_hex};

/// A seeded file of `len` bytes (its length is its seed).
fn file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    seeded_file(dir, &format!("f{len}.bin"), len, len as u64)
}

/// A client of `server` with the kit's token.
fn client_of(server: &TestServer) -> ClientBuilder {
    Client::builder().base_url(server.base()).token(TOKEN)
}

/// Asserts that the attachment `done` made on `server` holds exactly `data`.
async fn assert_stored(server: &TestServer, done: Uploaded, data: &[u8], what: &str) {
    let location = done.location.expect("a Location");
    assert_eq!(
        sha256_hex(&server.download(&location).await),
        sha256_hex(data),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_byte_exact_in_every_dialect_at_the_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [3_000_000, 3_932_160, 3_932_161, 10_000_001];
    let files: Vec<_> = sizes.iter().map(|&n| file(dir.path(), n)).collect();
    for dialect in Dialect::ALL {
        let data_dir = dir.path().join(dialect.name);
        let server = TestServer::start_in(&data_dir, |c| c.with_dialect(dialect.clone())).await;
        let client = client_of(&server)
            .state_dir(dir.path().join(format!("state-{}", dialect.name)))
            .build()
            .unwrap();
        let draft = client.create_draft(dialect.name).await.unwrap();
        let results = client
            .upload_many(
                &draft,
                files.iter().map(|(p, _)| (p.clone(), UploadOptions::new())),
            )
            .await;
        for (result, (path, data)) in results.into_iter().zip(&files) {
            let done =
                result.unwrap_or_else(|e| panic!("{} in {}: {e}", path.display(), dialect.name));
            assert_stored(&server, done, data, dialect.name).await;
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_150_mb_upload_at_the_maximum_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&dir.path().join("data"), |c| c).await;
    let (path, data) = file(dir.path(), 150_000_000);
    let client = client_of(&server).build().unwrap();
    let draft = client.create_draft("big").await.unwrap();
    let done = client
        .upload_file(&draft, &path, UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(done.size, 150_000_000);
    assert_stored(&server, done, &data, "150 MB").await;
    // One byte more is refused before any fragment is sent.
    let (over, _) = file(dir.path(), 150_000_001);
    let err = client
        .upload_file(&draft, &over, UploadOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_finish_byte_exact_under_every_fault_schedule_in_every_dialect() {
    use std::time::Duration;
    use upsession_core::PlannerConfig;
    use upsession_core::fault::FaultPlan;
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = file(dir.path(), 3_300_000);
    let schedules = [
        "seed=11,put:reset:0.15,put:lost:0.15,status:500:0.2",
        "seed=12,put:503:0.05,put:429:0.05,create:500:0.3,any:slow=20:0.1",
        "seed=13,put:500:0.2,status:reset:0.2,put:lost:0.1",
    ];
    for dialect in Dialect::ALL {
        for spec in schedules {
            let data_dir = dir.path().join(format!("{}-{}", dialect.name, &spec[5..7]));
            let faults = spec.parse::<FaultPlan>().unwrap();
            let server = TestServer::start_in(&data_dir, |c| {
                c.with_dialect(dialect.clone()).with_faults(faults)
            })
            .await;
            let client = client_of(&server)
                .fragment_size(320 * 1024)
                .planner(
                    PlannerConfig::default()
                        .with_backoff(Duration::from_millis(5), Duration::from_millis(50)),
                )
                .build()
                .unwrap();
            // A draft may itself fail under `create:500`; item creation has no faults here.
            let done = common::upload_to_new_draft(&client, "faults", &path)
                .await
                .unwrap_or_else(|e| panic!("{} under {spec}: {e}", dialect.name));
            assert_stored(&server, done, &data, &format!("{} {spec}", dialect.name)).await;
            server.shutdown().await;
        }
    }
}
