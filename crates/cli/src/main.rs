//! The `upsession` binary: serve a Graph-compatible upload endpoint, and (with the
//! client) upload, resume, inspect and cancel upload sessions.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage, 130 interrupted
//! (Ctrl-C). Errors are one sentence on stderr.
//!
//! Features: `server` (`serve`), `conformance` (`conformance`), `client` (`upload`,
//! `resume`, `status`, `cancel`); all by default. A client-only build
//! (`--no-default-features --features client`) links no server, S3 or PostgreSQL
//! crate.

#[cfg(feature = "conformance")]
mod conformance;
#[cfg(feature = "client")]
mod progress;
mod secret;
#[cfg(feature = "server")]
mod serve;
mod size;
#[cfg(feature = "client")]
mod states;
#[cfg(feature = "server")]
mod token;
#[cfg(feature = "client")]
mod transfer;

use std::ffi::OsString;
use std::io::Write as _;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, Subcommand};

/// Resumable large-file upload sessions in the style of Microsoft Graph.
#[derive(Debug, Parser)]
#[command(name = "upsession", version, about, long_about = None)]
struct Cli {
    /// More log lines on stderr: -v for debug, -vv for trace (RUST_LOG, when set,
    /// decides instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Graph-compatible upload server (drafts, events, upload sessions).
    #[cfg(feature = "server")]
    Serve(Box<serve::ServeArgs>),
    /// Attach files to a message or an event (upload sessions for large files, one
    /// request for small ones).
    #[cfg(feature = "client")]
    Upload(transfer::UploadArgs),
    /// Continue interrupted uploads (after Ctrl-C, a crash or a reboot); list or
    /// discard them.
    #[cfg(feature = "client")]
    Resume(transfer::ResumeArgs),
    /// Show an upload session's expected ranges and expiry.
    #[cfg(feature = "client")]
    Status(states::SessionArgs),
    /// Cancel (delete) an upload session.
    #[cfg(feature = "client")]
    Cancel(states::SessionArgs),
    /// Manage the tokens of `serve --auth tokens FILE` (`token add`).
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check any Graph-style upload server against the conformance rules, or serve
    /// the fault-injecting fake Graph to try a client against.
    #[cfg(feature = "conformance")]
    #[command(subcommand)]
    Conformance(conformance::ConformanceCommand),
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

    /// Stopped by Ctrl-C: exit code 130, as a shell reports a SIGINT.
    #[cfg(feature = "client")]
    pub(crate) fn interrupted(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: ExitCode::from(130),
        }
    }
}

/// Log lines go to stderr: `RUST_LOG` when set, else `default` raised by `-v`.
fn init_logging(verbose: u8, default: &str) {
    let level = match verbose {
        0 => default,
        1 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => tracing_subscriber::EnvFilter::new(env),
        _ => tracing_subscriber::EnvFilter::new(level),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(e.to_string())
    }
}

/// Writes `text` to stdout, ending the line if it does not: a closed stdout
/// (`| head -1`) is not worth a panic.
pub(crate) fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// [`print_out`] for stderr.
pub(crate) fn print_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = err.write_all(b"\n");
    }
}

/// A flag that must be an absolute http(s) URL with a host.
pub(crate) fn parse_http_url(s: &str) -> Result<String, String> {
    let bad = || format!("`{s}` is not an http:// or https:// URL with a host");
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if !upsession_core::route::is_host_and_port(authority) {
        return Err(bad());
    }
    Ok(s.to_owned())
}

/// clap's usage error as one line: its message and tips without the usage block,
/// and where to read more.
fn usage_line(err: &clap::Error, args: &[OsString]) -> String {
    // `upsession upload --help` when the subcommand is known, else `upsession --help`.
    let mut command = Cli::command();
    let mut path = String::new();
    for arg in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if arg.starts_with('-') {
            continue;
        }
        let Some(sub) = command.find_subcommand(arg).cloned() else {
            break;
        };
        path.push(' ');
        path.push_str(arg);
        command = sub;
    }
    let see = format!("(see `upsession{path} --help`)");
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let names: Vec<&str> = command
            .get_subcommands()
            .map(clap::Command::get_name)
            .filter(|n| *n != "help")
            .collect();
        if !names.is_empty() {
            return format!("upsession: name a command: {} {see}", names.join(", "));
        }
    }
    // clap writes the message, then paragraphs of tips, the usage and a pointer to
    // --help: the message and its tips are kept, on one line.
    let rendered = err.render().to_string();
    let mut paragraphs = rendered.split("\n\n").map(str::trim);
    let mut text = paragraphs.next().unwrap_or_default().to_owned();
    for tip in paragraphs.filter(|p| p.starts_with("tip:")) {
        text.push_str("; ");
        text.push_str(tip);
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("upsession: {text} {see}")
}

fn main() -> ExitCode {
    // As given: file names need not be UTF-8.
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            return match err.kind() {
                // Help and version go to stdout as asked.
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    // Styled on a terminal; a closed stdout is not an error here.
                    let _ = err.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    print_err(&usage_line(&err, &args));
                    ExitCode::from(2)
                }
            };
        }
    };
    // A server logs what it serves; a client command only what goes wrong, as the
    // progress display already tells the rest.
    #[cfg(feature = "server")]
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    #[cfg(not(feature = "server"))]
    let default_level = "warn";
    init_logging(cli.verbose, default_level);
    let result = match cli.command {
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(*args),
        #[cfg(feature = "server")]
        Command::Token(command) => token::run(command),
        #[cfg(feature = "client")]
        Command::Upload(args) => transfer::upload(&args),
        #[cfg(feature = "client")]
        Command::Resume(args) => transfer::resume(&args),
        #[cfg(feature = "client")]
        Command::Status(args) => states::status(&args),
        #[cfg(feature = "client")]
        Command::Cancel(args) => states::cancel(&args),
        #[cfg(feature = "conformance")]
        Command::Conformance(command) => conformance::run(command),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "upsession", &mut script);
            print_out(&String::from_utf8_lossy(&script));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            // Empty when the failure was already reported, file by file.
            if !message.is_empty() {
                print_err(&format!("upsession: {message}"));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use clap::Parser as _;

    use super::{Cli, parse_http_url};

    #[test]
    fn parsed_flags_print_no_secret() {
        let lines: [&[&str]; 4] = [
            &[
                "serve",
                "--token",
                "bearer-secret",
                "--admin-token",
                "admin-secret",
                "--metrics-token",
                "metrics-secret",
                "--store",
                "s3://b",
                "--meta",
                "postgres://u:db-password@h/db",
            ],
            &["upload", "f", "--draft", "s", "--token", "client-secret"],
            &[
                "conformance",
                "server",
                "--base-url",
                "http://127.0.0.1:1/v1.0",
                "--token",
                "checker-secret",
            ],
            &["conformance", "fake", "--token", "fake-secret"],
        ];
        for line in lines {
            let cli = Cli::try_parse_from(std::iter::once("upsession").chain(line.iter().copied()))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let shown = format!("{cli:?}");
            assert!(shown.contains("<redacted>"), "{shown}");
            for word in line
                .iter()
                .filter(|w| w.contains("secret") || w.contains("password"))
            {
                assert!(!shown.contains(word), "{word} in {shown}");
            }
        }
    }

    #[test]
    fn http_urls_need_a_scheme_and_a_host() {
        for good in [
            "http://127.0.0.1:8080",
            "https://files.example/base",
            "http://[::1]:8080/v1.0",
            "http://box.lan",
            "http://[::1]",
        ] {
            assert_eq!(parse_http_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "ftp://x",
            "nope",
            "http://",
            "http://:8080",
            "http://?x",
            "http:///path",
            "http://box.lan:",
            "http://box.lan:abc",
            "http://user@box.lan",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad} was accepted");
        }
    }
}
