//! Property: whatever the tenants' data (names shared across tenants,
//! broken trees, unknown roles), a caller never gets a permission on a
//! tenant other than its own, unless it is a platform operator.

use std::sync::LazyLock;

use ossature_policy::{
    Authorizer, Caller, CallerKind, Grant, GroupMapping, Policy, Request, ResourceActions, Role,
    ScopeNode, TenantData, catalog::RESOURCES,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const TENANTS: &[&str] = &["acme", "globex"];
/// Asked about too, never loaded.
const OTHER_TENANTS: &[&str] = &["acme", "globex", "initech"];
const SCOPES: &[&str] = &["global", "eu", "france", "us", "uk"];
const SUBJECTS: &[&str] = &["alice", "bob", "carol"];
const GROUPS: &[&str] = &["devs", "ops", "uk-developers"];
const ROLES: &[&str] = &["Viewer", "Editor", "Admin", "custom", "unknown"];

static AUTHORIZER: LazyLock<Authorizer> = LazyLock::new(|| Authorizer::new().unwrap());

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    subsequence(pool, 0..=pool.len()).prop_map(|v| v.into_iter().map(String::from).collect())
}

fn maybe(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(select(pool).prop_map(String::from))
}

fn permission_name() -> impl Strategy<Value = (String, String)> {
    let known = select(RESOURCES).prop_flat_map(|r| {
        select(r.actions).prop_map(move |a| (r.name.to_string(), a.name.to_string()))
    });
    prop_oneof![
        8 => known,
        1 => Just(("workload".to_string(), "launch".to_string())),
        1 => Just(("spaceship".to_string(), "read".to_string())),
    ]
}

fn tenant_data() -> impl Strategy<Value = TenantData> {
    let scopes = proptest::collection::vec((select(SCOPES), maybe(SCOPES)), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(name, parent)| ScopeNode {
                name: name.to_string(),
                parent,
            })
            .collect()
    });
    let grant = (
        select(ROLES),
        maybe(SCOPES),
        names(SUBJECTS),
        names(GROUPS),
        names(SUBJECTS),
    )
        .prop_map(|(role, scope, users, groups, service_accounts)| Grant {
            name: None,
            role: role.to_string(),
            scope,
            users,
            groups,
            service_accounts,
        });
    let mapping =
        (select(GROUPS), select(ROLES), maybe(SCOPES)).prop_map(|(group, role, scope)| {
            GroupMapping {
                name: None,
                group: group.to_string(),
                role: role.to_string(),
                scope,
            }
        });
    let custom = proptest::collection::vec(permission_name(), 1..4).prop_map(|permissions| {
        (
            Policy {
                name: "custom-policy".into(),
                description: String::new(),
                permissions: permissions
                    .into_iter()
                    .map(|(resource, action)| ResourceActions {
                        resource,
                        actions: vec![action],
                    })
                    .collect(),
            },
            Role {
                name: "custom".into(),
                description: String::new(),
                policies: vec!["custom-policy".into(), "topic-manager".into()],
            },
        )
    });
    (
        scopes,
        proptest::collection::vec(grant, 0..8),
        proptest::collection::vec(mapping, 0..3),
        custom,
    )
        .prop_map(
            |(scopes, grants, group_mappings, (policy, role))| TenantData {
                scopes,
                policies: vec![policy],
                roles: vec![role],
                grants,
                group_mappings,
            },
        )
}

fn caller() -> impl Strategy<Value = Caller> {
    (
        select(SUBJECTS),
        any::<bool>(),
        maybe(OTHER_TENANTS),
        names(GROUPS),
    )
        .prop_map(|(subject, service_account, tenant, groups)| Caller {
            subject: subject.to_string(),
            kind: if service_account {
                CallerKind::ServiceAccount
            } else {
                CallerKind::User
            },
            tenant,
            groups,
            platform_operator: false,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_caller_never_gets_a_permission_on_another_tenant(
        data in proptest::collection::vec(tenant_data(), TENANTS.len()),
        caller in caller(),
        asked in proptest::collection::vec((permission_name(), maybe(OTHER_TENANTS), maybe(SCOPES)), 1..12),
    ) {
        for (tenant, data) in TENANTS.iter().zip(data) {
            AUTHORIZER.set_tenant(tenant, data).unwrap();
        }
        for ((resource, action), tenant, scope) in asked {
            let request = Request {
                caller: caller.clone(),
                resource,
                action,
                tenant: tenant.clone(),
                scope: scope.clone(),
            };
            let decision = AUTHORIZER.decide(&request);
            prop_assert!(!decision.reason.is_empty());
            if decision.allowed {
                prop_assert!(
                    caller.tenant.is_some() && caller.tenant == tenant,
                    "{caller:?} allowed on {tenant:?}: {}", decision.reason
                );
            }
            if caller.tenant != tenant {
                let listed = AUTHORIZER.permissions(&caller, tenant.as_deref(), scope.as_deref());
                prop_assert!(listed.permissions.is_empty(), "{:?}: {}", listed.permissions, listed.reason);
            }
        }
    }
}
