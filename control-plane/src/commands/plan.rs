//! The plan a dry run answers with: besides the apiserver's own dry run of
//! each object, the backend objects the operators would create, change or
//! remove, computed by the model crate's functions the operators use, as
//! desired(new objects) against desired(current objects). Backends are not
//! read.

use kube::{Resource, ResourceExt};
use ossature_model::Platform;
use ossature_model::plan::plan_of;
use ossature_model::tree::{Found, Settings, TenantObjects};
use ossature_model::workloads::Autoscaler;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{BackendPlan, ObjectChange, Operation};
use crate::watch::{Watches, of_tenant};

/// What of the platform shapes the desired objects, as the operator runs
/// with (the control plane's flags say it).
#[derive(Debug, Clone)]
pub struct PlanSettings {
    pub platform: Platform,
    pub edge: bool,
    pub autoscaler: Autoscaler,
    pub pulsar_admin_url: String,
}

impl PlanSettings {
    pub fn settings(&self) -> Settings<'_> {
        Settings {
            platform: &self.platform,
            edge: self.edge,
            autoscaler: self.autoscaler,
            pulsar_admin_url: &self.pulsar_admin_url,
        }
    }
}

/// A tenant's objects as the shared watch has them now; none before it is
/// onboarded.
pub fn current(watches: &Watches, tenant: &str) -> Option<TenantObjects> {
    let object = watches.tenant(tenant)?;
    let found = Found {
        scopes: of_tenant(&watches.scopes, tenant),
        environments: of_tenant(&watches.environments, tenant),
        certificates: of_tenant(&watches.certificates, tenant),
        topics: of_tenant(&watches.topics, tenant),
        service_identities: of_tenant(&watches.service_identities, tenant),
        workloads: of_tenant(&watches.workloads, tenant),
    };
    let roles = watches.tenant_roles_of(tenant);
    let role_rules = ossature_policy::own_scope_rules(roles.iter().map(|r| r.as_ref()));
    Some(TenantObjects::gather((*object).clone(), found, role_rules))
}

/// The objects once `changes` (a dry run's, each as the apiserver
/// answered it) are made; none once the Tenant is deleted.
pub fn after(current: Option<&TenantObjects>, changes: &[ObjectChange]) -> Option<TenantObjects> {
    let mut next = current.cloned();
    for change in changes {
        let object = change.object.clone().unwrap_or(Value::Null);
        match (change.kind.as_str(), change.operation) {
            ("Tenant", Operation::Apply) => {
                if let Ok(tenant) = serde_json::from_value(object) {
                    match next.as_mut() {
                        Some(objects) => objects.tenant = tenant,
                        None => next = Some(TenantObjects::new(tenant)),
                    }
                }
            }
            ("Tenant", Operation::Delete) => next = None,
            (kind, operation) => {
                let Some(objects) = next.as_mut() else {
                    continue;
                };
                let (namespace, name) = (change.namespace.as_deref(), change.name.as_str());
                match kind {
                    "Scope" => replace(&mut objects.scopes, namespace, name, operation, object),
                    "Environment" => replace(
                        &mut objects.environments,
                        namespace,
                        name,
                        operation,
                        object,
                    ),
                    "Certificate" => replace(
                        &mut objects.certificates,
                        namespace,
                        name,
                        operation,
                        object,
                    ),
                    "Topic" => replace(&mut objects.topics, namespace, name, operation, object),
                    "ServiceIdentity" => replace(
                        &mut objects.service_identities,
                        namespace,
                        name,
                        operation,
                        object,
                    ),
                    "Workload" => {
                        replace(&mut objects.workloads, namespace, name, operation, object)
                    }
                    _ => {}
                }
            }
        }
    }
    next
}

fn replace<K: Resource + DeserializeOwned>(
    list: &mut Vec<K>,
    namespace: Option<&str>,
    name: &str,
    operation: Operation,
    object: Value,
) {
    list.retain(|o| !(o.meta().namespace.as_deref() == namespace && o.name_any() == name));
    if operation == Operation::Apply
        && let Ok(object) = serde_json::from_value(object)
    {
        list.push(object);
    }
}

/// The backend plan of a change from `current` to `new`: each object the
/// operators would create, update (naming the fields) or delete.
pub fn backend_plan(
    current: Option<&TenantObjects>,
    new: Option<&TenantObjects>,
    settings: &PlanSettings,
) -> BackendPlan {
    let changes = plan_of(current, new, &settings.settings());
    BackendPlan {
        computed: true,
        note: changes
            .is_empty()
            .then(|| "the operators would change nothing in the backends".to_string()),
        changes: changes
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's standard rules (for the tree and plan without the policy
    /// crate) are what the policy crate derives from its catalog.
    #[test]
    fn the_models_standard_rules_are_the_policy_crates() {
        for role in ["Viewer", "Editor", "Admin"] {
            let from_policy: Vec<_> = ossature_policy::scope_rules(&[], &[], role)
                .unwrap()
                .iter()
                .map(|r| ossature_model::scopes::ScopeRule::new(r.resource, &r.verbs))
                .collect();
            assert_eq!(
                Some(from_policy),
                ossature_model::scopes::standard_scope_rules(role),
                "{role}"
            );
        }
    }
    use serde_json::json;

    fn settings() -> PlanSettings {
        PlanSettings {
            platform: Platform::default(),
            edge: false,
            autoscaler: Autoscaler::Hpa,
            pulsar_admin_url: String::new(),
        }
    }

    fn change(kind: &str, namespace: Option<&str>, name: &str, object: Value) -> ObjectChange {
        ObjectChange {
            api_version: "ossature.dev/v1alpha1".into(),
            kind: kind.into(),
            namespace: namespace.map(String::from),
            name: name.into(),
            operation: Operation::Apply,
            object: Some(object),
            note: None,
        }
    }

    #[test]
    fn an_onboarding_plans_every_backend_object_and_an_offboarding_removes_them() {
        let tenant = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"}
        });
        let environment = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "prod", "namespace": "tn-acme"},
            "spec": {"kind": "Production"}
        });
        let changes = [
            change("Namespace", None, "tn-acme", json!({})),
            change("Tenant", None, "acme", tenant),
            change("Environment", Some("tn-acme"), "prod", environment),
        ];
        let new = after(None, &changes).unwrap();
        assert_eq!(new.environments.len(), 1);
        let plan = backend_plan(None, Some(&new), &settings());
        assert!(plan.computed);
        let actions: Vec<&str> = plan
            .changes
            .iter()
            .map(|c| c["action"].as_str().unwrap())
            .collect();
        assert!(actions.iter().all(|a| *a == "create"), "{actions:?}");
        let names: Vec<String> = plan
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["kind"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                )
            })
            .collect();
        for expected in [
            "Namespace tn-acme--prod",
            "PulsarNamespace acme/prod",
            "PulsarTenant acme",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        // The same again changes nothing; offboarding deletes everything.
        let same = backend_plan(
            Some(&new),
            after(Some(&new), &changes[1..2]).as_ref(),
            &settings(),
        );
        assert!(same.changes.is_empty(), "{:?}", same.changes);
        let mut delete = changes[1].clone();
        delete.operation = Operation::Delete;
        let gone = after(Some(&new), &[delete]);
        assert!(gone.is_none());
        let offboard = backend_plan(Some(&new), None, &settings());
        assert_eq!(offboard.changes.len(), plan.changes.len());
        assert!(offboard.changes.iter().all(|c| c["action"] == "delete"));
    }
}
