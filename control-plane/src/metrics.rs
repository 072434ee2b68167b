//! Prometheus metrics of the API, served at `/metrics` (unauthenticated,
//! like the operator's): requests by operation and HTTP status, their
//! duration by operation, authorization decisions. Operations are the
//! command and query names (a bounded set): any other path counts as
//! `unknown`, so no caller can grow the label set.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

type Durations = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn buckets() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Cheap to clone; every clone counts into the same registry.
#[derive(Clone)]
pub struct ApiMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    decisions: Family<DecisionLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ossature");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests, by operation (command or query name, bulkCommands, bulkQueries, \
             tenantEvents, or unknown) and HTTP status code",
            requests.clone(),
        );
        let durations: Durations = Family::new_with_constructor(buckets);
        registry.register(
            "api_request_duration_seconds",
            "Time an API request took to answer, by operation",
            durations.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authorization_decisions",
            "Authorization decisions on callers' requests, by decision (allow or deny)",
            decisions.clone(),
        );
        for decision in ["allow", "deny"] {
            let _ = decisions.get_or_create(&DecisionLabels { decision });
        }
        ApiMetrics {
            registry: Arc::new(registry),
            requests,
            durations,
            decisions,
        }
    }
}

/// `action` as an operation label: one of the API's own names, else `unknown`.
pub fn operation(action: &str) -> &'static str {
    const OTHERS: [&str; 3] = ["bulkCommands", "bulkQueries", "tenantEvents"];
    crate::commands::NAMES
        .iter()
        .chain(crate::queries::NAMES)
        .chain(OTHERS.iter())
        .find(|name| **name == action)
        .copied()
        .unwrap_or("unknown")
}

impl ApiMetrics {
    /// One request of `action` answered with `code` after `took`.
    pub fn request(&self, action: &str, code: u16, took: Duration) {
        let operation = operation(action);
        self.requests
            .get_or_create(&RequestLabels { operation, code })
            .inc();
        self.durations
            .get_or_create(&OperationLabels { operation })
            .observe(took.as_secs_f64());
    }

    pub fn decision(&self, allowed: bool) {
        let decision = if allowed { "allow" } else { "deny" };
        self.decisions
            .get_or_create(&DecisionLabels { decision })
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

    #[test]
    fn operations_are_a_bounded_set() {
        assert_eq!(operation("tenantStatus"), "tenantStatus");
        assert_eq!(operation("bulkCommands"), "bulkCommands");
        assert_eq!(operation("../../etc/passwd"), "unknown");
        assert_eq!(operation(""), "unknown");
    }

    #[test]
    fn rendered_by_operation_code_and_decision() {
        let metrics = ApiMetrics::default();
        metrics.request("tenantStatus", 200, Duration::from_millis(3));
        metrics.request("no-such-thing", 404, Duration::from_millis(1));
        metrics.decision(false);
        let text = metrics.render();
        for line in [
            r#"ossature_api_requests_total{operation="tenantStatus",code="200"} 1"#,
            r#"ossature_api_requests_total{operation="unknown",code="404"} 1"#,
            r#"ossature_api_request_duration_seconds_count{operation="tenantStatus"} 1"#,
            r#"ossature_authorization_decisions_total{decision="deny"} 1"#,
            r#"ossature_authorization_decisions_total{decision="allow"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
