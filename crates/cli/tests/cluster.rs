//! Scale-out: two `upsession serve` nodes on shared storage (Garage with three
//! nodes and replication factor 3, and PostgreSQL) behind a round-robin proxy, so
//! the fragments of one upload alternate between nodes.
//!
//! Where Garage or PostgreSQL is not installed these tests print why and pass,
//! unless `UPSESSION_REQUIRE_ENGINES=1` (set by `cargo xtask ci`, which installs
//! both first).

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;
use upsession_conformance::server::{self, Config};
use upsession_core::Limits;

mod common;
use common::cluster::Cluster;

const TOKEN: &str = "cluster-token";
const FRAGMENT: usize = 256 * 1024;

fn flags() -> Vec<&'static str> {
    vec![
        "--token",
        TOKEN,
        "--min-size",
        "1",
        "--max-fragment",
        "256KiB",
    ]
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

async fn put(http: &reqwest::Client, url: &str, data: &[u8], start: usize) -> reqwest::Response {
    common::put(http, url, data, start, FRAGMENT).await.unwrap()
}

/// The uploadUrl's path and query, sent to one node directly (bypassing the proxy).
fn on_node(upload_url: &str, addr: &str) -> String {
    let url = reqwest::Url::parse(upload_url).unwrap();
    format!("http://{addr}{}?{}", url.path(), url.query().unwrap())
}

/// Downloads the attachment at `location` through the proxy.
async fn download(http: &reqwest::Client, location: &str) -> Vec<u8> {
    common::download(http, location, TOKEN).await
}

/// Uploads `data` fragment by fragment through the proxy, calling `between(i)`
/// before fragment `i`; returns the attachment's Location.
async fn upload_with(
    cluster: &mut Cluster,
    data: &[u8],
    mut between: impl FnMut(&mut Cluster, usize),
) -> String {
    let http = reqwest::Client::new();
    let url = common::open_session(&cluster.base(), TOKEN, data.len()).await;
    let mut start = 0;
    let mut i = 0;
    loop {
        between(cluster, i);
        i += 1;
        let res = put(&http, &url, data, start).await;
        match res.status().as_u16() {
            200 => start += FRAGMENT,
            201 => {
                return res.headers()["location"].to_str().unwrap().to_owned();
            }
            other => panic!(
                "fragment {i} at {start}: {other} {}",
                res.text().await.unwrap()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_conformance_passes_against_two_nodes_behind_round_robin() {
    let Some(cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let limits = Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(256 * 1024);
    let default = Config::for_local(cluster.base(), TOKEN, &limits);
    let cases = std::env::var("UPSESSION_CLUSTER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let report = server::check_async(&default.with_cases(cases))
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    let counts = cluster.proxy.counts();
    assert!(
        counts.iter().all(|&n| n > 100),
        "both nodes served: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_alternate_nodes_and_the_bytes_are_exact() {
    let Some(mut cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let file = data(5_000_000 + 17, 1);
    let location = upload_with(&mut cluster, &file, |_, _| {}).await;
    let counts = cluster.proxy.counts();
    assert!(counts[0] >= 9 && counts[1] >= 9, "alternated: {counts:?}");
    let http = reqwest::Client::new();
    // Read through either node.
    for _ in 0..2 {
        let got = download(&http, &location).await;
        assert_eq!(Sha256::digest(&got), Sha256::digest(&file));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_both_accept_one_range() {
    let Some(cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let file = data(2 * FRAGMENT, 2);
    let url = common::open_session(&cluster.base(), TOKEN, file.len()).await;
    // Node 0 holds the first fragment (headers and half its body sent) ...
    let node0 = on_node(&url, &cluster.addrs[0]);
    let mut held = common::partial_put(&node0, &file, 0, FRAGMENT, FRAGMENT / 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... so node 1 refuses the same range, and the next one, with 409.
    for start in [0, FRAGMENT] {
        let res = put(&http, &on_node(&url, &cluster.addrs[1]), &file, start).await;
        assert_eq!(res.status(), 409, "start {start}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["innerError"]["code"], "fragmentInProgress");
    }
    // Node 0 finishes its fragment: 200, and node 1 sees it counted.
    held.write_all(&file[FRAGMENT / 2..FRAGMENT]).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::io::AsyncReadExt::read(&mut held, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status: Value = http
        .get(on_node(&url, &cluster.addrs[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{FRAGMENT}-{}", file.len() - 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_fragment_never_leaves_the_session_locked() {
    let Some(cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let file = data(5 * FRAGMENT, 8);
    let url = common::open_session(&cluster.base(), TOKEN, file.len()).await;
    for i in 0..5 {
        // Half of fragment i to node 0, then the client is gone.
        let node0 = on_node(&url, &cluster.addrs[0]);
        let held = common::partial_put(&node0, &file, i * FRAGMENT, FRAGMENT, FRAGMENT / 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        // Node 1 takes the same range as soon as node 0 has let go (a moment), on
        // pooled connections that must all be outside any transaction again.
        let mut status = 0;
        for _ in 0..50 {
            status = put(
                &http,
                &on_node(&url, &cluster.addrs[1]),
                &file,
                i * FRAGMENT,
            )
            .await
            .status()
            .as_u16();
            if status != 409 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let want = if i == 4 { 201 } else { 200 };
        assert_eq!(status, want, "fragment {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_a_node_mid_fragment_and_the_other_finishes() {
    let Some(mut cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let file = data(3_000_000, 3);
    let url = common::open_session(&cluster.base(), TOKEN, file.len()).await;
    // Four fragments through the proxy (two on each node).
    for i in 0..4 {
        assert_eq!(put(&http, &url, &file, i * FRAGMENT).await.status(), 200);
    }
    // Node 0 is killed with a fragment half received: it was never acknowledged.
    let node0 = on_node(&url, &cluster.addrs[0]);
    let held = common::partial_put(&node0, &file, 4 * FRAGMENT, FRAGMENT, 1000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.kill9(0);
    drop(held);
    // The survivor sees exactly the acknowledged bytes, takes the session (the
    // dead node's lock went with its connection) and finishes it.
    let status: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{}-{}", 4 * FRAGMENT, file.len() - 1)
    );
    let mut start = 4 * FRAGMENT;
    let location = loop {
        let res = put(&http, &url, &file, start).await;
        match res.status().as_u16() {
            200 => start += FRAGMENT,
            201 => break res.headers()["location"].to_str().unwrap().to_owned(),
            other => panic!("{other}: {}", res.text().await.unwrap()),
        }
    };
    let got = download(&http, &location).await;
    assert_eq!(Sha256::digest(&got), Sha256::digest(&file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_with_one_garage_node_down() {
    let Some(mut cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let file = data(4_000_000, 4);
    // Node 2 of Garage is no upsession node's endpoint; replication factor 3 keeps
    // a write quorum of two.
    let location = upload_with(&mut cluster, &file, |c, i| {
        if i == 5 {
            c.garage.kill(2);
        }
    })
    .await;
    let http = reqwest::Client::new();
    let got = download(&http, &location).await;
    assert_eq!(Sha256::digest(&got), Sha256::digest(&file));
}

/// Polls Garage's object count until it is `want` (its counters lag a little).
async fn objects_become(cluster: &Cluster, want: u64) {
    let mut last = None;
    for _ in 0..100 {
        last = Some(cluster.garage.object_count().unwrap());
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the bucket holds {last:?} objects, expected {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_expiry_free_the_bytes_and_keep_attachments() {
    let mut extra = flags();
    extra.extend(["--session-ttl", "4s"]);
    let Some(mut cluster) = Cluster::start(2, &extra).await else {
        return;
    };
    let http = reqwest::Client::new();
    // Completed: two fragments, which must outlive the session.
    let done = data(2 * FRAGMENT, 5);
    let location = upload_with(&mut cluster, &done, |_, _| {}).await;
    // Cancelled through the proxy after two fragments.
    let cancelled = data(4 * FRAGMENT, 6);
    let url = common::open_session(&cluster.base(), TOKEN, cancelled.len()).await;
    for i in 0..2 {
        assert_eq!(
            put(&http, &url, &cancelled, i * FRAGMENT).await.status(),
            200
        );
    }
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    // Abandoned after two fragments, left to expire.
    let abandoned = data(4 * FRAGMENT, 7);
    let url = common::open_session(&cluster.base(), TOKEN, abandoned.len()).await;
    for i in 0..2 {
        assert_eq!(
            put(&http, &url, &abandoned, i * FRAGMENT).await.status(),
            200
        );
    }
    // Two objects each for the completed and the abandoned upload; the cancelled
    // one's are gone.
    objects_become(&cluster, 4).await;
    // Whichever node took the requests may be gone: the other sweeps.
    cluster.kill9(0);
    objects_become(&cluster, 2).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let got = download(&http, &location).await;
    assert_eq!(Sha256::digest(&got), Sha256::digest(&done));
}
