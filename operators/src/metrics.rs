//! Prometheus metrics, served at `/metrics`: backend calls by backend and
//! verb; reconcile runs, their duration, and failures by controller and
//! error category; step failures by condition and category; drift corrected.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    controller: &'static str,
    condition: &'static str,
    category: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConditionLabels {
    controller: &'static str,
    condition: &'static str,
}

type Durations = Family<ControllerLabels, Histogram, fn() -> Histogram>;
type StepDurations = Family<ConditionLabels, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    failures: Family<FailureLabels, Counter>,
    drift: Family<DriftLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    durations: Durations,
    steps: Family<StepLabels, Counter>,
    step_durations: StepDurations,
    lease_writes: Counter,
}

fn duration_buckets() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
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
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "reconcile_runs",
            "Reconciles, by controller and result (ok or error)",
            runs.clone(),
        );
        let durations: Durations = Family::new_with_constructor(duration_buckets);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            durations.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "step_failures",
            "Failed backend steps, by controller, condition and error category",
            steps.clone(),
        );
        let step_durations: StepDurations = Family::new_with_constructor(duration_buckets);
        registry.register(
            "step_duration_seconds",
            "Time one backend step took, by controller and the condition it sets",
            step_durations.clone(),
        );
        let lease_writes = Counter::default();
        registry.register(
            "lease_writes",
            "Writes of the Lease electing the instance that manages shared realms",
            lease_writes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            failures,
            drift,
            runs,
            durations,
            steps,
            step_durations,
            lease_writes,
        }
    }

    pub fn step(
        &self,
        controller: &'static str,
        condition: &'static str,
        took: std::time::Duration,
    ) {
        self.step_durations
            .get_or_create(&ConditionLabels {
                controller,
                condition,
            })
            .observe(took.as_secs_f64());
    }

    pub fn run(&self, controller: &'static str, ok: bool, took: std::time::Duration) {
        let result = if ok { "ok" } else { "error" };
        self.runs
            .get_or_create(&RunLabels { controller, result })
            .inc();
        self.durations
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    pub fn lease_write(&self) {
        self.lease_writes.inc();
    }

    pub fn step_failure(
        &self,
        controller: &'static str,
        condition: &'static str,
        category: &'static str,
    ) {
        self.steps
            .get_or_create(&StepLabels {
                controller,
                condition,
                category,
            })
            .inc();
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
        metrics.run("tenant", true, std::time::Duration::from_millis(20));
        metrics.step_failure("tenant", "MessagingReady", "BackendUnreachable");
        let text = metrics.render();
        assert!(
            text.contains(r#"ossature_reconcile_runs_total{controller="tenant",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ossature_reconcile_duration_seconds_count{controller="tenant"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"ossature_step_failures_total{controller="tenant",condition="MessagingReady",category="BackendUnreachable"} 1"#), "{text}");
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
