//! The one authorization decision of an invocation, made once at its start
//! and recorded in its audit record and on the objects it writes.
//!
//! Each command and query asks for one or more action-resource permissions
//! of the policy's catalog in the scope it acts in ([`command_asks`],
//! [`Asked`]); the Rego policy of `ossature-policy` decides each, over the
//! tenants' data that follows the shared watch of Scopes. Whatever the
//! data, a token of one tenant never acts on another: that is checked
//! first, from the request alone.

use std::sync::Arc;

use kube::ResourceExt;
use ossature_crds::{Scope, TenantRole};
use ossature_policy::{
    Authorizer, Request, TenantData, from_scopes, from_tenant_roles, group_mappings_of,
};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Caller;
use crate::commands::Command;
use crate::watch::{Changed, Watches};

/// One permission an invocation needs: `action` on `resource` in `scope`
/// (none: the tenant's root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub resource: &'static str,
    pub action: &'static str,
    pub scope: Option<String>,
}

impl Asked {
    pub fn new(resource: &'static str, action: &'static str, scope: Option<&str>) -> Self {
        Asked {
            resource,
            action,
            scope: scope.map(String::from),
        }
    }

    /// Raising an invocation's log level (a toggle of its context).
    pub fn raise_log_level() -> Self {
        Asked::new("invocation", "raiseLogLevel", None)
    }
}

/// Allowed or not, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: String) -> Self {
        Decision {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: String) -> Self {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// The permissions `command` needs, in the scopes it acts in. Environments
/// are placed in a scope by their label (see [`crate::api::SCOPE_LABEL`]),
/// read from the shared watch.
pub fn command_asks(command: &Command, watches: &Watches) -> Vec<Asked> {
    let environment_scope = |tenant: &str, name: &str| scope_of_environment(watches, tenant, name);
    match command {
        Command::OnboardTenant(_) => vec![Asked::new("tenant", "create", None)],
        Command::ChangeTenant(c) => {
            let mut asked = Vec::new();
            if c.display_name.is_some() || c.identity.is_some() {
                asked.push(Asked::new("tenantSettings", "updateIdentity", None));
            }
            if c.edge.is_some() {
                asked.push(Asked::new("tenantSettings", "updateEdge", None));
            }
            if c.domains.is_some() {
                asked.push(Asked::new("tenantSettings", "updateDomains", None));
            }
            if c.quotas.is_some() {
                asked.push(Asked::new("tenantSettings", "updateQuotas", None));
            }
            asked
        }
        Command::AddScope(c) => vec![Asked::new("scope", "create", c.scope.parent.as_deref())],
        // Asked where the scope is and where it goes.
        Command::MoveScope(c) => vec![
            Asked::new("scope", "move", Some(&c.scope)),
            Asked::new("scope", "move", c.parent.as_deref()),
        ],
        Command::RemoveScope(c) => vec![Asked::new("scope", "delete", Some(&c.scope))],
        Command::GrantRole(c) => vec![Asked::new("grant", "create", Some(&c.scope))],
        Command::RevokeRole(c) => vec![Asked::new("grant", "delete", Some(&c.scope))],
        Command::CreateEnvironment(c) => vec![Asked::new(
            "environment",
            "create",
            c.environment.scope.as_deref(),
        )],
        Command::RemoveEnvironment(c) => vec![Asked {
            resource: "environment",
            action: "delete",
            scope: environment_scope(&c.tenant, &c.environment),
        }],
        Command::RequestCertificate(c) => vec![Asked {
            resource: "certificate",
            action: "create",
            scope: c
                .environment
                .as_deref()
                .and_then(|e| environment_scope(&c.tenant, e)),
        }],
        Command::OffboardTenant(_) => vec![Asked::new("tenant", "delete", None)],
        Command::DefineRole(c) => {
            let action = if watches.tenant_role(&c.tenant, &c.role.name).is_some() {
                "update"
            } else {
                "create"
            };
            vec![Asked::new("role", action, None)]
        }
        Command::RemoveRole(_) => vec![Asked::new("role", "delete", None)],
        Command::MapGroup(c) => vec![Asked::new("groupMapping", "create", Some(&c.scope))],
        Command::UnmapGroup(c) => vec![Asked::new("groupMapping", "delete", Some(&c.scope))],
        Command::ApplyTopic(c) => object_asks("topic", &watches.topics, c, watches),
        Command::ApplyServiceIdentity(c) => {
            object_asks("serviceIdentity", &watches.service_identities, c, watches)
        }
        Command::ApplyWorkload(c) => object_asks("workload", &watches.workloads, c, watches),
        Command::RemoveTopic(c) => removal_asks("topic", "delete", c, watches),
        Command::RemoveServiceIdentity(c) => removal_asks("serviceIdentity", "delete", c, watches),
        Command::RemoveWorkload(c) => removal_asks("workload", "delete", c, watches),
        Command::RotateCredentials(c) => {
            removal_asks("serviceIdentity", "rotateCredentials", c, watches)
        }
    }
}

/// The scope an environment sits in (its label), if any.
fn scope_of_environment(watches: &Watches, tenant: &str, environment: &str) -> Option<String> {
    watches
        .environment(tenant, environment)
        .and_then(|e| e.labels().get(crate::api::SCOPE_LABEL).cloned())
}

/// `create` of a new object, `update` of an existing one, in the scope of
/// its environment.
fn object_asks<K>(
    resource: &'static str,
    store: &kube::runtime::reflector::Store<K>,
    c: &crate::api::ApplyObject,
    watches: &Watches,
) -> Vec<Asked>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = ossature_model::TenantNames::new(&c.tenant)
        .environment(&c.environment)
        .namespace;
    let at = kube::runtime::reflector::ObjectRef::new(&c.name).within(&namespace);
    let action = if store.get(&at).is_some() {
        "update"
    } else {
        "create"
    };
    vec![Asked {
        resource,
        action,
        scope: scope_of_environment(watches, &c.tenant, &c.environment),
    }]
}

fn removal_asks(
    resource: &'static str,
    action: &'static str,
    c: &crate::api::EnvironmentObject,
    watches: &Watches,
) -> Vec<Asked> {
    vec![Asked {
        resource,
        action,
        scope: scope_of_environment(watches, &c.tenant, &c.environment),
    }]
}

/// The authorization data of a tenant's Scopes and TenantRoles.
pub fn tenant_data(scopes: &[Arc<Scope>], roles: &[Arc<TenantRole>]) -> TenantData {
    let (nodes, grants) = from_scopes(scopes.iter().map(|s| s.as_ref()));
    let (policies, roles) = from_tenant_roles(roles.iter().map(|r| r.as_ref()));
    TenantData {
        scopes: nodes,
        grants,
        group_mappings: group_mappings_of(scopes.iter().map(|s| s.as_ref())),
        policies,
        roles,
    }
}

fn data_of(watches: &Watches, tenant: &str) -> TenantData {
    tenant_data(&watches.scopes_of(tenant), &watches.tenant_roles_of(tenant))
}

/// Kinds whose objects are authorization data.
fn feeds_decisions(kind: &str) -> bool {
    matches!(kind, "Tenant" | "Scope" | "TenantRole")
}

/// Decides, over data that follows the shared watch.
pub struct Authorization {
    authorizer: Authorizer,
}

impl Authorization {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Authorization {
            authorizer: Authorizer::new()?,
        })
    }

    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Loads `tenant`'s data as the watch has it now (forgets a tenant
    /// that is gone).
    pub fn load(&self, watches: &Watches, tenant: &str) {
        if watches.tenant(tenant).is_none() {
            self.authorizer.remove_tenant(tenant);
            return;
        }
        match self.authorizer.set_tenant(tenant, data_of(watches, tenant)) {
            Ok(loaded) if !loaded.problems.is_empty() => tracing::info!(
                tenant,
                problems = %loaded.problems,
                "parts of the tenant's grants grant nothing"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(tenant, "loading the tenant's grants failed: {e}"),
        }
    }

    /// Loads every tenant at once, as after a relist.
    pub fn load_all(&self, watches: &Watches) {
        let tenants = watches.tenants.state().into_iter().map(|t| {
            let name = t.name_any();
            let data = data_of(watches, &name);
            (name, data)
        });
        if let Err(e) = self.authorizer.replace_all(tenants) {
            tracing::warn!("loading every tenant's grants failed: {e}");
        }
    }

    /// Follows the watch: a tenant's data again at each change of its
    /// Tenant or Scopes, everything again after a relist or when the
    /// announcements were missed. Subscribes before loading, so no change
    /// falls in between.
    pub async fn follow(self: Arc<Self>, watches: Watches) {
        let mut announcements = watches.announcements();
        self.load_all(&watches);
        loop {
            match announcements.recv().await {
                Ok(Changed::Tenant { tenant, kind }) if feeds_decisions(kind) => {
                    self.load(&watches, &tenant);
                }
                Ok(Changed::Relisted { kind }) if feeds_decisions(kind) => {
                    self.load_all(&watches);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.load_all(&watches),
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Whether `caller` may do everything `asked` of `tenant` (none: of
    /// the platform, as a listing of every tenant).
    pub fn decide(&self, caller: &Caller, tenant: Option<&str>, asked: &[Asked]) -> Decision {
        if let Some(refused) = other_tenant(caller, tenant) {
            return refused;
        }
        if asked.is_empty() {
            return Decision::deny("denied: the request asks for no permission".into());
        }
        let policy_caller = caller.policy_caller();
        let mut reasons = Vec::new();
        for asked in asked {
            let decision = self.authorizer.decide(&Request {
                caller: policy_caller.clone(),
                resource: asked.resource.into(),
                action: asked.action.into(),
                tenant: tenant.map(String::from),
                scope: asked.scope.clone(),
            });
            if !decision.allowed {
                return Decision::deny(decision.reason);
            }
            if !reasons.contains(&decision.reason) {
                reasons.push(decision.reason);
            }
        }
        Decision::allow(reasons.join("; "))
    }

    /// For what only shows the caller itself (its own permissions): any
    /// caller of the tenant, and platform operators.
    pub fn own(&self, caller: &Caller, tenant: &str, what: &str) -> Decision {
        if let Some(refused) = other_tenant(caller, Some(tenant)) {
            return refused;
        }
        Decision::allow(format!(
            "allowed: {what} shows {} only what it may do itself",
            who(caller)
        ))
    }
}

fn who(caller: &Caller) -> &str {
    caller.username.as_deref().unwrap_or(&caller.subject)
}

/// The refusal of a tenant's caller asking about another tenant, or about
/// no tenant: decided from the request alone, whatever the data says.
fn other_tenant(caller: &Caller, tenant: Option<&str>) -> Option<Decision> {
    if caller.is_platform_operator() {
        return None;
    }
    let who = who(caller);
    let Some(own) = caller.tenant.as_deref() else {
        return Some(Decision::deny(format!(
            "denied: {who} is neither a platform operator nor of a tenant"
        )));
    };
    match tenant {
        Some(target) if target == own => None,
        Some(target) => Some(Decision::deny(format!(
            "denied: {who} is a caller of tenant {own}; a token of tenant {own} never acts on tenant {target}"
        ))),
        None => Some(Decision::deny(format!(
            "denied: {who} is a caller of tenant {own}; only platform operators act on the whole platform"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CallerKind;
    use serde_json::json;

    fn caller(kind: CallerKind, tenant: Option<&str>, groups: &[&str]) -> Caller {
        Caller {
            kind,
            tenant: tenant.map(String::from),
            subject: "sub-1".into(),
            username: Some("alice".into()),
            client_id: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn scope(name: &str, parent: Option<&str>, grants: serde_json::Value) -> Arc<Scope> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
                "metadata": {"name": name, "namespace": "tn-acme"},
                "spec": {"displayName": name, "parent": parent, "grants": grants}
            }))
            .unwrap(),
        )
    }

    /// acme: global > eu > france, global > us; eu-team is Editor in eu.
    fn authorization() -> Authorization {
        let authorization = Authorization::new().unwrap();
        let editors = json!([{"role": "Editor", "groups": ["eu-team"]}]);
        let scopes: Vec<Arc<Scope>> = [
            ("global", None, json!([])),
            ("eu", Some("global"), editors),
            ("france", Some("eu"), json!([])),
            ("us", Some("global"), json!([])),
        ]
        .into_iter()
        .map(|(name, parent, grants)| scope(name, parent, grants))
        .collect();
        authorization
            .authorizer()
            .set_tenant("acme", tenant_data(&scopes, &[]))
            .unwrap();
        authorization
            .authorizer()
            .set_tenant("globex", TenantData::default())
            .unwrap();
        authorization
    }

    #[test]
    fn a_tenants_caller_acts_only_on_its_own_tenant() {
        let authorization = authorization();
        let alice = caller(CallerKind::TenantUser, Some("acme"), &["eu-team"]);
        let asked = [Asked::new("environment", "create", Some("eu"))];
        let own = authorization.decide(&alice, Some("acme"), &asked);
        assert!(own.allowed, "{}", own.reason);
        let other = authorization.decide(&alice, Some("globex"), &asked);
        assert!(!other.allowed);
        assert!(
            other.reason.contains("never acts on tenant globex"),
            "{}",
            other.reason
        );
        let everyone = authorization.decide(&alice, None, &[Asked::new("tenant", "list", None)]);
        assert!(!everyone.allowed, "{}", everyone.reason);
        let own_only = authorization.own(&alice, "globex", "callerPermissions");
        assert!(!own_only.allowed);
        assert!(
            authorization
                .own(&alice, "acme", "callerPermissions")
                .allowed
        );
        let toggle = authorization.decide(&alice, Some("acme"), &[Asked::raise_log_level()]);
        assert!(!toggle.allowed, "{}", toggle.reason);
    }

    #[test]
    fn grants_cascade_down_the_tree_not_across_it() {
        let authorization = authorization();
        let alice = caller(CallerKind::TenantUser, Some("acme"), &["eu-team"]);
        let decide = |action, resource, scope| {
            authorization.decide(&alice, Some("acme"), &[Asked::new(resource, action, scope)])
        };
        assert!(decide("create", "environment", Some("france")).allowed);
        let sibling = decide("create", "environment", Some("us"));
        assert!(!sibling.allowed);
        assert!(
            sibling.reason.contains("it holds no role there"),
            "{}",
            sibling.reason
        );
        assert!(!decide("create", "environment", None).allowed);
        assert!(!decide("create", "grant", Some("eu")).allowed);
        // Every permission must hold: one refused refuses all.
        let both = authorization.decide(
            &alice,
            Some("acme"),
            &[
                Asked::new("scope", "read", Some("eu")),
                Asked::new("scope", "move", Some("eu")),
            ],
        );
        assert!(!both.allowed);
        assert!(both.reason.contains("move on scope"), "{}", both.reason);
    }

    #[test]
    fn platform_operators_act_on_every_tenant() {
        let authorization = authorization();
        let ops = caller(CallerKind::PlatformOperator, None, &[]);
        for tenant in ["acme", "globex", "absent"] {
            let decision =
                authorization.decide(&ops, Some(tenant), &[Asked::new("tenant", "delete", None)]);
            assert!(decision.allowed, "{}", decision.reason);
            assert!(decision.reason.contains("platform operator"));
        }
        assert!(
            authorization
                .decide(&ops, None, &[Asked::new("tenant", "list", None)])
                .allowed
        );
    }

    #[test]
    fn every_command_asks_for_permissions_of_the_catalog() {
        let names = crate::commands::NAMES;
        assert_eq!(names.len(), 22);
        let inputs = json!({
            "onboardTenant": {"tenant": "acme", "type": "Business", "displayName": "A", "residency": "eu"},
            "changeTenant": {"tenant": "acme", "displayName": "A", "edge": {}, "domains": [], "quotas": {}},
            "addScope": {"tenant": "acme", "scope": {"name": "x", "displayName": "X", "parent": "eu"}},
            "moveScope": {"tenant": "acme", "scope": "france", "parent": "us"},
            "removeScope": {"tenant": "acme", "scope": "france"},
            "grantRole": {"tenant": "acme", "scope": "eu", "role": "Viewer", "users": ["bob"]},
            "revokeRole": {"tenant": "acme", "scope": "eu", "role": "Viewer", "users": ["bob"]},
            "createEnvironment": {"tenant": "acme", "environment": {"name": "dev", "kind": "Development", "scope": "eu"}},
            "removeEnvironment": {"tenant": "acme", "environment": "dev"},
            "requestCertificate": {"tenant": "acme", "name": "api", "dnsNames": ["api.acme.ossature.test"]},
            "offboardTenant": {"tenant": "acme"},
            "defineRole": {"tenant": "acme", "role": {"name": "deployer", "policies": ["workload-manager"]}},
            "removeRole": {"tenant": "acme", "role": "deployer"},
            "mapGroup": {"tenant": "acme", "scope": "eu", "group": "ops", "role": "deployer"},
            "unmapGroup": {"tenant": "acme", "scope": "eu", "group": "ops", "role": "deployer"},
            "applyTopic": {"tenant": "acme", "environment": "prod", "name": "orders", "spec": {}},
            "removeTopic": {"tenant": "acme", "environment": "prod", "name": "orders"},
            "applyServiceIdentity": {"tenant": "acme", "environment": "prod", "name": "api", "spec": {}},
            "removeServiceIdentity": {"tenant": "acme", "environment": "prod", "name": "api"},
            "rotateCredentials": {"tenant": "acme", "environment": "prod", "name": "api"},
            "applyWorkload": {"tenant": "acme", "environment": "prod", "name": "api", "spec": {}},
            "removeWorkload": {"tenant": "acme", "environment": "prod", "name": "api"},
        });
        for name in names {
            let command = Command::decode(name, &inputs[name]).unwrap().unwrap();
            for asked in command_static_asks(&command) {
                let resource = ossature_policy::catalog::resource(asked.resource)
                    .unwrap_or_else(|| panic!("{name}: no resource {}", asked.resource));
                assert!(
                    resource.action(asked.action).is_some(),
                    "{name}: {} offers no {}",
                    asked.resource,
                    asked.action
                );
            }
        }
        let grant = Command::decode("grantRole", &inputs["grantRole"])
            .unwrap()
            .unwrap();
        assert_eq!(
            command_static_asks(&grant),
            [Asked::new("grant", "create", Some("eu"))]
        );
        let change = Command::decode("changeTenant", &inputs["changeTenant"])
            .unwrap()
            .unwrap();
        assert_eq!(command_static_asks(&change).len(), 4);
    }

    /// What a command asks, with no environment placed in a scope.
    fn command_static_asks(command: &Command) -> Vec<Asked> {
        command_asks(command, &Watches::empty())
    }
}
