//! [`Client`] and [`ClientBuilder`]: where Graph is, the token, the upload policy,
//! and the requests that are not an upload (drafts, session status, cancel).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use upsession_client_shared::{
    Error, Pacing, Result, SessionStatus, StateStore, Window, created_draft, remote_error,
    throttled,
};
use upsession_core::planner::{PlannerConfig, TransportError};
use upsession_core::redact::{RedactedUrl, UploadUrl};
use upsession_core::route;
use upsession_core::target::{Target, User};

use crate::transport::{Reply, send};

/// Microsoft Graph v1.0, the default base URL.
pub const GRAPH_V1: &str = "https://graph.microsoft.com/v1.0";

/// Files smaller than this many bytes (3,000,000, Graph's documented "3 MB") are
/// attached with one `POST …/attachments`; larger ones through an upload session.
pub const SMALL_FILE_LIMIT: u64 = 3_000_000;

/// Characters a path segment keeps unencoded: RFC 3986's unreserved ones, and
/// `:` and `@`, which a segment may hold as they are (OneDrive's
/// `root:/{path}:` needs its colons literal; `/users/{upn}` keeps its `@`), as
/// the reqwest client's URLs keep them.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'@');

/// Builds a [`Client`].
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    base_url: String,
    token: Option<Token>,
    user: User,
    planner: PlannerConfig,
    random_jitter: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
    pacing: PacingChoice,
    small_file_limit: u64,
    state_dir: Option<StateStore>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: GRAPH_V1.to_owned(),
            token: None,
            user: User::Me,
            planner: PlannerConfig::default(),
            random_jitter: true,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            pacing: PacingChoice::ByHost,
            small_file_limit: SMALL_FILE_LIMIT,
            state_dir: None,
        }
    }
}

impl ClientBuilder {
    /// The defaults: Graph v1.0, `/me`, no token, pacing for Graph's hosts only.
    pub fn new() -> Self {
        Self::default()
    }

    upsession_core::setters! {
        /// The Graph base URL, version included (default [`GRAPH_V1`], or a
        /// Graph-compatible server such as `http://127.0.0.1:8080/v1.0`).
        base_url(url: impl Into<String>) => base_url = url.into();
        /// The bearer token sent with drafts and createUploadSession (with or
        /// without its `Bearer ` prefix). Resuming, asking or cancelling a session
        /// needs none.
        token(token: impl Into<String>)
            => token = Some(Token(token.into().trim_start_matches("Bearer ").to_owned()));
        /// Uploads to another user's mailbox (`/users/{id}`) instead of `/me`.
        user(user: User);
        /// Uploads whose file is under `bytes` (3,000,000 unless set) go as one
        /// `POST …/attachments`; with `0`, every file opens a session.
        small_file_limit(bytes: u64) => small_file_limit = bytes;
        /// Every file upload keeps a resume state in `dir`.
        state_dir(dir: impl Into<std::path::PathBuf>) => state_dir = Some(StateStore::new(dir));
        /// Keeps every upload within `pacing`, whatever the host; without it, only
        /// Microsoft Graph's hosts are paced, to [`Pacing::outlook`].
        pacing(pacing: Pacing) => pacing = PacingChoice::On(pacing);
        /// No pacing at all (a server's `429`s are still waited out).
        without_pacing() => pacing = PacingChoice::Off;
        /// The planner's attempts, backoff and deadline ([`PlannerConfig::default`]
        /// unless set); set [`ClientBuilder::fragment_size`] after it.
        planner(planner: PlannerConfig);
        /// The longest one request may take, its body included (10 minutes unless
        /// set); past it, the answer counts as lost.
        request_timeout(request_timeout: Duration);
        /// `false` replays a run exactly: no random value is mixed into the seed
        /// of each upload's retry jitter.
        random_jitter(random_jitter: bool);
        /// The longest a connection may take to open (30 s unless set).
        connect_timeout(connect_timeout: Duration);
    }

    /// Bytes per `PUT` (default 3,932,160); a `413` makes the planner halve it.
    pub fn fragment_size(mut self, bytes: u64) -> Self {
        self.planner = self.planner.with_fragment_size(bytes);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        let base = self.base_url.trim_end_matches('/').to_owned();
        let host = checked_host(&base)?;
        if self.planner.fragment_size == 0 {
            return Err(Error::InvalidInput(
                "the fragment size must be positive".into(),
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect could carry a credential elsewhere: none is followed.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_global(Some(self.request_timeout))
            .user_agent(concat!("upsession/", env!("CARGO_PKG_VERSION")))
            .build();
        let pacing = match self.pacing {
            PacingChoice::On(pacing) => Some(pacing),
            PacingChoice::Off => None,
            PacingChoice::ByHost => route::is_microsoft_graph_host(&host).then(Pacing::outlook),
        };
        Ok(Client {
            agent: config.new_agent(),
            base,
            token: self.token,
            user: self.user,
            planner: self.planner,
            random_jitter: self.random_jitter,
            pacing: pacing.map(|p| (p, Mutex::new(Window::default()))),
            small_file_limit: self.small_file_limit,
            states: self.state_dir,
        })
    }
}

/// An access token, which `Debug` never shows.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether uploads are paced.
#[derive(Debug)]
enum PacingChoice {
    /// To [`Pacing::outlook`] for Microsoft Graph's hosts, not elsewhere.
    ByHost,
    On(Pacing),
    Off,
}

/// The host of an http(s) base URL with no query, fragment or user information.
fn checked_host(base: &str) -> Result<String> {
    let refuse =
        |why: &str| Error::InvalidInput(format!("the base URL {} {why}", RedactedUrl(base)));
    let uri: http::Uri = base.parse().map_err(|_| refuse("is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(refuse("must be an http or https URL with a host"));
    }
    let authority = uri.authority().ok_or_else(|| refuse("has no host"))?;
    if uri.query().is_some() || base.contains('#') || authority.as_str().contains('@') {
        return Err(refuse(
            "must have no query, fragment, user name or password",
        ));
    }
    Ok(authority.host().to_owned())
}

/// A blocking uploader to Microsoft Graph (or a Graph-compatible server). Share it
/// between threads by reference: its connections and pacing are shared. Its
/// `Debug` never shows the token.
#[derive(Debug)]
pub struct Client {
    pub(crate) agent: ureq::Agent,
    pub(crate) base: String,
    token: Option<Token>,
    pub(crate) user: User,
    pub(crate) planner: PlannerConfig,
    pub(crate) random_jitter: bool,
    pub(crate) pacing: Option<(Pacing, Mutex<Window>)>,
    pub(crate) small_file_limit: u64,
    pub(crate) states: Option<StateStore>,
}

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The Graph base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Where file uploads save their resume state, if anywhere.
    pub fn state_store(&self) -> Option<&StateStore> {
        self.states.as_ref()
    }

    /// Creates a draft message (`POST {base}/{user}/messages`) and returns it as a
    /// [`Target`]. Sent again only after a `429` or `503`.
    pub fn create_draft(&self, subject: &str) -> Result<Target> {
        let url = self.url(&["messages"]);
        let body = serde_json::json!({ "subject": subject }).to_string();
        match self.send_throttled(&|| self.json_post(&url, body.clone()))? {
            Reply::NoAnswer(TransportError::NotSent, cause) => Err(Error::Unreachable {
                url: RedactedUrl(&url).to_string(),
                cause,
            }),
            Reply::NoAnswer(_, why) => Err(Error::Http(why)),
            Reply::Answer(answer) => created_draft(&answer),
        }
    }

    /// Asks an upload session what it still expects (`GET {uploadUrl}`). A session
    /// the server no longer knows is [`Error::SessionExpired`].
    pub fn status(&self, upload_url: &UploadUrl) -> Result<SessionStatus> {
        let answer = self.session_call(upload_url, &Method::GET)?;
        SessionStatus::from_body(answer.body())
    }

    /// Cancels an upload session (`DELETE {uploadUrl}`).
    pub fn cancel(&self, upload_url: &UploadUrl) -> Result<()> {
        self.session_call(upload_url, &Method::DELETE)?;
        tracing::info!(url = %upload_url, "upload session cancelled");
        Ok(())
    }

    fn session_call(
        &self,
        upload_url: &UploadUrl,
        method: &Method,
    ) -> Result<http::Response<Vec<u8>>> {
        let request = || {
            http::Request::builder()
                .method(method.clone())
                .uri(upload_url.expose_secret())
                .body(Vec::new())
                .map_err(|_| Error::InvalidInput(format!("{upload_url} is not a URL")))
        };
        match self.send_throttled(&request)? {
            Reply::NoAnswer(_, why) => Err(Error::Http(why)),
            Reply::Answer(answer) if answer.status().is_success() => Ok(answer),
            Reply::Answer(answer) if answer.status() == StatusCode::NOT_FOUND => {
                Err(Error::SessionExpired {
                    remote: Some(remote_error(&answer)),
                })
            }
            Reply::Answer(answer) => Err(Error::Remote(remote_error(&answer))),
        }
    }

    /// Whether requests to the base URL can carry a token.
    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends the request `make` builds, again while the answer is throttling that
    /// [`throttle_wait`] says to wait out.
    pub(crate) fn send_throttled(
        &self,
        make: &dyn Fn() -> Result<http::Request<Vec<u8>>>,
    ) -> Result<Reply> {
        for attempt in 1.. {
            let reply = send(&self.agent, make()?)?;
            if let Reply::Answer(answer) = &reply
                && let Some(wait) = throttled(answer, attempt, SystemTime::now())
            {
                tracing::info!(status = %answer.status(), ?wait, attempt, "throttled; waiting");
                std::thread::sleep(wait);
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the attempts never run out")
    }

    /// `{base}/{me | users/{id}}/{segments…}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> String {
        let mut url = self.base.clone();
        for segment in self
            .user
            .segments()
            .into_iter()
            .chain(segments.iter().copied())
        {
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        url
    }

    /// `createUploadSession` of `target`.
    pub(crate) fn session_url(&self, target: &Target) -> String {
        let segments = target.session_segments();
        self.url(&segments.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The attachments of `target`, then `rest`.
    pub(crate) fn attachments_url(&self, target: &Target, rest: &[&str]) -> String {
        // A drive file has no attachments: its listing is the drive's root.
        let mut segments: Vec<&str> = target
            .attachments_segments()
            .map_or_else(|| vec!["drive", "root"], Vec::from);
        segments.extend(rest);
        self.url(&segments)
    }

    /// A `POST` of JSON to `url` with the bearer token; only URLs built from the
    /// base URL come here.
    pub(crate) fn json_post(&self, url: &str, body: String) -> Result<http::Request<Vec<u8>>> {
        let request = http::Request::post(url).header(CONTENT_TYPE, "application/json");
        self.authorize(request)?
            .body(body.into_bytes())
            .map_err(|e| Error::InvalidInput(e.to_string()))
    }

    /// Adds the bearer token.
    pub(crate) fn authorize(
        &self,
        request: http::request::Builder,
    ) -> Result<http::request::Builder> {
        let token = &self.token.as_ref().ok_or(Error::NoToken)?.0;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::Token("the token holds characters an HTTP header cannot carry".into())
        })?;
        value.set_sensitive(true);
        Ok(request.header(AUTHORIZATION, value))
    }

    /// Waits until `bytes` fit in the mailbox's budget (if paced), or the upload
    /// is cancelled; `on_wait` is told each wait.
    pub(crate) fn pace(
        &self,
        bytes: u64,
        cancel: Option<&crate::CancelToken>,
        mut on_wait: impl FnMut(Duration),
    ) {
        let Some((pacing, window)) = &self.pacing else {
            return;
        };
        loop {
            let now = std::time::Instant::now();
            let until = window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reserve(now, bytes, pacing.budget_bytes, pacing.window);
            let Some(until) = until else { return };
            let wait = until.saturating_duration_since(now);
            on_wait(wait);
            match cancel {
                Some(token) if token.sleep(wait) => return,
                Some(_) => {}
                None => std::thread::sleep(wait),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upsession_core::drive::ConflictBehavior;

    #[test]
    fn a_drive_files_session_url_keeps_onedrives_colons() {
        let client = Client::builder()
            .base_url("https://graph.microsoft.com/v1.0")
            .build()
            .unwrap();
        let target = Target::drive("/Q3 docs/report #1.pdf", ConflictBehavior::Fail);
        assert_eq!(
            client.session_url(&target),
            "https://graph.microsoft.com/v1.0/me/drive/root:/Q3%20docs/report%20%231.pdf:/createUploadSession"
        );
    }
}
