//! A tenant's Scope and TenantRole objects as authorization data: the
//! tree, each scope's grants and group mappings (the standard roles keep
//! the meaning Scope grants always had), and the tenant's own roles.

use kube::ResourceExt;
use ossature_crds::{Scope, TenantRole};

use crate::roles::{Policy, ResourceActions, Role};
use crate::tenant::{Grant, GroupMapping, ScopeNode};

/// The tenant's roles and the policies of their own permissions: a
/// TenantRole's `permissions` are the policy `<role>-own`.
pub fn from_tenant_roles<'a>(
    roles: impl IntoIterator<Item = &'a TenantRole>,
) -> (Vec<Policy>, Vec<Role>) {
    let mut policies = Vec::new();
    let mut bundles = Vec::new();
    for role in roles {
        let name = role.name_any();
        let mut bundled: Vec<String> = role.spec.policies.iter().map(|p| p.0.clone()).collect();
        if !role.spec.permissions.is_empty() {
            let own = own_policy(&name);
            policies.push(Policy {
                name: own.clone(),
                description: format!("the permissions role {name} gives besides its policies"),
                permissions: role
                    .spec
                    .permissions
                    .iter()
                    .map(|p| ResourceActions {
                        resource: p.resource.clone(),
                        actions: p.actions.iter().map(|a| a.0.clone()).collect(),
                    })
                    .collect(),
            });
            bundled.push(own);
        }
        bundles.push(Role {
            name,
            description: role.spec.description.clone(),
            policies: bundled,
        });
    }
    (policies, bundles)
}

/// The policy of a TenantRole's own permissions.
pub fn own_policy(role: &str) -> String {
    format!("{role}-own")
}

/// The group mappings of a tenant's Scopes.
pub fn group_mappings_of<'a>(scopes: impl IntoIterator<Item = &'a Scope>) -> Vec<GroupMapping> {
    scopes
        .into_iter()
        .flat_map(|scope| {
            let name = scope.name_any();
            scope.spec.group_mappings.iter().map(move |m| GroupMapping {
                name: None,
                group: m.group.clone(),
                role: m.role.0.clone(),
                scope: Some(name.clone()),
            })
        })
        .collect()
}

/// How Keycloak names the user of a client's service account:
/// `service-account-<clientId>`. A Scope grant names a service account so.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "service-account-";

/// The scope tree and grants of one tenant's Scopes (all from its
/// namespace, as the control plane's watch store holds them). Grants keep
/// their order, so reasons name them as `grant #2 of scope eu`, the second
/// entry of that Scope's `spec.grants`. A user named as Keycloak names a
/// service account's user (`service-account-<clientId>`) is that service
/// account: the grant goes to the client id, as service callers present it.
/// When one scope holds all others (a single top scope, such as `global`),
/// its grants also apply at the tenant's root: its Admin manages the
/// tenant's settings, its Viewer reads the tenant.
pub fn from_scopes<'a>(
    scopes: impl IntoIterator<Item = &'a Scope>,
) -> (Vec<ScopeNode>, Vec<Grant>) {
    let mut nodes = Vec::new();
    let mut grants = Vec::new();
    for scope in scopes {
        let name = scope.name_any();
        for grant in &scope.spec.grants {
            let (service_accounts, users): (Vec<&String>, Vec<&String>) = grant
                .users
                .iter()
                .partition(|u| u.starts_with(SERVICE_ACCOUNT_USER_PREFIX));
            grants.push(Grant {
                name: None,
                role: grant.role.0.clone(),
                scope: Some(name.clone()),
                users: users.into_iter().cloned().collect(),
                groups: grant.groups.clone(),
                service_accounts: service_accounts
                    .into_iter()
                    .map(|u| u[SERVICE_ACCOUNT_USER_PREFIX.len()..].to_string())
                    .collect(),
            });
        }
        nodes.push(ScopeNode {
            name,
            parent: scope.spec.parent.clone(),
        });
    }
    // One top scope holds every scope of the tenant: it stands for the
    // tenant, so its grants also apply at the root (to the tenant's own
    // resources). With several top scopes none does.
    let mut tops = nodes.iter().filter(|n| n.parent.is_none());
    if let (Some(top), None) = (tops.next(), tops.next()) {
        let of_top: Vec<Grant> = grants
            .iter()
            .filter(|g| g.scope.as_deref() == Some(top.name.as_str()))
            .enumerate()
            .map(|(i, g)| Grant {
                name: Some(format!(
                    "#{} of scope {}, which holds every scope",
                    i + 1,
                    top.name
                )),
                scope: None,
                ..g.clone()
            })
            .collect();
        grants.extend(of_top);
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
                    {"role": "Editor", "users": ["alice"]},
                    {"role": "Viewer", "users": ["service-account-acme.prod.console"]}]}}"#,
        );
        let eu = scope(
            r#"{"apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
                "metadata": {"name": "eu", "namespace": "tn-acme"},
                "spec": {"displayName": "EU", "parent": "global"}}"#,
        );
        let (scopes, grants) = from_scopes([&global, &eu]);
        assert_eq!(scopes[1].parent.as_deref(), Some("global"));
        // Three grants of global, and again at the root: global holds every scope.
        assert_eq!(grants.len(), 6);
        assert_eq!(grants[2].service_accounts, ["acme.prod.console"]);
        assert!(grants[2].users.is_empty());
        assert_eq!(grants[3].scope, None);
        assert_eq!(
            grants[3].name.as_deref(),
            Some("#1 of scope global, which holds every scope")
        );
        let authorizer = Authorizer::new().unwrap();
        let load = |(scopes, grants)| {
            let data = TenantData {
                scopes,
                grants,
                ..Default::default()
            };
            let loaded = authorizer.set_tenant("acme", data).unwrap();
            assert!(loaded.problems.is_empty(), "{}", loaded.problems);
        };
        load((scopes, grants));
        let ask = |subject: &str, kind, resource: &str, action: &str, scope: Option<&str>| {
            authorizer.decide(&Request {
                caller: Caller {
                    subject: subject.into(),
                    kind,
                    tenant: Some("acme".into()),
                    groups: vec![],
                    platform_operator: false,
                },
                resource: resource.into(),
                action: action.into(),
                tenant: Some("acme".into()),
                scope: scope.map(String::from),
            })
        };
        let decision = ask("alice", CallerKind::User, "scope", "update", Some("eu"));
        assert!(decision.allowed, "{}", decision.reason);
        assert!(
            decision
                .reason
                .contains("role Editor in scope global directly (grant #2 of scope global)"),
            "{}",
            decision.reason
        );
        let console = "acme.prod.console";
        let read = ask(
            console,
            CallerKind::ServiceAccount,
            "scope",
            "read",
            Some("eu"),
        );
        assert!(read.allowed, "{}", read.reason);
        assert!(
            read.reason
                .starts_with("allowed: service account acme.prod.console holds role Viewer"),
            "{}",
            read.reason
        );
        // Global holds every scope: its grants apply at the tenant's root.
        let whole = ask(console, CallerKind::ServiceAccount, "tenant", "read", None);
        assert!(whole.allowed, "{}", whole.reason);
        assert!(
            whole.reason.contains(
                "at the tenant's root directly (grant \"#3 of scope global, which holds every scope\")"
            ),
            "{}",
            whole.reason
        );
        // A second top scope: global no longer holds the whole tenant.
        let us = scope(
            r#"{"apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
                "metadata": {"name": "us", "namespace": "tn-acme"},
                "spec": {"displayName": "US"}}"#,
        );
        let split_tree = from_scopes([&global, &eu, &us]);
        assert_eq!(split_tree.1.len(), 3);
        load(split_tree);
        let split = ask(console, CallerKind::ServiceAccount, "tenant", "read", None);
        assert!(!split.allowed, "{}", split.reason);
    }
}
