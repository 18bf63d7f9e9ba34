//! `kill -9` of a real `upsession serve` process in the middle of an upload, again
//! and again, restarted on the same data directory: nothing acknowledged is lost,
//! nothing unacknowledged is counted, and the upload completes with the exact bytes.
//!
//! `CRASH_SEED` picks the kill points (default 1); `CRASH_KILLS` how many (default 20).

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

const TOKEN: &str = "crash-token";
const FRAGMENT: usize = 64 * 1024;

mod common;
use common::Serve;

fn serve(dir: &std::path::Path, listen: &str, fsync: &str) -> Serve {
    Serve::start(
        dir,
        listen,
        &[
            "--token",
            TOKEN,
            "--min-size",
            "1",
            "--max-fragment",
            "64KiB",
            "--fsync",
            fsync,
        ],
    )
}

async fn put(
    http: &reqwest::Client,
    url: &str,
    data: &[u8],
    start: usize,
) -> reqwest::Result<reqwest::Response> {
    common::put(http, url, data, start, FRAGMENT).await
}

async fn partial_put(url: &str, data: &[u8], start: usize, sent: usize) -> tokio::net::TcpStream {
    common::partial_put(url, data, start, FRAGMENT, sent).await
}

async fn expected_start(http: &reqwest::Client, url: &str, total: usize) -> usize {
    let status: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    match status["nextExpectedRanges"][0].as_str() {
        Some(r) => r.split('-').next().unwrap().parse().unwrap(),
        None => total,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_fragments_survive_kill_9_and_the_upload_completes() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("crash test: seed {seed}, {kills} kills (replay with CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..FRAGMENT * 3 * kills + 12_345)
        .map(|_| rng.u8(..))
        .collect();
    let http = reqwest::Client::new();

    let mut server = serve(dir.path(), "127.0.0.1:0", "never");
    let listen = server.addr.clone();
    let base = format!("http://{listen}/v1.0");
    let url = common::open_session(&base, TOKEN, data.len()).await;

    let mut acked = 0usize; // bytes the server has answered 2xx for
    let mut in_doubt: Option<usize> = None; // end of a fragment sent whole but not answered
    for kill in 0..kills {
        // A few acknowledged fragments, then one of three ways to die.
        for _ in 0..rng.usize(0..3) {
            let res = put(&http, &url, &data, acked).await.unwrap();
            assert_eq!(res.status(), 200);
            acked = (acked + FRAGMENT).min(data.len());
        }
        let _socket = match rng.u8(0..3) {
            0 => None, // between fragments
            1 => Some(partial_put(&url, &data, acked, rng.usize(1..FRAGMENT)).await), // mid-body
            _ => {
                // The whole fragment sent, killed while the server writes and records it.
                in_doubt = Some((acked + FRAGMENT).min(data.len()));
                Some(partial_put(&url, &data, acked, FRAGMENT).await)
            }
        };
        tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
        server.kill9();
        let fsync = if rng.bool() { "always" } else { "never" };
        server = serve(dir.path(), &listen, fsync);
        let start = expected_start(&http, &url, data.len()).await;
        match in_doubt.take() {
            Some(end) => assert!(
                start == acked || start == end,
                "kill {kill}: expected {acked} or {end}, server says {start}"
            ),
            None => assert_eq!(
                start, acked,
                "kill {kill}: acknowledged bytes lost or unacknowledged bytes counted"
            ),
        }
        acked = start;
    }
    // Finish the upload.
    let mut location = None;
    while location.is_none() {
        let res = put(&http, &url, &data, acked).await.unwrap();
        match res.status().as_u16() {
            200 => acked += FRAGMENT,
            201 => location = Some(res.headers()["location"].to_str().unwrap().to_owned()),
            other => panic!("unexpected {other}"),
        }
    }
    let bytes = http
        .get(format!("{}/$value", location.unwrap()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        Sha256::digest(&bytes),
        Sha256::digest(&data),
        "the attachment is the exact file"
    );
    server.kill9();
}
