//! Prometheus metrics: backend calls by backend and verb, reconcile failures
//! by controller and error category, served at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::adapters::Calls;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    controller: &'static str,
    category: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    controller: &'static str,
    condition: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    failures: Family<FailureLabels, Counter>,
    drift: Family<DriftLabels, Counter>,
}

impl Metrics {
    pub fn new(calls: &Calls) -> Self {
        let mut registry = Registry::with_prefix("ossature");
        registry.register(
            "backend_calls",
            "Calls to backends, by backend and verb",
            calls.family(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by controller and error category",
            failures.clone(),
        );
        let drift = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Backend objects found changed by hand and put back, by controller and condition",
            drift.clone(),
        );
        Self {
            registry: Arc::new(registry),
            failures,
            drift,
        }
    }

    pub fn failure(&self, controller: &'static str, category: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                category,
            })
            .inc();
    }

    pub fn drift(&self, controller: &'static str, condition: &'static str) {
        self.drift
            .get_or_create(&DriftLabels {
                controller,
                condition,
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{Backend, Verb};

    #[test]
    fn rendered_metrics_carry_backend_and_verb_labels() {
        let calls = Calls::default();
        let metrics = Metrics::new(&calls);
        calls.record(Backend::Pulsar, Verb::Write);
        metrics.failure("tenant", "BackendUnreachable");
        metrics.drift("tenant", "RealmReady");
        let text = metrics.render();
        assert!(
            text.contains(r#"ossature_backend_calls_total{backend="pulsar",verb="write"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"ossature_reconcile_failures_total{controller="tenant",category="BackendUnreachable"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"ossature_drift_corrections_total{controller="tenant",condition="RealmReady"} 1"#
            ),
            "{text}"
        );
    }
}
