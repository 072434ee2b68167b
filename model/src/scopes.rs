//! The scope tree of one tenant: paths, descendants, and the faults admission
//! cannot see (a missing parent, a cycle through several scopes).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Resource, ResourceExt};
use ossature_crds::{Scope, ScopeRole};
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

fn role_name(scope: &str, role: ScopeRole) -> String {
    format!(
        "ossature-scope-{scope}-{}",
        format!("{role:?}").to_lowercase()
    )
}

fn verbs(role: ScopeRole) -> Vec<&'static str> {
    match role {
        ScopeRole::Viewer => vec!["get", "list", "watch"],
        ScopeRole::Editor => vec!["get", "list", "watch", "update", "patch"],
        ScopeRole::Admin => vec!["get", "list", "watch", "update", "patch", "delete"],
    }
}

/// Roles and bindings of one scope: one pair per granted role, naming the
/// scope and every descendant, so a grant cascades down the tree.
pub fn rbac_objects(
    namespace: &str,
    scope: &Scope,
    subtree: &[String],
) -> Vec<(Role, RoleBinding)> {
    let name = scope.name_any();
    let mut subjects: BTreeMap<ScopeRole, Vec<serde_json::Value>> = BTreeMap::new();
    for grant in &scope.spec.grants {
        let entry = subjects.entry(grant.role).or_default();
        for group in &grant.groups {
            entry.push(
                json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}),
            );
        }
        for user in &grant.users {
            entry.push(
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}),
            );
        }
    }
    let owner = scope.controller_owner_ref(&());
    subjects
        .into_iter()
        .map(|(role, subjects)| {
            let object_name = role_name(&name, role);
            let metadata = json!({
                "name": object_name,
                "namespace": namespace,
                "labels": {MANAGED_BY.0: MANAGED_BY.1, SCOPE_LABEL: name},
                "ownerReferences": owner.iter().collect::<Vec<_>>(),
            });
            let role_object: Role = serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": metadata,
                "rules": [{"apiGroups": ["ossature.dev"], "resources": ["scopes"], "resourceNames": subtree, "verbs": verbs(role)}],
            }))
            .expect("literal Role is valid");
            let binding: RoleBinding = serde_json::from_value(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": object_name},
                "subjects": subjects,
            }))
            .expect("literal RoleBinding is valid");
            (role_object, binding)
        })
        .collect()
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
        let objects = rbac_objects("tn-acme", &scope, &["eu".into(), "france".into()]);
        assert_eq!(objects.len(), 2);
        let (role, binding) = &objects[1];
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
            objects[0].0.metadata.name.as_deref(),
            Some("ossature-scope-eu-viewer")
        );
        assert_eq!(
            role.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
    }
}
