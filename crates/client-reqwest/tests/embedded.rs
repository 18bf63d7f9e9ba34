//! upsession's server mounted inside someone else's axum application, under a
//! prefix and beside a route of its own, with our client uploading through it.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use upsession_client_reqwest::Client;
use upsession_server_hyper::UploadService;
use upsession_testbed::kit::{Graph, TOKEN, server_config, sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_app_serves_uploads_under_a_prefix_beside_its_own_routes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The application's own server: its runtime, its listener, its routes.
    let uploads = UploadService::new(
        server_config(dir.path()).with_public_url(format!("http://{addr}/graph")),
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

    let graph = Graph::new(format!("http://{addr}/graph/v1.0"), TOKEN);
    let hello = graph
        .http
        .get(format!("http://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(hello.text().await.unwrap(), "the app's own route");

    let data: Vec<u8> = (0..7_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("report.bin");
    std::fs::write(&path, &data).unwrap();
    let client = Client::builder()
        .base_url(graph.base())
        .token(TOKEN)
        .state_dir(dir.path().join("state"))
        .build()
        .unwrap();
    let done = common::upload_to_new_draft(&client, "embedded", &path)
        .await
        .unwrap();
    let location = done.location.expect("a Location");
    assert!(
        location.starts_with(&format!("http://{addr}/graph/v1.0/me/messages/")),
        "{location}"
    );
    assert_eq!(
        sha256_hex(&graph.download(&location).await),
        sha256_hex(&data)
    );
    // Graph's errors come out of the mounted service too.
    let unknown = graph
        .request(reqwest::Method::GET, "/me/messages/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    served.abort();
}
