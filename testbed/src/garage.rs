//! A Garage cluster on loopback ports.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, random_hex, run, wait_for_port};

/// The Garage version `cargo xtask engines` installs and the tests use.
pub const GARAGE_VERSION: &str = "2.5.0";

/// The bucket the cluster is given.
pub const BUCKET: &str = "upsession";

/// One Garage process.
#[derive(Debug)]
struct Node {
    config: PathBuf,
    child: Option<Child>,
    s3_port: u16,
    log: PathBuf,
}

/// A Garage cluster of several nodes on 127.0.0.1, every object on every node
/// (replication factor = node count, at most 3), with one bucket and one key
/// allowed to read and write it. Dropping it kills every node.
#[derive(Debug)]
pub struct Garage {
    nodes: Vec<Node>,
    key_id: String,
    secret: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Where the Garage binary is: `$UPSESSION_GARAGE`, else
    /// `$UPSESSION_CACHE/garage-VERSION/bin/garage` (the cache defaulting to
    /// `~/.cache/upsession`), where `cargo xtask engines` installs it.
    pub fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("UPSESSION_GARAGE") {
            return p.into();
        }
        cache_dir()
            .join(format!("garage-{GARAGE_VERSION}"))
            .join("bin")
            .join("garage")
    }

    /// Starts `nodes` nodes, joins them, lays out the cluster and makes the bucket
    /// and key. Returns once every node answers S3 requests for the bucket.
    ///
    /// # Errors
    /// `NotFound` when Garage is not installed; any failure of a step otherwise.
    pub fn start(nodes: usize) -> io::Result<Self> {
        let binary = Self::binary();
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "Garage is not installed at {}; run `cargo xtask engines`",
                    binary.display()
                ),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("upsession-garage-")
            .tempdir()?;
        let secret = random_hex(32)?;
        let replication = nodes.min(3);
        let mut started = Vec::new();
        for i in 0..nodes {
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root)?;
            let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{meta}\"\n\
                     data_dir = \"{data}\"\n\
                     db_engine = \"lmdb\"\n\
                     compression_level = \"none\"\n\
                     replication_factor = {replication}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     [s3_api]\n\
                     s3_region = \"garage\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n",
                    meta = root.join("meta").display(),
                    data = root.join("data").display(),
                ),
            )?;
            let log = root.join("garage.log");
            let mut node = Node {
                config,
                child: None,
                s3_port: s3,
                log,
            };
            node.spawn(&binary)?;
            wait_for_port(rpc, Duration::from_secs(30))?;
            started.push(node);
        }
        let mut cluster = Self {
            nodes: started,
            key_id: format!("GK{}", random_hex(12)?),
            secret: random_hex(32)?,
            binary,
            _dir: dir,
        };
        cluster.configure()?;
        Ok(cluster)
    }

    fn cli(&self, node: usize) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c").arg(&self.nodes[node].config);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn configure(&mut self) -> io::Result<()> {
        let mut ids = Vec::new();
        for i in 0..self.nodes.len() {
            let id = run(self.cli(i).args(["node", "id", "-q"]))?;
            ids.push(id.trim().to_owned());
        }
        for id in &ids[1..] {
            retry(|| run(self.cli(0).args(["node", "connect", id])))?;
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or(id);
            retry(|| {
                run(self
                    .cli(0)
                    .args(["layout", "assign", "-z", "dc1", "-c", "1G", short]))
            })?;
        }
        retry(|| run(self.cli(0).args(["layout", "apply", "--version", "1"])))?;
        retry(|| {
            run(self.cli(0).args([
                "key",
                "import",
                "--yes",
                "-n",
                "upsession",
                &self.key_id,
                &self.secret,
            ]))
        })?;
        retry(|| run(self.cli(0).args(["bucket", "create", BUCKET])))?;
        retry(|| {
            run(self.cli(0).args([
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                "upsession",
            ]))
        })?;
        // Every node must know the bucket and key before it is handed out.
        for i in 0..self.nodes.len() {
            retry(|| run(self.cli(i).args(["bucket", "info", BUCKET])))?;
        }
        Ok(())
    }

    /// `s3://upsession?endpoint=http://127.0.0.1:PORT&region=garage`, through node
    /// `node`'s S3 API.
    pub fn store_url(&self, node: usize) -> String {
        format!(
            "s3://{BUCKET}?endpoint=http://127.0.0.1:{}&region=garage",
            self.nodes[node].s3_port
        )
    }

    /// The environment an S3 client needs: the key's id and secret.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "garage".to_owned()),
        ]
    }

    /// Kills node `node` (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its old data.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn restart(&mut self, node: usize) -> io::Result<()> {
        let binary = self.binary.clone();
        self.nodes[node].spawn(&binary)
    }

    /// An S3 client of the bucket through node `node`, with the key's credentials.
    ///
    /// # Errors
    /// When the client cannot be built.
    pub fn s3_client(&self, node: usize) -> io::Result<object_store::aws::AmazonS3> {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(format!("http://127.0.0.1:{}", self.nodes[node].s3_port))
            .with_allow_http(true)
            .with_region("garage")
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .build()
            .map_err(io::Error::other)
    }

    /// How many objects the bucket holds, as an S3 listing through a running
    /// node says: read with a quorum, so exact at once, where `bucket info`'s
    /// counters are kept by a background worker and lag by seconds (a minute and
    /// more beside a busy test run).
    ///
    /// # Errors
    /// When no node runs or the listing fails.
    pub async fn listed_objects(&self) -> io::Result<u64> {
        use futures_util::StreamExt as _;
        let live = (0..self.nodes.len())
            .find(|&i| self.nodes[i].child.is_some())
            .ok_or_else(|| io::Error::other("no Garage node is running"))?;
        let store = self.s3_client(live)?;
        let mut listed = object_store::ObjectStore::list(&store, None);
        let mut count = 0;
        while let Some(object) = listed.next().await {
            object.map_err(io::Error::other)?;
            count += 1;
        }
        Ok(count)
    }

    /// How many multipart uploads the bucket holds unfinished (begun, neither
    /// completed nor aborted), as Garage's counters say: they lag, so poll.
    ///
    /// # Errors
    /// When the CLI fails.
    pub fn unfinished_multipart_uploads(&self) -> io::Result<u64> {
        let live = (0..self.nodes.len())
            .find(|&i| self.nodes[i].child.is_some())
            .ok_or_else(|| io::Error::other("no Garage node is running"))?;
        let info = run(self.cli(live).args(["bucket", "info", BUCKET]))?;
        // Garage prints the line only when there are some.
        Ok(info
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unfinished uploads:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0))
    }

    /// The log file of a node, for failure messages.
    pub fn log(&self, node: usize) -> &Path {
        &self.nodes[node].log
    }
}

impl Node {
    fn spawn(&mut self, binary: &Path) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `$UPSESSION_CACHE`, else `~/.cache/upsession`: where engines are installed.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("UPSESSION_CACHE") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("upsession")
}

/// Retries a cluster command for up to 30 s: nodes take a moment to meet.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}
