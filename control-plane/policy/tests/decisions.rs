//! Every rule of the decisions, through the public API, with the reasons
//! the audit records.

use std::sync::Arc;

use ossature_policy::{
    Authorizer, Basis, Caller, CallerKind, Decision, Permission, Request, TenantData, catalog,
};
use serde_json::json;

/// acme: global > eu > france, global > us.
fn acme() -> TenantData {
    serde_json::from_value(json!({
        "scopes": [
            {"name": "global"},
            {"name": "eu", "parent": "global"},
            {"name": "france", "parent": "eu"},
            {"name": "us", "parent": "global"},
            {"name": "lost", "parent": "nowhere"},
        ],
        "policies": [
            {"name": "deploy", "description": "roll out workloads",
             "permissions": [{"resource": "workload", "actions": ["update"]}]},
        ],
        "roles": [
            {"name": "release-manager", "policies": ["workload-reader", "deploy"]},
        ],
        "grants": [
            {"name": "global-editors", "role": "Editor", "scope": "global", "users": ["alice"]},
            {"role": "Viewer", "scope": "france", "users": ["bob"]},
            {"role": "Admin", "scope": "us", "users": ["carol"]},
            {"role": "Admin", "users": ["dana"]},
            {"role": "release-manager", "scope": "eu", "groups": ["developers"]},
            {"role": "Editor", "scope": "eu", "serviceAccounts": ["ci"]},
            {"role": "Viewer", "scope": "lost", "users": ["bob"]},
        ],
        "groupMappings": [
            {"name": "uk-devs-admin-us", "group": "uk-developers", "role": "Admin", "scope": "us"},
        ],
    }))
    .unwrap()
}

fn authorizer() -> Authorizer {
    let authorizer = Authorizer::new().unwrap();
    let loaded = authorizer.set_tenant("acme", acme()).unwrap();
    assert_eq!(loaded.bindings, 8);
    assert_eq!(loaded.problems.len(), 1, "{}", loaded.problems);
    authorizer
}

fn user(name: &str, tenant: &str, groups: &[&str]) -> Caller {
    Caller {
        subject: name.to_string(),
        kind: CallerKind::User,
        tenant: Some(tenant.to_string()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        platform_operator: false,
    }
}

fn ask(caller: &Caller, resource: &str, action: &str, tenant: &str, scope: &str) -> Request {
    Request {
        caller: caller.clone(),
        resource: resource.to_string(),
        action: action.to_string(),
        tenant: (!tenant.is_empty()).then(|| tenant.to_string()),
        scope: (!scope.is_empty()).then(|| scope.to_string()),
    }
}

fn decide(
    authorizer: &Authorizer,
    caller: &Caller,
    resource: &str,
    action: &str,
    scope: &str,
) -> Decision {
    authorizer.decide(&ask(caller, resource, action, "acme", scope))
}

fn allowed(decision: &Decision, words: &[&str]) {
    assert!(decision.allowed, "{}", decision.reason);
    for w in words {
        assert!(
            decision.reason.contains(w),
            "{w:?} not in {:?}",
            decision.reason
        );
    }
}

fn denied(decision: &Decision, words: &[&str]) {
    assert!(!decision.allowed, "{}", decision.reason);
    assert!(decision.basis.is_none());
    for w in words {
        assert!(
            decision.reason.contains(w),
            "{w:?} not in {:?}",
            decision.reason
        );
    }
}

#[test]
fn a_grant_applies_in_its_scope_and_every_scope_below() {
    let authorizer = authorizer();
    let alice = user("alice", "acme", &[]);
    let decision = decide(&authorizer, &alice, "workload", "update", "france");
    assert_eq!(
        decision.reason,
        "allowed: user alice holds role Editor in scope global directly (grant \"global-editors\"), \
         which contains scope france; its policy workload-manager permits update on workload"
    );
    assert_eq!(
        decision.basis,
        Some(Basis::Grant {
            role: "Editor".into(),
            scope: Some("global".into()),
            grant: "grant \"global-editors\"".into(),
            via: "directly".into(),
            policies: vec!["workload-manager".into()],
        })
    );
    allowed(
        &decide(&authorizer, &alice, "topic", "create", "global"),
        &["in scope global directly"],
    );
    denied(
        &decide(&authorizer, &alice, "topic", "update", ""),
        &["no role that user alice holds at the tenant's root permits update on topic"],
    );
}

#[test]
fn a_grant_below_gives_nothing_above() {
    let authorizer = authorizer();
    let bob = user("bob", "acme", &[]);
    allowed(
        &decide(&authorizer, &bob, "workload", "read", "france"),
        &[
            "role Viewer in scope france directly (grant #1 of scope france); its policy workload-reader",
        ],
    );
    denied(
        &decide(&authorizer, &bob, "workload", "read", "eu"),
        &[
            "no role that user bob holds in scope eu or above it (scope global, the tenant's root) permits read on workload",
            "it holds no role there",
        ],
    );
    denied(
        &decide(&authorizer, &bob, "workload", "update", "france"),
        &["roles held there: Viewer in scope france directly (grant #1 of scope france)"],
    );
}

#[test]
fn a_role_in_a_sibling_branch_gives_nothing() {
    let authorizer = authorizer();
    let carol = user("carol", "acme", &[]);
    allowed(
        &decide(&authorizer, &carol, "grant", "create", "us"),
        &["role Admin in scope us"],
    );
    denied(
        &decide(&authorizer, &carol, "workload", "read", "france"),
        &["in scope france or above it (scope eu, scope global, the tenant's root)"],
    );
}

#[test]
fn tenant_level_resources_are_decided_at_the_root() {
    let authorizer = authorizer();
    let carol = user("carol", "acme", &[]);
    denied(
        &decide(&authorizer, &carol, "tenantSettings", "updateEdge", "us"),
        &["at the tenant's root (tenantSettings is a tenant-level resource)"],
    );
    let dana = user("dana", "acme", &[]);
    allowed(
        &decide(&authorizer, &dana, "tenantSettings", "updateEdge", "us"),
        &[
            "holds role Admin at the tenant's root directly (grant #1 at the tenant's root); its policy tenant-settings-manager",
        ],
    );
    allowed(
        &decide(&authorizer, &dana, "workload", "delete", "france"),
        &["which contains scope france"],
    );
}

#[test]
fn a_tenant_defined_role_carries_its_own_and_standard_policies() {
    let authorizer = authorizer();
    let erin = user("erin", "acme", &["developers"]);
    allowed(
        &decide(&authorizer, &erin, "workload", "update", "france"),
        &[
            "role release-manager in scope eu through group developers",
            "its policy deploy permits update on workload",
        ],
    );
    allowed(
        &decide(&authorizer, &erin, "workload", "read", "eu"),
        &["policy workload-reader"],
    );
    denied(
        &decide(&authorizer, &erin, "workload", "delete", "eu"),
        &[
            "directly or through its groups developers, permits delete on workload",
            "roles held there: release-manager in scope eu through group developers",
        ],
    );
}

#[test]
fn an_identity_provider_group_is_mapped_to_a_role_in_a_scope() {
    let authorizer = authorizer();
    let frank = user("frank", "acme", &["uk-developers"]);
    allowed(
        &decide(&authorizer, &frank, "grant", "create", "us"),
        &[
            "role Admin in scope us through identity provider group uk-developers (mapping \"uk-devs-admin-us\")",
        ],
    );
    denied(
        &decide(&authorizer, &frank, "grant", "create", "eu"),
        &["permits create on grant"],
    );
}

#[test]
fn service_accounts_are_subjects_of_their_own_kind() {
    let authorizer = authorizer();
    let ci = Caller {
        kind: CallerKind::ServiceAccount,
        ..user("ci", "acme", &[])
    };
    allowed(
        &decide(&authorizer, &ci, "certificate", "renew", "france"),
        &["service account ci holds role Editor in scope eu directly"],
    );
    let user_named_ci = user("ci", "acme", &[]);
    denied(
        &decide(
            &authorizer,
            &user_named_ci,
            "certificate",
            "renew",
            "france",
        ),
        &["user ci"],
    );
}

#[test]
fn a_caller_never_gets_anything_of_another_tenant_whatever_the_data_says() {
    let authorizer = authorizer();
    // Crafted: globex's data grants acme's alice, and a group named like
    // hers, everything at its root.
    let crafted: TenantData = serde_json::from_value(json!({
        "grants": [{"role": "Admin", "users": ["alice"], "groups": ["developers"],
                    "serviceAccounts": ["alice"]}],
    }))
    .unwrap();
    authorizer.set_tenant("globex", crafted).unwrap();
    let alice = user("alice", "acme", &["developers"]);
    let decision = authorizer.decide(&ask(&alice, "workload", "read", "globex", ""));
    assert_eq!(
        decision.reason,
        "denied: user alice belongs to tenant acme, not to tenant globex: nothing of another tenant is ever allowed"
    );
    let permissions = authorizer.permissions(&alice, Some("globex"), None);
    assert!(permissions.permissions.is_empty());
    assert!(permissions.reason.contains("not to tenant globex"));
    // Globex's own alice does get it.
    let globex_alice = user("alice", "globex", &[]);
    allowed(
        &authorizer.decide(&ask(&globex_alice, "workload", "read", "globex", "")),
        &["Admin"],
    );
    // A caller of no tenant, and a request outside every tenant.
    let nobody = Caller {
        tenant: None,
        ..alice.clone()
    };
    denied(
        &authorizer.decide(&ask(&nobody, "workload", "read", "acme", "")),
        &["the caller belongs to no tenant"],
    );
    denied(
        &authorizer.decide(&ask(&alice, "tenant", "list", "", "")),
        &["only platform operators act outside a tenant"],
    );
}

#[test]
fn platform_operators_are_allowed_and_the_reason_says_so() {
    let authorizer = authorizer();
    let operator = Caller {
        platform_operator: true,
        tenant: None,
        ..user("olivia", "acme", &[])
    };
    for (resource, action, tenant) in [
        ("tenant", "create", "newco"),
        ("tenant", "list", ""),
        ("workload", "delete", "acme"),
    ] {
        let decision = authorizer.decide(&ask(&operator, resource, action, tenant, ""));
        assert_eq!(decision.basis, Some(Basis::PlatformOperator));
        allowed(
            &decision,
            &[&format!(
                "user olivia is a platform operator, and platform operators may do anything ({action} on {resource})"
            )],
        );
    }
    let everything = authorizer.permissions(&operator, Some("acme"), Some("france"));
    let count: usize = catalog::RESOURCES.iter().map(|r| r.actions.len()).sum();
    assert_eq!(everything.permissions.len(), count);
    // Nobody else may do what only operators do, not even a root Admin.
    denied(
        &decide(
            &authorizer,
            &user("dana", "acme", &[]),
            "tenant",
            "delete",
            "",
        ),
        &["only platform operators may do delete on tenant"],
    );
}

#[test]
fn unknown_resources_and_actions_are_refused_with_what_exists() {
    let authorizer = authorizer();
    let operator = Caller {
        platform_operator: true,
        ..user("olivia", "acme", &[])
    };
    denied(
        &decide(&authorizer, &operator, "workload", "launch", "france"),
        &["workload offers no action \"launch\"; its actions: create, delete, read, update"],
    );
    denied(
        &decide(&authorizer, &operator, "spaceship", "read", "france"),
        &["unknown resource \"spaceship\"; resources: audit, certificate,"],
    );
}

#[test]
fn scopes_outside_the_tree_and_tenants_without_data_allow_nothing() {
    let authorizer = authorizer();
    let bob = user("bob", "acme", &[]);
    denied(
        &decide(&authorizer, &bob, "workload", "read", "lost"),
        &["scope lost has no place in tenant acme's tree: scope lost names parent nowhere"],
    );
    denied(
        &decide(&authorizer, &bob, "workload", "read", "mars"),
        &["tenant acme has no scope mars"],
    );
    let zed = user("zed", "initech", &[]);
    denied(
        &authorizer.decide(&ask(&zed, "workload", "read", "initech", "")),
        &["tenant initech has no authorization data"],
    );
    assert!(authorizer.remove_tenant("acme"));
    acme_is_forgotten(&authorizer);
}

#[test]
fn a_tenant_replaced_as_a_whole_loses_what_it_no_longer_grants() {
    let authorizer = authorizer();
    let alice = user("alice", "acme", &[]);
    let mut data = acme();
    data.grants
        .retain(|g| g.name.as_deref() != Some("global-editors"));
    authorizer.set_tenant("acme", data).unwrap();
    denied(
        &decide(&authorizer, &alice, "workload", "update", "france"),
        &["it holds no role there"],
    );
    assert_eq!(authorizer.tenants(), 1);
}

fn acme_is_forgotten(authorizer: &Authorizer) {
    let alice = user("alice", "acme", &[]);
    denied(
        &decide(authorizer, &alice, "workload", "read", "global"),
        &["tenant acme has no authorization data"],
    );
}

#[test]
fn all_tenants_are_replaced_at_once() {
    let authorizer = authorizer();
    let crafted: TenantData = serde_json::from_value(json!({
        "grants": [{"role": "Viewer", "users": ["gina"]}],
    }))
    .unwrap();
    let refused = authorizer
        .replace_all([
            ("globex".to_string(), crafted.clone()),
            ("Bad".to_string(), crafted.clone()),
        ])
        .unwrap_err();
    assert_eq!(refused.category(), "InvalidTenantName");
    assert_eq!(authorizer.tenants(), 1, "nothing changed");
    let report = authorizer
        .replace_all([("globex".to_string(), crafted)])
        .unwrap();
    assert_eq!(report["globex"].bindings, 1);
    assert_eq!(authorizer.tenants(), 1);
    acme_is_forgotten(&authorizer);
    let gina = user("gina", "globex", &[]);
    allowed(
        &authorizer.decide(&ask(&gina, "topic", "read", "globex", "")),
        &["role Viewer at the tenant's root"],
    );
}

#[test]
fn permissions_list_exactly_what_decisions_allow() {
    let authorizer = authorizer();
    let callers = [
        user("alice", "acme", &[]),
        user("bob", "acme", &[]),
        user("dana", "acme", &[]),
        user("erin", "acme", &["developers", "uk-developers"]),
        user("alice", "globex", &[]),
    ];
    for caller in &callers {
        for scope in ["", "global", "eu", "france", "us", "lost", "mars"] {
            let listed =
                authorizer.permissions(caller, Some("acme"), (!scope.is_empty()).then_some(scope));
            for resource in catalog::RESOURCES {
                for action in resource.actions {
                    let decision = decide(&authorizer, caller, resource.name, action.name, scope);
                    let permission = Permission::new(resource.name, action.name);
                    assert_eq!(
                        decision.allowed,
                        listed.permissions.contains(&permission),
                        "{} {} in {scope:?}: {} / {}",
                        caller.subject,
                        resource.name,
                        decision.reason,
                        listed.reason
                    );
                }
            }
        }
    }
    let alice = authorizer.permissions(&callers[0], Some("acme"), Some("france"));
    assert!(
        alice
            .permissions
            .contains(&Permission::new("workload", "update"))
    );
    assert!(
        !alice
            .permissions
            .contains(&Permission::new("grant", "create"))
    );
    assert!(
        !alice
            .permissions
            .contains(&Permission::new("tenantSettings", "read")),
        "a grant below the root gives nothing on tenant-level resources"
    );
    assert_eq!(
        alice.reason,
        "user alice in scope france and above it: roles held there: Editor in scope global directly (grant \"global-editors\")"
    );
}

#[test]
fn role_permissions_list_policies_and_their_permissions() {
    let authorizer = authorizer();
    let answer = authorizer.role_permissions(
        "acme",
        &[
            "release-manager".to_string(),
            "Viewer".to_string(),
            "Owner".to_string(),
        ],
    );
    assert_eq!(answer.unknown, vec!["Owner"]);
    let release = &answer.roles[0];
    assert!(!release.standard);
    assert_eq!(
        release
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["workload-reader", "deploy"]
    );
    assert_eq!(
        release.permissions,
        vec![
            Permission::new("workload", "read"),
            Permission::new("workload", "update")
        ]
    );
    assert!(answer.roles[1].standard && answer.roles[1].permissions.len() > 10);
    // A tenant without data has the standard roles only.
    let other = authorizer.role_permissions(
        "initech",
        &["Admin".to_string(), "release-manager".to_string()],
    );
    assert_eq!(other.roles.len(), 1);
    assert_eq!(other.unknown, vec!["release-manager"]);
}

#[test]
fn the_authorizer_is_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Authorizer>();
    let authorizer = Arc::new(authorizer());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let authorizer = Arc::clone(&authorizer);
            std::thread::spawn(move || {
                let alice = user("alice", "acme", &[]);
                for _ in 0..50 {
                    assert!(decide(&authorizer, &alice, "workload", "update", "france").allowed);
                    if i == 0 {
                        authorizer.set_tenant("acme", acme()).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn invalid_data_is_described_and_invalid_tenant_names_refused() {
    let authorizer = Authorizer::new().unwrap();
    let refused = authorizer
        .set_tenant("Acme Corp", TenantData::default())
        .unwrap_err();
    assert_eq!(refused.category(), "InvalidTenantName");
    assert!(
        refused.to_string().contains("lowercase letters"),
        "{refused}"
    );
    let invalid = acme().validate().unwrap_err().to_string();
    assert!(
        invalid.contains("scopes[4].parent: scope lost names parent nowhere, which is not a scope of the tenant; create it or change the parent"),
        "{invalid}"
    );
    let bad: TenantData = serde_json::from_value(json!({
        "roles": [{"name": "auditor", "policies": ["audit-reader", "launch-rockets"]}],
        "grants": [{"role": "auditor", "users": ["zoe"]}],
    }))
    .unwrap();
    let loaded = authorizer.set_tenant("acme", bad).unwrap();
    let text = loaded.problems.to_string();
    assert!(text.contains("roles[0].policies[1]: policy launch-rockets is neither a standard policy nor one of the tenant's"), "{text}");
    assert!(
        text.contains("grants[0].role: role \"auditor\" is not a role of the tenant"),
        "{text}"
    );
    assert_eq!(loaded.bindings, 0, "an invalid role grants nothing");
}

#[test]
fn a_caller_with_many_groups_in_a_deep_tree_is_still_decided() {
    let depth = 12;
    let groups: Vec<String> = (0..100).map(|i| format!("team-{i}")).collect();
    let data = TenantData {
        scopes: (0..depth)
            .map(|i| ossature_policy::ScopeNode {
                name: format!("level-{i}"),
                parent: (i > 0).then(|| format!("level-{}", i - 1)),
            })
            .collect(),
        grants: (0..depth)
            .map(|i| ossature_policy::Grant {
                role: "Viewer".into(),
                scope: Some(format!("level-{i}")),
                groups: groups.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let authorizer = Authorizer::new().unwrap();
    assert_eq!(authorizer.set_tenant("acme", data).unwrap().bindings, 1200);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let caller = user("zoe", "acme", &groups);
    let deepest = format!("level-{}", depth - 1);
    allowed(
        &decide(&authorizer, &caller, "topic", "read", &deepest),
        &["role Viewer in scope level-11 through group team-0 (grant #1 of scope level-11)"],
    );
    denied(
        &decide(&authorizer, &caller, "topic", "update", &deepest),
        &[
            "roles held there: Viewer in scope level-11 through group team-0",
            "through group team-12 (grant #1 of scope level-11); and 1195 more",
            "through its groups team-0, team-1, team-2, team-3, team-4, team-5, team-6, team-7, team-8, team-9, and 90 more, permits",
        ],
    );
}
