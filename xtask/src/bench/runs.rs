//! The throughput runs: each ingest scenario under every contender, repeated, each
//! on a fresh server and data directory, driven by `loadgen`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::options::{Options, Sizes};
use super::record::{Record, Row, parse_figures};
use super::server::{Contender, TOKEN};

/// Runs `loadgen` against the server at `base` (process `pid`) and reads the
/// figures of its last line.
pub(super) fn loadgen(bin: &Path, base: &str, pid: u32, args: &[&str]) -> Result<Record, String> {
    let out = Command::new(bin.join("loadgen"))
        .args([
            "--base-url",
            base,
            "--token",
            TOKEN,
            "--pid",
            &pid.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "loadgen {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().ok_or("loadgen printed nothing")?;
    Ok(parse_figures(line))
}

/// Writes and deletes `bytes` in `dir`, so the measurement after it gets freshly
/// freed page-cache pages like every other contender.
fn refresh_page_cache(dir: &Path, bytes: u64) -> Result<(), String> {
    let path = dir.join("fairness.tmp");
    let mut f = fs::File::create(&path).map_err(|e| e.to_string())?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        f.write_all(&chunk[..usize::try_from(n).unwrap_or(chunk.len())])
            .map_err(|e| e.to_string())?;
        left -= n;
    }
    drop(f);
    fs::remove_file(&path).map_err(|e| e.to_string())
}

/// Ingest scenarios under every contender, repeated.
pub(super) fn throughput(
    o: &Options,
    bin: &Path,
    rustus: Option<&Path>,
    work: &Path,
    z: &Sizes,
    run_no: &mut usize,
) -> Result<Vec<Row>, String> {
    let (big, small, many, big_bytes, small_total) =
        (z.big, z.small, z.many, z.big_bytes, z.small_total);
    let scenarios: [(&str, Vec<&str>, u64); 2] = [
        ("1 upload", vec!["--uploads", "1", "--size", big], big_bytes),
        (
            "concurrent uploads",
            vec!["--uploads", many, "--size", small],
            small_total,
        ),
    ];
    let mut rows = Vec::new();
    for (scenario, args, bytes) in &scenarios {
        let mut contenders = vec![
            Contender::Sink,
            Contender::Ours,
            Contender::SinkFsync,
            Contender::OursFsync,
        ];
        if rustus.is_some() {
            contenders.extend([Contender::Rustus, Contender::RustusFsync]);
        }
        for contender in contenders {
            let mut row = Row {
                scenario: format!("{scenario} ({})", args[3]),
                contender: contender.name(),
                records: Vec::new(),
            };
            for _ in 0..o.reps {
                let dir = next_dir(work, run_no);
                fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                if o.cache_fairness {
                    refresh_page_cache(&dir, *bytes)?;
                }
                let server = contender.start_with(bin, rustus, &dir)?;
                let mut args = args.clone();
                if contender.is_rustus() {
                    args.extend(["--tus", server.base.as_str()]);
                }
                let mut r = loadgen(bin, &server.base, server.pid(), &args)?;
                drop(server);
                let _ = fs::remove_dir_all(&dir);
                r.insert("scenario".into(), row.scenario.clone());
                r.insert("contender".into(), contender.name().into());
                row.records.push(r);
            }
            eprintln!(
                "{} / {}: {} MiB/s",
                row.scenario,
                row.contender,
                row.spread("mib_per_s")
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The data directory of the next run: `run{N}` under `work`.
pub(super) fn next_dir(work: &Path, run_no: &mut usize) -> PathBuf {
    *run_no += 1;
    work.join(format!("run{run_no}"))
}
