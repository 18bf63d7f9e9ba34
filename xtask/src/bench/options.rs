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
    /// The full grid: 1 GiB files too, and 5 repetitions unless `--reps` says.
    pub(super) full: bool,
    /// Draw the grid as an SVG chart in `target/bench/`.
    pub(super) plot: bool,
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
            full: false,
            plot: false,
        }
    }
}

impl Options {
    /// Reads the command line.
    pub(super) fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self::default();
        let mut it = args.iter();
        let mut reps = None;
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--full" => o.full = true,
                "--plot" => o.plot = true,
                "--no-cache-fairness" => o.cache_fairness = false,
                "--cluster" => o.cluster = true,
                "--peers" => o.peers = true,
                "--reps" => reps = Some(number(it.next(), "--reps")?),
                other => {
                    return Err(format!(
                        "unknown bench option `{other}` (--quick, --full, --plot, --reps N, --no-cache-fairness, --cluster, --peers)"
                    ));
                }
            }
        }
        if o.quick && o.full {
            return Err("--quick and --full ask for opposite runs; choose one".into());
        }
        o.reps = match (o.quick, o.full, reps) {
            (true, ..) => 1,
            (_, _, Some(n)) => n.max(1),
            (_, true, None) => 5,
            _ => o.reps,
        };
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
    /// The grid's file sizes (`loadgen --size`, and in bytes) and concurrency
    /// levels.
    pub(super) grid_files: Vec<(&'static str, u64)>,
    pub(super) grid_concurrency: &'static [u32],
    /// The least bytes a grid cell moves: each upload sends files one after
    /// another until the cell holds this much (`loadgen --rounds`), since a cell
    /// of a few small files would time its start, not its throughput.
    pub(super) grid_min_bytes: u64,
}

impl Sizes {
    /// The sizes of a quick run, a default one or a `--full` one.
    pub(super) fn new(quick: bool, full: bool) -> Self {
        let mut grid_files = vec![("4MiB", 4 << 20), ("150MiB", 150 << 20)];
        if full {
            grid_files.push(("1GiB", 1 << 30));
        }
        if quick {
            Self {
                big: "8MB",
                big_bytes: 8_000_000,
                small: "4MiB",
                small_total: 4 << 22,
                many: "4",
                idle: 200,
                h2_idle: 300,
                grid_files: vec![("4MiB", 4 << 20)],
                grid_concurrency: &[1, 4],
                grid_min_bytes: 16 << 20,
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
                grid_files,
                grid_concurrency: &[1, 4, 16, 64],
                grid_min_bytes: 256 << 20,
            }
        }
    }
}
