//! A tenant's identity in Keycloak (`RealmReady`): an organization and a
//! client in the shared realm of its type and region, or a realm of its own
//! with its client; its identity providers federated into either.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use ossature_crds::{IdentityProviderStatus, Isolation, Scope, TenantStatus};
use ossature_model::conditions::{self, Outcome, reasons};
use ossature_model::identity::{self, IdentityProviderSettings, SHARED_REALMS_LEASE};
use ossature_model::names::TENANT_LABEL;
use ossature_model::scopes::{ScopeTree, path_string};

use super::Provisioning;
use crate::adapters::{Backend, BackendError, Change, Failure, Verb};
use crate::reconcile::{Plan, Report, Step};

impl<'a> Provisioning<'a> {
    /// The identity step; `Err` with the plan's Stalled outcome when the
    /// tenant's isolation cannot be decided (nothing after it is planned).
    pub(super) async fn identity(&self, plan: &mut Plan<'a, TenantStatus>) -> Result<(), Outcome> {
        let isolation = match self.isolation().await {
            Ok(isolation) => isolation,
            Err(stalled) => {
                plan.outcome(Outcome::failed(
                    conditions::REALM_READY,
                    &stalled.reason,
                    stalled.message.clone(),
                ));
                return Err(stalled);
            }
        };
        let providers = match self.identity_providers(isolation).await {
            Ok(providers) => providers,
            Err(failure) => {
                plan.outcome(Outcome::failed(
                    conditions::REALM_READY,
                    failure.category,
                    failure.message,
                ));
                Vec::new()
            }
        };
        let spec = &self.tenant.spec;
        let realm_for_status = identity::realm_of(&self.names, spec, isolation);
        plan.status.identity_providers = spec
            .identity
            .identity_providers
            .iter()
            .zip(&providers)
            .map(|(p, settings)| IdentityProviderStatus {
                alias: p.alias.clone(),
                keycloak_alias: settings.alias.clone(),
                endpoint: self
                    .ctx
                    .keycloak
                    .broker_endpoint(&realm_for_status, &settings.alias),
            })
            .collect();
        self.identity_step(plan, isolation, providers);
        Ok(())
    }

    /// Where the tenant's people live, or why it cannot be decided.
    async fn isolation(&self) -> Result<Isolation, Outcome> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let name = tenant.name_any();
        let wanted = tenant.spec.identity.isolation;
        let recorded = tenant.status.as_ref().and_then(|s| s.isolation);
        if let Some(stalled) = identity::isolation_changed(wanted, recorded) {
            return Err(stalled);
        }
        // Asked only until the mode is recorded: does a realm of its name exist,
        // made before isolation existed (or kept by a Retain)?
        // (A tenant never reconciled has no status: nothing to ask.)
        let has_own_realm = wanted.is_none()
            && recorded.is_none()
            && tenant.status.is_some()
            && (tenant.status.as_ref().and_then(|s| s.realm.as_deref()) == Some(name.as_str())
                || ctx.keycloak.realm_exists(&name).await.unwrap_or(false));
        let isolation = identity::effective_isolation(wanted, recorded, has_own_realm);
        if isolation == Isolation::Realm {
            let tenants = ctx.stores.of::<ossature_crds::Tenant>().state();
            identity::within_realm_capacity(
                tenant,
                tenants.iter().map(|t| &**t),
                ctx.settings.platform.max_dedicated_realms,
            )?;
        }
        Ok(isolation)
    }

    /// `RealmReady`: an organization and a client in the shared realm, or a
    /// realm of its own with its client.
    fn identity_step(
        &self,
        plan: &mut Plan<'a, TenantStatus>,
        isolation: Isolation,
        providers: Vec<IdentityProviderSettings>,
    ) {
        let (tenant, ctx, fresh) = (self.tenant, self.ctx, self.fresh);
        let client = identity::client_settings(&self.names, &tenant.spec, isolation);
        plan.status.isolation = Some(isolation);
        plan.status.client_id = Some(client.client_id.clone());
        match isolation {
            Isolation::Realm => {
                let realm = identity::realm_settings(&self.names, &tenant.spec);
                plan.status.realm = Some(realm.name.clone());
                plan.step(Step::new(
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
                let shared =
                    identity::shared_realm(tenant.spec.tenant_type, &tenant.spec.residency);
                let organization = identity::organization_settings(&self.names, &tenant.spec);
                plan.status.realm = Some(shared.clone());
                plan.status.organization_id = tenant
                    .status
                    .as_ref()
                    .and_then(|s| s.organization_id.clone());
                plan.step(Step::reporting(
                    conditions::REALM_READY,
                    format!("organization {} in realm {shared}", organization.alias),
                    async move {
                        let (result, id) = organization_and_client(
                            ctx,
                            fresh,
                            &shared,
                            &organization,
                            &client,
                            &providers,
                        )
                        .await;
                        // The id Keycloak gave the organization, for status.
                        let report = Report::of(result);
                        match id {
                            Some(id) => report.found(move |status: &mut TenantStatus| {
                                status.organization_id = Some(id);
                                None
                            }),
                            None => report,
                        }
                    },
                ));
            }
        }
    }

    /// The tenant's identity providers as Keycloak gets them: OIDC client
    /// secrets from labelled Secrets of its namespace, scopes as their paths.
    async fn identity_providers(
        &self,
        isolation: Isolation,
    ) -> Result<Vec<IdentityProviderSettings>, Failure> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let name = &self.names.tenant;
        let namespace = &self.names.namespace;
        let providers = &tenant.spec.identity.identity_providers;
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let scopes = ctx.stores.in_namespace::<Scope>(namespace);
        let tree = ScopeTree::new(scopes.iter().map(|s| (s.name_any(), s.spec.parent.clone())));
        let paths: BTreeMap<String, String> = scopes
            .iter()
            .filter_map(|s| {
                let path = tree.path(&s.name_any()).ok()?;
                Some((s.name_any(), path_string(&path)))
            })
            .collect();
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        let mut settings = Vec::new();
        for provider in providers {
            let secret = match &provider.oidc {
                None => None,
                Some(oidc) => {
                    let reference = &oidc.client_secret;
                    ctx.calls.record(Backend::Kubernetes, Verb::Read);
                    let found = secrets.get_opt(&reference.name).await?;
                    let missing = |why: &str| {
                        Failure::new(
                            reasons::SECRET_NOT_USABLE,
                            format!(
                                "identity provider {}: Secret {namespace}/{} {why}",
                                provider.alias, reference.name
                            ),
                        )
                    };
                    let found = found.ok_or_else(|| missing("does not exist"))?;
                    let labelled = found
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(TENANT_LABEL))
                        == Some(name);
                    if !labelled {
                        return Err(missing(&format!(
                            "is not labelled {TENANT_LABEL}={name}; label it to hand it to Ossature"
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
            settings.push(identity::identity_provider_settings(
                name,
                isolation,
                provider,
                secret.as_deref(),
                &paths,
            ));
        }
        Ok(settings)
    }
}

/// The organization and the client in the shared realm, then the identity
/// providers; the organization's id once known.
async fn organization_and_client(
    ctx: &crate::context::Context,
    fresh: bool,
    shared: &str,
    organization: &identity::OrganizationSettings,
    client: &identity::ClientSettings,
    providers: &[IdentityProviderSettings],
) -> (Result<Vec<Change>, Failure>, Option<String>) {
    match ctx.shared_realm_exists(shared).await {
        Ok(true) => {}
        Ok(false) => {
            return (
                Err(Failure::new(
                    reasons::WAITING_FOR_SHARED_REALM,
                    format!(
                        "shared realm {shared} is not provisioned yet; the operator instance holding lease {SHARED_REALMS_LEASE} creates it"
                    ),
                )),
                None,
            );
        }
        Err(e) => return (Err(e.into()), None),
    }
    // The organization and the client do not depend on each other.
    let (organization, client) = tokio::join!(
        create_or_ensure(
            fresh,
            ctx.keycloak.create_organization(shared, organization),
            ctx.keycloak.ensure_organization(shared, organization),
        ),
        create_or_ensure(
            fresh,
            ctx.keycloak.create_client(shared, client),
            ctx.keycloak.ensure_client(shared, client),
        ),
    );
    let (organization, id) = match organization {
        Ok(found) => found,
        Err(e) => return (Err(e.into()), None),
    };
    let result = async {
        let mut changes = vec![organization, client?];
        changes.extend(federate(ctx, shared, Some(&id), providers).await?);
        Ok::<_, BackendError>(changes)
    }
    .await;
    (result.map_err(Failure::from), Some(id))
}

/// For a tenant never provisioned, creates without reading first; else, or
/// when the create met an existing object, reads, compares and writes.
/// (Futures are lazy: the one not needed never calls its backend.)
/// Both are boxed before anything holds them: they carry Keycloak
/// representations, and side by side in one future they would double what
/// every level above holds.
pub(super) fn create_or_ensure<'a, T: 'a, E: 'a>(
    fresh: bool,
    create: impl Future<Output = Result<Option<T>, E>> + Send + 'a,
    ensure: impl Future<Output = Result<T, E>> + Send + 'a,
) -> impl Future<Output = Result<T, E>> + Send + 'a {
    let (create, ensure) = (Box::pin(create), Box::pin(ensure));
    async move {
        if fresh && let Some(created) = create.await? {
            return Ok(created);
        }
        ensure.await
    }
}

/// Each identity provider in place, and no other of Ossature's.
async fn federate(
    ctx: &crate::context::Context,
    realm: &str,
    organization: Option<&str>,
    providers: &[IdentityProviderSettings],
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
