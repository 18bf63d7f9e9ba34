//! [`UploadService`]: the whole server as one `tower::Service`, to mount in any
//! hyper or axum application (or to serve with [`crate::Server`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Buf as _;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use tower::{Layer as _, Service};
use tracing::info;
use upsession_core::credential::{Signer, Tokens};
use upsession_core::identity::FailureBudget;
use upsession_core::throttle::Throttle;

use crate::config::{Config, Storage};
use crate::engine::{Engine, Rules};
use crate::exchange::{BoxError, ReqBody, ResBody};
use crate::graph::{Graph, PublicUrl};
use crate::identity::Identities;
use crate::layers::{self, Double, Stack};
use crate::metrics::Metrics;
use crate::store::SessionStore;
use crate::store::local::LocalStore;
use crate::store::shared::SharedStore;
use crate::{StartError, layers::Auth};

/// The body of the answers [`UploadService`] gives.
pub type ResponseBody = ResBody;

/// upsession's Graph-compatible upload server as a `tower::Service`: mount it in
/// your own hyper or axum server, behind your TLS, next to your routes.
///
/// It answers every route of `docs/PROTOCOL.md` at the root of the URIs it is given
/// (`/v1.0/...`, `/beta/...`, `/healthz`, `/metrics`): nested under a prefix, the
/// router strips the prefix, and [`Config::public_url`] must name it, since
/// uploadUrls and `Location`s are built from it.
///
/// Clones share one server. Its expiry sweep runs on the runtime it was built on
/// until the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use upsession_server_hyper::{Config, UploadService};
///
/// let config = Config::new("/var/lib/upsession")
///     .with_token("s3cret")
///     .with_public_url("https://files.example/graph");
/// let service = UploadService::new(config).await?;
/// // With axum: Router::new().nest_service("/graph", service)
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct UploadService {
    stack: Stack,
    pub(crate) engine: Arc<Engine>,
    _driver: Arc<DriverStop>,
}

impl std::fmt::Debug for UploadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadService").finish_non_exhaustive()
    }
}

impl UploadService {
    /// Opens the store `config` names (loading and recovering what a local one
    /// holds) and builds the service. Uploaded URLs use `config.public_url`, or,
    /// without one, the `Host` of each request over plain http.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let public = match &config.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                PublicUrl::Fixed(url.trim_end_matches('/').to_owned())
            }
            Some(url) => return Err(StartError::PublicUrl(url.clone())),
            None => PublicUrl::FromHost {
                scheme: "http",
                fallback: "http://localhost".into(),
            },
        };
        Self::build(config, public).await
    }

    /// [`UploadService::new`] with the public URL decided by the caller.
    pub(crate) async fn build(config: Config, public: PublicUrl) -> Result<Self, StartError> {
        // Before the store: a wrong file is said before anything is opened.
        let identities = Identities::open(&config).map_err(StartError::Auth)?;
        let metrics = Arc::new(Metrics::new());
        let store = open_store(&config, &metrics).await?;
        let key = store
            .server_key()
            .await
            .map_err(|e| store_error(&config, e))?;
        metrics
            .records_quarantined
            .inc_by(u64::try_from(store.quarantined()).unwrap_or(u64::MAX));
        let rules = Rules {
            limits: config.limits.clone().with_rules_of(&config.dialect),
            message_size_limit: config.message_size_limit,
            fragment_timeout: config.fragment_timeout,
            clock_skew_secs: config.clock_skew_secs,
            quota: config.quota,
        };
        let engine = Arc::new(Engine::new(store, rules, Arc::clone(&metrics)));
        if let Ok(sessions) = engine.sessions().await {
            metrics
                .sessions_open
                .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        }
        // Also counts the sessions loaded as open against their tokens' limits.
        engine.sweep().await;
        engine.reconcile_drives().await;
        let stack = stack(&config, public, key, &engine, &metrics, identities);
        let driver = start_driver(&engine);
        Ok(Self {
            stack,
            engine,
            _driver: driver,
        })
    }

    /// Answers one request (the `Service` impl, for any body type).
    pub(crate) fn serve(&self, req: Request<ReqBody>) -> BoxFuture<'static, Response<ResBody>> {
        let mut stack = self.stack.clone();
        // Every layer and the front-end are always ready: no `poll_ready` to wait on.
        let answer = stack.call(req);
        Box::pin(async move {
            match answer.await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        })
    }
}

async fn open_store(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn SessionStore>, StartError> {
    Ok(match &config.storage {
        Storage::Disk => Arc::new(
            LocalStore::open(&config.data_dir, config.fsync)
                .await
                .map_err(|e| store_error(config, e))?,
        ),
        Storage::Shared { store, meta } => {
            // A live holder renews its lease every third of it, so its length is
            // only how long a node that dies (or loses the database) keeps its
            // sessions from the others.
            let lease = config.lease_timeout.max(std::time::Duration::from_secs(1));
            Arc::new(
                SharedStore::open(store, meta, lease, None, Arc::clone(metrics))
                    .await
                    .map_err(StartError::Store)?,
            )
        }
    })
}

fn store_error(config: &Config, source: std::io::Error) -> StartError {
    match config.storage {
        Storage::Disk => StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        },
        _ => StartError::Store(source),
    }
}

/// The layers around the Graph front-end, outermost first.
fn stack(
    config: &Config,
    public: PublicUrl,
    key: [u8; 32],
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    identities: Identities,
) -> Stack {
    let graph = Arc::new(Graph {
        engine: Arc::clone(engine),
        dialect: config.dialect.clone(),
        public_url: public,
        signer: Signer::new(key),
        body: config.into(),
    });
    let mut stack: Stack = tower::util::BoxCloneSyncService::new(tower::service_fn(move |req| {
        let graph = Arc::clone(&graph);
        async move { Ok::<_, Infallible>(graph.handle(req).await) }
    }));
    if let Some(double) = double(config, engine) {
        stack = layers::middleware(Arc::new(double), layers::double).layer(stack);
    }
    let auth = Auth {
        identities,
        signer: Signer::new(key),
        metrics_token: config
            .metrics_token
            .as_ref()
            .map(|t| Tokens::new(std::slice::from_ref(t))),
        metrics_public: config.metrics_public,
        failures: (config.auth_failure_limit > 0).then(|| {
            Mutex::new(FailureBudget::new(
                config.auth_failure_limit,
                std::time::Duration::from_secs(60),
            ))
        }),
        metrics: Arc::clone(metrics),
        reject_upload_authorization: config.reject_upload_authorization,
        body: config.into(),
    };
    stack = layers::middleware(Arc::new(auth), layers::auth).layer(stack);
    stack = layers::middleware((), layers::route).layer(stack);
    layers::middleware(Arc::clone(metrics), layers::observe).layer(stack)
}

/// The test double's layer, where anything asks for it.
fn double(config: &Config, engine: &Arc<Engine>) -> Option<Double> {
    if config.faults.is_empty() && config.throttle.is_none() && config.admin_token.is_none() {
        return None;
    }
    if !config.faults.is_empty() {
        info!(faults = %config.faults, seed = config.faults.seed(), "fault injection on");
    }
    Some(Double {
        engine: Arc::clone(engine),
        throttle: config
            .throttle
            .clone()
            .map(|l| Mutex::new(Throttle::new(l))),
        faults: Mutex::new(config.faults.clone()),
        admin: config
            .admin_token
            .as_ref()
            .map(|t| Tokens::new(std::slice::from_ref(t))),
        history: Mutex::default(),
        body: config.into(),
    })
}

/// Stops the expiry driver when the last service clone goes.
#[derive(Debug)]
struct DriverStop(tokio::sync::watch::Sender<bool>);

impl Drop for DriverStop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Sleeps until the next session may expire (or a deadline moves), and sweeps.
fn start_driver(engine: &Arc<Engine>) -> Arc<DriverStop> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let weak: Weak<Engine> = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            let Some(engine) = weak.upgrade() else { return };
            let now = engine.now();
            let sleep = engine
                .next_due(now)
                .map_or(std::time::Duration::from_secs(3600), |at| {
                    at.duration_since(now).unwrap_or_default()
                });
            tokio::select! {
                () = tokio::time::sleep(sleep) => engine.sweep().await,
                () = engine.deadlines_changed.notified() => {}
                _ = stopped.changed() => return,
            }
        }
    });
    Arc::new(DriverStop(stop))
}

impl<B> Service<Request<B>> for UploadService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let req = req.map(|body| {
            body.map_frame(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                .map_err(|e| std::io::Error::other(e.into()))
                .boxed_unsync()
        });
        let answer = self.serve(req);
        Box::pin(async move { Ok(answer.await) })
    }
}
