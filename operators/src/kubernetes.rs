//! Kubernetes objects, written with server-side apply under one field
//! manager, and only when the live object differs from the desired one:
//! a value differs, or a field this manager applied before is no longer
//! desired (applying then removes it).

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use ossature_model::names::{FIELD_MANAGER, MANAGED_BY, RETAINED_LABEL};
use ossature_model::objects::{NamespaceObjects, differs};

use crate::adapters::{Backend, Calls, Change, Verb};

/// A live object that cannot be compared (it does not serialise).
fn unreadable(e: serde_json::Error) -> kube::Error {
    kube::Error::SerdeError(e)
}

/// Applies `desired` unless the live object already matches it.
pub async fn ensure<K>(api: &Api<K>, desired: &K, calls: &Calls) -> Result<Change, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    Ok(ensure_live(api, desired, calls).await?.0)
}

/// Like [`ensure`], with the object as the apiserver has it afterwards.
pub async fn ensure_live<K>(
    api: &Api<K>,
    desired: &K,
    calls: &Calls,
) -> Result<(Change, K), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    calls.record(Backend::Kubernetes, Verb::Read);
    let live = api.get_opt(&name).await?;
    let change = match live {
        Some(live) if !differs(desired, &live).map_err(unreadable)? => {
            return Ok((Change::Unchanged, live));
        }
        Some(_) => Change::Updated,
        None => Change::Created,
    };
    Ok((change, apply(api, desired, calls).await?))
}

/// Server-side apply under the operator's field manager, without a read.
pub async fn apply<K>(api: &Api<K>, desired: &K, calls: &Calls) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    calls.record(Backend::Kubernetes, Verb::Write);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await
}

/// Applies a namespace and its quota, limit range and network policies.
/// No owner references: a namespace cannot be owned by a namespaced object,
/// and the finalizer of whoever owns it removes it (or keeps it, on Retain).
/// `live` is the namespace as just read (to check who owns it).
pub async fn ensure_namespace_objects(
    client: &kube::Client,
    objects: &NamespaceObjects,
    live: Option<&Namespace>,
    calls: &Calls,
) -> Result<Vec<Change>, kube::Error> {
    let ns = objects.namespace.metadata.name.clone().unwrap_or_default();
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
    let limits = Api::<LimitRange>::namespaced(client.clone(), &ns);
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    // The namespace first: nothing can be created in it before.
    let namespace = match live {
        Some(live) if !differs(&objects.namespace, live).map_err(unreadable)? => Change::Unchanged,
        Some(_) => {
            apply(&Api::all(client.clone()), &objects.namespace, calls).await?;
            Change::Updated
        }
        None => {
            let created = apply(&Api::all(client.clone()), &objects.namespace, calls).await?;
            in_admissions_cache(client, &created, calls).await;
            Change::Created
        }
    };
    let mut changes = vec![namespace];
    if live.is_none() {
        // A new namespace holds nothing yet: apply without reading first.
        let (q, l, p0, p1) = tokio::join!(
            apply(&quota, &objects.quota, calls),
            apply(&limits, &objects.limits, calls),
            apply(&policies, &objects.policies[0], calls),
            apply(&policies, &objects.policies[1], calls),
        );
        q?;
        l?;
        p0?;
        p1?;
        changes.extend([Change::Created; 4]);
        return Ok(changes);
    }
    let (q, l, p0, p1) = tokio::join!(
        ensure(&quota, &objects.quota, calls),
        ensure(&limits, &objects.limits, calls),
        ensure(&policies, &objects.policies[0], calls),
        ensure(&policies, &objects.policies[1], calls),
    );
    changes.extend([q?, l?, p0?, p1?]);
    Ok(changes)
}

/// Returns once the apiserver's watch cache holds `namespace` as written (a
/// read at its resourceVersion waits for that): the apiserver admits a
/// create in a namespace its cache has not seen yet only after sleeping
/// 50 ms (NamespaceLifecycle). Best effort: on an error the creates that
/// follow only risk that wait.
async fn in_admissions_cache(client: &kube::Client, namespace: &Namespace, calls: &Calls) {
    let (Some(name), Some(version)) = (
        namespace.metadata.name.as_deref(),
        namespace.metadata.resource_version.as_deref(),
    ) else {
        return;
    };
    calls.record(Backend::Kubernetes, Verb::Read);
    let _ = Api::<Namespace>::all(client.clone())
        .get_metadata_with(name, &GetParams::at(version))
        .await;
}

/// Keeps a namespace and what Ossature put in it, no longer managed: the
/// managed-by label goes, a retained label marks it.
pub async fn release_namespace_objects(
    client: &kube::Client,
    objects: &NamespaceObjects,
    calls: &Calls,
) -> Result<(), kube::Error> {
    let ns = objects.namespace.metadata.name.clone().unwrap_or_default();
    let namespaces = Api::<Namespace>::all(client.clone());
    calls.record(Backend::Kubernetes, Verb::Read);
    if namespaces.get_opt(&ns).await?.is_none() {
        return Ok(());
    }
    fn released<K: Resource>(mut object: K) -> K {
        let labels = object.meta_mut().labels.get_or_insert_with(BTreeMap::new);
        labels.remove(MANAGED_BY.0);
        labels.insert(RETAINED_LABEL.into(), "true".into());
        object
    }
    let objects = objects.clone();
    apply(&namespaces, &released(objects.namespace), calls).await?;
    apply(
        &Api::<ResourceQuota>::namespaced(client.clone(), &ns),
        &released(objects.quota),
        calls,
    )
    .await?;
    apply(
        &Api::<LimitRange>::namespaced(client.clone(), &ns),
        &released(objects.limits),
        calls,
    )
    .await?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    for policy in objects.policies {
        apply(&policies, &released(policy), calls).await?;
    }
    Ok(())
}

/// The namespace `name`, if it exists.
pub async fn namespace(
    client: &kube::Client,
    name: &str,
    calls: &Calls,
) -> Result<Option<Namespace>, kube::Error> {
    calls.record(Backend::Kubernetes, Verb::Read);
    Api::<Namespace>::all(client.clone()).get_opt(name).await
}

/// Deletes the objects labelled `selector` that are not named in `wanted`:
/// what leaves the desired set leaves the cluster.
pub async fn prune<K>(
    api: &Api<K>,
    selector: &str,
    wanted: &[String],
    calls: &Calls,
) -> Result<Vec<Change>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    calls.record(Backend::Kubernetes, Verb::Read);
    let live = api
        .list_metadata(&ListParams::default().labels(selector))
        .await?;
    let mut changes = Vec::new();
    for object in live.items {
        let name = object.metadata.name.unwrap_or_default();
        if !wanted.contains(&name) {
            changes.push(delete(api, &name, calls).await?);
        }
    }
    Ok(changes)
}

/// Deletes object `name` when it exists and the object of uid `owner`
/// owns it: what left the desired set, never an object of the same name
/// that someone else made.
pub async fn remove_owned<K>(
    api: &Api<K>,
    name: &str,
    owner: &str,
    calls: &Calls,
) -> Result<Change, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    calls.record(Backend::Kubernetes, Verb::Read);
    let Some(live) = api.get_metadata_opt(name).await? else {
        return Ok(Change::Absent);
    };
    let owned = live
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner);
    if !owned {
        return Ok(Change::Absent);
    }
    delete(api, name, calls).await
}

/// Deletes an object if it exists.
pub async fn delete<K>(api: &Api<K>, name: &str, calls: &Calls) -> Result<Change, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    calls.record(Backend::Kubernetes, Verb::Write);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(Change::Deleted),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Change::Absent),
        Err(e) => Err(e),
    }
}
