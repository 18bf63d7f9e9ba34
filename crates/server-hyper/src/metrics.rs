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
    errors: Family<CodeLabel, Counter>,
}

impl Metrics {
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
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions_created",
            "Upload sessions created",
            m.sessions_created.clone(),
        );
        registry.register(
            "sessions_completed",
            "Upload sessions completed",
            m.sessions_completed.clone(),
        );
        registry.register(
            "sessions_expired",
            "Upload sessions expired before completing",
            m.sessions_expired.clone(),
        );
        registry.register(
            "sessions_cancelled",
            "Upload sessions cancelled by DELETE",
            m.sessions_cancelled.clone(),
        );
        registry.register(
            "sessions_open",
            "Upload sessions open now",
            m.sessions_open.clone(),
        );
        registry.register(
            "received_bytes",
            "Fragment bytes stored and acknowledged",
            m.bytes_received.clone(),
        );
        registry.register(
            "fragment_duration_seconds",
            "Time from a fragment's headers to its answer",
            m.fragment_seconds.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503 at once because --max-connections were open",
            m.connections_refused.clone(),
        );
        registry.register(
            "errors",
            "Error answers by Graph error code",
            m.errors.clone(),
        );
        Self { registry, ..m }
    }

    pub(crate) fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
