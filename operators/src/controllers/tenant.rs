//! The Tenant controller: namespace, realm, Pulsar tenant and OpenBao paths
//! of each tenant, provisioned concurrently; removed in reverse order on
//! delete, after the tenant's Environments and Scopes.

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{DeletionPolicy, Environment, Scope, Tenant, TenantStatus};

use crate::adapters::{Backend, BackendError, Change, Verb};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::kubernetes::{self, NamespaceOwner};
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/tenant-cleanup";

crate::object_status!(TenantStatus);

impl Reconciled for Tenant {
    const CONTROLLER: &'static str = "tenant";
    const FINALIZER: &'static str = FINALIZER;
    type Status = TenantStatus;

    fn status(&self) -> Option<&TenantStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, _: &Self) -> Api<Self> {
        Api::all(client)
    }

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, TenantStatus>, Error> {
        let names = TenantNames::new(&self.name_any());
        let status = TenantStatus {
            namespace: Some(names.namespace.clone()),
            realm: Some(names.realm.clone()),
            pulsar_tenant: Some(names.pulsar_tenant.clone()),
            secrets_path: Some(format!("tenants/{}/", names.tenant)),
            ..Default::default()
        };
        let mut plan = Plan::new(status);
        let objects =
            desired::namespace_objects(&names.namespace, &names.tenant, None, &self.spec.quotas);
        super::namespace_step(&mut plan, ctx, objects, &names.tenant, None).await?;
        if plan.stalled.is_some() {
            return Ok(plan);
        }

        let realm = desired::realm_settings(&names, &self.spec);
        plan.steps.push(Step::new(
            conditions::REALM_READY,
            format!("realm {}", names.realm),
            async move {
                Ok::<_, BackendError>(vec![
                    ctx.keycloak.ensure_realm(&realm).await?,
                    ctx.keycloak.ensure_scope_claim(&realm.name).await?,
                ])
            },
        ));

        match desired::allowed_clusters(&self.spec.residency, &ctx.settings.clusters_by_region) {
            Some(clusters) => {
                let tenant = names.pulsar_tenant.clone();
                plan.steps.push(Step::new(
                    conditions::MESSAGING_READY,
                    format!("Pulsar tenant {tenant}"),
                    async move {
                        ctx.pulsar
                            .ensure_tenant(&tenant, &clusters)
                            .await
                            .map(|c| vec![c])
                    },
                ));
            }
            None => {
                let known: Vec<&String> = ctx.settings.clusters_by_region.keys().collect();
                let residency = &self.spec.residency;
                let message = format!(
                    "residency {residency:?} has no Pulsar cluster; use one of {known:?}, or run the operator with --residency {residency}=<cluster>",
                );
                plan.outcomes.push(Outcome::failed(
                    conditions::MESSAGING_READY,
                    reasons::UNKNOWN_RESIDENCY,
                    message.clone(),
                ));
                plan.stalled = Some(Outcome::failed(
                    conditions::STALLED,
                    reasons::UNKNOWN_RESIDENCY,
                    message,
                ));
            }
        }

        let secrets = names.clone();
        plan.steps.push(Step::new(
            conditions::SECRETS_READY,
            format!("OpenBao paths {}", names.kv_mount),
            async move { secrets_step(&secrets, ctx).await },
        ));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let names = TenantNames::new(&self.name_any());
        remove_children(&names, ctx).await?;
        let objects =
            desired::namespace_objects(&names.namespace, &names.tenant, None, &self.spec.quotas);
        // Never a namespace that was not ours (a refused adoption).
        let live = kubernetes::namespace(&ctx.client, &names.namespace, &ctx.calls).await?;
        let ours =
            kubernetes::namespace_owner(live.as_ref(), &names.tenant, None) == NamespaceOwner::Ours;
        if self.spec.deletion_policy == DeletionPolicy::Retain {
            if ours {
                kubernetes::release_namespace_objects(&ctx.client, &objects, &ctx.calls).await?;
            }
            return Ok(vec![event(
                EventType::Normal,
                "Retained",
                "Delete",
                format!(
                    "deletionPolicy is Retain: namespace {} (labelled {}=true, no longer managed), realm, Pulsar tenant and OpenBao paths are kept",
                    names.namespace,
                    desired::RETAINED_LABEL
                ),
            )]);
        }
        // Reverse order of creation; exact names only, so no other tenant is touched.
        ctx.openbao.delete_policy(&names.policy).await?;
        ctx.openbao.delete_mount(&names.transit_mount).await?;
        ctx.openbao.delete_mount(&names.kv_mount).await?;
        ctx.pulsar.delete_tenant(&names.pulsar_tenant).await?;
        ctx.keycloak.delete_realm(&names.realm).await?;
        if ours {
            kubernetes::delete(
                &Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone()),
                &names.namespace,
                &ctx.calls,
            )
            .await?;
        }
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            format!(
                "OpenBao paths, Pulsar tenant, realm and namespace {} removed",
                names.namespace
            ),
        )])
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        // The namespace and what is in it: a change by hand is put back in seconds.
        super::watch_namespace_objects(controller, &watch.client, |tenant, environment| {
            environment.is_none().then(|| ObjectRef::new(tenant))
        })
    }
}

async fn secrets_step(names: &TenantNames, ctx: &Context) -> Result<Vec<Change>, BackendError> {
    let policy = crate::adapters::openbao::tenant_policy(
        &names.kv_mount,
        &names.transit_mount,
        &names.transit_key,
    );
    let description = format!("secrets of tenant {}", names.tenant);
    let (kv, transit) = tokio::join!(
        ctx.openbao.ensure_kv_mount(&names.kv_mount, &description),
        ctx.openbao
            .ensure_transit_key(&names.transit_mount, &names.transit_key),
    );
    Ok(vec![
        kv?,
        transit?,
        ctx.openbao.ensure_policy(&names.policy, &policy).await?,
    ])
}

/// Deletes the tenant's Environments and Scopes and waits until their own
/// finalizers have removed what they provisioned: they come first in reverse order.
async fn remove_children(names: &TenantNames, ctx: &Context) -> Result<(), Error> {
    let environments: Api<Environment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let scopes: Api<Scope> = Api::namespaced(ctx.client.clone(), &names.namespace);
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let environments_left = environments
        .list_metadata(&ListParams::default())
        .await?
        .items;
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let scopes_left = scopes.list_metadata(&ListParams::default()).await?.items;
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

/// Whether a Tenant is being deleted with `deletionPolicy: Retain`: its
/// Environments and Scopes then keep what they provisioned too.
pub fn retained(tenant: Option<&Tenant>) -> bool {
    tenant.is_some_and(|t| {
        t.metadata.deletion_timestamp.is_some() && t.spec.deletion_policy == DeletionPolicy::Retain
    })
}

/// Whether a Tenant is Ready in one backend, for the kinds that build on it.
pub fn backend_ready(tenant: &Tenant, condition: &str) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition && c.status == "True")
    })
}
