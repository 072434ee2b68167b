//! Prometheus metrics, served at `/metrics`. Reconciles carry
//! controller-runtime's names (what on-call engineers already query for
//! controllers): `controller_runtime_reconcile_total{controller,result}`,
//! `controller_runtime_reconcile_errors_total`,
//! `controller_runtime_reconcile_time_seconds`, `workqueue_depth` and
//! `workqueue_longest_running_processor_seconds`. Ossature's own are
//! prefixed `ossature_`: backend calls and their durations, backend health,
//! objects by kind and state (from the watch stores, at scrape time),
//! certificate expiry, edge routes, domains, leadership, step failures,
//! drift corrected.

mod objects;
mod work;

pub use objects::{Census, ObjectState, Observed, State, state_of};
pub use work::{Running, Work};

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::adapters::Calls;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    controller: &'static str,
    condition: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
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

/// How one reconcile ended, as controller-runtime labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Everything as desired; next look at the periodic resync (or never).
    Success,
    /// The reconcile failed (an error, retried after a backoff).
    Error,
    /// Waiting for something it asked for (a namespace terminating): no
    /// fault, looked at again shortly.
    Requeue,
    /// A step did not reach its desired state; retried after a backoff.
    RequeueAfter,
}

impl ReconcileResult {
    fn label(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
            ReconcileResult::Requeue => "requeue",
            ReconcileResult::RequeueAfter => "requeue_after",
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ControllerLabels, Counter>,
    durations: Durations,
    drift: Family<DriftLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    step_durations: StepDurations,
    lease_writes: Counter,
    work: Work,
}

fn duration_buckets() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    pub fn new(calls: &Calls) -> Self {
        let mut root = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        root.register(
            "controller_runtime_reconcile",
            "Reconciles, by controller and result: success (all as desired), error (failed), \
             requeue (waiting for a deletion it asked for), requeue_after (a backend step \
             not done yet, retried after a backoff)",
            reconciles.clone(),
        );
        let errors = Family::<ControllerLabels, Counter>::default();
        root.register(
            "controller_runtime_reconcile_errors",
            "Reconciles that failed, by controller (the error category is in the log line \
             and the Event)",
            errors.clone(),
        );
        let durations: Durations = Family::new_with_constructor(duration_buckets);
        root.register(
            "controller_runtime_reconcile_time_seconds",
            "Time one reconcile took, by controller",
            durations.clone(),
        );
        let work = Work::default();
        root.register_collector(Box::new(work.clone()));

        let ossature = root.sub_registry_with_prefix("ossature");
        ossature.register(
            "backend_calls",
            "Calls to backends, by backend and verb",
            calls.family(),
        );
        ossature.register(
            "backend_call_duration_seconds",
            "Time a backend took to answer one call (or fail it), by backend and verb; \
             Kubernetes calls are counted in ossature_backend_calls only",
            calls.durations(),
        );
        let drift = Family::<DriftLabels, Counter>::default();
        ossature.register(
            "drift_corrections",
            "Backend objects found changed by hand and put back, by controller and condition",
            drift.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        ossature.register(
            "step_failures",
            "Failed backend steps, by controller, condition and error category",
            steps.clone(),
        );
        let step_durations: StepDurations = Family::new_with_constructor(duration_buckets);
        ossature.register(
            "step_duration_seconds",
            "Time one backend step took, by controller and the condition it sets",
            step_durations.clone(),
        );
        let lease_writes = Counter::default();
        ossature.register(
            "lease_writes",
            "Writes of the Lease electing the instance that manages shared realms",
            lease_writes.clone(),
        );
        Self {
            registry: Arc::new(RwLock::new(root)),
            reconciles,
            errors,
            durations,
            drift,
            steps,
            step_durations,
            lease_writes,
            work,
        }
    }

    /// Every result and error counter of `controllers` at 0, so that a
    /// ratio or a rate has both sides before the first failure.
    pub fn zero(&self, controllers: &[&'static str]) {
        for &controller in controllers {
            for result in [
                ReconcileResult::Success,
                ReconcileResult::Error,
                ReconcileResult::Requeue,
                ReconcileResult::RequeueAfter,
            ] {
                let _ = self.reconciles.get_or_create(&ResultLabels {
                    controller,
                    result: result.label(),
                });
            }
            let _ = self.errors.get_or_create(&ControllerLabels { controller });
            // The histogram too: a series first seen with reconciles in it
            // shows no rate for them.
            let _ = self
                .durations
                .get_or_create(&ControllerLabels { controller });
        }
    }

    /// Reconciles started, running and due, by controller.
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// Adds what is computed at each scrape (objects, backends, leadership).
    pub fn collect(&self, collector: impl Collector) {
        self.registry
            .write()
            .expect("never poisoned")
            .register_collector(Box::new(collector));
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

    /// One reconcile ended as `outcome` after `took`.
    pub fn reconciled(
        &self,
        controller: &'static str,
        outcome: ReconcileResult,
        took: std::time::Duration,
    ) {
        self.reconciles
            .get_or_create(&ResultLabels {
                controller,
                result: outcome.label(),
            })
            .inc();
        if outcome == ReconcileResult::Error {
            self.errors
                .get_or_create(&ControllerLabels { controller })
                .inc();
        }
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
        let registry = self.registry.read().expect("never poisoned");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{Backend, Verb};

    #[test]
    fn rendered_metrics_carry_controller_runtime_names_and_backend_labels() {
        let calls = Calls::default();
        let metrics = Metrics::new(&calls);
        calls.record(Backend::Pulsar, Verb::Write);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(calls.timed(Backend::Keycloak, Verb::Read, async {}));
        metrics.drift("tenant", "RealmReady");
        let took = std::time::Duration::from_millis(20);
        metrics.reconciled("tenant", ReconcileResult::Success, took);
        metrics.reconciled("tenant", ReconcileResult::Error, took);
        metrics.reconciled("tenant", ReconcileResult::RequeueAfter, took);
        metrics.step_failure("tenant", "MessagingReady", "BackendUnreachable");
        let text = metrics.render();
        for line in [
            r#"controller_runtime_reconcile_total{controller="tenant",result="success"} 1"#,
            r#"controller_runtime_reconcile_total{controller="tenant",result="error"} 1"#,
            r#"controller_runtime_reconcile_total{controller="tenant",result="requeue_after"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="tenant"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="tenant"} 3"#,
            r#"ossature_step_failures_total{controller="tenant",condition="MessagingReady",category="BackendUnreachable"} 1"#,
            r#"ossature_backend_calls_total{backend="pulsar",verb="write"} 1"#,
            r#"ossature_backend_calls_total{backend="keycloak",verb="read"} 1"#,
            r#"ossature_backend_call_duration_seconds_count{backend="keycloak",verb="read"} 1"#,
            r#"ossature_drift_corrections_total{controller="tenant",condition="RealmReady"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("ossature_reconcile_"), "old names are gone");
    }
}
