//! `kill -9` of a real `upsession serve` process in the middle of an upload, again
//! and again, restarted on the same data directory: nothing acknowledged is lost,
//! nothing unacknowledged is counted, and the upload completes with the exact bytes.
//!
//! `CRASH_SEED` picks the kill points (default 1); `CRASH_KILLS` how many (default 20).

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use upsession_testbed::kit::{Graph, location, partial_put, sha256_hex};

const TOKEN: &str = "crash-token";
const FRAGMENT: usize = 64 * 1024;

mod common;
use common::Serve;

fn serve(dir: &std::path::Path, listen: &str, fsync: &str) -> Serve {
    let mut flags = common::small_fragments(TOKEN, "64KiB");
    flags.extend(["--fsync", fsync]);
    common::serve(dir, listen, &flags)
}

/// A number from the environment variable `name`, else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_fragments_survive_kill_9_and_the_upload_completes() {
    let seed: u64 = env_or("CRASH_SEED", 1);
    let kills: usize = env_or("CRASH_KILLS", 20);
    eprintln!("crash test: seed {seed}, {kills} kills (replay with CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..FRAGMENT * 3 * kills + 12_345)
        .map(|_| rng.u8(..))
        .collect();

    let mut server = serve(dir.path(), "127.0.0.1:0", "never");
    let listen = server.addr.clone();
    let graph = Graph::new(format!("http://{listen}/v1.0"), TOKEN);
    let url = graph.open_session(data.len()).await;

    let mut acked = 0usize; // bytes the server has answered 2xx for
    let mut in_doubt: Option<usize> = None; // end of a fragment sent whole but not answered
    for kill in 0..kills {
        // A few acknowledged fragments, then one of three ways to die.
        for _ in 0..rng.usize(0..3) {
            let res = graph.put_at(&url, &data, acked, FRAGMENT).await;
            assert_eq!(res.status(), 200);
            acked = (acked + FRAGMENT).min(data.len());
        }
        let sent = match rng.u8(0..3) {
            0 => None,                         // between fragments
            1 => Some(rng.usize(1..FRAGMENT)), // mid-body
            _ => {
                // The whole fragment sent, killed while the server writes and records it.
                in_doubt = Some((acked + FRAGMENT).min(data.len()));
                Some(FRAGMENT)
            }
        };
        let _socket = match sent {
            Some(sent) => Some(partial_put(&url, &data, acked, FRAGMENT, sent).await),
            None => None,
        };
        tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
        server.kill9();
        let fsync = if rng.bool() { "always" } else { "never" };
        server = serve(dir.path(), &listen, fsync);
        let start = graph.next_expected(&url).await.unwrap_or(data.len());
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
    let done = graph
        .upload_from(&url, &data, acked, FRAGMENT, |_| {})
        .await;
    assert_eq!(done.status(), 201);
    assert_eq!(
        sha256_hex(&graph.download(&location(&done)).await),
        sha256_hex(&data),
        "the attachment is the exact file"
    );
    server.kill9();
}
