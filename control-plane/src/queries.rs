//! The queries: answered from the shared watch (and, for invocations, from
//! the idempotency records), never by asking a backend.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use ossature_crds::Tenant;
use serde_json::Value;

use crate::api::validate::{self, Check};
use crate::api::{
    CallerPermissions, CallerPermissionsQuery, ChildStatus, InvocationState, InvocationStatus,
    InvocationStatusQuery, ListTenantsQuery, PermissionView, PolicyView, RolePermissions,
    RolePermissionsQuery, RoleView, TenantList, TenantStatus, TenantStatusQuery, TenantSummary,
    TenantTree, TenantTreeQuery, TenantType,
};
use crate::auth::Caller;
use crate::authorize::Authorization;
use crate::commands::plan::PlanSettings;
use crate::commands::{condition_view, decode_as};
use crate::idempotency::Idempotency;
use crate::problem::{Problem, ProblemKind};
use crate::watch::Watches;

pub const NAMES: &[&str] = &[
    "tenantStatus",
    "listTenants",
    "invocationStatus",
    "tenantTree",
    "callerPermissions",
    "rolePermissions",
];
/// Most roles one rolePermissions query asks about.
const MAX_ROLES: usize = 50;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    TenantStatus(TenantStatusQuery),
    ListTenants(ListTenantsQuery),
    InvocationStatus(InvocationStatusQuery),
    TenantTree(TenantTreeQuery),
    CallerPermissions(CallerPermissionsQuery),
    RolePermissions(RolePermissionsQuery),
}

impl Query {
    pub fn decode(name: &str, body: &Value) -> Option<Result<Query, Problem>> {
        Some(match name {
            "tenantStatus" => decode_as(body).map(Query::TenantStatus),
            "listTenants" => decode_as(body).map(Query::ListTenants),
            "invocationStatus" => decode_as(body).map(Query::InvocationStatus),
            "tenantTree" => decode_as(body).map(Query::TenantTree),
            "callerPermissions" => decode_as(body).map(Query::CallerPermissions),
            "rolePermissions" => decode_as(body).map(Query::RolePermissions),
            _ => return None,
        })
    }

    pub fn check(&self) -> Result<(), Problem> {
        let mut check = Check::default();
        match self {
            Query::TenantStatus(q) => check.field("tenant", validate::tenant_name(&q.tenant)),
            Query::ListTenants(q) => {
                if let Some(limit) = q.limit {
                    check.field("limit", validate::range(limit.into(), 1, MAX_PAGE.into()));
                }
                if let Some(token) = &q.continue_token
                    && after_of(token).is_none()
                {
                    check.fail("continue", "is not a continue token this API gave; pass the `continue` of the previous page as it was, or leave it out for the first page");
                }
            }
            Query::InvocationStatus(q) => {
                check.field("invocationId", validate::ulid(&q.invocation_id))
            }
            Query::TenantTree(TenantTreeQuery { tenant, scope })
            | Query::CallerPermissions(CallerPermissionsQuery { tenant, scope }) => {
                check.field("tenant", validate::tenant_name(tenant));
                if let Some(scope) = scope {
                    check.field("scope", validate::scope_name(scope));
                }
            }
            Query::RolePermissions(q) => {
                check.field("tenant", validate::tenant_name(&q.tenant));
                if q.roles.is_empty() || q.roles.len() > MAX_ROLES {
                    check.fail(
                        "roles",
                        format!(
                            "name 1 to {MAX_ROLES} roles, such as Viewer or one of the tenant's own"
                        ),
                    );
                }
                for (i, role) in q.roles.iter().enumerate() {
                    check.field(format!("roles[{i}]"), validate::text(role, 63));
                }
            }
        }
        check.into_result().map_err(Problem::invalid)
    }
}

/// The last name of the previous page, from a continue token.
fn after_of(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let name = String::from_utf8(bytes).ok()?;
    validate::tenant_name(&name).ok().map(|()| name)
}

fn ready_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == ossature_model::conditions::READY)
        .map(|c| c.status == "True")
}

/// A tenant's status from the watch.
pub fn tenant_status(watches: &Watches, tenant: &str) -> Result<TenantStatus, Problem> {
    let object = watches.tenant(tenant).ok_or_else(|| {
        Problem::new(
            ProblemKind::TenantNotFound,
            format!("there is no tenant {tenant}"),
        )
    })?;
    let status = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation.unwrap_or(0);
    let current = status.observed_generation == Some(generation);
    let ready_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == ossature_model::conditions::READY);
    let child = |name: String, conditions: &[_]| ChildStatus {
        name,
        ready: ready_of(conditions),
        conditions: conditions.iter().map(condition_view).collect(),
    };
    Ok(TenantStatus {
        tenant: tenant.to_string(),
        ready: ready_condition.map(|c| c.status == "True" && current),
        summary: ready_condition.map(|c| {
            if current {
                c.message.clone()
            } else {
                format!(
                    "the operator has not reported on generation {generation} yet; last: {}",
                    c.message
                )
            }
        }),
        generation,
        observed_generation: status.observed_generation,
        deleting: object.metadata.deletion_timestamp.is_some(),
        conditions: status.conditions.iter().map(condition_view).collect(),
        scopes: watches
            .scopes_of(tenant)
            .iter()
            .map(|s| {
                let conditions = s.status.clone().unwrap_or_default().conditions;
                child(s.name_any(), &conditions)
            })
            .collect(),
        environments: watches
            .environments_of(tenant)
            .iter()
            .map(|e| {
                let conditions = e.status.clone().unwrap_or_default().conditions;
                child(e.name_any(), &conditions)
            })
            .collect(),
    })
}

fn summary(tenant: &Tenant) -> TenantSummary {
    let conditions = tenant.status.clone().unwrap_or_default().conditions;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == ossature_model::conditions::READY);
    TenantSummary {
        name: tenant.name_any(),
        tenant_type: match tenant.spec.tenant_type {
            ossature_crds::TenantType::Business => TenantType::Business,
            ossature_crds::TenantType::Consumer => TenantType::Consumer,
        },
        display_name: tenant.spec.display_name.clone(),
        residency: tenant.spec.residency.clone(),
        ready: ready.map(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
    }
}

/// A page of the tenants `caller` may see, in name order.
pub fn list_tenants(watches: &Watches, caller: &Caller, query: &ListTenantsQuery) -> TenantList {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE) as usize;
    let after = query.continue_token.as_deref().and_then(after_of);
    let mut tenants: Vec<_> = watches
        .tenants
        .state()
        .into_iter()
        .filter(|t| {
            caller.is_platform_operator() || caller.tenant.as_deref() == Some(&t.name_any())
        })
        .filter(|t| after.as_deref().is_none_or(|a| t.name_any().as_str() > a))
        .collect();
    tenants.sort_by_key(|t| t.name_any());
    let more = tenants.len() > limit;
    tenants.truncate(limit);
    TenantList {
        continue_token: more
            .then(|| tenants.last().map(|t| URL_SAFE_NO_PAD.encode(t.name_any())))
            .flatten(),
        items: tenants.iter().map(|t| summary(t)).collect(),
    }
}

/// The tree of a tenant (or of one of its scopes) from the watch.
pub fn tenant_tree(
    watches: &Watches,
    settings: &PlanSettings,
    query: &TenantTreeQuery,
) -> Result<TenantTree, Problem> {
    let tenant = &query.tenant;
    let objects = crate::commands::plan::current(watches, tenant).ok_or_else(|| {
        Problem::new(
            ProblemKind::TenantNotFound,
            format!("there is no tenant {tenant}"),
        )
    })?;
    let root = ossature_model::tree::tree(&objects, &settings.settings());
    let root = match &query.scope {
        None => root,
        Some(scope) => {
            let key = ossature_model::tree::Key::new(
                ossature_model::tree::Backend::Kubernetes,
                ossature_model::tree::Kind::Scope,
                format!("{}/{scope}", ossature_model::tenant_namespace(tenant)),
            );
            root.walk()
                .into_iter()
                .find(|node| node.key == key)
                .cloned()
                .ok_or_else(|| {
                    Problem::new(
                        ProblemKind::ObjectNotFound,
                        format!("tenant {tenant} has no scope {scope}"),
                    )
                })?
        }
    };
    Ok(TenantTree {
        tenant: tenant.clone(),
        scope: query.scope.clone(),
        root: serde_json::to_value(&root)
            .map_err(|e| Problem::new(ProblemKind::Internal, format!("encoding the tree: {e}")))?,
    })
}

fn permission_views(permissions: &[ossature_policy::Permission]) -> Vec<PermissionView> {
    permissions
        .iter()
        .map(|p| PermissionView {
            resource: p.resource.clone(),
            action: p.action.clone(),
        })
        .collect()
}

/// What `caller` may do in the scope asked.
pub fn caller_permissions(
    authorization: &Authorization,
    caller: &Caller,
    query: &CallerPermissionsQuery,
) -> CallerPermissions {
    let found = authorization.authorizer().permissions(
        &caller.policy_caller(),
        Some(&query.tenant),
        query.scope.as_deref(),
    );
    CallerPermissions {
        tenant: query.tenant.clone(),
        scope: query.scope.clone(),
        permissions: permission_views(&found.permissions),
        reason: found.reason,
    }
}

/// The policies and permissions of the roles asked.
pub fn role_permissions(
    authorization: &Authorization,
    query: &RolePermissionsQuery,
) -> RolePermissions {
    let found = authorization
        .authorizer()
        .role_permissions(&query.tenant, &query.roles);
    RolePermissions {
        tenant: query.tenant.clone(),
        roles: found
            .roles
            .into_iter()
            .map(|role| RoleView {
                name: role.name,
                standard: role.standard,
                description: role.description,
                policies: role
                    .policies
                    .into_iter()
                    .map(|policy| PolicyView {
                        name: policy.name,
                        description: policy.description,
                        permissions: policy
                            .permissions
                            .iter()
                            .flat_map(|p| {
                                p.actions.iter().map(|a| PermissionView {
                                    resource: p.resource.clone(),
                                    action: a.clone(),
                                })
                            })
                            .collect(),
                    })
                    .collect(),
                permissions: permission_views(&role.permissions),
            })
            .collect(),
        unknown: found.unknown,
    }
}

/// The record of a command's invocation, and the tenant it acted on.
pub async fn invocation_record(
    idempotency: &Idempotency,
    query: &InvocationStatusQuery,
) -> Result<(ConfigMap, String), Problem> {
    let record = idempotency
        .by_invocation(&query.invocation_id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                ProblemKind::ObjectNotFound,
                format!(
                    "no command invocation {} is remembered: queries and dry runs are not kept, and commands are kept for the idempotency period",
                    query.invocation_id
                ),
            )
        })?;
    let tenant = record
        .data
        .as_ref()
        .and_then(|d| d.get("tenant").cloned())
        .unwrap_or_default();
    Ok((record, tenant))
}

pub fn invocation_status(record: &ConfigMap, tenant: String) -> InvocationStatus {
    let data = record.data.clone().unwrap_or_default();
    let field = |k: &str| data.get(k).cloned();
    let completed = field("state").as_deref() == Some("Completed");
    InvocationStatus {
        invocation_id: field("invocation-id").unwrap_or_default(),
        command: field("command").unwrap_or_default(),
        tenant,
        state: if completed {
            InvocationState::Completed
        } else {
            InvocationState::InFlight
        },
        status: field("status").and_then(|s| s.parse().ok()),
        result: field("answer").and_then(|a| serde_json::from_str(&a).ok()),
        started_at: field("started-at").unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn continue_tokens_are_only_ours() {
        let token = URL_SAFE_NO_PAD.encode("acme");
        assert_eq!(after_of(&token).as_deref(), Some("acme"));
        assert!(after_of("!!").is_none());
        assert!(after_of(&URL_SAFE_NO_PAD.encode("Not A Tenant")).is_none());
        let query = Query::decode("listTenants", &json!({"limit": 0, "continue": "x"}))
            .unwrap()
            .unwrap();
        let problem = query.check().unwrap_err();
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "continue"]);
    }
}
