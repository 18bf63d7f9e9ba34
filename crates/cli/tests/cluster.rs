//! Scale-out: two `upsession serve` nodes on shared storage (Garage with three
//! nodes and replication factor 3, and PostgreSQL) behind a round-robin proxy, so
//! the fragments of one upload alternate between nodes.
//!
//! Where Garage or PostgreSQL is not installed these tests print why and pass,
//! unless `UPSESSION_REQUIRE_ENGINES=1` (set by `cargo xtask ci`, which installs
//! both first).

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use upsession_conformance::server::{self, Config};
use upsession_core::Limits;
use upsession_testbed::kit::{Graph, location, partial_put, read_answer, seeded, sha256_hex};

mod common;
use common::cluster::Cluster;

const TOKEN: &str = "cluster-token";
const FRAGMENT: usize = 256 * 1024;

/// A session's lease lasts 3 s: a dead node's sessions are taken over that soon.
const LEASE: &str = "3s";

fn flags() -> Vec<&'static str> {
    let mut flags = common::small_fragments(TOKEN, "256KiB");
    flags.extend(["--lease-timeout", LEASE]);
    flags
}

/// Sends the fragment at `start` to `url` until it is not answered 409 (a lease
/// still held, for at most one lease); that answer.
async fn put_when_free(graph: &Graph, url: &str, file: &[u8], start: usize) -> reqwest::Response {
    for _ in 0..100 {
        let res = graph.put_at(url, file, start, FRAGMENT).await;
        if res.status() != 409 {
            return res;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the fragment at {start} was refused 409 for 10 s");
}

/// Two nodes, Graph through their proxy, a seeded file of `len` bytes from
/// `seed`, and a session open for it; `None` without the engines.
async fn opened(len: usize, seed: u64) -> Option<(Cluster, Graph, Vec<u8>, String)> {
    let cluster = Cluster::start(2, &flags()).await?;
    let graph = graph(&cluster);
    let file = seeded(len, seed);
    let url = graph.open_session(file.len()).await;
    Some((cluster, graph, file, url))
}

/// Graph through the proxy.
fn graph(cluster: &Cluster) -> Graph {
    Graph::new(cluster.base(), TOKEN)
}

/// The uploadUrl's path and query, sent to one node directly (bypassing the proxy).
fn on_node(upload_url: &str, addr: &str) -> String {
    let url = reqwest::Url::parse(upload_url).unwrap();
    format!("http://{addr}{}?{}", url.path(), url.query().unwrap())
}

/// Sends the headers and `sent` body bytes of the fragment at `start` to node
/// `node` directly, and returns once that node says (`/metrics`) it is storing
/// it: a fragment in flight there.
async fn in_flight_on(
    cluster: &Cluster,
    node: usize,
    url: &str,
    file: &[u8],
    start: usize,
    sent: usize,
) -> TcpStream {
    let addr = &cluster.addrs[node];
    let direct = on_node(url, addr);
    let held = partial_put(&direct, file, start, FRAGMENT, sent).await;
    let metrics = format!("http://{addr}/metrics");
    for _ in 0..200 {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == "upsession_fragments_writing 1") {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node {node} never started storing the fragment at {start}");
}

/// Uploads `data` fragment by fragment through the proxy from `start`, calling
/// `between(cluster, i)` before fragment `i`; returns the attachment's Location.
async fn upload_with(
    cluster: &mut Cluster,
    url: &str,
    data: &[u8],
    start: usize,
    mut between: impl FnMut(&mut Cluster, usize),
) -> String {
    let graph = graph(cluster);
    let done = graph
        .upload_from(url, data, start, FRAGMENT, |i| between(cluster, i))
        .await;
    assert_eq!(done.status(), 201, "{}", done.text().await.unwrap());
    location(&done)
}

/// A new session for `data` through the proxy, and its first two fragments sent.
async fn two_fragments_of(cluster: &Cluster, data: &[u8]) -> String {
    let graph = graph(cluster);
    let url = graph.open_session(data.len()).await;
    for i in 0..2 {
        let res = graph.put_at(&url, data, i * FRAGMENT, FRAGMENT).await;
        assert_eq!(res.status(), 200);
    }
    url
}

/// Asserts that the attachment at `location` is exactly `file`.
async fn assert_downloads(cluster: &Cluster, location: &str, file: &[u8]) {
    let got = graph(cluster).download(location).await;
    assert_eq!(sha256_hex(&got), sha256_hex(file));
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
    let Some((mut cluster, _, file, url)) = opened(5_000_000 + 17, 1).await else {
        return;
    };
    let location = upload_with(&mut cluster, &url, &file, 0, |_, _| {}).await;
    let counts = cluster.proxy.counts();
    assert!(counts[0] >= 9 && counts[1] >= 9, "alternated: {counts:?}");
    // Read through either node.
    for _ in 0..2 {
        assert_downloads(&cluster, &location, &file).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_both_accept_one_range() {
    let Some((cluster, graph, file, url)) = opened(2 * FRAGMENT, 2).await else {
        return;
    };
    // Node 0 holds the first fragment (headers and half its body sent) ...
    let mut held = in_flight_on(&cluster, 0, &url, &file, 0, FRAGMENT / 2).await;
    // ... so node 1 refuses the same range, and the next one, with 409.
    let node1 = on_node(&url, &cluster.addrs[1]);
    for start in [0, FRAGMENT] {
        let res = graph.put_at(&node1, &file, start, FRAGMENT).await;
        assert_eq!(res.status(), 409, "start {start}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["innerError"]["code"], "fragmentInProgress");
    }
    // Node 0 finishes its fragment: 200, and node 1 sees it counted.
    held.write_all(&file[FRAGMENT / 2..FRAGMENT]).await.unwrap();
    let answer = read_answer(&mut held, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = graph.session_status(&node1).await;
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{FRAGMENT}-{}", file.len() - 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_fragment_never_leaves_the_session_locked() {
    let Some((cluster, graph, file, url)) = opened(5 * FRAGMENT, 8).await else {
        return;
    };
    let node1 = on_node(&url, &cluster.addrs[1]);
    for i in 0..5 {
        // Half of fragment i to node 0, then the client is gone.
        let held = in_flight_on(&cluster, 0, &url, &file, i * FRAGMENT, FRAGMENT / 2).await;
        drop(held);
        // Node 1 takes the same range as soon as node 0 has let go (a moment), on
        // pooled connections that must all be outside any transaction again.
        let mut status = 0;
        for _ in 0..50 {
            let res = graph.put_at(&node1, &file, i * FRAGMENT, FRAGMENT).await;
            status = res.status().as_u16();
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
    let Some((mut cluster, graph, file, url)) = opened(3_000_000, 3).await else {
        return;
    };
    // Four fragments through the proxy (two on each node).
    for i in 0..4 {
        let res = graph.put_at(&url, &file, i * FRAGMENT, FRAGMENT).await;
        assert_eq!(res.status(), 200);
    }
    // Node 0 is killed with a fragment half received: it was never acknowledged.
    let held = in_flight_on(&cluster, 0, &url, &file, 4 * FRAGMENT, 1000).await;
    cluster.kill9(0);
    drop(held);
    // The survivor sees exactly the acknowledged bytes, takes the session once
    // the dead node's lease has run out (one lease, 3 s here) and finishes it.
    let status = graph.session_status(&url).await;
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{}-{}", 4 * FRAGMENT, file.len() - 1)
    );
    let node1 = on_node(&url, &cluster.addrs[1]);
    let res = put_when_free(&graph, &node1, &file, 4 * FRAGMENT).await;
    assert_eq!(res.status(), 200);
    let location = upload_with(&mut cluster, &url, &file, 5 * FRAGMENT, |_, _| {}).await;
    assert_downloads(&cluster, &location, &file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_with_one_garage_node_down() {
    let Some((mut cluster, _, file, url)) = opened(4_000_000, 4).await else {
        return;
    };
    // Node 2 of Garage is no upsession node's endpoint; replication factor 3 keeps
    // a write quorum of two.
    let location = upload_with(&mut cluster, &url, &file, 0, |c, i| {
        if i == 5 {
            c.garage.kill(2);
        }
    })
    .await;
    assert_downloads(&cluster, &location, &file).await;
}

/// Polls the bucket's listing until it holds `want` objects (deletions run after
/// the answers that cause them, and the expiry sweep on its own schedule).
async fn objects_become(cluster: &Cluster, want: u64) {
    let mut last = None;
    for _ in 0..300 {
        last = Some(cluster.garage.listed_objects().await.unwrap());
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the bucket holds {last:?} objects, expected {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_expiry_and_deletion_free_the_bytes_and_keep_attachments_until_deleted() {
    let mut extra = flags();
    extra.extend(["--session-ttl", "4s"]);
    let Some(mut cluster) = Cluster::start(2, &extra).await else {
        return;
    };
    let http = reqwest::Client::new();
    // Completed: two fragments, which must outlive the session.
    let done = seeded(2 * FRAGMENT, 5);
    let url = graph(&cluster).open_session(done.len()).await;
    let location = upload_with(&mut cluster, &url, &done, 0, |_, _| {}).await;
    // Cancelled through the proxy after two fragments.
    let url = two_fragments_of(&cluster, &seeded(4 * FRAGMENT, 6)).await;
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    // Abandoned after two fragments, left to expire.
    let url = two_fragments_of(&cluster, &seeded(4 * FRAGMENT, 7)).await;
    // Two objects each for the completed and the abandoned upload; the cancelled
    // one's are gone.
    objects_become(&cluster, 4).await;
    // Whichever node took the requests may be gone: the other sweeps.
    cluster.kill9(0);
    objects_become(&cluster, 2).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    assert_downloads(&cluster, &location, &done).await;
    // Deleted, the attachment's objects go with its row.
    let delete = http.delete(&location).bearer_auth(TOKEN).send().await;
    assert_eq!(delete.unwrap().status(), 204);
    objects_become(&cluster, 0).await;
    assert_eq!(graph(&cluster).value(&location).await.status(), 404);
}

#[tokio::test]
async fn identities_hold_on_every_node() {
    use upsession_core::identity::{TokenEntry, token_digest};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let entry = |token: &str, user: &str| TokenEntry {
        sha256: Some(token_digest(token.as_bytes())),
        token: None,
        user: user.into(),
        upn: None,
        name: None,
        scopes: vec!["Mail.ReadWrite".into()],
        app: false,
    };
    std::fs::write(
        &file,
        format!(
            "{}\n{}",
            entry("alice-t", "alice").to_toml(),
            entry("bob-t", "bob").to_toml()
        ),
    )
    .unwrap();
    let flags = [
        "--min-size",
        "1",
        "--max-fragment",
        "256KiB",
        "--auth",
        "tokens",
        file.to_str().unwrap(),
    ];
    let Some(cluster) = Cluster::start(2, &flags).await else {
        return;
    };
    let alice = Graph::new(cluster.base(), "alice-t");
    let data = seeded(3 * FRAGMENT, 21);
    let msg = alice.draft().await;
    let url = alice.session(&msg, data.len()).await;
    let done = alice.upload_from(&url, &data, 0, FRAGMENT, |_| {}).await;
    assert_eq!(done.status(), 201);
    let location = location(&done);
    for addr in &cluster.addrs {
        let base = format!("http://{addr}/v1.0");
        let path = format!("/me/messages/{msg}");
        let (status, _) = Graph::new(&base, "alice-t")
            .call(reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(status, 200, "alice on {addr}");
        let (status, _) = Graph::new(&base, "bob-t")
            .call(reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(status, 404, "bob on {addr}");
        let other = format!("/users/alice/messages/{msg}");
        let (status, _) = Graph::new(&base, "bob-t")
            .call(reqwest::Method::GET, &other, None)
            .await;
        assert_eq!(status, 403, "bob by /users/alice on {addr}");
    }
    assert_eq!(
        sha256_hex(&alice.download(&location).await),
        sha256_hex(&data)
    );
}

/// A drive upload's session opened through the proxy: its uploadUrl.
async fn drive_session(graph: &Graph, path: &str, conflict: &str) -> String {
    let res = graph
        .request(
            reqwest::Method::POST,
            &format!("/me/drive/root:/{path}:/createUploadSession"),
        )
        .json(&serde_json::json!({"item": {"@microsoft.graph.conflictBehavior": conflict}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let json: serde_json::Value = res.json().await.unwrap();
    json["uploadUrl"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drive_files_are_whole_whichever_nodes_take_their_fragments() {
    let Some(cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let graph = graph(&cluster);
    // One file whose fragments (and hash state) go from node to node.
    let data = seeded(5 * FRAGMENT + 77, 31);
    let url = drive_session(&graph, "shared/one.bin", "fail").await;
    let mut last = None;
    for start in (0..data.len()).step_by(FRAGMENT) {
        last = Some(graph.put_at(&url, &data, start, FRAGMENT).await);
    }
    let done = last.unwrap();
    assert_eq!(done.status(), 201);
    let item: serde_json::Value = done.json().await.unwrap();
    let mut quick_xor = upsession_core::quickxor::QuickXorHash::new();
    quick_xor.update(&data);
    assert_eq!(
        item["file"]["hashes"]["quickXorHash"],
        quick_xor.finish_base64()
    );
    assert_eq!(
        item["file"]["hashes"]["sha256Hash"],
        sha256_hex(&data).to_uppercase()
    );
    // Eight files finished at once, on both nodes, into one drive: none lost.
    let small = seeded(1000, 32);
    let mut urls = Vec::new();
    for i in 0..8 {
        urls.push(drive_session(&graph, &format!("shared/many/{i}.bin"), "fail").await);
    }
    let mut puts = tokio::task::JoinSet::new();
    for url in urls {
        let (graph, small) = (graph.clone(), small.clone());
        puts.spawn(async move { graph.put_at(&url, &small, 0, FRAGMENT).await.status() });
    }
    while let Some(status) = puts.join_next().await {
        assert_eq!(status.unwrap(), 201);
    }
    for addr in &cluster.addrs {
        let node = Graph::new(format!("http://{addr}/v1.0"), TOKEN);
        let folder: serde_json::Value = node
            .request(reqwest::Method::GET, "/me/drive/root:/shared/many")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(folder["folder"]["childCount"], 8, "{addr}");
        let bytes = node
            .request(
                reqwest::Method::GET,
                "/me/drive/root:/shared/one.bin:/content",
            )
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256_hex(&bytes), sha256_hex(&data), "{addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_no_record_names_are_deleted_at_start_up() {
    let Some(mut cluster) = Cluster::start(2, &flags()).await else {
        return;
    };
    let data = seeded(3 * FRAGMENT, 41);
    let url = two_fragments_of(&cluster, &data).await;
    objects_become(&cluster, 2).await;
    // A crash between a record's deletion and its objects' (set up by hand: the
    // session's row goes, its objects stay).
    let sid = reqwest::Url::parse(&url)
        .unwrap()
        .path()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    cluster
        .pg
        .sql(
            "upsession",
            &format!("DELETE FROM sessions WHERE id = '{sid}'"),
        )
        .unwrap();
    // A finished attachment's objects are named by its record, and stay.
    let kept = seeded(FRAGMENT + 5, 42);
    let graph = graph(&cluster);
    let url2 = graph.open_session(kept.len()).await;
    assert_eq!(graph.upload(&url2, &kept, FRAGMENT).await.status(), 201);
    objects_become(&cluster, 4).await;
    cluster.restart(0);
    objects_become(&cluster, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_given_up_midway_leaves_no_multipart_upload() {
    // Fragments over 8 MiB go to S3 as multipart uploads.
    const BIG: usize = 16 << 20;
    let flags = common::small_fragments(TOKEN, "16MiB");
    let Some(cluster) = Cluster::start(1, &flags).await else {
        return;
    };
    let graph = graph(&cluster);
    let file = seeded(2 * BIG, 51);
    let url = graph.open_session(file.len()).await;
    let direct = on_node(&url, &cluster.addrs[0]);
    // 12 MiB of the fragment's 16 MiB: the first part is in the bucket.
    let held = partial_put(&direct, &file, 0, BIG, 12 << 20).await;
    let mut begun = false;
    for _ in 0..100 {
        if cluster.garage.unfinished_multipart_uploads().unwrap() > 0 {
            begun = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(begun, "the fragment's multipart upload began");
    // The client hangs up: the upload is aborted, not left in the bucket.
    drop(held);
    for _ in 0..100 {
        if cluster.garage.unfinished_multipart_uploads().unwrap() == 0 {
            // And the fragment can be sent again, whole.
            let res = graph.put_at(&url, &file, 0, BIG).await;
            assert_eq!(res.status(), 200);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("a multipart upload was left in the bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_the_bucket_and_the_database_answer() {
    let Some(mut cluster) = Cluster::start(1, &flags()).await else {
        return;
    };
    let readyz = format!("http://{}/readyz", cluster.addrs[0]);
    let healthz = format!("http://{}/healthz", cluster.addrs[0]);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    // Each backend call is timed, by backend and operation.
    let graph = graph(&cluster);
    let file = seeded(FRAGMENT + 1, 71);
    let url = graph.open_session(file.len()).await;
    assert_eq!(graph.upload(&url, &file, FRAGMENT).await.status(), 201);
    let metrics = format!("http://{}/metrics", cluster.addrs[0]);
    let page = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for (backend, op) in [("pg", "lease"), ("pg", "commit"), ("s3", "put_fragment")] {
        let count = format!(r#"upsession_backend_seconds_count{{backend="{backend}",op="{op}"}}"#);
        assert!(
            page.lines()
                .any(|l| l.starts_with(&count) && !l.ends_with(" 0")),
            "{count} in:\n{page}"
        );
    }
    // A session open before the bucket goes away.
    let url = graph.open_session(2 * FRAGMENT).await;
    // Two of Garage's three nodes down: the node's endpoint answers, without a
    // quorum to write with.
    cluster.garage.kill(1);
    cluster.garage.kill(2);
    let res = graph
        .put_at(&url, &file_of(2 * FRAGMENT), 0, FRAGMENT)
        .await;
    assert_eq!(res.status(), 503, "{}", res.text().await.unwrap());
    cluster.garage.kill(0);
    let res = reqwest::get(&readyz).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // Alive all the same: the process answers.
    assert_eq!(reqwest::get(&healthz).await.unwrap().status(), 200);
    // A fragment the bucket cannot take is a retryable 503 once the store has
    // tried a few times (within seconds, not minutes), and counts nothing.
    let started = std::time::Instant::now();
    let res = graph
        .put_at(&url, &file_of(2 * FRAGMENT), 0, FRAGMENT)
        .await;
    assert_eq!(res.status(), 503, "{}", res.text().await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(60));
    let status = graph.session_status(&url).await;
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("0-{}", 2 * FRAGMENT - 1)
    );
}

/// A seeded file of `len` bytes.
fn file_of(len: usize) -> Vec<u8> {
    seeded(len, 72)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_clocks_differ_decide_expiry_alike() {
    let mut flags = flags();
    flags.extend(["--session-ttl", "1h"]);
    let Some(mut cluster) = Cluster::start(2, &flags).await else {
        return;
    };
    // Node 1's clock is two hours ahead: by it, a session made an hour ago by
    // node 0 has expired. Both go by PostgreSQL's clock instead.
    cluster.restart_with(1, &["--clock-skew", "7200"]);
    // Made by node 0, by its (right) clock.
    let graph = Graph::new(format!("http://{}/v1.0", cluster.addrs[0]), TOKEN);
    let file = seeded(3 * FRAGMENT, 61);
    let url = graph.open_session(file.len()).await;
    let on = |node: usize| on_node(&url, &cluster.addrs[node]);
    // A sweep of node 1's has run meanwhile (every 2 s): the session is there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (i, node) in [0, 1, 0].into_iter().enumerate() {
        let res = graph.put_at(&on(node), &file, i * FRAGMENT, FRAGMENT).await;
        assert!(
            res.status().is_success(),
            "fragment {i} on node {node}: {}",
            res.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_upload_is_a_503_with_retry_after_and_then_the_upload_goes_on() {
    let Some((mut cluster, graph, file, url)) = opened(6 * FRAGMENT, 12).await else {
        return;
    };
    for i in 0..2 {
        let res = graph.put_at(&url, &file, i * FRAGMENT, FRAGMENT).await;
        assert_eq!(res.status(), 200);
    }
    // A fragment half received by node 0 when PostgreSQL goes down.
    let mut held = in_flight_on(&cluster, 0, &url, &file, 2 * FRAGMENT, FRAGMENT / 2).await;
    tokio::task::block_in_place(|| cluster.pg.stop()).unwrap();
    // Its body ends: it cannot be counted, and says so as a retryable 503.
    held.write_all(&file[2 * FRAGMENT + FRAGMENT / 2..3 * FRAGMENT])
        .await
        .unwrap();
    let answer = read_answer(&mut held, Duration::from_secs(60)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 2\r\n"),
        "{answer}"
    );
    // Every node answers so while the database is away: status, a new fragment.
    for addr in &cluster.addrs {
        let direct = on_node(&url, addr);
        let res = reqwest::get(&direct).await.unwrap();
        assert_eq!(res.status(), 503, "status on {addr}");
        assert!(res.headers().contains_key("retry-after"));
        let res = graph.put_at(&direct, &file, 2 * FRAGMENT, FRAGMENT).await;
        assert_eq!(res.status(), 503, "fragment on {addr}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "serviceNotAvailable");
    }
    tokio::task::block_in_place(|| cluster.pg.start_again()).unwrap();
    // A client waits as Retry-After says (the lease of the fragment that failed
    // is given back meanwhile, as soon as the database answers). The nodes
    // reconnect by themselves: exactly the acknowledged bytes are there, and the
    // upload finishes through both nodes, byte-exact, with no 409 on the way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = graph.session_status(&url).await;
    assert_eq!(
        status["nextExpectedRanges"][0],
        format!("{}-{}", 2 * FRAGMENT, file.len() - 1)
    );
    let location = upload_with(&mut cluster, &url, &file, 2 * FRAGMENT, |_, _| {}).await;
    assert_downloads(&cluster, &location, &file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_one_offset_give_it_to_exactly_one_whose_bytes_count() {
    let Some((cluster, graph, file, url)) = opened(3 * FRAGMENT, 13).await else {
        return;
    };
    let nodes = [
        on_node(&url, &cluster.addrs[0]),
        on_node(&url, &cluster.addrs[1]),
    ];
    let mut last = None;
    for round in 0..3 {
        let start = round * FRAGMENT;
        // Each node gets the same range at once, with bytes of its own.
        let mut versions = [file.clone(), file.clone()];
        for (i, v) in versions.iter_mut().enumerate() {
            v[start..start + FRAGMENT].fill(i as u8 + 1);
        }
        let (a, b) = tokio::join!(
            graph.put_at(&nodes[0], &versions[0], start, FRAGMENT),
            graph.put_at(&nodes[1], &versions[1], start, FRAGMENT)
        );
        let ok = if round == 2 { 201 } else { 200 };
        let statuses = [a.status().as_u16(), b.status().as_u16()];
        // One writes; the other is refused while it does (409), or, arriving
        // after its commit, is answered as the re-send of a counted fragment
        // (which writes nothing).
        assert!(statuses.contains(&ok), "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == ok || *s == 409),
            "round {round}: {statuses:?}"
        );
        last = Some(if statuses[0] == ok { a } else { b });
    }
    // Every range is one node's bytes, whole: never a mix, never a loser's
    // object in place of a winner's.
    let got = graph.download(&location(&last.unwrap())).await;
    assert_eq!(got.len(), file.len());
    for r in 0..3 {
        let range = &got[r * FRAGMENT..(r + 1) * FRAGMENT];
        assert!(
            range.iter().all(|&x| x == 1) || range.iter().all(|&x| x == 2),
            "range {r} is not one node's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_loses_the_session_and_its_late_bytes_never_count() {
    let Some((cluster, graph, file, url)) = opened(2 * FRAGMENT, 14).await else {
        return;
    };
    // Node 0 gets half of the first fragment, with bytes of its own, and then
    // freezes (SIGSTOP: it renews nothing) for longer than a lease.
    let mut stale = file.clone();
    stale[..FRAGMENT].fill(0xee);
    let mut held = in_flight_on(&cluster, 0, &url, &stale, 0, FRAGMENT / 2).await;
    let pid = cluster.nodes[0].as_ref().unwrap().pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    // Node 1 takes the session once the lease has run out, and its bytes count.
    let node1 = on_node(&url, &cluster.addrs[1]);
    let res = put_when_free(&graph, &node1, &file, 0).await;
    assert_eq!(res.status(), 200);
    // The rest of node 0's body waits in its socket as it wakes: its fragment
    // ends, and is refused as the lease's loser.
    held.write_all(&stale[FRAGMENT / 2..FRAGMENT])
        .await
        .unwrap();
    signal("-CONT");
    let answer = read_answer(&mut held, Duration::from_secs(30)).await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let res = graph.put_at(&node1, &file, FRAGMENT, FRAGMENT).await;
    assert_eq!(res.status(), 201);
    assert_downloads(&cluster, &location(&res), &file).await;
}
