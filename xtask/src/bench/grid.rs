//! The grid: throughput against concurrency (1, 4, 16, 64 uploads at once) for
//! each file size (4 MiB, 150 MiB; 1 GiB with `--full`), under the sink, our
//! server and (with `--peers`) rustus, in the page cache. `--plot` draws it
//! ([`super::plot`]).

use std::fmt::Write as _;

use super::record::Row;

/// Runs whose uploads together hold more than this are left out (64 × 1 GiB
/// would fill these machines' disks).
pub(super) const MAX_RUN_BYTES: u64 = 16 << 30;

/// One server and file size across the concurrency levels.
pub(super) struct GridRow {
    /// The file size, as `loadgen --size` takes it.
    pub(super) size: String,
    pub(super) contender: &'static str,
    /// The levels measured, ascending.
    pub(super) concurrency: Vec<u32>,
    /// One row of repetitions per level, in the same order.
    pub(super) cells: Vec<Row>,
}

impl GridRow {
    fn cell(&self, concurrency: u32) -> Option<&Row> {
        let i = self.concurrency.iter().position(|&c| c == concurrency)?;
        self.cells.get(i)
    }

    /// The median MiB/s at `concurrency` uploads.
    pub(super) fn mib_per_s(&self, concurrency: u32) -> Option<f64> {
        self.cell(concurrency)?.median("mib_per_s")
    }

    /// The server's median CPU seconds per GiB received at `concurrency`.
    pub(super) fn cpu_s_per_gib(&self, concurrency: u32) -> Option<f64> {
        self.cell(concurrency)?.cpu_s_per_gib()
    }
}

/// The grid as a markdown table: a row per size and server, a column per
/// concurrency level, each cell `MiB/s median (min–max); CPU s/GiB`.
pub(super) fn table(rows: &[GridRow]) -> String {
    let levels: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.concurrency.iter().copied())
        .fold(Vec::new(), |mut all, c| {
            if !all.contains(&c) {
                all.push(c);
            }
            all
        });
    let mut out = String::from("| file size | server |");
    for c in &levels {
        let _ = write!(out, " {c} at once |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(levels.len()));
    out.push('\n');
    for row in rows {
        let _ = write!(out, "| {} | {} |", row.size, row.contender);
        for &c in &levels {
            match row.cell(c) {
                Some(cell) => {
                    let cpu = cell
                        .cpu_s_per_gib()
                        .map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
                    let _ = write!(out, " {} MiB/s; {cpu} s/GiB |", cell.spread("mib_per_s"));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}
