//! `cargo xtask bench`: the server measured against a no-logic sink, in one run.
//!
//! Builds `upsession` and the bench tools (`loadgen`, `sink`) in release (`--quick`:
//! in the dev profile the tests built, as it measures nothing), then for
//! each scenario and repetition starts a fresh server process on 127.0.0.1 with a
//! fresh data directory, drives it with `loadgen` (which verifies every byte), and
//! reads the figures it prints. Prints a markdown table of medians (with min–max) and
//! writes every record as a JSON line under `target/bench/`. The sink's single
//! upload runs again at the end, and the report says whether the machine's speed
//! held through the run.
//!
//! `--cluster` measures shared storage instead: 1, 2 and 3 nodes on one Garage
//! and PostgreSQL beside the disk backend (`bench/src/cluster.rs`).
//!
//! Then the grid ([`grid`]): throughput against 1, 4, 16 and 64 concurrent uploads
//! of 4 MiB and 150 MiB files (and 1 GiB with `--full`), under the sink, our server
//! and rustus, each cell moving at least 256 MiB (its uploads send files one after
//! another, `loadgen --rounds`); `--plot` draws it as an SVG chart in
//! `target/bench/throughput.svg` ([`plot`]).
//!
//! Every scenario's repetitions interleave the contenders (one run of each per
//! round), and CPU per GiB is the server's while it receives (`loadgen`'s
//! `server_ingest_cpu_s`).
//!
//! `--quick` (CI's smoke test) runs each scenario once on small sizes: it checks that
//! everything runs and the bytes verify, not speed. `--reps N` sets repetitions
//! (default 3, 5 with `--full`); `--no-cache-fairness` skips writing and deleting a file of the run's
//! size before each measurement (these VMs charge much more for page-cache pages
//! that were not recently freed, so every contender gets the same fresh pages).

mod extras;
mod grid;
mod options;
mod plot;
mod record;
mod report;
mod runs;
mod server;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use self::options::{Options, Sizes};
use self::record::{Record, Row};
use crate::util::{project_root, run_command};

/// Runs `cargo xtask bench` with its arguments.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let o = Options::parse(args)?;
    let profile = crate::util::Profile::for_run(o.quick);
    let bin = crate::util::tool_binaries(profile)?;
    let root = project_root();
    let out_dir = root.join("target").join("bench");
    let work = out_dir.join("work");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;

    if o.cluster {
        if o.peers {
            return Err("--peers and --cluster measure different things; run them apart".into());
        }
        return cluster(&o, &bin, &out_dir);
    }
    let rustus = if o.peers {
        crate::engines::ensure_rustus()?;
        Some(crate::engines::rustus_binary())
    } else {
        None
    };
    let sizes = Sizes::new(o.quick, o.full);
    let mut run_no = 0;
    let rows = runs::throughput(&o, &bin, rustus.as_deref(), &work, &sizes, &mut run_no)?;
    let grid = runs::grid(&o, &bin, rustus.as_deref(), &work, &sizes, &mut run_no)?;
    let extras = extras::extras(&bin, profile, &work, (&sizes, &o), &mut run_no)?;
    // A check that fails loses its line, not the run's records.
    let (check, drift) = match runs::drift(&o, &bin, &work, &sizes, &rows, &mut run_no) {
        Ok((row, line)) => (Some(row), line),
        Err(e) => (None, format!("Machine check failed: {e}")),
    };
    let mut table = report::report(&rows, &extras, &sizes);
    let _ = writeln!(table, "\n{drift}");
    let _ = write!(
        table,
        "\nThroughput against concurrency, in the page cache (medians of {}, min–max when repeated; the server's CPU seconds per GiB while receiving):\n\n{}",
        o.reps,
        grid::table(&grid)
    );
    println!("\n{table}");
    if o.plot {
        let svg = out_dir.join("throughput.svg");
        let title = format!(
            "upsession ingest, page cache, median of {} (cargo xtask bench{})",
            o.reps,
            if o.full { " --full" } else { "" }
        );
        let chart = plot::svg(&grid, &title);
        fs::write(&svg, chart).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
        println!("chart: {}", svg.display());
    }
    let all: Vec<Row> = rows
        .into_iter()
        .chain(grid.into_iter().flat_map(|g| g.cells))
        .chain(check)
        .collect();
    write_records(&out_dir, &all, &extras, &table)?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// Writes every record as a JSON line to `bench-{time}.jsonl` and the table to
/// `latest.md`, both in `out_dir`.
fn write_records(
    out_dir: &Path,
    rows: &[Row],
    extras: &[Record],
    table: &str,
) -> Result<(), String> {
    let jsonl = out_dir.join(format!("bench-{}.jsonl", stamp()));
    let mut lines = String::new();
    for r in rows
        .iter()
        .flat_map(|r| r.records.iter())
        .chain(extras.iter())
    {
        let fields: Vec<String> = r.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
        let _ = writeln!(lines, "{{{}}}", fields.join(","));
    }
    fs::write(&jsonl, lines).map_err(|e| format!("cannot write {}: {e}", jsonl.display()))?;
    fs::write(out_dir.join("latest.md"), table).map_err(|e| e.to_string())?;
    println!("records: {}", jsonl.display());
    Ok(())
}

/// `--cluster`: ingest through 1, 2 and 3 nodes on one Garage and PostgreSQL,
/// beside the disk backend (the `cluster` bench binary does the measuring).
fn cluster(o: &Options, bin: &Path, out_dir: &Path) -> Result<(), String> {
    crate::engines::ensure()?;
    let jsonl = out_dir.join(format!("cluster-{}.jsonl", stamp()));
    let mut cmd = Command::new(bin.join("cluster"));
    cmd.arg("--bin-dir")
        .arg(bin)
        .args(["--reps", &o.reps.to_string(), "--out"])
        .arg(&jsonl)
        .env("UPSESSION_GARAGE", crate::engines::garage_binary());
    if o.quick {
        cmd.arg("--quick");
    }
    run_command(&mut cmd)?;
    println!("records: {}", jsonl.display());
    Ok(())
}

/// Seconds since the Unix epoch, naming a run's records.
fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
