//! Crash torture: many concurrent uploads to a real `upsession serve` process that is
//! SIGKILLed at seeded random moments and restarted on the same data directory.
//!
//! After every restart, each upload asks its session what it has: the answer must be
//! exactly the bytes acknowledged before the kill (or, for a fragment that was sent
//! whole but not answered, those plus that fragment). Uploads that complete are
//! checked byte for byte and replaced by new ones, so kills also land during
//! completions. At the end every upload is finished and no partial file is left.
//!
//! ```text
//! torture --upsession PATH [--kills 200] [--seed S] [--uploads 8] [--size 1MiB]
//! ```

#![allow(clippy::cast_possible_truncation)] // sizes here are small

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use upsession_testbed::kit::{Graph, Serve};

const TOKEN: &str = "torture";
const FRAGMENT: usize = 64 * 1024;

fn start(bin: &Path, dir: &Path, listen: &str, fsync: &str) -> Serve {
    Serve::spawn(
        Command::new(bin)
            .args(["serve", "--listen", listen, "--token", TOKEN])
            .args(["--min-size", "1", "--max-fragment", "64KiB"])
            .args(["--fsync", fsync, "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "error"),
    )
}

/// One upload's state as the client knows it.
struct Upload {
    data: Bytes,
    url: String,
    acked: usize,
    /// End of a fragment sent whole whose answer never came.
    in_doubt: Option<usize>,
}

async fn open(graph: &Graph, data: Bytes) -> Upload {
    Upload {
        url: graph.open_session(data.len()).await,
        data,
        acked: 0,
        in_doubt: None,
    }
}

/// Sends fragments until the upload completes or the server goes away. Returns the
/// attachment's Location when it completed.
async fn drive(http: &reqwest::Client, u: &mut Upload) -> Option<String> {
    loop {
        // All stored but no Location seen: the final fragment again (answered 201).
        let start = if u.acked >= u.data.len() {
            (u.data.len() - 1) / FRAGMENT * FRAGMENT
        } else {
            u.acked
        };
        let end = (start + FRAGMENT).min(u.data.len());
        let sent = http
            .put(&u.url)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", end - 1, u.data.len()),
            )
            .body(u.data.slice(start..end))
            .send()
            .await;
        match sent {
            Ok(res) if res.status() == 201 => {
                return res
                    .headers()
                    .get("location")
                    .map(|l| l.to_str().expect("ASCII").to_owned());
            }
            Ok(res) if res.status() == 200 => u.acked = end,
            Ok(res) => panic!("fragment {start}-{} answered {}", end - 1, res.status()),
            Err(_) => {
                // The server died: the fragment may or may not have been stored.
                u.in_doubt = Some(end);
                return None;
            }
        }
    }
}

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Bytes {
    Bytes::from((0..len).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

#[derive(Default)]
struct Counts {
    kills: usize,
    completed: usize,
    bytes_verified: usize,
    doubt_kept: usize,
    doubt_dropped: usize,
}

#[tokio::main]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
async fn main() {
    let mut bin = PathBuf::from("upsession");
    let (mut kills, mut seed, mut uploads, mut size) = (200usize, 0u64, 8usize, 1usize << 20);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--upsession" => bin = v.into(),
            "--kills" => kills = v.parse().expect("a count"),
            "--seed" => seed = v.parse().expect("a number"),
            "--uploads" => uploads = v.parse().expect("a count"),
            "--size" => {
                size = v
                    .trim_end_matches("MiB")
                    .parse::<usize>()
                    .expect("N or NMiB")
                    << 20;
            }
            other => panic!("unknown flag {other}"),
        }
    }
    println!(
        "torture: seed {seed}, {kills} kills, {uploads} concurrent uploads of {size} bytes (replay with --seed {seed})"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = std::env::temp_dir().join(format!("upsession-torture-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut server = start(&bin, &dir, "127.0.0.1:0", "never");
    let listen = server.addr.clone();
    let graph = Graph::with_client(http.clone(), server.base.clone(), TOKEN);
    let mut live = Vec::new();
    for _ in 0..uploads {
        live.push(open(&graph, random_bytes(&mut rng, size)).await);
    }
    let mut c = Counts::default();
    let started = Instant::now();
    while c.kills < kills {
        // Let the uploads run, then kill the server under them.
        let (http2, moved) = (http.clone(), std::mem::take(&mut live));
        let runners: Vec<_> = moved
            .into_iter()
            .map(|mut u| {
                let http = http2.clone();
                tokio::spawn(async move {
                    let done = drive(&http, &mut u).await;
                    (u, done)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(1..40))).await;
        server.kill9();
        c.kills += 1;
        let mut finished = Vec::new();
        for r in runners {
            let (u, done) = r.await.expect("runner");
            match done {
                Some(location) => finished.push((u, location)),
                None => live.push(u),
            }
        }
        let fsync = if rng.bool() { "always" } else { "never" };
        server = start(&bin, &dir, &listen, fsync);
        // What survived: exactly the acknowledged bytes (plus a whole unanswered one).
        for u in &mut live {
            let status = graph.session_status(&u.url).await;
            let start = status["nextExpectedRanges"][0]
                .as_str()
                .map_or(u.data.len(), |r| {
                    r.split('-')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("a range")
                });
            match u.in_doubt.take() {
                Some(end) if start == end => c.doubt_kept += 1,
                Some(_) if start == u.acked => c.doubt_dropped += 1,
                _ if start == u.acked => {}
                _ => panic!(
                    "kill {}: the server expects byte {start}, the client had {} acknowledged (seed {seed})",
                    c.kills, u.acked
                ),
            }
            u.acked = start;
        }
        for (u, location) in finished {
            verify(&graph, &location, &u.data).await;
            c.completed += 1;
            c.bytes_verified += u.data.len();
            live.push(open(&graph, random_bytes(&mut rng, size)).await);
        }
    }
    // Finish everything, then no partial file may be left.
    for u in &mut live {
        let location = drive(&http, u)
            .await
            .expect("the server is up: the upload completes");
        verify(&graph, &location, &u.data).await;
        c.completed += 1;
        c.bytes_verified += u.data.len();
    }
    server.kill9();
    let parts = std::fs::read_dir(dir.join("sessions")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .count()
    });
    assert_eq!(parts, 0, "partial files left after every upload completed");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "torture: {} kills survived in {:.1} s; {} uploads completed byte-exact ({} MiB); \
         unanswered whole fragments: {} kept, {} dropped; acknowledged bytes lost: 0; partial files left: 0",
        c.kills,
        started.elapsed().as_secs_f64(),
        c.completed,
        c.bytes_verified >> 20,
        c.doubt_kept,
        c.doubt_dropped
    );
}

async fn verify(graph: &Graph, location: &str, data: &[u8]) {
    let stored = graph.download(location).await;
    assert!(stored == data, "an attachment's bytes differ");
}
