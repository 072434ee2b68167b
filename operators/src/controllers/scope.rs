//! The Scope controller: a Keycloak group nested like the scope tree, and
//! RBAC in the tenant's namespace so that a grant on a scope applies to the
//! scope and all its descendants.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use ossature_crds::{Scope, ScopeStatus, Tenant, TenantRole};
use ossature_model::conditions::{self, GROUP_READY, Outcome, RBAC_READY, reasons};
use ossature_model::identity::{GroupHome, group_home};
use ossature_model::names::{SCOPE_LABEL, tenant_namespace, tenant_of};
use ossature_model::scopes::{ScopeRule, ScopeTree, path_string, rbac_objects, split_path};
use ossature_model::tenants::{backend_ready, retained};

use super::{Home, owning_tenant};
use crate::adapters::{Backend, Change, Failure, Verb};
use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext};

pub const FINALIZER: &str = "ossature.dev/scope-cleanup";

impl Reconciled for Scope {
    const CONTROLLER: &'static str = "scope";
    const FINALIZER: &'static str = FINALIZER;
    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, ScopeStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        let (tenant, owner) =
            match owning_tenant(ctx, &namespace, ("Scopes", Home::Tenant), previous.clone()).await? {
                Ok(found) => found,
                Err(stalled) => return Ok(stalled),
            };

        let tree = scope_tree(ctx, &namespace, &name).await?;
        let segments = match tree.path(&name) {
            Ok(segments) => segments,
            Err(fault) => {
                return Ok(Plan::stalled(
                    previous,
                    fault.reason(),
                    fault.message(&name),
                ));
            }
        };
        let path = path_string(&segments);
        let mut plan = Plan::new(ScopeStatus {
            path: Some(path.clone()),
            ..Default::default()
        });

        let home = group_home(&owner).filter(|_| backend_ready(&owner, conditions::REALM_READY));
        if let Some((realm, organization)) = home {
            // A scope whose parent changed moves its group, members and all.
            let moved_from = previous.path.filter(|p| *p != path).map(|p| split_path(&p));
            let attributes = BTreeMap::from([("scopePath".to_string(), vec![path.clone()])]);
            plan.step(Step::new(
                GROUP_READY,
                format!("group {path}"),
                async move {
                    let home = home_of(&realm, organization.as_deref());
                    ctx.keycloak
                        .ensure_group(home, &segments, &attributes, moved_from.as_deref())
                        .await
                        .map(|c| vec![c])
                },
            ));
        } else {
            plan.outcome(Outcome::failed(
                GROUP_READY,
                reasons::WAITING_FOR_TENANT,
                format!("waiting for tenant {tenant}'s identity (realm or organization) to be provisioned"),
            ));
        }

        let (policies, roles) = super::tenant_role::tenant_roles(ctx, &namespace);
        let rules_of = |role: &str| {
            ossature_policy::scope_rules(&policies, &roles, role).map(|rules| {
                rules
                    .iter()
                    .map(|r| ScopeRule::new(r.resource, &r.verbs))
                    .collect()
            })
        };
        let (objects, unknown) = rbac_objects(&namespace, self, &tree.subtree(&name), &rules_of);
        plan.steps
            .push(Step::new(RBAC_READY, "role bindings", async move {
                let changes = ensure_rbac(ctx, &namespace, &name, objects).await?;
                if unknown.is_empty() {
                    Ok(changes)
                } else {
                    // The other grants hold; these wait for their role.
                    Err(Failure::new(
                        reasons::ROLE_NOT_FOUND,
                        format!("grants of this scope give nothing: {}; define the role (a TenantRole) or grant another", unknown.join("; ")),
                    ))
                }
            }));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let api: Api<Scope> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.calls.record(Backend::Kubernetes, Verb::Read);
        let children: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| {
                s.spec.parent.as_deref() == Some(name.as_str())
                    && s.metadata.deletion_timestamp.is_none()
            })
            .map(|s| s.name_any())
            .collect();
        if !children.is_empty() {
            // Reverse order: children go first.
            return Err(Error::Blocked(format!(
                "scope {name} still has child scopes {children:?}; delete them first"
            )));
        }
        ensure_rbac(ctx, &namespace, &name, Vec::new())
            .await
            .map_err(|f| Error::Blocked(f.message))?;
        let Some(tenant) = tenant_of(&namespace) else {
            return Ok(Vec::new());
        };
        let owner = ctx.find::<Tenant>(tenant).await?;
        let home = owner.as_deref().and_then(group_home);
        if let (Some(path), Some((realm, organization)), false) = (
            self.status.as_ref().and_then(|s| s.path.clone()),
            home,
            retained(owner.as_deref()),
        ) {
            ctx.keycloak
                .delete_group(home_of(&realm, organization.as_deref()), &split_path(&path))
                .await?;
        }
        Ok(Vec::new())
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let scopes = watch.stores.clone();
        let children = watch.stores.clone();
        let granted = watch.stores.clone();
        controller
            .owns(
                Api::<RoleBinding>::all(watch.client.clone()),
                watcher::Config::default().labels(SCOPE_LABEL),
            )
            .owns(
                Api::<Role>::all(watch.client.clone()),
                watcher::Config::default().labels(SCOPE_LABEL),
            )
            // A scope's path and its ancestors' subtrees follow every change
            // to another scope of the tenant: requeue them all.
            .watches(
                Api::<Scope>::all(watch.client.clone()),
                watcher::Config::default(),
                move |changed: Scope| {
                    let namespace = changed.namespace().unwrap_or_default();
                    scopes
                        .in_namespace::<Scope>(&namespace)
                        .into_iter()
                        .filter(|s| s.name_any() != changed.name_any())
                        .map(|s| ObjectRef::from_obj(&*s))
                        .collect::<Vec<_>>()
                },
            )
            // A role its grants may name, defined, changed or removed.
            .watches_shared_stream(
                watch.changes_of(|role: &TenantRole| role.spec.clone()),
                move |role: std::sync::Arc<TenantRole>| {
                    granted
                        .in_namespace::<Scope>(&role.namespace().unwrap_or_default())
                        .into_iter()
                        .map(|s| ObjectRef::from_obj(&*s))
                        .collect::<Vec<_>>()
                },
            )
            // Its tenant appearing, or its realm becoming ready.
            .watches_shared_stream(
                watch.changes::<Tenant>(),
                move |tenant: std::sync::Arc<Tenant>| {
                    children
                        .in_namespace::<Scope>(&tenant_namespace(&tenant.name_any()))
                        .into_iter()
                        .map(|s| ObjectRef::from_obj(&*s))
                        .collect::<Vec<_>>()
                },
            )
    }
}

fn home_of<'a>(realm: &'a str, organization: Option<&'a str>) -> GroupHome<'a> {
    match organization {
        Some(id) => GroupHome::Organization { realm, id },
        None => GroupHome::Realm(realm),
    }
}

/// The tenant's scope tree from the watch store; from the API when the
/// store does not place this scope yet (a parent created a moment ago).
async fn scope_tree(ctx: &Context, namespace: &str, name: &str) -> Result<ScopeTree, Error> {
    let from = |scopes: Vec<Arc<Scope>>| {
        ScopeTree::new(scopes.iter().map(|s| (s.name_any(), s.spec.parent.clone())))
    };
    let tree = from(ctx.stores.in_namespace::<Scope>(namespace));
    if tree.path(name).is_ok() {
        return Ok(tree);
    }
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let listed = Api::<Scope>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(from(listed.items.into_iter().map(Arc::new).collect()))
}

/// Applies the scope's Roles and RoleBindings and deletes those of roles no
/// longer granted.
async fn ensure_rbac(
    ctx: &Context,
    namespace: &str,
    scope: &str,
    objects: Vec<(Role, RoleBinding)>,
) -> Result<Vec<Change>, Failure> {
    let roles = Api::<Role>::namespaced(ctx.client.clone(), namespace);
    let bindings = Api::<RoleBinding>::namespaced(ctx.client.clone(), namespace);
    let mut changes = Vec::new();
    let mut wanted = Vec::new();
    for (role, binding) in &objects {
        changes.push(kubernetes::ensure(&roles, role, &ctx.calls).await?);
        changes.push(kubernetes::ensure(&bindings, binding, &ctx.calls).await?);
        wanted.push(role.name_any());
    }
    let selector = format!("{SCOPE_LABEL}={scope}");
    changes.extend(kubernetes::prune(&bindings, &selector, &wanted, &ctx.calls).await?);
    changes.extend(kubernetes::prune(&roles, &selector, &wanted, &ctx.calls).await?);
    Ok(changes)
}
