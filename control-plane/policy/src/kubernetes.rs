//! What a role's permissions become in Kubernetes RBAC on Ossature's own
//! kinds, so the RBAC the Scope controller writes allows what decisions
//! allow through kubectl, and nothing more.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::roles::Permission;

/// Verbs on one resource of the `ossature.dev` API group.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRule {
    /// The plural, as RBAC names it: `scopes`.
    pub resource: &'static str,
    pub verbs: Vec<&'static str>,
}

/// Catalog resources that are objects of the API group, or parts of them:
/// a Scope's grants and group mappings are `scopes/grants` and
/// `scopes/groupmappings`, subresources no one serves but RBAC names, so
/// that the admission policy of Scopes can ask who may change them.
const KINDS: &[(&str, &str)] = &[
    ("scope", "scopes"),
    ("grant", GRANTS),
    ("groupMapping", GROUP_MAPPINGS),
    ("environment", "environments"),
    ("certificate", "certificates"),
    ("topic", "topics"),
    ("serviceIdentity", "serviceidentities"),
    ("workload", "workloads"),
];

/// What RBAC calls a Scope's grants.
pub const GRANTS: &str = "scopes/grants";
/// What RBAC calls a Scope's group mappings.
pub const GROUP_MAPPINGS: &str = "scopes/groupmappings";

/// The verbs of an action. `create` is left out: RBAC cannot limit it to
/// the names of a subtree, so objects are created through the control
/// plane. Actions with no verb of their own (`renew`, `rotateCredentials`)
/// are the control plane's only.
fn verbs(resource: &str, action: &str) -> &'static [&'static str] {
    match action {
        // Granting and revoking change the Scope's lists.
        "create" | "delete" if resource == GRANTS || resource == GROUP_MAPPINGS => {
            &["update", "patch"]
        }
        "read" if resource == GRANTS || resource == GROUP_MAPPINGS => &[],
        "read" => &["get", "list", "watch"],
        "update" | "move" => &["update", "patch"],
        "delete" => &["delete"],
        _ => &[],
    }
}

/// The RBAC rules of a set of permissions, one per kind, verbs in the order
/// Kubernetes lists them.
pub fn kubernetes_rules(permissions: &[Permission]) -> Vec<KubernetesRule> {
    const ORDER: &[&str] = &["get", "list", "watch", "update", "patch", "delete"];
    let mut by_kind: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
    for permission in permissions {
        let Some((_, plural)) = KINDS.iter().find(|(r, _)| *r == permission.resource) else {
            continue;
        };
        let verbs = verbs(plural, &permission.action);
        if !verbs.is_empty() {
            by_kind.entry(plural).or_default().extend(verbs);
        }
    }
    by_kind
        .into_iter()
        .map(|(resource, verbs)| KubernetesRule {
            resource,
            verbs: ORDER
                .iter()
                .copied()
                .filter(|v| verbs.contains(v))
                .collect(),
        })
        .collect()
}

/// The rules on a tenant's Scopes of `role` (standard, or one of
/// `roles`, whose own policies are among `policies`): what the Scope
/// controller grants in a scope's subtree; for a role that is unknown or
/// invalid, why.
pub fn scope_rules(
    policies: &[crate::Policy],
    roles: &[crate::Role],
    role: &str,
) -> Result<Vec<KubernetesRule>, String> {
    let permissions: Vec<Permission> = crate::roles::permissions_of(policies, roles, role)?
        .iter()
        .flat_map(|r| r.actions.iter().map(|a| Permission::new(&r.resource, a)))
        .collect();
    Ok(kubernetes_rules(&permissions)
        .into_iter()
        .filter(|r| r.resource.starts_with("scopes"))
        .collect())
}

/// The rules on scopes of each of a tenant's own roles that resolves, as
/// the Scope controller grants them: what the model's tree and plans take
/// as `role_rules`.
pub fn own_scope_rules<'a>(
    tenant_roles: impl IntoIterator<Item = &'a ossature_crds::TenantRole>,
) -> BTreeMap<String, Vec<ossature_model::scopes::ScopeRule>> {
    let (policies, roles) = crate::from_tenant_roles(tenant_roles);
    roles
        .iter()
        .filter_map(|role| {
            let rules = scope_rules(&policies, &roles, &role.name).ok()?;
            let rules = rules
                .iter()
                .map(|r| ossature_model::scopes::ScopeRule::new(r.resource, &r.verbs))
                .collect();
            Some((role.name.clone(), rules))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Authorizer;

    fn scope_verbs(role: &str) -> Vec<&'static str> {
        let authorizer = Authorizer::new().unwrap();
        let answer = authorizer.role_permissions("acme", &[role.to_string()]);
        kubernetes_rules(&answer.roles[0].permissions)
            .into_iter()
            .find(|r| r.resource == "scopes")
            .map(|r| r.verbs)
            .unwrap_or_default()
    }

    /// The verbs the Scope controller grants on scopes today, per role.
    #[test]
    fn standard_roles_keep_todays_verbs_on_scopes() {
        assert_eq!(scope_verbs("Viewer"), vec!["get", "list", "watch"]);
        assert_eq!(
            scope_verbs("Editor"),
            vec!["get", "list", "watch", "update", "patch"]
        );
        assert_eq!(
            scope_verbs("Admin"),
            vec!["get", "list", "watch", "update", "patch", "delete"]
        );
    }

    #[test]
    fn only_the_groups_own_kinds_and_mapped_actions_become_rules() {
        let rules = kubernetes_rules(&[
            Permission::new("workload", "update"),
            Permission::new("workload", "create"),
            Permission::new("serviceIdentity", "rotateCredentials"),
            Permission::new("tenantSettings", "updateEdge"),
            Permission::new("grant", "create"),
            Permission::new("grant", "read"),
        ]);
        assert_eq!(
            rules,
            vec![
                KubernetesRule {
                    resource: GRANTS,
                    verbs: vec!["update", "patch"],
                },
                KubernetesRule {
                    resource: "workloads",
                    verbs: vec!["update", "patch"],
                },
            ]
        );
    }

    /// A tenant's own roles that resolve give their rules on scopes; one
    /// naming an unknown policy gives none (its grants wait for it).
    #[test]
    fn own_roles_give_their_rules_on_scopes() {
        let role = |name: &str, policies: &[&str]| -> ossature_crds::TenantRole {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "TenantRole",
                "metadata": {"name": name, "namespace": "tn-acme"},
                "spec": {"policies": policies},
            }))
            .unwrap()
        };
        let roles = [
            role("reader", &["scope-reader"]),
            role("broken", &["no-such-policy"]),
        ];
        let rules = own_scope_rules(&roles);
        assert_eq!(rules.keys().collect::<Vec<_>>(), ["reader"], "{rules:?}");
        assert_eq!(
            rules["reader"],
            [ossature_model::scopes::ScopeRule::new(
                "scopes",
                &["get", "list", "watch"]
            )]
        );
    }

    #[test]
    fn only_an_admin_may_change_a_scopes_grants() {
        let rules = |role: &str| scope_rules(&[], &[], role).unwrap();
        let has = |role: &str, resource: &str| rules(role).iter().any(|r| r.resource == resource);
        assert!(has("Admin", GRANTS) && has("Admin", GROUP_MAPPINGS));
        assert!(!has("Editor", GRANTS) && !has("Editor", GROUP_MAPPINGS));
        assert!(!has("Viewer", GRANTS));
        let tenant_role = crate::Role {
            name: "granter".into(),
            description: String::new(),
            policies: vec!["grant-manager".into(), "scope-reader".into()],
        };
        let granter = scope_rules(&[], std::slice::from_ref(&tenant_role), "granter").unwrap();
        assert_eq!(
            granter,
            vec![
                KubernetesRule {
                    resource: "scopes",
                    verbs: vec!["get", "list", "watch"],
                },
                KubernetesRule {
                    resource: GRANTS,
                    verbs: vec!["update", "patch"],
                },
            ]
        );
        let unknown = scope_rules(&[], &[tenant_role], "nobody").unwrap_err();
        assert!(unknown.contains("neither Viewer, Editor, Admin nor a TenantRole"));
    }
}
