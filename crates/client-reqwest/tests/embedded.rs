//! upsession's server mounted inside someone else's axum application, under a
//! prefix and beside a route of its own, with our client uploading through it.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use sha2::{Digest, Sha256};
use upsession_client_reqwest::{Client, UploadOptions};
use upsession_server_hyper::{Config, Fsync, UploadService};

const TOKEN: &str = "embedded-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_app_serves_uploads_under_a_prefix_beside_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The application's own server: its runtime, its listener, its routes.
    let uploads = UploadService::new(
        Config::new(dir.path())
            .with_token(TOKEN)
            .with_fsync(Fsync::Never)
            .with_public_url(format!("http://{addr}/graph")),
    )
    .await
    .unwrap();
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "the app's own route" }),
        )
        .nest_service("/graph", uploads);
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let hello = http
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.text().await.unwrap(), "the app's own route");

    let data: Vec<u8> = (0..7_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let client = Client::builder()
        .base_url(format!("http://{addr}/graph/v1.0"))
        .token(TOKEN)
        .state_dir(dir.path().join("state"))
        .build()
        .unwrap();
    let draft = client.create_draft("embedded").await.unwrap();
    let done = client
        .upload_file(&draft, &path, UploadOptions::new())
        .await
        .unwrap();
    let location = done.location.expect("a Location");
    assert!(
        location.starts_with(&format!("http://{addr}/graph/v1.0/me/messages/")),
        "{location}"
    );
    let stored = http
        .get(format!("{location}/$value"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
    // Graph's errors come out of the mounted service too.
    let unknown = http
        .get(format!("http://{addr}/graph/v1.0/me/messages/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    served.abort();
}
