//! `upload` and `resume`: thin commands over the client crate.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use clap::{ArgGroup, Args};
use upsession_client_reqwest::{
    Client, Error, GRAPH_V1, ProgressSink, ResumeState, StateStore, Target, UploadOptions,
    Uploaded, User,
};

use upsession_core::drive::ConflictBehavior;

use crate::progress::Display;
use crate::secret::Secret;
use crate::size::parse_size;
use crate::states::{origin, state_name, state_path};
use crate::{Failure, print_err, print_out};

/// Where to reach Graph and as whom.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Graph base URL (with the version), e.g. http://127.0.0.1:8080/v1.0 for `upsession serve`.
    #[arg(long, env = "UPSESSION_BASE_URL", default_value = GRAPH_V1, value_parser = crate::parse_http_url)]
    base_url: String,
    /// Access token (for real Graph, an OAuth access token with Mail.ReadWrite or Calendars.ReadWrite).
    #[arg(
        long,
        env = "UPSESSION_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<Secret>,
    /// Another user's mailbox (id or userPrincipalName) instead of /me.
    #[arg(long, env = "UPSESSION_USER")]
    user: Option<String>,
    /// Where resume states are kept [default: the platform's state directory].
    #[arg(long, env = "UPSESSION_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// Flags of `upsession upload`.
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["message", "event", "draft", "drive"])))]
pub(crate) struct UploadArgs {
    /// Files to upload.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Upload to the user's OneDrive instead: to this path below the drive's root
    /// (`reports/q3.pdf`), or into this folder (a path ending in `/`, or with
    /// several files) under each file's name. Folders are made as needed.
    #[arg(long, value_name = "PATH")]
    drive: Option<String>,
    /// With --drive, when the name is taken: `fail`, `replace` or `rename`
    /// (`name 1.ext`).
    #[arg(long, default_value = "replace", value_parser = parse_conflict, requires = "drive")]
    conflict: ConflictBehavior,
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
    /// Take each file's SHA-256 too (in the same read) and print it. Every upload
    /// takes its file's CRC-64/NVME, which resume checks; a drive file's SHA-256
    /// is taken anyway.
    #[arg(long)]
    sha256: bool,
    /// How many files upload at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Send as fast as the server takes it. By default uploads to Microsoft Graph
    /// keep to Outlook's documented budget (150 MB per 5 minutes per mailbox), so
    /// that a batch is not throttled to a stop; other servers are never paced.
    #[arg(long)]
    no_pacing: bool,
}

fn parse_conflict(value: &str) -> Result<ConflictBehavior, String> {
    ConflictBehavior::by_name(value)
        .ok_or_else(|| format!("`{value}` is not fail, replace or rename"))
}

/// The drive target of each of `files` for `--drive path`: the path itself for
/// one file, else the folder `path` (`/` or nothing: the root) under each file's
/// name.
fn drive_targets(path: &str, files: &[PathBuf], conflict: ConflictBehavior) -> Vec<Target> {
    let folder = path.ends_with('/') || path.is_empty() || files.len() > 1;
    files
        .iter()
        .map(|f| {
            let name = f
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let at = if folder {
                format!("{}/{name}", path.trim_end_matches('/'))
            } else {
                path.to_owned()
            };
            Target::drive(&at, conflict)
        })
        .collect()
}

/// Flags of `upsession resume`. Each upload continues on the server and in the
/// mailbox its state names: there is no `--base-url` or `--user` to change them.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// An upload state (its file, or its name as `--list` shows it); without one,
    /// every unfinished upload continues.
    state: Option<String>,
    /// List the unfinished uploads, then stop.
    #[arg(long, conflicts_with_all = ["state", "discard"])]
    list: bool,
    /// Forget an unfinished upload: cancel its session (where its server answers)
    /// and delete its state.
    #[arg(long, value_name = "STATE", conflicts_with = "state")]
    discard: Option<String>,
    /// Access token, for the requests that go to Graph rather than to the session
    /// (asking the item whether an upload whose end was lost completed).
    #[arg(
        long,
        env = "UPSESSION_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Option<Secret>,
    /// Where resume states are kept [default: the platform's state directory].
    #[arg(long, env = "UPSESSION_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print one JSON object per file on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Not taken: an upload resumes on the server that created it.
    #[arg(long, hide = true)]
    base_url: Option<String>,
    /// Not taken: an upload resumes in the mailbox it was started for.
    #[arg(long, hide = true)]
    user: Option<String>,
}

fn parse_chunk_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the chunk size must be at least 1 byte".to_owned()),
        n => Ok(n),
    }
}

fn client(
    conn: &Connection,
    chunk_size: Option<u64>,
    concurrency: usize,
    no_pacing: bool,
) -> Result<(Client, PathBuf), Failure> {
    let state_dir = crate::states::state_dir_or_default(conn.state_dir.as_ref())?;
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
    if no_pacing {
        builder = builder.without_pacing();
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

/// One file's outcome, on stdout (success) or stderr (failure); with `--json`, one
/// object on stdout either way, `null` where a value is unknown.
fn report(file: &str, state: Option<&str>, result: &Result<Uploaded, Failure>, json: bool) {
    if json {
        let mut line = serde_json::json!({
            "file": file,
            "name": null,
            "size": null,
            "attachmentId": null,
            "location": null,
            "crc64": null,
            "sha256": null,
            "error": null,
        });
        if let Some(state) = state {
            line["state"] = state.into();
        }
        match result {
            Ok(done) => {
                line["name"] = done.name.clone().into();
                line["size"] = done.size.into();
                line["attachmentId"] = done.attachment_id.clone().into();
                line["location"] = done.location.clone().into();
                line["crc64"] = done.crc64.clone().into();
                line["sha256"] = done.sha256.clone().into();
                if let Some(item) = &done.drive_item {
                    line["driveItem"] = serde_json::to_value(item).unwrap_or_default();
                }
            }
            Err(failure) => line["error"] = failure.message.clone().into(),
        }
        print_out(&line.to_string());
        return;
    }
    match result {
        Ok(done) if done.drive_item.is_some() => {
            let item = done.drive_item.as_ref().expect("a drive item");
            let folder = item
                .parent_reference
                .as_ref()
                .map_or("", |p| p.path.as_str());
            print_out(&format!(
                "{file}: drive file {folder}/{} ({}), {} bytes, hashes checked",
                item.name, item.id, item.size
            ));
        }
        Ok(done) => print_out(&format!(
            "{file}: attachment {} at {}{}",
            done.attachment_id.as_deref().unwrap_or("(id not given)"),
            done.location.as_deref().unwrap_or("(location not given)"),
            done.sha256
                .as_deref()
                .map_or_else(String::new, |sha| format!(", SHA-256 {sha}"))
        )),
        Err(failure) => print_err(&format!("upsession: {file}: {}", failure.message)),
    }
}

/// Runs uploads until they finish or Ctrl-C (exit 130). The message says that the
/// uploads can be resumed only when a state was saved for them: the states in
/// `store` that were not there `before`.
async fn until_interrupted<T>(
    work: impl Future<Output = T>,
    store: &StateStore,
    before: &HashSet<PathBuf>,
) -> Result<T, Failure> {
    tokio::select! {
        result = work => Ok(result),
        _ = tokio::signal::ctrl_c() => {
            let saved = store.list().map_or(0, |states| {
                states.iter().filter(|(p, s)| s.is_ok() && !before.contains(p)).count()
            });
            let dir = store.dir().display();
            Err(Failure::interrupted(if saved == 0 && before.is_empty() {
                "interrupted before any upload session existed; nothing was saved".to_owned()
            } else if saved == 0 {
                format!("interrupted; the upload states are kept in {dir}: run `upsession resume` to continue")
            } else {
                format!("interrupted; {saved} upload state(s) saved in {dir}: run `upsession resume` to continue")
            }))
        }
    }
}

/// The state files in `store` now.
fn present(store: &StateStore) -> HashSet<PathBuf> {
    store
        .list()
        .map(|states| states.into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default()
}

fn summarize(failures: usize, total: usize) -> Result<(), Failure> {
    match failures {
        0 => Ok(()),
        1 if total == 1 => Err(Failure::new(String::new())), // the one error is already printed
        n => Err(Failure::new(format!("{n} of {total} uploads failed"))),
    }
}

fn upload_options(args: &UploadArgs, sink: &ProgressSink) -> UploadOptions {
    let mut o = UploadOptions::new()
        .progress(sink.clone())
        .sha256(args.sha256);
    if let Some(n) = &args.name {
        o = o.name(n.clone());
    }
    if let Some(t) = &args.content_type {
        o = o.content_type(t.clone());
    }
    if let Some(cid) = &args.content_id {
        o = o.inline(cid.clone());
    }
    o
}

pub(crate) fn upload(args: &UploadArgs) -> Result<(), Failure> {
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
    let conn = &args.conn;
    let (client, state_dir) = client(
        conn,
        Some(args.chunk_size),
        args.concurrency,
        args.no_pacing,
    )?;
    let display = Display::new(args.json);
    let store = StateStore::new(&state_dir);
    let before = present(&store);
    crate::block_on(async {
        let targets = match (&args.message, &args.event, &args.draft, &args.drive) {
            (Some(id), ..) => vec![Target::message(id.clone()); args.files.len()],
            (_, Some(id), ..) => vec![Target::event(id.clone()); args.files.len()],
            (_, _, Some(subject), _) => {
                let draft = client
                    .create_draft(subject)
                    .await
                    .map_err(|e| explain(&e, &conn.base_url))?;
                vec![draft; args.files.len()]
            }
            (.., Some(path)) => drive_targets(path, &args.files, args.conflict),
            _ => unreachable!("clap requires one target"),
        };
        let sink = display.sink();
        let files: Vec<(Target, PathBuf, UploadOptions)> = targets
            .into_iter()
            .zip(&args.files)
            .map(|(target, f)| (target, f.clone(), upload_options(args, &sink)))
            .collect();
        let results = until_interrupted(client.upload_files(files), &store, &before).await;
        display.finish();
        let results = results?;
        let mut failures = 0;
        for (file, result) in args.files.iter().zip(results) {
            let result = result.map_err(|e| explain(&e, &conn.base_url));
            failures += usize::from(result.is_err());
            report(&file.display().to_string(), None, &result, args.json);
        }
        summarize(failures, args.files.len())
    })
}

/// Whether a state can never be resumed as it is (its file changed, or the state is
/// unreadable): `--discard` is the way out, not another `resume`.
fn stuck(err: &Error) -> bool {
    matches!(err, Error::FileChanged { .. } | Error::InvalidState { .. })
}

pub(crate) fn resume(args: &ResumeArgs) -> Result<(), Failure> {
    if args.base_url.is_some() || args.user.is_some() {
        return Err(Failure::usage(
            "resume continues each upload on the server and in the mailbox its state names; \
             --base-url and --user cannot change them",
        ));
    }
    let dir = crate::states::state_dir_or_default(args.state_dir.as_ref())?;
    if args.list {
        return crate::states::list(&dir, args.json);
    }
    if let Some(reference) = &args.discard {
        return crate::states::discard(reference, &dir, args.json);
    }
    let conn = Connection {
        base_url: GRAPH_V1.to_owned(),
        token: args.token.clone(),
        user: None,
        state_dir: Some(dir.clone()),
    };
    let (client, _) = client(&conn, None, 4, false)?;
    let store = StateStore::new(&dir);
    let paths: Vec<PathBuf> = match &args.state {
        Some(reference) => vec![state_path(reference, &dir)?],
        None => store
            .list()
            .map_err(|e| Failure::new(e.to_string()))?
            .into_iter()
            .map(|(p, _)| p)
            .collect(),
    };
    if paths.is_empty() {
        print_err(&format!(
            "upsession: nothing to resume in {}",
            dir.display()
        ));
        return Ok(());
    }
    // Each state's file and server, read before the upload may remove the state.
    let known: HashMap<PathBuf, (String, String)> = paths
        .iter()
        .filter_map(|p| {
            let s = ResumeState::load(p).ok()?;
            let file = s.file.path.display().to_string();
            Some((p.clone(), (file, origin(s.upload_url.expose_secret()))))
        })
        .collect();
    let display = Display::new(args.json);
    let before = present(&store);
    crate::block_on(async {
        let sink: ProgressSink = display.sink();
        let work = async {
            match &args.state {
                Some(_) => Ok(vec![(
                    paths[0].clone(),
                    client.resume(&paths[0], &sink).await,
                )]),
                None => client.resume_all(&store, &sink).await,
            }
        };
        let results = until_interrupted(work, &store, &before).await;
        display.finish();
        let mut failures = 0;
        let results = results?.map_err(|e| Failure::new(e.to_string()))?;
        for (path, result) in results {
            let (file, server) = known
                .get(&path)
                .cloned()
                .unwrap_or_else(|| (path.display().to_string(), String::new()));
            let name = state_name(&path);
            let result = result.map_err(|e| {
                let mut failure = explain(&e, &server);
                if stuck(&e) {
                    // It fails every `resume` until the user decides.
                    failure.message = format!(
                        "{}; `upsession resume --discard {name}` forgets it",
                        failure.message
                    );
                }
                failure
            });
            failures += usize::from(result.is_err());
            report(&file, Some(&name), &result, args.json);
        }
        summarize(failures, paths.len())
    })
}
