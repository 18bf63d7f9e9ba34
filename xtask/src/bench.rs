//! `cargo xtask bench`: the server measured against a no-logic sink, in one run.
//!
//! Builds `upsession` and the bench tools (`loadgen`, `sink`) in release, then for
//! each scenario and repetition starts a fresh server process on 127.0.0.1 with a
//! fresh data directory, drives it with `loadgen` (which verifies every byte), and
//! reads the figures it prints. Prints a markdown table of medians (with min–max) and
//! writes every record as a JSON line under `target/bench/`.
//!
//! `--cluster` measures shared storage instead: 1, 2 and 3 nodes on one Garage
//! and PostgreSQL beside the disk backend (`bench/src/cluster.rs`).
//!
//! `--quick` (CI's smoke test) runs each scenario once on small sizes: it checks that
//! everything runs and the bytes verify, not speed. `--reps N` sets repetitions
//! (default 3); `--no-cache-fairness` skips writing and deleting a file of the run's
//! size before each measurement (these VMs charge much more for page-cache pages
//! that were not recently freed, so every contender gets the same fresh pages).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{project_root, run_command};

const TOKEN: &str = "bench-token";

#[allow(clippy::struct_excessive_bools)] // independent switches of one command line
struct Options {
    quick: bool,
    reps: usize,
    cache_fairness: bool,
    cluster: bool,
    /// Also measure rustus (a Rust tus server) with the same bytes.
    peers: bool,
}

/// A started server process (`upsession serve` or `sink`).
struct Server {
    child: Child,
    base: String,
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Server {
    /// Spawns the server; its stdout is piped (and kept open while it runs) when
    /// its banner is to be read, and discarded otherwise, so it never blocks on a
    /// full pipe.
    fn spawn(
        cmd: &mut Command,
        banner: bool,
    ) -> Result<(Child, Option<BufReader<std::process::ChildStdout>>), String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(if banner {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok((child, stdout))
    }

    fn start(mut cmd: Command) -> Result<Self, String> {
        let (child, stdout) = Self::spawn(&mut cmd, true)?;
        let mut stdout = stdout.ok_or("no stdout")?;
        let mut first = String::new();
        stdout.read_line(&mut first).map_err(|e| e.to_string())?;
        let base = first
            .strip_prefix("upsession serving ")
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| format!("unexpected banner: {first:?}"))?
            .to_owned();
        Ok(Self {
            child,
            base,
            _stdout: Some(stdout),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A server that prints no banner: started on `port`, ready once it accepts.
    fn start_on_port(mut cmd: Command, port: u16, base: String) -> Result<Self, String> {
        let (mut child, stdout) = Self::spawn(&mut cmd, false)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(format!("nothing listened on {addr} within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            base,
            _stdout: stdout,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Contender {
    Sink,
    SinkFsync,
    Ours,
    OursFsync,
    Rustus,
    RustusFsync,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Self::Sink => "sink",
            Self::SinkFsync => "sink --fsync",
            Self::Ours => "upsession",
            Self::OursFsync => "upsession --fsync always",
            Self::Rustus => "rustus",
            Self::RustusFsync => "rustus --force-fsync",
        }
    }

    fn is_rustus(self) -> bool {
        matches!(self, Self::Rustus | Self::RustusFsync)
    }

    /// `rustus`: the rustus binary, needed for the rustus contenders only.
    fn start_with(self, bin: &Path, rustus: Option<&Path>, dir: &Path) -> Result<Server, String> {
        if !self.is_rustus() {
            return self.start(bin, dir);
        }
        let rustus = rustus.ok_or("rustus is not installed")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let (data, info) = (dir.join("data"), dir.join("info"));
        for d in [&data, &info] {
            fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new(rustus);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--info-dir")
            .arg(&info)
            // Its default 256 KiB body limit refuses 4 MiB fragments.
            .args(["--max-body-size", "8388608", "--log-level", "warn"]);
        if self == Self::RustusFsync {
            // A bool that takes a value (structopt with `env`).
            cmd.args(["--force-fsync", "true"]);
        }
        Server::start_on_port(cmd, port, format!("http://127.0.0.1:{port}/files"))
    }

    fn start(self, bin: &Path, dir: &Path) -> Result<Server, String> {
        let mut cmd;
        match self {
            Self::Rustus | Self::RustusFsync => {
                return Err("rustus starts through start_with".into());
            }
            Self::Sink | Self::SinkFsync => {
                cmd = Command::new(bin.join("sink"));
                cmd.args(["--listen", "127.0.0.1:0", "--dir"]).arg(dir);
                if self == Self::SinkFsync {
                    cmd.arg("--fsync");
                }
            }
            Self::Ours | Self::OursFsync => {
                cmd = Command::new(bin.join("upsession"));
                cmd.args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--token",
                    TOKEN,
                    "--data-dir",
                ])
                .arg(dir);
                cmd.args([
                    "--fsync",
                    if self == Self::OursFsync {
                        "always"
                    } else {
                        "never"
                    },
                ]);
                cmd.args(["--min-size", "1", "--max-size", "1GB"])
                    .env("RUST_LOG", "warn");
            }
        }
        Server::start(cmd)
    }
}

type Record = BTreeMap<String, String>;

fn parse_figures(line: &str) -> Record {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn loadgen(bin: &Path, base: &str, pid: u32, args: &[&str]) -> Result<Record, String> {
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

fn num(r: &Record, key: &str) -> Option<f64> {
    r.get(key)?.parse().ok()
}

fn median_min_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[v.len() / 2], v[0], v[v.len() - 1]))
}

/// One row of results: a scenario under one contender, over all repetitions.
struct Row {
    scenario: String,
    contender: &'static str,
    records: Vec<Record>,
}

impl Row {
    fn median(&self, key: &str) -> Option<f64> {
        median_min_max(self.records.iter().filter_map(|r| num(r, key)).collect()).map(|m| m.0)
    }

    fn spread(&self, key: &str) -> String {
        match median_min_max(self.records.iter().filter_map(|r| num(r, key)).collect()) {
            Some((m, lo, hi)) if self.records.len() > 1 => format!("{m:.1} ({lo:.1}–{hi:.1})"),
            Some((m, _, _)) => format!("{m:.1}"),
            None => "–".into(),
        }
    }
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut o = Options {
        quick: false,
        reps: 3,
        cache_fairness: true,
        cluster: false,
        peers: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-cache-fairness" => o.cache_fairness = false,
            "--cluster" => o.cluster = true,
            "--peers" => o.peers = true,
            "--reps" => {
                o.reps = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--reps takes a number")?;
            }
            other => {
                return Err(format!(
                    "unknown bench option `{other}` (--quick, --reps N, --no-cache-fairness, --cluster, --peers)"
                ));
            }
        }
    }
    if o.quick {
        o.reps = 1;
    }
    let bin = crate::util::release_binaries()?;
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
    let sizes = Sizes::new(o.quick);
    let mut run_no = 0;
    let rows = throughput(&o, &bin, rustus.as_deref(), &work, &sizes, &mut run_no)?;
    let extras = extras(&bin, &work, &sizes, &mut run_no)?;
    let table = report(&rows, &extras, &sizes);
    println!("\n{table}");

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let jsonl = out_dir.join(format!("bench-{stamp}.jsonl"));
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
    fs::write(out_dir.join("latest.md"), &table).map_err(|e| e.to_string())?;
    println!("records: {}", jsonl.display());
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// `--cluster`: ingest through 1, 2 and 3 nodes on one Garage and PostgreSQL,
/// beside the disk backend (the `cluster` bench binary does the measuring).
fn cluster(o: &Options, bin: &Path, out_dir: &Path) -> Result<(), String> {
    crate::engines::ensure()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let jsonl = out_dir.join(format!("cluster-{stamp}.jsonl"));
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

/// The sizes of a full run or a quick one.
struct Sizes {
    big: &'static str,
    big_bytes: u64,
    small: &'static str,
    small_total: u64,
    many: &'static str,
    idle: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                big: "8MB",
                big_bytes: 8_000_000,
                small: "4MiB",
                small_total: 4 << 22,
                many: "4",
                idle: 200,
            }
        } else {
            Self {
                big: "150MB",
                big_bytes: 150_000_000,
                small: "16MiB",
                small_total: 16 << 24,
                many: "16",
                idle: 10_000,
            }
        }
    }
}

/// Ingest scenarios under every contender, repeated.
fn throughput(
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
                *run_no += 1;
                let dir = work.join(format!("run{run_no}"));
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

/// Status latency under load, our client, idle sessions and a restart with them:
/// one record each, in that order.
fn extras(bin: &Path, work: &Path, z: &Sizes, run_no: &mut usize) -> Result<Vec<Record>, String> {
    let (big, small, many, big_bytes) = (z.big, z.small, z.many, z.big_bytes);

    // Status latency while uploads run.
    let probe = {
        *run_no += 1;
        let dir = work.join(format!("run{run_no}"));
        let server = Contender::Ours.start(bin, &dir)?;
        let mut r = loadgen(
            bin,
            &server.base,
            server.pid(),
            &["--uploads", many, "--size", small, "--probe"],
        )?;
        r.insert("scenario".into(), "status GET under uploads".into());
        r
    };

    // Our client uploading one big file.
    let client = {
        *run_no += 1;
        let dir = work.join(format!("run{run_no}"));
        let server = Contender::Ours.start(bin, &dir.join("data"))?;
        let file = dir.join("upload.bin");
        let data: Vec<u8> = (0..big_bytes)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
            .collect();
        fs::write(&file, data).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let out = Command::new(bin.join("upsession"))
            .args([
                "upload",
                "--draft",
                "bench",
                "--json",
                "--base-url",
                &server.base,
                "--token",
                TOKEN,
            ])
            .args(["--chunk-size", "4MiB", "--state-dir"])
            .arg(dir.join("state"))
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let secs = started.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(format!(
                "upsession upload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        #[allow(clippy::cast_precision_loss)] // figures for people to read
        let mib_s = big_bytes as f64 / secs / f64::from(1 << 20);
        let mut r = Record::new();
        r.insert("scenario".into(), "our client, 1 upload".into());
        r.insert("seconds".into(), format!("{secs:.3}"));
        r.insert("mib_per_s".into(), format!("{mib_s:.1}"));
        r
    };

    // Idle sessions, then a restart with all of them on disk.
    let idle_n = z.idle;
    let (idle, restart) = {
        *run_no += 1;
        let dir = work.join(format!("run{run_no}"));
        let server = Contender::Ours.start(bin, &dir)?;
        let before = loadgen(
            bin,
            &server.base,
            server.pid(),
            &["--idle", "1", "--size", "3MB"],
        )?;
        let mut after = loadgen(
            bin,
            &server.base,
            server.pid(),
            &["--idle", &idle_n.to_string(), "--size", "3MB"],
        )?;
        let (before_kib, after_kib) = (
            num(&before, "server_rss_kib").unwrap_or(0.0),
            num(&after, "server_rss_kib").unwrap_or(0.0),
        );
        #[allow(clippy::cast_precision_loss)] // figures for people to read
        let per = (after_kib - before_kib) * 1024.0 / idle_n as f64;
        after.insert("scenario".into(), format!("{idle_n} idle sessions"));
        after.insert("rss_bytes_per_session".into(), format!("{per:.0}"));
        drop(server);
        let started = Instant::now();
        let server = Contender::Ours.start(bin, &dir)?;
        let url = format!("{}/healthz", server.base.trim_end_matches("/v1.0"));
        let first_answer = wait_for_answer(&url, started)?;
        let mut r = Record::new();
        r.insert("scenario".into(), format!("restart with {idle_n} sessions"));
        r.insert(
            "first_answer_s".into(),
            format!("{:.3}", first_answer.as_secs_f64()),
        );
        (after, r)
    };

    let _ = big;
    Ok(vec![probe, client, idle, restart])
}

/// The markdown table of a run.
fn report(rows: &[Row], extras: &[Record], z: &Sizes) -> String {
    let (big, many, idle_n) = (z.big, z.many, z.idle);
    let [probe, client, idle, restart] = extras else {
        return String::new();
    };
    let mut table = String::from(
        "| scenario | server | MiB/s median (min–max) | × sink | × rustus | CPU s/GiB | peak RSS MiB | fragment p50/p99 ms |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let sink = rows
            .iter()
            .find(|r| {
                r.scenario == row.scenario
                    && r.contender
                        == if row.contender.contains("fsync") {
                            "sink --fsync"
                        } else {
                            "sink"
                        }
            })
            .and_then(|r| r.median("mib_per_s"));
        let ratio = match (row.median("mib_per_s"), sink) {
            (Some(m), Some(s)) if s > 0.0 => format!("{:.2}", m / s),
            _ => "–".into(),
        };
        // Ours against rustus with the same durability, where rustus ran.
        let peer = match row.contender {
            "upsession" => "rustus",
            "upsession --fsync always" => "rustus --force-fsync",
            _ => "",
        };
        let vs_peer = rows
            .iter()
            .find(|r| r.scenario == row.scenario && r.contender == peer)
            .and_then(|r| r.median("mib_per_s"));
        let vs_peer = match (row.median("mib_per_s"), vs_peer) {
            (Some(m), Some(p)) if p > 0.0 => format!("{:.2}", m / p),
            _ => "–".into(),
        };
        let gib = row
            .records
            .first()
            .and_then(|r| Some(num(r, "size")? * num(r, "uploads")? / f64::from(1 << 30)));
        let cpu = match (row.median("server_cpu_s"), gib) {
            (Some(c), Some(g)) if g > 0.0 => format!("{:.2}", c / g),
            _ => "–".into(),
        };
        let rss = row
            .median("server_peak_rss_kib")
            .map_or("–".into(), |k| format!("{:.1}", k / 1024.0));
        let lat = format!(
            "{:.1} / {:.1}",
            row.median("frag_p50_ms").unwrap_or(0.0),
            row.median("frag_p99_ms").unwrap_or(0.0)
        );
        let _ = writeln!(
            table,
            "| {} | {} | {} | {ratio} | {vs_peer} | {cpu} | {rss} | {lat} |",
            row.scenario,
            row.contender,
            row.spread("mib_per_s")
        );
    }
    let _ = writeln!(table, "\n| other figure | value |\n|---|---|");
    let _ = writeln!(
        table,
        "| our client, 1 upload ({big}) | {} MiB/s |",
        client["mib_per_s"]
    );
    let _ = writeln!(
        table,
        "| status GET p50 / p99 under {many} uploads | {} / {} ms |",
        probe.get("status_p50_ms").map_or("–", String::as_str),
        probe.get("status_p99_ms").map_or("–", String::as_str)
    );
    let _ = writeln!(
        table,
        "| RSS per idle session ({idle_n}) | {} bytes |",
        idle["rss_bytes_per_session"]
    );
    let _ = writeln!(
        table,
        "| restart with {idle_n} sessions: first answer | {} s |",
        restart["first_answer_s"]
    );
    table
}

/// Polls `url` until it answers 200 (at most 30 s); the time since `started`.
fn wait_for_answer(url: &str, started: Instant) -> Result<Duration, String> {
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .ok_or("bad URL")?
        .to_owned();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(format!("{url} did not answer within 30 s"))
}
