//! A two-node upsession cluster on shared storage: PostgreSQL, a three-node Garage
//! (replication factor 3), two `upsession serve` processes, and a round-robin
//! proxy in front that sends each request to the next node.

use std::path::Path;

use upsession_testbed::{Garage, Postgres, RoundRobin, free_port};

use super::Serve;

/// The engines and the nodes; everything stops when dropped.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Option<Serve>>,
    /// Each node's `127.0.0.1:PORT`.
    pub(crate) addrs: Vec<String>,
    pub(crate) proxy: RoundRobin,
    pub(crate) garage: Garage,
    pub(crate) pg: Postgres,
    dirs: Vec<tempfile::TempDir>,
    /// The flags every node started with.
    extra: Vec<String>,
}

/// PostgreSQL and Garage, or `None` (with a note) where they are not installed and
/// nothing requires them. `cargo xtask ci` installs them and sets
/// `UPSESSION_REQUIRE_ENGINES=1`, so there a missing engine fails the test.
pub(crate) fn engines(garage_nodes: usize) -> Option<(Postgres, Garage)> {
    let required = std::env::var_os("UPSESSION_REQUIRE_ENGINES").is_some_and(|v| v == "1");
    let started = Postgres::start().and_then(|pg| Ok((pg, Garage::start(garage_nodes)?)));
    match started {
        Ok(engines) => Some(engines),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("the storage engines did not start: {e}"),
    }
}

impl Cluster {
    /// Starts the engines and `nodes` upsession nodes (node `i` talks to Garage
    /// node `i`), with `extra` flags for every node. `None` as [`engines`] says.
    pub(crate) async fn start(nodes: usize, extra: &[&str]) -> Option<Self> {
        let (pg, garage) = tokio::task::spawn_blocking(|| engines(3)).await.unwrap()?;
        let ports: Vec<u16> = (0..nodes).map(|_| free_port().unwrap()).collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let proxy = RoundRobin::start(addrs.iter().map(|a| a.parse().unwrap()).collect())
            .await
            .unwrap();
        let mut dirs = Vec::new();
        let mut serves = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            serves.push(Some(node(
                &garage,
                &pg,
                i,
                dir.path(),
                addr,
                &proxy.url(),
                extra,
            )));
            dirs.push(dir);
        }
        Some(Self {
            nodes: serves,
            addrs,
            proxy,
            garage,
            pg,
            dirs,
            extra: extra.iter().map(|&s| s.to_owned()).collect(),
        })
    }

    /// `{proxy}/v1.0`.
    pub(crate) fn base(&self) -> String {
        format!("{}/v1.0", self.proxy.url())
    }

    /// `kill -9` of node `i`, then node `i` started again on its address.
    pub(crate) fn restart(&mut self, i: usize) {
        self.restart_with(i, &[]);
    }

    /// [`Cluster::restart`] with `more` flags for that node.
    pub(crate) fn restart_with(&mut self, i: usize, more: &[&str]) {
        self.kill9(i);
        let mut extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        extra.extend_from_slice(more);
        self.nodes[i] = Some(node(
            &self.garage,
            &self.pg,
            i,
            self.dirs[i].path(),
            &self.addrs[i],
            &self.proxy.url(),
            &extra,
        ));
    }

    /// `kill -9` of node `i`.
    pub(crate) fn kill9(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
    }
}

/// One `upsession serve` node of the cluster.
fn node(
    garage: &Garage,
    pg: &Postgres,
    i: usize,
    dir: &Path,
    listen: &str,
    public_url: &str,
    extra: &[&str],
) -> Serve {
    let store = garage.store_url(i % 3);
    let meta = pg.url("upsession");
    let mut args = vec![
        "--store",
        &store,
        "--meta",
        &meta,
        "--public-url",
        public_url,
    ];
    args.extend_from_slice(extra);
    super::serve_with_env(dir, listen, &args, &garage.env())
}
