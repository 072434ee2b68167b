//! The Tenant controller: namespace, realm, Pulsar tenant and OpenBao paths
//! of each tenant, provisioned concurrently; removed in reverse order on
//! delete, after the tenant's Environments and Scopes.

use kube::ResourceExt;
use std::sync::{Arc, OnceLock};

use kube::api::{Api, ListParams};
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{
    Certificate, DeletionPolicy, Environment, Isolation, Scope, Tenant, TenantStatus,
};

use crate::adapters::{Backend, BackendError, Change, Verb};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::kubernetes::{self, NamespaceOwner};
use crate::reconcile::{Error, Failure, Plan, Reconciled, Step, WatchContext, event};

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
            pulsar_tenant: Some(names.pulsar_tenant.clone()),
            secrets_path: Some(format!("tenants/{}/", names.tenant)),
            ..Default::default()
        };
        let mut plan = Plan::new(status);
        let domains = super::tenant_domains::reconcile(self, ctx).await?;
        plan.status.domains = domains.statuses;
        plan.outcomes.extend(domains.outcome);
        plan.due_in = domains.due_in;
        let objects =
            desired::namespace_objects(&names.namespace, &names.tenant, None, &self.spec.quotas);
        // With an edge, the tenant's host certificate lives in its namespace.
        let host = format!("{}.{}", names.tenant, ctx.settings.root_domain);
        let host_certificate = ctx
            .edge
            .as_ref()
            .map(|_| super::edge_host::certificate(self, &names, &host, &domains.held, ctx));
        let then = host_certificate.clone().map(|desired| {
            Box::pin(super::edge_host::ensure_certificate(ctx, desired))
                as futures::future::BoxFuture<'a, _>
        });
        super::namespace_step(&mut plan, ctx, objects, &names.tenant, None, then).await?;
        if plan.stalled.is_some() {
            return Ok(plan);
        }
        plan.stalled = domains.claimed;
        if let (Some(edges), Some(desired)) = (&ctx.edge, host_certificate) {
            plan.status.host = Some(host.clone());
            super::edge_host::steps(self, &mut plan, ctx, edges, &names, host, &desired);
        }

        let isolation = match isolation(self, ctx).await {
            Ok(isolation) => isolation,
            Err(stalled) => {
                plan.outcomes.push(Outcome::failed(
                    conditions::REALM_READY,
                    &stalled.reason,
                    stalled.message.clone(),
                ));
                plan.stalled = Some(stalled);
                return Ok(plan);
            }
        };
        let providers = match identity_providers(self, ctx, isolation).await {
            Ok(providers) => providers,
            Err(failure) => {
                plan.outcomes.push(Outcome::failed(
                    conditions::REALM_READY,
                    failure.category,
                    failure.message,
                ));
                Vec::new()
            }
        };
        let realm_for_status = match isolation {
            Isolation::Organization => {
                desired::shared_realm(self.spec.tenant_type, &self.spec.residency)
            }
            Isolation::Realm => names.realm.clone(),
        };
        plan.status.identity_providers = self
            .spec
            .identity
            .identity_providers
            .iter()
            .zip(&providers)
            .map(|(p, settings)| ossature_crds::IdentityProviderStatus {
                alias: p.alias.clone(),
                keycloak_alias: settings.alias.clone(),
                endpoint: ctx
                    .keycloak
                    .broker_endpoint(&realm_for_status, &settings.alias),
            })
            .collect();
        identity_step(self, &mut plan, ctx, &names, isolation, providers).await;

        match desired::allowed_clusters(&self.spec.residency, &ctx.settings.clusters_by_region) {
            Some(clusters) => {
                let tenant = names.pulsar_tenant.clone();
                let fresh = self.status.is_none();
                plan.steps.push(Step::new(
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
        let fresh = self.status.is_none();
        plan.steps.push(Step::new(
            conditions::SECRETS_READY,
            format!("OpenBao paths {}", names.kv_mount),
            async move { secrets_step(&secrets, fresh, ctx).await },
        ));

        super::tenant_ca::step(self, &mut plan, ctx, &names);
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let names = TenantNames::new(&self.name_any());
        let isolation = self.status.as_ref().and_then(|s| s.isolation);
        if let Some(edges) = &ctx.edge
            && self.spec.deletion_policy == DeletionPolicy::Delete
        {
            // Off the edge first: it serves the host certificate's key.
            let uid = self.uid().unwrap_or_default();
            for domain in self.status.iter().flat_map(|s| s.verified_domains()) {
                super::tenant_domains::release(ctx, &uid, domain).await?;
            }
            let host = format!("{}.{}", names.tenant, ctx.settings.root_domain);
            edges.remove(host).await.map_err(|f| {
                Error::Blocked(format!("removing the host from the edge: {}", f.message))
            })?;
        }
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
        ctx.openbao.delete_tenant_ca(&names.pki_mount).await?;
        ctx.openbao.delete_policy(&names.policy).await?;
        ctx.openbao.delete_mount(&names.transit_mount).await?;
        ctx.openbao.delete_mount(&names.kv_mount).await?;
        ctx.pulsar.delete_tenant(&names.pulsar_tenant).await?;
        match isolation {
            Some(Isolation::Organization) => {
                // Never the shared realm: only what is this tenant's in it.
                let shared = desired::shared_realm(self.spec.tenant_type, &self.spec.residency);
                ctx.keycloak.delete_client(&shared, &names.tenant).await?;
                if let Some(org) = self
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
                "certificates, CA and OpenBao paths, Pulsar tenant, realm and namespace {} removed",
                names.namespace
            ),
        )])
    }

    fn watches(mut controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let stores = watch.stores.clone();
        // Its host certificate issued or renewed (the edge serves the new
        // one), or its certificates no longer counted right (a rotation
        // retires the old CA once none is left on it).
        let rotating = watch.stores.clone();
        controller = controller.watches_shared_stream(
            watch.certificates.clone(),
            move |certificate: Arc<Certificate>| {
                super::edge_host::tenant_of_host_certificate(certificate.clone())
                    .or_else(|| super::tenant_ca::tenant_to_recount(&rotating, &certificate))
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
        super::watch_namespace_objects(
            controller,
            watch,
            |tenant, environment| environment.is_none().then(|| ObjectRef::new(tenant)),
            |stores, tenant, environment| {
                let owner = stores.tenant(tenant).filter(|_| environment.is_none())?;
                let names = TenantNames::new(tenant);
                Some((
                    desired::namespace_objects(&names.namespace, tenant, None, &owner.spec.quotas),
                    super::is_stalled(owner.status.as_ref()),
                ))
            },
        )
        // A Secret handed to it (labelled): an identity provider's client secret.
        .watches(
            Api::<k8s_openapi::api::core::v1::Secret>::all(watch.client.clone()),
            kube::runtime::watcher::Config::default().labels(desired::TENANT_LABEL),
            |secret| {
                let tenant = secret
                    .metadata
                    .labels
                    .as_ref()?
                    .get(desired::TENANT_LABEL)?;
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
                    let tenant = super::tenant_of(scope.metadata.namespace.as_deref()?)?;
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
        .watches_shared_stream(watch.tenants.clone(), move |changed: Arc<Tenant>| {
            let freed = changed.metadata.deletion_timestamp.is_some()
                && changed.status.as_ref().and_then(|s| s.isolation) == Some(Isolation::Realm);
            let waiting = stores.tenants.state().into_iter().filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == conditions::STALLED
                            && c.reason == reasons::REALM_CAPACITY_REACHED
                    })
                })
            });
            waiting
                .filter(|_| freed)
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
    }
}

/// Where the tenant's people live, or why it cannot be decided.
async fn isolation(tenant: &Tenant, ctx: &Context) -> Result<Isolation, Outcome> {
    let name = tenant.name_any();
    let wanted = tenant.spec.identity.isolation;
    let recorded = tenant.status.as_ref().and_then(|s| s.isolation);
    if let (Some(wanted), Some(recorded)) = (wanted, recorded)
        && wanted != recorded
    {
        return Err(Outcome::failed(
            conditions::STALLED,
            reasons::ISOLATION_IMMUTABLE,
            format!(
                "identity.isolation is {wanted:?} but the tenant was provisioned as {recorded:?}; set it back to {recorded:?} (moving between modes is a migration)"
            ),
        ));
    }
    // Asked only until the mode is recorded: does a realm of its name exist,
    // made before isolation existed (or kept by a Retain)?
    // (A tenant never reconciled has no status: nothing to ask.)
    let has_own_realm = wanted.is_none()
        && recorded.is_none()
        && tenant.status.is_some()
        && (tenant.status.as_ref().and_then(|s| s.realm.as_deref()) == Some(name.as_str())
            || ctx.keycloak.realm_exists(&name).await.unwrap_or(false));
    let isolation = desired::effective_isolation(wanted, recorded, has_own_realm);
    if isolation == Isolation::Realm {
        within_realm_capacity(tenant, ctx)?;
    }
    Ok(isolation)
}

/// Dedicated realms are capped per Keycloak: those already provisioned
/// come first, then the oldest.
fn within_realm_capacity(tenant: &Tenant, ctx: &Context) -> Result<(), Outcome> {
    let cap = ctx.settings.max_dedicated_realms;
    let provisioned =
        |t: &Tenant| t.status.as_ref().and_then(|s| s.isolation) == Some(Isolation::Realm);
    if provisioned(tenant) {
        return Ok(());
    }
    let mut realm_tenants: Vec<_> = ctx
        .stores
        .tenants
        .state()
        .into_iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none()
                && (provisioned(t) || t.spec.identity.isolation == Some(Isolation::Realm))
        })
        .map(|t| {
            (
                !provisioned(&t),
                t.metadata.creation_timestamp.clone().map(|c| c.0),
                t.name_any(),
            )
        })
        .collect();
    realm_tenants.sort();
    let rank = realm_tenants
        .iter()
        .position(|(_, _, n)| *n == tenant.name_any())
        .unwrap_or(realm_tenants.len());
    if rank < cap {
        return Ok(());
    }
    Err(Outcome::failed(
        conditions::STALLED,
        reasons::REALM_CAPACITY_REACHED,
        format!(
            "this Keycloak already holds {cap} dedicated realms (--max-dedicated-realms); use isolation: Organization, or raise the cap once Keycloak can carry more; the tenant proceeds when a dedicated realm is freed"
        ),
    ))
}

/// RealmReady: an organization and a client in the shared realm, or a
/// realm of its own with its client.
async fn identity_step<'a>(
    tenant: &Tenant,
    plan: &mut Plan<'a, TenantStatus>,
    ctx: &'a Context,
    names: &TenantNames,
    isolation: Isolation,
    providers: Vec<desired::IdentityProviderSettings>,
) {
    let client = desired::client_settings(names, &tenant.spec, isolation);
    plan.status.isolation = Some(isolation);
    plan.status.client_id = Some(client.client_id.clone());
    match isolation {
        Isolation::Realm => {
            let realm = desired::realm_settings(names, &tenant.spec);
            let fresh = tenant.status.is_none();
            plan.status.realm = Some(realm.name.clone());
            plan.steps.push(Step::new(
                conditions::REALM_READY,
                format!("realm {}", realm.name),
                async move {
                    // A tenant never provisioned gets its realm, client
                    // included, in one call.
                    let create = async {
                        let created = ctx.keycloak.create_realm(&realm, Some(&client)).await?;
                        Ok::<_, BackendError>(created.map(|c| vec![c]))
                    };
                    let ensure = async {
                        Ok(vec![
                            ctx.keycloak.ensure_realm(&realm).await?,
                            ctx.keycloak.ensure_scope_claim(&realm.name).await?,
                            ctx.keycloak.ensure_client(&realm.name, &client).await?,
                        ])
                    };
                    let mut changes = create_or_ensure(fresh, create, ensure).await?;
                    changes.extend(federate(ctx, &realm.name, None, &providers).await?);
                    Ok::<_, BackendError>(changes)
                },
            ));
        }
        Isolation::Organization => {
            let shared = desired::shared_realm(tenant.spec.tenant_type, &tenant.spec.residency);
            let organization = desired::organization_settings(names, &tenant.spec);
            let fresh = tenant.status.is_none();
            plan.status.realm = Some(shared.clone());
            plan.status.organization_id = tenant
                .status
                .as_ref()
                .and_then(|s| s.organization_id.clone());
            // The id Keycloak gives the organization, for status in this reconcile.
            let id = Arc::new(OnceLock::new());
            let found = id.clone();
            plan.found = Some(Box::new(move |status: &mut TenantStatus| {
                if let Some(id) = found.get() {
                    status.organization_id = Some(String::clone(id));
                }
                None
            }));
            plan.steps.push(Step::new(
                conditions::REALM_READY,
                format!("organization {} in realm {shared}", organization.alias),
                async move {
                    if !ctx.shared_realm_exists(&shared).await? {
                        return Err(Failure {
                            category: reasons::WAITING_FOR_SHARED_REALM,
                            message: format!(
                                "shared realm {shared} is not provisioned yet; the operator instance holding lease {} creates it",
                                crate::shared::LEASE
                            ),
                        });
                    }
                    // The organization and the client do not depend on each other.
                    let (organization, client) = tokio::join!(
                        create_or_ensure(
                            fresh,
                            ctx.keycloak.create_organization(&shared, &organization),
                            ctx.keycloak.ensure_organization(&shared, &organization),
                        ),
                        create_or_ensure(
                            fresh,
                            ctx.keycloak.create_client(&shared, &client),
                            ctx.keycloak.ensure_client(&shared, &client),
                        ),
                    );
                    let (organization, found) = organization?;
                    let _ = id.set(found);
                    let client = client?;
                    let mut changes = vec![organization, client];
                    if let Some(org) = id.get() {
                        changes.extend(federate(ctx, &shared, Some(org), &providers).await?);
                    }
                    Ok(changes)
                },
            ));
        }
    }
}

/// For a tenant never provisioned, creates without reading first; else, or
/// when the create met an existing object, reads, compares and writes.
/// (Futures are lazy: the one not needed never calls its backend.)
async fn create_or_ensure<T, E>(
    fresh: bool,
    create: impl Future<Output = Result<Option<T>, E>>,
    ensure: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if fresh && let Some(created) = create.await? {
        return Ok(created);
    }
    ensure.await
}

/// The tenant's identity providers as Keycloak gets them: OIDC client
/// secrets from labelled Secrets of its namespace, scopes as their paths.
async fn identity_providers(
    tenant: &Tenant,
    ctx: &Context,
    isolation: Isolation,
) -> Result<Vec<desired::IdentityProviderSettings>, Failure> {
    let name = tenant.name_any();
    let namespace = format!("tn-{name}");
    let providers = &tenant.spec.identity.identity_providers;
    if providers.is_empty() {
        return Ok(Vec::new());
    }
    let scopes = ctx.stores.scopes_in(&namespace);
    let tree = crate::scope_tree::ScopeTree::new(
        scopes.iter().map(|s| (s.name_any(), s.spec.parent.clone())),
    );
    let paths: std::collections::BTreeMap<String, String> = scopes
        .iter()
        .filter_map(|s| {
            let path = tree.path(&s.name_any()).ok()?;
            Some((s.name_any(), crate::scope_tree::path_string(&path)))
        })
        .collect();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(ctx.client.clone(), &namespace);
    let mut settings = Vec::new();
    for provider in providers {
        let secret = match &provider.oidc {
            None => None,
            Some(oidc) => {
                let reference = &oidc.client_secret;
                ctx.calls.record(Backend::Kubernetes, Verb::Read);
                let found = secrets.get_opt(&reference.name).await?;
                let missing = |why: &str| Failure {
                    category: reasons::SECRET_NOT_USABLE,
                    message: format!(
                        "identity provider {}: Secret {namespace}/{} {why}",
                        provider.alias, reference.name
                    ),
                };
                let found = found.ok_or_else(|| missing("does not exist"))?;
                let labelled = found
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(desired::TENANT_LABEL))
                    == Some(&name);
                if !labelled {
                    return Err(missing(&format!(
                        "is not labelled {}={name}; label it to hand it to Ossature",
                        desired::TENANT_LABEL
                    )));
                }
                let value = found
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key))
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .ok_or_else(|| missing(&format!("has no key {}", reference.key)))?;
                Some(value)
            }
        };
        settings.push(desired::identity_provider_settings(
            &name,
            isolation,
            provider,
            secret.as_deref(),
            &paths,
        ));
    }
    Ok(settings)
}

/// Each identity provider in place, and no other of Ossature's.
async fn federate(
    ctx: &Context,
    realm: &str,
    organization: Option<&str>,
    providers: &[desired::IdentityProviderSettings],
) -> Result<Vec<Change>, BackendError> {
    let mut changes = Vec::new();
    for provider in providers {
        changes.push(
            ctx.keycloak
                .ensure_identity_provider(realm, organization, provider)
                .await?,
        );
    }
    let keep: Vec<String> = providers.iter().map(|p| p.alias.clone()).collect();
    changes.extend(
        ctx.keycloak
            .prune_identity_providers(realm, organization, &keep)
            .await?,
    );
    Ok(changes)
}

/// The KV mount, transit key and policy; for a tenant never provisioned,
/// created without reading first.
async fn secrets_step(
    names: &TenantNames,
    fresh: bool,
    ctx: &Context,
) -> Result<Vec<Change>, BackendError> {
    let policy = crate::adapters::openbao::tenant_policy(
        &names.kv_mount,
        &names.transit_mount,
        &names.transit_key,
    );
    let description = format!("secrets of tenant {}", names.tenant);
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

/// Deletes the tenant's Environments and Scopes and waits until their own
/// finalizers have removed what they provisioned: they come first in reverse order.
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
    Err(Error::Blocked(format!(
        "waiting for {} certificates, {} environments and {} scopes of tenant {} to be removed",
        certificates_left.len(),
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

/// Where a tenant's scope groups live: its realm, and its organization in
/// a shared realm; `None` until its identity is recorded.
pub fn group_home(tenant: &Tenant) -> Option<(String, Option<String>)> {
    let status = tenant.status.as_ref()?;
    let realm = status.realm.clone()?;
    match status.isolation {
        Some(Isolation::Organization) => Some((realm, Some(status.organization_id.clone()?))),
        Some(Isolation::Realm) => Some((realm, None)),
        // Provisioned before isolation was recorded: not yet reconciled anew.
        None => None,
    }
}

/// Whether a Tenant is Ready in one backend, for the kinds that build on it.
pub fn backend_ready(tenant: &Tenant, condition: &str) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition && c.status == "True")
    })
}
