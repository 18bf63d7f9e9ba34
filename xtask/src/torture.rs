//! `cargo xtask torture`: crash torture of a real `upsession serve` process.
//!
//! Builds `upsession` and the `torture` driver (in `bench/`) in release and runs the
//! driver: concurrent uploads, the server SIGKILLed at seeded random moments and
//! restarted on the same data directory, every survivor checked against what was
//! acknowledged, every completed attachment checked byte for byte, no partial file
//! left at the end. `--kills N` (default 200; CI runs 20 with `--quick`, built in
//! the dev profile the tests already built),
//! `--seed S` (default: from the clock, printed so a run can be replayed).

use std::process::Command;

use crate::util::run_command;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut kills = 200_u32;
    let mut quick = false;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {
                kills = 20;
                quick = true;
            }
            "--kills" => {
                kills = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--kills takes a number")?;
            }
            "--seed" => {
                seed = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--seed takes a number")?;
            }
            other => {
                return Err(format!(
                    "unknown torture option `{other}` (--quick, --kills N, --seed S)"
                ));
            }
        }
    }
    let bin = crate::util::tool_binaries(crate::util::Profile::for_run(quick))?;
    run_command(
        Command::new(bin.join("torture"))
            .arg("--upsession")
            .arg(bin.join("upsession"))
            .args(["--kills", &kills.to_string(), "--seed", &seed.to_string()]),
    )
    .map_err(|e| format!("{e}; replay with `cargo xtask torture --kills {kills} --seed {seed}`"))
}
