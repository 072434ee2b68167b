//! What a kind supplies ([`Reconciled`]), and the registry that runs every
//! kind: registering a kind gives it its watch, its store (readable by every
//! other kind), its nudges, and, when other kinds follow it, one shared watch
//! that feeds them too.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::Api;
use kube::core::object::HasStatus;
use kube::runtime::Controller;
use kube::runtime::events::Event;
use kube::runtime::reflector::{ObjectRef, ReflectHandle};
use kube::{Resource, ResourceExt};
use ossature_crds::Conditioned;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Plan};
use crate::context::Context;
use crate::metrics::{Census, Work};
use crate::stores::{Nudges, Stores};

/// The status of a kind: conditions and observed generation, plus its own fields.
pub trait KindStatus:
    Conditioned + Serialize + Clone + Default + PartialEq + Send + Sync + 'static
{
}
impl<T> KindStatus for T where
    T: Conditioned + Serialize + Clone + Default + PartialEq + Send + Sync + 'static
{
}

/// The status type of kind `K`.
pub type StatusOf<K> = <K as HasStatus>::Status;

/// How the API of a kind's objects is reached: per namespace, or cluster-wide.
pub trait ApiScope {
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>;
}

impl ApiScope for NamespaceResourceScope {
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

impl ApiScope for ClusterResourceScope {
    fn api<K>(client: kube::Client, _: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::all(client)
    }
}

/// What a kind supplies; the driver in this module's parent does the rest.
pub trait Reconciled:
    Resource<DynamicType = (), Scope: ApiScope>
    + HasStatus<Status: KindStatus>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Label of metrics and logs, e.g. "tenant".
    const CONTROLLER: &'static str;
    const FINALIZER: &'static str;
    /// Its watch keeps to `--selector` (Tenants, AcmeIssuers); the other
    /// kinds follow their tenant (see [`Reconciled::selected`]).
    const SELECTED_BY_LABEL: bool = false;
    /// Other kinds follow its changes: its one watch feeds them too.
    const FOLLOWED: bool = false;
    /// Its stored objects keep their managed fields: they are compared with
    /// desired ones (a field this operator applied and no longer wants).
    const KEEPS_MANAGED_FIELDS: bool = false;

    fn api(client: kube::Client, object: &Self) -> Api<Self> {
        <Self::Scope as ApiScope>::api(client, object.namespace().as_deref())
    }

    /// Whether this operator instance manages the object: a namespaced
    /// object when its tenant is this instance's (see `--selector`).
    fn selected(&self, ctx: &Context) -> bool {
        match self.meta().namespace.as_deref() {
            Some(namespace) => ctx.tenant_selected(Some(namespace)),
            None => true,
        }
    }

    /// Reads what the object depends on and decides its steps.
    fn plan<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Plan<'a, StatusOf<Self>>, Error>> + Send + 'a;

    /// Removes what was provisioned (or keeps it, on Retain) and returns the
    /// Events that say so; `Error::Blocked` (or `Error::Waiting`) while
    /// something must go first.
    fn cleanup<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Vec<Event>, Error>> + Send + 'a;

    /// Related watches that requeue this kind (parents, owned objects).
    fn watches(controller: Controller<Self>, _watch: &WatchContext) -> Controller<Self> {
        controller
    }
}

/// What `watches` may use: the client, the stores of every kind, and the
/// changes of every followed kind, from its one watch.
pub struct WatchContext {
    pub client: kube::Client,
    pub stores: Stores,
    followed: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    /// Changes when the edge lost our configuration (see [`crate::edge`]).
    pub edge_losses: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where Secrets are watched.
    pub secrets: crate::secrets_access::SecretsAccess,
}

impl WatchContext {
    /// The changes of followed kind `K`.
    pub fn changes<K: Reconciled>(&self) -> ReflectHandle<K> {
        self.followed
            .get(&TypeId::of::<K>())
            .and_then(|h| h.downcast_ref::<ReflectHandle<K>>())
            .unwrap_or_else(|| panic!("kind {} is not followed", K::CONTROLLER))
            .clone()
    }

    /// The changes of followed kind `K` that alter what `reads` takes of
    /// it, and every deletion: a dependent reconciled for a field it never
    /// reads (a status another controller keeps rewriting) is a reconcile
    /// for nothing, and with many dependents a flood of them.
    pub fn changes_of<K, T>(
        &self,
        reads: impl Fn(&K) -> T + Send + 'static,
    ) -> impl futures::Stream<Item = Arc<K>> + Send + 'static
    where
        K: Reconciled,
        T: PartialEq + Send + 'static,
    {
        let mut seen = HashMap::<String, T>::new();
        self.changes::<K>().filter(move |object| {
            futures::future::ready(match object.uid() {
                None => true,
                Some(uid) if object.meta().deletion_timestamp.is_some() => {
                    seen.remove(&uid);
                    true
                }
                Some(uid) => {
                    let now = reads(object);
                    let changed = seen.get(&uid) != Some(&now);
                    if changed {
                        seen.insert(uid, now);
                    }
                    changed
                }
            })
        })
    }
}

type Runner = Box<dyn FnOnce(&WatchContext, Arc<Context>, u16) -> BoxFuture<'static, ()> + Send>;

/// Every kind this operator runs.
pub struct Kinds {
    client: kube::Client,
    selector: Option<String>,
    stores: Stores,
    nudges: Nudges,
    followed: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    runners: Vec<Runner>,
    work: Work,
    census: Census,
}

impl Kinds {
    /// `work`: where reconciles due and running are counted.
    pub fn new(client: &kube::Client, selector: Option<&str>, work: Work) -> Self {
        Kinds {
            client: client.clone(),
            selector: selector.map(String::from),
            stores: Stores::default(),
            nudges: Nudges::default(),
            followed: HashMap::new(),
            runners: Vec::new(),
            work,
            census: Census::default(),
        }
    }

    /// Registers kind `K`.
    pub fn with<K: Reconciled>(mut self) -> Self {
        let selector = self.selector.as_deref().filter(|_| K::SELECTED_BY_LABEL);
        let work = self.work.clone();
        work.controller(K::CONTROLLER);
        self.census.add::<K>();
        let controller = if K::FOLLOWED {
            let (controller, changes) =
                super::shared_controller::<K>(&self.client, selector, work.clone());
            self.followed.insert(TypeId::of::<K>(), Box::new(changes));
            controller
        } else {
            super::controller::<K>(&self.client, selector, work.clone())
        };
        let store = controller.store();
        self.stores.insert(store.clone());
        let nudged = self.nudges.channel::<K>();
        self.runners.push(Box::new(move |watch, ctx, concurrency| {
            let nudged = futures::stream::unfold(nudged, |mut receiver| async move {
                let object: ObjectRef<K> = receiver.recv().await?;
                Some((object, receiver))
            });
            let takeovers = takeovers(store.clone(), ctx.clone());
            let recoveries = recoveries(store, ctx.clone());
            let controller = K::watches(controller, watch)
                .reconcile_on(super::counted_due(nudged, work.clone()))
                .reconcile_on(super::counted_due(takeovers, work.clone()))
                .reconcile_on(super::counted_due(recoveries, work));
            Box::pin(super::run(controller, ctx, concurrency))
        }));
        self
    }

    /// The stores and nudges of every kind, for the context.
    pub fn handles(&self) -> (Stores, Nudges) {
        (self.stores.clone(), self.nudges.clone())
    }

    /// How to count the objects of every kind, for the metrics.
    pub fn census(&self) -> Census {
        self.census.clone()
    }

    /// Runs every kind until a shutdown signal.
    pub async fn run(self, ctx: Arc<Context>, concurrency: u16) {
        let watch = WatchContext {
            client: self.client,
            stores: self.stores,
            followed: self.followed,
            edge_losses: ctx.edge.as_ref().map(crate::edge::Edges::losses),
            secrets: ctx.settings.secrets.clone(),
        };
        let runs: Vec<_> = self
            .runners
            .into_iter()
            .map(|runner| runner(&watch, ctx.clone(), concurrency))
            .collect();
        // Every kind has its own subscription now. An unread one would hold
        // the shared watches back once its buffer is full: let it go.
        drop(watch);
        futures::future::join_all(runs).await;
    }
}

/// Every object of `store`, each time this instance starts to lead: a
/// follower skipped them, and the leader before may have stopped mid-way.
fn takeovers<K>(
    store: kube::runtime::reflector::Store<K>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    futures::stream::unfold((store, ctx, false), |(store, ctx, led)| async move {
        if led {
            ctx.leadership.lost().await;
        }
        ctx.leadership.gained().await;
        // The first time, not before the caches hold what there is.
        ctx.stores.ready().await;
        let objects: Vec<ObjectRef<K>> = store
            .state()
            .iter()
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect();
        Some((futures::stream::iter(objects), (store, ctx, true)))
    })
    .flatten()
}

/// The objects of `store` that wait on a backend, each time that backend
/// answers again (see [`crate::health`]): retried at once, not at their
/// next backoff.
fn recoveries<K>(
    store: kube::runtime::reflector::Store<K>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Reconciled,
{
    let answers = ctx.health.recoveries();
    futures::stream::unfold((answers, store), |(mut answers, store)| async move {
        let backend = loop {
            match answers.recv().await {
                Ok(backend) => break backend,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        };
        let waiting: Vec<ObjectRef<K>> = store
            .state()
            .iter()
            .filter(|o| {
                o.status()
                    .is_some_and(|s| crate::health::waits_on(s.conditions(), backend))
            })
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect();
        if !waiting.is_empty() {
            tracing::info!(
                controller = K::CONTROLLER,
                backend = backend.as_str(),
                objects = waiting.len(),
                "retrying what waited on {backend}"
            );
        }
        Some((futures::stream::iter(waiting), (answers, store)))
    })
    .flatten()
}
