//! Helpers for the client's tests against `upsession_conformance::fake`: a fake
//! with a draft `m1`, a client for it, test files, and checks of what it holds.

#![allow(clippy::pedantic, dead_code, unreachable_pub)] // test code favours brevity over pedantry

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use upsession_client_reqwest::{Client, ClientBuilder, PlannerConfig};
use upsession_conformance::fake::{FakeGraph, FakeOptions, Quirks, RunningFake};
use upsession_core::route::ItemKind;

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

/// A client for `fake` with its token and small fragments.
pub fn builder(fake: &RunningFake) -> ClientBuilder {
    Client::builder()
        .base_url(fake.base_url())
        .token(fake.token())
        .planner(fast_planner())
        .fragment_size(FRAGMENT)
        .request_timeout(Duration::from_secs(30))
}

pub fn client(fake: &RunningFake) -> Client {
    builder(fake).build().unwrap()
}

/// Writes `len` pseudo-random bytes (from `seed`) to `dir/name`.
pub fn make_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts that the fake holds exactly `expected` as the attachment `id`.
pub fn assert_stored(fake: &RunningFake, id: Option<&str>, expected: &[u8]) {
    let id = id.expect("the upload reports the attachment id");
    let stored = fake
        .stored(id)
        .unwrap_or_else(|| panic!("no attachment {id} on the fake"));
    assert_eq!(stored.len(), expected.len(), "stored size");
    assert_eq!(sha256(&stored), sha256(expected), "stored bytes differ");
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

/// Waits (ten seconds at most) until `n` requests with `method` reached `fake`.
pub async fn wait_for(fake: &RunningFake, method: &http::Method, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), fake.wait_for_requests(method, n))
        .await
        .unwrap_or_else(|_| panic!("{method} number {n} never reached the fake"));
}
