//! What other kinds read of a Tenant.

use ossature_crds::{DeletionPolicy, Tenant};

use crate::conditions;

/// Whether a Tenant is Ready in one backend, for the kinds that build on it.
pub fn backend_ready(tenant: &Tenant, condition: &str) -> bool {
    tenant
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, condition))
}

/// Whether a Tenant is being deleted with `deletionPolicy: Retain`: its
/// Environments, Scopes and Certificates then keep what they provisioned too.
pub fn retained(tenant: Option<&Tenant>) -> bool {
    tenant.is_some_and(|t| {
        t.metadata.deletion_timestamp.is_some() && t.spec.deletion_policy == DeletionPolicy::Retain
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(status: serde_json::Value, deleting: bool, policy: &str) -> Tenant {
        let mut metadata = serde_json::json!({"name": "acme"});
        if deleting {
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": metadata,
            "spec": {"type": "Business", "displayName": "Acme", "residency": "eu", "deletionPolicy": policy},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_backend_is_ready_when_its_condition_is_true() {
        let condition = |status: &str| {
            serde_json::json!({"conditions": [{"type": "SecretsReady", "status": status, "reason": "x",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        };
        assert!(backend_ready(
            &tenant(condition("True"), false, "Delete"),
            "SecretsReady"
        ));
        assert!(!backend_ready(
            &tenant(condition("False"), false, "Delete"),
            "SecretsReady"
        ));
        assert!(!backend_ready(
            &tenant(condition("True"), false, "Delete"),
            "RealmReady"
        ));
    }

    #[test]
    fn only_a_retaining_deletion_retains() {
        let status = serde_json::json!({});
        assert!(retained(Some(&tenant(status.clone(), true, "Retain"))));
        assert!(!retained(Some(&tenant(status.clone(), false, "Retain"))));
        assert!(!retained(Some(&tenant(status, true, "Delete"))));
        assert!(!retained(None));
    }
}
