//! Runs an [`SdkModel`] against a real server over HTTP(S) and judges what it did.
//!
//! The driver does what the SDK's caller and its HTTP stack would: creates a draft
//! message and an upload session with the bearer token (as an application does
//! through the Graph client), then sends exactly the requests the model asks for,
//! without `Authorization` (every SDK's default authentication leaves it off hosts
//! that are not Graph's). It is the only part of [`crate::sdk`] that does I/O or
//! reads a clock.
//!
//! A model's [`Step::Wait`] is slept for at most [`MAX_WAIT`]: the SDKs' sleeps
//! (retry delays, passes) change no outcome against servers that do not throttle,
//! which is true of every server here.
//!
//! [`Options`] disturb a run ([`run_with_options`]), as a network and an
//! application would: a fragment PUT can go *half-open* (its head and the first
//! half of its body are sent, then nothing, on a connection held open until the run
//! ends), which the model sees as a transport error, as a client whose connection
//! died on its side sees it while the server still waits for the rest of the body;
//! and when the SDK then fails, the application can resume ([`SdkModel::resume`]).
//! The [`Run`] tells what happened on the way, and what the server answered the
//! half-open request in the end (`409 fragmentSuperseded` once a retry took its
//! fragment over).

mod half_open;

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use self::half_open::{Held, Stalling, release};
use super::{Answer, Method, Request, SdkModel, Step};

/// The longest a [`Step::Wait`] is really slept.
pub const MAX_WAIT: Duration = Duration::from_millis(5);
/// The most requests one upload may make before it is judged stuck.
pub const MAX_STEPS: u32 = 10_000;
/// The longest one upload may take.
pub const MAX_TIME: Duration = Duration::from_secs(300);
/// How long after a half-open request stalls the client notices, by default.
pub const NOTICE: Duration = Duration::from_millis(500);

/// How a run is disturbed, and what the application does about it. The default,
/// which [`run`] and [`run_with`] use, disturbs nothing.
///
/// ```
/// use upsession_conformance::sdk::driver::Options;
///
/// // The 2nd fragment PUT goes half-open; after the failure that follows, the
/// // application resumes once.
/// let options = Options::new().half_open_put(2).resuming(1);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    /// Which fragment PUTs go half-open, counted from 1.
    half_open: Vec<u32>,
    /// [`NOTICE`] when `None`.
    notice: Option<Duration>,
    resumes: u32,
    /// Upload to a drive path rather than to a draft's attachments.
    drive: bool,
}

impl Options {
    /// No disturbance.
    pub fn new() -> Self {
        Self::default()
    }

    /// The upload goes to the user's drive, `sdk/{name}` below its root
    /// (`replace`), as an application uploads a file to OneDrive with the SDK's
    /// task: the session is the drive's, and the file is judged by its `content`.
    #[must_use]
    pub fn to_drive(mut self) -> Self {
        self.drive = true;
        self
    }

    /// The `n`-th fragment PUT of the run (counted from 1, over the whole run,
    /// resumes included) goes half-open: its head and the first half of its body
    /// are sent, then nothing, on a connection kept open until the run ends; after
    /// [`Options::noticed_after`] the model is told of a transport error. Call again
    /// for more PUTs.
    #[must_use]
    pub fn half_open_put(mut self, n: u32) -> Self {
        self.half_open.push(n);
        self
    }

    upsession_core::setters! {
        /// How long after a half-open request stalls the client notices, [`NOTICE`] by
        /// default. A real client notices a dead connection late (a reset, a timeout);
        /// the delay also lets the server read the head and begin the fragment before
        /// any retry, which is the order the disturbance is about.
        noticed_after(delay: Duration) => notice = Some(delay);
        /// When the model fails right after a transport error, the application
        /// resumes the upload with [`SdkModel::resume`], at most `times` times in the
        /// run (none by default). Failures on an answer are not resumed: an
        /// application that catches network errors lets the others through.
        resuming(times: u32) => resumes = times;
    }
}

/// What happened during a run, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A request the model asked for, and what came back: the status with Graph's
    /// most specific error code (as [`refusal`] writes it), or the transport error.
    Sent {
        /// PUT, GET or DELETE.
        method: Method,
        /// The request's `Content-Range`, if any.
        content_range: Option<String>,
        /// `202`, `409 fragmentInProgress`, `transport error: …`.
        answer: String,
    },
    /// A fragment PUT went half-open: `sent` of its `len` body bytes went out, then
    /// nothing, and the model was told of a transport error.
    HalfOpen {
        /// The request's `Content-Range`.
        content_range: String,
        /// Body bytes sent.
        sent: u64,
        /// Body bytes declared.
        len: u64,
    },
    /// The model slept this long, as the SDK would (the driver caps the real sleep
    /// at [`MAX_WAIT`]).
    Slept(Duration),
    /// The model failed right after a transport error, and the application resumed.
    Resumed {
        /// The failure, in a few words.
        after: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sent {
                method,
                content_range: Some(range),
                answer,
            } => write!(f, "{method} {range} → {answer}"),
            Self::Sent { method, answer, .. } => write!(f, "{method} → {answer}"),
            Self::HalfOpen {
                content_range,
                sent,
                len,
            } => write!(
                f,
                "PUT {content_range} → half-open ({sent} of {len} B sent, then nothing)"
            ),
            Self::Slept(d) => write!(f, "sleeps {d:?}"),
            Self::Resumed { after } => write!(f, "{after}; the application resumes"),
        }
    }
}

/// A run: its verdict, and what happened on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Run {
    /// The verdict.
    pub outcome: Outcome,
    /// Every request, half-open request, sleep and resume, in order.
    pub events: Vec<Event>,
    /// For each half-open request, in order, what the server had answered it when
    /// the run ended (as [`refusal`] writes it, e.g. `409 fragmentSuperseded`), or
    /// `None` while it still waited for the rest of the body.
    pub half_open_answers: Vec<Option<String>>,
}

/// The verdict on one upload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The model reported success and the server holds the exact bytes.
    Works,
    /// Anything else, and why (no ports, ids or timings: it goes into the docs).
    Fails {
        /// The first explanation: the server's refusal and the SDK's exception, the
        /// exception alone, or what is wrong with a reported success.
        reason: String,
    },
}

impl Outcome {
    fn fails(reason: impl Into<String>) -> Self {
        Self::Fails {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Works => f.write_str("works"),
            Self::Fails { reason } => write!(f, "fails: {reason}"),
        }
    }
}

/// Uploads `file` with `model` to the server at `base_url` (`…/v1.0`), trusting
/// `root_cert_pem` for https, and judges it.
pub async fn run(
    model: &mut dyn SdkModel,
    base_url: &str,
    token: &str,
    file: &[u8],
    root_cert_pem: Option<&str>,
) -> Outcome {
    match client(root_cert_pem) {
        Ok(client) => run_with(&client, model, base_url, token, file).await,
        Err(e) => Outcome::fails(format!("harness: {e}")),
    }
}

/// The HTTP client [`run`] sends with, for [`run_with`] and
/// [`run_with_options`]: HTTP/1.1, no redirect followed (what to do with one is
/// the model's business), a minute per request, and `root_cert_pem` trusted
/// besides the usual roots.
///
/// # Errors
/// When the certificate cannot be read or the client cannot be built.
pub fn client(root_cert_pem: Option<&str>) -> Result<Client, String> {
    let mut builder = Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    if let Some(pem) = root_cert_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("bad certificate: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// [`run`] with a client of the caller's ([`client`], say).
pub async fn run_with(
    client: &Client,
    model: &mut dyn SdkModel,
    base_url: &str,
    token: &str,
    file: &[u8],
) -> Outcome {
    run_with_options(client, model, base_url, token, file, &Options::new())
        .await
        .outcome
}

/// [`run_with`], disturbed as `options` say; reports what happened on the way.
pub async fn run_with_options(
    client: &Client,
    model: &mut dyn SdkModel,
    base_url: &str,
    token: &str,
    file: &[u8],
    options: &Options,
) -> Run {
    let upload = Upload {
        client,
        base: base_url.trim_end_matches('/'),
        token,
        file,
        name: format!("{}-{}.bin", model.profile().name, file.len()),
        options,
    };
    let mut trace = Trace::default();
    let outcome = match tokio::time::timeout(MAX_TIME, upload.run(model, &mut trace)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::fails(format!("no end within {} s", MAX_TIME.as_secs())),
    };
    let half_open_answers = release(std::mem::take(&mut trace.held)).await;
    Run {
        outcome,
        events: trace.events,
        half_open_answers,
    }
}

/// One upload's fixed parts.
struct Upload<'a> {
    client: &'a Client,
    base: &'a str,
    token: &'a str,
    file: &'a [u8],
    name: String,
    options: &'a Options,
}

/// What a run has done so far. It lives outside the run's future, so that a run
/// cut short by [`MAX_TIME`] still reports it and lets its connections go.
#[derive(Debug, Default)]
struct Trace {
    events: Vec<Event>,
    /// Fragment PUTs sent so far.
    puts: u32,
    held: Vec<Held>,
}

impl Trace {
    /// Records a request and what came back.
    fn record(&mut self, request: &Request, result: &Result<Answer, String>) {
        self.events.push(Event::Sent {
            method: request.method,
            content_range: request.content_range.clone(),
            answer: match result {
                Ok(answer) => refusal(answer),
                Err(e) => format!("transport error: {e}"),
            },
        });
    }
}

impl Upload<'_> {
    async fn run(&self, model: &mut dyn SdkModel, trace: &mut Trace) -> Outcome {
        if self.options.drive {
            return self.run_to_drive(model, trace).await;
        }
        let draft = self
            .graph_post(
                "me/messages",
                &json!({"subject": format!("SDK model: {}", self.name)}),
            )
            .await;
        let id = match draft {
            Ok(a) if a.status == 201 => a
                .json_body()
                .and_then(|v| v["id"].as_str().map(str::to_owned)),
            Ok(a) => return Outcome::fails(format!("draft refused: {}", refusal(&a))),
            Err(e) => return Outcome::fails(format!("harness: draft: {e}")),
        };
        let Some(id) = id else {
            return Outcome::fails("draft answered without an id");
        };
        let item = json!({"AttachmentItem": {"attachmentType": "file", "name": self.name, "size": self.file.len()}});
        let path = format!("me/messages/{id}/attachments/createUploadSession");
        match self.upload_to(&path, &item, model, trace).await {
            Ok(()) => self.judge(&id).await,
            Err(outcome) => outcome,
        }
    }

    /// createUploadSession at `path` with `body`, then the model's requests to
    /// its end; `Err` with the verdict when either fails.
    async fn upload_to(
        &self,
        path: &str,
        body: &Value,
        model: &mut dyn SdkModel,
        trace: &mut Trace,
    ) -> Result<(), Outcome> {
        let session = match self.graph_post(path, body).await {
            Ok(a) if a.is_success() => a,
            Ok(a) => {
                return Err(Outcome::fails(format!(
                    "createUploadSession refused: {}",
                    refusal(&a)
                )));
            }
            Err(e) => return Err(Outcome::fails(format!("harness: createUploadSession: {e}"))),
        };
        let size = u64::try_from(self.file.len()).unwrap_or(u64::MAX);
        let step = model.start(SystemTime::now(), &session, size);
        self.pump(model, step, trace).await
    }

    /// [`Upload::run`] to a drive path: createUploadSession on it, the model's
    /// requests, then the file's `content`.
    async fn run_to_drive(&self, model: &mut dyn SdkModel, trace: &mut Trace) -> Outcome {
        let path = format!("me/drive/root:/sdk/{}:", self.name);
        let body = json!({"item": {"@microsoft.graph.conflictBehavior": "replace"}});
        let create = format!("{path}/createUploadSession");
        if let Err(outcome) = self.upload_to(&create, &body, model, trace).await {
            return outcome;
        }
        match self.graph_get(&format!("{path}/content")).await {
            Ok(a) if a.status == 200 => self.same_bytes(&a.body, "file"),
            Ok(a) => Outcome::fails(format!("reports success, but the file: {}", refusal(&a))),
            Err(e) => Outcome::fails(format!("harness: content: {e}")),
        }
    }

    /// Whether `bytes` (what the server holds as `what`) are the file's.
    fn same_bytes(&self, bytes: &[u8], what: &str) -> Outcome {
        if bytes == self.file {
            Outcome::Works
        } else if bytes.len() < self.file.len() {
            Outcome::fails(format!(
                "reports success, but the {what} is short ({} of {} B)",
                bytes.len(),
                self.file.len()
            ))
        } else {
            Outcome::fails(format!("reports success, but the {what}'s bytes differ"))
        }
    }

    /// Drives the model until it returns; `Err` with the verdict when it fails.
    async fn pump(
        &self,
        model: &mut dyn SdkModel,
        mut step: Step,
        trace: &mut Trace,
    ) -> Result<(), Outcome> {
        let mut first_refusal: Option<String> = None;
        let mut resumes = self.options.resumes;
        // Whether the model's last input was a transport error.
        let mut cut_off = false;
        let started = Instant::now();
        for _ in 0..MAX_STEPS {
            step = match step {
                Step::Send(request) => match self.send(&request, trace).await? {
                    Ok(answer) => {
                        cut_off = false;
                        if answer.status >= 400 && first_refusal.is_none() {
                            first_refusal = Some(refusal(&answer));
                        }
                        model.on_answer(SystemTime::now(), &answer)
                    }
                    Err(what) => {
                        cut_off = true;
                        model.on_transport_error(&what)
                    }
                },
                Step::Wait(d) => {
                    cut_off = false;
                    trace.events.push(Event::Slept(d));
                    tokio::time::sleep(d.min(MAX_WAIT)).await;
                    model.on_wait_over()
                }
                Step::Done { .. } => return Ok(()),
                Step::Failed(f) if cut_off && resumes > 0 => {
                    resumes -= 1;
                    cut_off = false;
                    trace.events.push(Event::Resumed { after: f.short });
                    model.resume()
                }
                Step::Failed(f) => {
                    let mut reason = match first_refusal {
                        Some(refusal) => format!("{refusal} → {}", f.short),
                        None => f.short,
                    };
                    if let Some(issue) = f.issue {
                        reason = format!("{reason} ({issue})");
                    }
                    return Err(Outcome::fails(reason));
                }
            };
        }
        Err(Outcome::fails(format!(
            "no end after {MAX_STEPS} steps ({} s)",
            started.elapsed().as_secs()
        )))
    }

    /// Sends `request` as the SDK would (or half-open, if it is a PUT `options`
    /// name), and records it. The outer `Err` is a verdict (the model asked for
    /// something no HTTP stack sends); the inner one a transport error.
    async fn send(
        &self,
        request: &Request,
        trace: &mut Trace,
    ) -> Result<Result<Answer, String>, Outcome> {
        let (builder, body) = self.build(request)?;
        let builder = match body {
            Some(body) => {
                trace.puts += 1;
                if self.options.half_open.contains(&trace.puts) {
                    return Ok(self.half_open(request, builder, body, trace).await);
                }
                builder.body(body)
            }
            None => builder,
        };
        let result = receive(builder.send().await).await;
        trace.record(request, &result);
        Ok(result)
    }

    /// Sends a PUT half-open: its head and the first half of `body`, then nothing
    /// (the connection held in `trace` until the run ends); once the client has
    /// taken those bytes, and [`Options::noticed_after`] later, the transport error
    /// the model is told of. If the server answers before the body stalls, that
    /// answer instead.
    async fn half_open(
        &self,
        request: &Request,
        builder: RequestBuilder,
        body: Vec<u8>,
        trace: &mut Trace,
    ) -> Result<Answer, String> {
        let len = body.len();
        let sent = Bytes::from(body).slice(..len / 2);
        let (stalled, mut has_stalled) = oneshot::channel();
        let (cut, cut_rx) = oneshot::channel();
        let stalling = Stalling {
            sent: Some(sent),
            stalled: Some(stalled),
            cut: cut_rx,
            declared: len as u64,
        };
        // Held for the whole run: the client's own timeout must not end it sooner.
        let pending = builder
            .timeout(MAX_TIME)
            .body(reqwest::Body::wrap(stalling))
            .send();
        let mut answer = tokio::spawn(async move { receive(pending.await).await });
        tokio::select! {
            Ok(()) = &mut has_stalled => {}
            early = &mut answer => {
                let result = early.unwrap_or_else(|e| Err(e.to_string()));
                trace.record(request, &result);
                return result;
            }
        }
        trace.events.push(Event::HalfOpen {
            content_range: request.content_range.clone().unwrap_or_default(),
            sent: len as u64 / 2,
            len: len as u64,
        });
        trace.held.push(Held { answer, cut });
        tokio::time::sleep(self.options.notice.unwrap_or(NOTICE)).await;
        Err(format!(
            "connection lost after {} of {len} body bytes",
            len / 2
        ))
    }

    /// The request for `request`, all but its body, and the body of a PUT.
    fn build(&self, request: &Request) -> Result<(RequestBuilder, Option<Vec<u8>>), Outcome> {
        let (Ok(url), Ok(base)) = (Url::parse(&request.url), Url::parse(self.base)) else {
            return Err(Outcome::fails("the model asked for an unreadable URL"));
        };
        if url.origin() != base.origin() {
            return Err(Outcome::fails(format!(
                "the model sends to another host ({})",
                url.host_str().unwrap_or("?")
            )));
        }
        let body = self.body(request);
        let declared = request.content_length.and_then(|n| usize::try_from(n).ok());
        if request.method == Method::Put && declared != Some(body.len()) {
            return Err(Outcome::fails(
                "the model declares a Content-Length its body does not have",
            ));
        }
        let method = match request.method {
            Method::Put => reqwest::Method::PUT,
            Method::Get => reqwest::Method::GET,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.client.request(method, url);
        if let Some(range) = &request.content_range {
            builder = builder.header(CONTENT_RANGE, range);
        }
        if request.method != Method::Put {
            return Ok((builder, None));
        }
        // Every SDK writes `Content-Length` itself; hyper would leave it off an
        // empty body, which is exactly the case that matters (Python's re-send).
        builder = builder
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, body.len());
        Ok((builder, Some(body)))
    }

    /// The bytes of `request`'s body.
    fn body(&self, request: &Request) -> Vec<u8> {
        let b = request.body;
        let at = |n: u64| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(self.file.len())
        };
        let (start, end) = (at(b.offset), at(b.offset.saturating_add(b.len)));
        let mut bytes = self.file[start..end].to_vec();
        bytes.resize(bytes.len() + at(b.zero_fill.min(1 << 32)), 0);
        bytes
    }

    /// After a reported success: does the server hold the exact bytes?
    async fn judge(&self, item: &str) -> Outcome {
        let list = match self
            .graph_get(&format!("me/messages/{item}/attachments"))
            .await
        {
            Ok(a) if a.status == 200 => a.json_body().unwrap_or(Value::Null),
            Ok(a) => return Outcome::fails(format!("harness: attachments: {}", refusal(&a))),
            Err(e) => return Outcome::fails(format!("harness: attachments: {e}")),
        };
        let found = list["value"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == self.name.as_str())
            .and_then(|a| a["id"].as_str());
        let Some(attachment) = found else {
            return Outcome::fails("reports success, but the attachment is missing");
        };
        let bytes = match self
            .graph_get(&format!(
                "me/messages/{item}/attachments/{attachment}/$value"
            ))
            .await
        {
            Ok(a) if a.status == 200 => a.body,
            Ok(a) => return Outcome::fails(format!("harness: $value: {}", refusal(&a))),
            Err(e) => return Outcome::fails(format!("harness: $value: {e}")),
        };
        self.same_bytes(&bytes, "attachment")
    }

    async fn graph_post(&self, path: &str, body: &Value) -> Result<Answer, String> {
        let request = self
            .client
            .post(format!("{}/{path}", self.base))
            .bearer_auth(self.token)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        receive(request.send().await).await
    }

    async fn graph_get(&self, path: &str) -> Result<Answer, String> {
        let request = self
            .client
            .get(format!("{}/{path}", self.base))
            .bearer_auth(self.token);
        receive(request.send().await).await
    }
}

/// A whole answer, or the transport error that stopped it.
async fn receive(response: Result<reqwest::Response, reqwest::Error>) -> Result<Answer, String> {
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok(Answer::new(status, headers, body.to_vec()))
}

/// A refusal in a few words: the status and Graph's most specific error code
/// (`innerError.code`, else `code`).
pub fn refusal(answer: &Answer) -> String {
    let json = answer.json_body().unwrap_or(Value::Null);
    let error = &json["error"];
    let inner = error
        .get("innerError")
        .or_else(|| error.get("innererror"))
        .and_then(|i| i["code"].as_str());
    match inner.or_else(|| error["code"].as_str()) {
        Some(code) => format!("{} {code}", answer.status),
        None => answer.status.to_string(),
    }
}
