//! The plan a dry run answers with: besides the apiserver's own dry run of
//! each object, the backend objects the operators would create, change or
//! remove, as desired(new objects) against desired(current objects).

use std::sync::Arc;

use kube::ResourceExt;
use ossature_crds::{Environment, Scope, Tenant};
use serde_json::Value;

use crate::api::{BackendPlan, ObjectChange, Operation};
use crate::watch::Watches;

/// A tenant's objects that the operators turn into backend objects.
#[derive(Debug, Clone, Default)]
pub struct TenantObjects {
    pub tenant: Option<Tenant>,
    pub scopes: Vec<Scope>,
    pub environments: Vec<Environment>,
}

impl TenantObjects {
    /// As the shared watch has them now.
    pub fn current(watches: &Watches, tenant: &str) -> TenantObjects {
        fn owned<K: Clone>(objects: Vec<Arc<K>>) -> Vec<K> {
            objects.into_iter().map(|o| (*o).clone()).collect()
        }
        TenantObjects {
            tenant: watches.tenant(tenant).map(|t| (*t).clone()),
            scopes: owned(watches.scopes_of(tenant)),
            environments: owned(watches.environments_of(tenant)),
        }
    }

    /// These objects once `changes` (a dry run's) are made.
    pub fn after(&self, changes: &[ObjectChange]) -> TenantObjects {
        let mut next = self.clone();
        for change in changes {
            let object = change.object.clone().unwrap_or(Value::Null);
            match (change.kind.as_str(), change.operation) {
                ("Tenant", Operation::Apply) => {
                    next.tenant = serde_json::from_value(object).ok().or(next.tenant);
                }
                ("Tenant", Operation::Delete) => next.tenant = None,
                ("Scope", op) => replace(&mut next.scopes, &change.name, op, object),
                ("Environment", op) => replace(&mut next.environments, &change.name, op, object),
                _ => {}
            }
        }
        next
    }
}

fn replace<K: ResourceExt + serde::de::DeserializeOwned>(
    list: &mut Vec<K>,
    name: &str,
    operation: Operation,
    object: Value,
) {
    list.retain(|o| o.name_any() != name);
    if operation == Operation::Apply
        && let Ok(object) = serde_json::from_value(object)
    {
        list.push(object);
    }
}

/// The backend plan of a change from `current` to `new`.
///
/// This is where the model crate's functions plug in: the desired backend
/// objects of `new` against those of `current`, as the operators compute
/// them. Until they exist, the plan says it is not computed, and the
/// Kubernetes changes (each dry-run by the apiserver) are the whole answer.
pub fn backend_plan(current: &TenantObjects, new: &TenantObjects) -> BackendPlan {
    let _ = (current, new);
    BackendPlan {
        computed: false,
        note: Some(
            "the backend objects the operators would create, change or remove are not computed yet; the Kubernetes objects above are each the apiserver's own dry run".into(),
        ),
        changes: Vec::new(),
    }
}
