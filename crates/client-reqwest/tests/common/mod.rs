//! Helpers for the client's tests against `upsession_conformance::fake`: a fake
//! with a draft `m1`, a client for it, a test file to upload there, and checks of
//! what it holds. Test data and digests come from the shared kit.

#![allow(clippy::pedantic, dead_code, unreachable_pub)] // test code favours brevity over pedantry

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use upsession_client_reqwest::{
    Client, ClientBuilder, Error, PlannerConfig, RemoteError, Target, UploadOptions, Uploaded,
};
use upsession_conformance::fake::{FakeGraph, FakeOptions, Quirks, RunningFake};
use upsession_core::route::ItemKind;
pub use upsession_testbed::kit::{seeded_file, sha256_hex};

/// The fragment size tests use: small files, several fragments.
pub const FRAGMENT: u64 = 64 * 1024;

/// A fake Graph answering with `quirks`, holding the draft message `m1`.
pub async fn fake_with(quirks: Quirks) -> RunningFake {
    let fake = FakeGraph::start(FakeOptions::default().with_quirks(quirks))
        .await
        .unwrap();
    fake.create_item_with_id(ItemKind::Message, "m1", "draft");
    fake
}

/// A fake Graph with our server's answers, holding the draft message `m1`.
pub async fn fake() -> RunningFake {
    fake_with(Quirks::none()).await
}

/// A planner that retries quickly, so fault tests take milliseconds.
pub fn fast_planner() -> PlannerConfig {
    PlannerConfig::default()
        .with_backoff(Duration::from_millis(5), Duration::from_millis(40))
        .with_deadline(Some(Duration::from_secs(120)))
}

/// A client for `fake` with its token and small fragments; every file, however
/// small, through an upload session (the fake has no small-file route).
pub fn builder(fake: &RunningFake) -> ClientBuilder {
    Client::builder()
        .base_url(fake.base_url())
        .token(fake.token())
        .small_file_limit(0)
        .planner(fast_planner())
        .fragment_size(FRAGMENT)
        .request_timeout(Duration::from_secs(30))
}

pub fn client(fake: &RunningFake) -> Client {
    builder(fake).build().unwrap()
}

/// Asserts that the fake holds exactly `expected` as the attachment `id`.
pub fn assert_stored(fake: &RunningFake, id: Option<&str>, expected: &[u8]) {
    let id = id.expect("the upload reports the attachment id");
    let stored = fake
        .stored(id)
        .unwrap_or_else(|| panic!("no attachment {id} on the fake"));
    assert_eq!(stored.len(), expected.len(), "stored size");
    assert_eq!(
        sha256_hex(&stored),
        sha256_hex(expected),
        "stored bytes differ"
    );
}

/// Asserts that no request to an uploadUrl carried `Authorization`, and every Graph
/// request carried the token.
pub fn assert_token_only_to_graph(fake: &RunningFake) {
    let bearer = format!("Bearer {}", fake.token());
    for r in fake.log() {
        let expected = (!r.to_upload_url).then_some(bearer.as_str());
        assert_eq!(r.authorization.as_deref(), expected, "{r}");
    }
}

/// The remote error of [`Error::SessionExpired`], which `err` must be.
pub fn expired_remote(err: &Error) -> &RemoteError {
    match err {
        Error::SessionExpired {
            remote: Some(remote),
        } => remote,
        other => panic!("expected SessionExpired with a remote error, got {other:?}"),
    }
}

/// Waits (ten seconds at most) until `n` requests with `method` reached `fake`.
pub async fn wait_for(fake: &RunningFake, method: &http::Method, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), fake.wait_for_requests(method, n))
        .await
        .unwrap_or_else(|_| panic!("{method} number {n} never reached the fake"));
}

/// What an application does: a new draft with `subject`, and `path` uploaded to it.
pub async fn upload_to_new_draft(
    client: &Client,
    subject: &str,
    path: &Path,
) -> Result<Uploaded, Error> {
    let draft = client.create_draft(subject).await?;
    client.upload_file(&draft, path, UploadOptions::new()).await
}

/// The draft every fake holds.
pub fn m1() -> Target {
    Target::message("m1")
}

/// A fake Graph and a seeded test file to upload to its draft `m1`: where most
/// tests start. Derefs to the fake.
pub struct FakeWithFile {
    pub fake: RunningFake,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub dir: tempfile::TempDir,
}

/// [`fake`] and `a.bin` of `len` bytes from `seed`.
pub async fn with_file(len: usize, seed: u64) -> FakeWithFile {
    FakeWithFile::new(fake().await, "a.bin", len, seed)
}

impl FakeWithFile {
    /// `fake` and a file `name` of `len` bytes from `seed`.
    pub fn new(fake: RunningFake, name: &str, len: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = seeded_file(dir.path(), name, len, seed);
        Self {
            fake,
            path,
            bytes,
            dir,
        }
    }

    /// Where the file is, for more files and states.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Uploads the file to `m1` with `client` and `options`.
    pub async fn upload(&self, client: &Client, options: UploadOptions) -> Result<Uploaded, Error> {
        client.upload_file(&m1(), &self.path, options).await
    }

    /// Uploads the file with `client` as it is; it must fail (`why` says why it
    /// must): the error.
    pub async fn upload_fails(&self, client: &Client, why: &str) -> Error {
        self.upload(client, UploadOptions::new())
            .await
            .expect_err(why)
    }

    /// Uploads the file with [`client`] as it is; it must arrive exactly.
    pub async fn upload_ok(&self) -> Uploaded {
        let up = self
            .upload(&client(&self.fake), UploadOptions::new())
            .await
            .unwrap();
        self.assert_stored(&up);
        up
    }

    /// Asserts that the fake holds exactly the file as `up`'s attachment.
    pub fn assert_stored(&self, up: &Uploaded) {
        assert_stored(&self.fake, up.attachment_id.as_deref(), &self.bytes);
    }
}

impl Deref for FakeWithFile {
    type Target = RunningFake;

    fn deref(&self) -> &RunningFake {
        &self.fake
    }
}
