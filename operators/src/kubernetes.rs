//! Kubernetes objects, written with server-side apply under one field
//! manager, and only when the live object differs from the desired one:
//! a value differs, or a field this manager applied before is no longer
//! desired (applying then removes it).

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::adapters::{Backend, Calls, Change, Verb};
use crate::desired::{self, NamespaceObjects};

pub const FIELD_MANAGER: &str = "ossature-operator";

/// True when every field set in `desired` has the same value in `live`
/// (fields the apiserver adds or defaults are ignored).
pub fn json_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => json_subset(dv, lv),
            // The apiserver drops empty maps and lists (a quota without limits).
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| json_subset(dv, lv))
        }
        _ => desired == live,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// True when `fields` (a managedFields `fieldsV1` set) names a field that
/// `desired` no longer has: applying `desired` would remove it.
pub fn owns_unwanted(fields: &Value, desired: &Value) -> bool {
    let Value::Object(fields) = fields else {
        return false;
    };
    fields.iter().any(|(key, sub)| {
        // `.` is the field itself; `k:`, `v:` and `i:` are list items, which
        // the value comparison covers (a list of another length differs).
        let Some(name) = key.strip_prefix("f:") else {
            return false;
        };
        match desired.get(name) {
            None => true,
            Some(Value::Object(_)) => owns_unwanted(sub, &desired[name]),
            Some(_) => false,
        }
    })
}

/// The fields this operator applied to a live object.
fn applied_fields(managed: &[ManagedFieldsEntry]) -> impl Iterator<Item = &Value> {
    managed
        .iter()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref().unwrap_or_default().is_empty()
        })
        .filter_map(|m| m.fields_v1.as_ref().map(|f| &f.0))
}

/// Whether `live` must be applied again to become `desired`.
pub fn differs<K: Resource + Serialize>(desired: &K, live: &K) -> Result<bool, kube::Error> {
    let want = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    let have = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
    let managed = live.meta().managed_fields.as_deref().unwrap_or_default();
    Ok(!json_subset(&want, &have) || applied_fields(managed).any(|f| owns_unwanted(f, &want)))
}

/// Applies `desired` unless the live object already matches it.
pub async fn ensure<K>(api: &Api<K>, desired: &K, calls: &Calls) -> Result<Change, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    calls.record(Backend::Kubernetes, Verb::Read);
    let live = api.get_opt(&name).await?;
    if let Some(live) = &live
        && !differs(desired, live)?
    {
        return Ok(Change::Unchanged);
    }
    apply(api, desired, calls).await?;
    Ok(if live.is_some() {
        Change::Updated
    } else {
        Change::Created
    })
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

/// Who a namespace belongs to, read from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceOwner {
    /// No such namespace yet.
    Absent,
    /// Labelled for this tenant (and environment): ours to manage.
    Ours,
    /// Something else: another tenant, another environment, or nothing of Ossature's.
    Foreign(String),
}

/// Whether the namespace `name` may be managed for `tenant` (and `environment`):
/// it does not exist, or carries their labels (a namespace in a tenant's
/// file is created before the Tenant, labelled for it, and adopted).
pub fn namespace_owner(
    live: Option<&Namespace>,
    tenant: &str,
    environment: Option<&str>,
) -> NamespaceOwner {
    let Some(live) = live else {
        return NamespaceOwner::Absent;
    };
    let empty = BTreeMap::new();
    let labels = live.metadata.labels.as_ref().unwrap_or(&empty);
    let label = |key: &str| labels.get(key).map(String::as_str);
    let name = live.metadata.name.as_deref().unwrap_or_default();
    match (
        label(desired::TENANT_LABEL),
        label(desired::ENVIRONMENT_LABEL),
    ) {
        (Some(t), e) if t == tenant && e == environment => NamespaceOwner::Ours,
        (None, _) => NamespaceOwner::Foreign(format!(
            "namespace {name} exists and is not labelled {}={tenant}; label it so to hand it to Ossature, or delete it",
            desired::TENANT_LABEL
        )),
        (Some(t), e) => NamespaceOwner::Foreign(format!(
            "namespace {name} belongs to tenant {t}{}; it cannot be used here",
            e.map(|e| format!(", environment {e}")).unwrap_or_default()
        )),
    }
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
        Some(live) if !differs(&objects.namespace, live)? => Change::Unchanged,
        Some(_) => {
            apply(&Api::all(client.clone()), &objects.namespace, calls).await?;
            Change::Updated
        }
        None => {
            apply(&Api::all(client.clone()), &objects.namespace, calls).await?;
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
        labels.remove(desired::MANAGED_BY.0);
        labels.insert(desired::RETAINED_LABEL.into(), "true".into());
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_apiserver_do_not_count_as_drift() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"hard": {"pods": "10"}}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}}, "spec": {"hard": {"pods": "10"}}, "status": {}});
        assert!(json_subset(&desired, &live));
    }

    #[test]
    fn empty_maps_the_apiserver_drops_are_not_drift() {
        let desired = json!({"spec": {"hard": {}}, "metadata": {"labels": {}}});
        assert!(json_subset(&desired, &json!({"spec": {}, "metadata": {}})));
        assert!(!json_subset(
            &json!({"spec": {"hard": {"pods": "1"}}}),
            &json!({"spec": {}})
        ));
    }

    #[test]
    fn a_changed_or_missing_field_is_drift() {
        let desired = json!({"spec": {"hard": {"pods": "10"}, "list": [1, 2]}});
        assert!(!json_subset(
            &desired,
            &json!({"spec": {"hard": {"pods": "11"}, "list": [1, 2]}})
        ));
        assert!(!json_subset(
            &desired,
            &json!({"spec": {"hard": {}, "list": [1, 2]}})
        ));
        assert!(!json_subset(
            &desired,
            &json!({"spec": {"hard": {"pods": "10"}, "list": [1, 2, 3]}})
        ));
    }

    #[test]
    fn a_field_applied_before_and_no_longer_desired_is_drift() {
        // A quota's cpu limit left the spec: the live object still has it,
        // and the operator's managed fields say it applied it.
        let fields = json!({"f:metadata": {"f:labels": {"f:a": {}}},
                            "f:spec": {"f:hard": {"f:pods": {}, "f:requests.cpu": {}}}});
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"hard": {"pods": "10"}}});
        assert!(owns_unwanted(&fields, &desired));
        let same = json!({"metadata": {"labels": {"a": "1"}},
                          "spec": {"hard": {"pods": "10", "requests.cpu": "2"}}});
        assert!(!owns_unwanted(&fields, &same));
        // Owner references the operator set in an older release.
        let old = json!({"f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u\"}": {}}}});
        assert!(owns_unwanted(&old, &json!({"metadata": {"name": "x"}})));
        // List items and the `.` marker never count on their own.
        let listed = json!({"f:spec": {"f:rules": {"k:{\"x\":1}": {".": {}}}, ".": {}}});
        assert!(!owns_unwanted(&listed, &json!({"spec": {"rules": []}})));
    }

    #[test]
    fn only_a_namespace_labelled_for_the_tenant_is_adopted() {
        let ns = |labels: Value| -> Namespace {
            serde_json::from_value(json!({"metadata": {"name": "tn-acme", "labels": labels}}))
                .unwrap()
        };
        assert_eq!(namespace_owner(None, "acme", None), NamespaceOwner::Absent);
        assert_eq!(
            namespace_owner(
                Some(&ns(json!({"ossature.dev/tenant": "acme"}))),
                "acme",
                None
            ),
            NamespaceOwner::Ours
        );
        let foreign = namespace_owner(Some(&ns(json!({"team": "x"}))), "acme", None);
        assert!(
            matches!(&foreign, NamespaceOwner::Foreign(m) if m.contains("not labelled ossature.dev/tenant=acme")),
            "{foreign:?}"
        );
        assert!(matches!(
            namespace_owner(
                Some(&ns(json!({"ossature.dev/tenant": "acme-eu"}))),
                "acme",
                None
            ),
            NamespaceOwner::Foreign(_)
        ));
        // A tenant's own namespace is not one of its environments'.
        assert!(matches!(
            namespace_owner(
                Some(&ns(json!({"ossature.dev/tenant": "acme"}))),
                "acme",
                Some("prod")
            ),
            NamespaceOwner::Foreign(_)
        ));
    }
}
