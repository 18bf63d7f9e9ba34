//! A Graph-protocol load generator: creates drafts and upload sessions on a running
//! server and uploads files of pseudo-random bytes with fixed fragments, then reads
//! each attachment back, streamed, and checks its CRC-32C (a tus upload: its SHA-256).
//! It measures the server, not a client library: requests are plain and fragments
//! are slices of one buffer.
//!
//! ```text
//! loadgen --base-url URL --token T --uploads 16 --size 16MiB [--fragment 4MiB] [--pid PID] [--probe]
//! loadgen ... --uploads 4 --rounds 16 --size 4MiB  (each of 4 uploads sends 16 files in turn)
//! loadgen --base-url URL --token T --idle 10000 [--size 3MB] [--pid PID]
//! loadgen ... --nodes http://127.0.0.1:A,http://127.0.0.1:B  (fragments alternate nodes)
//! loadgen --tus http://127.0.0.1:PORT/files --uploads 16 --size 16MiB  (a tus server)
//! loadgen ... --h2-idle 5000  (uploads while holding 5000 preface-only HTTP/2 connections)
//! ```
//!
//! The checks run once every upload has sent its files, outside the measured
//! window.
//!
//! Prints one line of `key=value` figures: the uploads, rounds, size and fragment,
//! seconds, MiB/s, fragment latency p50/p99, the reads' MiB/s (`read_mib_per_s`,
//! from the first read's start to the last one's end, all after the uploads), with
//! `--probe` the latency of `GET uploadUrl` of another session while the uploads
//! run, and with `--pid` the server's RSS (peak and now) and CPU seconds from
//! /proc: `server_cpu_s` in its whole life (10 ms ticks), `server_ingest_cpu_s`
//! from the uploads' start to the moment all have sent their files (its threads'
//! exact run times). `--idle N` only creates N sessions and leaves them idle.
//! `--h2-idle N` first opens N connections that send the HTTP/2 preface and
//! nothing more (from 127.0.0.2 on, 400 per address), holds them through the
//! uploads, and reports how many the server kept open, closed, or refused.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // figures for people to read

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

use futures_util::StreamExt as _;
use tokio::net::TcpStream;
use upsession_testbed::kit::{Graph, H2_PREFACE, read_until_closed};

/// The load and where it goes.
#[derive(Debug, clap::Parser)]
#[command(
    name = "loadgen",
    about = "Uploads files of pseudo-random bytes to a Graph-compatible (or tus) server and prints one line of figures."
)]
struct Args {
    /// The Graph base URL.
    #[arg(long = "base-url", default_value = "http://127.0.0.1:8080/v1.0")]
    base: String,
    /// The bearer token.
    #[arg(long, default_value = "")]
    token: String,
    /// Uploads at once.
    #[arg(long, default_value_t = 1)]
    uploads: usize,
    /// Files each of the `--uploads` uploads sends, one after another: many small
    /// files make a run long enough to measure, at the same concurrency.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: u32,
    /// Bytes per file (`16MiB`, `150MB`, `1GiB`, or a count).
    #[arg(long, default_value = "150MB", value_parser = parse_size)]
    size: usize,
    /// Bytes per fragment.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    fragment: usize,
    /// The server's process, for its RSS and CPU from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Only create this many sessions and leave them idle.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Measure `GET uploadUrl` of another session while the uploads run.
    #[arg(long)]
    probe: bool,
    /// Nodes sharing one store (`http://HOST:PORT`, comma-separated): fragment
    /// `i` of upload `u` goes to node `(u + i) % n`, so each upload alternates
    /// between them.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// A tus server's creation URL (`http://HOST:PORT/files`): the same bytes are
    /// uploaded over tus 1.0 (creation, then `PATCH`es) instead of Graph's protocol.
    #[arg(long)]
    tus: Option<String>,
    /// Preface-only HTTP/2 connections held through the uploads (at most 100,000).
    #[arg(long = "h2-idle", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    h2_idle: u32,
}

/// A size such as `16MiB`, `150MB`, `1GiB` or a count of bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    const UNITS: [(&str, usize); 6] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ];
    let (num, mult) = UNITS
        .iter()
        .find_map(|(unit, mult)| Some((s.strip_suffix(unit)?, *mult)))
        .unwrap_or((s, 1));
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size like 16MiB, 150MB or 1GiB"))
}

/// (peak RSS in KiB, current RSS in KiB, CPU seconds) of a process, from /proc.
fn proc_figures(pid: u32) -> Option<(u64, u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (hwm, rss) = (field("VmHWM:")?, field("VmRSS:")?);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((hwm, rss, ticks as f64 / 100.0))
}

/// The Graph endpoint under load, through `http`.
fn graph(http: &reqwest::Client, a: &Args) -> Graph {
    Graph::with_client(http.clone(), a.base.clone(), a.token.clone())
}

/// Creates a draft and an upload session of `size` bytes; returns the uploadUrl.
async fn open_session(http: &reqwest::Client, a: &Args, size: usize) -> String {
    graph(http, a).open_session(size).await
}

/// Checks that what the server stored is `data`, byte for byte.
fn assert_stored(stored: &[u8], data: &[u8]) {
    assert!(
        Sha256::digest(stored) == Sha256::digest(data),
        "stored bytes differ"
    );
}

/// What one upload left to check once its task has sent all its files: the
/// attachment's (Graph) or the upload's (tus) URL.
enum Check {
    Graph(String),
    Tus(String),
}

/// Uploads `data` with fixed fragments; returns the fragment latencies, when the
/// last fragment was answered and what to check.
async fn upload(
    http: &reqwest::Client,
    a: &Args,
    data: &Bytes,
    n: usize,
) -> (Vec<Duration>, Instant, Check) {
    let url = open_session(http, a, data.len()).await;
    // The uploadUrl's path and query, for sending fragments to other nodes.
    let path = url.find("/uploads/").map(|i| url[i..].to_owned());
    let mut latencies = Vec::new();
    let mut start = 0;
    let mut i = n;
    let location = loop {
        let end = (start + a.fragment).min(data.len());
        let target = match (&path, a.nodes.len()) {
            (Some(path), k) if k > 0 => format!("{}{path}", a.nodes[i % k]),
            _ => url.clone(),
        };
        i += 1;
        let t = Instant::now();
        let res = http
            .put(&target)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", end - 1, data.len()),
            )
            .body(data.slice(start..end))
            .send()
            .await
            .expect("fragment sent");
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().expect("ASCII").to_owned());
        let _ = res.bytes().await;
        latencies.push(t.elapsed());
        match status.as_u16() {
            200 | 202 => start = end,
            201 => break location.expect("201 has a Location"),
            other => panic!("fragment {start}-{end} answered {other}"),
        }
    };
    (latencies, Instant::now(), Check::Graph(location))
}

/// Reads back what [`upload`] or [`upload_tus`] stored and checks it is `data`.
async fn verify(http: &reqwest::Client, a: &Args, data: &Bytes, check: Check) {
    let location = match check {
        Check::Graph(location) => location,
        Check::Tus(url) => {
            let stored = http
                .get(&url)
                .send()
                .await
                .expect("upload readable")
                .bytes()
                .await
                .expect("upload bytes");
            assert_stored(&stored, data);
            return;
        }
    };
    let started = Instant::now();
    // Streamed and summed as it comes (CRC-32C keeps up with any server here;
    // collecting and SHA-256 made this client the read's bottleneck).
    let mut res = graph(http, a).value(&location).await;
    assert_eq!(res.status(), 200, "GET {location}/$value");
    let (mut read, mut sum) = (0, crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi));
    while let Some(chunk) = res.chunk().await.expect("the attachment's bytes") {
        read += chunk.len();
        sum.update(&chunk);
    }
    READ.record(started, read);
    assert!(
        read == data.len()
            && sum.finalize() == crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data),
        "stored bytes differ"
    );
}

/// The verification reads (`GET …/$value`): their bytes and the time from the
/// first one's start to the last one's end, for the read throughput.
struct Reads(std::sync::Mutex<Option<(Instant, Instant, usize)>>);

static READ: Reads = Reads(std::sync::Mutex::new(None));

impl Reads {
    fn record(&self, started: Instant, bytes: usize) {
        let now = Instant::now();
        let mut window = self.0.lock().expect("reads lock");
        let (first, last, total) = window.get_or_insert((started, now, 0));
        *first = (*first).min(started);
        *last = now;
        *total += bytes;
    }

    fn mib_per_s(&self) -> Option<f64> {
        let (first, last, total) = (*self.0.lock().expect("reads lock"))?;
        let secs = (last - first).as_secs_f64();
        (secs > 0.0).then(|| total as f64 / secs / f64::from(1 << 20))
    }
}

/// [`upload`] over tus 1.0: creation, then `PATCH`es of the same fragment size at
/// their offsets; checked by a `GET` of the upload (tus's "getting" extension).
async fn upload_tus(
    http: &reqwest::Client,
    a: &Args,
    data: &Bytes,
) -> (Vec<Duration>, Instant, Check) {
    let create = a.tus.as_deref().expect("tus mode");
    let res = http
        .post(create)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len())
        .send()
        .await
        .expect("tus server reachable");
    assert_eq!(res.status().as_u16(), 201, "tus creation");
    let location = res.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let url = if location.starts_with("http") {
        location
    } else {
        let origin = create.split('/').take(3).collect::<Vec<_>>().join("/");
        format!("{origin}{location}")
    };
    let mut latencies = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + a.fragment).min(data.len());
        let t = Instant::now();
        let res = http
            .patch(&url)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", start)
            .header("Content-Type", "application/offset+octet-stream")
            .body(data.slice(start..end))
            .send()
            .await
            .expect("fragment sent");
        let status = res.status().as_u16();
        let _ = res.bytes().await;
        latencies.push(t.elapsed());
        assert_eq!(status, 204, "tus PATCH {start}-{end}");
        start = end;
    }
    (latencies, Instant::now(), Check::Tus(url))
}

/// One of the `--uploads` tasks: `--rounds` files one after another; then, once
/// every task has sent its files (`sent`, shared with `main`), their checks,
/// outside the measured window. Returns its fragment latencies and when its last
/// fragment was answered.
async fn task(
    http: reqwest::Client,
    a: Arc<Args>,
    data: Bytes,
    n: usize,
    sent: Arc<tokio::sync::Barrier>,
) -> (Vec<Duration>, Instant) {
    let (mut latencies, mut checks, mut last) = (Vec::new(), Vec::new(), Instant::now());
    for _ in 0..a.rounds {
        let (l, uploaded, check) = if a.tus.is_some() {
            upload_tus(&http, &a, &data).await
        } else {
            upload(&http, &a, &data, n).await
        };
        latencies.extend(l);
        checks.push(check);
        last = uploaded;
    }
    sent.wait().await;
    for check in checks {
        verify(&http, &a, &data, check).await;
    }
    (latencies, last)
}

/// The CPU time of process `pid` in nanoseconds: the sum of its threads'
/// `schedstat` run times (exact, where `/proc/PID/stat` counts 10 ms ticks and
/// one 150 MB upload is 6–11 of them). Threads that ended are not counted,
/// so it is for windows shorter than the runtime's idle-thread keep-alive (10 s).
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    // A thread that ends between the listing and its read is skipped, as one
    // that ended before the listing is.
    Some(
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|stat| run_ns(&stat))
            .sum(),
    )
}

/// The run time (nanoseconds, its first field) of a `schedstat` line.
fn run_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// `GET uploadUrl` of `url` in a loop until `stop` (at most 100,000 times).
async fn probe(http: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) && out.len() < 100_000 {
        let t = Instant::now();
        let res = http.get(&url).send().await.expect("status reachable");
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await;
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

fn proc_suffix(pid: Option<u32>) -> String {
    match pid.and_then(proc_figures) {
        Some((hwm, rss, cpu)) => {
            format!(" server_peak_rss_kib={hwm} server_rss_kib={rss} server_cpu_s={cpu:.2}")
        }
        None => String::new(),
    }
}

/// Connects from `from` and sends the HTTP/2 preface (within 10 s), or `None`.
async fn preface_only(server: std::net::SocketAddr, from: IpAddr) -> Option<TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    tokio::time::timeout(Duration::from_secs(10), async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(std::net::SocketAddr::new(from, 0)).ok()?;
        let mut stream = socket.connect(server).await.ok()?;
        stream.write_all(H2_PREFACE).await.ok()?;
        Some(stream)
    })
    .await
    .ok()
    .flatten()
}

/// `n` preface-only connections to the server of `base`, 64 being opened at a
/// time, from 127.0.0.2 on (400 per address: under the server's default cap per
/// address); those that could not be opened are `None`.
async fn hold_preface_only(base: &str, n: usize) -> Vec<Option<TcpStream>> {
    let url = reqwest::Url::parse(base).expect("a base URL");
    let host = url.host_str().expect("a host");
    let port = url.port_or_known_default().expect("a port");
    let server = tokio::net::lookup_host((host, port))
        .await
        .expect("the server's address")
        .find(std::net::SocketAddr::is_ipv4)
        .expect("an IPv4 server");
    futures_util::stream::iter(0..n)
        .map(|i| {
            preface_only(
                server,
                IpAddr::from([127, 0, (i / 400 / 250) as u8, 2 + (i / 400 % 250) as u8]),
            )
        })
        .buffered(64)
        .collect()
        .await
}

/// What became of the held connections: ` hostile_*` figures. Each is read for
/// up to 500 ms: refused (an HTTP/1.1 503), closed by the server (evicted or
/// timed out), or still open.
async fn hostile_figures(held: Vec<Option<TcpStream>>) -> String {
    let n = held.len();
    let seen = futures_util::future::join_all(held.into_iter().flatten().map(|mut s| async move {
        let (got, closed) = read_until_closed(&mut s, Duration::from_millis(500)).await;
        (got.starts_with(b"HTTP/1.1 503"), closed)
    }))
    .await;
    let failed = n - seen.len();
    let refused = seen.iter().filter(|(r, _)| *r).count();
    let closed = seen.iter().filter(|(r, c)| !*r && *c).count();
    let open = seen.len() - refused - closed;
    format!(
        " hostile_h2={n} hostile_open={open} hostile_closed={closed} hostile_refused={refused} hostile_not_connected={failed}"
    )
}

/// Makes a panic in any task end the process, with its message: a failed upload
/// or check would otherwise leave the other tasks waiting for it at the barrier.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
}

#[tokio::main]
async fn main() {
    exit_on_panic();
    let a = <Args as clap::Parser>::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    if a.idle > 0 {
        let started = Instant::now();
        for _ in 0..a.idle {
            let _ = open_session(&http, &a, a.size).await;
        }
        println!(
            "idle_sessions={} seconds={:.3}{}",
            a.idle,
            started.elapsed().as_secs_f64(),
            proc_suffix(a.pid)
        );
        return;
    }
    let mut rng = fastrand::Rng::with_seed(42);
    let data = Bytes::from((0..a.size).map(|_| rng.u8(..)).collect::<Vec<u8>>());
    let a = Arc::new(a);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = if a.probe {
        let url = open_session(&http, &a, a.size.max(3_000_000)).await;
        let stop = stop.clone();
        // On a thread and runtime of its own: what it measures is the server's
        // answer, not how long the uploads' busy runtime takes to poll it.
        Some(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("probe runtime");
            runtime.block_on(probe(reqwest::Client::new(), url, stop))
        }))
    } else {
        None
    };
    let held = hold_preface_only(&a.base, a.h2_idle as usize).await;
    let cpu_before = a.pid.and_then(cpu_ns);
    let started = Instant::now();
    // Every task, and this one: the checks start once all files are sent.
    let sent = Arc::new(tokio::sync::Barrier::new(a.uploads + 1));
    let tasks: Vec<_> = (0..a.uploads)
        .map(|n| {
            let task = task(http.clone(), a.clone(), data.clone(), n, sent.clone());
            tokio::spawn(task)
        })
        .collect();
    sent.wait().await;
    let cpu_after = a.pid.and_then(cpu_ns);
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, mut last) = (Vec::new(), started);
    for t in tasks {
        let (l, uploaded) = t.await.expect("upload task");
        latencies.extend(l);
        last = last.max(uploaded);
    }
    // Ingest time: until the last fragment was answered (verification reads excluded).
    let secs = (last - started).as_secs_f64();
    let mut probes = match prober {
        Some(p) => p.join().expect("probe thread"),
        None => Vec::new(),
    };
    probes.sort();
    latencies.sort();
    let total = (a.size * a.uploads) as f64 * f64::from(a.rounds);
    let mut line = format!(
        "uploads={} rounds={} size={} fragment={} seconds={secs:.3} mib_per_s={:.1} frag_p50_ms={:.2} frag_p99_ms={:.2}",
        a.uploads,
        a.rounds,
        a.size,
        a.fragment,
        total / secs / f64::from(1 << 20),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    if let Some(read) = READ.mib_per_s() {
        let _ = write!(line, " read_mib_per_s={read:.1}");
    }
    if !probes.is_empty() {
        let _ = write!(
            line,
            " status_p50_ms={:.2} status_p99_ms={:.2}",
            percentile(&probes, 0.5),
            percentile(&probes, 0.99)
        );
    }
    if a.h2_idle > 0 {
        line += &hostile_figures(held).await;
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        // The uploads alone: not the server's start nor the checks' reads.
        let _ = write!(
            line,
            " server_ingest_cpu_s={:.3}",
            after.saturating_sub(before) as f64 / 1e9
        );
    }
    line += &proc_suffix(a.pid);
    if let Some((_, _, cpu)) = proc_figures(std::process::id()) {
        let _ = write!(line, " client_cpu_s={cpu:.2}");
    }
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units_and_refuse_the_rest() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("150MB"), Ok(150_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3KB"), Ok(3000));
        assert_eq!(parse_size("1234"), Ok(1234));
        for bad in ["", "MiB", "12XB", "-1MB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_threads_run_time_is_the_first_field_of_its_schedstat() {
        assert_eq!(run_ns("580544 1200 7\n"), Some(580_544));
        assert_eq!(run_ns(""), None);
        assert_eq!(run_ns("x 1 2"), None);
        // This process has run, so its threads' sum is above zero.
        assert!(cpu_ns(std::process::id()).is_some_and(|ns| ns > 0));
    }

    #[test]
    fn flags_parse_and_defaults_hold() {
        let a = <Args as clap::Parser>::try_parse_from([
            "loadgen",
            "--uploads",
            "16",
            "--size",
            "16MiB",
            "--probe",
            "--nodes",
            "http://a,http://b",
        ])
        .unwrap();
        assert_eq!(
            (a.uploads, a.size, a.fragment, a.probe),
            (16, 16 << 20, 4 << 20, true)
        );
        assert_eq!(a.nodes, ["http://a", "http://b"]);
        assert_eq!(a.rounds, 1, "one file per upload unless asked");
        let a = <Args as clap::Parser>::try_parse_from(["loadgen", "--rounds", "16"]).unwrap();
        assert_eq!(a.rounds, 16);
        assert!(<Args as clap::Parser>::try_parse_from(["loadgen", "--rounds", "0"]).is_err());
        assert!(
            <Args as clap::Parser>::try_parse_from(["loadgen", "--h2-idle", "100001"]).is_err()
        );
    }
}
