//! The Kubernetes objects of a tenant's (or environment's) namespace, and
//! how a live object is compared with the desired one: it must be applied
//! again when a value differs, or when a field this operator applied before
//! is no longer desired (applying then removes it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Resource;
use ossature_crds::Quotas;
use serde::Serialize;
use serde_json::{Value, json};

use crate::names::{ENVIRONMENT_LABEL, FIELD_MANAGER, TENANT_LABEL, labels};

/// The namespace, its quota, limit range and network policies.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceObjects {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limits: LimitRange,
    /// Default deny, then same-tenant traffic and DNS allowed.
    pub policies: Vec<NetworkPolicy>,
}

pub fn namespace_objects(
    namespace: &str,
    tenant: &str,
    environment: Option<&str>,
    quotas: &Quotas,
) -> NamespaceObjects {
    let labels = labels(tenant, environment);
    let meta = |name: &str| json!({"name": name, "namespace": namespace, "labels": labels});
    let mut hard = BTreeMap::new();
    let mut set = |key: &str, value: Option<Quantity>| {
        if let Some(value) = value {
            hard.insert(key.to_string(), value);
        }
    };
    set("requests.cpu", quotas.cpu.clone());
    set("requests.memory", quotas.memory.clone());
    set("requests.storage", quotas.storage.clone());
    set("pods", quotas.pods.map(|p| Quantity(p.to_string())));

    NamespaceObjects {
        namespace: from(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels},
        })),
        quota: from(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": meta("ossature-quota"),
            "spec": {"hard": hard},
        })),
        limits: from(json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": meta("ossature-limits"),
            "spec": {"limits": [{
                "type": "Container",
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                "default": {"cpu": "1", "memory": "512Mi"},
            }]},
        })),
        policies: vec![
            from(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": meta("ossature-default-deny"),
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            })),
            from(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": meta("ossature-same-tenant"),
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]}],
                    "egress": [
                        {"to": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]},
                        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                    ],
                },
            })),
        ],
    }
}

pub(crate) fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("literal objects are valid")
}

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
pub fn differs<K: Resource + Serialize>(desired: &K, live: &K) -> Result<bool, serde_json::Error> {
    let want = serde_json::to_value(desired)?;
    let have = serde_json::to_value(live)?;
    let managed = live.meta().managed_fields.as_deref().unwrap_or_default();
    Ok(!json_subset(&want, &have) || applied_fields(managed).any(|f| owns_unwanted(f, &want)))
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
    match (label(TENANT_LABEL), label(ENVIRONMENT_LABEL)) {
        (Some(t), e) if t == tenant && e == environment => NamespaceOwner::Ours,
        (None, _) => NamespaceOwner::Foreign(format!(
            "namespace {name} exists and is not labelled {}={tenant}; label it so to hand it to Ossature, or delete it",
            TENANT_LABEL
        )),
        (Some(t), e) => NamespaceOwner::Foreign(format!(
            "namespace {name} belongs to tenant {t}{}; it cannot be used here",
            e.map(|e| format!(", environment {e}")).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use ossature_crds::Quotas;

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

    #[test]
    fn namespace_objects_carry_labels_quota_and_deny_by_default() {
        let quotas = Quotas {
            cpu: Some(Quantity("4".into())),
            pods: Some(20),
            ..Default::default()
        };
        let objects = namespace_objects("tn-acme--prod", "acme", Some("prod"), &quotas);
        let labels = objects.namespace.metadata.labels.clone().unwrap();
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels[ENVIRONMENT_LABEL], "prod");
        let hard = objects.quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"], Quantity("4".into()));
        assert_eq!(hard["pods"], Quantity("20".into()));
        assert!(!hard.contains_key("requests.memory"));
        let deny = objects.policies[0].spec.clone().unwrap();
        assert!(deny.ingress.is_none() && deny.egress.is_none());
        assert_eq!(deny.policy_types.unwrap(), vec!["Ingress", "Egress"]);
        let allow = serde_json::to_value(&objects.policies[1]).unwrap();
        assert_eq!(
            allow["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
                [TENANT_LABEL],
            "acme"
        );
    }
}
