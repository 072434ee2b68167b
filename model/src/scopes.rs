//! The scope tree of one tenant: paths, descendants, and the faults admission
//! cannot see (a missing parent, a cycle through several scopes).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Resource, ResourceExt};
use ossature_crds::Scope;
use serde_json::json;

use crate::names::{MANAGED_BY, SCOPE_LABEL};

/// Why a scope has no place in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeFault {
    MissingParent { parent: String },
    Cycle { through: Vec<String> },
}

impl TreeFault {
    pub fn reason(&self) -> &'static str {
        match self {
            TreeFault::MissingParent { .. } => "ParentNotFound",
            TreeFault::Cycle { .. } => "ParentCycle",
        }
    }

    pub fn message(&self, scope: &str) -> String {
        match self {
            TreeFault::MissingParent { parent } => {
                format!(
                    "scope {scope} names parent {parent}, which does not exist in this tenant; create it or change spec.parent"
                )
            }
            TreeFault::Cycle { through } => format!(
                "scope {scope} is in a cycle of parents ({}); one of them must be a root (no spec.parent)",
                through.join(" -> ")
            ),
        }
    }
}

/// Scopes of one namespace: name -> parent.
#[derive(Debug, Clone, Default)]
pub struct ScopeTree {
    parents: BTreeMap<String, Option<String>>,
}

impl ScopeTree {
    pub fn new(parents: impl IntoIterator<Item = (String, Option<String>)>) -> Self {
        Self {
            parents: parents.into_iter().collect(),
        }
    }

    /// Names from the root down to `scope`, e.g. `["global", "eu", "france"]`.
    pub fn path(&self, scope: &str) -> Result<Vec<String>, TreeFault> {
        let mut chain = vec![scope.to_string()];
        let mut seen = BTreeSet::from([scope.to_string()]);
        let mut current = scope.to_string();
        while let Some(Some(parent)) = self.parents.get(&current) {
            if !self.parents.contains_key(parent) {
                return Err(TreeFault::MissingParent {
                    parent: parent.clone(),
                });
            }
            if !seen.insert(parent.clone()) {
                chain.push(parent.clone());
                chain.reverse();
                return Err(TreeFault::Cycle { through: chain });
            }
            chain.push(parent.clone());
            current = parent.clone();
        }
        chain.reverse();
        Ok(chain)
    }

    /// `scope` and every scope below it that has a valid path.
    pub fn subtree(&self, scope: &str) -> Vec<String> {
        self.parents
            .keys()
            .filter(|name| {
                self.path(name)
                    .is_ok_and(|path| path.iter().any(|p| p == scope))
            })
            .cloned()
            .collect()
    }
}

/// The path carried in tokens: `/global/eu/france`.
pub fn path_string(path: &[String]) -> String {
    format!("/{}", path.join("/"))
}

/// A path as its segments: `/global/eu` is `[global, eu]`.
pub fn split_path(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(String::from)
        .collect()
}

fn role_name(scope: &str, role: &str) -> String {
    format!("ossature-scope-{scope}-{}", role.to_lowercase())
}

/// Verbs a role gives on one resource of the `ossature.dev` group in a
/// scope's subtree: `scopes`, or a Scope's `scopes/grants` and
/// `scopes/groupmappings`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScopeRule {
    pub resource: String,
    pub verbs: Vec<String>,
}

impl ScopeRule {
    pub fn new(resource: &str, verbs: &[&str]) -> Self {
        ScopeRule {
            resource: resource.to_string(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }
}

/// The rules of a standard role (the policy crate derives the same from its
/// catalog; a test of the control plane keeps them equal): `Viewer` reads, `Editor` also
/// changes, `Admin` also deletes and changes grants and group mappings.
pub fn standard_scope_rules(role: &str) -> Option<Vec<ScopeRule>> {
    const READ: &[&str] = &["get", "list", "watch"];
    const EDIT: &[&str] = &["get", "list", "watch", "update", "patch"];
    const ADMIN: &[&str] = &["get", "list", "watch", "update", "patch", "delete"];
    const CHANGE: &[&str] = &["update", "patch"];
    Some(match role {
        "Viewer" => vec![ScopeRule::new("scopes", READ)],
        "Editor" => vec![ScopeRule::new("scopes", EDIT)],
        "Admin" => vec![
            ScopeRule::new("scopes", ADMIN),
            ScopeRule::new("scopes/grants", CHANGE),
            ScopeRule::new("scopes/groupmappings", CHANGE),
        ],
        _ => return None,
    })
}

/// Roles and bindings of one scope: one pair per granted role (by grants
/// or group mappings), naming the scope and every descendant, so a grant
/// cascades down the tree. `rules_of` gives a role's rules, or why it has
/// none (an unknown or invalid role): its grants then give nothing, and the
/// reasons come back.
pub fn rbac_objects(
    namespace: &str,
    scope: &Scope,
    subtree: &[String],
    rules_of: &dyn Fn(&str) -> Result<Vec<ScopeRule>, String>,
) -> (Vec<(Role, RoleBinding)>, Vec<String>) {
    let name = scope.name_any();
    let group = |name: &str| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name});
    let mut subjects: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for grant in &scope.spec.grants {
        let entry = subjects.entry(grant.role.as_str()).or_default();
        entry.extend(grant.groups.iter().map(|g| group(g)));
        for user in &grant.users {
            entry.push(
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}),
            );
        }
    }
    for mapping in &scope.spec.group_mappings {
        subjects
            .entry(mapping.role.as_str())
            .or_default()
            .push(group(&mapping.group));
    }
    let owner = scope.controller_owner_ref(&());
    let mut problems = Vec::new();
    let mut objects = Vec::new();
    for (role, subjects) in subjects {
        let rules = match rules_of(role) {
            Ok(rules) if !rules.is_empty() => rules,
            Ok(_) => continue,
            Err(why) => {
                problems.push(why);
                continue;
            }
        };
        let object_name = role_name(&name, role);
        let metadata = json!({
            "name": object_name,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, SCOPE_LABEL: name},
            "ownerReferences": owner.iter().collect::<Vec<_>>(),
        });
        let rules: Vec<serde_json::Value> = rules
            .iter()
            .map(|r| json!({"apiGroups": ["ossature.dev"], "resources": [r.resource], "resourceNames": subtree, "verbs": r.verbs}))
            .collect();
        let role_object: Role = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": metadata,
            "rules": rules,
        }))
        .expect("literal Role is valid");
        let binding: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": object_name},
            "subjects": subjects,
        }))
        .expect("literal RoleBinding is valid");
        objects.push((role_object, binding));
    }
    (objects, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(edges: &[(&str, Option<&str>)]) -> ScopeTree {
        ScopeTree::new(
            edges
                .iter()
                .map(|(n, p)| (n.to_string(), p.map(String::from))),
        )
    }

    #[test]
    fn paths_run_from_the_root() {
        let t = tree(&[
            ("global", None),
            ("eu", Some("global")),
            ("france", Some("eu")),
            ("us", Some("global")),
        ]);
        assert_eq!(t.path("france").unwrap(), vec!["global", "eu", "france"]);
        assert_eq!(path_string(&t.path("us").unwrap()), "/global/us");
        assert_eq!(t.subtree("eu"), vec!["eu", "france"]);
        assert_eq!(t.subtree("global").len(), 4);
    }

    #[test]
    fn a_missing_parent_and_a_cycle_are_faults_with_reasons() {
        let t = tree(&[
            ("a", Some("b")),
            ("b", Some("c")),
            ("c", Some("a")),
            ("x", Some("nowhere")),
        ]);
        let cycle = t.path("a").unwrap_err();
        assert_eq!(cycle.reason(), "ParentCycle");
        assert!(
            cycle.message("a").contains("(a -> c -> b -> a)"),
            "{}",
            cycle.message("a")
        );
        let missing = t.path("x").unwrap_err();
        assert_eq!(
            missing,
            TreeFault::MissingParent {
                parent: "nowhere".into()
            }
        );
        assert!(missing.message("x").contains("parent nowhere"));
        assert!(
            t.subtree("a").is_empty(),
            "scopes in a cycle are in no subtree"
        );
    }

    #[test]
    fn grants_become_one_role_per_granted_role_covering_the_subtree() {
        let scope: Scope = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu", "namespace": "tn-acme", "uid": "u-1"},
            "spec": {"displayName": "EU", "parent": "global", "grants": [
                {"role": "Editor", "groups": ["eu-team"]},
                {"role": "Editor", "users": ["alice"]},
                {"role": "Viewer", "groups": ["auditors"]},
            ]},
        }))
        .unwrap();
        let standard = |role: &str| standard_scope_rules(role).ok_or(format!("no role {role}"));
        let (objects, problems) = rbac_objects(
            "tn-acme",
            &scope,
            &["eu".into(), "france".into()],
            &standard,
        );
        assert!(problems.is_empty());
        assert_eq!(objects.len(), 2);
        let (role, binding) = &objects[0];
        assert_eq!(
            role.metadata.name.as_deref(),
            Some("ossature-scope-eu-editor")
        );
        let rule = &role.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.resource_names.as_ref().unwrap(),
            &vec!["eu".to_string(), "france".to_string()]
        );
        assert!(
            rule.verbs.contains(&"patch".to_string())
                && !rule.verbs.contains(&"delete".to_string())
        );
        let subjects = binding.subjects.as_ref().unwrap();
        assert_eq!(
            subjects.len(),
            2,
            "both Editor grants merge into one binding"
        );
        assert_eq!(
            objects[1].0.metadata.name.as_deref(),
            Some("ossature-scope-eu-viewer")
        );
        assert_eq!(
            role.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
    }

    #[test]
    fn group_mappings_bind_groups_and_unknown_roles_give_nothing_with_a_reason() {
        let scope: Scope = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu", "namespace": "tn-acme"},
            "spec": {"displayName": "EU",
                "grants": [{"role": "deployer", "users": ["bob"]}, {"role": "nobody", "users": ["eve"]}],
                "groupMappings": [{"group": "idp-admins", "role": "Admin"}, {"group": "idp-ops", "role": "deployer"}]},
        }))
        .unwrap();
        let rules_of = |role: &str| match role {
            "deployer" => Ok(vec![ScopeRule::new("scopes", &["get"])]),
            other => standard_scope_rules(other).ok_or(format!("no role {other}")),
        };
        let (objects, problems) = rbac_objects("tn-acme", &scope, &["eu".into()], &rules_of);
        assert_eq!(problems, ["no role nobody"]);
        let names: Vec<_> = objects
            .iter()
            .map(|(r, _)| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["ossature-scope-eu-admin", "ossature-scope-eu-deployer"]
        );
        let admin_rules = objects[0].0.rules.as_ref().unwrap();
        assert_eq!(
            admin_rules.len(),
            3,
            "scopes, their grants and group mappings"
        );
        let deployer = objects[1].1.subjects.as_ref().unwrap();
        assert_eq!(deployer.len(), 2, "bob, and the group idp-ops");
        assert!(
            deployer
                .iter()
                .any(|s| s.kind == "Group" && s.name == "idp-ops")
        );
    }
}
