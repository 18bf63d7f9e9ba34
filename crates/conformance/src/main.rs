//! `upsession-conformance`: check any running Graph-style upload-session server, or
//! serve the fault-injecting fake Graph to try a client against by hand.
//!
//! ```text
//! upsession-conformance server --base-url URL --token T [--cases N] [--seed S]
//!                              [--dialect upsession|outlook|onedrive]
//!                              [--min-size 3MB] [--max-size 150MB] [--max-fragment 4MiB]
//! upsession-conformance fake   [--listen 127.0.0.1:0] [--token T] [--dialect NAME]
//!                              [--faults SPEC] [--break NAME]... [--max-fragment 4MiB]
//! ```
//!
//! Exit codes: 0 every case passed; 1 a rule was broken or the check could not
//! run (the message says which); 2 bad usage.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use upsession_conformance::fake::{Break, FakeGraph, FakeOptions, Faults, Quirks};
use upsession_conformance::server::{self, Config};
use upsession_conformance::{Rule, parse_seed};
use upsession_core::Dialect;
use upsession_core::fault::FaultPlan;
use upsession_core::route::ItemKind;
use upsession_core::session::Limits;

/// Conformance checks for Microsoft Graph-style upload sessions.
#[derive(Debug, Parser)]
#[command(name = "upsession-conformance", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a running server: random request sequences judged against the reference
    /// model; prints a report, or the minimal failing case as a script.
    Server(ServerArgs),
    /// Serve the fake Graph (quirks, faults, deliberate bugs) until Ctrl-C.
    Fake(FakeArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's Graph base URL, with the version: http://127.0.0.1:8080/v1.0
    #[arg(long, env = "UPSESSION_BASE_URL")]
    base_url: String,
    /// A bearer token the server accepts.
    #[arg(long, env = "UPSESSION_TOKEN", hide_env_values = true)]
    token: String,
    /// Cases to run [default: 500, or UPSESSION_CONFORMANCE_CASES].
    #[arg(long)]
    cases: Option<u32>,
    /// Seed of the run, decimal or 0x hex [default: random, or UPSESSION_CONFORMANCE_SEED].
    #[arg(long, value_parser = seed)]
    seed: Option<u64>,
    /// The server's smallest file for an upload session (as its --min-size).
    #[arg(long, default_value = "3MB", value_parser = size)]
    min_size: u64,
    /// The server's largest file (as its --max-size).
    #[arg(long, default_value = "150MB", value_parser = size)]
    max_size: u64,
    /// The server's largest fragment (as its --max-fragment) [default: 4MiB; 60MiB with
    /// --dialect onedrive].
    #[arg(long, value_parser = size)]
    max_fragment: Option<u64>,
    /// The dialect the server speaks (as its --dialect): upsession, outlook or onedrive.
    #[arg(long, default_value = "upsession", value_parser = dialect)]
    dialect: Dialect,
    /// Most operations per case.
    #[arg(long, default_value_t = 24)]
    max_ops: usize,
}

#[derive(Debug, Args)]
struct FakeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The bearer token Graph routes accept.
    #[arg(
        long,
        default_value = "fake-token",
        env = "UPSESSION_TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// How answers are written: upsession, outlook or onedrive.
    #[arg(long, default_value = "upsession", value_parser = dialect)]
    dialect: Dialect,
    /// PascalCase UploadUrl and NextExpectedRanges too.
    #[arg(long)]
    pascal_case: bool,
    /// Answer the completing fragment 200 with the attachment's id.
    #[arg(long)]
    completion_with_id: bool,
    /// Seeded faults, as `upsession serve --faults`: seed=N,ROUTE:FAULT:PROBABILITY,...
    #[arg(long, value_parser = faults)]
    faults: Option<FaultPlan>,
    /// A deliberate bug (repeatable): the names are the rules they break, e.g. out-of-order.
    #[arg(long = "break", value_parser = bug)]
    breaks: Vec<Break>,
    /// Smallest file for an upload session.
    #[arg(long, default_value = "1", value_parser = size)]
    min_size: u64,
    /// Largest fragment.
    #[arg(long, default_value = "4MiB", value_parser = size)]
    max_fragment: u64,
}

fn seed(text: &str) -> Result<u64, String> {
    parse_seed(text).ok_or_else(|| format!("`{text}` is not a seed (a whole number, or 0x hex)"))
}

/// Reads `1024`, `64KiB`, `3MB`: decimal units for kB/MB/GB, binary for KiB/MiB/GiB.
fn size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size (e.g. 1024, 64KiB, 3MB)");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(multiplier).ok_or_else(bad)
}

fn dialect(text: &str) -> Result<Dialect, String> {
    Dialect::by_name(text)
        .ok_or_else(|| format!("`{text}` is not a dialect (upsession, outlook, onedrive)"))
}

fn faults(text: &str) -> Result<FaultPlan, String> {
    text.parse()
        .map_err(|e: upsession_core::fault::FaultSpecError| e.to_string())
}

fn bug(text: &str) -> Result<Break, String> {
    let rule: Rule = text
        .parse()
        .map_err(|e: upsession_conformance::rule::UnknownRule| e.to_string())?;
    Break::ALL
        .iter()
        .copied()
        .find(|b| b.rule() == rule)
        .ok_or_else(|| format!("no deliberate bug breaks `{rule}`"))
}

fn usage(message: &str) -> ExitCode {
    eprintln!("upsession-conformance: {message}");
    ExitCode::from(2)
}

fn run_server(args: ServerArgs) -> ExitCode {
    if args.min_size > args.max_size {
        return usage(&format!(
            "--min-size ({}) is larger than --max-size ({})",
            args.min_size, args.max_size
        ));
    }
    let max_fragment = args.max_fragment.unwrap_or(args.dialect.max_fragment);
    if max_fragment == 0 {
        return usage("--max-fragment must be at least 1 byte");
    }
    if let Some(quantum) = args.dialect.fragment_quantum
        && max_fragment < quantum
    {
        return usage(&format!(
            "--dialect {} takes fragments in multiples of {quantum} bytes: --max-fragment ({max_fragment}) \
             must be at least that",
            args.dialect.name
        ));
    }
    let base_ok = args.base_url.starts_with("http://") || args.base_url.starts_with("https://");
    if !base_ok {
        return usage(&format!(
            "--base-url `{}` must start with http:// or https://",
            args.base_url
        ));
    }
    let mut config = Config::new(args.base_url, args.token)
        .with_sizes(args.min_size, args.max_size, max_fragment)
        .with_dialect(args.dialect)
        .with_max_ops(args.max_ops);
    if let Some(cases) = args.cases {
        config = config.with_cases(cases);
    }
    if let Some(seed) = args.seed {
        config = config.with_seed(seed);
    }
    match server::check(&config) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(failure) if failure.rule == Rule::Harness => {
            eprintln!("upsession-conformance: {failure}");
            ExitCode::FAILURE
        }
        Err(failure) => {
            print!("{failure}");
            eprintln!(
                "upsession-conformance: the server breaks rule `{}` (the minimal failing case is above)",
                failure.rule
            );
            ExitCode::FAILURE
        }
    }
}

fn run_fake(args: FakeArgs) -> ExitCode {
    let quirks = Quirks::dialect(args.dialect)
        .with_pascal_case(args.pascal_case)
        .with_completion_with_id(args.completion_with_id);
    let mut options = FakeOptions::default()
        .with_listen(args.listen)
        .with_token(args.token)
        .with_quirks(quirks)
        .with_limits(
            Limits::default()
                .with_min_size(args.min_size)
                .with_max_fragment(args.max_fragment),
        );
    if let Some(plan) = args.faults {
        options = options.with_faults(Faults::plan(plan));
    }
    for bug in args.breaks {
        options = options.with_break(bug);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("upsession-conformance: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let fake = match FakeGraph::start(options).await {
            Ok(fake) => fake,
            Err(e) => {
                eprintln!("upsession-conformance: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        let message = fake.create_item(ItemKind::Message, "conformance draft");
        println!(
            "fake Graph serving {} (listening on {})\ntoken: {}\ndraft message: {message}",
            fake.base_url(),
            fake.local_addr(),
            fake.token()
        );
        let _ = tokio::signal::ctrl_c().await;
        for request in fake.log() {
            eprintln!("{request}");
        }
        fake.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Server(args) => run_server(args),
        Command::Fake(args) => run_fake(args),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn sizes_read_decimal_and_binary_units() {
        assert_eq!(size("1024"), Ok(1024));
        assert_eq!(size("1KiB"), Ok(1024));
        assert_eq!(size("3MB"), Ok(3_000_000));
        assert_eq!(size("4MiB"), Ok(4 * 1024 * 1024));
        assert!(size("4 parsecs").is_err());
        assert!(size("99999999999GiB").is_err());
    }

    #[test]
    fn every_break_has_a_flag_name() {
        for b in Break::ALL {
            assert_eq!(bug(b.rule().name()), Ok(*b));
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
