//! The figures beside throughput: status latency under load, our client uploading
//! one big file, memory per idle session, a restart with all of them on disk, and
//! one upload while thousands of preface-only HTTP/2 connections are held.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::options::Sizes;
use super::record::{Record, num};
use super::runs::{loadgen, next_dir};
use super::server::{Contender, TOKEN};

/// Status latency under load, our client, idle sessions, a restart with them and
/// an upload beside preface-only connections: one record each, in that order.
pub(super) fn extras(
    bin: &Path,
    work: &Path,
    z: &Sizes,
    run_no: &mut usize,
) -> Result<Vec<Record>, String> {
    let probe = status_under_load(bin, &next_dir(work, run_no), z)?;
    let client = our_client(bin, &next_dir(work, run_no), z.big_bytes)?;
    let (idle, restart) = idle_sessions(bin, &next_dir(work, run_no), z.idle)?;
    let flood = preface_only_flood(bin, &next_dir(work, run_no), z)?;
    Ok(vec![probe, client, idle, restart, flood])
}

/// One upload of `big` while `h2_idle` connections that sent only the HTTP/2
/// preface are held against the same server (default limits: 4,096 connections,
/// 512 per address); loadgen fails unless the upload completes byte-exact.
fn preface_only_flood(bin: &Path, dir: &Path, z: &Sizes) -> Result<Record, String> {
    let server = Contender::Ours.start(bin, dir)?;
    let n = z.h2_idle.to_string();
    let mut r = loadgen(
        bin,
        &server.base,
        server.pid(),
        &["--uploads", "1", "--size", z.big, "--h2-idle", &n],
    )?;
    r.insert(
        "scenario".into(),
        format!("1 upload beside {n} preface-only HTTP/2 connections"),
    );
    Ok(r)
}

/// Status latency while uploads run.
fn status_under_load(bin: &Path, dir: &Path, z: &Sizes) -> Result<Record, String> {
    let (small, many) = (z.small, z.many);
    let server = Contender::Ours.start(bin, dir)?;
    let mut r = loadgen(
        bin,
        &server.base,
        server.pid(),
        &["--uploads", many, "--size", small, "--probe"],
    )?;
    r.insert("scenario".into(), "status GET under uploads".into());
    Ok(r)
}

/// Our client uploading one big file.
fn our_client(bin: &Path, dir: &Path, big_bytes: u64) -> Result<Record, String> {
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
    Ok(r)
}

/// Idle sessions, then a restart with all of them on disk.
fn idle_sessions(bin: &Path, dir: &Path, idle_n: usize) -> Result<(Record, Record), String> {
    let server = Contender::Ours.start(bin, dir)?;
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
    let server = Contender::Ours.start(bin, dir)?;
    let url = format!("{}/healthz", server.base.trim_end_matches("/v1.0"));
    let first_answer = wait_for_answer(&url, started)?;
    let mut r = Record::new();
    r.insert("scenario".into(), format!("restart with {idle_n} sessions"));
    r.insert(
        "first_answer_s".into(),
        format!("{:.3}", first_answer.as_secs_f64()),
    );
    Ok((after, r))
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
