//! A Graph-protocol load generator: creates drafts and upload sessions on a running
//! server and uploads files of pseudo-random bytes with fixed fragments, then checks
//! each attachment's SHA-256. It measures the server, not a client library: requests
//! are plain and fragments are slices of one buffer.
//!
//! ```text
//! loadgen --base-url http://127.0.0.1:8080/v1.0 --token T --uploads 16 --size 16MiB [--fragment 4MiB] [--pid PID]
//! ```
//!
//! Prints one line of `key=value` figures: bytes, seconds, MiB/s, fragment latency
//! p50/p99, and (with `--pid`) the server's peak RSS and CPU seconds from /proc.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // figures for people to read

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Args {
    base: String,
    token: String,
    uploads: usize,
    size: usize,
    fragment: usize,
    pid: Option<u32>,
}

fn parse_size(s: &str) -> usize {
    let (num, mult) = if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else {
        (s, 1)
    };
    num.parse::<usize>().expect("a size like 16MiB") * mult
}

fn args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:8080/v1.0".into(),
        token: String::new(),
        uploads: 1,
        size: 150_000_000,
        fragment: 4 << 20,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--base-url" => a.base = v,
            "--token" => a.token = v,
            "--uploads" => a.uploads = v.parse().expect("a count"),
            "--size" => a.size = parse_size(&v),
            "--fragment" => a.fragment = parse_size(&v),
            "--pid" => a.pid = Some(v.parse().expect("a pid")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// (peak RSS in KiB, CPU seconds) of a process, from /proc.
fn proc_figures(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((hwm, ticks as f64 / 100.0))
}

async fn upload(http: reqwest::Client, a: &Args, data: Bytes) -> (Vec<Duration>, Instant) {
    let draft: Value = http
        .post(format!("{}/me/messages", a.base))
        .bearer_auth(&a.token)
        .json(&json!({"subject": "load"}))
        .send()
        .await
        .expect("server reachable")
        .json()
        .await
        .expect("draft JSON");
    let id = draft["id"].as_str().expect("draft id");
    let item = json!({"AttachmentItem": {"attachmentType": "file", "name": "load.bin", "size": data.len()}});
    let session: Value = http
        .post(format!(
            "{}/me/messages/{id}/attachments/createUploadSession",
            a.base
        ))
        .bearer_auth(&a.token)
        .json(&item)
        .send()
        .await
        .expect("server reachable")
        .json()
        .await
        .expect("session JSON");
    let url = session["uploadUrl"].as_str().expect("uploadUrl").to_owned();
    let mut latencies = Vec::new();
    let mut start = 0;
    let location = loop {
        let end = (start + a.fragment).min(data.len());
        let t = Instant::now();
        let res = http
            .put(&url)
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
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = res.bytes().await;
        latencies.push(t.elapsed());
        match status.as_u16() {
            200 => start = end,
            201 => break location.expect("201 has a Location"),
            other => panic!("fragment {start}-{end} answered {other}"),
        }
    };
    let uploaded = Instant::now();
    let stored = http
        .get(format!("{location}/$value"))
        .bearer_auth(&a.token)
        .send()
        .await
        .expect("attachment readable")
        .bytes()
        .await
        .expect("attachment bytes");
    assert_eq!(
        Sha256::digest(&stored),
        Sha256::digest(&data),
        "stored bytes differ"
    );
    (latencies, uploaded)
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut rng = fastrand::Rng::with_seed(42);
    let data = Bytes::from((0..a.size).map(|_| rng.u8(..)).collect::<Vec<u8>>());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let a = std::sync::Arc::new(a);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.uploads)
        .map(|_| {
            let (http, a, data) = (http.clone(), a.clone(), data.clone());
            tokio::spawn(async move { upload(http, &a, data).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut last = started;
    for t in tasks {
        let (l, uploaded) = t.await.expect("upload task");
        latencies.extend(l);
        last = last.max(uploaded);
    }
    // Ingest time: until the last fragment was answered (verification reads excluded).
    let secs = (last - started).as_secs_f64();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    let total = (a.size * a.uploads) as f64;
    let mut line = format!(
        "uploads={} size={} fragment={} seconds={secs:.3} mib_per_s={:.1} frag_p50_ms={:.2} frag_p99_ms={:.2}",
        a.uploads,
        a.size,
        a.fragment,
        total / secs / f64::from(1 << 20),
        pct(0.5),
        pct(0.99)
    );
    if let Some((hwm, cpu)) = a.pid.and_then(proc_figures) {
        let _ = write!(line, " server_peak_rss_kib={hwm} server_cpu_s={cpu:.2}");
    }
    println!("{line}");
}
