//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` for a while each.
//!
//! The `fuzz/` crate is its own workspace (libFuzzer needs a nightly compiler and
//! sanitizer flags the main workspace must not see). cargo-fuzz asks for nightly
//! features (`-Zsanitizer=address`), so every cargo-fuzz command runs with
//! `RUSTC_BOOTSTRAP=1` on the stable toolchain.
//!
//! Each target uses and grows its corpus in `fuzz/corpus/<target>/` (committed
//! `seed-*` inputs plus whatever libFuzzer finds); a corpus that grew past
//! [`CORPUS_LIMIT`] files is minimised with `cargo fuzz cmin`, keeping the seeds.
//! A crash leaves its reproducer in `fuzz/artifacts/<target>/` and fails the
//! task once every target has run.
//!
//! `--keep-corpus` leaves `fuzz/corpus/` as it is: it is read, and what libFuzzer
//! finds goes to `target/fuzz-corpus/<target>/` instead, which is what
//! `cargo xtask ci` runs with, so a CI run leaves the checkout clean.
//!
//! `--runs N` stops each target after N executions instead (or at `--time`,
//! whichever comes first, when both are given): that is how the long campaigns in
//! docs/RELIABILITY.md were run. `--sanitizer none` builds without AddressSanitizer
//! (several times faster; safe Rust gains little from it) for such campaigns; the
//! build, the run and the minimisation all use the same setting, as cargo-fuzz
//! rebuilds on a change. `--jobs N` fuzzes N targets at once (libFuzzer keeps
//! one core busy per target), their output lines prefixed with the target.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{cargo, display, ensure_cargo_tool, project_root, run_command};

/// The cargo-fuzz release installed when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs unless `--time` says otherwise.
const DEFAULT_SECONDS: u64 = 60;

/// Corpus size (files) above which a run ends with `cargo fuzz cmin`.
const CORPUS_LIMIT: usize = 200;

struct Options {
    /// `None`: no time limit (only with `runs`).
    seconds: Option<u64>,
    runs: Option<u64>,
    sanitizer: Option<String>,
    target: Option<String>,
    /// Read the committed corpus, write new inputs elsewhere, never minimise.
    keep_corpus: bool,
    /// Targets fuzzed at once (libFuzzer runs one on one core).
    jobs: usize,
}

impl Options {
    /// The cargo-fuzz flags every command of this run shares.
    fn cargo_fuzz_flags(&self) -> Vec<String> {
        self.sanitizer
            .iter()
            .flat_map(|name| ["--sanitizer".to_owned(), name.clone()])
            .collect()
    }

    /// What the run is bounded by, for the progress line.
    fn bound(&self) -> String {
        match (self.seconds, self.runs) {
            (Some(s), Some(n)) => format!("{n} executions or {s}s"),
            (Some(s), None) => format!("{s}s"),
            (None, Some(n)) => format!("{n} executions"),
            (None, None) => "ever".to_owned(),
        }
    }
}

/// What one target's run came to.
struct Outcome {
    target: String,
    executions: Option<u64>,
    seconds: Option<u64>,
    corpus: usize,
    /// Reproducers libFuzzer wrote (crash, timeout, out-of-memory).
    artifacts: Vec<String>,
    /// The run failed without leaving a reproducer (a build or start-up error).
    error: Option<String>,
}

/// `cargo xtask fuzz [--time SECONDS] [--runs N] [--sanitizer NAME] [--target NAME]`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    let root = project_root();
    let all = targets(&root)?;
    let selected: Vec<String> = match &options.target {
        Some(name) if all.contains(name) => vec![name.clone()],
        Some(name) => {
            return Err(format!(
                "no fuzz target `{name}` (targets: {})",
                all.join(", ")
            ));
        }
        None => all,
    };

    ensure_cargo_tool("fuzz", "cargo-fuzz", CARGO_FUZZ_VERSION)?;

    let build_started = Instant::now();
    let mut build = fuzz_command();
    build.arg("build").args(options.cargo_fuzz_flags());
    if let [only] = selected.as_slice() {
        build.arg(only);
    }
    run_command(&mut build)?;
    println!(
        "xtask fuzz: built in {:.1}s",
        build_started.elapsed().as_secs_f64()
    );

    let mut outcomes = Vec::new();
    for group in selected.chunks(options.jobs) {
        // Each target of the group on a thread of its own; their outcomes in order.
        let results: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
            let runs: Vec<_> = group
                .iter()
                .map(|target| {
                    println!("\n==> fuzz {target} for {}", options.bound());
                    let (root, options) = (&root, &options);
                    scope.spawn(move || run_target(root, target, options))
                })
                .collect();
            runs.into_iter()
                .map(|run| {
                    run.join()
                        .unwrap_or_else(|_| Err("a fuzz run panicked".into()))
                })
                .collect()
        });
        for (target, outcome) in group.iter().zip(results) {
            let mut outcome = outcome?;
            if outcome.artifacts.is_empty()
                && outcome.error.is_none()
                && outcome.corpus > CORPUS_LIMIT
                && !options.keep_corpus
            {
                println!(
                    "corpus of {target} has {} files (more than {CORPUS_LIMIT}); minimising it",
                    outcome.corpus
                );
                minimise(&root, target, &options)?;
                outcome.corpus = count_files(&corpus_dir(&root, target));
            }
            outcomes.push(outcome);
        }
    }

    print_summary(&outcomes, &options);
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.artifacts.is_empty() || o.error.is_some())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        let names: Vec<&str> = failed.iter().map(|o| o.target.as_str()).collect();
        Err(format!("fuzzing failed for {}", names.join(", ")))
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: None,
        runs: None,
        sanitizer: None,
        target: None,
        keep_corpus: false,
        jobs: 1,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => options.seconds = Some(positive(it.next(), "--time", "seconds")?),
            "--runs" => options.runs = Some(positive(it.next(), "--runs", "executions")?),
            "--sanitizer" => {
                let name = it.next().ok_or("--sanitizer takes a name")?;
                // cargo-fuzz's own list; checked here so a typo fails before a build.
                if !["address", "leak", "memory", "thread", "none"].contains(&name.as_str()) {
                    return Err(format!(
                        "unknown sanitizer `{name}` (address, leak, memory, thread, none)"
                    ));
                }
                options.sanitizer = Some(name.clone());
            }
            "--target" => {
                options.target = Some(it.next().ok_or("--target takes a target name")?.clone());
            }
            "--keep-corpus" => options.keep_corpus = true,
            "--jobs" => {
                options.jobs = usize::try_from(positive(it.next(), "--jobs", "targets")?)
                    .map_err(|_| "--jobs takes a smaller number")?;
            }
            other => {
                return Err(format!(
                    "unknown fuzz option `{other}` (--time SECONDS, --runs N, \
                     --sanitizer NAME, --target NAME, --keep-corpus, --jobs N)"
                ));
            }
        }
    }
    if options.runs.is_none() {
        options.seconds = options.seconds.or(Some(DEFAULT_SECONDS));
    }
    Ok(options)
}

/// A flag's value that must be a whole number of at least 1.
fn positive(value: Option<&String>, flag: &str, unit: &str) -> Result<u64, String> {
    value
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{flag} takes a number of {unit} (at least 1)"))
}

/// The targets: one file each in `fuzz/fuzz_targets/`, sorted by name.
fn targets(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("fuzz/fuzz_targets");
    let entries =
        fs::read_dir(&dir).map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("no fuzz targets in {}", dir.display()));
    }
    Ok(names)
}

/// `cargo fuzz` with the stable compiler allowed to take nightly flags.
fn fuzz_command() -> Command {
    let mut command = cargo();
    command.env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
    command
}

fn corpus_dir(root: &Path, target: &str) -> PathBuf {
    root.join("fuzz/corpus").join(target)
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_file())
            .count()
    })
}

/// `cargo fuzz cmin` on edge coverage alone (`-use_counters=0`: hit counts would
/// keep several times as many files), keeping the committed `seed-*` inputs, which
/// the merge would otherwise drop or rename to their hashes.
fn minimise(root: &Path, target: &str, options: &Options) -> Result<(), String> {
    let corpus = corpus_dir(root, target);
    let mut seeds = Vec::new();
    if let Ok(entries) = fs::read_dir(&corpus) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("seed-") {
                let bytes = fs::read(entry.path())
                    .map_err(|err| format!("cannot read {}: {err}", entry.path().display()))?;
                seeds.push((name, bytes));
            }
        }
    }
    run_command(
        fuzz_command()
            .arg("cmin")
            .args(options.cargo_fuzz_flags())
            .args([target, "--", "-use_counters=0"]),
    )?;
    for (name, bytes) in seeds {
        let path = corpus.join(name);
        fs::write(&path, bytes).map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    Ok(())
}

/// Runs one target within the options' bounds, echoing libFuzzer's output without
/// its per-input progress lines, and reads the statistics and reproducers from it.
fn run_target(root: &Path, target: &str, options: &Options) -> Result<Outcome, String> {
    let corpus = corpus_dir(root, target);
    fs::create_dir_all(&corpus)
        .map_err(|err| format!("cannot create {}: {err}", corpus.display()))?;
    let mut command = fuzz_command();
    command
        .arg("run")
        .args(options.cargo_fuzz_flags())
        .arg(target);
    // libFuzzer writes what it finds to the first corpus directory and only reads
    // the others.
    let scratch = root.join("target/fuzz-corpus").join(target);
    if options.keep_corpus {
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch)
            .map_err(|err| format!("cannot create {}: {err}", scratch.display()))?;
        command.arg(&scratch).arg(&corpus);
    }
    command.args(["--", "-print_final_stats=1"]);
    if let Some(seconds) = options.seconds {
        command.arg(format!("-max_total_time={seconds}"));
    }
    if let Some(runs) = options.runs {
        command.arg(format!("-runs={runs}"));
    }
    let shown = display(&command);
    println!("$ {shown}");
    // libFuzzer and cargo-fuzz write everything of interest to stderr.
    let mut child = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    let mut outcome = Outcome {
        target: target.to_owned(),
        executions: None,
        seconds: None,
        corpus: 0,
        artifacts: Vec::new(),
        error: None,
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            read_line(&line, &mut outcome);
            // `#1234\tNEW ...`, `#1234\tpulse ...` and their `NEW_FUNC` notes are noise here.
            let progress = line.starts_with('#') || line.trim_start().starts_with("NEW_FUNC");
            if !progress {
                if options.jobs > 1 {
                    eprintln!("[{target}] {line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|err| format!("`{shown}` did not finish: {err}"))?;
    if !status.success() && outcome.artifacts.is_empty() {
        outcome.error = Some(format!("`{shown}` failed ({status})"));
    }
    outcome.corpus = count_files(&corpus);
    if options.keep_corpus {
        outcome.corpus += count_files(&scratch);
    }
    Ok(outcome)
}

/// Picks what the summary needs out of one line of libFuzzer's output.
fn read_line(line: &str, outcome: &mut Outcome) {
    // `stat::number_of_executed_units: 1234` (from -print_final_stats=1)
    if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
        outcome.executions = rest.trim().parse().ok();
    }
    // `Done 1234 runs in 60 second(s)`
    if let Some(rest) = line.strip_prefix("Done ") {
        let words: Vec<&str> = rest.split_whitespace().collect();
        if let [runs, "runs", "in", secs, ..] = words.as_slice() {
            outcome.executions = outcome.executions.or_else(|| runs.parse().ok());
            outcome.seconds = secs.parse().ok();
        }
    }
    // `artifact_prefix='...'; Test unit written to fuzz/artifacts/t/crash-...`
    if let Some((_, path)) = line.split_once("Test unit written to ") {
        let path = path.trim().to_owned();
        if !outcome.artifacts.contains(&path) {
            outcome.artifacts.push(path);
        }
    }
}

fn print_summary(outcomes: &[Outcome], options: &Options) {
    let mut flags = options.cargo_fuzz_flags().join(" ");
    if !flags.is_empty() {
        flags.push(' ');
    }
    println!("\nxtask fuzz summary:");
    println!(
        "  {:<16} {:>12} {:>8} {:>10} {:>7}  result",
        "target", "executions", "seconds", "exec/s", "corpus"
    );
    for o in outcomes {
        let executions = o
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let seconds = o.seconds.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let rate = match (o.executions, o.seconds) {
            (Some(n), Some(s)) if s > 0 => (n / s).to_string(),
            _ => "?".to_owned(),
        };
        let result = if !o.artifacts.is_empty() {
            "CRASH"
        } else if o.error.is_some() {
            "FAILED"
        } else {
            "ok"
        };
        println!(
            "  {:<16} {executions:>12} {seconds:>8} {rate:>10} {:>7}  {result}",
            o.target, o.corpus
        );
        for artifact in &o.artifacts {
            println!(
                "    reproducer: {artifact}\n    replay with: RUSTC_BOOTSTRAP=1 cargo fuzz run {flags}{} {artifact}",
                o.target
            );
        }
        if let Some(error) = &o.error {
            println!("    {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Outcome, parse_args, read_line};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_bound_each_run_by_time_or_executions() {
        let o = parse_args(&[]).unwrap();
        assert_eq!((o.seconds, o.runs), (Some(60), None));
        assert!(o.cargo_fuzz_flags().is_empty());

        // `--runs` alone lifts the default time limit.
        let o = parse_args(&args(&["--runs", "10000000", "--sanitizer", "none"])).unwrap();
        assert_eq!((o.seconds, o.runs), (None, Some(10_000_000)));
        assert_eq!(o.cargo_fuzz_flags(), ["--sanitizer", "none"]);
        assert_eq!(o.bound(), "10000000 executions");

        let o = parse_args(&args(&["--runs", "5", "--time", "9"])).unwrap();
        assert_eq!(o.bound(), "5 executions or 9s");
        assert!(!o.keep_corpus);

        let o = parse_args(&args(&["--time", "5", "--keep-corpus"])).unwrap();
        assert!(o.keep_corpus);
        assert_eq!(o.jobs, 1);
        assert_eq!(parse_args(&args(&["--jobs", "2"])).unwrap().jobs, 2);

        for bad in [
            &["--runs", "0"][..],
            &["--time", "x"],
            &["--sanitizer", "adress"],
            &["--sanitizer"],
            &["--jobs", "0"],
            &["--workers", "2"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn libfuzzer_output_gives_executions_and_reproducers() {
        let mut o = Outcome {
            target: "t".to_owned(),
            executions: None,
            seconds: None,
            corpus: 0,
            artifacts: Vec::new(),
            error: None,
        };
        read_line("Done 123456 runs in 61 second(s)", &mut o);
        assert_eq!((o.executions, o.seconds), (Some(123_456), Some(61)));
        read_line("stat::number_of_executed_units: 123457", &mut o);
        assert_eq!(o.executions, Some(123_457));
        read_line(
            "artifact_prefix='/x/fuzz/artifacts/t/'; Test unit written to /x/fuzz/artifacts/t/crash-ab12",
            &mut o,
        );
        assert_eq!(o.artifacts, ["/x/fuzz/artifacts/t/crash-ab12"]);
    }
}
