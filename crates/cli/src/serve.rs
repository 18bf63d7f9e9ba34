//! `upsession serve`: the Graph-compatible server, configured from flags.

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use upsession_core::dialect::{Casing, RangeForms};
use upsession_core::fault::FaultPlan;
use upsession_core::quota::QuotaLimits;
use upsession_core::throttle::ThrottleLimits;
use upsession_core::{Dialect, Limits};
use upsession_server_hyper::{AuthMode, Config, Fsync, JwtAuth, Server, Storage};

use crate::Failure;
use crate::secret::Secret;
use crate::size::{parse_duration, parse_size};

/// Flags of `upsession serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "UPSESSION_LISTEN")]
    listen: SocketAddr,
    /// Where sessions and attachments are kept [default: the platform's data directory].
    #[arg(long, env = "UPSESSION_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where bytes live: `disk` (under --data-dir) or `s3://BUCKET?endpoint=URL&region=R`,
    /// an S3-compatible bucket shared by several nodes (needs --meta). S3 credentials
    /// come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, default_value = "disk", env = "UPSESSION_STORE")]
    store: String,
    /// Where records live with a shared --store: `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (over TLS: `?sslmode=verify-full&sslrootcert=CA.pem`).
    /// Every node given the same --store and --meta serves every session.
    #[arg(long, env = "UPSESSION_META", hide_env_values = true)]
    meta: Option<Secret>,
    /// Accepted bearer token (repeat for several). Without one, a token is generated
    /// on first start, printed once, and kept in the data directory.
    #[arg(
        long = "token",
        env = "UPSESSION_TOKEN",
        value_delimiter = ',',
        hide_env_values = true,
        // A token may begin with `-` (base64url): it is the value, not a flag.
        allow_hyphen_values = true
    )]
    tokens: Vec<Secret>,
    /// Serve https with this PEM certificate chain (needs --tls-key). Some clients
    /// need https: the JavaScript Graph SDK only follows an https uploadUrl.
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, as PEM.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Base URL of the uploadUrls and Locations handed out, as clients reach this
    /// server (e.g. behind a proxy) [default: http://LISTEN, https:// with --tls-cert;
    /// listening on 0.0.0.0 or ::, the scheme and the Host each request came with].
    #[arg(long, env = "UPSESSION_PUBLIC_URL", value_parser = crate::parse_http_url)]
    public_url: Option<String>,
    /// Largest fragment one PUT may carry. The default fits every official SDK's
    /// default slice (5MiB, and one byte more from Python and PHP); `4MiB` is Graph's
    /// documented "up to 4 MB", which those defaults break.
    #[arg(long, default_value = "60MiB", value_parser = parse_size)]
    max_fragment: u64,
    /// How answers are written.
    #[command(flatten)]
    dialect: DialectArgs,
    /// Refuse (401) a request to an uploadUrl that carries an Authorization header,
    /// to prove a client keeps its bearer token off the pre-authenticated URL.
    #[arg(long)]
    reject_upload_auth: bool,
    /// For tests: this node's clock reads SECONDS ahead (negative: behind), as a
    /// node whose clock is off would; a shared store goes by its database's clock.
    #[arg(
        long,
        hide = true,
        value_name = "SECONDS",
        allow_hyphen_values = true,
        default_value_t = 0
    )]
    clock_skew: i64,
    /// Smallest file an upload session accepts (2MiB is the live service's measured
    /// minimum; its docs say 3MB).
    #[arg(long, default_value = "2MiB", value_parser = parse_size)]
    min_size: u64,
    /// Largest file an upload session accepts.
    #[arg(long, default_value = "150MB", value_parser = parse_size)]
    max_size: u64,
    /// How long a session lives after its creation or last fragment.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    session_ttl: Duration,
    /// When to flush to stable storage: `always` survives power loss, `never`
    /// survives a crash of the server process only.
    #[arg(long, value_enum, default_value = "always")]
    fsync: FsyncArg,
    /// Refuse the fragment that would make a message's attachments larger than this,
    /// with 413 ErrorMessageSizeExceeded, as Exchange does mid-upload past its
    /// message size limit (35MB by default there) [default: no limit].
    #[arg(long, value_parser = parse_size)]
    message_size_limit: Option<u64>,
    /// Most upload sessions one token may have open (not completed, cancelled or
    /// expired); one more is answered 429 activityLimitReached with Retry-After.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions_per_token: u32,
    /// Most bytes the open sessions of one token may declare together; a session
    /// past it is answered 507 quotaLimitReached.
    #[arg(long, default_value = "100GiB", value_parser = parse_size)]
    max_declared_bytes_per_token: u64,
    /// Throttle as Graph does, per app (token) and mailbox: `outlook` is 10,000
    /// requests per 10 minutes, 4 concurrent requests and 150 MB of uploads per 5
    /// minutes, answered with 429 and Retry-After [default: off].
    #[arg(long, value_parser = ["outlook", "off"], default_value = "off")]
    throttle: String,
    /// Inject seeded faults, as `seed=N,ROUTE:FAULT:PROBABILITY,...`.
    /// ROUTE: create, put, status, cancel, item, download, any.
    /// FAULT: 429, 503, 500, 403, reset (connection dropped mid-body, nothing kept),
    /// lost (done, then the connection dropped without an answer), slow=MS, expire.
    /// Example: `seed=7,put:503:0.2,put:reset:0.1`. The seed is printed at start; the
    /// plan can be replaced at run time with `PUT /_upsession/faults` (needs --admin-token).
    #[arg(long, env = "UPSESSION_FAULTS", value_parser = parse_faults, verbatim_doc_comment)]
    faults: Option<FaultPlan>,
    /// Bearer token for the test-double routes: `GET /_upsession/sessions` (sessions
    /// with their received ranges and request history) and `GET|PUT /_upsession/faults`.
    #[arg(
        long,
        env = "UPSESSION_ADMIN_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    admin_token: Option<Secret>,
    /// Most connections open at once. At the limit an idle connection (no request
    /// in flight; the longest idle of the address holding the most) is closed to
    /// make room; only when all are busy is a new one answered 503 (Graph's error
    /// JSON, Retry-After) before its request is read. Keep it under `ulimit -n`.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most connections open at once from one client address (an IPv6 address
    /// counts as its /64); past it, that address's idle connections make room, or
    /// the new one is answered 503.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_ip: u32,
    /// Longest wait for a request's headers; a new connection's first request must
    /// come within it (an HTTP/2 preface or a TLS handshake alone is not one).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// How long a connection stays open with no request in flight (HTTP/2: closed
    /// with GOAWAY).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Longest silence within a request's body: past it the request is answered
    /// 408 and dropped.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    body_idle_timeout: Duration,
    /// With --store s3://…: how long a session's lease lasts after its last
    /// renewal (a live node renews it every third of that), so how long a node
    /// that dies or loses the database keeps its sessions from the other nodes.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    lease_timeout: Duration,
    /// Bearer token required on /metrics [default: none: /metrics answers loopback
    /// callers only, unless --metrics-public].
    #[arg(
        long,
        env = "UPSESSION_METRICS_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    metrics_token: Option<Secret>,
    /// Serve /metrics without a token to every address, not only loopback.
    #[arg(long)]
    metrics_public: bool,
    /// Who bearer tokens speak for: `token` (the --token values or the generated
    /// one: one user, whom /me and every /users/{id} name), `tokens FILE` (a tokens
    /// file, as `upsession token add` writes it; FILE defaults to tokens.toml in the
    /// data directory; re-read when it changes or on SIGHUP), or `jwt` (bearer JWTs
    /// checked against --jwks, --issuer and --audience; users from `oid`/`sub`,
    /// permissions from `scp` and `roles`).
    #[arg(long, num_args = 1..=2, value_names = ["MODE", "FILE"], default_value = "token")]
    auth: Vec<String>,
    /// With --auth jwt: the JWKS file the tokens' signatures are checked against
    /// (re-read when it changes and when a token names a key it lacks).
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// With --auth jwt: the accepted `iss` (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    issuer: Vec<String>,
    /// With --auth jwt: the accepted `aud` (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    audience: Vec<String>,
    /// With --auth jwt: how far `exp` and `nbf` may be off this server's clock.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    jwt_skew: Duration,
    /// With --auth jwt: the accepted signing algorithms (never `none` or HS*).
    #[arg(long, value_delimiter = ',', default_value = "RS256,ES256,EdDSA")]
    jwt_algorithms: Vec<String>,
    /// Failed authentications one client address (IPv6: its /64) may make per
    /// minute; past it, Graph routes answer it 429 with Retry-After (0: no limit).
    #[arg(long, default_value_t = 100)]
    auth_failure_limit: usize,
}

/// `--auth` and its companions, read into the server's mode.
fn auth_mode(args: &ServeArgs, data_dir: &Path) -> Result<AuthMode, Failure> {
    let jwt_only = args.jwks.is_some() || !args.issuer.is_empty() || !args.audience.is_empty();
    let mode = match args.auth.as_slice() {
        [mode] if mode == "token" => AuthMode::Token,
        [mode] if mode == "tokens" => AuthMode::TokensFile(crate::token::default_file(data_dir)),
        [mode, file] if mode == "tokens" => AuthMode::TokensFile(PathBuf::from(file)),
        [mode] if mode == "jwt" => {
            let (Some(jwks), false, false) =
                (&args.jwks, args.issuer.is_empty(), args.audience.is_empty())
            else {
                return Err(Failure::usage(
                    "--auth jwt needs --jwks FILE, --issuer and --audience",
                ));
            };
            let mut jwt = JwtAuth::new(jwks, "", "")
                .with_skew(args.jwt_skew)
                .with_algorithms(args.jwt_algorithms.clone());
            jwt.issuers.clone_from(&args.issuer);
            jwt.audiences.clone_from(&args.audience);
            return Ok(AuthMode::Jwt(jwt));
        }
        [mode, extra] if mode == "token" || mode == "jwt" => {
            return Err(Failure::usage(format!(
                "--auth {mode} takes no file (got `{extra}`); only `--auth tokens FILE` does"
            )));
        }
        other => {
            return Err(Failure::usage(format!(
                "`--auth {}` is not a mode; use token, tokens [FILE] or jwt",
                other.join(" ")
            )));
        }
    };
    if jwt_only {
        return Err(Failure::usage(
            "--jwks, --issuer and --audience go with --auth jwt",
        ));
    }
    Ok(mode)
}

/// The dialect flags `serve` and `conformance server` share.
#[derive(Debug, Args)]
pub(crate) struct DialectArgs {
    /// How answers are written: `upsession` (tidy; every official SDK accepts it),
    /// `outlook` (as Outlook: a fixed expiry, @odata.context, Outlook REST Locations)
    /// or `onedrive` (202s, "N-" ranges, 416 on re-sends, 320KiB multiples).
    #[arg(long = "dialect", value_name = "DIALECT", default_value = "upsession", value_parser = parse_dialect)]
    name: Dialect,
    /// How fragment and status answers case their properties: `camel`
    /// (expirationDateTime, what every SDK reads) or `pascal` (ExpirationDateTime and
    /// NextExpectedRanges, as Outlook's docs example and 21Vianet mailboxes answer;
    /// only the .NET and JavaScript SDKs read it) [default: camel].
    #[arg(long, value_parser = parse_casing)]
    casing: Option<Casing>,
    /// Form of nextExpectedRanges: `closed` ("a-b", what every SDK parses), `open`
    /// ("a-", OneDrive's) or `outlook` ("0-" then a bare "a", Outlook's docs
    /// example) [default: open with --dialect onedrive, else closed].
    #[arg(long, value_parser = parse_range_forms)]
    range_form: Option<RangeForms>,
}

impl DialectArgs {
    /// The dialect, with the casing and range forms asked for.
    pub(crate) fn dialect(&self) -> Dialect {
        let mut dialect = self.name.clone();
        if let Some(casing) = self.casing {
            dialect = dialect.with_casing(casing);
        }
        if let Some(forms) = self.range_form {
            dialect = dialect.with_range_forms(forms);
        }
        dialect
    }
}

pub(crate) fn parse_faults(s: &str) -> Result<FaultPlan, String> {
    s.parse()
        .map_err(|e: upsession_core::fault::FaultSpecError| e.to_string())
}

pub(crate) fn parse_dialect(s: &str) -> Result<Dialect, String> {
    Dialect::by_name(s)
        .ok_or_else(|| format!("`{s}` is not a dialect; use upsession, outlook or onedrive"))
}

fn parse_casing(s: &str) -> Result<Casing, String> {
    Casing::by_name(s).ok_or_else(|| format!("`{s}` is not a casing; use camel or pascal"))
}

fn parse_range_forms(s: &str) -> Result<RangeForms, String> {
    RangeForms::by_name(s)
        .ok_or_else(|| format!("`{s}` is not a range form; use closed, open or outlook"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FsyncArg {
    Always,
    Never,
}

/// The banner's line about where state is kept (never the --meta URL: it may hold
/// a password).
fn describe(storage: &Storage, data_dir: &Path) -> String {
    match storage {
        Storage::Shared { store, .. } => {
            format!("storage: {store} with records in PostgreSQL")
        }
        _ => format!("data directory: {}", data_dir.display()),
    }
}

/// `--store` and `--meta`, checked together (`tokens`: the non-empty `--token`s).
fn storage(store: &str, meta: Option<String>, tokens: &[String]) -> Result<Storage, Failure> {
    if store != "disk" && tokens.is_empty() {
        // A generated token lives in one node's data directory: the other nodes
        // would refuse it.
        return Err(Failure::usage(
            "with a shared --store, give every node the same --token (or UPSESSION_TOKEN)",
        ));
    }
    match (store, meta) {
        ("disk", None) => Ok(Storage::Disk),
        ("disk", Some(_)) => Err(Failure::usage(
            "--meta keeps records for a shared --store; add --store s3://BUCKET?endpoint=URL",
        )),
        (s, None) if s.starts_with("s3://") => Err(Failure::usage(
            "--store s3://… is shared by several nodes and needs --meta postgres://… for its records",
        )),
        (s, Some(meta)) if s.starts_with("s3://") => {
            if meta.starts_with("postgres://") || meta.starts_with("postgresql://") {
                Ok(Storage::Shared {
                    store: s.to_owned(),
                    meta,
                })
            } else {
                Err(Failure::usage("--meta must be a postgres:// URL"))
            }
        }
        (s, _) => Err(Failure::usage(format!(
            "`{s}` is not a store; use disk or s3://BUCKET?endpoint=URL"
        ))),
    }
}

fn default_data_dir() -> Result<PathBuf, Failure> {
    use etcetera::AppStrategy as _;
    Ok(crate::app_dirs("data directory", "--data-dir")?.data_dir())
}

/// The token kept at `path` under the data directory, or a new one to keep there
/// once the server has started ([`keep_token`]): a start that fails must not leave
/// a token behind that was never shown. Returns the token and whether it is new.
fn stored_token(path: &Path) -> Result<(String, bool), Failure> {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::new(format!("cannot read {}: {e}", path.display()))),
    }
    Ok((crate::token::new_token()?, true))
}

/// Writes a new token to `path` as a new file readable by the owner only: an
/// empty file left by a crash is replaced, but nothing else is written through (a
/// file someone else made, with other permissions, or a symlink).
fn keep_token(path: &Path, token: &str) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    let blank = fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
        && fs::read_to_string(path).is_ok_and(|t| t.trim().is_empty());
    if blank {
        let _ = fs::remove_file(path);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(format!(
                    "{} appeared while this server started (another `upsession serve` on \
                     the same data directory?); start again to use the token kept there",
                    path.display()
                ))
            } else {
                Failure::new(format!("cannot write {}: {e}", path.display()))
            }
        })?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

pub(crate) fn run(mut args: ServeArgs) -> Result<(), Failure> {
    if args.min_size > args.max_size {
        return Err(Failure::usage(format!(
            "--min-size ({}) is larger than --max-size ({})",
            args.min_size, args.max_size
        )));
    }
    let mut tokens: Vec<String> = std::mem::take(&mut args.tokens)
        .into_iter()
        .map(Secret::expose)
        .filter(|t| !t.is_empty())
        .collect();
    let data_dir = match args.data_dir.take() {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let auth = auth_mode(&args, &data_dir)?;
    let single = auth == AuthMode::Token;
    if !single && !tokens.is_empty() {
        return Err(Failure::usage(
            "--token goes with --auth token; a tokens file or JWTs name their own users",
        ));
    }
    let storage = if single {
        storage(&args.store, args.meta.take().map(Secret::expose), &tokens)?
    } else {
        // Each node reads the same tokens file or JWKS: no generated token to share.
        storage(
            &args.store,
            args.meta.take().map(Secret::expose),
            &["-".to_owned()],
        )?
    };
    let auth_note = match &auth {
        AuthMode::TokensFile(path) => format!(
            "auth: tokens file {} (add one with `upsession token add --user ID --file {}`)\n",
            path.display(),
            path.display()
        ),
        AuthMode::Jwt(jwt) => format!(
            "auth: JWTs from {} for {}, keys in {}\n",
            jwt.issuers.join(", "),
            jwt.audiences.join(", "),
            jwt.jwks.display()
        ),
        _ => String::new(),
    };
    // (the token file's path, and the new token to keep there once started)
    let token_file = if single && tokens.is_empty() {
        let path = data_dir.join("token");
        let (token, generated) = stored_token(&path)?;
        tokens.push(token.clone());
        Some((path, generated.then_some(token)))
    } else {
        None
    };
    let where_kept = describe(&storage, &data_dir);
    let (config, fault_note) = server_config(args, storage, &data_dir, tokens);
    let config = config.with_auth(auth);
    let fault_note = format!("{auth_note}{fault_note}");
    crate::block_on(async move {
        let running = Server::start(config).await?;
        let banner = banner(&running, &where_kept, token_file.as_ref(), &fault_note)?;
        // The banner is a courtesy: a closed stdout (`| head -1`) must not stop the server.
        crate::print_out(&banner);
        running.wait_for_signal().await;
        Ok(())
    })
}

/// What `serve` prints once it listens; keeps a generated token first, so the one
/// shown is the one stored.
fn banner(
    running: &upsession_server_hyper::Running,
    where_kept: &str,
    token_file: Option<&(PathBuf, Option<String>)>,
    fault_note: &str,
) -> Result<String, Failure> {
    let base = running.base_url();
    let token_note = match token_file {
        Some((path, Some(new))) => {
            keep_token(path, new)?;
            format!(
                "generated token (shown once, kept in {}): {new}\n",
                path.display()
            )
        }
        Some((path, None)) => format!("token: kept in {}\n", path.display()),
        None => String::new(),
    };
    let token_arg = token_file.map_or_else(
        || "TOKEN".to_owned(),
        |(path, _)| format!("\"$(cat {})\"", path.display()),
    );
    let host_note = if running.public_url_follows_host() {
        "uploadUrls name the host each client used (set --public-url to fix one)\n"
    } else {
        ""
    };
    Ok(format!(
        "upsession serving {base} (listening on {addr})\n{where_kept}\n{token_note}\
         {host_note}{fault_note}upload a file from another terminal:\n  \
         {me} upload FILE --draft \"Test\" --base-url {base} --token {token_arg}\n",
        addr = running.local_addr(),
        me = invocation(),
    ))
}

/// How to run this binary from a shell: `upsession` when that is what `PATH`
/// finds, else its absolute path (started with `cargo run`, it is on no `PATH`).
fn invocation() -> String {
    let me = std::env::current_exe().and_then(fs::canonicalize).ok();
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("upsession"))
            .find(|p| p.is_file())
            .and_then(|p| fs::canonicalize(p).ok())
    });
    match me {
        Some(me) if on_path.as_ref() != Some(&me) => {
            let shown = me.display().to_string();
            if shown.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", shown.replace('\'', r"'\''"))
            } else {
                shown
            }
        }
        _ => "upsession".to_owned(),
    }
}

/// The server's configuration from the flags.
fn server_config(
    args: ServeArgs,
    storage: Storage,
    data_dir: &Path,
    tokens: Vec<String>,
) -> (Config, String) {
    let limits = Limits::default()
        .with_min_size(args.min_size)
        .with_max_size(args.max_size)
        .with_max_fragment(args.max_fragment)
        .with_ttl(args.session_ttl)
        .with_max_age(args.session_ttl.max(Duration::from_secs(7 * 24 * 3600)));
    let dialect = args.dialect.dialect();
    let mut config = Config::new(data_dir)
        .with_storage(storage)
        .with_dialect(dialect)
        .with_listen(args.listen)
        .with_limits(limits)
        .with_max_connections(args.max_connections as usize)
        .with_quota(
            QuotaLimits::DEFAULT
                .with_sessions(args.max_sessions_per_token)
                .with_declared_bytes(args.max_declared_bytes_per_token),
        )
        .with_max_connections_per_ip(args.max_connections_per_ip as usize)
        .with_header_timeout(args.header_timeout)
        .with_idle_timeout(args.idle_timeout)
        .with_body_idle_timeout(args.body_idle_timeout)
        .with_lease_timeout(args.lease_timeout)
        .with_fsync(match args.fsync {
            FsyncArg::Always => Fsync::Always,
            FsyncArg::Never => Fsync::Never,
        });
    config.tokens = tokens;
    if let Some(url) = args.public_url {
        config = config.with_public_url(url);
    }
    if let Some(limit) = args.message_size_limit {
        config = config.with_message_size_limit(limit);
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config = config.with_tls(cert, key);
    }
    if args.reject_upload_auth {
        config = config.with_upload_authorization_refused();
    }
    config = config.with_clock_skew_secs(args.clock_skew);
    if args.throttle == "outlook" {
        config = config.with_throttle(ThrottleLimits::OUTLOOK);
    }
    let mut fault_note = String::new();
    if let Some(plan) = args.faults {
        fault_note = format!(
            "fault injection: {plan} (seed {}; replay with the same --faults)\n",
            plan.seed()
        );
        config = config.with_faults(plan);
    }
    if let Some(t) = args.admin_token {
        config = config.with_admin_token(t.expose());
    }
    if let Some(t) = args.metrics_token {
        config = config.with_metrics_token(t.expose());
    }
    if args.metrics_public {
        config = config.with_metrics_public();
    }
    config = config.with_auth_failure_limit(args.auth_failure_limit);
    (config, fault_note)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use std::path::Path;
    use std::time::Duration;

    use clap::Parser as _;
    use upsession_server_hyper::Storage;

    use crate::{Cli, Command};

    fn config_of(flags: &[&str]) -> upsession_server_hyper::Config {
        let cli = Cli::try_parse_from(["upsession", "serve"].iter().chain(flags)).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        super::server_config(*args, Storage::Disk, Path::new("/d"), Vec::new()).0
    }

    #[test]
    fn connection_flags_reach_the_server_and_default_to_its_defaults() {
        let defaults = config_of(&[]);
        let library = upsession_server_hyper::Config::new("/d");
        assert_eq!(defaults.max_connections, library.max_connections);
        assert_eq!(
            defaults.max_connections_per_ip,
            library.max_connections_per_ip
        );
        assert_eq!(defaults.header_timeout, library.header_timeout);
        assert_eq!(defaults.idle_timeout, library.idle_timeout);
        assert_eq!(defaults.body_idle_timeout, library.body_idle_timeout);
        assert_eq!(defaults.lease_timeout, library.lease_timeout);
        let set = config_of(&[
            "--lease-timeout",
            "5s",
            "--body-idle-timeout",
            "4s",
            "--max-connections-per-ip",
            "7",
            "--header-timeout",
            "3s",
            "--idle-timeout",
            "2m",
        ]);
        assert_eq!(set.max_connections_per_ip, 7);
        assert_eq!(set.header_timeout, Duration::from_secs(3));
        assert_eq!(set.idle_timeout, Duration::from_secs(120));
        assert_eq!(set.body_idle_timeout, Duration::from_secs(4));
        assert_eq!(set.lease_timeout, Duration::from_secs(5));
    }
}
