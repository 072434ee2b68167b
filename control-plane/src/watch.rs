//! One shared watch per kind the control plane reads (Tenants, Scopes,
//! Environments, the tenants' own roles, and the kinds a tenant's tree
//! holds: Certificates, Topics, ServiceIdentities, Workloads), kept in memory by kube-runtime
//! reflectors: requests read these stores, never the apiserver. Every
//! event is also announced, by tenant, on one broadcast channel that the
//! authorization data, waiters and event streams follow.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use ossature_crds::{
    Certificate, Environment, Scope, ServiceIdentity, Tenant, TenantRole, Topic, Workload,
};
use ossature_model::names::tenant_of_object;
use tokio::sync::{broadcast, watch};
use tracing::warn;

/// How many announcements a slow follower may fall behind before it is
/// told it lagged (it then reads the stores afresh).
const ANNOUNCEMENTS: usize = 4096;

/// What changed in a store, once the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// An object of `tenant` of this kind was applied or deleted.
    Tenant { tenant: String, kind: &'static str },
    /// A store listed everything again: anything may have changed.
    Relisted { kind: &'static str },
}

/// The stores, a counter bumped at every event of any of them, and the
/// announcements of what changed.
#[derive(Clone)]
pub struct Watches {
    pub tenants: Store<Tenant>,
    pub scopes: Store<Scope>,
    pub environments: Store<Environment>,
    pub certificates: Store<Certificate>,
    pub topics: Store<Topic>,
    pub service_identities: Store<ServiceIdentity>,
    pub workloads: Store<Workload>,
    pub tenant_roles: Store<TenantRole>,
    changes: watch::Receiver<u64>,
    announcements: broadcast::Sender<Changed>,
}

impl Watches {
    /// Starts the watches; they run until the process ends.
    pub fn start(client: &Client) -> Watches {
        let (bump, changes) = watch::channel(0u64);
        let bump = Arc::new(bump);
        let (announcements, _) = broadcast::channel(ANNOUNCEMENTS);
        let feed = Feed {
            bump,
            announcements: announcements.clone(),
        };
        Watches {
            tenants: spawn(Api::all(client.clone()), feed.clone()),
            scopes: spawn(Api::all(client.clone()), feed.clone()),
            environments: spawn(Api::all(client.clone()), feed.clone()),
            certificates: spawn(Api::all(client.clone()), feed.clone()),
            topics: spawn(Api::all(client.clone()), feed.clone()),
            service_identities: spawn(Api::all(client.clone()), feed.clone()),
            workloads: spawn(Api::all(client.clone()), feed.clone()),
            tenant_roles: spawn(Api::all(client.clone()), feed),
            changes,
            announcements,
        }
    }

    /// Stores nothing fills, for tests of what reads them.
    #[cfg(test)]
    pub(crate) fn empty() -> Watches {
        let (_, changes) = watch::channel(0u64);
        let (announcements, _) = broadcast::channel(1);
        Watches {
            tenants: reflector::store().0,
            scopes: reflector::store().0,
            environments: reflector::store().0,
            certificates: reflector::store().0,
            topics: reflector::store().0,
            service_identities: reflector::store().0,
            workloads: reflector::store().0,
            tenant_roles: reflector::store().0,
            changes,
            announcements,
        }
    }

    /// Waits until every store holds its first full list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.tenants.wait_until_ready().await?;
        self.scopes.wait_until_ready().await?;
        self.environments.wait_until_ready().await?;
        self.certificates.wait_until_ready().await?;
        self.topics.wait_until_ready().await?;
        self.service_identities.wait_until_ready().await?;
        self.workloads.wait_until_ready().await?;
        self.tenant_roles.wait_until_ready().await?;
        Ok(())
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(&ObjectRef::new(name))
    }

    pub fn scopes_of(&self, tenant: &str) -> Vec<Arc<Scope>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        sorted(
            self.scopes
                .state_filter(|s| s.namespace().as_deref() == Some(&namespace)),
        )
    }

    pub fn scope(&self, tenant: &str, name: &str) -> Option<Arc<Scope>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        self.scopes.get(&ObjectRef::new(name).within(&namespace))
    }

    pub fn environments_of(&self, tenant: &str) -> Vec<Arc<Environment>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        sorted(
            self.environments
                .state_filter(|e| e.namespace().as_deref() == Some(&namespace)),
        )
    }

    pub fn environment(&self, tenant: &str, name: &str) -> Option<Arc<Environment>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        self.environments
            .get(&ObjectRef::new(name).within(&namespace))
    }

    /// The tenant's own roles.
    pub fn tenant_roles_of(&self, tenant: &str) -> Vec<Arc<TenantRole>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        sorted(
            self.tenant_roles
                .state_filter(|r| r.namespace().as_deref() == Some(&namespace)),
        )
    }

    pub fn tenant_role(&self, tenant: &str, name: &str) -> Option<Arc<TenantRole>> {
        let namespace = ossature_model::tenant_namespace(tenant);
        self.tenant_roles
            .get(&ObjectRef::new(name).within(&namespace))
    }

    /// A receiver that changes at every event of any store.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Announcements of what changed, from now on.
    pub fn announcements(&self) -> broadcast::Receiver<Changed> {
        self.announcements.subscribe()
    }
}

/// The objects of `store` in any of the tenant's namespaces, for
/// [`ossature_model::tree::TenantObjects::gather`].
pub fn of_tenant<K>(store: &Store<K>, tenant: &str) -> Vec<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.state_filter(|o| tenant_of_object(o) == Some(tenant))
}

fn sorted<K: ResourceExt>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by_key(|o| o.name_any());
    objects
}

/// Where a store's events go.
#[derive(Clone)]
struct Feed {
    bump: Arc<watch::Sender<u64>>,
    announcements: broadcast::Sender<Changed>,
}

fn spawn<K>(api: Api<K>, feed: Feed) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let kind: &'static str = K::kind(&()).to_string().leak();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        // Only what the control plane reads is kept: managed fields go.
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    // The store holds the event's object by now.
                    let changed = match &event {
                        watcher::Event::Apply(o) | watcher::Event::Delete(o) => tenant_of_object(o)
                            .map(|tenant| Changed::Tenant {
                                tenant: tenant.to_string(),
                                kind,
                            }),
                        watcher::Event::InitDone => Some(Changed::Relisted { kind }),
                        watcher::Event::Init | watcher::Event::InitApply(_) => None,
                    };
                    feed.bump.send_modify(|n| *n = n.wrapping_add(1));
                    if let Some(changed) = changed {
                        // No follower yet is no error.
                        let _ = feed.announcements.send(changed);
                    }
                }
                Err(e) => warn!(kind, "watch failed, retrying: {e}"),
            }
        }
    });
    reader
}
