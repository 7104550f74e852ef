//! Prometheus metrics: a registry per gateway (no global state, so tests can run several),
//! rendered in the OpenMetrics text format at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the decisions counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub tenant: String,
    /// `ALLOW`, `BLOCK` or `ESCALATE`.
    pub outcome: String,
}

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Decisions by tenant and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Evaluation wall time, in seconds.
    pub evaluation_seconds: Histogram,
    /// Fuel burned per evaluation.
    pub evaluation_fuel: Histogram,
    /// Audit append time (write and durable flush), in seconds.
    pub audit_append_seconds: Histogram,
    /// What the audit writer observes per batch.
    pub audit_writer: AuditWriterMetrics,
    /// Tenants that could not be loaded at start (set when rendered).
    pub tenants_degraded: Gauge,
}

/// What the audit writer observes per batch (group commit). The histograms are shared
/// handles: [`Metrics`] registers them; a default set is observed but exposed nowhere.
#[derive(Debug, Clone)]
pub struct AuditWriterMetrics {
    /// Records written per batch (those refused for a usage conflict are not).
    pub batch_records: Histogram,
    /// Each batch's durable flush (the wait on the disk), in seconds: its tail is what every
    /// connection waiting on that batch waits.
    pub flush_seconds: Histogram,
}

impl Default for AuditWriterMetrics {
    fn default() -> Self {
        Self {
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            flush_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let decisions = Family::<DecisionLabels, Counter>::default();
        let evaluation_seconds = Histogram::new(exponential_buckets(2e-6, 2.0, 20));
        let evaluation_fuel = Histogram::new(exponential_buckets(1_000.0, 4.0, 12));
        let audit_append_seconds = Histogram::new(exponential_buckets(1e-5, 2.0, 20));
        let audit_writer = AuditWriterMetrics::default();
        let mut registry = Registry::with_prefix("writ");
        registry.register(
            "decisions",
            "Decisions by tenant and outcome",
            decisions.clone(),
        );
        registry.register(
            "evaluation_seconds",
            "Policy evaluation wall time (fresh instance and evaluate)",
            evaluation_seconds.clone(),
        );
        registry.register(
            "evaluation_fuel",
            "Fuel burned per policy evaluation",
            evaluation_fuel.clone(),
        );
        registry.register(
            "audit_append_seconds",
            "Audit append time, durable flush included",
            audit_append_seconds.clone(),
        );
        registry.register(
            "audit_batch_records",
            "Records per audit batch (one transaction and one durable flush)",
            audit_writer.batch_records.clone(),
        );
        registry.register(
            "audit_flush_seconds",
            "Durable flush time per audit batch",
            audit_writer.flush_seconds.clone(),
        );
        let tenants_degraded = Gauge::default();
        registry.register(
            "tenants_degraded",
            "Tenants that could not be loaded at start; their calls are blocked",
            tenants_degraded.clone(),
        );
        Self {
            tenants_degraded,
            registry,
            decisions,
            evaluation_seconds,
            evaluation_fuel,
            audit_append_seconds,
            audit_writer,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
