//! The TenantRole controller: checks a tenant's own role against the
//! policy catalog and reports what it gives. It provisions nothing itself:
//! the Scope controller turns grants of it into RBAC, the control plane
//! decides with it.

use kube::ResourceExt;
use kube::runtime::events::Event;
use ossature_crds::{RolePermission, TenantRole, TenantRoleStatus};
use ossature_model::conditions::{Outcome, PERMISSIONS_READY, reasons};

use super::{Home, owning_tenant};
use crate::context::Context;
use crate::reconcile::{Error, Plan, Reconciled};

pub const FINALIZER: &str = "ossature.dev/tenant-role-cleanup";

/// The policies and roles of every TenantRole in `namespace`, as the policy
/// crate reads them.
pub fn tenant_roles(
    ctx: &Context,
    namespace: &str,
) -> (Vec<ossature_policy::Policy>, Vec<ossature_policy::Role>) {
    let roles = ctx.stores.in_namespace::<TenantRole>(namespace);
    ossature_policy::from_tenant_roles(
        roles
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| r.as_ref()),
    )
}

impl Reconciled for TenantRole {
    const CONTROLLER: &'static str = "tenantrole";
    const FINALIZER: &'static str = FINALIZER;
    // Scopes follow the roles their grants name.
    const FOLLOWED: bool = true;

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, TenantRoleStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        if let Err(stalled) =
            owning_tenant(ctx, &namespace, ("TenantRoles", Home::Tenant), previous).await?
        {
            return Ok(stalled);
        }
        let (mut policies, mut roles) = tenant_roles(ctx, &namespace);
        // This object as it is now, whatever the store holds yet.
        let (own_policies, own_role) = ossature_policy::from_tenant_roles([self]);
        policies.retain(|p| !own_policies.iter().any(|o| o.name == p.name));
        policies.extend(own_policies);
        roles.retain(|r| r.name != name);
        roles.extend(own_role);
        match ossature_policy::roles::permissions_of(&policies, &roles, &name) {
            Ok(permissions) => {
                let count: usize = permissions.iter().map(|p| p.actions.len()).sum();
                let mut plan = Plan::new(TenantRoleStatus {
                    permissions: permissions
                        .into_iter()
                        .map(|p| RolePermission {
                            resource: p.resource,
                            actions: p
                                .actions
                                .into_iter()
                                .map(ossature_crds::ActionName)
                                .collect(),
                        })
                        .collect(),
                    ..Default::default()
                });
                plan.outcome(Outcome::ready(
                    PERMISSIONS_READY,
                    format!("role {name} gives {count} permissions"),
                ));
                Ok(plan)
            }
            Err(problems) => Ok(Plan::stalled(
                TenantRoleStatus::default(),
                reasons::INVALID_ROLE,
                format!("role {name} gives nothing until this is fixed: {problems}"),
            )),
        }
    }

    async fn cleanup<'a>(&'a self, _ctx: &'a Context) -> Result<Vec<Event>, Error> {
        // Grants that name it give nothing once it is gone (the Scope
        // controller follows); nothing else was made for it.
        Ok(Vec::new())
    }
}
