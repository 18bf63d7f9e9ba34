//! `--plot`: the grid as an SVG chart, written by hand (a few lines and labels
//! need no plotting library). One row of panels per file size: MiB/s against
//! concurrency on the left, CPU seconds per GiB on the right, one line per
//! server, concurrency on a log₂ axis.

#![allow(clippy::cast_precision_loss)] // pixel positions of a few panels

use std::fmt::Write as _;

use super::grid::GridRow;

/// A figure of a grid row at a concurrency level.
type Figure = fn(&GridRow, u32) -> Option<f64>;

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 220.0;
const MARGIN_L: f64 = 60.0;
const MARGIN_T: f64 = 40.0;
const GAP: f64 = 90.0;
const COLOURS: [&str; 4] = ["#777777", "#1f77b4", "#d62728", "#2ca02c"];

/// The chart of `rows` (every size, every server) as an SVG document.
pub(super) fn svg(rows: &[GridRow], title: &str) -> String {
    let mut sizes: Vec<&str> = Vec::new();
    let mut servers: Vec<&str> = Vec::new();
    for r in rows {
        if !sizes.contains(&r.size.as_str()) {
            sizes.push(&r.size);
        }
        if !servers.contains(&r.contender) {
            servers.push(r.contender);
        }
    }
    let width = MARGIN_L + 2.0 * PANEL_W + GAP + 160.0;
    let height = MARGIN_T + sizes.len() as f64 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_L}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, size) in sizes.iter().enumerate() {
        let top = MARGIN_T + i as f64 * (PANEL_H + GAP);
        let of_size: Vec<&GridRow> = rows.iter().filter(|r| r.size == *size).collect();
        let panels: [(&str, Figure); 2] = [
            ("MiB/s", |r, c| r.mib_per_s(c)),
            ("CPU s/GiB", |r, c| r.cpu_s_per_gib(c)),
        ];
        for (p, (label, value)) in panels.into_iter().enumerate() {
            let left = MARGIN_L + p as f64 * (PANEL_W + GAP);
            panel(
                &mut out,
                (left, top),
                &format!("{size} files: {label}"),
                &of_size,
                &servers,
                value,
            );
        }
    }
    // The legend, right of the first row.
    let left = MARGIN_L + 2.0 * PANEL_W + GAP + 20.0;
    for (i, server) in servers.iter().enumerate() {
        let y = MARGIN_T + 20.0 + i as f64 * 18.0;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{left}" y1="{y}" x2="{:.0}" y2="{y}" stroke="{colour}" stroke-width="2"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            left + 20.0,
            left + 26.0,
            y + 4.0,
            escape(server)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One panel at `(left, top)`: axes, ticks, and a polyline per server.
fn panel(
    out: &mut String,
    (left, top): (f64, f64),
    title: &str,
    rows: &[&GridRow],
    servers: &[&str],
    value: Figure,
) {
    let levels: Vec<u32> = rows
        .first()
        .map(|r| r.concurrency.clone())
        .unwrap_or_default();
    let max = rows
        .iter()
        .flat_map(|r| levels.iter().filter_map(|&c| value(r, c)))
        .fold(0.0_f64, f64::max);
    let max = nice_ceiling(max);
    let x_of = |c: u32| {
        let (lo, hi) = (
            f64::from(*levels.first().unwrap_or(&1)).log2(),
            f64::from(*levels.last().unwrap_or(&1)).log2(),
        );
        let span = if hi > lo { hi - lo } else { 1.0 };
        left + (f64::from(c).log2() - lo) / span * PANEL_W
    };
    let y_of = |v: f64| top + PANEL_H - v / max * PANEL_H;
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="{:.0}" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = y_of(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 6.0,
            y + 4.0,
            short(v)
        );
    }
    for &c in &levels {
        let x = x_of(c);
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.0}" text-anchor="middle">{c}</text>"#,
            top + PANEL_H + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle">concurrent uploads</text>"#,
        left + PANEL_W / 2.0,
        top + PANEL_H + 34.0
    );
    for (i, server) in servers.iter().enumerate() {
        let Some(row) = rows.iter().find(|r| r.contender == *server) else {
            continue;
        };
        let points: Vec<String> = levels
            .iter()
            .filter_map(|&c| Some(format!("{:.1},{:.1}", x_of(c), y_of(value(row, c)?))))
            .collect();
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
    }
}

/// A round number at or above `v`, for an axis's top.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * step)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * step)
}

/// An axis label: whole numbers when large, two decimals when small.
fn short(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round_and_never_below_the_data() {
        for (v, top) in [
            (0.0, 1.0),
            (0.8, 1.0),
            (1.2, 2.0),
            (760.0, 1000.0),
            (1_020.0, 2_000.0),
            (2_400.0, 2_500.0),
        ] {
            assert!((nice_ceiling(v) - top).abs() < 1e-9, "{v}");
        }
    }
}
