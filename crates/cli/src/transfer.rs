//! `upload`, `resume`, `status` and `cancel`: thin commands over the client crate.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{ArgGroup, Args};
use upsession_client_reqwest::{
    Client, Error, GRAPH_V1, ProgressSink, StateStore, Target, UploadOptions, UploadUrl, Uploaded,
    User,
};

use crate::progress::Display;
use crate::secret::Secret;
use crate::size::parse_size;
use crate::{Failure, print_err, print_out};

/// Where to reach Graph and as whom.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Graph base URL (with the version), e.g. http://127.0.0.1:8080/v1.0 for `upsession serve`.
    #[arg(long, env = "UPSESSION_BASE_URL", default_value = GRAPH_V1, value_parser = crate::parse_http_url)]
    base_url: String,
    /// Access token (for real Graph, an OAuth access token with Mail.ReadWrite or Calendars.ReadWrite).
    #[arg(long, env = "UPSESSION_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// Another user's mailbox (id or userPrincipalName) instead of /me.
    #[arg(long, env = "UPSESSION_USER")]
    user: Option<String>,
    /// Where resume states are kept [default: the platform's state directory].
    #[arg(long, env = "UPSESSION_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// Flags of `upsession upload`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["message", "event", "draft"])))]
pub(crate) struct UploadArgs {
    /// Files to attach.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Attach to this existing message.
    #[arg(long, value_name = "ID")]
    message: Option<String>,
    /// Attach to this existing event.
    #[arg(long, value_name = "ID")]
    event: Option<String>,
    /// Create a draft message with this subject and attach to it.
    #[arg(long, value_name = "SUBJECT")]
    draft: Option<String>,
    #[command(flatten)]
    conn: Connection,
    /// Bytes per request (Graph takes at most 4 MB; OneDrive wants multiples of 320KiB).
    #[arg(long, default_value = "3.75MiB", value_parser = parse_chunk_size)]
    chunk_size: u64,
    /// MIME type of the attachments [default: guessed from the file name].
    #[arg(long)]
    content_type: Option<String>,
    /// Attachment name [default: the file name]; only with a single file.
    #[arg(long)]
    name: Option<String>,
    /// Make the attachment inline (shown in the body, referenced by --content-id).
    #[arg(long, requires = "content_id")]
    inline: bool,
    /// The content id an HTML body refers to (`cid:...`), for --inline.
    #[arg(long, requires = "inline")]
    content_id: Option<String>,
    /// Print one JSON object per file on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// How many files upload at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// Flags of `upsession resume`.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// A state file printed by `upload`; without one, every unfinished upload continues.
    state_file: Option<PathBuf>,
    #[command(flatten)]
    conn: Connection,
    /// Print one JSON object per file on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Flags of `upsession status` and `upsession cancel`.
#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// The session's uploadUrl (a credential: keep it private).
    upload_url: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_chunk_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the chunk size must be at least 1 byte".to_owned()),
        n => Ok(n),
    }
}

fn default_state_dir() -> Result<PathBuf, Failure> {
    use etcetera::AppStrategy as _;
    let dirs = crate::app_dirs("resume state directory", "--state-dir")?;
    Ok(dirs
        .state_dir()
        .unwrap_or_else(|| dirs.data_dir())
        .join("uploads"))
}

fn client(
    conn: &Connection,
    chunk_size: Option<u64>,
    concurrency: usize,
) -> Result<(Client, PathBuf), Failure> {
    let state_dir = match &conn.state_dir {
        Some(d) => d.clone(),
        None => default_state_dir()?,
    };
    let mut builder = Client::builder()
        .base_url(conn.base_url.clone())
        .state_dir(state_dir.clone())
        .concurrency(concurrency.max(1));
    if let Some(token) = &conn.token {
        builder = builder.token(token.clone().expose());
    }
    if let Some(user) = &conn.user {
        builder = builder.user(User::id(user.clone()));
    }
    if let Some(size) = chunk_size {
        builder = builder.fragment_size(size);
    }
    let client = builder.build().map_err(|e| explain(&e, &conn.base_url))?;
    Ok((client, state_dir))
}

/// One sentence for an error, with what to do where the cause is common.
fn explain(err: &Error, base_url: &str) -> Failure {
    let text = err.to_string();
    let status = err.remote().map(|r| r.status.as_u16());
    Failure::new(match (err, status) {
        (_, Some(401)) => {
            format!("the access token was refused ({text}); check --token or UPSESSION_TOKEN")
        }
        (Error::NoToken, _) => {
            "an access token is needed: pass --token or set UPSESSION_TOKEN".into()
        }
        (Error::Http(why), _) if why.starts_with("TLS") => {
            format!("cannot reach {base_url} securely: {why}")
        }
        (Error::Http(_), _) => {
            format!("cannot reach {base_url} ({text}); is the server running and the URL right?")
        }
        _ => text,
    })
}

fn print_result(file: &str, result: &Uploaded, json: bool) {
    let line = if json {
        serde_json::json!({
            "file": file,
            "name": result.name,
            "size": result.size,
            "attachmentId": result.attachment_id,
            "location": result.location,
            "sha256": result.sha256,
        })
        .to_string()
    } else {
        format!(
            "{file}: attachment {} at {}",
            result.attachment_id.as_deref().unwrap_or("(id not given)"),
            result.location.as_deref().unwrap_or("(location not given)")
        )
    };
    print_out(&line);
}

/// Runs uploads until they finish or Ctrl-C; the state files make Ctrl-C resumable.
async fn until_interrupted<T>(
    work: impl Future<Output = T>,
    state_dir: &Path,
) -> Result<T, Failure> {
    tokio::select! {
        result = work => Ok(result),
        _ = tokio::signal::ctrl_c() => Err(Failure::new(format!(
            "interrupted; the upload state is saved in {}: run `upsession resume` to continue",
            state_dir.display()
        ))),
    }
}

fn summarize(failures: usize, total: usize) -> Result<(), Failure> {
    match failures {
        0 => Ok(()),
        1 if total == 1 => Err(Failure::new(String::new())), // the one error is already printed
        n => Err(Failure::new(format!("{n} of {total} uploads failed"))),
    }
}

pub(crate) fn upload(args: UploadArgs) -> Result<(), Failure> {
    if args.name.is_some() && args.files.len() > 1 {
        return Err(Failure::usage(
            "--name names one attachment; it cannot be used with several files",
        ));
    }
    for f in &args.files {
        if !f.is_file() {
            return Err(Failure::new(format!(
                "{} is not a readable file",
                f.display()
            )));
        }
    }
    let (client, state_dir) = client(&args.conn, Some(args.chunk_size), args.concurrency)?;
    let display = Display::new(args.json);
    crate::block_on(async move {
        let target = match (&args.message, &args.event, &args.draft) {
            (Some(id), _, _) => Target::message(id.clone()),
            (_, Some(id), _) => Target::event(id.clone()),
            (_, _, Some(subject)) => client
                .create_draft(subject)
                .await
                .map_err(|e| explain(&e, &args.conn.base_url))?,
            _ => unreachable!("clap requires one target"),
        };
        let files: Vec<(PathBuf, UploadOptions)> = args
            .files
            .iter()
            .map(|f| {
                let mut o = UploadOptions::new().progress(display.sink());
                if let Some(n) = &args.name {
                    o = o.name(n.clone());
                }
                if let Some(t) = &args.content_type {
                    o = o.content_type(t.clone());
                }
                if let Some(cid) = &args.content_id {
                    o = o.inline(cid.clone());
                }
                (f.clone(), o)
            })
            .collect();
        let results = until_interrupted(client.upload_many(&target, files), &state_dir).await?;
        display.finish();
        let mut failures = 0;
        for (file, result) in args.files.iter().zip(results) {
            match result {
                Ok(done) => print_result(&file.display().to_string(), &done, args.json),
                Err(e) => {
                    failures += 1;
                    print_err(&format!(
                        "upsession: {}: {}",
                        file.display(),
                        explain(&e, &args.conn.base_url).message
                    ));
                }
            }
        }
        summarize(failures, args.files.len())
    })
}

pub(crate) fn resume(args: ResumeArgs) -> Result<(), Failure> {
    let (client, state_dir) = client(&args.conn, None, 4)?;
    let display = Display::new(args.json);
    crate::block_on(async move {
        let sink: ProgressSink = display.sink();
        let results = match &args.state_file {
            Some(path) => {
                let one = until_interrupted(client.resume(path, &sink), &state_dir).await?;
                vec![(path.clone(), one)]
            }
            None => until_interrupted(
                client.resume_all(&StateStore::new(&state_dir), &sink),
                &state_dir,
            )
            .await?
            .map_err(|e| explain(&e, &args.conn.base_url))?,
        };
        display.finish();
        if results.is_empty() {
            print_err(&format!(
                "upsession: nothing to resume in {}",
                state_dir.display()
            ));
            return Ok(());
        }
        let mut failures = 0;
        for (path, result) in &results {
            match result {
                Ok(done) => print_result(&path.display().to_string(), done, args.json),
                Err(e) => {
                    failures += 1;
                    print_err(&format!(
                        "upsession: {}: {}",
                        path.display(),
                        explain(e, &args.conn.base_url).message
                    ));
                }
            }
        }
        summarize(failures, results.len())
    })
}

fn session_client() -> Result<Client, Failure> {
    Client::builder()
        .build()
        .map_err(|e| Failure::new(e.to_string()))
}

pub(crate) fn status(args: &SessionArgs) -> Result<(), Failure> {
    let client = session_client()?;
    let url = UploadUrl::new(args.upload_url.clone());
    crate::block_on(async move {
        let status = client
            .status(&url)
            .await
            .map_err(|e| explain(&e, &url.redacted().to_string()))?;
        let ranges = status.next_expected_ranges().to_vec();
        let expires = status
            .expiration_date_time()
            .unwrap_or("unknown")
            .to_owned();
        if args.json {
            print_out(
                &serde_json::json!({"nextExpectedRanges": ranges, "expirationDateTime": expires})
                    .to_string(),
            );
        } else {
            let left = status
                .expires()
                .and_then(|e| e.duration_since(SystemTime::now()).ok())
                .map(|d| {
                    format!(
                        " (in {})",
                        humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                    )
                })
                .unwrap_or_default();
            if ranges.is_empty() {
                print_out("complete: the session expects no more bytes");
            } else {
                print_out(&format!("next expected ranges: {}", ranges.join(", ")));
            }
            print_out(&format!("expires: {expires}{left}"));
        }
        Ok(())
    })
}

pub(crate) fn cancel(args: &SessionArgs) -> Result<(), Failure> {
    let client = session_client()?;
    let url = UploadUrl::new(args.upload_url.clone());
    crate::block_on(async move {
        client
            .cancel(&url)
            .await
            .map_err(|e| explain(&e, &url.redacted().to_string()))?;
        if args.json {
            print_out(&serde_json::json!({"cancelled": true}).to_string());
        } else {
            print_out("cancelled: the session is deleted");
        }
        Ok(())
    })
}
