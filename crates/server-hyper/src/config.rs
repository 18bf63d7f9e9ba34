//! The server's typed configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use upsession_core::fault::FaultPlan;
use upsession_core::quota::QuotaLimits;
use upsession_core::throttle::ThrottleLimits;
use upsession_core::{Dialect, Limits};

/// When fragment bytes and records are flushed to stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fsync {
    /// `fdatasync` every fragment and every record before answering: an answered
    /// fragment survives a power loss.
    #[default]
    Always,
    /// Rely on the page cache: an answered fragment survives the server process
    /// dying (`kill -9`), not the machine.
    Never,
}

/// Where sessions, attachments and their bytes are kept.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// Everything under [`Config::data_dir`], for one server process.
    #[default]
    Disk,
    /// Bytes in an S3-compatible bucket and records in PostgreSQL, shared by any
    /// number of server nodes, any of which can take any request.
    Shared {
        /// `s3://BUCKET[?endpoint=URL][&region=R]`; credentials from `AWS_*`.
        store: String,
        /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (libpq URL or key=value form).
        meta: String,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disk => f.write_str("Disk"),
            // The PostgreSQL URL may hold a password: never print it.
            Self::Shared { store, .. } => f
                .debug_struct("Shared")
                .field("store", store)
                .field("meta", &"<redacted>")
                .finish(),
        }
    }
}

/// A certificate chain and its key, as PEM files, for serving https.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate.
    pub key: PathBuf,
}

/// Who the bearer tokens of Graph routes speak for (`serve --auth`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMode {
    /// The configured tokens ([`Config::tokens`]) all speak for one user, whom
    /// `/me` and every `/users/{id}` name: the single-developer test double.
    #[default]
    Token,
    /// A tokens file (TOML `[[token]]` tables: a token or its SHA-256, a user, a
    /// sign-in name, permissions; see `upsession_core::identity::TokensFile`),
    /// re-read when it changes or on SIGHUP.
    TokensFile(PathBuf),
    /// Bearer JWTs checked against a JWKS file.
    Jwt(JwtAuth),
}

/// What `--auth jwt` checks tokens against.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwtAuth {
    /// A JWKS document (`{"keys": [...]}`), re-read when it changes and when a
    /// token names a key it does not hold.
    pub jwks: PathBuf,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// How far `exp` and `nbf` may be off the clock (60 s by default).
    pub skew: Duration,
    /// Accepted algorithms by name (`RS256`, `ES256`, `EdDSA` by default; never
    /// `none` or an HMAC algorithm).
    pub algorithms: Vec<String>,
}

impl JwtAuth {
    /// Tokens from `issuer` for `audience`, signed by a key of `jwks`.
    pub fn new(
        jwks: impl Into<PathBuf>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            jwks: jwks.into(),
            issuers: vec![issuer.into()],
            audiences: vec![audience.into()],
            skew: Duration::from_secs(60),
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        }
    }

    upsession_core::setters! {
        /// Sets the allowed clock skew.
        with_skew(skew: Duration);
        /// Sets the allowed algorithms, by name.
        with_algorithms(algorithms: Vec<String>);
    }
}

/// Everything the server needs to start. Its `Debug` shows how many tokens are set,
/// never their values.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Serve https with this certificate; plain http when unset.
    pub tls: Option<Tls>,
    /// Where state lives: disk (the default) or shared by several nodes.
    pub storage: Storage,
    /// Where sessions, attachments and the server key live.
    pub data_dir: PathBuf,
    /// Bearer tokens accepted on Graph routes in [`AuthMode::Token`]. Empty: every
    /// Graph route answers 401.
    pub tokens: Vec<String>,
    /// Who bearer tokens speak for: one user (the default), a tokens file, JWTs.
    pub auth: AuthMode,
    /// Failed authentications one client address (IPv6: its /64) may make per
    /// minute before it is answered 429 with `Retry-After`; 0 turns it off.
    pub auth_failure_limit: usize,
    /// `/metrics` answers any address without its token; by default only loopback
    /// callers may read it without [`Config::metrics_token`].
    pub metrics_public: bool,
    /// Base of the uploadUrls and `Location`s handed out (e.g. `https://files.example`).
    /// When unset: `http://{listen}`, or, listening on every interface (`0.0.0.0`,
    /// `::`), `http://` and the `Host` each request came with.
    pub public_url: Option<String>,
    /// Session limits.
    pub limits: Limits,
    /// How answers are written and which fragment rules apply (upsession, outlook,
    /// onedrive). Its rules override those in `limits`.
    pub dialect: Dialect,
    /// Durability policy.
    pub fsync: Fsync,
    /// Longest wait for a request's headers. A new connection's first request
    /// must arrive within it, over HTTP/1 and HTTP/2 alike (an HTTP/2 preface or a
    /// TLS handshake alone does not count).
    pub header_timeout: Duration,
    /// Longest time a connection stays open with no request in flight: HTTP/2
    /// closes it with GOAWAY, HTTP/1 at once. (An idle HTTP/1 keep-alive connection
    /// is also closed at the header timeout: hyper waits for the next request's
    /// head under it.)
    pub idle_timeout: Duration,
    /// Longest pause between two pieces of a request body before the request fails
    /// and its session is freed for a retry.
    pub body_idle_timeout: Duration,
    /// Longest time one fragment may take from its headers to its last byte, however
    /// steadily it trickles; past it the fragment is dropped and its session freed.
    /// A re-sent fragment, read only to check its length, has the same allowance.
    pub fragment_timeout: Duration,
    /// For tests: this node's clock reads this many seconds ahead (negative:
    /// behind), as a node whose clock is off would. A shared store decides time
    /// by its database's clock all the same.
    #[doc(hidden)]
    pub clock_skew_secs: i64,
    /// With shared storage, how long a session's lease lasts after its last
    /// renewal (a live holder renews it every third of that): how long a node
    /// that dies, freezes or loses the database keeps its sessions from the
    /// other nodes.
    pub lease_timeout: Duration,
    /// Longest time the body of a refused request is still read (and dropped) after
    /// its answer, so that a client still sending reads the answer instead of a
    /// reset; past it, however steadily the body trickles, the request's stream
    /// (HTTP/2) or connection (HTTP/1) is closed.
    pub drain_timeout: Duration,
    /// Most connections open at once; one more is answered `503` with Graph's
    /// error JSON and `Retry-After` before any of its request is read, then closed.
    /// Keep it under the process's open-file limit (`ulimit -n`). At the limit, a
    /// connection with no request in flight gives way to the newcomer (closed
    /// gracefully, from the address holding the most, the longest idle first):
    /// only connections all busy with requests make a newcomer wait for a 503.
    /// At most a quarter of them may be waiting for their first request: past
    /// that, the longest waiting gives way.
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv6 address
    /// counts as its /64); past it, that address's own idle connections give way,
    /// or the newcomer is answered `503` as above.
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Bearer token for `/metrics`; open when unset.
    pub metrics_token: Option<String>,
    /// Largest total of a message's attachments (Exchange's message size limit);
    /// the fragment that would pass it is refused with `ErrorMessageSizeExceeded`.
    pub message_size_limit: Option<u64>,
    /// What one bearer token may hold open: sessions still uploading (one more is
    /// `429` with `Retry-After`) and the bytes they declare (past it, `507`).
    pub quota: QuotaLimits,
    /// Refuse a request to an uploadUrl that carries an `Authorization` header
    /// (401), so a client can prove it keeps its bearer token off the
    /// pre-authenticated URL. Off by default: the contract accepts one.
    pub reject_upload_authorization: bool,
    /// Per-app, per-mailbox throttling, answered with 429; off when unset.
    pub throttle: Option<ThrottleLimits>,
    /// Seeded faults injected into answers (the test double); none by default.
    pub faults: FaultPlan,
    /// Bearer token for `/_upsession/*` (sessions inspection, fault plan); those
    /// routes do not exist when unset.
    pub admin_token: Option<String>,
}

/// A secret's presence, never its value.
fn redacted(secret: Option<&String>) -> Option<&'static str> {
    secret.map(|_| "<redacted>")
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so that a new one cannot be printed unread.
        let Self {
            listen,
            tls,
            storage,
            data_dir,
            tokens,
            auth,
            auth_failure_limit,
            metrics_public,
            public_url,
            limits,
            dialect,
            fsync,
            header_timeout,
            idle_timeout,
            body_idle_timeout,
            fragment_timeout,
            clock_skew_secs,
            lease_timeout,
            drain_timeout,
            max_connections,
            max_connections_per_ip,
            shutdown_grace,
            metrics_token,
            message_size_limit,
            quota,
            reject_upload_authorization,
            throttle,
            faults,
            admin_token,
        } = self;
        f.debug_struct("Config")
            .field("listen", listen)
            .field("tls", tls)
            .field("storage", storage)
            .field("data_dir", data_dir)
            .field("tokens", &format_args!("<{} redacted>", tokens.len()))
            .field("auth", auth)
            .field("auth_failure_limit", auth_failure_limit)
            .field("metrics_public", metrics_public)
            .field("public_url", public_url)
            .field("limits", limits)
            .field("dialect", dialect)
            .field("fsync", fsync)
            .field("header_timeout", header_timeout)
            .field("idle_timeout", idle_timeout)
            .field("body_idle_timeout", body_idle_timeout)
            .field("fragment_timeout", fragment_timeout)
            .field("clock_skew_secs", clock_skew_secs)
            .field("lease_timeout", lease_timeout)
            .field("drain_timeout", drain_timeout)
            .field("max_connections", max_connections)
            .field("max_connections_per_ip", max_connections_per_ip)
            .field("shutdown_grace", shutdown_grace)
            .field("metrics_token", &redacted(metrics_token.as_ref()))
            .field("message_size_limit", message_size_limit)
            .field("quota", quota)
            .field("reject_upload_authorization", reject_upload_authorization)
            .field("throttle", throttle)
            .field("faults", faults)
            .field("admin_token", &redacted(admin_token.as_ref()))
            .finish()
    }
}

impl Config {
    /// The defaults: `127.0.0.1:8080`, the contract's limits, `--fsync always`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            storage: Storage::Disk,
            data_dir: data_dir.into(),
            tokens: Vec::new(),
            auth: AuthMode::Token,
            auth_failure_limit: 100,
            metrics_public: false,
            public_url: None,
            limits: Limits::default(),
            dialect: Dialect::UPSESSION,
            fsync: Fsync::Always,
            header_timeout: Duration::from_secs(30),
            // As long as the header timeout, which already ends an idle HTTP/1
            // keep-alive connection: HTTP/2 clients see the same.
            idle_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            fragment_timeout: Duration::from_secs(15 * 60),
            clock_skew_secs: 0,
            lease_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_connections: 4096,
            // An eighth of the connections: no one address fills the server with
            // busy connections, and hundreds of clients behind one NAT still fit
            // (its idle connections give way to its new ones).
            max_connections_per_ip: 512,
            shutdown_grace: Duration::from_secs(30),
            metrics_token: None,
            message_size_limit: None,
            quota: QuotaLimits::DEFAULT,
            reject_upload_authorization: false,
            throttle: None,
            faults: FaultPlan::none(),
            admin_token: None,
        }
    }

    upsession_core::setters! {
        /// Sets the listen address.
        with_listen(listen: SocketAddr);
    }

    /// Serves https with the PEM certificate chain `cert` and its key `key`.
    #[must_use]
    pub fn with_tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(Tls {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    upsession_core::setters! {
        /// Sets where state lives.
        with_storage(storage: Storage);
    }

    /// Adds an accepted bearer token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    upsession_core::setters! {
        /// Sets the public base URL.
        with_public_url(url: impl Into<String>) => public_url = Some(url.into());
    }

    upsession_core::setters! {
        /// Sets the session limits.
        with_limits(limits: Limits);
        /// Sets the dialect.
        with_dialect(dialect: Dialect);
        /// Sets the durability policy.
        with_fsync(fsync: Fsync);
    }

    upsession_core::setters! {
        /// Sets the header and body-idle timeouts.
        with_timeouts(header: Duration, body_idle: Duration)
            => header_timeout = header, body_idle_timeout = body_idle;
        /// Sets the longest wait for a request's headers (a connection's first
        /// request's included).
        with_header_timeout(header_timeout: Duration);
        /// Sets the longest time a connection stays open with no request in flight.
        with_idle_timeout(idle_timeout: Duration);
        /// Sets the longest silence within a request's body.
        with_body_idle_timeout(body_idle_timeout: Duration);
        /// Sets how long a shared store's session lease lasts from its last renewal.
        with_lease_timeout(lease_timeout: Duration);
        /// Sets the longest time one fragment (stored or re-sent) may take in all.
        with_fragment_timeout(fragment_timeout: Duration);
        /// Sets how far this node's clock is off, in seconds (for tests).
        #[doc(hidden)]
        with_clock_skew_secs(clock_skew_secs: i64);
        /// Sets the longest time a refused request's body is read after its answer.
        with_drain_timeout(drain_timeout: Duration);
        /// Refuses the fragment that would make a message's attachments exceed `bytes`.
        with_message_size_limit(bytes: u64) => message_size_limit = Some(bytes);
        /// Sets what one bearer token may hold open (sessions, declared bytes).
        with_quota(quota: QuotaLimits);
        /// Refuses (401) requests to an uploadUrl that carry an `Authorization` header.
        with_upload_authorization_refused() => reject_upload_authorization = true;
        /// Throttles as `limits` says (e.g. [`ThrottleLimits::OUTLOOK`]).
        with_throttle(limits: ThrottleLimits) => throttle = Some(limits);
        /// Injects faults as `plan` says.
        with_faults(plan: FaultPlan) => faults = plan;
        /// Enables `/_upsession/*` behind `token`.
        with_admin_token(token: impl Into<String>) => admin_token = Some(token.into());
        /// Sets the most connections open at once.
        with_max_connections(max: usize) => max_connections = max.max(1);
        /// Sets the most connections open at once from one client address.
        with_max_connections_per_ip(max: usize) => max_connections_per_ip = max.max(1);
        /// Requires a bearer token on `/metrics`.
        with_metrics_token(token: impl Into<String>) => metrics_token = Some(token.into());
        /// Opens `/metrics` to every address (loopback only by default).
        with_metrics_public() => metrics_public = true;
        /// Sets who bearer tokens speak for.
        with_auth(auth: AuthMode);
        /// Sets how many failed authentications per minute one address may make (0: no limit).
        with_auth_failure_limit(per_minute: usize) => auth_failure_limit = per_minute;
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, Storage};

    #[test]
    fn debug_shows_no_secret() {
        let config = Config::new("/data")
            .with_token("bearer-secret-1")
            .with_token("bearer-secret-2")
            .with_admin_token("admin-secret")
            .with_metrics_token("metrics-secret")
            .with_storage(Storage::Shared {
                store: "s3://bucket".into(),
                meta: "postgres://u:db-password@h/db".into(),
            });
        let shown = format!("{config:?} {config:#?}");
        for secret in [
            "bearer-secret",
            "admin-secret",
            "metrics-secret",
            "db-password",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // What is not secret is still there to read.
        for public in ["s3://bucket", "/data", "<2 redacted>", "max_connections"] {
            assert!(shown.contains(public), "{public} missing from {shown}");
        }
    }
}
