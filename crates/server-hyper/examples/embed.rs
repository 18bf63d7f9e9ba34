//! upsession's uploads inside your own axum application, under `/graph`, beside a
//! route of your own: `cargo run -p upsession-server-hyper --example embed`.

use upsession_server_hyper::{Config, UploadService};

/// Your application: its own routes, and Graph's upload routes under `/graph`,
/// keeping their state in `data_dir` and answering as `http://{addr}/graph`.
pub async fn app(
    data_dir: std::path::PathBuf,
    addr: std::net::SocketAddr,
) -> Result<axum::Router, Box<dyn std::error::Error>> {
    let uploads = UploadService::new(
        Config::new(data_dir)
            .with_token("s3cret")
            // uploadUrls and Locations are built from where it is mounted:
            .with_public_url(format!("http://{addr}/graph")),
    )
    .await?;
    Ok(axum::Router::new()
        .route("/", axum::routing::get(|| async { "my own route" }))
        .nest_service("/graph", uploads))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
    let addr = listener.local_addr()?;
    let app = app(std::env::temp_dir().join("upsession-embed"), addr).await?;
    println!("uploads at http://{addr}/graph/v1.0 (token s3cret)");
    axum::serve(listener, app).await?;
    Ok(())
}
