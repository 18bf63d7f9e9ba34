//! `cluster`: ingest through 1, 2 and 3 upsession nodes sharing one three-node
//! Garage (replication factor 3) and one PostgreSQL, beside the disk backend, in
//! one run. Run by `cargo xtask bench --cluster`.
//!
//! cluster --bin-dir DIR [--reps N] [--quick] [--out FILE]
//!
//! Each measurement starts fresh upsession processes (a fresh database for the
//! shared ones) and runs `loadgen`, which sends each upload's fragments to the
//! nodes in turn and verifies every stored byte. Besides MiB/s and fragment
//! latency it reads how the CPU time was shared between upsession, Garage,
//! PostgreSQL and the load generator (from /proc), which is what bounds ingest on
//! a small machine. Prints a markdown table of medians; `--out` gets JSON lines.
//!
//! Beside them, the baselines of the same run on the same engines: a raw S3
//! client (object_store) uploading the same bytes into the same bucket as
//! multipart uploads of the same 4 MiB parts, as many at once, and PostgreSQL's
//! round trip (`SELECT 1`). Each upsession row then shows its throughput as a
//! ratio to raw S3's, and its fragment p50 as a ratio to a part PUT's.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // figures for people to read

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt as _;
use upsession_testbed::{Garage, Postgres};

const TOKEN: &str = "bench-token";

/// One `upsession serve` process.
struct Node {
    child: Child,
    base: String,
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(bin: &Path, extra: &[String], env: &[(&'static str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut child = Command::new(bin.join("upsession"))
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(["--min-size", "1", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the upsession binary runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("a banner");
        let base = first
            .strip_prefix("upsession serving ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected banner: {first:?}"))
            .to_owned();
        Self {
            child,
            base,
            _stdout: stdout,
            _dir: dir,
        }
    }

    /// `http://HOST:PORT`, without the version.
    fn origin(&self) -> String {
        self.base.trim_end_matches("/v1.0").to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of every live process, by command name.
fn cpu_by_command() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 11 and 12 after `)`.
        *out.entry(comm).or_insert(0.0) += (ticks(11) + ticks(12)) as f64 / 100.0;
    }
    out
}

fn group(comm: &str) -> Option<&'static str> {
    match comm {
        "upsession" => Some("upsession"),
        "garage" => Some("garage"),
        "loadgen" => Some("loadgen"),
        c if c.starts_with("postgres") => Some("postgres"),
        _ => None,
    }
}

fn cpu_groups(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for (comm, secs) in after {
        if let Some(g) = group(comm) {
            let was = before.get(comm).copied().unwrap_or(0.0);
            *out.entry(g).or_insert(0.0) += (secs - was).max(0.0);
        }
    }
    out
}

struct Scenario {
    name: &'static str,
    uploads: usize,
    size: &'static str,
    bytes: f64,
}

fn loadgen(bin: &Path, nodes: &[Node], s: &Scenario) -> BTreeMap<String, String> {
    let origins: Vec<String> = nodes.iter().map(Node::origin).collect();
    let out = Command::new(bin.join("loadgen"))
        .args(["--base-url", &nodes[0].base, "--token", TOKEN])
        .args(["--uploads", &s.uploads.to_string(), "--size", s.size])
        .args(["--nodes", &origins.join(",")])
        .output()
        .expect("loadgen runs");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// loadgen's fragment size: the raw S3 client's part size.
const PART: usize = 4 << 20;

/// What one raw S3 run came to.
struct Raw {
    mib_per_s: f64,
    part_p50_ms: f64,
    part_p99_ms: f64,
}

/// The scenario's bytes straight into the bucket through Garage node 0: each
/// upload an S3 multipart upload of [`PART`]-sized parts sent one after the
/// other (as a client sends fragments), the uploads all at once; then deleted.
fn raw_s3(garage: &Garage, s: &Scenario) -> Raw {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = Arc::new(garage.s3_client(0).expect("an S3 client"));
        let per_upload = (s.bytes as usize) / s.uploads;
        let data = bytes::Bytes::from(
            (0..per_upload)
                .map(|_| fastrand::u8(..))
                .collect::<Vec<u8>>(),
        );
        let started = Instant::now();
        let uploads: Vec<_> = (0..s.uploads)
            .map(|i| {
                let (store, data) = (Arc::clone(&store), data.clone());
                tokio::spawn(async move {
                    let path = object_store::path::Path::from(format!("raw-baseline/{i}"));
                    let mut upload = store
                        .put_multipart(&path)
                        .await
                        .expect("a multipart upload");
                    let mut parts = Vec::new();
                    let mut at = 0;
                    while at < data.len() {
                        let end = (at + PART).min(data.len());
                        let part = Instant::now();
                        upload
                            .put_part(data.slice(at..end).into())
                            .await
                            .expect("a part is stored");
                        parts.push(part.elapsed());
                        at = end;
                    }
                    upload.complete().await.expect("the upload completes");
                    (path, parts)
                })
            })
            .collect();
        let mut parts = Vec::new();
        let mut paths = Vec::new();
        for upload in uploads {
            let (path, times) = upload.await.expect("an upload task");
            paths.push(path);
            parts.extend(times);
        }
        let seconds = started.elapsed().as_secs_f64();
        for path in paths {
            let _ = store.delete(&path).await;
        }
        Raw {
            mib_per_s: s.bytes / seconds / 1_048_576.0,
            part_p50_ms: percentile_ms(&mut parts, 0.50),
            part_p99_ms: percentile_ms(&mut parts, 0.99),
        }
    })
}

/// PostgreSQL's round trip on one connection: the median of 200 `SELECT 1`.
fn pg_round_trip_ms(pg: &Postgres) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&pg.url("upsession"), tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL answers");
        tokio::spawn(connection);
        let mut times = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            client.simple_query("SELECT 1").await.expect("SELECT 1");
            times.push(start.elapsed());
        }
        percentile_ms(&mut times, 0.50)
    })
}

fn percentile_ms(times: &mut [Duration], q: f64) -> f64 {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What every measurement shares.
struct Bench {
    bin: PathBuf,
    reps: usize,
    pg: Postgres,
    garage: Garage,
    databases: usize,
    records: Vec<String>,
    /// The scenario's raw S3 medians (MiB/s, part p50 ms), once measured.
    raw: Option<(f64, f64)>,
}

impl Bench {
    /// Fresh nodes: one on disk (`nodes == 0`, with `fsync`), or `nodes` on a fresh
    /// database and the Garage cluster.
    fn nodes(&mut self, nodes: usize, fsync: &str) -> Vec<Node> {
        if nodes == 0 {
            return vec![Node::start(
                &self.bin,
                &["--fsync".into(), fsync.into()],
                &[],
            )];
        }
        self.databases += 1;
        let db = format!("bench{}", self.databases);
        self.pg.create_database(&db).expect("a database");
        let env = self.garage.env();
        (0..nodes)
            .map(|i| {
                let extra = vec![
                    "--store".into(),
                    self.garage.store_url(i % 3),
                    "--meta".into(),
                    self.pg.url(&db),
                ];
                Node::start(&self.bin, &extra, &env)
            })
            .collect()
    }

    /// `reps` runs of raw S3 for one scenario; its table row.
    fn measure_raw(&mut self, s: &Scenario) -> String {
        let runs: Vec<Raw> = (0..self.reps).map(|_| raw_s3(&self.garage, s)).collect();
        let mibs: Vec<f64> = runs.iter().map(|r| r.mib_per_s).collect();
        let p50 = median(runs.iter().map(|r| r.part_p50_ms).collect());
        let p99 = median(runs.iter().map(|r| r.part_p99_ms).collect());
        for r in &runs {
            self.records.push(format!(
                "{{\"scenario\":\"{}\",\"storage\":\"raw S3\",\"nodes\":0,\"mib_per_s\":{:.1},\"part_p50_ms\":{:.1},\"part_p99_ms\":{:.1}}}",
                s.name, r.mib_per_s, r.part_p50_ms, r.part_p99_ms
            ));
        }
        let mib = median(mibs.clone());
        self.raw = Some((mib, p50));
        format!(
            "| {} | raw S3 multipart, 4 MiB parts (object_store) | {mib:.0} ({:.0}–{:.0}) | 1.00 | {p50:.1} (part PUT) | {p99:.1} | 1.00 | – |\n",
            s.name,
            mibs.iter().copied().fold(f64::INFINITY, f64::min),
            mibs.iter().copied().fold(0.0, f64::max),
        )
    }

    /// `reps` runs of one scenario on one storage; its table row.
    fn measure(&mut self, s: &Scenario, name: &str, n: usize) -> String {
        let mut mibs = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for _ in 0..self.reps {
            let fsync = if name.contains("always") {
                "always"
            } else {
                "never"
            };
            let nodes = self.nodes(n, fsync);
            let before = cpu_by_command();
            let figures = loadgen(&self.bin, &nodes, s);
            let after = cpu_by_command();
            drop(nodes);
            let secs: f64 = figures["seconds"].parse().unwrap_or(f64::NAN);
            mibs.push(s.bytes / secs / 1_048_576.0);
            p50.push(figures["frag_p50_ms"].parse().unwrap_or(f64::NAN));
            p99.push(figures["frag_p99_ms"].parse().unwrap_or(f64::NAN));
            let mut groups = cpu_groups(&before, &after);
            if let Some(c) = figures.get("client_cpu_s").and_then(|v| v.parse().ok()) {
                groups.insert("loadgen", c);
            }
            for (g, v) in &groups {
                cpu.entry(g).or_default().push(*v);
            }
            self.records.push(format!(
                "{{\"scenario\":\"{}\",\"storage\":\"{name}\",\"nodes\":{n},\"mib_per_s\":{:.1},\"frag_p50_ms\":{},\"frag_p99_ms\":{},\"cpu\":{{{}}}}}",
                s.name,
                mibs.last().copied().unwrap_or(0.0),
                figures["frag_p50_ms"],
                figures["frag_p99_ms"],
                groups
                    .iter()
                    .map(|(g, v)| format!("\"{g}\":{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        let c = |g: &str| median(cpu.get(g).cloned().unwrap_or_default());
        let (raw_mib, raw_p50) = self.raw.unwrap_or((f64::NAN, f64::NAN));
        let (mib, p50) = (median(mibs.clone()), median(p50));
        // Ratios to S3 only for the nodes on it.
        let ratio = |x: f64| {
            if n == 0 {
                "–".to_owned()
            } else {
                format!("{x:.2}")
            }
        };
        format!(
            "| {} | {name} | {mib:.0} ({:.0}–{:.0}) | {} | {p50:.1} | {:.1} | {} | {:.1} / {:.1} / {:.1} / {:.1} |\n",
            s.name,
            mibs.iter().copied().fold(f64::INFINITY, f64::min),
            mibs.iter().copied().fold(0.0, f64::max),
            ratio(mib / raw_mib),
            median(p99),
            ratio(p50 / raw_p50),
            c("upsession"),
            c("garage"),
            c("postgres"),
            c("loadgen"),
        )
    }
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    if quick {
        return vec![Scenario {
            name: "4 × 2 MiB",
            uploads: 4,
            size: "2MiB",
            bytes: 4.0 * 2.0 * 1_048_576.0,
        }];
    }
    vec![
        Scenario {
            name: "16 × 16 MiB",
            uploads: 16,
            size: "16MiB",
            bytes: 16.0 * 16.0 * 1_048_576.0,
        },
        Scenario {
            name: "1 × 150 MB",
            uploads: 1,
            size: "150MB",
            bytes: 150e6,
        },
    ]
}

fn main() {
    let mut bin = PathBuf::from("target/release");
    let mut reps = 3;
    let mut quick = false;
    let mut out_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--bin-dir" => bin = args.next().expect("--bin-dir DIR").into(),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--out" => out_file = args.next(),
            other => panic!("unknown flag {other}"),
        }
    }
    let mut bench = Bench {
        bin,
        reps: if quick { 1 } else { reps },
        pg: Postgres::start().expect("PostgreSQL starts"),
        garage: Garage::start(3).expect("Garage starts (cargo xtask engines installs it)"),
        databases: 0,
        records: Vec::new(),
        raw: None,
    };
    let round_trip = pg_round_trip_ms(&bench.pg);
    let mut contenders: Vec<(String, usize)> = vec![
        ("disk, --fsync always".into(), 0),
        ("disk, --fsync never".into(), 0),
    ];
    for n in 1..=3 {
        let plural = if n > 1 { "s" } else { "" };
        contenders.push((format!("{n} node{plural} on Garage + PostgreSQL"), n));
    }
    let mut table = String::from(
        "| scenario | storage | MiB/s (median, min–max) | × raw S3 | frag p50 ms | frag p99 ms | p50 × part PUT | CPU s: upsession / garage / postgres / loadgen |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in &scenarios(quick) {
        let line = bench.measure_raw(s);
        print!("{line}");
        table.push_str(&line);
        for (name, n) in &contenders {
            let line = bench.measure(s, name, *n);
            print!("{line}");
            let _ = std::io::stdout().flush();
            table.push_str(&line);
        }
    }
    println!("\n{table}");
    println!("PostgreSQL round trip (SELECT 1, one connection), p50: {round_trip:.2} ms");
    if let Some(path) = out_file {
        std::fs::write(&path, bench.records.join("\n") + "\n")
            .expect("the JSON lines file is written");
    }
}
