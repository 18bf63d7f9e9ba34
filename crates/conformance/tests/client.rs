//! Client conformance: a reference client (the core's `Planner` driven by a tiny
//! reqwest loop) passes against the misbehaving fake Graph, and a client that
//! ignores `nextExpectedRanges` and claims success after sending each fragment once
//! is caught.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::{Duration, SystemTime};

use upsession_conformance::Rule;
use upsession_conformance::client::{self, ClientReport, Config, Target};
use upsession_core::planner::{Action, Planner, PlannerConfig, TransportError};
use upsession_core::wire::{AttachmentItem, UploadSession};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn create_url(target: &Target) -> String {
    format!(
        "{}/me/messages/{}/attachments/createUploadSession",
        target.base_url, target.message_id
    )
}

fn create_body(target: &Target) -> Vec<u8> {
    AttachmentItem::file("upload.bin", target.size)
        .to_request_json()
        .to_string()
        .into_bytes()
}

/// The core's planner, pumped over reqwest: every decision is the planner's.
async fn reference_upload(target: Target) -> Result<ClientReport, String> {
    let data = tokio::fs::read(&target.file)
        .await
        .map_err(|e| e.to_string())?;
    let http = http();
    let config = PlannerConfig::default()
        .with_fragment_size(target.fragment_size)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(50))
        .with_deadline(Some(Duration::from_secs(50)))
        .with_jitter_seed(target.size);
    let mut planner = Planner::new(target.size, config);
    for _ in 0..10_000 {
        let now = SystemTime::now();
        let url = planner.upload_url().map(str::to_owned);
        let request = match planner.next(now) {
            Action::CreateSession => http
                .post(create_url(&target))
                .bearer_auth(&target.token)
                .header("content-type", "application/json")
                .body(create_body(&target)),
            Action::Put(range) => {
                let r = range.range();
                http.put(url.ok_or("no uploadUrl")?)
                    .header("content-range", range.to_string())
                    .body(data[r.start() as usize..r.end() as usize].to_vec())
            }
            Action::QueryStatus => http.get(url.ok_or("no uploadUrl")?),
            Action::Delete => http.delete(url.ok_or("no uploadUrl")?),
            Action::Wait { until } => {
                tokio::time::sleep(until.duration_since(now).unwrap_or_default()).await;
                continue;
            }
            Action::Pending => {
                return Err("the planner is waiting for an answer it was not given".into());
            }
            Action::Done(done) => {
                return Ok(ClientReport {
                    location: done.location,
                    attachment_id: done.attachment_id,
                });
            }
            Action::Failed(e) => return Err(e.to_string()),
            Action::Cancelled => return Err("the upload was cancelled".into()),
            // Never asked: this driver does not call `settle_doubt_by_listing`.
            Action::ListAttachments => return Err("the planner asked to list attachments".into()),
        };
        match request.send().await {
            Ok(res) => {
                let mut answer = http::Response::builder().status(res.status());
                for (name, value) in res.headers() {
                    answer = answer.header(name, value);
                }
                match res.bytes().await {
                    Ok(body) => planner
                        .handle_response(SystemTime::now(), &answer.body(body.to_vec()).unwrap()),
                    Err(_) => {
                        planner.handle_transport_error(SystemTime::now(), TransportError::Lost)
                    }
                }
            }
            Err(e) => {
                let kind = if e.is_connect() {
                    TransportError::NotSent
                } else {
                    TransportError::Lost
                };
                planner.handle_transport_error(SystemTime::now(), kind);
            }
        }
    }
    Err("the upload did not end within 10,000 steps".into())
}

/// Broken on purpose: creates the session properly, then sends each fragment once
/// in order, ignores every answer, and reports success.
async fn naive_upload(target: Target) -> Result<ClientReport, String> {
    let data = tokio::fs::read(&target.file)
        .await
        .map_err(|e| e.to_string())?;
    let http = http();
    let mut upload_url = None;
    for _ in 0..50 {
        let res = http
            .post(create_url(&target))
            .bearer_auth(&target.token)
            .header("content-type", "application/json")
            .body(create_body(&target))
            .send()
            .await;
        if let Ok(res) = res
            && res.status().is_success()
            && let Ok(body) = res.bytes().await
            && let Ok(session) = serde_json::from_slice::<UploadSession>(&body)
        {
            upload_url = session.upload_url;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = upload_url.ok_or("no upload session")?;
    let size = data.len();
    let mut start = 0;
    while start < size {
        let end = (start + target.fragment_size as usize).min(size);
        let _ignored = http
            .put(&url)
            .header("content-range", format!("bytes {start}-{}/{size}", end - 1))
            .body(data[start..end].to_vec())
            .send()
            .await;
        start = end;
    }
    Ok(ClientReport::default())
}

/// Asserts that `upload` passes the client check at its defaults.
async fn passes<F, Fut>(upload: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<ClientReport, String>>,
{
    let config = Config::default();
    let report = client::check(&config, upload)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    // Measured: every case ran, and the fake saw each make its requests.
    assert_eq!(report.cases, config.cases, "{report}");
    assert!(report.requests >= u64::from(report.cases), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_passes() {
    passes(reference_upload).await;
}

/// `upsession-client-reqwest`, as an application uses it, every file through a
/// session.
async fn real_client_upload(target: Target) -> Result<ClientReport, String> {
    client_upload(target, 0).await
}

/// `upsession-client-reqwest` at its default: the case's small files in one
/// `POST …/attachments`.
async fn real_client_small_upload(target: Target) -> Result<ClientReport, String> {
    client_upload(target, upsession_client_reqwest::SMALL_FILE_LIMIT).await
}

async fn client_upload(target: Target, small_file_limit: u64) -> Result<ClientReport, String> {
    use upsession_client_reqwest as up;
    let client = up::Client::builder()
        .base_url(target.base_url.clone())
        .token(target.token.clone())
        .small_file_limit(small_file_limit)
        .fragment_size(target.fragment_size)
        .planner(
            PlannerConfig::default()
                .with_backoff(Duration::from_millis(5), Duration::from_millis(50))
                .with_deadline(Some(Duration::from_secs(50))),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let done = client
        .upload_file(
            &up::Target::message(target.message_id.clone()),
            &target.file,
            up::UploadOptions::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(ClientReport {
        location: done.location,
        attachment_id: done.attachment_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_passes() {
    passes(real_client_upload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_passes_attaching_small_files_by_post() {
    passes(real_client_small_upload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_the_server_is_caught() {
    let config = Config::default().with_cases(200).with_seed(7);
    let failure = client::check(&config, naive_upload)
        .await
        .expect_err("the naive client must be caught");
    println!("{failure}");
    assert_eq!(failure.rule, Rule::ClientSuccessIsComplete, "{failure}");
}

/// Runs the client check on a broken `upload` and returns the rule it broke.
async fn caught<F, Fut>(config: Config, upload: F) -> Rule
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<ClientReport, String>>,
{
    let failure = client::check(&config, upload)
        .await
        .expect_err("the broken client must be caught");
    println!("{failure}");
    failure.rule
}

/// Broken on purpose: uploads as the reference does, then reports failure without
/// a word.
async fn mute_upload(target: Target) -> Result<ClientReport, String> {
    reference_upload(target).await?;
    Err(String::new())
}

/// Broken on purpose: gives up at once, with a reason, whatever happened.
async fn quitter_upload(target: Target) -> Result<ClientReport, String> {
    let _ = target;
    Err("gave up".into())
}

/// Broken on purpose: uploads as the reference does, then reports another id.
async fn wrong_id_upload(target: Target) -> Result<ClientReport, String> {
    let mut report = reference_upload(target).await?;
    report.attachment_id = Some("AAMk-not-the-one".into());
    Ok(report)
}

/// Broken on purpose: never returns.
async fn hung_upload(target: Target) -> Result<ClientReport, String> {
    let _ = target;
    std::future::pending().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_rule_catches_a_client_that_breaks_it() {
    let config = || Config::default().with_cases(20).with_seed(11);
    assert_eq!(
        caught(config(), mute_upload).await,
        Rule::ClientFailureIsClear
    );
    assert_eq!(
        caught(config(), quitter_upload).await,
        Rule::ClientCompletes
    );
    assert_eq!(
        caught(config(), wrong_id_upload).await,
        Rule::ClientReportsAttachment
    );
    let quick = config().with_case_timeout(Duration::from_millis(300));
    assert_eq!(caught(quick, hung_upload).await, Rule::ClientFinishes);
}

/// The fake on its own: the core's seeded fault plan (the `serve --faults` spec) and
/// Outlook's dialect, with the reference client uploading through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_serves_outlooks_dialect_under_a_seeded_fault_plan() {
    use upsession_conformance::fake::{FakeGraph, FakeOptions, Faults, Quirks};
    use upsession_core::Dialect;
    use upsession_core::route::ItemKind;

    let dir = tempfile::tempdir().unwrap();
    let mut faults_seen = 0;
    for seed in 0..20u64 {
        let plan = format!("seed={seed},put:reset:0.2,put:lost:0.1,put:500:0.1,status:500:0.2")
            .parse()
            .unwrap();
        let fake = FakeGraph::start(
            FakeOptions::default()
                .with_quirks(Quirks::dialect(Dialect::OUTLOOK).with_pascal_case(true))
                .with_faults(Faults::plan(plan)),
        )
        .await
        .unwrap();
        let message_id = fake.create_item(ItemKind::Message, "plan");
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + seed as u32) as u8).collect();
        let file = dir.path().join(format!("f{seed}.bin"));
        std::fs::write(&file, &data).unwrap();
        let target = Target::new(fake.base_url(), fake.token(), &message_id, file, 5000, 1024);
        let report = reference_upload(target).await.unwrap();
        let stored = fake.attachments();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].bytes, data, "seed {seed}");
        assert_eq!(report.attachment_id.as_deref(), Some(stored[0].id.as_str()));
        assert!(
            stored[0].location.contains("/api/v2.0/"),
            "Outlook REST Location"
        );
        faults_seen += fake.faults_fired().len();
        fake.shutdown().await;
    }
    assert!(faults_seen > 0, "the plan injected no fault in 20 uploads");
}

/// Seeded random faults replay: the same seed gives the same faults for the same
/// requests, and the reference client's outcome is then the same too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_replay_from_their_seed() {
    use upsession_conformance::fake::{FakeGraph, FakeOptions, Faults};
    use upsession_core::route::ItemKind;

    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, &data).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let fake = FakeGraph::start(FakeOptions::default().with_faults(Faults::random(11, 0.3)))
            .await
            .unwrap();
        let message_id = fake.create_item(ItemKind::Message, "random");
        let target = Target::new(
            fake.base_url(),
            fake.token(),
            &message_id,
            &file,
            6000,
            1024,
        );
        let outcome = reference_upload(target).await;
        match &outcome {
            Ok(_) => assert_eq!(fake.attachments()[0].bytes, data),
            Err(message) => assert!(!message.is_empty()),
        }
        runs.push((outcome.is_ok(), fake.faults_fired()));
        fake.shutdown().await;
    }
    assert!(!runs[0].1.is_empty(), "a 30% fault rate injected nothing");
    assert_eq!(runs[0], runs[1]);
}
