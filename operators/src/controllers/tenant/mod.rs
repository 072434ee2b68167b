//! The Tenant controller: namespace, realm, Pulsar tenant, OpenBao paths
//! and CA of each tenant, provisioned concurrently; with an edge, its host
//! certificate and route once those it needs are in place; removed in
//! reverse order on delete, after the tenant's Certificates, Environments
//! and Scopes.

mod authority;
mod cleanup;
mod domains;
mod host;
mod identity;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::Event;
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{Certificate, Isolation, Scope, Tenant, TenantStatus};
use ossature_model::certificates::host::{host_of, signed_by_its_tenant};
use ossature_model::conditions::{self, Outcome, is_stalled, reasons};
use ossature_model::messaging::allowed_clusters;
use ossature_model::names::{TENANT_LABEL, TenantNames, tenant_of};
use ossature_model::objects::namespace_objects;
use ossature_model::secrets::tenant_policy_of;

use super::namespaces::{self, Owner};
use crate::adapters::{BackendError, Change};
use crate::context::Context;
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext};
use identity::create_or_ensure;
use tokio::sync::oneshot;

pub const FINALIZER: &str = "ossature.dev/tenant-cleanup";

impl Reconciled for Tenant {
    const CONTROLLER: &'static str = "tenant";
    const FINALIZER: &'static str = FINALIZER;
    const SELECTED_BY_LABEL: bool = true;
    const FOLLOWED: bool = true;

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, TenantStatus>, Error> {
        Provisioning::new(self, ctx).plan().await
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        cleanup::cleanup(self, ctx).await
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        watches(controller, watch)
    }
}

/// One reconcile of one tenant: what every step reads.
struct Provisioning<'a> {
    tenant: &'a Tenant,
    ctx: &'a Context,
    names: TenantNames,
    /// Never provisioned: backends are created without reading first.
    fresh: bool,
}

impl<'a> Provisioning<'a> {
    fn new(tenant: &'a Tenant, ctx: &'a Context) -> Self {
        Provisioning {
            tenant,
            ctx,
            names: TenantNames::new(&tenant.name_any()),
            fresh: tenant.status.is_none(),
        }
    }

    /// `<tenant>.<root-domain>`.
    fn host(&self) -> String {
        self.names.host(&self.ctx.settings.platform.root_domain)
    }

    async fn plan(self) -> Result<Plan<'a, TenantStatus>, Error> {
        let names = &self.names;
        let mut plan = Plan::new(TenantStatus {
            namespace: Some(names.namespace.clone()),
            pulsar_tenant: Some(names.pulsar_tenant.clone()),
            secrets_path: Some(names.secrets_path.clone()),
            ..Default::default()
        });
        let domains = self.domains(&mut plan).await?;
        let objects = namespace_objects(
            &names.namespace,
            &names.tenant,
            None,
            &self.tenant.spec.quotas,
        );
        namespaces::step(&mut plan, self.ctx, objects, Owner::tenant(&names.tenant)).await?;
        if plan.stalled.is_some() {
            return Ok(plan);
        }
        plan.stalled = domains.claimed;
        if let Err(stalled) = self.identity(&mut plan).await {
            plan.stalled = Some(stalled);
            return Ok(plan);
        }
        self.messaging(&mut plan);
        self.secrets(&mut plan);
        // The CA step hands its issuers to the host step, which then counts
        // the certificate it holds in the CA's status itself.
        let (issuers, issuers_handed) = oneshot::channel();
        let signs_host = self.ctx.edge.is_some() && self.ctx.settings.platform.host_issuer.is_none();
        self.authority(&mut plan, issuers, signs_host);
        if let Some(edges) = &self.ctx.edge {
            self.serve(&mut plan, edges, &domains.held, issuers_handed);
        }
        Ok(plan)
    }

    /// `MessagingReady`: a Pulsar tenant whose clusters follow the residency.
    fn messaging(&self, plan: &mut Plan<'a, TenantStatus>) {
        let ctx = self.ctx;
        let residency = &self.tenant.spec.residency;
        match allowed_clusters(residency, &ctx.settings.platform.residency) {
            Some(clusters) => {
                let tenant = self.names.pulsar_tenant.clone();
                let fresh = self.fresh;
                plan.step(Step::new(
                    conditions::MESSAGING_READY,
                    format!("Pulsar tenant {tenant}"),
                    async move {
                        create_or_ensure(
                            fresh,
                            ctx.pulsar.create_tenant(&tenant, &clusters),
                            ctx.pulsar.ensure_tenant(&tenant, &clusters),
                        )
                        .await
                        .map(|c| vec![c])
                    },
                ));
            }
            None => {
                let known: Vec<&String> = ctx.settings.platform.residency.keys().collect();
                let message = format!(
                    "residency {residency:?} has no Pulsar cluster; use one of {known:?}, or run the operator with --residency {residency}=<cluster>",
                );
                plan.outcome(Outcome::failed(
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
    }

    /// `SecretsReady`: the KV mount, transit key and policy; for a tenant
    /// never provisioned, created without reading first.
    fn secrets(&self, plan: &mut Plan<'a, TenantStatus>) {
        let (ctx, fresh) = (self.ctx, self.fresh);
        let names = self.names.clone();
        plan.step(Step::new(
            conditions::SECRETS_READY,
            format!("OpenBao paths {}", names.kv_mount),
            async move { secrets(&names, fresh, ctx).await },
        ));
    }
}

async fn secrets(
    names: &TenantNames,
    fresh: bool,
    ctx: &Context,
) -> Result<Vec<Change>, BackendError> {
    let policy = tenant_policy_of(names);
    let description = names.kv_description();
    if fresh {
        // A policy may name paths not mounted yet: all at once.
        let (mounts, written) = tokio::join!(
            ctx.openbao.create_tenant_mounts(
                &names.kv_mount,
                &description,
                &names.transit_mount,
                &names.transit_key
            ),
            ctx.openbao.create_policy(&names.policy, &policy),
        );
        let written = written?;
        if let Some(mut created) = mounts? {
            created.push(written);
            return Ok(created);
        }
    }
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

fn watches(mut controller: Controller<Tenant>, watch: &WatchContext) -> Controller<Tenant> {
    let stores = watch.stores.clone();
    // Its host certificate from an ACME issuer issued or renewed (the edge
    // serves the new one), or its certificates no longer counted right (a
    // rotation retires the old CA once none is left on it). A host
    // certificate its own CA signs is the Tenant's own doing.
    let rotating = watch.stores.clone();
    controller = controller.watches_shared_stream(
        watch.changes::<Certificate>(),
        move |certificate: Arc<Certificate>| {
            host_of(&certificate)
                .filter(|_| !signed_by_its_tenant(&certificate))
                .map(ObjectRef::new)
                .or_else(|| authority::tenant_to_recount(&rotating, &certificate))
        },
    );
    // The edge lost our configuration (restarted): every host goes back.
    if let Some(losses) = watch.edge_losses.clone() {
        let lost = futures::stream::unfold(losses, |mut losses| async move {
            losses.changed().await.ok()?;
            Some(((), losses))
        });
        controller = controller.reconcile_all_on(lost);
    }
    // The namespace and what is in it: a change by hand is put back in seconds.
    namespaces::watch(
        controller,
        watch,
        |tenant, environment| environment.is_none().then(|| ObjectRef::new(tenant)),
        |stores, tenant, environment| {
            let owner = stores.tenant(tenant).filter(|_| environment.is_none())?;
            let names = TenantNames::new(tenant);
            Some((
                namespace_objects(&names.namespace, tenant, None, &owner.spec.quotas),
                is_stalled(owner.status.as_ref()),
            ))
        },
    )
    // A Secret handed to it (labelled): an identity provider's client secret.
    .watches_stream(
        kube::runtime::WatchStreamExt::touched_objects(
            watch.secrets.watch(&watch.client, TENANT_LABEL),
        ),
        |secret: k8s_openapi::api::core::v1::Secret| {
            let tenant = secret.metadata.labels.as_ref()?.get(TENANT_LABEL)?;
            Some(ObjectRef::<Tenant>::new(tenant))
        },
    )
    // A scope its identity providers map people to.
    .watches(
        Api::<Scope>::all(watch.client.clone()),
        kube::runtime::watcher::Config::default(),
        {
            let stores = watch.stores.clone();
            move |scope: Scope| {
                let tenant = tenant_of(scope.metadata.namespace.as_deref()?)?;
                let maps = stores
                    .tenant(tenant)?
                    .spec
                    .identity
                    .identity_providers
                    .iter()
                    .any(|p| p.scopes.iter().any(|m| m.scope == scope.name_any()));
                maps.then(|| ObjectRef::<Tenant>::new(tenant))
            }
        },
    )
    // A dedicated realm freed (its tenant deleted) lets a waiting one in.
    .watches_shared_stream(watch.changes::<Tenant>(), move |changed: Arc<Tenant>| {
        let freed = changed.metadata.deletion_timestamp.is_some()
            && changed.status.as_ref().and_then(|s| s.isolation) == Some(Isolation::Realm);
        let waiting = stores.of::<Tenant>().state().into_iter().filter(|t| {
            t.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == conditions::STALLED && c.reason == reasons::REALM_CAPACITY_REACHED
                })
            })
        });
        waiting
            .filter(|_| freed)
            .map(|t| ObjectRef::from_obj(&*t))
            .collect::<Vec<_>>()
    })
}
