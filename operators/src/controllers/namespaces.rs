//! The namespace of a tenant or of one of its environments: the step that
//! puts it (with its quota, limit range and network policies) in place, the
//! watches that put it back when changed by hand, and its removal.

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use ossature_model::conditions::{self, Outcome, reasons};
use ossature_model::names::{ENVIRONMENT_LABEL, RETAINED_LABEL, TENANT_LABEL};
use ossature_model::objects::{NamespaceObjects, NamespaceOwner, differs, namespace_owner};

use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext};
use crate::secrets_access::{BINDING_NAME, SecretsAccess};
use crate::stores::Stores;
use futures::StreamExt;

/// Whose namespace it is: a tenant's, or one of its environments'.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub tenant: &'a str,
    pub environment: Option<&'a str>,
}

impl<'a> Owner<'a> {
    pub fn tenant(tenant: &'a str) -> Self {
        Owner {
            tenant,
            environment: None,
        }
    }

    pub fn environment(tenant: &'a str, environment: &'a str) -> Self {
        Owner {
            tenant,
            environment: Some(environment),
        }
    }
}

/// The Event of a deletion that keeps the namespace and, as `rest` says,
/// what else was provisioned.
pub fn retained(namespace: &str, rest: &str) -> kube::runtime::events::Event {
    crate::reconcile::event(
        kube::runtime::events::EventType::Normal,
        "Retained",
        "Delete",
        format!(
            "deletionPolicy is Retain: namespace {namespace} (labelled {RETAINED_LABEL}=true, no longer managed){rest} are kept"
        ),
    )
}

/// The namespace step, after checking the namespace is free or ours to
/// adopt; a namespace of something else stalls the plan.
pub async fn step<'a, S: Send + 'a>(
    plan: &mut Plan<'a, S>,
    ctx: &'a Context,
    objects: NamespaceObjects,
    owner: Owner<'_>,
) -> Result<(), Error> {
    let name = objects.namespace.metadata.name.clone().unwrap_or_default();
    let live = kubernetes::namespace(&ctx.client, &name, &ctx.calls).await?;
    if let NamespaceOwner::Foreign(message) =
        namespace_owner(live.as_ref(), owner.tenant, owner.environment)
    {
        plan.stalled = Some(Outcome::failed(
            conditions::STALLED,
            reasons::NAMESPACE_NOT_OWNED,
            message.clone(),
        ));
        plan.outcome(Outcome::failed(
            conditions::NAMESPACE_READY,
            reasons::NAMESPACE_NOT_OWNED,
            message,
        ));
        return Ok(());
    }
    plan.step(Step::new(
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
            // The operator's own access to the namespace's Secrets.
            let labels = objects
                .namespace
                .metadata
                .labels
                .clone()
                .unwrap_or_default();
            if let Some(binding) = ctx.settings.secrets.binding(&name, &labels) {
                let api = Api::<RoleBinding>::namespaced(ctx.client.clone(), &name);
                changes.push(match live {
                    None => {
                        kubernetes::apply(&api, &binding, &ctx.calls).await?;
                        crate::adapters::Change::Created
                    }
                    Some(_) => kubernetes::ensure(&api, &binding, &ctx.calls).await?,
                });
            }
            Ok::<_, kube::Error>(changes)
        },
    ));
    Ok(())
}

/// What becomes of the namespace when its owner goes.
pub enum Removal {
    /// Nothing of it was ours, or it is gone: the owner may go.
    Done,
    /// Ours and still there: delete it (after everything else), then wait.
    Delete,
}

/// Where the removal of an owner's namespace stands. A namespace being
/// deleted is waited for: its owner is gone only once the namespace is,
/// so applying the same file again right after a deletion converges.
pub async fn removal(
    ctx: &Context,
    objects: &NamespaceObjects,
    owner: Owner<'_>,
    retain: bool,
) -> Result<Removal, Error> {
    let name = objects.namespace.metadata.name.clone().unwrap_or_default();
    let live = kubernetes::namespace(&ctx.client, &name, &ctx.calls).await?;
    // Never a namespace that was not ours (a refused adoption).
    if namespace_owner(live.as_ref(), owner.tenant, owner.environment) != NamespaceOwner::Ours {
        return Ok(Removal::Done);
    }
    if retain {
        kubernetes::release_namespace_objects(&ctx.client, objects, &ctx.calls).await?;
        // What is no longer managed is no longer the operator's to read.
        if ctx.settings.secrets != SecretsAccess::Cluster {
            kubernetes::delete(
                &Api::<RoleBinding>::namespaced(ctx.client.clone(), &name),
                BINDING_NAME,
                &ctx.calls,
            )
            .await?;
        }
        return Ok(Removal::Done);
    }
    match live {
        Some(live) if live.metadata.deletion_timestamp.is_some() => Err(Error::Waiting(format!(
            "waiting for namespace {name} to terminate"
        ))),
        _ => Ok(Removal::Delete),
    }
}

/// Deletes the owner's namespace (the last of what it removes) and waits
/// until it is gone.
pub async fn delete(ctx: &Context, objects: &NamespaceObjects) -> Result<(), Error> {
    let name = objects.namespace.metadata.name.clone().unwrap_or_default();
    let change = kubernetes::delete(
        &Api::<Namespace>::all(ctx.client.clone()),
        &name,
        &ctx.calls,
    )
    .await?;
    match change {
        crate::adapters::Change::Absent => Ok(()),
        _ => Err(Error::Waiting(format!(
            "waiting for namespace {name} to terminate"
        ))),
    }
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
        || O::wanted(&objects, name).is_none_or(|want| differs(want, object).unwrap_or(true))
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
pub fn watch<K>(
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
