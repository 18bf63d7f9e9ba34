//! `cargo xtask matrix`: regenerates the SDK × dialect matrix in `docs/PROTOCOL.md`.
//!
//! Runs the test that checks the matrix (`crates/conformance/tests/sdk_matrix.rs`:
//! every SDK model against our server in every variant) with
//! `UPSESSION_UPDATE_MATRIX=1`, which makes it rewrite the block between the
//! `<!-- sdk-matrix:begin -->` and `<!-- sdk-matrix:end -->` markers instead of
//! comparing it. The table is never edited by hand; commit what this writes.

use crate::util::{cargo, run_command};

/// `cargo xtask matrix`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask matrix` takes no arguments (got `{arg}`)"
        ));
    }
    run_command(cargo().env("UPSESSION_UPDATE_MATRIX", "1").args([
        "test",
        "-p",
        "upsession-conformance",
        "--test",
        "sdk_matrix",
        "--",
        "--nocapture",
    ]))?;
    println!(
        "xtask matrix: docs/PROTOCOL.md's SDK matrix is current (see `git diff docs/PROTOCOL.md`)"
    );
    Ok(())
}
