//! A tenant's authorization data (its scope tree, its own policies and
//! roles, grants and identity-provider group mappings), its checks, and the
//! index decisions read: bindings by subject and scope, ancestors by scope.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::problems::{Invalid, Problems};
use crate::roles::{self, DNS_LABEL_RULE, Policy, Resolved, Role, is_dns_label};

/// Everything the decisions of one tenant depend on, as the control plane
/// gathers it from its watches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantData {
    /// The tenant's scope tree; scopes without a parent sit below the
    /// tenant itself, the root.
    #[serde(default)]
    pub scopes: Vec<ScopeNode>,
    /// The tenant's own policies (the standard ones are always there).
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// The tenant's own roles (`Viewer`, `Editor` and `Admin` are always there).
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub group_mappings: Vec<GroupMapping>,
}

/// A scope, by name, under its parent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeNode {
    pub name: String,
    /// Left out for a scope right below the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// A role given to users, groups and service accounts in a scope and every
/// scope below it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// Shown in reasons; without it a grant is named by its place, such as
    /// `grant #2 of scope eu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: String,
    /// Left out for the tenant's root: the grant then applies everywhere in
    /// the tenant, and to its tenant-level resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

/// A group of the tenant's identity provider given a role in a scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The group as tokens carry it.
    pub group: String,
    pub role: String,
    /// Left out for the tenant's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Bounds that keep one tenant's data, and its decisions, small.
pub const MAX_SCOPES: usize = 10_000;
pub const MAX_GRANTS: usize = 10_000;
pub const MAX_GROUP_MAPPINGS: usize = 1_000;
pub const MAX_SUBJECTS_PER_GRANT: usize = 256;
const MAX_SUBJECT: usize = 256;
const MAX_LABEL: usize = 253;

impl TenantData {
    /// Checks everything, for data a caller submits: all problems at once.
    pub fn validate(&self) -> Result<(), Invalid> {
        let (_, problems) = TenantIndex::build("check", self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Invalid(problems))
        }
    }
}

/// Where a scope is: its ancestors, itself first and the root (`""`) last;
/// or why it has no place in the tree.
type Placement = Result<Vec<String>, Fault>;

#[derive(Clone, Debug)]
enum Fault {
    /// `origin` names `parent`, which is not a scope of the tenant.
    MissingParent { origin: String, parent: String },
    /// Parents that lead back to themselves.
    Cycle { cycle: Vec<String> },
}

impl Fault {
    fn message(&self, scope: &str) -> String {
        match self {
            Fault::MissingParent { origin, parent } if origin == scope => format!(
                "scope {scope} names parent {parent}, which is not a scope of the tenant; create it or change the parent"
            ),
            Fault::MissingParent { origin, parent } => format!(
                "scope {scope} is below scope {origin}, which names parent {parent}, which is not a scope of the tenant"
            ),
            Fault::Cycle { cycle } => {
                let (place, fix) = if cycle.iter().any(|s| s == scope) {
                    ("in", "; one of them must have no parent")
                } else {
                    ("below", "")
                };
                format!(
                    "scope {scope} is {place} a cycle of parents ({}){fix}",
                    cycle.join(" -> ")
                )
            }
        }
    }
}

/// One role a subject holds in one scope, as decisions read it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub role: String,
    /// The grant or mapping, in words.
    pub grant: String,
    /// How the subject holds it: `directly`, `through group eu-team`, ...
    pub via: String,
}

/// What decisions read of one tenant, prepared when its data changes so a
/// decision only looks up the caller's keys in the requested scope's
/// ancestors.
#[derive(Serialize, Clone, Debug, Default)]
pub(crate) struct TenantIndex {
    pub name: String,
    /// Ancestors by scope, the scope itself first and the root (`""`) last.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// Scopes with no place in the tree, and why.
    pub detached: BTreeMap<String, String>,
    /// `user:<name>`, `serviceAccount:<name>` or `group:<name>` -> scope -> bindings.
    pub bindings: BTreeMap<String, BTreeMap<String, Vec<Binding>>>,
    /// Role -> resource -> action -> policies that give it; the decisions'
    /// document gets them apart, shared when they are the standard ones.
    #[serde(skip)]
    pub roles: Resolved,
    /// Number of (subject, role, scope) bindings indexed.
    #[serde(skip)]
    pub binding_count: usize,
}

impl TenantIndex {
    /// Indexes every valid part of `data`; what is invalid is left out (so
    /// it grants nothing) and described in the problems.
    pub fn build(tenant: &str, data: &TenantData) -> (Self, Problems) {
        let mut problems = Problems::default();
        let roles = roles::resolve(&data.policies, &data.roles, &mut problems);
        let (scopes, detached) = place_scopes(&data.scopes, &mut problems);
        let mut index = TenantIndex {
            name: tenant.to_string(),
            scopes,
            detached,
            roles,
            ..Default::default()
        };
        index.add_grants(&data.grants, &mut problems);
        index.add_group_mappings(&data.group_mappings, &mut problems);
        (index, problems)
    }

    fn scope_known(&self, scope: &Option<String>) -> bool {
        scope
            .as_ref()
            .is_none_or(|s| self.scopes.contains_key(s) || self.detached.contains_key(s))
    }

    fn check_role_and_scope(
        &self,
        role: &str,
        scope: &Option<String>,
        at: &str,
        problems: &mut Problems,
    ) -> bool {
        let mut ok = true;
        if !self.roles.contains_key(role) {
            problems.push(
                format!("{at}.role"),
                format!(
                    "role {role:?} is not a role of the tenant; roles: {}",
                    self.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            ok = false;
        }
        if !self.scope_known(scope) {
            problems.push(
                format!("{at}.scope"),
                format!(
                    "scope {:?} is not a scope of the tenant; name one, or leave scope out for the tenant's root",
                    scope.as_deref().unwrap_or_default()
                ),
            );
            ok = false;
        }
        ok
    }

    fn bind(&mut self, key: String, scope: &Option<String>, binding: Binding) {
        self.bindings
            .entry(key)
            .or_default()
            .entry(scope.clone().unwrap_or_default())
            .or_default()
            .push(binding);
        self.binding_count += 1;
    }

    fn add_grants(&mut self, grants: &[Grant], problems: &mut Problems) {
        let grants = problems.at_most(
            "grants",
            grants,
            MAX_GRANTS,
            "grant roles to groups instead of to each user",
        );
        let mut per_scope: BTreeMap<&Option<String>, usize> = BTreeMap::new();
        for (i, grant) in grants.iter().enumerate() {
            let at = format!("grants[{i}]");
            let place = per_scope.entry(&grant.scope).or_default();
            *place += 1;
            let label = match &grant.name {
                Some(name) => format!("grant {name:?}"),
                None => format!("grant #{place} {}", of_scope(&grant.scope)),
            };
            let named_ok = check_label(&grant.name, &at, problems);
            if !self.check_role_and_scope(&grant.role, &grant.scope, &at, problems) || !named_ok {
                continue;
            }
            let count = grant.users.len() + grant.groups.len() + grant.service_accounts.len();
            if count == 0 {
                problems.push(
                    at.clone(),
                    "a grant names at least one user, group or service account",
                );
            }
            if count > MAX_SUBJECTS_PER_GRANT {
                problems.push(
                    at.clone(),
                    format!(
                        "a grant names at most {MAX_SUBJECTS_PER_GRANT} subjects, not {count}; grant to a group, or split it"
                    ),
                );
                continue;
            }
            for (field, kind, subjects) in [
                ("users", "user", &grant.users),
                ("groups", "group", &grant.groups),
                ("serviceAccounts", "serviceAccount", &grant.service_accounts),
            ] {
                for (j, subject) in subjects.iter().enumerate() {
                    if !check_subject(subject, &format!("{at}.{field}[{j}]"), problems) {
                        continue;
                    }
                    let via = if kind == "group" {
                        format!("through group {subject}")
                    } else {
                        "directly".to_string()
                    };
                    self.bind(
                        format!("{kind}:{subject}"),
                        &grant.scope,
                        Binding {
                            role: grant.role.clone(),
                            grant: label.clone(),
                            via,
                        },
                    );
                }
            }
        }
    }

    fn add_group_mappings(&mut self, mappings: &[GroupMapping], problems: &mut Problems) {
        let mappings = problems.at_most(
            "groupMappings",
            mappings,
            MAX_GROUP_MAPPINGS,
            "map a few broad groups rather than many narrow ones",
        );
        for (i, mapping) in mappings.iter().enumerate() {
            let at = format!("groupMappings[{i}]");
            let named_ok = check_label(&mapping.name, &at, problems);
            let subject_ok = check_subject(&mapping.group, &format!("{at}.group"), problems);
            if !self.check_role_and_scope(&mapping.role, &mapping.scope, &at, problems)
                || !named_ok
                || !subject_ok
            {
                continue;
            }
            let label = match &mapping.name {
                Some(name) => format!("mapping {name:?}"),
                None => format!("group mapping #{}", i + 1),
            };
            self.bind(
                format!("group:{}", mapping.group),
                &mapping.scope,
                Binding {
                    role: mapping.role.clone(),
                    grant: label,
                    via: format!("through identity provider group {}", mapping.group),
                },
            );
        }
    }
}

/// `of scope eu`, or `at the tenant's root`.
fn of_scope(scope: &Option<String>) -> String {
    match scope {
        Some(scope) => format!("of scope {scope}"),
        None => "at the tenant's root".to_string(),
    }
}

fn check_label(name: &Option<String>, at: &str, problems: &mut Problems) -> bool {
    let Some(name) = name else { return true };
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_LABEL
        && !name.chars().any(char::is_control);
    if !ok {
        problems.push(
            format!("{at}.name"),
            format!(
                "a name has 1 to {MAX_LABEL} characters and no control characters; leave it out to name it by its place"
            ),
        );
    }
    ok
}

fn check_subject(subject: &str, at: &str, problems: &mut Problems) -> bool {
    let ok = !subject.is_empty()
        && subject.chars().count() <= MAX_SUBJECT
        && !subject.chars().any(char::is_control);
    if !ok {
        problems.push(
            at,
            format!(
                "{subject:?} is not a subject: a user, group or service account is named as tokens carry it, 1 to {MAX_SUBJECT} characters, no control characters"
            ),
        );
    }
    ok
}

/// Places every scope in the tree: its ancestors, or why it has no place.
fn place_scopes(
    nodes: &[ScopeNode],
    problems: &mut Problems,
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let nodes = problems.at_most("scopes", nodes, MAX_SCOPES, "merge some");
    let mut parents: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut positions: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let at = format!("scopes[{i}]");
        if !is_dns_label(&node.name) {
            problems.push(
                format!("{at}.name"),
                format!("scope name {:?} must be {DNS_LABEL_RULE}", node.name),
            );
            continue;
        }
        if parents.contains_key(node.name.as_str()) {
            problems.push(
                format!("{at}.name"),
                format!("scope {} is listed twice; keep one", node.name),
            );
            continue;
        }
        parents.insert(&node.name, node.parent.as_deref());
        positions.insert(&node.name, i);
    }

    let mut placed: BTreeMap<&str, Placement> = BTreeMap::new();
    for &scope in parents.keys() {
        place(scope, &parents, &mut placed);
    }
    let mut ancestors = BTreeMap::new();
    let mut detached = BTreeMap::new();
    for (scope, placement) in placed {
        match placement {
            Ok(chain) => {
                ancestors.insert(scope.to_string(), chain);
            }
            Err(fault) => {
                let message = fault.message(scope);
                problems.push(format!("scopes[{}].parent", positions[scope]), &message);
                detached.insert(scope.to_string(), message);
            }
        }
    }
    (ancestors, detached)
}

/// Walks up from `scope` to the first scope already placed, or the root, or
/// a fault, and places every scope on the way.
fn place<'a>(
    scope: &'a str,
    parents: &BTreeMap<&'a str, Option<&'a str>>,
    placed: &mut BTreeMap<&'a str, Placement>,
) {
    let mut chain: Vec<&str> = Vec::new();
    let mut on_chain: BTreeSet<&str> = BTreeSet::new();
    let mut current = scope;
    let above: Placement = loop {
        if let Some(known) = placed.get(current) {
            break known.clone();
        }
        if !on_chain.insert(current) {
            let start = chain.iter().position(|s| *s == current).unwrap_or(0);
            let mut cycle: Vec<String> = chain[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(current.to_string());
            // The scopes of the cycle are placed as in it; those below it
            // are placed as below it by the fill that follows.
            let fault = Fault::Cycle { cycle };
            for s in chain.drain(start..) {
                placed.insert(s, Err(fault.clone()));
            }
            break Err(fault);
        }
        chain.push(current);
        match parents.get(current).copied().flatten() {
            None => break Ok(vec![String::new()]),
            Some(parent) if !parents.contains_key(parent) => {
                break Err(Fault::MissingParent {
                    origin: current.to_string(),
                    parent: parent.to_string(),
                });
            }
            Some(parent) => current = parent,
        }
    };
    let mut above = above;
    for s in chain.into_iter().rev() {
        above = above.map(|mut chain| {
            chain.insert(0, s.to_string());
            chain
        });
        placed.insert(s, above.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(edges: &[(&str, Option<&str>)]) -> Vec<ScopeNode> {
        edges
            .iter()
            .map(|(n, p)| ScopeNode {
                name: n.to_string(),
                parent: p.map(String::from),
            })
            .collect()
    }

    #[test]
    fn ancestors_run_from_the_scope_to_the_root() {
        let mut problems = Problems::default();
        let (ancestors, detached) = place_scopes(
            &scopes(&[
                ("france", Some("eu")),
                ("global", None),
                ("eu", Some("global")),
                ("us", Some("global")),
            ]),
            &mut problems,
        );
        assert!(problems.is_empty() && detached.is_empty(), "{problems}");
        assert_eq!(ancestors["france"], vec!["france", "eu", "global", ""]);
        assert_eq!(ancestors["us"], vec!["us", "global", ""]);
        assert_eq!(ancestors["global"], vec!["global", ""]);
    }

    #[test]
    fn a_missing_parent_and_a_cycle_detach_the_scopes_below_them() {
        let mut problems = Problems::default();
        let (ancestors, detached) = place_scopes(
            &scopes(&[
                ("a", Some("b")),
                ("b", Some("c")),
                ("c", Some("a")),
                ("below-cycle", Some("a")),
                ("x", Some("nowhere")),
                ("y", Some("x")),
                ("ok", None),
            ]),
            &mut problems,
        );
        assert_eq!(ancestors.keys().collect::<Vec<_>>(), vec!["ok"]);
        assert_eq!(
            detached["x"],
            "scope x names parent nowhere, which is not a scope of the tenant; create it or change the parent"
        );
        assert_eq!(
            detached["y"],
            "scope y is below scope x, which names parent nowhere, which is not a scope of the tenant"
        );
        assert!(
            detached["a"].starts_with("scope a is in a cycle of parents (a -> b -> c -> a)"),
            "{}",
            detached["a"]
        );
        assert!(
            detached["below-cycle"].starts_with("scope below-cycle is below a cycle"),
            "{}",
            detached["below-cycle"]
        );
        assert_eq!(problems.len(), 6, "{problems}");
        assert!(
            problems
                .to_string()
                .contains("scopes[4].parent: scope x names")
        );
    }

    #[test]
    fn invalid_grants_and_mappings_are_left_out_and_described() {
        let data: TenantData = serde_json::from_value(serde_json::json!({
            "scopes": [{"name": "global"}, {"name": "Bad_Scope"}, {"name": "global"}],
            "grants": [
                {"role": "Editor", "scope": "global", "groups": ["eu-team"]},
                {"role": "Owner", "scope": "global", "users": ["bob"]},
                {"role": "Viewer", "scope": "mars", "users": ["bob"]},
                {"role": "Viewer"},
                {"role": "Viewer", "users": ["", "carol"]},
                {"name": "", "role": "Viewer", "users": ["dave"]},
            ],
            "groupMappings": [
                {"group": "uk-developers", "role": "Admin", "scope": "global"},
                {"group": "uk-developers", "role": "nobody"},
            ],
        }))
        .unwrap();
        let (index, problems) = TenantIndex::build("acme", &data);
        let text = problems.to_string();
        for expected in [
            "scopes[1].name: scope name \"Bad_Scope\" must be lowercase letters",
            "scopes[2].name: scope global is listed twice",
            "grants[1].role: role \"Owner\" is not a role of the tenant; roles: Admin, Editor, Viewer",
            "grants[2].scope: scope \"mars\" is not a scope of the tenant",
            "grants[3]: a grant names at least one user, group or service account",
            "grants[4].users[0]: \"\" is not a subject",
            "grants[5].name: a name has 1 to 253 characters",
            "groupMappings[1].role: role \"nobody\" is not a role of the tenant",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(index.binding_count, 3, "eu-team, carol and the mapping");
        let carol = &index.bindings["user:carol"][""][0];
        assert_eq!(carol.grant, "grant #2 at the tenant's root");
        assert_eq!(carol.via, "directly");
        let mapped = &index.bindings["group:uk-developers"]["global"][0];
        assert_eq!(mapped.role, "Admin");
        assert_eq!(mapped.grant, "group mapping #1");
        assert!(data.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let refused = serde_json::from_value::<TenantData>(serde_json::json!({
            "grants": [{"role": "Viewer", "users": ["a"], "subjects": ["b"]}],
        }))
        .unwrap_err();
        assert!(
            refused.to_string().contains("unknown field `subjects`"),
            "{refused}"
        );
    }
}
