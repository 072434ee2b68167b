//! Driven adapters: one narrow client per backend. Each reads before it
//! writes and writes only what differs, so reconciling an unchanged object
//! makes no writes; every call is counted by backend and verb.

pub mod acme;
pub mod edge;
pub mod http;
pub mod keycloak;
pub mod openbao;
pub mod pulsar;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// What one `ensure_*` or `delete_*` call did to a backend object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It already was as desired; nothing was written.
    Unchanged,
    Created,
    /// It existed and differed; the difference was written.
    Updated,
    Deleted,
    /// Deletion found nothing to delete.
    Absent,
}

impl Change {
    pub fn wrote(self) -> bool {
        matches!(self, Change::Created | Change::Updated | Change::Deleted)
    }
}

/// A failed backend call. `category()` is the low-cardinality label used in
/// Events, conditions and metrics.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend} could not be reached: {source}")]
    Unreachable {
        backend: Backend,
        #[source]
        source: reqwest::Error,
    },
    #[error("{backend} refused to {action}: HTTP {status}: {body}")]
    Refused {
        backend: Backend,
        action: String,
        status: u16,
        body: String,
    },
    #[error("{backend} answered {action} with something unreadable: {detail}")]
    Unreadable {
        backend: Backend,
        action: String,
        detail: String,
    },
}

impl BackendError {
    pub fn category(&self) -> &'static str {
        match self {
            BackendError::Unreachable { .. } => "BackendUnreachable",
            BackendError::Refused { status, .. } if *status >= 500 => "BackendFailing",
            BackendError::Refused {
                status: 401 | 403, ..
            } => "BackendUnauthorized",
            BackendError::Refused { .. } => "BackendRefused",
            BackendError::Unreadable { .. } => "BackendUnreadable",
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            BackendError::Unreachable { backend, .. }
            | BackendError::Refused { backend, .. }
            | BackendError::Unreadable { backend, .. } => *backend,
        }
    }
}

/// Why a backend call did not do what was asked, in the words of a
/// condition: a low-cardinality category (for conditions, Events and
/// metrics) and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub category: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(category: &'static str, message: impl Into<String>) -> Self {
        Failure {
            category,
            message: message.into(),
        }
    }
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::new(e.category(), e.to_string())
    }
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Failure::new("KubernetesApi", e.to_string())
    }
}

impl From<acme::AcmeError> for Failure {
    fn from(e: acme::AcmeError) -> Self {
        Failure::new(e.category(), e.to_string())
    }
}

impl From<&edge::EdgeError> for Failure {
    fn from(e: &edge::EdgeError) -> Self {
        Failure::new(e.category(), e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Kubernetes,
    Keycloak,
    Pulsar,
    OpenBao,
    /// The TLS edge (Caddy).
    Edge,
    /// The ACME CA issuing certificates (Pebble locally).
    Acme,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kubernetes => "kubernetes",
            Backend::Keycloak => "keycloak",
            Backend::Pulsar => "pulsar",
            Backend::OpenBao => "openbao",
            Backend::Edge => "edge",
            Backend::Acme => "acme",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Kubernetes => "Kubernetes",
            Backend::Keycloak => "Keycloak",
            Backend::Pulsar => "Pulsar",
            Backend::OpenBao => "OpenBao",
            Backend::Edge => "Edge",
            Backend::Acme => "ACME CA",
        })
    }
}

/// Whether a call only reads or may change the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Read,
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    pub backend: &'static str,
    pub verb: &'static str,
}

type CallDurations = Family<CallLabels, Histogram, fn() -> Histogram>;

fn call_buckets() -> Histogram {
    // 1 ms to about 16 s: a call times out at 15 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Counters and durations of backend calls; cheap to clone, shared by
/// every adapter.
#[derive(Clone, Debug)]
pub struct Calls {
    family: Family<CallLabels, Counter>,
    durations: CallDurations,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            family: Family::default(),
            durations: Family::new_with_constructor(call_buckets),
        }
    }
}

impl Calls {
    fn labels(backend: Backend, verb: Verb) -> CallLabels {
        let verb = match verb {
            Verb::Read => "read",
            Verb::Write => "write",
        };
        CallLabels {
            backend: backend.as_str(),
            verb,
        }
    }

    pub fn record(&self, backend: Backend, verb: Verb) {
        // Each call is a debug line: who wrote when, across instances.
        tracing::debug!(target: "ossature_operator::calls", backend = backend.as_str(), write = matches!(verb, Verb::Write), "call");
        self.family
            .get_or_create(&Self::labels(backend, verb))
            .inc();
    }

    /// Counts one call to `backend` and measures how long it took to answer
    /// (or fail).
    pub async fn timed<T>(
        &self,
        backend: Backend,
        verb: Verb,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        self.record(backend, verb);
        let started = std::time::Instant::now();
        let result = call.await;
        self.durations
            .get_or_create(&Self::labels(backend, verb))
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub fn count(&self, backend: Backend, verb: Verb) -> u64 {
        self.family
            .get_or_create(&Self::labels(backend, verb))
            .get()
    }

    /// The counter family, for registering with a metrics registry.
    pub fn family(&self) -> Family<CallLabels, Counter> {
        self.family.clone()
    }

    /// The duration histograms, for registering with a metrics registry.
    pub fn durations(&self) -> CallDurations {
        self.durations.clone()
    }
}

/// Per-call ceiling: a slow backend fails the step instead of stalling the controller.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_backend_and_verb() {
        let calls = Calls::default();
        calls.record(Backend::Keycloak, Verb::Read);
        calls.record(Backend::Keycloak, Verb::Read);
        calls.clone().record(Backend::Keycloak, Verb::Write);
        assert_eq!(calls.count(Backend::Keycloak, Verb::Read), 2);
        assert_eq!(calls.count(Backend::Keycloak, Verb::Write), 1);
        assert_eq!(calls.count(Backend::Pulsar, Verb::Write), 0);
    }

    #[test]
    fn error_categories_are_low_cardinality() {
        let refused = |status| BackendError::Refused {
            backend: Backend::Pulsar,
            action: "create tenant acme".into(),
            status,
            body: String::new(),
        };
        assert_eq!(refused(503).category(), "BackendFailing");
        assert_eq!(refused(403).category(), "BackendUnauthorized");
        assert_eq!(refused(409).category(), "BackendRefused");
        assert!(
            refused(409)
                .to_string()
                .contains("Pulsar refused to create tenant acme")
        );
    }
}
