//! What a bench run was asked for: its command-line options, and the sizes of a
//! full run or a quick one.

/// The options of `cargo xtask bench`.
#[allow(clippy::struct_excessive_bools)] // independent switches of one command line
pub(super) struct Options {
    /// One repetition on small sizes: checks that everything runs, not speed.
    pub(super) quick: bool,
    /// Repetitions of each measurement.
    pub(super) reps: usize,
    /// Whether to write and delete a file of the run's size before each measurement.
    pub(super) cache_fairness: bool,
    /// Measure 1, 2 and 3 nodes on shared storage instead.
    pub(super) cluster: bool,
    /// Also measure rustus (a Rust tus server) with the same bytes.
    pub(super) peers: bool,
}

impl Default for Options {
    /// Three repetitions of every throughput measurement, cache fairness on.
    fn default() -> Self {
        Self {
            quick: false,
            reps: 3,
            cache_fairness: true,
            cluster: false,
            peers: false,
        }
    }
}

impl Options {
    /// Reads the command line.
    pub(super) fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-cache-fairness" => o.cache_fairness = false,
                "--cluster" => o.cluster = true,
                "--peers" => o.peers = true,
                "--reps" => o.reps = number(it.next(), "--reps")?,
                other => {
                    return Err(format!(
                        "unknown bench option `{other}` (--quick, --reps N, --no-cache-fairness, --cluster, --peers)"
                    ));
                }
            }
        }
        if o.quick {
            o.reps = 1;
        }
        Ok(o)
    }
}

/// A flag's value that must be a whole number.
fn number(value: Option<&String>, flag: &str) -> Result<usize, String> {
    value
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{flag} takes a number"))
}

/// The sizes of a full run or a quick one.
pub(super) struct Sizes {
    pub(super) big: &'static str,
    pub(super) big_bytes: u64,
    pub(super) small: &'static str,
    pub(super) small_total: u64,
    pub(super) many: &'static str,
    pub(super) idle: usize,
    /// Preface-only HTTP/2 connections held during one upload of `big`.
    pub(super) h2_idle: usize,
}

impl Sizes {
    /// The sizes of a quick run, or of a full one.
    pub(super) fn new(quick: bool) -> Self {
        if quick {
            Self {
                big: "8MB",
                big_bytes: 8_000_000,
                small: "4MiB",
                small_total: 4 << 22,
                many: "4",
                idle: 200,
                h2_idle: 300,
            }
        } else {
            Self {
                big: "150MB",
                big_bytes: 150_000_000,
                small: "16MiB",
                small_total: 16 << 24,
                many: "16",
                idle: 10_000,
                h2_idle: 5000,
            }
        }
    }
}
