//! `cargo xtask torture`: crash torture of a real `upsession serve` process.
//!
//! Builds `upsession` and the `torture` driver (in `bench/`) in release and runs the
//! driver: concurrent uploads, the server SIGKILLed at seeded random moments and
//! restarted on the same data directory, every survivor checked against what was
//! acknowledged, every completed attachment checked byte for byte, no partial file
//! left at the end. `--kills N` (default 200; CI runs 20 with `--quick`, built in
//! the dev profile the tests already built),
//! `--seed S` (default: from the clock, printed so a run can be replayed),
//! `--cluster N` (N nodes on PostgreSQL and Garage, kills spread over them; CI's
//! `cluster` step runs 2 nodes with `--quick`).

use std::process::Command;

use crate::util::run_command;

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut kills = 200_u32;
    let mut quick = false;
    let mut cluster = None;
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
            "--cluster" => {
                cluster = Some(
                    it.next()
                        .and_then(|n| n.parse::<u32>().ok())
                        .filter(|n| *n > 0)
                        .ok_or("--cluster takes a number of nodes")?,
                );
            }
            "--seed" => {
                seed = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--seed takes a number")?;
            }
            other => {
                return Err(format!(
                    "unknown torture option `{other}` (--quick, --kills N, --seed S, --cluster N)"
                ));
            }
        }
    }
    let bin = crate::util::tool_binaries(crate::util::Profile::for_run(quick))?;
    let mut torture = Command::new(bin.join("torture"));
    torture.arg("--upsession").arg(bin.join("upsession")).args([
        "--kills",
        &kills.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    let mut replay = format!("cargo xtask torture --kills {kills} --seed {seed}");
    if let Some(n) = cluster {
        crate::engines::ensure()?;
        torture
            .args(["--cluster", &n.to_string()])
            .env("UPSESSION_GARAGE", crate::engines::garage_binary());
        replay = format!("{replay} --cluster {n}");
    }
    run_command(&mut torture).map_err(|e| format!("{e}; replay with `{replay}`"))
}
