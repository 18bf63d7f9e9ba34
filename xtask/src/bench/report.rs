//! The report of a run: the markdown table of every row beside the sink (and
//! rustus, where it ran), then the other figures.

use std::fmt::Write as _;

use super::options::Sizes;
use super::record::{Record, Row, num};

/// The markdown table of a run.
pub(super) fn report(rows: &[Row], extras: &[Record], z: &Sizes) -> String {
    let (big, many, idle_n) = (z.big, z.many, z.idle);
    let [
        probe,
        client,
        async_client,
        blocking_client,
        idle,
        restart,
        flood,
    ] = extras
    else {
        return String::new();
    };
    let mut table = String::from(
        "| scenario | server | MiB/s median (min–max) | × sink | × rustus | CPU s/GiB | peak RSS MiB | fragment p50/p99 ms |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        table.push_str(&row_line(row, rows));
    }
    let _ = writeln!(table, "\n| other figure | value |\n|---|---|");
    // After one upload only: after concurrent ones, many reads run at once, which
    // is another figure.
    for row in rows
        .iter()
        .filter(|r| r.contender == "upsession" && r.scenario.starts_with("1 upload"))
    {
        let read = |contender: &str| {
            rows.iter()
                .find(|r| r.scenario == row.scenario && r.contender == contender)
                .and_then(|r| r.median("read_mib_per_s"))
        };
        if let (Some(ours), Some(sink)) = (read("upsession"), read("sink"))
            && sink > 0.0
        {
            let _ = writeln!(
                table,
                "| `GET …/$value` reads after {}, upsession / sink | {ours:.1} / {sink:.1} MiB/s ({:.2} ×) |",
                row.scenario,
                ours / sink
            );
        }
    }
    let _ = writeln!(
        table,
        "| our CLI, 1 upload ({big}), whole process / `loadgen`'s upload, each on a fresh server | {} / {} MiB/s ({} ×) |",
        client["mib_per_s"], client["loadgen_mib_per_s"], client["x_loadgen"]
    );
    for c in [async_client, blocking_client] {
        let mib = |k: &str| {
            num(c, k).map_or_else(
                || "–".to_owned(),
                |b| format!("{:.1}", b / f64::from(1 << 20)),
            )
        };
        let _ = writeln!(
            table,
            "| {} ({big}); minimal program's size as built / stripped | {} MiB/s; {} / {} MiB |",
            c["scenario"],
            c["mib_per_s"],
            mib("binary_bytes"),
            mib("stripped_bytes")
        );
    }
    let _ = writeln!(
        table,
        "| status GET p50 / p99 under {many} uploads, upsession / sink | {} / {} ms; {} / {} ms |",
        probe.get("status_p50_ms").map_or("–", String::as_str),
        probe.get("status_p99_ms").map_or("–", String::as_str),
        probe.get("sink_status_p50_ms").map_or("–", String::as_str),
        probe.get("sink_status_p99_ms").map_or("–", String::as_str)
    );
    let _ = writeln!(
        table,
        "| RSS per idle session ({idle_n}) | {} bytes |",
        idle["rss_bytes_per_session"]
    );
    let _ = writeln!(
        table,
        "| restart with {idle_n} sessions: first answer | {} s |",
        restart["first_answer_s"]
    );
    let field = |k: &str| flood.get(k).map_or("–", String::as_str);
    let _ = writeln!(
        table,
        "| 1 upload ({big}) beside {} preface-only HTTP/2 connections: upload; connections open / closed / refused; server peak RSS | {} MiB/s; {} / {} / {}; {:.1} MiB |",
        field("hostile_h2"),
        field("mib_per_s"),
        field("hostile_open"),
        field("hostile_closed"),
        field("hostile_refused"),
        num(flood, "server_peak_rss_kib").unwrap_or(0.0) / 1024.0
    );
    table
}

/// The table's line for `row`, measured against the other `rows` of its scenario.
fn row_line(row: &Row, rows: &[Row]) -> String {
    let sink = rows
        .iter()
        .find(|r| {
            r.scenario == row.scenario
                && r.contender
                    == if row.contender.contains("fsync") {
                        "sink --fsync"
                    } else {
                        "sink"
                    }
        })
        .and_then(|r| r.median("mib_per_s"));
    let ratio = match (row.median("mib_per_s"), sink) {
        (Some(m), Some(s)) if s > 0.0 => format!("{:.2}", m / s),
        _ => "–".into(),
    };
    // Ours against rustus with the same durability, where rustus ran.
    let peer = match row.contender {
        "upsession" => "rustus",
        "upsession --fsync always" => "rustus --force-fsync",
        _ => "",
    };
    let vs_peer = rows
        .iter()
        .find(|r| r.scenario == row.scenario && r.contender == peer)
        .and_then(|r| r.median("mib_per_s"));
    let vs_peer = match (row.median("mib_per_s"), vs_peer) {
        (Some(m), Some(p)) if p > 0.0 => format!("{:.2}", m / p),
        _ => "–".into(),
    };
    let cpu = row
        .cpu_s_per_gib()
        .map_or_else(|| "–".into(), |c| format!("{c:.2}"));
    let rss = row
        .median("server_peak_rss_kib")
        .map_or("–".into(), |k| format!("{:.1}", k / 1024.0));
    let lat = format!(
        "{:.1} / {:.1}",
        row.median("frag_p50_ms").unwrap_or(0.0),
        row.median("frag_p99_ms").unwrap_or(0.0)
    );
    format!(
        "| {} | {} | {} | {ratio} | {vs_peer} | {cpu} | {rss} | {lat} |\n",
        row.scenario,
        row.contender,
        row.spread("mib_per_s")
    )
}
