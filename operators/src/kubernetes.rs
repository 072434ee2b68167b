//! Kubernetes objects, written with server-side apply under one field
//! manager, and only when the live object differs from the desired one.

use std::fmt::Debug;

use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::adapters::{Backend, Calls, Change, Verb};
use crate::desired::NamespaceObjects;

pub const FIELD_MANAGER: &str = "ossature-operator";

/// True when every field set in `desired` has the same value in `live`
/// (fields the apiserver adds or defaults are ignored).
pub fn json_subset(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value;
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

fn is_empty(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    }
}

/// Applies `desired` unless the live object already matches it.
pub async fn ensure<K>(api: &Api<K>, desired: &K, calls: &Calls) -> Result<Change, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    calls.record(Backend::Kubernetes, Verb::Read);
    let live = api.get_opt(&name).await?;
    let want = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    if let Some(live) = &live {
        let have = serde_json::to_value(live).map_err(kube::Error::SerdeError)?;
        if json_subset(&want, &have) {
            return Ok(Change::Unchanged);
        }
    }
    calls.record(Backend::Kubernetes, Verb::Write);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    Ok(if live.is_some() {
        Change::Updated
    } else {
        Change::Created
    })
}

/// Applies a namespace and its quota, limit range and network policies.
/// `owner` owns the namespaced objects; the namespace itself only when
/// `owns_namespace` (a namespaced owner cannot own a cluster-scoped object).
pub async fn ensure_namespace_objects(
    client: &kube::Client,
    mut objects: NamespaceObjects,
    owner: OwnerReference,
    owns_namespace: bool,
    calls: &Calls,
) -> Result<Vec<Change>, kube::Error> {
    let owners = Some(vec![owner]);
    if owns_namespace {
        objects.namespace.metadata.owner_references = owners.clone();
    }
    objects.quota.metadata.owner_references = owners.clone();
    objects.limits.metadata.owner_references = owners.clone();
    let ns = objects.namespace.metadata.name.clone().unwrap_or_default();
    let mut changes = vec![
        ensure(
            &Api::<Namespace>::all(client.clone()),
            &objects.namespace,
            calls,
        )
        .await?,
        ensure(
            &Api::<ResourceQuota>::namespaced(client.clone(), &ns),
            &objects.quota,
            calls,
        )
        .await?,
        ensure(
            &Api::<LimitRange>::namespaced(client.clone(), &ns),
            &objects.limits,
            calls,
        )
        .await?,
    ];
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    for mut policy in objects.policies {
        policy.metadata.owner_references = owners.clone();
        changes.push(ensure(&policies, &policy, calls).await?);
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
}
