//! The `upsession` binary: serve a Graph-compatible upload endpoint, and (with the
//! client) upload, resume, inspect and cancel upload sessions.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage. Errors are one
//! sentence on stderr.

mod progress;
mod serve;
mod size;
mod transfer;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Resumable large-file upload sessions in the style of Microsoft Graph.
#[derive(Debug, Parser)]
#[command(name = "upsession", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Graph-compatible upload server (drafts, events, upload sessions).
    Serve(serve::ServeArgs),
    /// Attach files to a message or an event through upload sessions.
    Upload(transfer::UploadArgs),
    /// Continue interrupted uploads (after Ctrl-C, a crash or a reboot).
    Resume(transfer::ResumeArgs),
    /// Show an upload session's expected ranges and expiry.
    Status(transfer::SessionArgs),
    /// Cancel (delete) an upload session.
    Cancel(transfer::SessionArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure worth one sentence on stderr and exit code 1 (or 2 for bad usage).
#[derive(Debug)]
pub(crate) struct Failure {
    /// The sentence; empty when it was already printed.
    pub(crate) message: String,
    code: ExitCode,
}

impl Failure {
    /// The operation failed: exit code 1.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: ExitCode::FAILURE,
        }
    }

    /// Bad usage: exit code 2, as clap's own usage errors.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: ExitCode::from(2),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Upload(args) => transfer::upload(args),
        Command::Resume(args) => transfer::resume(args),
        Command::Status(args) => transfer::status(&args),
        Command::Cancel(args) => transfer::cancel(&args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "upsession",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            // Empty when the failure was already reported, file by file.
            if !message.is_empty() {
                eprintln!("upsession: {message}");
            }
            code
        }
    }
}

/// The platform's directories for upsession (XDG on Linux: `~/.local/share/upsession`
/// for data, `~/.local/state/upsession` for state).
pub(crate) fn app_dirs(what: &str, flag: &str) -> Result<impl etcetera::AppStrategy, Failure> {
    etcetera::choose_app_strategy(etcetera::AppStrategyArgs {
        top_level_domain: "org".into(),
        author: "upsession".into(),
        app_name: "upsession".into(),
    })
    .map_err(|_| {
        Failure::new(format!(
            "cannot find a home directory for the default {what}; pass {flag}"
        ))
    })
}

/// Runs `fut` on a multi-threaded tokio runtime.
pub(crate) fn block_on<T>(fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
}
