//! Crash torture: many concurrent uploads to a real `upsession serve` process that is
//! SIGKILLed at seeded random moments and restarted on the same data directory.
//!
//! After every restart, each upload asks its session what it has: the answer must be
//! exactly the bytes acknowledged before the kill (or, for a fragment that was sent
//! whole but not answered, those plus that fragment). Uploads that complete are
//! checked byte for byte and replaced by new ones, so kills also land during
//! completions. At the end every upload is finished and no partial file is left.
//!
//! With `--cluster N`, N nodes share a PostgreSQL and a three-node Garage (the
//! testbed starts both): each fragment goes to a node picked at random, each kill
//! hits a random node (restarted on its address), and the session's status is
//! asked of another node. A killed node's lease keeps its session for one lease
//! (the nodes run with `--lease-timeout 1s`): a fragment answered
//! `409` meanwhile is sent again.
//!
//! ```text
//! torture --upsession PATH [--kills 200] [--seed S] [--uploads 8] [--size 1MiB] [--cluster N]
//! ```

#![allow(clippy::cast_possible_truncation)] // sizes here are small

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use upsession_testbed::kit::{Graph, Serve};
use upsession_testbed::{Garage, Postgres};

const TOKEN: &str = "torture";
const FRAGMENT: usize = 64 * 1024;

/// What the nodes store on: each its own data directory, or (cluster) PostgreSQL
/// and Garage shared by all.
enum Backing {
    Disk,
    Shared(Box<(Postgres, Garage)>),
}

/// The server nodes under torture, each on a fixed address.
struct Nodes {
    bin: PathBuf,
    dir: PathBuf,
    backing: Backing,
    addrs: Vec<String>,
    /// `None` while killed.
    serves: Vec<Option<Serve>>,
}

impl Nodes {
    /// Starts node `i` on its address (`127.0.0.1:0` the first time, then the
    /// port it got).
    fn start(&mut self, i: usize, fsync: &str) {
        let data = self.dir.join(format!("node{i}"));
        let mut serve = Command::new(&self.bin);
        serve
            .args(["serve", "--listen", &self.addrs[i], "--token", TOKEN])
            .args(["--min-size", "1", "--max-fragment", "64KiB"])
            .args(["--fsync", fsync, "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "error");
        if let Backing::Shared(engines) = &self.backing {
            let (pg, garage) = &**engines;
            serve
                .args(["--store", &garage.store_url(i % 3)])
                .args(["--meta", &pg.url("upsession")])
                .args(["--lease-timeout", "1s"])
                .envs(garage.env());
        }
        let started = Serve::spawn(&mut serve);
        self.addrs[i].clone_from(&started.addr);
        self.serves[i] = Some(started);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(serve) = self.serves[i].take() {
            serve.kill9();
        }
    }

    fn base(&self, i: usize) -> String {
        format!("http://{}/v1.0", self.addrs[i])
    }
}

/// `url` (an uploadUrl) sent to the node at `addr` instead.
fn on_node(url: &str, addr: &str) -> String {
    let rest = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    format!("http://{addr}/{rest}")
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

/// Sends fragments, each to one of `addrs` picked at random, until the upload
/// completes or a node it picked is gone. Returns the attachment's Location when
/// it completed.
async fn drive(
    http: &reqwest::Client,
    u: &mut Upload,
    addrs: &[String],
    rng: &mut fastrand::Rng,
) -> Option<String> {
    let mut busy = 0;
    loop {
        // All stored but no Location seen: the final fragment again (answered 201).
        let start = if u.acked >= u.data.len() {
            (u.data.len() - 1) / FRAGMENT * FRAGMENT
        } else {
            u.acked
        };
        let end = (start + FRAGMENT).min(u.data.len());
        let url = on_node(&u.url, &addrs[rng.usize(..addrs.len())]);
        let sent = http
            .put(&url)
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
            Ok(res) if res.status() == 200 => {
                u.acked = end;
                busy = 0;
            }
            // A killed node's lease, until it runs out (cluster only).
            Ok(res) if res.status() == 409 && addrs.len() > 1 && busy < 100 => {
                busy += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(res) => panic!("fragment {start}-{} answered {}", end - 1, res.status()),
            // Nothing was sent: the node picked is the one killed.
            Err(e) if e.is_connect() => return None,
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
    let mut cluster = 0_usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--upsession" => bin = v.into(),
            "--kills" => kills = v.parse().expect("a count"),
            "--seed" => seed = v.parse().expect("a number"),
            "--uploads" => uploads = v.parse().expect("a count"),
            "--cluster" => cluster = v.parse().expect("a count of nodes"),
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
    let where_ = if cluster > 0 {
        format!("{cluster} nodes on PostgreSQL and Garage")
    } else {
        "one node on disk".to_owned()
    };
    println!(
        "torture: seed {seed}, {kills} kills, {uploads} concurrent uploads of {size} bytes, {where_} (replay with --seed {seed})"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = std::env::temp_dir().join(format!("upsession-torture-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let backing = if cluster > 0 {
        Backing::Shared(Box::new((
            Postgres::start().expect("PostgreSQL starts"),
            Garage::start(3).expect("Garage starts (cargo xtask engines installs it)"),
        )))
    } else {
        Backing::Disk
    };
    let n = cluster.max(1);
    let mut nodes = Nodes {
        bin,
        dir: dir.clone(),
        backing,
        addrs: vec!["127.0.0.1:0".to_owned(); n],
        serves: (0..n).map(|_| None).collect(),
    };
    for i in 0..n {
        nodes.start(i, "never");
    }
    let graph = Graph::with_client(http.clone(), nodes.base(0), TOKEN);
    let mut live = Vec::new();
    for _ in 0..uploads {
        live.push(open(&graph, random_bytes(&mut rng, size)).await);
    }
    let mut c = Counts::default();
    let started = Instant::now();
    while c.kills < kills {
        // Let the uploads run, then kill a node under them.
        let (http2, moved) = (http.clone(), std::mem::take(&mut live));
        let runners: Vec<_> = moved
            .into_iter()
            .map(|mut u| {
                let (http, addrs) = (http2.clone(), nodes.addrs.clone());
                let mut rng = fastrand::Rng::with_seed(rng.u64(..));
                tokio::spawn(async move {
                    let done = drive(&http, &mut u, &addrs, &mut rng).await;
                    (u, done)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(1..40))).await;
        let killed = rng.usize(..n);
        nodes.kill9(killed);
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
        nodes.start(killed, fsync);
        // What survived, as another node sees it (the one restarted, alone):
        // exactly the acknowledged bytes (plus a whole unanswered one).
        let asked = nodes.addrs[(killed + 1) % n].clone();
        for u in &mut live {
            let status = graph.session_status(&on_node(&u.url, &asked)).await;
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
        let location = drive(&http, u, &nodes.addrs, &mut rng)
            .await
            .expect("every node is up: the upload completes");
        verify(&graph, &location, &u.data).await;
        c.completed += 1;
        c.bytes_verified += u.data.len();
    }
    for i in 0..n {
        nodes.kill9(i);
    }
    let parts = std::fs::read_dir(dir.join("node0").join("sessions")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .count()
    });
    assert_eq!(parts, 0, "partial files left after every upload completed");
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    // On disk, every completed session's `.part` is gone; the bucket's stray
    // objects are garbage collection's (and the cluster tests').
    let left = if cluster > 0 {
        String::new()
    } else {
        "; partial files left: 0".to_owned()
    };
    println!(
        "torture: {} kills survived in {:.1} s; {} uploads completed byte-exact ({} MiB); \
         unanswered whole fragments: {} kept, {} dropped; acknowledged bytes lost: 0{left}",
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
