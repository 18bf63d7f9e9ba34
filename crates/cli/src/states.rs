//! Saved uploads and single sessions: `resume --list` and `--discard`, `status` and
//! `cancel`. A session is named by an upload state (its file, or its name as
//! `resume --list` shows it) or by its uploadUrl read from stdin or given whole.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;
use upsession_client_reqwest::{Client, Error, ResumeState, StateStore, UploadUrl};

use crate::{Failure, print_err, print_out};

/// Flags of `upsession status` and `upsession cancel`.
#[derive(Debug, Args)]
pub(crate) struct SessionArgs {
    /// The session: an upload state (its file, or its name as `upsession resume
    /// --list` shows it), `-` to read the uploadUrl from stdin, or the uploadUrl
    /// itself (a credential: on the command line it shows in `ps` and the shell's
    /// history).
    session: String,
    /// Where upload states are kept [default: the platform's state directory].
    #[arg(long, env = "UPSESSION_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The default directory of upload states.
pub(crate) fn default_state_dir() -> Result<PathBuf, Failure> {
    use etcetera::AppStrategy as _;
    let dirs = crate::app_dirs("resume state directory", "--state-dir")?;
    Ok(dirs
        .state_dir()
        .unwrap_or_else(|| dirs.data_dir())
        .join("uploads"))
}

/// `dir`, or the default state directory.
pub(crate) fn state_dir_or_default(dir: Option<&PathBuf>) -> Result<PathBuf, Failure> {
    dir.map_or_else(default_state_dir, |d| Ok(d.clone()))
}

/// The state file `reference` names: a path, or a name (with or without `.json`)
/// in `dir`.
pub(crate) fn state_path(reference: &str, dir: &Path) -> Result<PathBuf, Failure> {
    let given = PathBuf::from(reference);
    let candidates = [
        given.clone(),
        dir.join(reference),
        dir.join(format!("{reference}.json")),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Failure::new(format!(
            "no upload state `{}` (looked in {}); `upsession resume --list` shows the saved ones",
            given.display(),
            dir.display()
        ))
    })
}

/// A state's short name, as `resume --list` shows it and every command takes it.
pub(crate) fn state_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

/// `scheme://host:port` of a URL: the server a message names.
pub(crate) fn origin(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    url[..end].to_owned()
}

/// The uploadUrl `args.session` names, and the state file it came from.
fn session_url(args: &SessionArgs) -> Result<(UploadUrl, Option<PathBuf>), Failure> {
    let reference = args.session.trim();
    if reference == "-" {
        let mut text = String::new();
        if std::io::stdin().is_terminal() {
            print_err("upsession: reading the uploadUrl from stdin (end with Ctrl-D)");
        }
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(format!("cannot read the uploadUrl from stdin: {e}")))?;
        let url = text.trim();
        if crate::parse_http_url(url).is_err() {
            return Err(Failure::usage(
                "stdin holds no uploadUrl (an http:// or https:// URL)",
            ));
        }
        return Ok((UploadUrl::new(url), None));
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        crate::parse_http_url(reference).map_err(Failure::usage)?;
        return Ok((UploadUrl::new(reference), None));
    }
    let dir = state_dir_or_default(args.state_dir.as_ref())?;
    let path = state_path(reference, &dir)?;
    let state = ResumeState::load(&path).map_err(|e| Failure::new(e.to_string()))?;
    Ok((state.upload_url, Some(path)))
}

/// One sentence for a failed session request, naming the session's server.
fn session_failure(err: &Error, url: &UploadUrl) -> Failure {
    let server = origin(url.expose_secret());
    match err {
        Error::Http(why) => Failure::new(format!("cannot reach {server}: {why}")),
        _ => Failure::new(format!("{server}: {err}")),
    }
}

fn session_client() -> Result<Client, Failure> {
    Client::builder()
        .build()
        .map_err(|e| Failure::new(e.to_string()))
}

pub(crate) fn status(args: &SessionArgs) -> Result<(), Failure> {
    let (url, _) = session_url(args)?;
    let client = session_client()?;
    crate::block_on(async move {
        let status = client
            .status(&url)
            .await
            .map_err(|e| session_failure(&e, &url))?;
        let ranges = status.next_expected_ranges().to_vec();
        let expires = status.expiration_date_time();
        if args.json {
            print_out(
                &serde_json::json!({"nextExpectedRanges": ranges, "expirationDateTime": expires})
                    .to_string(),
            );
            return Ok(());
        }
        let left = status
            .expires()
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .map(|d| {
                let d = std::time::Duration::from_secs(d.as_secs());
                format!(" (in {})", humantime::format_duration(d))
            })
            .unwrap_or_default();
        if ranges.is_empty() {
            print_out("complete: the session expects no more bytes");
        } else {
            print_out(&format!("next expected ranges: {}", ranges.join(", ")));
        }
        print_out(&format!(
            "expires: {}{left}",
            expires.unwrap_or("not said by the server")
        ));
        Ok(())
    })
}

pub(crate) fn cancel(args: &SessionArgs) -> Result<(), Failure> {
    let (url, state) = session_url(args)?;
    let client = session_client()?;
    crate::block_on(async move {
        client
            .cancel(&url)
            .await
            .map_err(|e| session_failure(&e, &url))?;
        // The session is gone: its state could only fail a later `resume`.
        if let Some(path) = &state {
            StateStore::remove(path).map_err(|e| Failure::new(e.to_string()))?;
        }
        if args.json {
            print_out(&serde_json::json!({"cancelled": true}).to_string());
        } else {
            print_out("cancelled: the session is deleted");
        }
        Ok(())
    })
}

/// `upsession resume --list`: each saved upload, a line (or a JSON object) each.
pub(crate) fn list(dir: &Path, json: bool) -> Result<(), Failure> {
    let states = StateStore::new(dir)
        .list()
        .map_err(|e| Failure::new(e.to_string()))?;
    if states.is_empty() && !json {
        print_err(&format!(
            "upsession: no unfinished uploads in {}",
            dir.display()
        ));
    }
    for (path, state) in &states {
        let name = state_name(path);
        let line = match state {
            Ok(s) => {
                let server = origin(s.upload_url.expose_secret());
                if json {
                    serde_json::json!({
                        "state": name,
                        "stateFile": path.display().to_string(),
                        "file": s.file.path.display().to_string(),
                        "size": s.file.size,
                        "acknowledged": s.acknowledged,
                        "server": server,
                        "expires": s.expires,
                        "error": null,
                    })
                    .to_string()
                } else {
                    let percent = (s.acknowledged * 100)
                        .checked_div(s.file.size)
                        .unwrap_or(100);
                    let expires = s.expires.as_deref().unwrap_or("unknown");
                    format!(
                        "{name}: {} ({percent}% of {} bytes) to {server}, expires {expires}",
                        s.file.path.display(),
                        s.file.size
                    )
                }
            }
            Err(e) if json => serde_json::json!({
                "state": name,
                "stateFile": path.display().to_string(),
                "file": null,
                "error": e.to_string(),
            })
            .to_string(),
            Err(e) => format!("{name}: cannot be resumed: {e}"),
        };
        print_out(&line);
    }
    Ok(())
}

/// `upsession resume --discard STATE`: cancels the session (where its server still
/// answers) and removes the state.
pub(crate) fn discard(reference: &str, dir: &Path, json: bool) -> Result<(), Failure> {
    let path = state_path(reference, dir)?;
    let session = ResumeState::load(&path).ok().map(|s| s.upload_url);
    let cancelled = match &session {
        Some(url) => {
            let client = session_client()?;
            let url = url.clone();
            crate::block_on(async move { Ok(client.cancel(&url).await) })?
        }
        None => Err(Error::InvalidInput("the state cannot be read".into())),
    };
    StateStore::remove(&path).map_err(|e| Failure::new(e.to_string()))?;
    let name = state_name(&path);
    let note = match (&cancelled, &session) {
        (Ok(()), _) => "its session is cancelled".to_owned(),
        (Err(e), Some(url)) => format!(
            "its session on {} could not be cancelled ({e}); it expires on its own",
            origin(url.expose_secret())
        ),
        (Err(_), None) => "its state could not be read".to_owned(),
    };
    if json {
        print_out(
            &serde_json::json!({"state": name, "discarded": true, "cancelled": cancelled.is_ok()})
                .to_string(),
        );
    } else {
        print_out(&format!("discarded {name}: {note}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origin_is_the_scheme_host_and_port() {
        assert_eq!(
            origin("http://127.0.0.1:8080/up/abc?sig=secret"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            origin("https://outlook.office.com/api/v2.0?x"),
            "https://outlook.office.com"
        );
        assert_eq!(origin("https://h"), "https://h");
    }
}
