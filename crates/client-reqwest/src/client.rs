//! The [`Client`]: configuration, the Graph calls around an upload (create a draft,
//! a session's status, cancel), and the HTTP client they share.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use reqwest::Url;
use reqwest::redirect;
use upsession_core::planner::{PlannerConfig, TransportError};
use upsession_core::wire::AttachmentItem;

pub use upsession_client_shared::SessionStatus;
use upsession_client_shared::{created_draft, remote_error, throttled};

use crate::auth::{SharedToken, StaticToken, TokenProvider};
use crate::error::{Error, Result};
use crate::pacing::{Pacer, Pacing};
use crate::resume::StateStore;
use crate::transport::{Inner, Reply};
use upsession_core::redact::{RedactedUrl, UploadUrl};
use upsession_core::target::{Target, User};

/// Microsoft Graph v1.0, the default base URL.
pub const GRAPH_V1: &str = "https://graph.microsoft.com/v1.0";

/// Microsoft Graph beta.
pub const GRAPH_BETA: &str = "https://graph.microsoft.com/beta";

/// Files smaller than this many bytes are attached with one plain
/// `POST …/attachments` (their bytes as base64 `contentBytes`) rather than an
/// upload session: 3,000,000, "under 3 MB" on the stricter (decimal) reading.
///
/// Graph attaches files "under 3 MB" that way and opens sessions from "3 MB"
/// (doc: outlook-large-attachments; the unit is never defined). Below 3,000,000 B
/// a file is under 3 MB on either reading, and its request (base64 makes 4 bytes of
/// every 3) stays under the 4 MB Graph takes in one request; from 3,000,000 B up
/// a session is opened, which the live service takes from 2 MiB (2,097,152 B).
pub const SMALL_FILE_LIMIT: u64 = 3_000_000;

/// Files uploaded at once by [`Client::upload_many`] unless configured: Outlook
/// allows 4 concurrent requests per app and mailbox.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Configures a [`Client`]. Every setting has a default; see each method.
#[must_use]
pub struct ClientBuilder {
    base_url: String,
    token: Option<SharedToken>,
    user: User,
    planner: PlannerConfig,
    random_jitter: bool,
    concurrency: usize,
    pacing: PacingChoice,
    small_file_limit: u64,
    connect_timeout: Duration,
    request_timeout: Duration,
    state_dir: Option<StateStore>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: GRAPH_V1.into(),
            token: None,
            user: User::Me,
            planner: PlannerConfig::default(),
            random_jitter: true,
            concurrency: DEFAULT_CONCURRENCY,
            pacing: PacingChoice::ByHost,
            small_file_limit: SMALL_FILE_LIMIT,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10 * 60),
            state_dir: None,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &RedactedUrl(&self.base_url))
            .field("token", &self.token)
            .field("user", &self.user)
            .field("planner", &self.planner)
            .field("concurrency", &self.concurrency)
            .field("pacing", &self.pacing)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The defaults: Graph v1.0, `/me`, no token, 3,932,160-byte fragments, 4 files
    /// at once, files under [`SMALL_FILE_LIMIT`] in one `POST`, pacing to Outlook's
    /// budget for Microsoft Graph's hosts only, no resume state.
    pub fn new() -> Self {
        Self::default()
    }

    upsession_core::setters! {
        /// The Graph base URL, version included (default [`GRAPH_V1`]; [`GRAPH_BETA`],
        /// or a Graph-compatible server such as `http://127.0.0.1:8080/v1.0`).
        base_url(url: impl Into<String>) => base_url = url.into();
    }

    /// A fixed access token (a leading `Bearer ` is dropped).
    pub fn token(self, token: impl Into<String>) -> Self {
        self.token_provider(StaticToken::new(token))
    }

    upsession_core::setters! {
        /// Where access tokens come from. Needed to create drafts and upload sessions;
        /// not for `resume`, `status` or `cancel`, which only talk to the uploadUrl.
        token_provider(provider: impl TokenProvider + 'static)
            => token = Some(SharedToken(Arc::new(provider)));
    }

    upsession_core::setters! {
        /// Whose mailbox (default [`User::Me`]).
        user(user: User);
        /// Retry and deadline settings (default [`PlannerConfig::default`]: 10 attempts
        /// without progress, 6 hours in all, backoff from 500 ms to 60 s). Its fragment
        /// size replaces any set before; set [`ClientBuilder::fragment_size`] after it.
        planner(planner: PlannerConfig);
        /// Whether each upload mixes a random value into the planner's jitter seed
        /// (default true), so that uploads that fail together do not retry together.
        /// Turn it off to replay a run exactly.
        random_jitter(random_jitter: bool);
        /// Files uploaded at once by [`Client::upload_many`] and [`Client::resume_all`]
        /// (default [`DEFAULT_CONCURRENCY`]). Each file's fragments are always sequential.
        concurrency(concurrency: usize);
        /// How long connecting may take (default 30 s). A connection that cannot be made
        /// sent nothing, and is retried by the planner.
        connect_timeout(connect_timeout: Duration);
        /// How long one request may take, body included (default 10 minutes). A request
        /// that times out counts as a lost answer: the session is asked before re-sending.
        request_timeout(request_timeout: Duration);
        /// Paces uploads to a mailbox budget, e.g. [`Pacing::outlook`], whatever the
        /// host. By default uploads to Microsoft Graph's hosts (`graph.microsoft.com`
        /// and the national clouds'; see [`upsession_core::route::is_microsoft_graph_host`])
        /// are paced to [`Pacing::outlook`] and others are not.
        pacing(pacing: Pacing) => pacing = PacingChoice::On(pacing);
        /// Never paces uploads, even to Microsoft Graph (the server's `429`s still
        /// make the planner wait).
        without_pacing() => pacing = PacingChoice::Off;
        /// Files smaller than `bytes` are attached with one `POST …/attachments`
        /// instead of an upload session (default [`SMALL_FILE_LIMIT`]); `0` always
        /// opens a session.
        small_file_limit(bytes: u64) => small_file_limit = bytes;
        /// Saves a [`crate::ResumeState`] for every file upload in this directory (off by
        /// default). See [`StateStore`].
        state_dir(dir: impl Into<std::path::PathBuf>) => state_dir = Some(StateStore::new(dir));
    }

    /// Bytes per `PUT` (default [`crate::DEFAULT_FRAGMENT_SIZE`], 3,932,160). Graph wants
    /// multiples of 320 KiB below 4 MB; a `413` makes the planner halve it.
    pub fn fragment_size(mut self, bytes: u64) -> Self {
        self.planner = self.planner.with_fragment_size(bytes);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        let base = Url::parse(&self.base_url).map_err(|e| {
            Error::InvalidInput(format!(
                "the base URL {} is not a URL: {e}",
                RedactedUrl(&self.base_url)
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https")
            || base.cannot_be_a_base()
            || base.host_str().is_none()
        {
            return Err(Error::InvalidInput(format!(
                "the base URL {} must be an http or https URL with a host",
                RedactedUrl(&self.base_url)
            )));
        }
        if base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(Error::InvalidInput(format!(
                "the base URL {} must have no query, fragment, user name or password",
                RedactedUrl(&self.base_url)
            )));
        }
        if self.planner.fragment_size == 0 {
            return Err(Error::InvalidInput(
                "the fragment size must be positive".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::InvalidInput(
                "the concurrency must be at least 1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .redirect(same_host_redirects())
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("upsession/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidInput(crate::error::describe_reqwest(e)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: base.clone(),
                token: self.token,
                user: self.user,
                planner: self.planner,
                random_jitter: self.random_jitter,
                concurrency: self.concurrency,
                pacer: match self.pacing {
                    PacingChoice::On(pacing) => Some(pacing),
                    PacingChoice::Off => None,
                    PacingChoice::ByHost => base
                        .host_str()
                        .filter(|h| upsession_core::route::is_microsoft_graph_host(h))
                        .map(|_| Pacing::outlook()),
                }
                .map(Pacer::new),
                small_file_limit: self.small_file_limit,
                request_timeout: self.request_timeout,
                states: self.state_dir,
            }),
        })
    }
}

/// Whether uploads are paced.
#[derive(Clone, Debug)]
enum PacingChoice {
    /// To [`Pacing::outlook`] for Microsoft Graph's hosts, not elsewhere.
    ByHost,
    On(Pacing),
    Off,
}

/// Follows a redirect only within the same scheme, host and port, at most 5 times.
/// Anything else is an error: a redirect elsewhere could carry the bearer token or
/// the uploadUrl's credential to another party.
fn same_host_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let next = attempt.url();
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let same = first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        if !same {
            let message = format!(
                "refused a redirect from {} to another host, {}",
                RedactedUrl(first.as_str()),
                RedactedUrl(next.as_str())
            );
            return attempt.error(message);
        }
        if attempt.previous().len() > 5 {
            return attempt.error("too many redirects");
        }
        attempt.follow()
    })
}

/// Uploads large attachments to Outlook messages and events through Microsoft
/// Graph upload sessions. Cheap to clone; clones share connections and pacing.
///
/// See the [crate documentation](crate) for examples.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The Graph base URL.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// Where file uploads save their resume state, if anywhere.
    pub fn state_store(&self) -> Option<&StateStore> {
        self.inner.states.as_ref()
    }

    /// Creates a draft message (`POST {base}/{user}/messages` with the subject) and
    /// returns it as a [`Target`] for uploads. Sent again only after a `429` or
    /// `503` (see [`upsession_core::planner::throttle_wait`]): a `POST` retried
    /// after a lost answer could create two drafts.
    pub async fn create_draft(&self, subject: &str) -> Result<Target> {
        let inner = &self.inner;
        let url = inner.url(&["messages"]);
        let body = serde_json::json!({ "subject": subject }).to_string();
        let request = inner
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let request = inner.authorize(request).await?;
        tracing::debug!(url = %url, "POST create draft");
        match inner.send_throttled(request).await? {
            // The first request: nothing exists that a retry could find.
            Reply::NoAnswer(TransportError::NotSent, cause) => Err(Error::Unreachable {
                url: RedactedUrl(url.as_str()).to_string(),
                cause,
            }),
            Reply::NoAnswer(_, why) => Err(Error::Http(why)),
            Reply::Answer(answer) => {
                let draft = created_draft(&answer)?;
                tracing::info!(id = %draft.id(), "draft created");
                Ok(draft)
            }
        }
    }

    /// Asks an upload session what it still expects (`GET {uploadUrl}`, no
    /// `Authorization`). A session the server no longer knows is
    /// [`Error::SessionExpired`].
    pub async fn status(&self, upload_url: &UploadUrl) -> Result<SessionStatus> {
        tracing::debug!(url = %upload_url, "GET session status");
        let answer = self.session_call(upload_url, reqwest::Method::GET).await?;
        SessionStatus::from_body(answer.body())
    }

    /// Cancels an upload session (`DELETE {uploadUrl}`, no `Authorization`; Graph
    /// answers `204`). A session the server no longer knows is
    /// [`Error::SessionExpired`].
    pub async fn cancel(&self, upload_url: &UploadUrl) -> Result<()> {
        tracing::debug!(url = %upload_url, "DELETE session");
        self.session_call(upload_url, reqwest::Method::DELETE)
            .await?;
        tracing::info!(url = %upload_url, "upload session cancelled");
        Ok(())
    }

    /// `method` on an uploadUrl (no `Authorization`): its successful answer, or the
    /// error a failed one means.
    async fn session_call(
        &self,
        upload_url: &UploadUrl,
        method: reqwest::Method,
    ) -> Result<http::Response<Bytes>> {
        let request = self.inner.http.request(method, upload_url.expose_secret());
        match self.inner.send_throttled(request).await? {
            Reply::NoAnswer(_, why) => Err(Error::Http(why)),
            Reply::Answer(answer) if answer.status().is_success() => Ok(answer),
            Reply::Answer(answer) => Err(session_error(&answer)),
        }
    }
}

impl Inner {
    /// [`Inner::send`], again while the answer is throttling that
    /// [`upsession_core::planner::throttle_wait`] says to wait out.
    pub(crate) async fn send_throttled(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A body that cannot be sent twice is sent once, as it is.
            let Some(this) = request.try_clone() else {
                return self.send(request).await;
            };
            let reply = self.send(this).await?;
            if let Reply::Answer(answer) = &reply
                && let Some(wait) = throttled(answer, attempt, SystemTime::now())
            {
                tracing::info!(status = %answer.status(), ?wait, attempt, "throttled; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(reply);
        }
    }

    /// `{base}/{me | users/{id}}/{segments…}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the base URL was checked to be a base");
            path.pop_if_empty();
            path.extend(self.user.segments());
            path.extend(segments);
        }
        url
    }

    /// `{base}/{user}/{collection}/{id}/attachments/{rest…}`: the attachments of
    /// `target`.
    pub(crate) fn attachments_url(&self, target: &Target, rest: &[&str]) -> Url {
        // A drive file has no attachments: its listing is the drive's root.
        let mut segments: Vec<&str> = target
            .attachments_segments()
            .map_or_else(|| vec!["drive", "root"], Vec::from);
        segments.extend(rest);
        self.url(&segments)
    }

    /// `createUploadSession` of `target`.
    pub(crate) fn session_url(&self, target: &Target) -> Url {
        let segments = target.session_segments();
        self.url(&segments.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The createUploadSession request for `item` on `target`, with the token.
    pub(crate) async fn create_session_request(
        &self,
        target: &Target,
        item: &AttachmentItem,
    ) -> Result<reqwest::RequestBuilder> {
        let url = self.session_url(target);
        tracing::debug!(url = %url, name = %item.name, size = item.size, "POST createUploadSession");
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(target.session_body(item).to_string());
        self.authorize(request).await
    }

    /// Adds the bearer token. Only requests built from the base URL come here.
    pub(crate) async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder> {
        let provider = self.token.as_ref().ok_or(Error::NoToken)?;
        let token = provider
            .0
            .token()
            .await
            .map_err(|e| Error::Token(e.to_string()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::Token("the token holds characters an HTTP header cannot carry".into())
        })?;
        value.set_sensitive(true);
        Ok(request.header(AUTHORIZATION, value))
    }
}

/// An error answer from an uploadUrl: a 404 means the session is gone.
fn session_error(answer: &http::Response<Bytes>) -> Error {
    let remote = remote_error(answer);
    if answer.status() == StatusCode::NOT_FOUND {
        Error::SessionExpired {
            remote: Some(remote),
        }
    } else {
        Error::Remote(remote)
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let builder = Client::builder()
            .base_url("http://127.0.0.1:1/v1.0")
            .token("secret-token");
        assert!(!format!("{builder:?}").contains("secret-token"));
        let client = builder.build().unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn a_base_url_with_credentials_is_refused() {
        for url in [
            "http://user:pass@127.0.0.1/v1.0",
            "http://user@127.0.0.1/v1.0",
            "http://127.0.0.1/v1.0?sig=1",
            "http://127.0.0.1/v1.0#x",
        ] {
            let err = Client::builder().base_url(url).build().unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{url}: {err}");
        }
    }

    #[test]
    fn pacing_is_on_for_microsoft_graph_hosts_only_unless_asked() {
        let paced = |base: &str, off: bool| {
            let mut builder = Client::builder().base_url(base);
            if off {
                builder = builder.without_pacing();
            }
            builder.build().unwrap().inner.pacer.is_some()
        };
        assert!(paced("https://graph.microsoft.com/v1.0", false));
        assert!(paced("https://graph.microsoft.us/beta", false));
        assert!(!paced("https://graph.microsoft.com/v1.0", true));
        assert!(!paced("http://127.0.0.1:8080/v1.0", false));
        assert!(!paced("https://graph.example.com/v1.0", false));
    }
}
