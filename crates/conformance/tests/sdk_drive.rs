//! Every official SDK's upload task, as modelled in [`sdk`], uploads to a OneDrive
//! drive path on our server at its defaults: the session is the drive's
//! (`…/drive/root:/sdk/{name}:/createUploadSession`), fragments answer 202, the
//! last one 201 with the `driveItem`, and the file's `content` must be the bytes.
//! Each model uploads the matrix's three files ([`matrix::FILES`]) to a drive and
//! to a draft's attachments: a drive upload must do what the attachment upload
//! does, file by file (the Java model's one-byte last slice fails both ways, as
//! the SDK does: msgraph-sdk-java#2581), and at least every other file works.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use upsession_conformance::sdk::driver::{self, Options, Outcome};
use upsession_conformance::sdk::{self, matrix};
use upsession_testbed::kit::{self, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_model_uploads_to_a_drive_path_at_the_defaults() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, pem) = kit::self_signed(certs.path());
    let client = driver::client(Some(&pem)).unwrap();
    let server = TestServer::start_with(|config| config.with_tls(&cert, &key)).await;
    let base = server.running().base_url();
    let mut differ = Vec::new();
    let mut works = 0;
    for new_model in sdk::factories() {
        for &(len, name) in &matrix::FILES {
            let file = matrix::file(len);
            let mut outcomes = Vec::new();
            for options in [Options::new().to_drive(), Options::new()] {
                let mut model = new_model();
                let run = driver::run_with_options(
                    &client,
                    model.as_mut(),
                    &base,
                    kit::TOKEN,
                    &file,
                    &options,
                )
                .await;
                outcomes.push(run.outcome);
            }
            let sdk = new_model().profile().name;
            match (&outcomes[0], &outcomes[1]) {
                (Outcome::Works, Outcome::Works) => works += 1,
                (Outcome::Fails { .. }, Outcome::Fails { .. }) => {}
                (drive, attachment) => differ.push(format!(
                    "{sdk}, {name}: to a drive {drive}, as an attachment {attachment}"
                )),
            }
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
    let all = sdk::factories().len() * matrix::FILES.len();
    assert!(works + 1 >= all, "only {works} of {all} uploads work");
}
