//! The figures of a run: one record of `key=value` pairs per measurement, and the
//! rows that gather a scenario's records under one contender.

use std::collections::BTreeMap;

/// One measurement: `loadgen`'s figures, with the scenario and contender added.
pub(super) type Record = BTreeMap<String, String>;

/// The `key=value` pairs of one line of `loadgen`'s output.
pub(super) fn parse_figures(line: &str) -> Record {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The figure `key` as a number.
pub(super) fn num(r: &Record, key: &str) -> Option<f64> {
    r.get(key)?.parse().ok()
}

/// The median of some figures.
pub(super) fn median(figures: impl IntoIterator<Item = f64>) -> Option<f64> {
    median_min_max(figures.into_iter().collect()).map(|m| m.0)
}

/// The median (of an even count, the mean of the two middle values), least and
/// greatest of `v`.
fn median_min_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n.is_multiple_of(2) {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    } else {
        v[n / 2]
    };
    Some((median, v[0], v[n - 1]))
}

/// One row of results: a scenario under one contender, over all repetitions.
pub(super) struct Row {
    pub(super) scenario: String,
    pub(super) contender: &'static str,
    pub(super) records: Vec<Record>,
}

impl Row {
    /// The median of the figure `key` over the repetitions.
    pub(super) fn median(&self, key: &str) -> Option<f64> {
        median(self.records.iter().filter_map(|r| num(r, key)))
    }

    /// The server's median CPU seconds per GiB received, while receiving it
    /// (`server_ingest_cpu_s`; from a loadgen without it: the server's whole life).
    pub(super) fn cpu_s_per_gib(&self) -> Option<f64> {
        let gib = self.records.first().and_then(|r| {
            let rounds = num(r, "rounds").unwrap_or(1.0);
            Some(num(r, "size")? * num(r, "uploads")? * rounds / f64::from(1 << 30))
        })?;
        let cpu = self
            .median("server_ingest_cpu_s")
            .or_else(|| self.median("server_cpu_s"))?;
        // Zero: the run was shorter than the kernel's CPU clock tick (10 ms).
        (gib > 0.0 && cpu > 0.0).then(|| cpu / gib)
    }

    /// The median of the figure `key`, with its min–max when repeated.
    pub(super) fn spread(&self, key: &str) -> String {
        match median_min_max(self.records.iter().filter_map(|r| num(r, key)).collect()) {
            Some((m, lo, hi)) if self.records.len() > 1 => format!("{m:.1} ({lo:.1}–{hi:.1})"),
            Some((m, _, _)) => format!("{m:.1}"),
            None => "–".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn cpu_per_gib_counts_every_round_and_takes_the_ingest_figure() {
        let row = |pairs: &[(&str, &str)]| super::Row {
            scenario: "grid".into(),
            contender: "x",
            records: vec![
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ],
        };
        let mib4 = (4u64 << 20).to_string();
        // 4 uploads × 64 rounds × 4 MiB = 1 GiB; 0.5 s of CPU while ingesting,
        // 0.9 s in the server's whole life.
        let r = row(&[
            ("size", &mib4),
            ("uploads", "4"),
            ("rounds", "64"),
            ("server_cpu_s", "0.9"),
            ("server_ingest_cpu_s", "0.5"),
        ]);
        assert_eq!(r.cpu_s_per_gib(), Some(0.5));
        // An older loadgen's line: one round, the whole life's CPU.
        let r = row(&[("size", &mib4), ("uploads", "256"), ("server_cpu_s", "0.9")]);
        assert_eq!(r.cpu_s_per_gib(), Some(0.9));
    }

    #[test]
    fn an_even_count_takes_the_mean_of_its_two_middle_values() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([]), None);
    }
}
