//! The Scope controller: a Keycloak group nested like the scope tree, and
//! RBAC in the tenant's namespace so that a grant on a scope applies to the
//! scope and all its descendants.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use ossature_crds::{Scope, ScopeRole, ScopeStatus, Tenant};
use serde_json::json;

use super::{find_tenant, owning_tenant, tenant_of, tenant_selected};
use crate::adapters::keycloak::GroupHome;
use crate::adapters::{Backend, Change, Verb};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{MANAGED_BY, SCOPE_LABEL};
use crate::kubernetes;
use crate::reconcile::{Error, Failure, Plan, Reconciled, Step, WatchContext};
use crate::scope_tree::{ScopeTree, path_string};

pub const FINALIZER: &str = "ossature.dev/scope-cleanup";
pub const GROUP_READY: &str = "GroupReady";
pub const RBAC_READY: &str = "RbacReady";

crate::object_status!(ScopeStatus);

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

impl Reconciled for Scope {
    const CONTROLLER: &'static str = "scope";
    const FINALIZER: &'static str = FINALIZER;
    type Status = ScopeStatus;

    fn status(&self) -> Option<&ScopeStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, scope: &Self) -> Api<Self> {
        Api::namespaced(client, &scope.namespace().unwrap_or_default())
    }

    fn selected(&self, ctx: &Context) -> bool {
        tenant_selected(self.metadata.namespace.as_deref(), ctx)
    }

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, ScopeStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        let (tenant, owner) =
            match owning_tenant(ctx, &namespace, "Scopes", previous.clone()).await? {
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

        let home = super::tenant::group_home(&owner)
            .filter(|_| super::tenant::backend_ready(&owner, conditions::REALM_READY));
        if let Some((realm, organization)) = home {
            // A scope whose parent changed moves its group, members and all.
            let moved_from = previous.path.filter(|p| *p != path).map(|p| split_path(&p));
            let attributes = BTreeMap::from([("scopePath".to_string(), vec![path.clone()])]);
            plan.steps.push(Step::new(
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
            plan.outcomes.push(Outcome::failed(
                GROUP_READY,
                reasons::WAITING_FOR_TENANT,
                format!("waiting for tenant {tenant}'s identity (realm or organization) to be provisioned"),
            ));
        }

        let objects = rbac_objects(&namespace, self, &tree.subtree(&name));
        plan.steps
            .push(Step::new(RBAC_READY, "role bindings", async move {
                ensure_rbac(ctx, &namespace, &name, objects).await
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
        let owner = find_tenant(ctx, tenant).await?;
        let home = owner.as_deref().and_then(super::tenant::group_home);
        if let (Some(path), Some((realm, organization)), false) = (
            self.status.as_ref().and_then(|s| s.path.clone()),
            home,
            super::tenant::retained(owner.as_deref()),
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
                        .scopes_in(&namespace)
                        .into_iter()
                        .filter(|s| s.name_any() != changed.name_any())
                        .map(|s| ObjectRef::from_obj(&*s))
                        .collect::<Vec<_>>()
                },
            )
            // Its tenant appearing, or its realm becoming ready.
            .watches_shared_stream(
                watch.tenants.clone(),
                move |tenant: std::sync::Arc<Tenant>| {
                    children
                        .scopes_in(&format!("tn-{}", tenant.name_any()))
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

fn split_path(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .map(String::from)
        .collect()
}

/// The tenant's scope tree from the watch store; from the API when the
/// store does not place this scope yet (a parent created a moment ago).
async fn scope_tree(ctx: &Context, namespace: &str, name: &str) -> Result<ScopeTree, Error> {
    let from = |scopes: Vec<Arc<Scope>>| {
        ScopeTree::new(scopes.iter().map(|s| (s.name_any(), s.spec.parent.clone())))
    };
    let tree = from(ctx.stores.scopes_in(namespace));
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

#[cfg(test)]
mod tests {
    use super::*;

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
