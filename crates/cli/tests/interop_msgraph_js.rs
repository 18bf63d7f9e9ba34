//! The official Microsoft Graph JavaScript SDK uploads to `upsession serve` unchanged,
//! at its default settings.
//!
//! `tests/interop/msgraph_upload.cjs` creates a draft and an upload session and sends
//! the fragments of a 5 MB, a 33 MiB + 7 B and a 150 MB file, all through
//! `@microsoft/microsoft-graph-client` 3.0.7 (`Client`, `LargeFileUploadTask` and
//! `FileUpload` at the default 5 MiB range size), then downloads each attachment from
//! its `Location` and compares SHA-256; this test checks again from its side. It runs
//! against the default flags and `--dialect outlook`, and survives a kill -9 of the
//! server mid-upload (the SDK's own `resume()` asks the session and goes on).
//!
//! `tests/interop/msgraph_drive_upload.cjs` uploads to a OneDrive path (`Uploads/big
//! file #1.bin`) with the SDK's own `OneDriveLargeFileUploadTask.create` (which posts
//! to `/me/drive/root:/Uploads/big%20file%20%231.bin:/createUploadSession` with
//! `{item: {"@microsoft.graph.conflictBehavior", name}}`) and `upload()` at the
//! default 5 MiB ranges: a 150 MB file under `fail` is created (201); a 12 MiB + 3 B
//! file to the same path under `fail` ends in 409 nameAlreadyExists (the task throws
//! the error body), under `replace` gives the same item new bytes (200 with the
//! driveItem, which the task takes as done), and a 7 MiB + 11 B file under `rename`
//! becomes `big file #1 1.bin` (201). The script checks each driveItem's
//! `quickXorHash` against its own implementation (checked against the published
//! vectors) and `sha256Hash`, and reads each path's content back; this test checks
//! the statuses, names, ids and hashes again and reads both paths.
//!
//! The SDK only follows an uploadUrl that starts with `https://`
//! (`GraphRequest.parsePath`), so the server runs with `--tls-cert`/`--tls-key` (a
//! certificate made here, trusted by Node through `NODE_EXTRA_CA_CERTS`). The Graph
//! routes are reached as `localhost`, a `customHosts` entry the SDK sends its token
//! to, and the uploadUrls are on `127.0.0.1`, where it sends none: as with real Graph.
//!
//! The SDK is installed with `npm ci` from `tests/interop/js/package-lock.json` into
//! `target/interop-node`, reused while a stamp holds the lock file's SHA-256. Node and
//! npm come from Debian's packages (`cargo xtask engines` installs them where
//! missing). Without them the test fails when `CI` is set and is skipped otherwise.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop::{
    self, Sdk, SdkServer, TOKEN, TestFile, interop_dir, run, sdk_tests, target_dir,
};

const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// The JavaScript SDK: `msgraph_upload.cjs` and `msgraph_drive_upload.cjs` under
/// node, against https.
const JS: Sdk = Sdk {
    script: "msgraph_upload.cjs",
    drive_script: "msgraph_drive_upload.cjs",
    https: true,
    install: node_modules,
    command: script,
    launch,
};

/// `node_modules` with the pinned SDK, or why there is none.
fn node_modules() -> Result<PathBuf, String> {
    let node = run(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )
    .map_err(|e| format!("cannot run node ({e}); install Debian's nodejs and npm"))?;
    let major: u32 = node
        .stdout
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "node {} is too old: the SDK's fetch needs 18 or later",
            node.stdout.trim()
        ));
    }
    let js = interop_dir().join("js");
    let dir = target_dir().join("interop-node");
    let lock_file = js.join("package-lock.json");
    interop::install_pinned(
        "interop-node",
        &lock_file,
        "package-lock.sha256",
        dir.join("node_modules"),
        |dir| {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for file in ["package.json", "package-lock.json"] {
                fs::copy(js.join(file), dir.join(file))
                    .map_err(|e| format!("cannot copy {file}: {e}"))?;
            }
            interop::install_step(
                Command::new("npm")
                    .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                    .arg("--loglevel=error")
                    .current_dir(dir),
                NPM_TIMEOUT,
                "`npm ci` (Debian's npm)",
            )
        },
    )
}

/// `node SCRIPT GRAPH_BASE` with `modules`: the Graph routes reached as `localhost`
/// (a host the SDK sends its token to), the uploadUrls on `127.0.0.1`.
fn launch(modules: &Path, server: &SdkServer, script: &str) -> Command {
    let graph_base = server
        .base()
        .replace("https://127.0.0.1:", "https://localhost:");
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join(script))
        .arg(graph_base)
        .env("UPSESSION_TOKEN", TOKEN)
        .env("NODE_PATH", modules)
        .env("NODE_EXTRA_CA_CERTS", server.cert().expect("https"));
    cmd
}

/// `msgraph_upload.cjs GRAPH_BASE [flags] FILE...`
fn script(modules: &Path, server: &SdkServer, flags: &[&str], files: &[TestFile]) -> Command {
    let mut cmd = launch(modules, server, "msgraph_upload.cjs");
    cmd.args(flags).args(files.iter().map(|f| &f.path));
    cmd
}

sdk_tests! { JS;
    graph_js_uploads_at_its_defaults_to_the_default_server: uploads_at_defaults(), 0x6a73_0001;
    graph_js_uploads_at_its_defaults_in_the_outlook_dialect:
        uploads_at_defaults("--dialect", "outlook"), 0x6a73_0002;
    graph_js_resumes_after_a_kill9_of_the_default_server: resumes_after_kill9(), 0x6a73_0003;
    graph_js_resumes_after_a_kill9_in_the_outlook_dialect:
        resumes_after_kill9("--dialect", "outlook"), 0x6a73_0004;
    graph_js_uploads_to_a_drive_path_under_each_conflict_behaviour:
        uploads_to_a_drive_at_defaults(), 0x6a73_0005;
}
