//! One module per kind: what it reads, its steps, its cleanup, its status.
//! `run` is where kinds are registered.

pub mod acme_issuer;
pub mod certificate;
pub mod edge_host;
pub mod environment;
pub mod scope;
pub mod tenant;
pub mod tenant_ca;
pub mod tenant_domains;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use ossature_crds::{AcmeIssuer, Certificate, Environment, Scope, Tenant};

use crate::conditions::{self, Outcome, reasons};
use crate::context::{Context, Stores};
use crate::desired::{ENVIRONMENT_LABEL, NamespaceObjects, TENANT_LABEL};
use crate::kubernetes::{self, NamespaceOwner};
use crate::reconcile::{self, Error, Plan, Reconciled, Step, WatchContext};
use futures::StreamExt;

/// The tenant whose namespace `tn-<tenant>` holds an object.
pub fn tenant_of(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix("tn-")
        .filter(|t| !t.is_empty() && !t.contains("--"))
}

/// The controllers' own watches, made before the context so that every
/// kind can read every store.
pub struct Controllers {
    tenants: Controller<Tenant>,
    tenant_changes: kube::runtime::reflector::ReflectHandle<Tenant>,
    certificate_changes: kube::runtime::reflector::ReflectHandle<Certificate>,
    scopes: Controller<Scope>,
    environments: Controller<Environment>,
    certificates: Controller<Certificate>,
    acme_issuers: Controller<AcmeIssuer>,
}

impl Controllers {
    /// Tenants and AcmeIssuers are limited to `selector`; Scopes,
    /// Environments and Certificates follow their tenant (see
    /// [`Reconciled::selected`]).
    pub fn new(client: &kube::Client, selector: Option<&str>) -> Self {
        let (tenants, tenant_changes) = reconcile::shared_controller(client, selector);
        let (certificates, certificate_changes) = reconcile::shared_controller(client, None);
        Controllers {
            tenants,
            tenant_changes,
            scopes: reconcile::controller(client, None),
            environments: reconcile::controller(client, None),
            certificates,
            certificate_changes,
            acme_issuers: reconcile::controller(client, selector),
        }
    }

    pub fn stores(&self) -> Stores {
        Stores {
            tenants: self.tenants.store(),
            scopes: self.scopes.store(),
            environments: self.environments.store(),
            certificates: self.certificates.store(),
            acme_issuers: self.acme_issuers.store(),
        }
    }

    /// Runs every kind until a shutdown signal.
    pub async fn run(self, ctx: Arc<Context>, concurrency: u16) {
        let watch = WatchContext {
            client: ctx.client.clone(),
            stores: ctx.stores.clone(),
            tenants: self.tenant_changes,
            certificates: self.certificate_changes,
            edge_losses: ctx.edge.as_ref().map(crate::edge::Edges::losses),
        };
        let tenants = Tenant::watches(self.tenants, &watch);
        let scopes = Scope::watches(self.scopes, &watch);
        let environments = Environment::watches(self.environments, &watch);
        let certificates = Certificate::watches(self.certificates, &watch);
        let acme_issuers = ossature_crds::AcmeIssuer::watches(self.acme_issuers, &watch);
        // Every kind has its own subscription now. An unread one would hold
        // the shared watches back once its buffer is full: let it go.
        drop(watch);
        tokio::join!(
            reconcile::run(tenants, ctx.clone(), concurrency),
            reconcile::run(scopes, ctx.clone(), concurrency),
            reconcile::run(environments, ctx.clone(), concurrency),
            reconcile::run(certificates, ctx.clone(), concurrency),
            reconcile::run(acme_issuers, ctx.clone(), concurrency),
        );
    }
}

/// Whether an object in a tenant's namespace is this instance's: always
/// without a selector, else when its tenant is in the (selected) store.
fn tenant_selected(namespace: Option<&str>, ctx: &Context) -> bool {
    ctx.settings.selector.is_none()
        || namespace
            .and_then(tenant_of)
            .is_some_and(|t| ctx.stores.tenant(t).is_some())
}

/// The Tenant of the namespace, from the store or, when the store has not
/// seen it yet, from the API.
async fn find_tenant(ctx: &Context, tenant: &str) -> Result<Option<Arc<Tenant>>, kube::Error> {
    find_cluster_object(ctx, &ctx.stores.tenants, tenant).await
}

/// A cluster-scoped object, from `store` or, when the store has not seen it
/// (yet, or it is another instance's), from the API.
async fn find_cluster_object<K>(
    ctx: &Context,
    store: &kube::runtime::reflector::Store<K>,
    name: &str,
) -> Result<Option<Arc<K>>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(found) = store.get(&ObjectRef::new(name)) {
        return Ok(Some(found));
    }
    ctx.calls.record(
        crate::adapters::Backend::Kubernetes,
        crate::adapters::Verb::Read,
    );
    Ok(Api::<K>::all(ctx.client.clone())
        .get_opt(name)
        .await?
        .map(Arc::new))
}

/// The tenant an object in `namespace` belongs to, or, as a Stalled plan
/// keeping the previous status, why it has none (what admission cannot see).
async fn owning_tenant<'a, S>(
    ctx: &Context,
    namespace: &str,
    kinds: &str,
    previous: S,
) -> Result<Result<(String, Arc<Tenant>), Plan<'a, S>>, Error> {
    let Some(tenant) = tenant_of(namespace) else {
        return Ok(Err(Plan::stalled(
            previous,
            reasons::NOT_IN_TENANT_NAMESPACE,
            format!(
                "namespace {namespace} is not a tenant namespace; create {kinds} in tn-<tenant>"
            ),
        )));
    };
    match find_tenant(ctx, tenant).await? {
        Some(owner) => Ok(Ok((tenant.to_string(), owner))),
        None => Ok(Err(Plan::stalled(
            previous,
            reasons::TENANT_NOT_FOUND,
            format!("tenant {tenant} does not exist; create it (or apply its file) first"),
        ))),
    }
}

/// What else goes into a namespace once it exists, in the namespace step.
type InNamespace<'a> =
    Option<futures::future::BoxFuture<'a, Result<Vec<crate::adapters::Change>, kube::Error>>>;

/// The namespace step, after checking the namespace is free or ours to adopt;
/// a namespace of something else stalls the plan. `then` runs once the
/// namespace is in place.
async fn namespace_step<'a, S>(
    plan: &mut Plan<'a, S>,
    ctx: &'a Context,
    objects: NamespaceObjects,
    tenant: &str,
    environment: Option<&str>,
    then: InNamespace<'a>,
) -> Result<(), Error> {
    let name = objects.namespace.metadata.name.clone().unwrap_or_default();
    let live = kubernetes::namespace(&ctx.client, &name, &ctx.calls).await?;
    if let NamespaceOwner::Foreign(message) =
        kubernetes::namespace_owner(live.as_ref(), tenant, environment)
    {
        plan.stalled = Some(Outcome::failed(
            conditions::STALLED,
            reasons::NAMESPACE_NOT_OWNED,
            message.clone(),
        ));
        plan.outcomes.push(Outcome::failed(
            conditions::NAMESPACE_READY,
            reasons::NAMESPACE_NOT_OWNED,
            message,
        ));
        return Ok(());
    }
    plan.steps.push(Step::new(
        conditions::NAMESPACE_READY,
        format!("namespace {name}"),
        async move {
            let mut changes = kubernetes::ensure_namespace_objects(
                &ctx.client,
                &objects,
                live.as_ref(),
                &ctx.calls,
            )
            .await?;
            if let Some(then) = then {
                changes.extend(then.await?);
            }
            Ok::<_, kube::Error>(changes)
        },
    ));
    Ok(())
}

/// What a tenant's (or environment's) namespace should hold, from the
/// stores, and whether its owner is Stalled; `None` when the owner is not
/// this instance's (or not known yet: its own watch brings it).
pub type Wanted = fn(&Stores, &str, Option<&str>) -> Option<(NamespaceObjects, bool)>;

/// One of the objects of a tenant's namespace.
trait NamespaceObject:
    Resource<DynamicType = ()>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn wanted<'o>(objects: &'o NamespaceObjects, name: &str) -> Option<&'o Self>;
}

fn named<'o, O: Resource>(object: &'o O, name: &str) -> Option<&'o O> {
    (object.meta().name.as_deref() == Some(name)).then_some(object)
}

impl NamespaceObject for Namespace {
    fn wanted<'o>(objects: &'o NamespaceObjects, name: &str) -> Option<&'o Self> {
        named(&objects.namespace, name)
    }
}

impl NamespaceObject for ResourceQuota {
    fn wanted<'o>(objects: &'o NamespaceObjects, name: &str) -> Option<&'o Self> {
        named(&objects.quota, name)
    }
}

impl NamespaceObject for LimitRange {
    fn wanted<'o>(objects: &'o NamespaceObjects, name: &str) -> Option<&'o Self> {
        named(&objects.limits, name)
    }
}

impl NamespaceObject for NetworkPolicy {
    fn wanted<'o>(objects: &'o NamespaceObjects, name: &str) -> Option<&'o Self> {
        objects.policies.iter().find_map(|p| named(p, name))
    }
}

/// Whether a labelled namespace object, as just seen, calls for its owner's
/// reconcile: it drifted from what is wanted, is being deleted, or its
/// owner is Stalled (a namespace handed over). The operator's own writes,
/// and what the apiserver adds (a quota's usage), do not.
fn calls_for_reconcile<O: NamespaceObject>(object: &O, stores: &Stores, wanted: Wanted) -> bool {
    let Some(labels) = object.meta().labels.as_ref() else {
        return false;
    };
    let Some(tenant) = labels.get(TENANT_LABEL) else {
        return false;
    };
    let environment = labels.get(ENVIRONMENT_LABEL).map(String::as_str);
    let Some((objects, stalled)) = wanted(stores, tenant, environment) else {
        return false;
    };
    let name = object.meta().name.as_deref().unwrap_or_default();
    stalled
        || object.meta().deletion_timestamp.is_some()
        || O::wanted(&objects, name)
            .is_none_or(|want| kubernetes::differs(want, object).unwrap_or(true))
}

/// Labelled namespace objects of one kind that call for a reconcile; a
/// deleted one always does.
fn drift<O: NamespaceObject>(
    client: &kube::Client,
    stores: Stores,
    wanted: Wanted,
) -> impl futures::Stream<Item = Result<O, watcher::Error>> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    watcher(
        Api::<O>::all(client.clone()),
        watcher::Config::default().labels(TENANT_LABEL),
    )
    .default_backoff()
    .filter_map(move |event| {
        let trigger = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                calls_for_reconcile(&o, &stores, wanted).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => Some(Ok(o)),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(trigger)
    })
}

/// Requeues `K` when a labelled namespace object of a tenant drifts or is
/// deleted (changed by hand): `map` reads the labels, `wanted` says what
/// the object should be.
fn watch_namespace_objects<K>(
    controller: Controller<K>,
    watch: &WatchContext,
    map: fn(&str, Option<&str>) -> Option<ObjectRef<K>>,
    wanted: Wanted,
) -> Controller<K>
where
    K: Reconciled,
{
    fn mapper<O: Resource, K: Reconciled>(
        map: fn(&str, Option<&str>) -> Option<ObjectRef<K>>,
    ) -> impl Fn(O) -> Option<ObjectRef<K>> + Send + Sync + 'static {
        move |o: O| {
            let labels = o.meta().labels.as_ref()?;
            map(
                labels.get(TENANT_LABEL)?,
                labels.get(ENVIRONMENT_LABEL).map(String::as_str),
            )
        }
    }
    let (client, stores) = (&watch.client, &watch.stores);
    controller
        .watches_stream(
            drift::<Namespace>(client, stores.clone(), wanted),
            mapper(map),
        )
        .watches_stream(
            drift::<ResourceQuota>(client, stores.clone(), wanted),
            mapper(map),
        )
        .watches_stream(
            drift::<LimitRange>(client, stores.clone(), wanted),
            mapper(map),
        )
        .watches_stream(
            drift::<NetworkPolicy>(client, stores.clone(), wanted),
            mapper(map),
        )
}

/// Whether a kind's status says Stalled.
fn is_stalled<S: reconcile::ObjectStatus>(status: Option<&S>) -> bool {
    status.is_some_and(|s| {
        s.conditions()
            .iter()
            .any(|c| c.type_ == conditions::STALLED && c.status == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_read_from_the_namespace() {
        assert_eq!(tenant_of("tn-acme"), Some("acme"));
        assert_eq!(tenant_of("tn-acme-eu"), Some("acme-eu"));
        assert_eq!(
            tenant_of("tn-acme--prod"),
            None,
            "an environment namespace is not a tenant's"
        );
        assert_eq!(tenant_of("default"), None);
        assert_eq!(tenant_of("tn-"), None);
    }
}
