//! A Microsoft Graph-compatible upload-session server on hyper, durable on local
//! disk, or shared by many nodes on S3 and PostgreSQL.
//!
//! It serves the routes of Graph's `attachment: createUploadSession` flow (drafts
//! and events, upload sessions, fragment `PUT`s, status, cancel, attachment listing
//! and download) under `/v1.0` and `/beta`, for `/me` and `/users/{id}`. Every
//! decision about ranges, sessions and errors is `upsession-core`'s; this crate moves
//! bytes between sockets and storage, keeps the time, and persists state so that a
//! fragment answered 2xx survives a crash.
//!
//! Run it on its own socket with [`Server::start`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use upsession_server_hyper::{Config, Server};
//!
//! let config = Config::new("/var/lib/upsession").with_token("s3cret");
//! let running = Server::start(config).await?;
//! println!("listening on {}", running.base_url());
//! running.wait_for_signal().await; // until Ctrl-C or SIGTERM, then drains in-flight requests
//! # Ok(()) }
//! ```
//!
//! Or mount [`UploadService`], a `tower::Service`, in your own axum or hyper
//! application, beside your routes and behind your TLS:
//!
//! ```
//! # async fn run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
//! use upsession_server_hyper::{Config, UploadService};
//!
//! let uploads = UploadService::new(
//!     Config::new(dir)
//!         .with_token("s3cret")
//!         // uploadUrls and Locations are built from where it is mounted:
//!         .with_public_url("https://files.example/graph"),
//! )
//! .await?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my own route" }))
//!     .nest_service("/graph", uploads);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let serve =
//! axum::serve(listener, app);
//! # drop(serve); Ok(()) }
//! ```
//!
//! Inside: `graph` (the Graph routes) turns requests into calls of the session
//! engine (`engine`), which decides with the core and keeps state in a `store`
//! (local disk, or shared); `layers` add request ids, credentials and the test
//! double's faults around it. `docs/ARCHITECTURE.md` has the map.

use std::net::SocketAddr;

mod config;
mod connections;
mod engine;
mod exchange;
mod graph;
mod identity;
mod layers;
mod metrics;
mod onedrive;
mod server;
mod service;
mod store;
mod tls;

pub use config::{AuthMode, Config, Fsync, JwtAuth, Storage, Tls};
pub use server::{Running, Server};
pub use service::{ResponseBody, UploadService};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened or read.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared store (`Storage::Shared`) could not be opened or reached.
    #[error("shared storage: {0}")]
    Store(#[source] std::io::Error),
    /// `public_url` is not an absolute http(s) URL.
    #[error("public URL `{0}` must start with http:// or https://")]
    PublicUrl(String),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The tokens file or JWKS `--auth` names could not be used.
    #[error("authentication: {0}")]
    Auth(String),
}
