//! The `upsession` binary: serve a Graph-compatible upload endpoint, and (with the
//! client) upload, resume, inspect and cancel upload sessions.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage. Errors are one
//! sentence on stderr.

mod serve;
mod size;

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
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure worth one sentence on stderr and exit code 1.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
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
        Err(Failure(message)) => {
            eprintln!("upsession: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `fut` on a multi-threaded tokio runtime.
pub(crate) fn block_on<T>(fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start the async runtime: {e}")))?
        .block_on(fut)
}
