//! What every reconcile shares: the backends' clients, the settings, the
//! watch stores, counters and caches. It holds no controller's types, so
//! every controller may read it and none of them is read by it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::{Event, Recorder, Reporter};
use ossature_model::Platform;
use tracing::warn;

use crate::acme_accounts::AcmeAccounts;
use crate::adapters::keycloak::Keycloak;
use crate::adapters::openbao::OpenBao;
use crate::adapters::pulsar::Pulsar;
use crate::adapters::{Backend, BackendError, Calls, Verb};
use crate::dns::Dns;
use crate::edge::Edges;
use crate::metrics::Metrics;
use crate::stores::{Nudges, Stores};

#[derive(Debug, Clone)]
pub struct Settings {
    /// What shapes every tenant's desired state: root domain, residency,
    /// host issuer, realm cap.
    pub platform: Platform,
    /// Interval of the periodic reconcile that catches drift.
    pub resync: Duration,
    /// Longest wait between retries of a failing object.
    pub max_backoff: Duration,
    /// Label selector of the Tenants this instance manages (with their
    /// Scopes and Environments); `None` manages every Tenant.
    pub selector: Option<String>,
    /// Where AcmeIssuers' account credentials are kept, and the Secrets
    /// they refer to are read.
    pub acme_namespace: String,
    /// Where the Leases live that elect the shared-realm manager and hold
    /// tenants' custom domains.
    pub lease_namespace: String,
    /// The OpenBao transit key that signs services' Pulsar tokens.
    pub token_key: crate::adapters::openbao::tokens::TokenKey,
    /// What scales Workloads; `None`: KEDA when its CRDs are installed,
    /// else an HPA.
    pub autoscaler: Option<ossature_model::workloads::Autoscaler>,
    /// Where Secrets are read, written and watched.
    pub secrets: crate::secrets_access::SecretsAccess,
}

/// The clients of every backend.
pub struct Backends {
    pub client: kube::Client,
    pub keycloak: Keycloak,
    pub pulsar: Pulsar,
    pub openbao: OpenBao,
    /// Tenant hosts at the edge, when an edge is configured.
    pub edge: Option<Edges>,
    /// Looks up the TXT records that prove custom domains.
    pub dns: Option<Dns>,
    pub calls: Calls,
    /// Whether each backend answers its health probe.
    pub health: crate::health::Health,
}

/// The backends' clients (reached through it: `ctx.keycloak`), and what
/// every reconcile shares beside them.
pub struct Context {
    backends: Backends,
    pub settings: Settings,
    pub metrics: Metrics,
    pub stores: Stores,
    pub nudges: Nudges,
    /// Whether this instance leads its shard: only then does it reconcile.
    pub leadership: crate::leader::Leadership,
    /// ACME accounts in use and their budgets, by issuer.
    pub acme: AcmeAccounts,
    rotation_waves: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    /// Shared realms seen to exist: they are never deleted, so asked once.
    shared_realms: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(
        backends: Backends,
        settings: Settings,
        metrics: Metrics,
        (stores, nudges): (Stores, Nudges),
        leadership: crate::leader::Leadership,
    ) -> Self {
        let reporter = Reporter {
            controller: "ossature-operator".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            recorder: Recorder::new(backends.client.clone(), reporter),
            acme: AcmeAccounts::new(
                Api::namespaced(backends.client.clone(), &settings.acme_namespace),
                settings.platform.root_domain.clone(),
                backends.calls.clone(),
            ),
            backends,
            settings,
            metrics,
            stores,
            nudges,
            leadership,
            rotation_waves: Mutex::default(),
            failures: Mutex::default(),
            shared_realms: Mutex::default(),
        }
    }

    /// Permits of a tenant's CA rotation: how many of its certificates are
    /// issued anew at once.
    pub fn rotation_wave(&self, tenant: &str) -> Arc<tokio::sync::Semaphore> {
        self.rotation_waves
            .lock()
            .expect("never poisoned")
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    ossature_model::certificates::ROTATION_WAVE,
                ))
            })
            .clone()
    }

    /// Whether a shared realm exists; asked of Keycloak until it does.
    pub async fn shared_realm_exists(&self, realm: &str) -> Result<bool, BackendError> {
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

    /// A cluster-scoped object, from its store or, when the store has not
    /// seen it (yet, or it is another instance's), from the API.
    pub async fn find<K>(&self, name: &str) -> Result<Option<Arc<K>>, kube::Error>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        if let Some(found) = self.stores.get::<K>(name) {
            return Ok(Some(found));
        }
        self.calls.record(Backend::Kubernetes, Verb::Read);
        Ok(Api::<K>::all(self.client.clone())
            .get_opt(name)
            .await?
            .map(Arc::new))
    }

    /// Whether an object in `namespace` is this instance's.
    pub fn tenant_selected(&self, namespace: Option<&str>) -> bool {
        self.stores
            .tenant_selected(namespace, self.settings.selector.as_deref())
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

    /// Events are best effort: a failure to record one never fails a reconcile.
    pub async fn publish(&self, reference: ObjectReference, events: Vec<Event>) {
        for event in events {
            // Every Event is a log line too, for who reads logs, not Events.
            let kind = reference.kind.as_deref().unwrap_or_default();
            let name = reference.name.as_deref().unwrap_or_default();
            let namespace = reference.namespace.as_deref().unwrap_or_default();
            let note = event.note.as_deref().unwrap_or_default();
            match event.type_ {
                kube::runtime::events::EventType::Normal => {
                    tracing::info!(kind, namespace, name, reason = event.reason, "{note}")
                }
                kube::runtime::events::EventType::Warning => {
                    warn!(kind, namespace, name, reason = event.reason, "{note}")
                }
            }
            self.calls.record(Backend::Kubernetes, Verb::Write);
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                warn!("could not record event {}: {e}", event.reason);
            }
        }
    }
}

impl std::ops::Deref for Context {
    type Target = Backends;

    fn deref(&self) -> &Backends {
        &self.backends
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
