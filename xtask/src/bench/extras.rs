//! The figures beside throughput: status latency under load, our client uploading
//! one big file, memory per idle session, a restart with all of them on disk, and
//! one upload while thousands of preface-only HTTP/2 connections are held.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::options::Options;
use super::options::Sizes;
use super::record::{Record, median, num};
use super::runs::{fresh_dir, loadgen, next_dir};
use super::server::{Contender, TOKEN};
use crate::util::Profile;

/// Status latency under load, our CLI, the two client transports' minimal
/// examples, idle sessions, a restart with them and an upload beside preface-only
/// connections: one record each, in that order.
pub(super) fn extras(
    bin: &Path,
    profile: Profile,
    work: &Path,
    (z, o): (&Sizes, &Options),
    run_no: &mut usize,
) -> Result<Vec<Record>, String> {
    let probe = status_under_load(bin, work, run_no, (z, o))?;
    let client = our_client(bin, work, run_no, (z.big_bytes, o))?;
    let [async_client, blocking_client] =
        transport_examples(bin, profile, &next_dir(work, run_no), z.big_bytes)?;
    let (idle, restart) = idle_sessions(bin, &next_dir(work, run_no), z.idle)?;
    let flood = preface_only_flood(bin, &next_dir(work, run_no), z)?;
    Ok(vec![
        probe,
        client,
        async_client,
        blocking_client,
        idle,
        restart,
        flood,
    ])
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

/// Status latency while uploads run, `reps` times against upsession and against
/// the sink, alternating: the sink answers the same probe from memory with no
/// logic at all, so its figure is what the machine allows (client and server
/// share its cores).
fn status_under_load(
    bin: &Path,
    work: &Path,
    run_no: &mut usize,
    (z, o): (&Sizes, &Options),
) -> Result<Record, String> {
    let (small, many) = (z.small, z.many);
    let (mut ours, mut sink) = (Vec::new(), Vec::new());
    for round in 0..o.reps {
        // Each goes first in every other round.
        let mut order = [(Contender::Sink, &mut sink), (Contender::Ours, &mut ours)];
        order.rotate_left(round % 2);
        for (contender, runs) in order {
            let dir = fresh_dir(work, run_no, o.cache_fairness.then_some(z.small_total))?;
            let server = contender.start(bin, &dir)?;
            let args = ["--uploads", many, "--size", small, "--probe"];
            runs.push(loadgen(bin, &server.base, server.pid(), &args)?);
            drop(server);
            let _ = fs::remove_dir_all(&dir);
        }
    }
    let mut r = Record::new();
    r.insert("scenario".into(), "status GET under uploads".into());
    for (prefix, runs) in [("", &ours), ("sink_", &sink)] {
        for key in ["status_p50_ms", "status_p99_ms"] {
            if let Some(m) = median(runs.iter().filter_map(|r| num(r, key))) {
                r.insert(format!("{prefix}{key}"), format!("{m:.2}"));
            }
        }
    }
    Ok(r)
}

/// Writes `bytes` bytes of a fixed pattern to `dir/upload.bin`.
fn upload_file(dir: &Path, bytes: u64) -> Result<PathBuf, String> {
    let file = dir.join("upload.bin");
    let data: Vec<u8> = (0..bytes)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    fs::write(&file, data).map_err(|e| e.to_string())?;
    Ok(file)
}

/// The minimal upload programs of both client transports (`upload_async` on
/// reqwest and tokio, `upload_blocking` on ureq), built in `profile`: each one's
/// size (as built and stripped) and one upload of `big_bytes` at its defaults,
/// each against a fresh `upsession serve`.
fn transport_examples(
    bin: &Path,
    profile: Profile,
    dir: &Path,
    big_bytes: u64,
) -> Result<[Record; 2], String> {
    crate::util::build(
        profile,
        &["upsession-client-reqwest", "upsession-client-ureq"],
        &["--example", "upload_async", "--example", "upload_blocking"],
    )?;
    let file = upload_file(dir, big_bytes)?;
    let mut records = [Record::new(), Record::new()];
    for (r, (example, transport)) in records
        .iter_mut()
        .zip([("upload_async", "reqwest"), ("upload_blocking", "ureq")])
    {
        let program = bin.join("examples").join(example);
        let server = Contender::Ours.start(bin, &dir.join(example))?;
        let out = Command::new(&program)
            .arg(&file)
            .env("UPSESSION_BASE_URL", &server.base)
            .env("UPSESSION_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // "N bytes in S s (M MiB/s): LOCATION"
        let mib_s = stdout
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(n, _)| n.to_owned());
        let (true, Some(mib_s)) = (out.status.success(), mib_s) else {
            return Err(format!(
                "{example} failed: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            ));
        };
        r.insert(
            "scenario".into(),
            format!("{transport} client example, 1 upload"),
        );
        r.insert("mib_per_s".into(), mib_s);
        r.insert("binary_bytes".into(), file_len(&program).to_string());
        let stripped = dir.join(format!("{example}.stripped"));
        let stripped_len = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&program)
            .status()
            .is_ok_and(|s| s.success())
            .then(|| file_len(&stripped).to_string());
        r.insert(
            "stripped_bytes".into(),
            stripped_len.unwrap_or_else(|| "–".into()),
        );
    }
    Ok(records)
}

/// The size of the file at `path` (0 when it cannot be read).
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Our client uploading one big file, and `loadgen` uploading as much, each
/// `2 × reps` times, alternating (and which goes first, too), each against a fresh
/// server: the CLI's figure is
/// its whole process (start, draft, session, file reads, hash, resume state);
/// `loadgen`'s is its upload (session and fragments, bytes from memory).
///
/// The file is read once just before each CLI run, so its pages are as warm as
/// the bytes `loadgen` has just made. On this kind of VM the
/// host makes memory left idle for a second slow to touch again (a cached 150 MB
/// file read in 0.06 s warm, 0.44 s after 1 s idle, 0.8 s after 5 s), which
/// would otherwise measure the host, not the client.
fn our_client(
    bin: &Path,
    work: &Path,
    run_no: &mut usize,
    (big_bytes, o): (u64, &Options),
) -> Result<Record, String> {
    let file = upload_file(&next_dir(work, run_no), big_bytes)?;
    let fairness = o.cache_fairness.then_some(big_bytes);
    let (mut cli, mut lg) = (Vec::new(), Vec::new());
    for _ in 0..o.reps {
        // CLI, loadgen, loadgen, CLI in each repetition: each goes first as
        // often as the other, so neither always runs on the machine the other
        // has just left.
        for cli_turn in [true, false, false, true] {
            let dir = fresh_dir(work, run_no, fairness)?;
            let server = Contender::Ours.start(bin, &dir.join("data"))?;
            if cli_turn {
                warm(&file)?;
                cli.push(cli_upload(bin, &server.base, &dir.join("state"), &file)?);
            } else {
                let size = big_bytes.to_string();
                let args = ["--uploads", "1", "--size", &size];
                let r = loadgen(bin, &server.base, server.pid(), &args)?;
                lg.extend(num(&r, "seconds"));
            }
            drop(server);
            let _ = fs::remove_dir_all(&dir);
        }
    }
    #[allow(clippy::cast_precision_loss)] // figures for people to read
    let mib_s = |secs: f64| big_bytes as f64 / secs / f64::from(1 << 20);
    let (cli, lg) = (
        median(cli).ok_or("no CLI run")?,
        median(lg).ok_or("no loadgen run")?,
    );
    let mut r = Record::new();
    r.insert("scenario".into(), "our client, 1 upload".into());
    r.insert("seconds".into(), format!("{cli:.3}"));
    r.insert("mib_per_s".into(), format!("{:.1}", mib_s(cli)));
    r.insert("loadgen_mib_per_s".into(), format!("{:.1}", mib_s(lg)));
    r.insert("x_loadgen".into(), format!("{:.2}", lg / cli));
    Ok(r)
}

/// Reads `file` through once, so its pages are resident and recently touched.
fn warm(file: &Path) -> Result<(), String> {
    let mut f = fs::File::open(file).map_err(|e| e.to_string())?;
    std::io::copy(&mut f, &mut std::io::sink()).map_err(|e| e.to_string())?;
    Ok(())
}

/// `upsession upload` of `file` to `base`: its whole process's seconds.
fn cli_upload(bin: &Path, base: &str, state: &Path, file: &Path) -> Result<f64, String> {
    let started = Instant::now();
    let out = Command::new(bin.join("upsession"))
        .args(["upload", "--draft", "bench", "--json", "--base-url", base])
        .args(["--token", TOKEN, "--chunk-size", "4MiB", "--state-dir"])
        .arg(state)
        .arg(file)
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
    Ok(secs)
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
