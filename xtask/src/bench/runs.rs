//! The throughput runs: each ingest scenario under every contender, repeated, each
//! on a fresh server and data directory, driven by `loadgen`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::grid::GridRow;
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
        rows.extend(measure(
            o,
            (bin, rustus, work, run_no),
            &contenders,
            &format!("{scenario} ({})", args[3]),
            args,
            *bytes,
        )?);
    }
    Ok(rows)
}

/// Share by which the sink's single upload at the run's end may differ from the
/// same at its start before the run is called unsteady.
const DRIFT: f64 = 0.2;

/// The sink's single upload again, at the run's end, against the same in the
/// first scenario (its median, of runs interleaved with the other contenders'
/// over that scenario's minutes): this machine's speed drifts, and ratios mean
/// something only between runs taken at one speed. The row, and a line for the
/// report (a warning when the two differ by more than [`DRIFT`]).
pub(super) fn drift(
    o: &Options,
    bin: &Path,
    work: &Path,
    z: &Sizes,
    rows: &[Row],
    run_no: &mut usize,
) -> Result<(Row, String), String> {
    let args = ["--uploads", "1", "--size", z.big];
    let scenario = format!("machine check at the end, 1 upload ({})", z.big);
    let end = measure(
        o,
        (bin, None, work, run_no),
        &[Contender::Sink],
        &scenario,
        &args,
        z.big_bytes,
    )?
    .pop()
    .ok_or("no machine check")?;
    let start = rows
        .iter()
        .find(|r| r.contender == Contender::Sink.name() && r.scenario.starts_with("1 upload"))
        .and_then(|r| r.median("mib_per_s"));
    let line = drift_line(z.big, start, end.median("mib_per_s"));
    Ok((end, line))
}

/// The report's line on the sink's MiB/s at the `start` and the `end` of a run.
fn drift_line(size: &str, start: Option<f64>, end: Option<f64>) -> String {
    match (start, end) {
        (Some(a), Some(b)) if a > 0.0 => {
            let change = b / a - 1.0;
            format!(
                "Machine check: the sink's 1 upload ({size}) {a:.1} MiB/s at the start, {b:.1} at the end ({:+.0} %){}",
                change * 100.0,
                if change.abs() <= DRIFT {
                    ""
                } else {
                    "; the machine's speed changed during the run: compare only figures taken close together"
                }
            )
        }
        _ => "Machine check: no figure to compare".to_owned(),
    }
}

/// The grid: each size at each concurrency level, under the sink, our server and
/// (with `--peers`) rustus, in the page cache. Runs over
/// [`grid::MAX_RUN_BYTES`](super::grid::MAX_RUN_BYTES) in all are left out.
pub(super) fn grid(
    o: &Options,
    bin: &Path,
    rustus: Option<&Path>,
    work: &Path,
    z: &Sizes,
    run_no: &mut usize,
) -> Result<Vec<GridRow>, String> {
    let mut contenders = vec![Contender::Sink, Contender::Ours];
    if rustus.is_some() {
        contenders.push(Contender::Rustus);
    }
    let mut rows = Vec::new();
    for &(size, size_bytes) in &z.grid_files {
        let mut size_rows: Vec<GridRow> = contenders
            .iter()
            .map(|c| GridRow {
                size: size.to_owned(),
                contender: c.name(),
                concurrency: Vec::new(),
                cells: Vec::new(),
            })
            .collect();
        // Each cell under every contender in turn, so that what one cell leaves
        // behind (writeback, a full page cache) falls on each contender alike.
        for &n in z.grid_concurrency {
            let (args, bytes) = grid_cell(size, size_bytes, n, z.grid_min_bytes);
            if bytes > super::grid::MAX_RUN_BYTES {
                continue;
            }
            if let Some(free) = free_bytes(work).filter(|&free| free < room_needed(bytes)) {
                // A full disk ends the whole run (ENOSPC); a cell left out ends
                // only itself.
                eprintln!(
                    "grid {n} × {size}: left out, it needs {} MiB free and {} MiB are",
                    room_needed(bytes) >> 20,
                    free >> 20
                );
                continue;
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let cells = measure(
                o,
                (bin, rustus, work, run_no),
                &contenders,
                &format!("grid {n} × {size}"),
                &args,
                bytes,
            )?;
            for (row, cell) in size_rows.iter_mut().zip(cells) {
                row.concurrency.push(n);
                row.cells.push(cell);
            }
        }
        rows.extend(size_rows);
    }
    Ok(rows)
}

/// The cell of `n` uploads of `size` (`size_bytes` each): `loadgen`'s arguments,
/// and the bytes it moves, at least `min_bytes`.
fn grid_cell(size: &str, size_bytes: u64, n: u32, min_bytes: u64) -> (Vec<String>, u64) {
    let rounds = grid_rounds(min_bytes, size_bytes, n);
    let args = [
        "--uploads",
        &n.to_string(),
        "--rounds",
        &rounds.to_string(),
        "--size",
        size,
    ]
    .map(str::to_owned)
    .to_vec();
    (args, size_bytes * u64::from(n) * u64::from(rounds))
}

/// How many files each of `n` uploads of `size_bytes` sends in turn, so that the
/// cell moves at least `min_bytes`.
fn grid_rounds(min_bytes: u64, size_bytes: u64, n: u32) -> u32 {
    let per_round = (size_bytes * u64::from(n)).max(1);
    u32::try_from(min_bytes.div_ceil(per_round).max(1)).unwrap_or(u32::MAX)
}

/// What a run of `bytes` needs free: its bytes (the page-cache fairness file is
/// deleted before them), their records, and a margin for the rest of the machine.
fn room_needed(bytes: u64) -> u64 {
    bytes + bytes / 10 + (1 << 30)
}

/// The bytes free for an unprivileged writer on the file system of `dir` (`df`),
/// if it can be told.
fn free_bytes(dir: &Path) -> Option<u64> {
    fs::create_dir_all(dir).ok()?;
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// `loadgen args` against each of `contenders`, each run on a fresh server and data
/// directory, `o.reps` times: one row of `scenario` per contender, in their order.
///
/// The repetitions are interleaved (one run of each contender, then the next
/// round), and each round starts with the next contender: this machine's speed
/// drifts within minutes, and all of one contender's runs in a block, then all
/// of the next one's, turned that drift into a difference between them.
fn measure(
    o: &Options,
    (bin, rustus, work, run_no): (&Path, Option<&Path>, &Path, &mut usize),
    contenders: &[Contender],
    scenario: &str,
    args: &[&str],
    bytes: u64,
) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = contenders
        .iter()
        .map(|c| Row {
            scenario: scenario.to_owned(),
            contender: c.name(),
            records: Vec::new(),
        })
        .collect();
    for round in 0..o.reps {
        for i in rotated(contenders.len(), round) {
            let contender = contenders[i];
            let dir = fresh_dir(work, run_no, o.cache_fairness.then_some(bytes))?;
            let server = contender.start_with(bin, rustus, &dir)?;
            let mut args = args.to_vec();
            if contender.is_rustus() {
                args.extend(["--tus", server.base.as_str()]);
            }
            let mut r = loadgen(bin, &server.base, server.pid(), &args)?;
            drop(server);
            let _ = fs::remove_dir_all(&dir);
            r.insert("scenario".into(), scenario.to_owned());
            r.insert("contender".into(), contender.name().into());
            rows[i].records.push(r);
        }
    }
    for row in &rows {
        eprintln!(
            "{} / {}: {} MiB/s",
            row.scenario,
            row.contender,
            row.spread("mib_per_s")
        );
    }
    Ok(rows)
}

/// The indices `0..n`, starting at `round % n` and wrapping around.
fn rotated(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (round + k) % n)
}

/// The data directory of the next run, made, after `fairness` bytes written and
/// deleted in it (see [`refresh_page_cache`]).
pub(super) fn fresh_dir(
    work: &Path,
    run_no: &mut usize,
    fairness: Option<u64>,
) -> Result<PathBuf, String> {
    let dir = next_dir(work, run_no);
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if let Some(bytes) = fairness {
        refresh_page_cache(&dir, bytes)?;
    }
    Ok(dir)
}

/// The data directory of the next run: `run{N}` under `work`.
pub(super) fn next_dir(work: &Path, run_no: &mut usize) -> PathBuf {
    *run_no += 1;
    work.join(format!("run{run_no}"))
}

#[cfg(test)]
mod tests {
    use super::drift_line;

    #[test]
    fn each_round_starts_with_the_next_contender() {
        use super::rotated;
        let order = |round| rotated(3, round).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2]);
        assert_eq!(order(1), [1, 2, 0]);
        assert_eq!(order(5), [2, 0, 1]);
    }

    #[test]
    fn a_grid_cell_moves_at_least_its_least_bytes() {
        use super::grid_rounds;
        let min = 256 << 20;
        assert_eq!(grid_rounds(min, 4 << 20, 1), 64);
        assert_eq!(grid_rounds(min, 4 << 20, 4), 16);
        assert_eq!(grid_rounds(min, 4 << 20, 64), 1);
        assert_eq!(grid_rounds(min, 150 << 20, 1), 2);
        assert_eq!(grid_rounds(min, 150 << 20, 4), 1);
        assert_eq!(grid_rounds(min, 3 << 20, 1), 86, "rounded up");
        let (args, bytes) = super::grid_cell("4MiB", 4 << 20, 4, min);
        assert_eq!(
            args,
            ["--uploads", "4", "--rounds", "16", "--size", "4MiB"],
            "loadgen is asked for the rounds"
        );
        assert_eq!(bytes, min);
    }

    #[test]
    fn a_run_whose_machine_slowed_says_so() {
        let steady = drift_line("150MB", Some(1000.0), Some(900.0));
        assert!(steady.ends_with("(-10 %)"), "{steady}");
        let slowed = drift_line("150MB", Some(1500.0), Some(500.0));
        assert!(
            slowed.contains("(-67 %); the machine's speed changed"),
            "{slowed}"
        );
        assert!(drift_line("x", None, Some(1.0)).contains("no figure"));
    }
}
