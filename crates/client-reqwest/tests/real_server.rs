//! The client against our real server on 127.0.0.1, in every dialect: sizes at the
//! limits, odd tails, exactly one fragment, several files at once, byte-exact.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use sha2::{Digest, Sha256};
use upsession_client_reqwest::{Client, UploadOptions};
use upsession_core::{Dialect, Limits};
use upsession_server_hyper::{Config, Fsync, Server};

const TOKEN: &str = "real-token";

async fn server(dialect: Dialect, dir: &std::path::Path) -> upsession_server_hyper::Running {
    let limits = Limits::default();
    let config = Config::new(dir)
        .with_listen("127.0.0.1:0".parse().unwrap())
        .with_token(TOKEN)
        .with_limits(limits)
        .with_dialect(dialect)
        .with_fsync(Fsync::Never);
    Server::start(config).await.unwrap()
}

fn file(dir: &std::path::Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let mut rng = fastrand::Rng::with_seed(len as u64);
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let path = dir.join(format!("f{len}.bin"));
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

async fn stored(location: &str) -> Vec<u8> {
    let res = reqwest::Client::new()
        .get(format!("{location}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{location}");
    res.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_byte_exact_in_every_dialect_at_the_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [3_000_000, 3_932_160, 3_932_161, 10_000_001];
    let files: Vec<_> = sizes.iter().map(|&n| file(dir.path(), n)).collect();
    for dialect in Dialect::ALL {
        let data_dir = dir.path().join(dialect.name);
        let running = server(dialect.clone(), &data_dir).await;
        let client = Client::builder()
            .base_url(running.base_url())
            .token(TOKEN)
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
            let location = done.location.expect("a Location");
            assert_eq!(
                Sha256::digest(stored(&location).await),
                Sha256::digest(data),
                "{}",
                dialect.name
            );
        }
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_150_mb_upload_at_the_maximum_size() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(Dialect::UPSESSION, &dir.path().join("data")).await;
    let (path, data) = file(dir.path(), 150_000_000);
    let client = Client::builder()
        .base_url(running.base_url())
        .token(TOKEN)
        .build()
        .unwrap();
    let draft = client.create_draft("big").await.unwrap();
    let done = client
        .upload_file(&draft, &path, UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(done.size, 150_000_000);
    assert_eq!(
        Sha256::digest(stored(&done.location.unwrap()).await),
        Sha256::digest(&data)
    );
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
            let limits = Limits::default();
            let config = Config::new(&data_dir)
                .with_listen("127.0.0.1:0".parse().unwrap())
                .with_token(TOKEN)
                .with_limits(limits)
                .with_dialect(dialect.clone())
                .with_fsync(Fsync::Never)
                .with_faults(spec.parse::<FaultPlan>().unwrap());
            let running = Server::start(config).await.unwrap();
            let client = Client::builder()
                .base_url(running.base_url())
                .token(TOKEN)
                .fragment_size(320 * 1024)
                .planner(
                    PlannerConfig::default()
                        .with_backoff(Duration::from_millis(5), Duration::from_millis(50)),
                )
                .build()
                .unwrap();
            // A draft may itself fail under `create:500`; item creation has no faults here.
            let draft = client.create_draft("faults").await.unwrap();
            let done = client
                .upload_file(&draft, &path, UploadOptions::new())
                .await
                .unwrap_or_else(|e| panic!("{} under {spec}: {e}", dialect.name));
            let location = done.location.expect("a Location");
            assert_eq!(
                Sha256::digest(stored(&location).await),
                Sha256::digest(&data),
                "{} {spec}",
                dialect.name
            );
            running.shutdown().await;
        }
    }
}
