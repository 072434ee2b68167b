//! Policies (named sets of action-resource permissions) and roles (bundles
//! of policies): the standard ones every tenant has, and the checks a
//! tenant's own must pass.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{self, RESOURCES};
use crate::problems::Problems;

/// One action on one resource, as the permissions queries return them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Permission {
    pub resource: String,
    pub action: String,
}

impl Permission {
    pub fn new(resource: &str, action: &str) -> Self {
        Self {
            resource: resource.to_string(),
            action: action.to_string(),
        }
    }
}

/// Actions on one resource, inside a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceActions {
    /// A resource of the catalog, for example `workload`.
    pub resource: String,
    /// Actions that resource offers, for example `["read", "update"]`.
    pub actions: Vec<String>,
}

/// A named set of action-resource permissions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// A DNS label, for example `deploy-workloads`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub permissions: Vec<ResourceActions>,
}

/// A bundle of policies, granted to subjects in scopes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    /// `Viewer`, `Editor`, `Admin`, or one of the tenant's own: a DNS label,
    /// for example `project-accessor`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Standard policies or the tenant's own, by name.
    pub policies: Vec<String>,
}

/// Most policies or roles a tenant defines, so one tenant's data stays small.
pub const MAX_DEFINED: usize = 256;
const MAX_DESCRIPTION: usize = 1024;

/// The names of today's `ScopeRole`: Scope grants keep their meaning.
pub const VIEWER: &str = "Viewer";
pub const EDITOR: &str = "Editor";
pub const ADMIN: &str = "Admin";

/// Resources every Editor may change (create, update, delete and the rest).
const EDITED: &[&str] = &[
    "environment",
    "certificate",
    "topic",
    "serviceIdentity",
    "workload",
];
/// Resources only an Admin may change, and those only an Admin may read.
const ADMINISTERED: &[&str] = &[
    "scope",
    "grant",
    "groupMapping",
    "role",
    "tenantSettings",
    "invocation",
];
const ADMIN_READ: &[&str] = &["audit"];

/// `serviceIdentity` -> `service-identity`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn reader(resource: &str) -> String {
    format!("{}-reader", kebab(resource))
}

fn manager(resource: &str) -> String {
    format!("{}-manager", kebab(resource))
}

const SCOPE_EDITOR: &str = "scope-editor";

/// The standard policies: for each resource a `<resource>-reader` (read)
/// and a `<resource>-manager` (every other action a role may carry), and
/// `scope-editor` (rename a scope, as today's Editor may).
pub fn standard_policies() -> Vec<Policy> {
    let mut policies = Vec::new();
    for resource in RESOURCES {
        policies.push(Policy {
            name: reader(resource.name),
            description: format!("read {}", resource.name),
            permissions: vec![ResourceActions {
                resource: resource.name.to_string(),
                actions: vec!["read".to_string()],
            }],
        });
        let changes: Vec<String> = resource
            .actions
            .iter()
            .filter(|a| a.name != "read" && !a.platform_only)
            .map(|a| a.name.to_string())
            .collect();
        if !changes.is_empty() {
            policies.push(Policy {
                name: manager(resource.name),
                description: format!("every change to {}", resource.name),
                permissions: vec![ResourceActions {
                    resource: resource.name.to_string(),
                    actions: changes,
                }],
            });
        }
    }
    policies.push(Policy {
        name: SCOPE_EDITOR.to_string(),
        description: "rename scopes".to_string(),
        permissions: vec![ResourceActions {
            resource: "scope".to_string(),
            actions: vec!["update".to_string()],
        }],
    });
    policies
}

/// Viewer reads, Editor also changes, Admin also manages scopes, grants,
/// roles, group mappings and settings, and reads the audit.
pub fn standard_roles() -> Vec<Role> {
    let viewer: Vec<String> = RESOURCES
        .iter()
        .filter(|r| !ADMIN_READ.contains(&r.name))
        .map(|r| reader(r.name))
        .collect();
    let mut editor = viewer.clone();
    editor.push(SCOPE_EDITOR.to_string());
    editor.extend(EDITED.iter().map(|r| manager(r)));
    let mut admin = editor.clone();
    admin.extend(ADMINISTERED.iter().map(|r| manager(r)));
    admin.extend(ADMIN_READ.iter().map(|r| reader(r)));
    vec![
        Role {
            name: VIEWER.to_string(),
            description: "reads everything but the audit".to_string(),
            policies: viewer,
        },
        Role {
            name: EDITOR.to_string(),
            description: "reads, and changes environments, certificates, topics, services and workloads, and renames scopes".to_string(),
            policies: editor,
        },
        Role {
            name: ADMIN.to_string(),
            description: "an Editor who also manages scopes, grants, roles, group mappings and tenant settings, and reads the audit".to_string(),
            policies: admin,
        },
    ]
}

/// A DNS label of at most 63 characters, as tenant-defined names are (they
/// become object names).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub(crate) const DNS_LABEL_RULE: &str =
    "lowercase letters, digits and '-', starting with a letter, at most 63 characters";

/// Permissions per role, per resource, per action, with the policies that
/// give each: what decisions and the role queries read.
pub(crate) type Resolved = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<String>>>>;

/// Checks a tenant's policies and roles against the catalog and each
/// other, records what is wrong in `problems`, and returns every valid role
/// (standard ones included) resolved to its permissions.
pub(crate) fn resolve(policies: &[Policy], roles: &[Role], problems: &mut Problems) -> Resolved {
    let standard_policies = standard_policies();
    let standard_names: BTreeSet<&str> =
        standard_policies.iter().map(|p| p.name.as_str()).collect();
    let policies = problems.at_most("policies", policies, MAX_DEFINED, "merge some");
    let roles = problems.at_most("roles", roles, MAX_DEFINED, "merge some");

    let mut valid_policies: BTreeMap<&str, &Policy> = standard_policies
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    let mut seen = BTreeSet::new();
    for (i, policy) in policies.iter().enumerate() {
        let at = format!("policies[{i}]");
        let before = problems.len();
        check_name(&policy.name, "policy", &at, problems);
        if standard_names.contains(policy.name.as_str()) {
            problems.push(
                format!("{at}.name"),
                format!(
                    "{} is the name of a standard policy; choose another name",
                    policy.name
                ),
            );
        } else if !seen.insert(policy.name.as_str()) {
            problems.push(
                format!("{at}.name"),
                format!(
                    "policy {} is defined twice; keep one definition",
                    policy.name
                ),
            );
        }
        check_description(&policy.description, &at, problems);
        check_permissions(policy, &at, problems);
        if problems.len() == before {
            valid_policies.insert(policy.name.as_str(), policy);
        }
    }

    let mut resolved = Resolved::new();
    for role in standard_roles() {
        if let Some(permissions) = bundle(&role, "standard roles", &valid_policies, &seen, problems)
        {
            resolved.insert(role.name, permissions);
        }
    }
    let mut role_names = BTreeSet::new();
    for (i, role) in roles.iter().enumerate() {
        let at = format!("roles[{i}]");
        let before = problems.len();
        // Standard names are capitalised, a DNS label is not: no clash.
        check_name(&role.name, "role", &at, problems);
        check_description(&role.description, &at, problems);
        if !role_names.insert(role.name.as_str()) {
            problems.push(
                format!("{at}.name"),
                format!("role {} is defined twice; keep one definition", role.name),
            );
        }
        if role.policies.is_empty() {
            problems.push(
                format!("{at}.policies"),
                "a role bundles at least one policy; name standard policies or the tenant's own",
            );
        }
        let permissions = bundle(role, &at, &valid_policies, &seen, problems);
        if let Some(permissions) = permissions.filter(|_| problems.len() == before) {
            resolved.insert(role.name.clone(), permissions);
        }
    }
    resolved
}

/// What `role` (standard, or one of `roles`, bundling standard policies and
/// `policies`) gives, resource by resource, when it and all it bundles are
/// valid; else what is wrong with it, in words.
pub fn permissions_of(
    policies: &[Policy],
    roles: &[Role],
    role: &str,
) -> Result<Vec<ResourceActions>, String> {
    let mut problems = Problems::default();
    let resolved = resolve(policies, roles, &mut problems);
    if let Some(by_resource) = resolved.get(role) {
        return Ok(by_resource
            .iter()
            .map(|(resource, actions)| ResourceActions {
                resource: resource.clone(),
                actions: actions.keys().cloned().collect(),
            })
            .collect());
    }
    let Some(index) = roles.iter().position(|r| r.name == role) else {
        return Err(format!(
            "role {role} is neither Viewer, Editor, Admin nor a TenantRole of the tenant"
        ));
    };
    // Its own problems, and those of the policies it bundles.
    let mut places = vec![format!("roles[{index}]")];
    for name in &roles[index].policies {
        if let Some(j) = policies.iter().position(|p| &p.name == name) {
            places.push(format!("policies[{j}]"));
        }
    }
    let messages: Vec<String> = problems
        .iter()
        .filter(|p| {
            places
                .iter()
                .any(|place| p.path == *place || p.path.starts_with(&format!("{place}.")))
        })
        .map(|p| p.message.clone())
        .collect();
    Err(if messages.is_empty() {
        format!("role {role} is invalid: {problems}")
    } else {
        messages.join("; ")
    })
}

/// The permissions of one role, through its policies; `None` when one of
/// them is unknown or invalid.
fn bundle(
    role: &Role,
    at: &str,
    valid_policies: &BTreeMap<&str, &Policy>,
    own_policies: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Option<BTreeMap<String, BTreeMap<String, Vec<String>>>> {
    let before = problems.len();
    let mut permissions: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut bundled = BTreeSet::new();
    for (j, name) in role.policies.iter().enumerate() {
        if !bundled.insert(name.as_str()) {
            problems.push(
                format!("{at}.policies[{j}]"),
                format!("policy {name} is named twice in role {}", role.name),
            );
            continue;
        }
        let Some(policy) = valid_policies.get(name.as_str()) else {
            let why = if own_policies.contains(name.as_str()) {
                "is invalid (see its own problems)"
            } else {
                "is neither a standard policy nor one of the tenant's"
            };
            problems.push(
                format!("{at}.policies[{j}]"),
                format!(
                    "policy {name} {why}; standard policies are named <resource>-reader or <resource>-manager, for example workload-reader"
                ),
            );
            continue;
        };
        for rule in &policy.permissions {
            for action in &rule.actions {
                let policies = permissions
                    .entry(rule.resource.clone())
                    .or_default()
                    .entry(action.clone())
                    .or_default();
                if !policies.contains(name) {
                    policies.push(name.clone());
                }
            }
        }
    }
    (problems.len() == before).then_some(permissions)
}

fn check_name(name: &str, what: &str, at: &str, problems: &mut Problems) {
    if !is_dns_label(name) {
        problems.push(
            format!("{at}.name"),
            format!("{what} name {name:?} must be {DNS_LABEL_RULE}, for example deploy-workloads"),
        );
    }
}

fn check_description(description: &str, at: &str, problems: &mut Problems) {
    if description.chars().count() > MAX_DESCRIPTION {
        problems.push(
            format!("{at}.description"),
            format!("a description has at most {MAX_DESCRIPTION} characters; shorten it"),
        );
    }
}

fn check_permissions(policy: &Policy, at: &str, problems: &mut Problems) {
    if policy.permissions.is_empty() {
        problems.push(
            format!("{at}.permissions"),
            format!(
                "policy {} grants nothing; list at least one resource and its actions",
                policy.name
            ),
        );
    }
    for (k, rule) in policy.permissions.iter().enumerate() {
        let at = format!("{at}.permissions[{k}]");
        let Some(resource) = catalog::resource(&rule.resource) else {
            problems.push(
                format!("{at}.resource"),
                format!(
                    "unknown resource {:?}; known resources: {}",
                    rule.resource,
                    catalog::resource_names()
                ),
            );
            continue;
        };
        if rule.actions.is_empty() {
            problems.push(
                format!("{at}.actions"),
                format!(
                    "name at least one action of {}: {}",
                    resource.name,
                    catalog::action_names(resource)
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (l, action) in rule.actions.iter().enumerate() {
            let at = format!("{at}.actions[{l}]");
            match resource.action(action) {
                None => problems.push(
                    at,
                    format!(
                        "{} offers no action {action:?}; its actions: {}",
                        resource.name,
                        catalog::action_names(resource)
                    ),
                ),
                Some(a) if a.platform_only => problems.push(
                    at,
                    format!(
                        "only platform operators may {action} a {}; no role can carry it",
                        resource.name
                    ),
                ),
                Some(_) if !seen.insert(action.as_str()) => {
                    problems.push(at, format!("action {action} is named twice; keep one"))
                }
                Some(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved_role(name: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let mut problems = Problems::default();
        let resolved = resolve(&[], &[], &mut problems);
        assert!(problems.is_empty(), "{problems}");
        resolved[name].clone()
    }

    fn has(role: &BTreeMap<String, BTreeMap<String, Vec<String>>>, r: &str, a: &str) -> bool {
        role.get(r).is_some_and(|actions| actions.contains_key(a))
    }

    #[test]
    fn standard_roles_grow_from_viewer_to_editor_to_admin() {
        let viewer = resolved_role(VIEWER);
        let editor = resolved_role(EDITOR);
        let admin = resolved_role(ADMIN);
        assert!(has(&viewer, "workload", "read") && !has(&viewer, "workload", "update"));
        assert!(!has(&viewer, "audit", "read"), "the audit is the Admin's");
        assert!(has(&editor, "workload", "update") && has(&editor, "scope", "update"));
        assert!(!has(&editor, "grant", "create") && !has(&editor, "scope", "delete"));
        assert!(has(&admin, "grant", "create") && has(&admin, "role", "create"));
        assert!(has(&admin, "scope", "delete") && has(&admin, "audit", "read"));
        assert_eq!(
            admin["serviceIdentity"]["rotateCredentials"],
            vec!["service-identity-manager"]
        );
        for role in [&viewer, &editor, &admin] {
            for (resource, actions) in role.iter() {
                let resource = catalog::resource(resource).unwrap();
                for action in actions.keys() {
                    assert!(
                        !resource.action(action).unwrap().platform_only,
                        "{action} on {}",
                        resource.name
                    );
                }
            }
        }
    }

    #[test]
    fn every_standard_policy_name_is_a_dns_label() {
        for policy in standard_policies() {
            assert!(is_dns_label(&policy.name), "{}", policy.name);
        }
        assert_eq!(kebab("tenantSettings"), "tenant-settings");
    }

    #[test]
    fn a_tenant_role_bundles_standard_and_own_policies() {
        let policies = vec![Policy {
            name: "deploy".into(),
            description: String::new(),
            permissions: vec![ResourceActions {
                resource: "workload".into(),
                actions: vec!["update".into()],
            }],
        }];
        let roles = vec![Role {
            name: "release-manager".into(),
            description: "ships releases".into(),
            policies: vec!["workload-reader".into(), "deploy".into()],
        }];
        let mut problems = Problems::default();
        let resolved = resolve(&policies, &roles, &mut problems);
        assert!(problems.is_empty(), "{problems}");
        let role = &resolved["release-manager"];
        assert_eq!(role["workload"]["read"], vec!["workload-reader"]);
        assert_eq!(role["workload"]["update"], vec!["deploy"]);
        assert!(!has(role, "topic", "read"));
    }

    #[test]
    fn invalid_policies_and_roles_are_named_with_what_to_do() {
        let policies = vec![
            Policy {
                name: "Bad Name".into(),
                description: String::new(),
                permissions: vec![ResourceActions {
                    resource: "workload".into(),
                    actions: vec!["read".into()],
                }],
            },
            Policy {
                name: "workload-reader".into(),
                description: String::new(),
                permissions: vec![ResourceActions {
                    resource: "workload".into(),
                    actions: vec!["read".into()],
                }],
            },
            Policy {
                name: "odd".into(),
                description: String::new(),
                permissions: vec![
                    ResourceActions {
                        resource: "spaceship".into(),
                        actions: vec!["fly".into()],
                    },
                    ResourceActions {
                        resource: "workload".into(),
                        actions: vec!["launch".into(), "read".into(), "read".into()],
                    },
                    ResourceActions {
                        resource: "tenant".into(),
                        actions: vec!["create".into()],
                    },
                ],
            },
        ];
        let roles = vec![
            Role {
                name: "uses-odd".into(),
                description: String::new(),
                policies: vec!["odd".into(), "nowhere".into()],
            },
            Role {
                name: "empty".into(),
                description: String::new(),
                policies: vec![],
            },
        ];
        let mut problems = Problems::default();
        let resolved = resolve(&policies, &roles, &mut problems);
        let text = problems.to_string();
        for expected in [
            "policies[0].name: policy name \"Bad Name\" must be lowercase letters",
            "policies[1].name: workload-reader is the name of a standard policy",
            "policies[2].permissions[0].resource: unknown resource \"spaceship\"; known resources: tenant, tenantSettings",
            "policies[2].permissions[1].actions[0]: workload offers no action \"launch\"; its actions: read, create, update, delete",
            "policies[2].permissions[1].actions[2]: action read is named twice",
            "policies[2].permissions[2].actions[0]: only platform operators may create a tenant",
            "roles[0].policies[0]: policy odd is invalid (see its own problems)",
            "roles[0].policies[1]: policy nowhere is neither a standard policy nor one of the tenant's",
            "roles[1].policies: a role bundles at least one policy",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!resolved.contains_key("uses-odd") && !resolved.contains_key("empty"));
        assert!(
            resolved.contains_key(ADMIN),
            "standard roles stay whatever the tenant defines"
        );
    }

    #[test]
    fn a_tenant_defines_a_bounded_number_of_roles() {
        let roles: Vec<Role> = (0..=MAX_DEFINED)
            .map(|i| Role {
                name: format!("role-{i}"),
                description: String::new(),
                policies: vec!["workload-reader".into()],
            })
            .collect();
        let mut problems = Problems::default();
        let resolved = resolve(&[], &roles, &mut problems);
        assert_eq!(
            problems.to_string(),
            "roles: a tenant has at most 256 roles, not 257; merge some"
        );
        assert_eq!(resolved.len(), 3 + MAX_DEFINED, "the first 256 are kept");
    }
}
