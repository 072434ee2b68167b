//! What every reconcile shares: clients, settings, counters, backoff state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use ossature_crds::{Environment, Scope, Tenant};
use tracing::warn;

use crate::adapters::keycloak::Keycloak;
use crate::adapters::openbao::OpenBao;
use crate::adapters::pulsar::Pulsar;
use crate::adapters::{Backend, Calls, Change, Verb};
use crate::conditions::Outcome;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Pulsar clusters allowed for each residency region.
    pub clusters_by_region: BTreeMap<String, Vec<String>>,
    /// Interval of the periodic reconcile that catches drift.
    pub resync: Duration,
    /// Longest wait between retries of a failing object.
    pub max_backoff: Duration,
    /// Label selector of the Tenants this instance manages (with their
    /// Scopes and Environments); `None` manages every Tenant.
    pub selector: Option<String>,
    /// Most dedicated realms (`isolation: Realm`) one Keycloak is given.
    pub max_dedicated_realms: usize,
    /// Every tenant's names sit under it: `<tenant>.<root_domain>`.
    pub root_domain: String,
    /// The AcmeIssuer that signs tenant hosts' certificates; `None`: each
    /// tenant's own CA.
    pub host_issuer: Option<String>,
    /// Where AcmeIssuers' account credentials are kept, and the Secrets
    /// they refer to are read.
    pub acme_namespace: String,
    /// Where the Leases live that elect the shared-realm manager and hold
    /// tenants' custom domains.
    pub lease_namespace: String,
}

/// Watch stores of every kind, filled by the controllers' own watches.
#[derive(Clone)]
pub struct Stores {
    pub tenants: Store<Tenant>,
    pub scopes: Store<Scope>,
    pub environments: Store<Environment>,
    pub certificates: Store<ossature_crds::Certificate>,
    pub acme_issuers: Store<ossature_crds::AcmeIssuer>,
}

impl Stores {
    /// Scopes of a namespace, from the watch store.
    pub fn scopes_in(&self, namespace: &str) -> Vec<std::sync::Arc<Scope>> {
        self.scopes
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    /// Environments of a namespace, from the watch store.
    pub fn environments_in(&self, namespace: &str) -> Vec<std::sync::Arc<Environment>> {
        self.environments
            .state()
            .into_iter()
            .filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    pub fn tenant(&self, name: &str) -> Option<std::sync::Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name))
    }
}

pub struct Context {
    pub client: kube::Client,
    pub keycloak: Keycloak,
    pub pulsar: Pulsar,
    pub openbao: OpenBao,
    pub calls: Calls,
    pub settings: Settings,
    pub metrics: Metrics,
    pub stores: Stores,
    /// Tenant hosts at the edge, when an edge is configured.
    pub edge: Option<crate::edge::Edges>,
    /// Looks up the TXT records that prove custom domains.
    pub dns: Option<crate::dns::Dns>,
    rotation_waves: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
    /// ACME accounts in use and their budgets, by issuer.
    pub acme: crate::controllers::acme_issuer::AcmeIssuers,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    /// Shared realms seen to exist: they are never deleted, so asked once.
    shared_realms: Mutex<std::collections::HashSet<String>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        keycloak: Keycloak,
        pulsar: Pulsar,
        openbao: OpenBao,
        calls: Calls,
        settings: Settings,
        metrics: Metrics,
        stores: Stores,
    ) -> Self {
        let reporter = Reporter {
            controller: "ossature-operator".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            keycloak,
            pulsar,
            openbao,
            calls,
            settings,
            metrics,
            stores,
            edge: None,
            dns: None,
            rotation_waves: Mutex::default(),
            acme: Default::default(),
            failures: Mutex::default(),
            shared_realms: Mutex::default(),
        }
    }

    /// Permits of a tenant's CA rotation: how many of its certificates are
    /// issued anew at once.
    pub fn rotation_wave(&self, tenant: &str) -> std::sync::Arc<tokio::sync::Semaphore> {
        self.rotation_waves
            .lock()
            .expect("never poisoned")
            .entry(tenant.to_string())
            .or_insert_with(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(
                    crate::controllers::certificate::ROTATION_WAVE,
                ))
            })
            .clone()
    }

    /// With custom domains proven through `dns`.
    pub fn with_dns(mut self, dns: crate::dns::Dns) -> Self {
        self.dns = Some(dns);
        self
    }

    /// With tenant hosts put on `edge`.
    pub fn with_edge(mut self, edge: crate::edge::Edges) -> Self {
        self.edge = Some(edge);
        self
    }

    /// Whether a shared realm exists; asked of Keycloak until it does.
    pub async fn shared_realm_exists(
        &self,
        realm: &str,
    ) -> Result<bool, crate::adapters::BackendError> {
        if self
            .shared_realms
            .lock()
            .expect("never poisoned")
            .contains(realm)
        {
            return Ok(true);
        }
        let exists = self.keycloak.realm_exists(realm).await?;
        if exists {
            self.shared_realms
                .lock()
                .expect("never poisoned")
                .insert(realm.to_string());
        }
        Ok(exists)
    }

    /// Exponential backoff per object: 1 s, 2 s, 4 s ... up to the cap.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("never poisoned");
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_after(*n, self.settings.max_backoff)
    }

    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().expect("never poisoned").remove(key);
    }

    /// The outcome of one backend step, and the Events that report it: a
    /// failure, a first provisioning, or drift put back on an object that was
    /// already Ready for its generation.
    pub fn step(
        &self,
        controller: &'static str,
        condition: &'static str,
        what: &str,
        result: Result<Vec<Change>, crate::reconcile::Failure>,
        settled: bool,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let event = |type_, reason: &str, note: String| Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        match result {
            Ok(changes) if changes.iter().any(|c| c.wrote()) => {
                if settled {
                    self.metrics.drift(controller, condition);
                    events.push(event(
                        EventType::Warning,
                        "DriftCorrected",
                        format!("{what} had drifted from the desired state and was put back"),
                    ));
                } else {
                    events.push(event(
                        EventType::Normal,
                        "Provisioned",
                        format!("{what} created or updated"),
                    ));
                }
                Outcome::ready(condition, format!("{what} is provisioned"))
            }
            Ok(_) => Outcome::ready(condition, format!("{what} is provisioned")),
            Err(failure) => {
                events.push(event(
                    EventType::Warning,
                    failure.category,
                    failure.message.clone(),
                ));
                Outcome::failed(condition, failure.category, failure.message)
            }
        }
    }

    /// Events are best effort: a failure to record one never fails a reconcile.
    pub async fn publish(&self, reference: ObjectReference, events: Vec<Event>) {
        for event in events {
            self.calls.record(Backend::Kubernetes, Verb::Write);
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                warn!("could not record event {}: {e}", event.reason);
            }
        }
    }
}

pub fn backoff_after(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        assert_eq!(backoff_after(1, cap), Duration::from_secs(1));
        assert_eq!(backoff_after(2, cap), Duration::from_secs(2));
        assert_eq!(backoff_after(5, cap), Duration::from_secs(16));
        assert_eq!(backoff_after(40, cap), cap);
    }
}
