//! The Scope controller: a Keycloak group nested like the scope tree, and
//! RBAC in the tenant's namespace so that a grant on a scope applies to the
//! scope and all its descendants.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use ossature_crds::{Scope, ScopeRole, ScopeStatus};
use serde_json::json;
use tracing::{instrument, warn};

use crate::adapters::{Backend, Verb};
use crate::conditions::{self, Outcome};
use crate::context::Context;
use crate::environment::tenant_of;
use crate::kubernetes;
use crate::scope_tree::{ScopeTree, path_string};
use crate::tenant::Error;

pub const FINALIZER: &str = "ossature.dev/scope-cleanup";
pub const GROUP_READY: &str = "GroupReady";
pub const RBAC_READY: &str = "RbacReady";

#[instrument(skip(scope, ctx), fields(scope = %scope.name_any()))]
pub async fn reconcile(scope: Arc<Scope>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Scope> =
        Api::namespaced(ctx.client.clone(), &scope.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, scope, |event| async {
        match event {
            finalizer::Event::Apply(s) => apply(&s, &ctx).await,
            finalizer::Event::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(scope: Arc<Scope>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(scope = %scope.name_any(), category = error.category(), "reconcile failed: {error}");
    ctx.metrics.failure("scope", error.category());
    Action::requeue(ctx.backoff(&key(&scope)))
}

fn key(scope: &Scope) -> String {
    format!(
        "scope/{}/{}",
        scope.namespace().unwrap_or_default(),
        scope.name_any()
    )
}

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
                "labels": {crate::desired::MANAGED_BY.0: crate::desired::MANAGED_BY.1, "ossature.dev/scope": name},
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

async fn apply(scope: &Scope, ctx: &Context) -> Result<Action, Error> {
    let namespace = scope.namespace().unwrap_or_default();
    let name = scope.name_any();
    let api: Api<Scope> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    let mut path = None;
    let settled = conditions::settled(
        &scope.status.clone().unwrap_or_default().conditions,
        scope.metadata.generation,
    );

    let stalled = match tenant_of(&namespace) {
        None => Some(Outcome::failed(
            conditions::STALLED,
            "NotInTenantNamespace",
            format!(
                "namespace {namespace} is not a tenant namespace; create Scopes in tn-<tenant>"
            ),
        )),
        Some(tenant) => {
            ctx.calls.record(Backend::Kubernetes, Verb::Read);
            let all = api.list(&ListParams::default()).await?;
            let tree = ScopeTree::new(
                all.items
                    .iter()
                    .map(|s| (s.name_any(), s.spec.parent.clone())),
            );
            match tree.path(&name) {
                Err(fault) => Some(Outcome::failed(
                    conditions::STALLED,
                    fault.reason(),
                    fault.message(&name),
                )),
                Ok(segments) => {
                    let text = path_string(&segments);
                    let attributes =
                        BTreeMap::from([("scopePath".to_string(), vec![text.clone()])]);
                    let result = ctx
                        .keycloak
                        .ensure_group(tenant, &segments, &attributes)
                        .await;
                    outcomes.push(
                        ctx.step(
                            "scope",
                            GROUP_READY,
                            &format!("group {text}"),
                            result
                                .map(|c| vec![c])
                                .map_err(|e| (e.category(), e.to_string())),
                            settled,
                            &mut events,
                        ),
                    );

                    let mut changes = Vec::new();
                    let mut failure = None;
                    for (role, binding) in rbac_objects(&namespace, scope, &tree.subtree(&name)) {
                        let roles = Api::<Role>::namespaced(ctx.client.clone(), &namespace);
                        let bindings =
                            Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace);
                        match kubernetes::ensure(&roles, &role, &ctx.calls).await {
                            Ok(c) => changes.push(c),
                            Err(e) => failure = Some(("KubernetesApi", e.to_string())),
                        }
                        match kubernetes::ensure(&bindings, &binding, &ctx.calls).await {
                            Ok(c) => changes.push(c),
                            Err(e) => failure = Some(("KubernetesApi", e.to_string())),
                        }
                    }
                    let result = match failure {
                        Some(f) => Err(f),
                        None => Ok(changes),
                    };
                    outcomes.push(ctx.step(
                        "scope",
                        RBAC_READY,
                        "role bindings",
                        result,
                        settled,
                        &mut events,
                    ));
                    path = Some(text);
                    None
                }
            }
        }
    };

    let previous = scope.status.clone().unwrap_or_default();
    let status = ScopeStatus {
        observed_generation: scope.metadata.generation,
        conditions: conditions::roll_up(
            &previous.conditions,
            &outcomes,
            stalled.as_ref(),
            scope.metadata.generation,
        ),
        path: path.or(previous.path.clone()),
    };
    let unchanged = conditions::same(&previous.conditions, &status.conditions)
        && previous.path == status.path
        && previous.observed_generation == status.observed_generation;
    if !unchanged {
        ctx.calls.record(Backend::Kubernetes, Verb::Write);
        api.patch_status(
            &name,
            &PatchParams::apply(kubernetes::FIELD_MANAGER).force(),
            &Patch::Apply(
                json!({"apiVersion": "ossature.dev/v1alpha1", "kind": "Scope", "status": status}),
            ),
        )
        .await?;
    }
    ctx.publish(scope.object_ref(&()), events).await;
    if outcomes.iter().any(|o| !o.ok) {
        Ok(Action::requeue(ctx.backoff(&key(scope))))
    } else {
        ctx.reset_backoff(&key(scope));
        // Descendants change the subtree; the periodic reconcile follows them.
        Ok(Action::requeue(ctx.settings.resync))
    }
}

async fn cleanup(scope: &Scope, ctx: &Context) -> Result<Action, Error> {
    let namespace = scope.namespace().unwrap_or_default();
    let name = scope.name_any();
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
    if let (Some(tenant), Some(path)) = (
        tenant_of(&namespace),
        scope.status.as_ref().and_then(|s| s.path.clone()),
    ) {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(String::from)
            .collect();
        ctx.keycloak.delete_group(tenant, &segments).await?;
    }
    ctx.reset_backoff(&key(scope));
    Ok(Action::await_change())
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
