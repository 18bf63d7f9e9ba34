//! `examples/embed.rs` (the README's "embed it" section) works as written: its
//! application serves its own route and takes a whole upload under `/graph`.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

#[allow(dead_code, unreachable_pub)] // its `main` (and `pub`) are the example's
#[path = "../examples/embed.rs"]
mod embed;

use upsession_testbed::kit::{Graph, sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_serves_its_route_and_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = embed::app(dir.path().join("data"), addr).await.unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, app).await });

    let graph = Graph::new(format!("http://{addr}/graph/v1.0"), "s3cret");
    let own = graph
        .http
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.text().await.unwrap(), "my own route");

    let data = upsession_testbed::kit::seeded(5_000_000, 81);
    let url = graph.open_session(data.len()).await;
    assert!(url.starts_with(&format!("http://{addr}/graph/")), "{url}");
    let done = graph.upload(&url, &data, 4 << 20).await;
    assert_eq!(done.status(), 201);
    let location = upsession_testbed::kit::location(&done);
    assert_eq!(
        sha256_hex(&graph.download(&location).await),
        sha256_hex(&data)
    );
    served.abort();
}
