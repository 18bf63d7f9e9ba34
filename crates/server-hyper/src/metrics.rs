//! Prometheus metrics: what an operator needs to see the server is healthy.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    code: String,
}

/// Why a new session was refused by the per-token limits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    reason: &'static str,
}

/// A call to a shared store's backend: which (`pg`, `s3`) and what.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabel {
    backend: &'static str,
    op: &'static str,
}

/// The buckets of backend calls: 0.5 ms .. ~16 s.
fn backend_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metrics. Labels never carry ids or credentials.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) sessions_created: Counter,
    pub(crate) sessions_completed: Counter,
    pub(crate) sessions_expired: Counter,
    pub(crate) sessions_cancelled: Counter,
    pub(crate) sessions_open: Gauge,
    pub(crate) bytes_received: Counter,
    pub(crate) fragment_seconds: Histogram,
    pub(crate) connections_refused: Counter,
    pub(crate) connections_refused_per_ip: Counter,
    pub(crate) connections_evicted: Counter,
    pub(crate) connections_closed_idle: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) records_quarantined: Counter,
    pub(crate) attachments_deleted: Counter,
    /// Sessions still uploading, as the per-token limits count them (all tokens).
    pub(crate) sessions_uploading: Gauge,
    /// The bytes those sessions declared.
    pub(crate) declared_bytes: Gauge,
    /// Fragments whose bytes are being stored now.
    pub(crate) fragments_writing: Gauge,
    refused: Family<ReasonLabel, Counter>,
    auth_failures: Family<ReasonLabel, Counter>,
    errors: Family<CodeLabel, Counter>,
    backend: Family<BackendLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Records a call of `backend`'s `op` that took `took`.
    pub(crate) fn backend_call(
        &self,
        backend: &'static str,
        op: &'static str,
        took: std::time::Duration,
    ) {
        self.backend
            .get_or_create(&BackendLabel { backend, op })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("upsession");
        let m = Self {
            sessions_created: Counter::default(),
            sessions_completed: Counter::default(),
            sessions_expired: Counter::default(),
            sessions_cancelled: Counter::default(),
            sessions_open: Gauge::default(),
            bytes_received: Counter::default(),
            // 1 ms .. ~33 s
            fragment_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            connections_refused: Counter::default(),
            connections_refused_per_ip: Counter::default(),
            connections_evicted: Counter::default(),
            connections_closed_idle: Counter::default(),
            connections_open: Gauge::default(),
            records_quarantined: Counter::default(),
            attachments_deleted: Counter::default(),
            sessions_uploading: Gauge::default(),
            declared_bytes: Gauge::default(),
            fragments_writing: Gauge::default(),
            refused: Family::default(),
            auth_failures: Family::default(),
            errors: Family::default(),
            backend: Family::new_with_constructor(backend_histogram),
            registry: Registry::default(),
        };
        m.register_counters(&mut registry);
        m.register_the_rest(&mut registry);
        Self { registry, ..m }
    }

    fn register_counters(&self, registry: &mut Registry) {
        let counters = [
            (
                "sessions_created",
                "Upload sessions created",
                &self.sessions_created,
            ),
            (
                "sessions_completed",
                "Upload sessions completed",
                &self.sessions_completed,
            ),
            (
                "sessions_expired",
                "Upload sessions expired before completing",
                &self.sessions_expired,
            ),
            (
                "sessions_cancelled",
                "Upload sessions cancelled by DELETE",
                &self.sessions_cancelled,
            ),
            (
                "received_bytes",
                "Fragment bytes stored and acknowledged",
                &self.bytes_received,
            ),
            (
                "connections_refused",
                "Connections answered 503 at once: every connection they could replace (under --max-connections, or --max-connections-per-ip of their address) had a request in flight",
                &self.connections_refused,
            ),
            (
                "connections_refused_per_ip",
                "Of connections_refused, those refused by --max-connections-per-ip",
                &self.connections_refused_per_ip,
            ),
            (
                "connections_evicted",
                "Connections with no request in flight closed to make room for a new one at a cap",
                &self.connections_evicted,
            ),
            (
                "connections_closed_idle",
                "Connections closed with no request in flight for --idle-timeout, or no first request within the header timeout",
                &self.connections_closed_idle,
            ),
            (
                "records_quarantined",
                "Records set aside at start-up as unreadable or unusable (quarantine/ in the data directory)",
                &self.records_quarantined,
            ),
            (
                "attachments_deleted",
                "Attachments deleted (DELETE of the attachment), with their bytes",
                &self.attachments_deleted,
            ),
        ];
        register(registry, &counters);
    }

    fn register_the_rest(&self, registry: &mut Registry) {
        let gauges = [
            (
                "sessions_open",
                "Upload sessions open now (completed ones too, until they expire)",
                &self.sessions_open,
            ),
            (
                "sessions_uploading",
                "Upload sessions still uploading, as the per-token limits count them, for all tokens",
                &self.sessions_uploading,
            ),
            (
                "declared_bytes",
                "Bytes declared by the sessions still uploading, for all tokens",
                &self.declared_bytes,
            ),
            (
                "fragments_writing",
                "Fragments whose bytes are being received and stored now",
                &self.fragments_writing,
            ),
        ];
        register(registry, &gauges);
        registry.register(
            "backend_seconds",
            "Calls of a shared store to its backends (pg: PostgreSQL, s3: the bucket), by operation, in seconds",
            self.backend.clone(),
        );
        registry.register(
            "sessions_refused",
            "New upload sessions refused by the per-token limits, by the limit reached (sessions: 429, bytes: 507)",
            self.refused.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications on Graph routes, by reason (missing, malformed, unknown_token, expired, signature, ...; over_budget: refused 429 before checking)",
            self.auth_failures.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open now (closing ones included)",
            self.connections_open.clone(),
        );
        registry.register(
            "fragment_duration_seconds",
            "Time from a fragment's headers to its answer",
            self.fragment_seconds.clone(),
        );
        registry.register(
            "errors",
            "Error answers by Graph error code",
            self.errors.clone(),
        );
    }

    pub(crate) fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    /// A new session refused by the per-token limit `reason` (`sessions`, `bytes`).
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A failed authentication, for `reason`.
    pub(crate) fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The page in OpenMetrics text (what Prometheus asks for first).
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The page in Prometheus' classic text format (0.0.4), for scrapers and
    /// tools that do not ask for OpenMetrics.
    pub(crate) fn render_classic(&self) -> String {
        classic_text(&self.render())
    }
}

/// Registers each `(name, help, metric)`.
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    metrics: &[(&str, &str, &M)],
) {
    for (name, help, metric) in metrics {
        registry.register(*name, *help, (*metric).clone());
    }
}

/// OpenMetrics text → classic Prometheus text, for what this registry holds:
/// counters (not named `…_total` at registration), gauges and histograms. Those
/// differ between the formats only in that a classic counter family is named as its sample
/// (`x_total`, where OpenMetrics names it `x`), and that OpenMetrics ends with
/// `# EOF` and may carry `# UNIT` lines.
fn classic_text(open_metrics: &str) -> String {
    use std::fmt::Write as _;
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let family = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        if let Some((kind, rest)) = family {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if counters.contains(name) && !name.ends_with("_total") {
                "_total"
            } else {
                ""
            };
            let _ = writeln!(out, "{kind}{name}{suffix} {tail}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::Metrics;

    #[test]
    fn the_classic_page_names_counters_as_their_samples() {
        let m = Metrics::new();
        m.sessions_created.inc();
        m.error("invalidRange");
        let open = m.render();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE upsession_sessions_created counter\n"),
            "{open}"
        );
        let classic = m.render_classic();
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(
            classic.contains("# TYPE upsession_sessions_created_total counter\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP upsession_sessions_created_total Upload sessions created"),
            "{classic}"
        );
        assert!(
            classic.contains("upsession_sessions_created_total 1\n"),
            "{classic}"
        );
        // Every sample line belongs to the family its TYPE line names.
        let mut family = "";
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name.starts_with(family),
                    "{name} outside {family}:\n{classic}"
                );
            }
        }
    }
}
