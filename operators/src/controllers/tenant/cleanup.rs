//! A tenant's removal, in reverse order of creation: off the edge, its
//! Certificates, Environments and Scopes (each by its own finalizer), its
//! CA and OpenBao paths, its Pulsar tenant, its identity, then its
//! namespace. The Tenant is gone only once its namespace is. Exact names
//! only, so no other tenant is touched.

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};
use ossature_crds::{Certificate, DeletionPolicy, Environment, Isolation, Scope, Tenant};
use ossature_model::identity;
use ossature_model::names::TenantNames;
use ossature_model::objects::namespace_objects;

use super::domains::release;
use crate::adapters::{Backend, Verb};
use crate::context::Context;
use crate::controllers::namespaces::{self, Owner, Removal};
use crate::kubernetes;
use crate::reconcile::{Error, event};

pub(super) async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Vec<Event>, Error> {
    let names = TenantNames::new(&tenant.name_any());
    let retain = tenant.spec.deletion_policy == DeletionPolicy::Retain;
    if let Some(edges) = &ctx.edge
        && !retain
    {
        // Off the edge first: it serves the host certificate's key.
        let uid = tenant.uid().unwrap_or_default();
        for domain in tenant.status.iter().flat_map(|s| s.verified_domains()) {
            release(ctx, &uid, domain)
                .await
                .map_err(|f| Error::Blocked(f.message))?;
        }
        edges
            .remove(names.host(&ctx.settings.platform.root_domain))
            .await
            .map_err(|f| {
                Error::Blocked(format!("removing the host from the edge: {}", f.message))
            })?;
    }
    remove_children(&names, ctx).await?;
    let objects = namespace_objects(&names.namespace, &names.tenant, None, &tenant.spec.quotas);
    let removal = namespaces::removal(ctx, &objects, Owner::tenant(&names.tenant), retain).await?;
    if retain {
        let rest = ", realm, Pulsar tenant and OpenBao paths";
        return Ok(vec![namespaces::retained(&names.namespace, rest)]);
    }
    // Backends before the namespace; again (finding nothing) once the
    // namespace is gone, which cannot tell whether they were removed.
    remove_backends(tenant, &names, ctx).await?;
    match removal {
        Removal::Delete => {
            namespaces::delete(ctx, &objects).await?;
            Ok(vec![deprovisioned(&names)])
        }
        Removal::Done => Ok(vec![deprovisioned(&names)]),
    }
}

fn deprovisioned(names: &TenantNames) -> Event {
    event(
        EventType::Normal,
        "Deprovisioned",
        "Delete",
        format!(
            "certificates, CA and OpenBao paths, Pulsar tenant, realm and namespace {} removed",
            names.namespace
        ),
    )
}

/// Everything the tenant has in OpenBao, Pulsar and Keycloak.
async fn remove_backends(tenant: &Tenant, names: &TenantNames, ctx: &Context) -> Result<(), Error> {
    ctx.openbao.delete_tenant_ca(&names.pki_mount).await?;
    ctx.openbao.delete_policy(&names.policy).await?;
    ctx.openbao.delete_mount(&names.transit_mount).await?;
    ctx.openbao.delete_mount(&names.kv_mount).await?;
    ctx.pulsar.delete_tenant(&names.pulsar_tenant).await?;
    match tenant.status.as_ref().and_then(|s| s.isolation) {
        Some(Isolation::Organization) => {
            // Never the shared realm: only what is this tenant's in it.
            let shared = identity::shared_realm(tenant.spec.tenant_type, &tenant.spec.residency);
            ctx.keycloak.delete_client(&shared, &names.tenant).await?;
            if let Some(org) = tenant
                .status
                .as_ref()
                .and_then(|s| s.organization_id.as_deref())
            {
                ctx.keycloak
                    .prune_identity_providers(&shared, Some(org), &[])
                    .await?;
            }
            ctx.keycloak
                .delete_organization(&shared, &names.tenant)
                .await?;
        }
        // A tenant provisioned before isolation was recorded has a realm.
        Some(Isolation::Realm) | None => {
            ctx.keycloak.delete_realm(&names.realm).await?;
        }
    }
    Ok(())
}

/// Deletes the tenant's Certificates, Environments and Scopes and waits
/// until their own finalizers have removed what they provisioned: they
/// come first in reverse order.
async fn remove_children(names: &TenantNames, ctx: &Context) -> Result<(), Error> {
    let environments: Api<Environment> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let scopes: Api<Scope> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let certificates: Api<Certificate> = Api::namespaced(ctx.client.clone(), &names.namespace);
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let certificates_left = certificates
        .list_metadata(&ListParams::default())
        .await?
        .items;
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let environments_left = environments
        .list_metadata(&ListParams::default())
        .await?
        .items;
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let scopes_left = scopes.list_metadata(&ListParams::default()).await?.items;
    if environments_left.is_empty() && scopes_left.is_empty() && certificates_left.is_empty() {
        return Ok(());
    }
    // Certificates first: their keys are kept in the tenant's mounts.
    for certificate in certificates_left
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
    {
        kubernetes::delete(&certificates, &certificate.name_any(), &ctx.calls).await?;
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
    Err(Error::Waiting(format!(
        "waiting for {} certificates, {} environments and {} scopes of tenant {} to be removed",
        certificates_left.len(),
        environments_left.len(),
        scopes_left.len(),
        names.tenant
    )))
}
