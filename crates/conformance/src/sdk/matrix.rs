//! The SDK × dialect matrix: which server variants and files each model is run
//! against, and the markdown table `docs/PROTOCOL.md` carries between
//! [`BEGIN`] and [`END`].
//!
//! The table is generated, never typed: `crates/conformance/tests/sdk_matrix.rs`
//! runs every model against every [`Variant`] of our server and compares the
//! rendering with the docs (`cargo xtask matrix` rewrites it). Everything rendered
//! is deterministic: no timings, ports or ids.

use std::fmt::Write as _;

use upsession_core::dialect::{Casing, RangeForms};
use upsession_core::{Dialect, Limits};

use super::driver::{self, Outcome};
use super::{Profile, SdkModel};

/// The line before the generated block.
pub const BEGIN: &str = "<!-- sdk-matrix:begin -->";
/// The line after it.
pub const END: &str = "<!-- sdk-matrix:end -->";

/// One column: a way to run `upsession serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variant {
    /// No flags.
    Default,
    /// `--dialect outlook`.
    Outlook,
    /// `--dialect outlook --casing pascal`.
    OutlookPascal,
    /// `--dialect outlook --range-form outlook`.
    OutlookRanges,
    /// `--dialect onedrive`.
    OneDrive,
    /// `--max-fragment 4MiB`: Graph's "up to 4 MB" read strictly.
    Strict,
}

impl Variant {
    /// Every column, in order.
    pub const ALL: [Self; 6] = [
        Self::Default,
        Self::Outlook,
        Self::OutlookPascal,
        Self::OutlookRanges,
        Self::OneDrive,
        Self::Strict,
    ];

    /// The `upsession serve` flags, as the column's title.
    pub const fn flags(self) -> &'static str {
        match self {
            Self::Default => "no flags",
            Self::Outlook => "`--dialect outlook`",
            Self::OutlookPascal => "`--dialect outlook --casing pascal`",
            Self::OutlookRanges => "`--dialect outlook --range-form outlook`",
            Self::OneDrive => "`--dialect onedrive`",
            Self::Strict => "`--max-fragment 4MiB`",
        }
    }

    /// The server's dialect under these flags.
    pub fn dialect(self) -> Dialect {
        match self {
            Self::Default | Self::Strict => Dialect::UPSESSION,
            Self::Outlook => Dialect::OUTLOOK,
            Self::OutlookPascal => Dialect::OUTLOOK.with_casing(Casing::Pascal),
            Self::OutlookRanges => Dialect::OUTLOOK.with_range_forms(RangeForms::Outlook),
            Self::OneDrive => Dialect::ONEDRIVE,
        }
    }

    /// The server's limits under these flags.
    pub fn limits(self) -> Limits {
        match self {
            Self::Strict => Limits::default().with_max_fragment(4 << 20),
            _ => Limits::default(),
        }
    }
}

/// The files of every cell, in order, with their names in the table: one that fits
/// one chunk, one a byte longer than three 5 MiB slices (Java's one-byte tail,
/// msgraph-sdk-java#2581), and one of many slices ending in a ragged one.
pub const FILES: [(usize, &str); 3] = [
    (3_000_000, "3,000,000 B"),
    ((15 << 20) + 1, "15 MiB + 1 B"),
    ((33 << 20) + 7, "33 MiB + 7 B"),
];

/// A file of `len` pseudo-random bytes, the same every time (so a slice sent from
/// the wrong offset never passes for the right one).
pub fn file(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// One cell's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cell {
    /// Every file arrived byte-exact.
    Works,
    /// The first file that did not, and why.
    Fails {
        /// The file's name in [`FILES`].
        file: &'static str,
        /// The driver's reason.
        reason: String,
    },
}

impl Cell {
    /// The cell's text in the table.
    pub fn text(&self) -> String {
        match self {
            Self::Works => "works".to_owned(),
            Self::Fails { file, reason } => format!("fails at {file}: {reason}"),
        }
    }
}

/// One row: a profile and its cells in [`Variant::ALL`] order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Row {
    /// The SDK.
    pub profile: &'static Profile,
    /// Its cells.
    pub cells: Vec<Cell>,
}

impl Row {
    /// A row of `profile` with `cells`.
    pub fn new(profile: &'static Profile, cells: Vec<Cell>) -> Self {
        Self { profile, cells }
    }
}

/// Runs a fresh model from `new_model` on each of `files` (pairs of name and bytes,
/// as [`FILES`] and [`file()`] make them) against the server at `base_url`, stopping
/// at the first file that fails.
pub async fn run_cell(
    new_model: impl Fn() -> Box<dyn SdkModel>,
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    files: &[(&'static str, Vec<u8>)],
) -> Cell {
    for (name, bytes) in files {
        let mut model = new_model();
        let outcome = driver::run_with(client, model.as_mut(), base_url, token, bytes).await;
        if let Outcome::Fails { reason } = outcome {
            return Cell::Fails { file: name, reason };
        }
    }
    Cell::Works
}

/// The markdown block: the table (rows as given, columns in [`Variant::ALL`] order)
/// and a legend line per SDK naming what its profile models.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from("| SDK (slice) |");
    for v in Variant::ALL {
        let _ = write!(out, " {} |", v.flags());
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Variant::ALL.len()));
    out.push('\n');
    for row in rows {
        let _ = write!(
            out,
            "| {} ({}) |",
            row.profile.name,
            human(row.profile.chunk)
        );
        for cell in &row.cells {
            let _ = write!(out, " {} |", escape(&cell.text()));
        }
        out.push('\n');
    }
    let files: Vec<&str> = FILES.iter().map(|(_, name)| *name).collect();
    let _ = write!(
        out,
        "\nEach cell uploads {} in turn to a message and names the first that fails; \
         `works` means the SDK reported success and `$value` returned the exact bytes.\n\n",
        files.join(", ")
    );
    for row in rows {
        legend(&mut out, row.profile);
    }
    out
}

fn legend(out: &mut String, p: &Profile) {
    let _ = write!(
        out,
        "- **{}**: {}, `{}` in `{}` @ `{}`; slice {} B, {}. {}.",
        p.name,
        p.package,
        p.path,
        p.repo,
        &p.commit[..12.min(p.commit.len())],
        thousands(p.chunk),
        p.chunk_source,
        p.summary
    );
    let live: Vec<String> = p
        .live_issues
        .iter()
        .map(|(issue, what)| format!("{what} ({issue})"))
        .collect();
    if !live.is_empty() {
        let _ = write!(out, " Against the live service too: {}.", live.join("; "));
    }
    out.push('\n');
}

/// `doc` with the block between [`BEGIN`] and [`END`] replaced by `block`; `None`
/// when the markers are missing or out of order.
pub fn splice(doc: &str, block: &str) -> Option<String> {
    let (head, rest) = doc.split_once(BEGIN)?;
    let (_, tail) = rest.split_once(END)?;
    Some(format!("{head}{BEGIN}\n{}\n{END}{tail}", block.trim_end()))
}

/// The block between the markers of `doc`, trimmed.
pub fn extract(doc: &str) -> Option<&str> {
    let (_, rest) = doc.split_once(BEGIN)?;
    let (block, _) = rest.split_once(END)?;
    Some(block.trim())
}

/// A size as the table names it: `5 MiB`, `320 KiB`, or bytes.
fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{} B", thousands(bytes))
    }
}

/// `5242880` as `5,242,880`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A cell's text safe inside a table row.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdk::models;

    #[test]
    fn the_table_has_a_row_per_sdk_and_a_column_per_variant() {
        let rows: Vec<Row> = models()
            .iter()
            .map(|m| {
                let mut cells = vec![Cell::Works; Variant::ALL.len()];
                cells[1] = Cell::Fails {
                    file: FILES[1].1,
                    reason: "a | b".into(),
                };
                Row::new(m.profile(), cells)
            })
            .collect();
        let table = render(&rows);
        assert!(table.starts_with("| SDK (slice) | no flags | `--dialect outlook` |"));
        assert!(
            table.contains("| Python (5 MiB) | works | fails at 15 MiB + 1 B: a \\| b | works |")
        );
        assert!(table.contains("| Go (320 KiB) |"));
        assert!(table.contains("@ `d6e481af8981`; slice 5,242,880 B, default"));
        assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 7);
    }

    #[test]
    fn the_block_is_spliced_between_the_markers() {
        let doc = format!("a\n{BEGIN}\nold\n{END}\nb\n");
        let new = splice(&doc, "new\n").unwrap();
        assert_eq!(new, format!("a\n{BEGIN}\nnew\n{END}\nb\n"));
        assert_eq!(extract(&new), Some("new"));
        assert_eq!(splice("no markers", "x"), None);
    }

    #[test]
    fn files_are_deterministic_and_varied() {
        let a = file(4096);
        assert_eq!(a, file(4096));
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200);
    }
}
