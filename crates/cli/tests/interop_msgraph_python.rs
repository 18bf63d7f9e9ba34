//! The official Microsoft Graph Python SDK uploads to `upsession serve` unchanged, at
//! its default settings.
//!
//! `tests/interop/msgraph_upload.py` sends the fragments of a 5 MB, a 33 MiB + 7 B and
//! a 150 MB file with msgraph-core's own `LargeFileUploadTask` at its default chunk
//! (5 MiB; every fragment after the first is one byte more, an off-by-one of the SDK)
//! over the SDK's request adapter, then downloads each attachment from its `Location`
//! and compares SHA-256; this test checks the same digests again from its side. It
//! runs against the default flags and `--dialect outlook`, survives a kill -9 of the
//! server mid-upload (the script resumes with the SDK's `resume()` once the server is
//! back), and uploads through a two-node cluster.
//!
//! `tests/interop/msgraph_drive_upload.py` does the same for a OneDrive path
//! (`Uploads/big file #1.bin`): it reads `/me/drive` for the drive id and makes each
//! session at `/drives/{id}/items/root%3A%2F…%3A/createUploadSession`, the URL
//! msgraph-sdk's generated builder makes (kiota's own template expansion), then
//! uploads with the same unchanged task (no parsable factory: the driveItem comes back
//! as raw bytes from the re-send of the last range). A 150 MB file under `fail` is
//! created (201); a 12 MiB + 3 B file to the same path under `fail` ends in 409
//! nameAlreadyExists (the task logs the first refusal, re-sends, and raises the
//! second), under `replace` gives the same item new bytes (200), and a 7 MiB + 11 B
//! file under `rename` becomes `big file #1 1.bin` (201). The script checks each
//! driveItem's `quickXorHash` against its own implementation (checked against the
//! published vectors) and `sha256Hash`, and reads each path's content back; this
//! test checks the statuses, names, ids and hashes again and reads both paths.
//!
//! The SDK lives in a venv under the target directory (`target/interop-venv`), made
//! with `python3 -m venv` and `pip install -r tests/interop/requirements.txt` (exact
//! pins), and reused while a stamp file holds the requirements' SHA-256. Without a
//! usable Python (or PyPI) the test fails when `CI` is set and is skipped otherwise.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop::{
    self, SCRIPT_TIMEOUT, SIZES, Sdk, SdkServer, TOKEN, TestFile, check_results, files,
    interop_dir, run, sdk_tests, target_dir,
};

const VENV_TIMEOUT: Duration = Duration::from_secs(120);
const PIP_TIMEOUT: Duration = Duration::from_secs(300);

/// The Python SDK: `msgraph_upload.py` and `msgraph_drive_upload.py` under the
/// venv's python, against http.
const PYTHON: Sdk = Sdk {
    script: "msgraph_upload.py",
    drive_script: "msgraph_drive_upload.py",
    https: false,
    install: venv_python,
    command: |python, server, flags, files| script(python, &server.base(), flags, files),
    launch: |python, server, script| launch(python, script, &server.base()),
};

/// The venv's python with the pinned SDK installed, or why there is none.
fn venv_python() -> Result<PathBuf, String> {
    let requirements = interop_dir().join("requirements.txt");
    let dir = target_dir().join("interop-venv");
    let python = dir.join("bin").join("python");
    let made = python.clone();
    interop::install_pinned(
        "interop-venv",
        &requirements,
        "requirements.sha256",
        python,
        |dir| {
            let _ = fs::remove_dir_all(dir);
            let venv = "`python3 -m venv`";
            interop::install_step(
                Command::new("python3").args(["-m", "venv"]).arg(dir),
                VENV_TIMEOUT,
                venv,
            )?;
            if !made.exists() {
                return Err(format!("{venv} made no {}", made.display()));
            }
            interop::install_step(
                Command::new(&made)
                    .args(["-m", "pip", "install", "--disable-pip-version-check"])
                    .args(["--no-input", "--quiet", "-r"])
                    .arg(&requirements),
                PIP_TIMEOUT,
                "`pip install -r requirements.txt`",
            )
        },
    )
}

/// `SCRIPT BASE` under `python`, with the token (and no `__pycache__` left in the
/// source tree).
fn launch(python: &Path, script: &str, base: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg(interop_dir().join(script))
        .arg(base)
        .env("UPSESSION_TOKEN", TOKEN)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// `msgraph_upload.py BASE [flags] FILE=AUTH...`; the files alternate between no
/// Authorization on the fragments (as with real Graph, whose uploadUrl is on another
/// host) and the bearer token (which the server must not mind).
fn script(python: &Path, base: &str, flags: &[&str], files: &[TestFile]) -> Command {
    let mut cmd = launch(python, "msgraph_upload.py", base);
    cmd.args(flags);
    for (i, f) in files.iter().enumerate() {
        let auth = if i % 2 == 0 { "none" } else { "bearer" };
        cmd.arg(format!("{}={auth}", f.path.display()));
    }
    cmd
}

sdk_tests! { PYTHON;
    msgraph_core_uploads_at_its_defaults_to_the_default_server:
        uploads_at_defaults(), 0x6d73_6772;
    msgraph_core_uploads_at_its_defaults_in_the_outlook_dialect:
        uploads_at_defaults("--dialect", "outlook"), 0x6f75_746c;
    msgraph_core_resumes_after_a_kill9_of_the_default_server:
        resumes_after_kill9(), 0x6b69_6c6c;
    msgraph_core_resumes_after_a_kill9_in_the_outlook_dialect:
        resumes_after_kill9("--dialect", "outlook"), 0x6b69_6c6d;
    msgraph_core_uploads_to_a_drive_path_under_each_conflict_behaviour:
        uploads_to_a_drive_at_defaults(), 0x6472_7679;
}

/// PascalCase answers (`--casing pascal`, as Outlook's docs example and 21Vianet
/// mailboxes answer): the SDK's model reads only camelCase, so after the first
/// fragment it sees no `nextExpectedRanges`, stops sending new bytes, and re-sends
/// the first range with the next slice's bytes. It never completes the upload:
/// `--casing pascal` is an option for the SDKs that read it (.NET, JavaScript).
#[test]
fn msgraph_core_cannot_follow_pascal_case_answers() {
    let Some(python) = PYTHON.program() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pascal = ["--dialect", "outlook", "--casing", "pascal"];
    let server = SdkServer::start(&dir.path().join("data"), false, &pascal);
    let files = files(dir.path(), &SIZES[1..2], 7);
    let ran = run(
        &mut script(&python, &server.base(), &[], &files),
        SCRIPT_TIMEOUT,
    )
    .expect("the venv's python runs");
    let report = ran.describe("msgraph_upload.py --casing pascal");
    eprintln!("{report}");
    assert!(
        !ran.ok(),
        "the SDK was expected to fail on PascalCase: {report}"
    );
    assert!(
        report.contains("never completed"),
        "fails by never completing: {report}"
    );
}

/// The same uploads to two nodes on shared storage (Garage and PostgreSQL) behind
/// a round-robin proxy: the SDK's fragments alternate between the nodes.
#[test]
fn msgraph_core_uploads_unchanged_to_a_two_node_cluster() {
    let Some(python) = PYTHON.program() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(cluster) = rt.block_on(common::cluster::Cluster::start(2, &["--token", TOKEN])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = files(dir.path(), &SIZES[..2], 0x636c_7573);
    let ran = run(
        &mut script(&python, &cluster.base(), &[], &files),
        SCRIPT_TIMEOUT,
    )
    .expect("the venv's python runs");
    PYTHON.expect_success(&ran, "msgraph_upload.py (cluster)");
    check_results(&ran.results(), &files, None);
    let counts = cluster.proxy.counts();
    assert!(
        counts.iter().all(|&n| n >= 3),
        "both nodes served: {counts:?}"
    );
    drop(cluster);
}
