//! The scope tree of one tenant: paths, descendants, and the faults admission
//! cannot see (a missing parent, a cycle through several scopes).

use std::collections::{BTreeMap, BTreeSet};

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
}
