//! `upsession conformance`: check any running Graph-style upload-session server, or
//! serve the fault-injecting fake Graph to try a client against by hand.
//!
//! ```text
//! upsession conformance server --base-url URL --token T [--cases N] [--seed S]
//!                              [--dialect upsession|outlook|onedrive]
//!                              [--min-size 3MB] [--max-size 150MB] [--max-fragment 4MiB]
//! upsession conformance fake   [--listen 127.0.0.1:0] [--token T] [--dialect NAME]
//!                              [--faults SPEC] [--break NAME]... [--max-fragment 4MiB]
//! ```
//!
//! Exit codes as every command: 0 every case passed; 1 a rule was broken or the
//! check could not run (the message says which); 2 bad usage.

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use upsession_conformance::fake::{Break, FakeGraph, FakeOptions, Faults, Quirks};
use upsession_conformance::server::{self, Config};
use upsession_conformance::{Rule, parse_seed};
use upsession_core::Dialect;
use upsession_core::fault::FaultPlan;
use upsession_core::route::ItemKind;
use upsession_core::session::Limits;

use crate::secret::Secret;
use crate::serve::{DialectArgs, parse_dialect, parse_faults};
use crate::size::parse_size;
use crate::{Failure, print_out};

/// What `upsession conformance` does.
#[derive(Debug, Subcommand)]
pub(crate) enum ConformanceCommand {
    /// Check a running server: random request sequences judged against the reference
    /// model; prints a report, or the minimal failing case as a script.
    Server(ServerArgs),
    /// Serve the fake Graph (quirks, faults, deliberate bugs) until Ctrl-C.
    Fake(FakeArgs),
}

/// Flags of `upsession conformance server`.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server's Graph base URL, with the version: http://127.0.0.1:8080/v1.0
    #[arg(long, env = "UPSESSION_BASE_URL", value_parser = crate::parse_http_url)]
    base_url: String,
    /// A bearer token the server accepts.
    #[arg(
        long,
        env = "UPSESSION_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Secret,
    /// Cases to run [default: 500, or UPSESSION_CONFORMANCE_CASES].
    #[arg(long)]
    cases: Option<u32>,
    /// Seed of the run, decimal or 0x hex [default: random, or UPSESSION_CONFORMANCE_SEED].
    #[arg(long, value_parser = seed)]
    seed: Option<u64>,
    /// The server's smallest file for an upload session (as its --min-size).
    #[arg(long, default_value = "2MiB", value_parser = parse_size)]
    min_size: u64,
    /// The server's largest file (as its --max-size).
    #[arg(long, default_value = "150MB", value_parser = parse_size)]
    max_size: u64,
    /// The server's largest fragment (as its --max-fragment).
    #[arg(long, default_value = "60MiB", value_parser = parse_size)]
    max_fragment: u64,
    /// The dialect the server speaks (as its --dialect, --casing and --range-form).
    #[command(flatten)]
    dialect: DialectArgs,
    /// Most operations per case.
    #[arg(long, default_value_t = 24)]
    max_ops: usize,
}

/// Flags of `upsession conformance fake`.
#[derive(Debug, Args)]
pub(crate) struct FakeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The bearer token Graph routes accept.
    #[arg(
        long,
        default_value = "fake-token",
        env = "UPSESSION_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    token: Secret,
    /// How answers are written: upsession, outlook or onedrive.
    #[arg(long, default_value = "upsession", value_parser = parse_dialect)]
    dialect: Dialect,
    /// PascalCase UploadUrl and NextExpectedRanges too.
    #[arg(long)]
    pascal_case: bool,
    /// Answer the completing fragment 200 with the attachment's id.
    #[arg(long)]
    completion_with_id: bool,
    /// Seeded faults, as `upsession serve --faults`: seed=N,ROUTE:FAULT:PROBABILITY,...
    #[arg(long, value_parser = parse_faults)]
    faults: Option<FaultPlan>,
    /// A deliberate bug (repeatable): the names are the rules they break, e.g. out-of-order.
    #[arg(long = "break", value_parser = bug)]
    breaks: Vec<Break>,
    /// Smallest file for an upload session.
    #[arg(long, default_value = "1", value_parser = parse_size)]
    min_size: u64,
    /// Largest fragment.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    max_fragment: u64,
}

fn seed(text: &str) -> Result<u64, String> {
    parse_seed(text).ok_or_else(|| format!("`{text}` is not a seed (a whole number, or 0x hex)"))
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

pub(crate) fn run(command: ConformanceCommand) -> Result<(), Failure> {
    match command {
        ConformanceCommand::Server(args) => check_server(args),
        ConformanceCommand::Fake(args) => serve_fake(args),
    }
}

fn check_server(args: ServerArgs) -> Result<(), Failure> {
    if args.min_size > args.max_size {
        return Err(Failure::usage(format!(
            "--min-size ({}) is larger than --max-size ({})",
            args.min_size, args.max_size
        )));
    }
    let max_fragment = args.max_fragment;
    let dialect = args.dialect.dialect();
    if max_fragment == 0 {
        return Err(Failure::usage("--max-fragment must be at least 1 byte"));
    }
    if let Some(quantum) = dialect.fragment_quantum
        && max_fragment < quantum
    {
        return Err(Failure::usage(format!(
            "--dialect {} takes fragments in multiples of {quantum} bytes: --max-fragment \
             ({max_fragment}) must be at least that",
            dialect.name
        )));
    }
    let mut config = Config::new(args.base_url, args.token.expose())
        .with_sizes(args.min_size, args.max_size, max_fragment)
        .with_dialect(dialect)
        .with_max_ops(args.max_ops);
    if let Some(cases) = args.cases {
        config = config.with_cases(cases);
    }
    if let Some(seed) = args.seed {
        config = config.with_seed(seed);
    }
    match server::check(&config) {
        Ok(report) => {
            print_out(&report.to_string());
            Ok(())
        }
        Err(failure) if failure.rule == Rule::Harness => Err(Failure::new(failure.to_string())),
        Err(failure) => {
            print_out(&failure.to_string());
            Err(Failure::new(format!(
                "the server breaks rule `{}` (the minimal failing case is above)",
                failure.rule
            )))
        }
    }
}

fn serve_fake(args: FakeArgs) -> Result<(), Failure> {
    let quirks = Quirks::dialect(args.dialect)
        .with_pascal_case(args.pascal_case)
        .with_completion_with_id(args.completion_with_id);
    let mut options = FakeOptions::default()
        .with_listen(args.listen)
        .with_token(args.token.expose())
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
    crate::block_on(async move {
        let fake = FakeGraph::start(options)
            .await
            .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
        let message = fake.create_item(ItemKind::Message, "conformance draft");
        print_out(&format!(
            "fake Graph serving {} (listening on {})\ntoken: {}\ndraft message: {message}\n",
            fake.base_url(),
            fake.local_addr(),
            fake.token()
        ));
        let _ = tokio::signal::ctrl_c().await;
        for request in fake.log() {
            crate::print_err(&format!("{request}\n"));
        }
        fake.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn every_break_has_a_flag_name() {
        for b in Break::ALL {
            assert_eq!(bug(b.rule().name()), Ok(*b));
        }
        assert!(bug("no-such-rule").is_err());
    }
}
