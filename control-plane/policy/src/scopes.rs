//! A tenant's Scope objects as authorization data: the tree, and each
//! scope's grants with the meaning `ScopeRole` has always had.

use kube::ResourceExt;
use ossature_crds::{Scope, ScopeRole};

use crate::roles::{ADMIN, EDITOR, VIEWER};
use crate::tenant::{Grant, ScopeNode};

/// The standard role a Scope grant names.
pub fn role_name(role: ScopeRole) -> &'static str {
    match role {
        ScopeRole::Viewer => VIEWER,
        ScopeRole::Editor => EDITOR,
        ScopeRole::Admin => ADMIN,
    }
}

/// The scope tree and grants of one tenant's Scopes (all from its
/// namespace, as the control plane's watch store holds them). Grants keep
/// their order, so reasons name them as `grant #2 of scope eu`, the second
/// entry of that Scope's `spec.grants`.
pub fn from_scopes<'a>(
    scopes: impl IntoIterator<Item = &'a Scope>,
) -> (Vec<ScopeNode>, Vec<Grant>) {
    let mut nodes = Vec::new();
    let mut grants = Vec::new();
    for scope in scopes {
        let name = scope.name_any();
        for grant in &scope.spec.grants {
            grants.push(Grant {
                name: None,
                role: role_name(grant.role).to_string(),
                scope: Some(name.clone()),
                users: grant.users.clone(),
                groups: grant.groups.clone(),
                service_accounts: Vec::new(),
            });
        }
        nodes.push(ScopeNode {
            name,
            parent: scope.spec.parent.clone(),
        });
    }
    (nodes, grants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorizer, Caller, CallerKind, Request, TenantData};

    fn scope(yaml: &str) -> Scope {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn scope_grants_keep_their_meaning() {
        let global = scope(
            r#"{"apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
                "metadata": {"name": "global", "namespace": "tn-acme"},
                "spec": {"displayName": "Global", "grants": [
                    {"role": "Viewer", "groups": ["everyone"]},
                    {"role": "Editor", "users": ["alice"]}]}}"#,
        );
        let eu = scope(
            r#"{"apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
                "metadata": {"name": "eu", "namespace": "tn-acme"},
                "spec": {"displayName": "EU", "parent": "global"}}"#,
        );
        let (scopes, grants) = from_scopes([&global, &eu]);
        assert_eq!(scopes[1].parent.as_deref(), Some("global"));
        assert_eq!(grants.len(), 2);
        let authorizer = Authorizer::new().unwrap();
        let loaded = authorizer
            .set_tenant(
                "acme",
                TenantData {
                    scopes,
                    grants,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(loaded.problems.is_empty(), "{}", loaded.problems);
        let alice = Caller {
            subject: "alice".into(),
            kind: CallerKind::User,
            tenant: Some("acme".into()),
            groups: vec![],
            platform_operator: false,
        };
        let decision = authorizer.decide(&Request {
            caller: alice,
            resource: "scope".into(),
            action: "update".into(),
            tenant: Some("acme".into()),
            scope: Some("eu".into()),
        });
        assert!(decision.allowed, "{}", decision.reason);
        assert!(
            decision
                .reason
                .contains("role Editor in scope global directly (grant #2 of scope global)"),
            "{}",
            decision.reason
        );
    }
}
