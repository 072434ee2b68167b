//! One shared watch per kind the control plane reads (Tenants, Scopes,
//! Environments), kept in memory by kube-runtime reflectors: requests read
//! these stores, never the apiserver, and waiters are woken by their events.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use ossature_crds::{Environment, Scope, Tenant};
use tokio::sync::watch;
use tracing::warn;

/// The stores, and a counter bumped at every event of any of them.
#[derive(Clone)]
pub struct Watches {
    pub tenants: Store<Tenant>,
    pub scopes: Store<Scope>,
    pub environments: Store<Environment>,
    changes: watch::Receiver<u64>,
}

impl Watches {
    /// Starts the watches; they run until the process ends.
    pub fn start(client: &Client) -> Watches {
        let (bump, changes) = watch::channel(0u64);
        let bump = Arc::new(bump);
        Watches {
            tenants: spawn(Api::all(client.clone()), bump.clone()),
            scopes: spawn(Api::all(client.clone()), bump.clone()),
            environments: spawn(Api::all(client.clone()), bump),
            changes,
        }
    }

    /// Waits until every store holds its first full list.
    pub async fn ready(&self) -> anyhow::Result<()> {
        self.tenants.wait_until_ready().await?;
        self.scopes.wait_until_ready().await?;
        self.environments.wait_until_ready().await?;
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

    /// A receiver that changes at every event of any store.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

fn sorted<K: ResourceExt>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by_key(|o| o.name_any());
    objects
}

fn spawn<K>(api: Api<K>, bump: Arc<watch::Sender<u64>>) -> Store<K>
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
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        // Only what the control plane reads is kept: managed fields go.
        .modify(|object: &mut K| object.managed_fields_mut().clear())
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    bump.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => warn!(kind, "watch failed, retrying: {e}"),
            }
        }
    });
    reader
}
