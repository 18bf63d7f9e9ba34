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

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Client, Url};
use serde_json::{Value, json};

use super::{Answer, Method, Request, SdkModel, Step};

/// The longest a [`Step::Wait`] is really slept.
pub const MAX_WAIT: Duration = Duration::from_millis(5);
/// The most requests one upload may make before it is judged stuck.
pub const MAX_STEPS: u32 = 10_000;
/// The longest one upload may take.
pub const MAX_TIME: Duration = Duration::from_secs(300);

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
    let mut builder = Client::builder()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    if let Some(pem) = root_cert_pem {
        match reqwest::Certificate::from_pem(pem.as_bytes()) {
            Ok(cert) => builder = builder.add_root_certificate(cert),
            Err(e) => return Outcome::fails(format!("harness: bad certificate: {e}")),
        }
    }
    match builder.build() {
        Ok(client) => run_with(&client, model, base_url, token, file).await,
        Err(e) => Outcome::fails(format!("harness: cannot build the HTTP client: {e}")),
    }
}

/// [`run`] with a client of the caller's.
pub async fn run_with(
    client: &Client,
    model: &mut dyn SdkModel,
    base_url: &str,
    token: &str,
    file: &[u8],
) -> Outcome {
    let upload = Upload {
        client,
        base: base_url.trim_end_matches('/'),
        token,
        file,
        name: format!("{}-{}.bin", model.profile().name, file.len()),
    };
    match tokio::time::timeout(MAX_TIME, upload.run(model)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::fails(format!("no end within {} s", MAX_TIME.as_secs())),
    }
}

/// One upload's fixed parts.
struct Upload<'a> {
    client: &'a Client,
    base: &'a str,
    token: &'a str,
    file: &'a [u8],
    name: String,
}

impl Upload<'_> {
    async fn run(&self, model: &mut dyn SdkModel) -> Outcome {
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
        let session = match self
            .graph_post(
                &format!("me/messages/{id}/attachments/createUploadSession"),
                &item,
            )
            .await
        {
            Ok(a) if a.is_success() => a,
            Ok(a) => {
                return Outcome::fails(format!("createUploadSession refused: {}", refusal(&a)));
            }
            Err(e) => return Outcome::fails(format!("harness: createUploadSession: {e}")),
        };
        let size = u64::try_from(self.file.len()).unwrap_or(u64::MAX);
        let step = model.start(SystemTime::now(), &session, size);
        match self.pump(model, step).await {
            Ok(()) => self.judge(&id).await,
            Err(outcome) => outcome,
        }
    }

    /// Drives the model until it returns; `Err` with the verdict when it fails.
    async fn pump(&self, model: &mut dyn SdkModel, mut step: Step) -> Result<(), Outcome> {
        let mut first_refusal: Option<String> = None;
        let started = Instant::now();
        for _ in 0..MAX_STEPS {
            step = match step {
                Step::Send(request) => match self.send(&request).await? {
                    Ok(answer) => {
                        if answer.status >= 400 && first_refusal.is_none() {
                            first_refusal = Some(refusal(&answer));
                        }
                        model.on_answer(SystemTime::now(), &answer)
                    }
                    Err(what) => model.on_transport_error(&what),
                },
                Step::Wait(d) => {
                    tokio::time::sleep(d.min(MAX_WAIT)).await;
                    model.on_wait_over()
                }
                Step::Done { .. } => return Ok(()),
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

    /// Sends `request` as the SDK would. The outer `Err` is a verdict (the model
    /// asked for something no HTTP stack sends); the inner one a transport error.
    async fn send(&self, request: &Request) -> Result<Result<Answer, String>, Outcome> {
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
        if request.method == Method::Put {
            // Every SDK writes `Content-Length` itself; hyper would leave it off an
            // empty body, which is exactly the case that matters (Python's re-send).
            builder = builder
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, body.len())
                .body(body);
        }
        Ok(receive(builder.send().await).await)
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
        if bytes == self.file {
            Outcome::Works
        } else if bytes.len() < self.file.len() {
            Outcome::fails(format!(
                "reports success, but the attachment is short ({} of {} B)",
                bytes.len(),
                self.file.len()
            ))
        } else {
            Outcome::fails("reports success, but the attachment's bytes differ")
        }
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
