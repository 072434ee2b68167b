//! The watch stores of every registered kind, filled by the kinds' own
//! watches, and the in-process nudges that bring an object of a kind back
//! to its controller. Both are keyed by type, so registering a kind is all
//! it takes to have them.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use ossature_crds::{Certificate, Tenant};
use ossature_model::names::{NamespaceOf, tenant_of_any};
use tokio::sync::mpsc;

/// Waits until a store has its first full list.
type Readiness = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Watch stores by kind.
#[derive(Clone, Default)]
pub struct Stores {
    by_kind: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    readiness: Vec<Readiness>,
    ready: Arc<AtomicBool>,
}

impl Stores {
    pub(crate) fn insert<K>(&mut self, store: Store<K>)
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let waited = store.clone();
        self.readiness.push(Arc::new(move || {
            let store = waited.clone();
            Box::pin(async move {
                // Asked again and again: the readiness of a store wakes only
                // its last waiter, and the controller itself waits on it too.
                // (A dropped writer means the operator is stopping.)
                let again = std::time::Duration::from_millis(50);
                while tokio::time::timeout(again, store.wait_until_ready())
                    .await
                    .is_err()
                {}
            })
        }));
        self.by_kind.insert(TypeId::of::<K>(), Arc::new(store));
    }

    /// Waits until every store holds its first full list: what one kind
    /// reads of another (a tenant's certificates, a scope's siblings) is
    /// then whole, so a restart never writes what a partial view suggests.
    pub async fn ready(&self) {
        if self.ready.load(Ordering::Acquire) {
            return;
        }
        futures::future::join_all(self.readiness.iter().map(|wait| wait())).await;
        self.ready.store(true, Ordering::Release);
    }

    /// The store of kind `K`; every registered kind has one.
    pub fn of<K>(&self) -> &Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.by_kind
            .get(&TypeId::of::<K>())
            .and_then(|s| s.downcast_ref::<Store<K>>())
            .unwrap_or_else(|| panic!("kind {} is not registered", K::kind(&())))
    }

    /// A cluster-scoped object by name.
    pub fn get<K>(&self, name: &str) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.of::<K>().get(&ObjectRef::new(name))
    }

    /// A namespaced object.
    pub fn get_in<K>(&self, namespace: &str, name: &str) -> Option<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.of::<K>().get(&ObjectRef::new(name).within(namespace))
    }

    /// Objects of kind `K` in one namespace.
    pub fn in_namespace<K>(&self, namespace: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.of::<K>()
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .collect()
    }

    /// Objects of kind `K` in a tenant's namespaces, its environments' included.
    pub fn of_tenant<K>(&self, tenant: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        self.of::<K>()
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref().and_then(tenant_of_any) == Some(tenant))
            .collect()
    }

    pub fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.get::<Tenant>(name)
    }

    /// Certificates that name AcmeIssuer `issuer`.
    pub fn certificates_of_issuer(&self, issuer: &str) -> Vec<Arc<Certificate>> {
        self.of::<Certificate>()
            .state()
            .into_iter()
            .filter(|c| c.spec.issuer.acme_name() == Some(issuer))
            .collect()
    }

    /// Whether an object in `namespace` is this instance's: always without
    /// a selector, else when its tenant is in the (selected) Tenant store.
    pub fn tenant_selected(&self, namespace: Option<&str>, selector: Option<&str>) -> bool {
        selector.is_none()
            || namespace
                .and_then(NamespaceOf::parse)
                .is_some_and(|n| self.tenant(n.tenant).is_some())
    }
}

/// Senders that bring an object back to its kind's controller from inside
/// the process (another kind wrote what it reports, in a backend that
/// cannot be watched).
#[derive(Clone, Default)]
pub struct Nudges {
    by_kind: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Nudges {
    /// A channel for kind `K`: its receiver goes to `K`'s controller.
    pub(crate) fn channel<K>(&mut self) -> mpsc::UnboundedReceiver<ObjectRef<K>>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let (sender, receiver) = mpsc::unbounded_channel::<ObjectRef<K>>();
        self.by_kind.insert(TypeId::of::<K>(), Arc::new(sender));
        receiver
    }

    /// Brings `object` back to its controller; a no-op once it stopped.
    pub fn nudge<K>(&self, object: ObjectRef<K>)
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        if let Some(sender) = self
            .by_kind
            .get(&TypeId::of::<K>())
            .and_then(|s| s.downcast_ref::<mpsc::UnboundedSender<ObjectRef<K>>>())
        {
            let _ = sender.send(object);
        }
    }
}
