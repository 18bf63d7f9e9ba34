//! The example of docs/TEST-DOUBLE.md, run as written: an application's test starts
//! `upsession serve` as an Outlook double with faults on a free port, runs its upload
//! code against it, and checks what its code actually sent.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use serde_json::Value;
use upsession_client_reqwest::{Client, PlannerConfig, UploadOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_tests_its_upload_code_against_an_outlook_double_with_faults() {
    // 1. Start the double: Outlook's answers, seeded faults, inspection routes.
    let dir = tempfile::tempdir().unwrap();
    let double = common::serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[
            "--token",
            "app-token",
            "--dialect",
            "outlook",
            "--faults",
            "seed=5,put:503:0.2,put:lost:0.1,status:500:0.2",
            "--admin-token",
            "admin",
            "--fsync",
            "never",
        ],
    );
    assert!(
        double
            .banner
            .iter()
            .any(|l| l.contains("fault injection") && l.contains("seed 5"))
    );

    // 2. The application's own upload code, pointed at the double.
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, vec![42u8; 9_000_000]).unwrap();
    let client = Client::builder()
        .base_url(double.base.clone())
        .token("app-token")
        .planner(PlannerConfig::default().with_backoff(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(100),
        ))
        .build()
        .unwrap();
    let draft = client.create_draft("Quarterly report").await.unwrap();
    let uploaded = client
        .upload_file(&draft, &file, UploadOptions::new())
        .await
        .unwrap();
    assert!(
        uploaded.location.unwrap().contains("/Attachments('"),
        "an Outlook-style Location"
    );

    // 3. Ask the double what the code actually sent.
    let sessions: Value = reqwest::Client::new()
        .get(format!("http://{}/_upsession/sessions", double.addr))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = &sessions["value"][0];
    assert_eq!(session["phase"], "completed");
    let requests = session["requests"].as_array().unwrap();
    for r in requests.iter().filter(|r| r["method"] == "PUT") {
        let range = r["contentRange"].as_str().unwrap();
        let (first, last) = range["bytes ".len()..range.find('/').unwrap()]
            .split_once('-')
            .unwrap();
        let len = last.parse::<u64>().unwrap() - first.parse::<u64>().unwrap() + 1;
        assert!(len <= 4 * 1024 * 1024, "no fragment over 4 MiB: {range}");
    }
    assert!(
        requests.iter().any(|r| r["status"] == 503),
        "the code met at least one 503 and recovered"
    );
}
