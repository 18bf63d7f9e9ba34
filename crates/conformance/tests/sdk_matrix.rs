//! The SDK × dialect matrix in `docs/PROTOCOL.md` is what the SDK models really do
//! against our server: every model ([`sdk::factories`]) runs against our server
//! started in-process (https, so the JavaScript model sees an `https://` uploadUrl)
//! in every [`Variant`], the table is rendered, and it must equal the block between
//! the `sdk-matrix` markers. With `UPSESSION_UPDATE_MATRIX=1` (what
//! `cargo xtask matrix` sets) the block is rewritten instead.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::path::Path;
use std::time::Instant;

use upsession_conformance::sdk::matrix::{self, Row, Variant};
use upsession_conformance::sdk::{self, driver};
use upsession_testbed::kit::{self, TestServer};

/// Set to `1` to rewrite the block instead of comparing it.
const UPDATE_ENV: &str = "UPSESSION_UPDATE_MATRIX";

/// Every model against our server in every variant: one row per SDK.
async fn run_matrix() -> Vec<Row> {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, pem) = kit::self_signed(certs.path());
    let client = driver::client(Some(&pem)).unwrap();
    let files: Vec<(&'static str, Vec<u8>)> = matrix::FILES
        .iter()
        .map(|&(len, name)| (name, matrix::file(len)))
        .collect();
    let factories = sdk::factories();
    let mut cells = vec![Vec::new(); factories.len()];
    for variant in Variant::ALL {
        let started = Instant::now();
        let server = TestServer::start_with(|config| {
            config
                .with_tls(&cert, &key)
                .with_dialect(variant.dialect())
                .with_limits(variant.limits())
        })
        .await;
        let base = server.running().base_url();
        assert!(base.starts_with("https://"), "{base}");
        for (new_model, row) in factories.iter().zip(&mut cells) {
            row.push(matrix::run_cell(new_model, &client, &base, kit::TOKEN, &files).await);
        }
        server.shutdown().await;
        eprintln!(
            "{}: {:.1} s",
            variant.flags(),
            started.elapsed().as_secs_f64()
        );
    }
    factories
        .iter()
        .zip(cells)
        .map(|(new_model, cells)| Row::new(new_model().profile(), cells))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_matrix_in_protocol_md_is_generated_from_the_models() {
    let table = matrix::render(&run_matrix().await);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    if std::env::var(UPDATE_ENV).as_deref() == Ok("1") {
        let updated = matrix::splice(&doc, &table).unwrap_or_else(|| {
            panic!(
                "docs/PROTOCOL.md has no `{}` … `{}` block to rewrite",
                matrix::BEGIN,
                matrix::END
            )
        });
        if updated != doc {
            std::fs::write(&path, updated).unwrap();
            eprintln!("docs/PROTOCOL.md: SDK matrix rewritten");
        } else {
            eprintln!("docs/PROTOCOL.md: SDK matrix already current");
        }
        return;
    }
    let current = matrix::extract(&doc).unwrap_or_else(|| {
        panic!(
            "docs/PROTOCOL.md has no `{}` … `{}` block; add the markers and run `cargo xtask matrix`",
            matrix::BEGIN,
            matrix::END
        )
    });
    assert!(
        current == table.trim(),
        "docs/PROTOCOL.md's SDK matrix is stale: run `cargo xtask matrix` to regenerate it.\n\n\
         --- in the docs ---\n{current}\n\n--- generated ---\n{table}"
    );
}
