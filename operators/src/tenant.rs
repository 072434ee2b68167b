//! The Tenant controller: namespace, realm, Pulsar tenant and OpenBao paths
//! of each tenant, in that order; removed in reverse order on delete.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use ossature_crds::{DeletionPolicy, Environment, Scope, Tenant, TenantStatus};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::adapters::{BackendError, Change};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::kubernetes;

pub const FINALIZER: &str = "ossature.dev/tenant-cleanup";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("finalizer: {0}")]
    Finalizer(Box<finalizer::Error<Error>>),
    #[error("{0}")]
    Blocked(String),
}

impl Error {
    /// Low-cardinality label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Backend(e) => e.category(),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "Finalizer",
            },
            Error::Blocked(_) => "CleanupBlocked",
        }
    }
}

#[instrument(skip(tenant, ctx), fields(tenant = %tenant.name_any()))]
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            finalizer::Event::Apply(t) => apply(&t, &ctx).await,
            finalizer::Event::Cleanup(t) => cleanup(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(tenant = %tenant.name_any(), category = error.category(), "reconcile failed: {error}");
    ctx.metrics.failure("tenant", error.category());
    Action::requeue(ctx.backoff(&format!("tenant/{}", tenant.name_any())))
}

async fn namespace_step(
    tenant: &Tenant,
    names: &TenantNames,
    ctx: &Context,
) -> Result<Vec<Change>, kube::Error> {
    let objects =
        desired::namespace_objects(&names.namespace, &names.tenant, None, &tenant.spec.quotas);
    let owner = tenant
        .controller_owner_ref(&())
        .expect("a Tenant read from the API has a uid");
    kubernetes::ensure_namespace_objects(&ctx.client, objects, owner, true, &ctx.calls).await
}

async fn realm_step(
    tenant: &Tenant,
    names: &TenantNames,
    ctx: &Context,
) -> Result<Vec<Change>, BackendError> {
    let settings = desired::realm_settings(names, &tenant.spec);
    Ok(vec![
        ctx.keycloak.ensure_realm(&settings).await?,
        ctx.keycloak.ensure_scope_claim(&names.realm).await?,
    ])
}

async fn secrets_step(names: &TenantNames, ctx: &Context) -> Result<Vec<Change>, BackendError> {
    let policy = crate::adapters::openbao::tenant_policy(
        &names.kv_mount,
        &names.transit_mount,
        &names.transit_key,
    );
    Ok(vec![
        ctx.openbao
            .ensure_kv_mount(
                &names.kv_mount,
                &format!("secrets of tenant {}", names.tenant),
            )
            .await?,
        ctx.openbao
            .ensure_transit_key(&names.transit_mount, &names.transit_key)
            .await?,
        ctx.openbao.ensure_policy(&names.policy, &policy).await?,
    ])
}

async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let names = TenantNames::new(&tenant.name_any());
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    let settled = conditions::settled(
        &tenant.status.clone().unwrap_or_default().conditions,
        tenant.metadata.generation,
    );

    let result = namespace_step(tenant, &names, ctx).await;
    outcomes.push(ctx.step(
        "tenant",
        conditions::NAMESPACE_READY,
        &format!("namespace {}", names.namespace),
        result.map_err(|e| ("KubernetesApi", e.to_string())),
        settled,
        &mut events,
    ));

    let result = realm_step(tenant, &names, ctx).await;
    outcomes.push(ctx.step(
        "tenant",
        conditions::REALM_READY,
        &format!("realm {}", names.realm),
        result.map_err(|e| (e.category(), e.to_string())),
        settled,
        &mut events,
    ));

    let clusters =
        desired::allowed_clusters(&tenant.spec.residency, &ctx.settings.clusters_by_region);
    let stalled = match &clusters {
        Some(clusters) => {
            let result = ctx
                .pulsar
                .ensure_tenant(&names.pulsar_tenant, clusters)
                .await
                .map(|c| vec![c]);
            outcomes.push(ctx.step(
                "tenant",
                conditions::MESSAGING_READY,
                &format!("Pulsar tenant {}", names.pulsar_tenant),
                result.map_err(|e| (e.category(), e.to_string())),
                settled,
                &mut events,
            ));
            None
        }
        None => {
            let known: Vec<&String> = ctx.settings.clusters_by_region.keys().collect();
            let message = format!(
                "residency {:?} has no Pulsar cluster; use one of {known:?}, or run the operator with --residency {}=<cluster>",
                tenant.spec.residency, tenant.spec.residency
            );
            outcomes.push(Outcome::failed(
                conditions::MESSAGING_READY,
                reasons::UNKNOWN_RESIDENCY,
                message.clone(),
            ));
            Some(Outcome::failed(
                conditions::STALLED,
                reasons::UNKNOWN_RESIDENCY,
                message,
            ))
        }
    };

    let result = secrets_step(&names, ctx).await;
    outcomes.push(ctx.step(
        "tenant",
        conditions::SECRETS_READY,
        &format!("OpenBao paths {}", names.kv_mount),
        result.map_err(|e| (e.category(), e.to_string())),
        settled,
        &mut events,
    ));

    let previous = tenant.status.clone().unwrap_or_default();
    let conditions = conditions::roll_up(
        &previous.conditions,
        &outcomes,
        stalled.as_ref(),
        tenant.metadata.generation,
    );
    let status = TenantStatus {
        observed_generation: tenant.metadata.generation,
        conditions,
        namespace: Some(names.namespace.clone()),
        realm: Some(names.realm.clone()),
        pulsar_tenant: Some(names.pulsar_tenant.clone()),
        secrets_path: Some(format!("tenants/{}/", names.tenant)),
    };
    let unchanged = conditions::same(&previous.conditions, &status.conditions)
        && TenantStatus {
            conditions: Vec::new(),
            ..previous.clone()
        } == TenantStatus {
            conditions: Vec::new(),
            ..status.clone()
        };
    if !unchanged {
        ctx.calls.record(
            crate::adapters::Backend::Kubernetes,
            crate::adapters::Verb::Write,
        );
        let api: Api<Tenant> = Api::all(ctx.client.clone());
        api.patch_status(
            &names.tenant,
            &PatchParams::apply(kubernetes::FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "ossature.dev/v1alpha1",
                "kind": "Tenant",
                "status": status,
            })),
        )
        .await?;
    }
    ctx.publish(tenant.object_ref(&()), events).await;

    let blocked = outcomes.iter().any(|o| !o.ok);
    let key = format!("tenant/{}", names.tenant);
    if stalled.is_some() {
        // Only a spec change helps; the watch brings it.
        ctx.reset_backoff(&key);
        Ok(Action::requeue(ctx.settings.resync))
    } else if blocked {
        Ok(Action::requeue(ctx.backoff(&key)))
    } else {
        ctx.reset_backoff(&key);
        info!("tenant is ready");
        Ok(Action::requeue(ctx.settings.resync))
    }
}

/// Deletes the tenant's Environments and Scopes and waits until their own
/// finalizers have removed what they provisioned: they come first in reverse order.
async fn remove_children(names: &TenantNames, ctx: &Context) -> Result<(), Error> {
    let environments: Api<Environment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let scopes: Api<Scope> = Api::namespaced(ctx.client.clone(), &names.namespace);
    ctx.calls.record(
        crate::adapters::Backend::Kubernetes,
        crate::adapters::Verb::Read,
    );
    let environments_left = environments.list(&ListParams::default()).await?.items;
    ctx.calls.record(
        crate::adapters::Backend::Kubernetes,
        crate::adapters::Verb::Read,
    );
    let scopes_left = scopes.list(&ListParams::default()).await?.items;
    if environments_left.is_empty() && scopes_left.is_empty() {
        return Ok(());
    }
    for environment in environments_left
        .iter()
        .filter(|e| e.metadata.deletion_timestamp.is_none())
    {
        kubernetes::delete(&environments, &environment.name_any(), &ctx.calls).await?;
    }
    for scope in scopes_left
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
    {
        kubernetes::delete(&scopes, &scope.name_any(), &ctx.calls).await?;
    }
    Err(Error::Blocked(format!(
        "waiting for {} environments and {} scopes of tenant {} to be removed",
        environments_left.len(),
        scopes_left.len(),
        names.tenant
    )))
}

async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let names = TenantNames::new(&tenant.name_any());
    remove_children(&names, ctx).await?;
    let mut events = Vec::new();
    if tenant.spec.deletion_policy == DeletionPolicy::Delete {
        // Reverse order of creation; exact names only, so no other tenant is touched.
        ctx.openbao.delete_policy(&names.policy).await?;
        ctx.openbao.delete_mount(&names.transit_mount).await?;
        ctx.openbao.delete_mount(&names.kv_mount).await?;
        ctx.pulsar.delete_tenant(&names.pulsar_tenant).await?;
        ctx.keycloak.delete_realm(&names.realm).await?;
        events.push(Event {
            type_: EventType::Normal,
            reason: "Deprovisioned".into(),
            note: Some("OpenBao paths, Pulsar tenant and realm removed".into()),
            action: "Delete".into(),
            secondary: None,
        });
    } else {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Retained".into(),
            note: Some(
                "deletionPolicy is Retain: realm, Pulsar tenant and OpenBao paths are kept".into(),
            ),
            action: "Delete".into(),
            secondary: None,
        });
    }
    kubernetes::delete(
        &Api::<Namespace>::all(ctx.client.clone()),
        &names.namespace,
        &ctx.calls,
    )
    .await?;
    ctx.publish(tenant.object_ref(&()), events).await;
    ctx.reset_backoff(&format!("tenant/{}", names.tenant));
    Ok(Action::await_change())
}

/// Time between periodic reconciles that catch drift in the backends.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
