//! The Environment controller: a namespace per tenant environment, and a
//! Pulsar namespace under the tenant with schema validation and retention.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use ossature_crds::{DeletionPolicy, Environment, EnvironmentStatus, Tenant};
use serde_json::json;
use tracing::{instrument, warn};

use crate::adapters::{Backend, Verb};
use crate::conditions::{self, Outcome};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::kubernetes;
use crate::tenant::Error;

pub const FINALIZER: &str = "ossature.dev/environment-cleanup";

pub mod reasons {
    pub const NOT_IN_TENANT_NAMESPACE: &str = "NotInTenantNamespace";
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
}

/// The tenant an Environment belongs to: the one whose namespace holds it.
pub fn tenant_of(namespace: &str) -> Option<&str> {
    namespace
        .strip_prefix("tn-")
        .filter(|t| !t.is_empty() && !t.contains("--"))
}

#[instrument(skip(environment, ctx), fields(environment = %environment.name_any()))]
pub async fn reconcile(environment: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = environment.namespace().unwrap_or_default();
    let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, environment, |event| async {
        match event {
            finalizer::Event::Apply(e) => apply(&e, &ctx).await,
            finalizer::Event::Cleanup(e) => cleanup(&e, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(environment: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(environment = %environment.name_any(), category = error.category(), "reconcile failed: {error}");
    ctx.metrics.failure("environment", error.category());
    Action::requeue(ctx.backoff(&key(&environment)))
}

fn key(environment: &Environment) -> String {
    format!(
        "environment/{}/{}",
        environment.namespace().unwrap_or_default(),
        environment.name_any()
    )
}

async fn apply(environment: &Environment, ctx: &Context) -> Result<Action, Error> {
    let namespace = environment.namespace().unwrap_or_default();
    let name = environment.name_any();
    let mut events = Vec::new();

    // What admission cannot see: which tenant this is, and whether it exists.
    let stalled = match tenant_of(&namespace) {
        None => Some(Outcome::failed(
            conditions::STALLED,
            reasons::NOT_IN_TENANT_NAMESPACE,
            format!(
                "namespace {namespace} is not a tenant namespace; create Environments in tn-<tenant>"
            ),
        )),
        Some(tenant) => {
            ctx.calls.record(Backend::Kubernetes, Verb::Read);
            match Api::<Tenant>::all(ctx.client.clone())
                .get_opt(tenant)
                .await?
            {
                None => Some(Outcome::failed(
                    conditions::STALLED,
                    reasons::TENANT_NOT_FOUND,
                    format!("tenant {tenant} does not exist; create it first"),
                )),
                Some(_) => None,
            }
        }
    };

    let mut outcomes = Vec::new();
    let mut status = environment.status.clone().unwrap_or_default();
    let settled = conditions::settled(&status.conditions, environment.metadata.generation);
    if stalled.is_none() {
        let tenant = tenant_of(&namespace).expect("checked above");
        let names = TenantNames::new(tenant).environment(&name);
        let objects = desired::namespace_objects(
            &names.namespace,
            tenant,
            Some(&name),
            &environment.spec.quotas,
        );
        let owner = environment
            .controller_owner_ref(&())
            .expect("an Environment read from the API has a uid");
        // The finalizer removes the namespace; a namespaced owner cannot own it.
        let result =
            kubernetes::ensure_namespace_objects(&ctx.client, objects, owner, false, &ctx.calls)
                .await;
        outcomes.push(ctx.step(
            "environment",
            conditions::NAMESPACE_READY,
            &format!("namespace {}", names.namespace),
            result.map_err(|e| ("KubernetesApi", e.to_string())),
            settled,
            &mut events,
        ));

        let policy = desired::namespace_policy(&environment.spec);
        let result = ctx
            .pulsar
            .ensure_namespace(tenant, &names.pulsar_namespace, &policy)
            .await
            .map(|c| vec![c]);
        outcomes.push(ctx.step(
            "environment",
            conditions::MESSAGING_READY,
            &format!("Pulsar namespace {tenant}/{}", names.pulsar_namespace),
            result.map_err(|e| (e.category(), e.to_string())),
            settled,
            &mut events,
        ));
        status.namespace = Some(names.namespace.clone());
        status.pulsar_namespace = Some(format!("{tenant}/{}", names.pulsar_namespace));
        status.secrets_path = Some(names.secrets_prefix.clone());
    }

    let conditions = conditions::roll_up(
        &status.conditions,
        &outcomes,
        stalled.as_ref(),
        environment.metadata.generation,
    );
    let new = EnvironmentStatus {
        observed_generation: environment.metadata.generation,
        conditions,
        ..status.clone()
    };
    let previous = environment.status.clone().unwrap_or_default();
    let unchanged = conditions::same(&previous.conditions, &new.conditions)
        && EnvironmentStatus {
            conditions: Vec::new(),
            ..previous
        } == EnvironmentStatus {
            conditions: Vec::new(),
            ..new.clone()
        };
    if !unchanged {
        ctx.calls.record(Backend::Kubernetes, Verb::Write);
        Api::<Environment>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(kubernetes::FIELD_MANAGER).force(),
                &Patch::Apply(json!({"apiVersion": "ossature.dev/v1alpha1", "kind": "Environment", "status": new})),
            )
            .await?;
    }
    ctx.publish(environment.object_ref(&()), events).await;

    if outcomes.iter().any(|o| !o.ok) {
        Ok(Action::requeue(ctx.backoff(&key(environment))))
    } else {
        ctx.reset_backoff(&key(environment));
        Ok(Action::requeue(ctx.settings.resync))
    }
}

async fn cleanup(environment: &Environment, ctx: &Context) -> Result<Action, Error> {
    let namespace = environment.namespace().unwrap_or_default();
    let name = environment.name_any();
    if let Some(tenant) = tenant_of(&namespace) {
        let names = TenantNames::new(tenant).environment(&name);
        if environment.spec.deletion_policy == DeletionPolicy::Delete {
            ctx.pulsar
                .delete_namespace(tenant, &names.pulsar_namespace)
                .await?;
        }
        kubernetes::delete(
            &Api::<Namespace>::all(ctx.client.clone()),
            &names.namespace,
            &ctx.calls,
        )
        .await?;
    }
    ctx.reset_backoff(&key(environment));
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_read_from_the_namespace() {
        assert_eq!(tenant_of("tn-acme"), Some("acme"));
        assert_eq!(tenant_of("tn-acme-eu"), Some("acme-eu"));
        assert_eq!(
            tenant_of("tn-acme--prod"),
            None,
            "an environment namespace is not a tenant's"
        );
        assert_eq!(tenant_of("default"), None);
        assert_eq!(tenant_of("tn-"), None);
    }
}
