//! The ServiceIdentity controller: a product service's ServiceAccount, its
//! certificate with its SPIFFE ID, its Keycloak client (whose secret
//! rotates with the previous one still valid), its Pulsar token (minted by
//! OpenBao's transit key, a day at most), its credentials in the tenant's
//! KV, its OpenBao Kubernetes-auth role reading only its own path, and the
//! Secret its Workloads mount. Topic grants are applied per topic by the
//! Topic controller from every ServiceIdentity; this one applies the
//! subscription permissions of its namespace and reports whether its
//! grants are in place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;

use ossature_crds::{
    Certificate, Conditioned, Environment, Isolation, ServiceIdentity, ServiceIdentityStatus,
    Tenant, Topic,
};
use ossature_model::conditions::{
    self, ACCOUNT_READY, CERTIFICATE_READY, MESSAGING_READY, Outcome, REALM_READY, SECRETS_READY,
    reasons,
};
use ossature_model::names::{TenantNames, tenant_namespace};
use ossature_model::services::{
    CLIENT_ID_KEY, CLIENT_SECRET_KEY, PULSAR_TOKEN_EXPIRES_KEY, PULSAR_TOKEN_KEY, Rotation,
    ServiceNames, desired_grants, rotation, secret_data, secrets_hash, service_client,
    service_objects, service_secret, subscription_calls, subscriptions_in, token_claims,
    token_due, token_expiry,
};
use ossature_model::tenants::backend_ready;
use ossature_model::topics::PulsarTopic;

use super::topic::not_ready;
use crate::adapters::{BackendError, Change, Failure};
use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Report, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/service-identity-cleanup";

/// How often the tenant's own secrets at the service's path are looked at
/// again (reads only), so a change reaches the Workloads.
const SECRETS_REFRESH: Duration = Duration::from_secs(300);

/// The client secret the realm step found, for the secrets step after it.
type Slot = Arc<Mutex<Option<String>>>;

impl Reconciled for ServiceIdentity {
    const CONTROLLER: &'static str = "service-identity";
    const FINALIZER: &'static str = FINALIZER;
    /// Topics and Workloads follow it.
    const FOLLOWED: bool = true;

    async fn plan<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> Result<Plan<'a, ServiceIdentityStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let previous = self.status.clone().unwrap_or_default();
        let Some(names) = ServiceNames::of(self) else {
            return Ok(Plan::stalled(
                previous,
                reasons::NOT_IN_ENVIRONMENT_NAMESPACE,
                format!(
                    "namespace {namespace} is not an environment namespace; create ServiceIdentities in tn-<tenant>--<environment>, where their Workloads run"
                ),
            ));
        };
        let Some(tenant) = ctx.find::<Tenant>(&names.tenant).await? else {
            return Ok(Plan::stalled(
                previous,
                reasons::TENANT_NOT_FOUND,
                format!(
                    "tenant {} does not exist; create it (or apply its file) first",
                    names.tenant
                ),
            ));
        };
        let root_domain = ctx.settings.platform.root_domain.clone();
        let mut plan = Plan::new(ServiceIdentityStatus {
            pulsar_role: Some(names.pulsar_role.clone()),
            keycloak_client_id: Some(names.keycloak_client_id.clone()),
            openbao_role: Some(names.openbao_role.clone()),
            service_account: Some(names.service_account.clone()),
            spiffe_id: Some(names.spiffe_id(&root_domain)),
            certificate: Some(names.certificate_name()),
            ..previous.clone()
        });

        let tenant_ns = tenant_namespace(&names.tenant);
        if ctx
            .stores
            .get_in::<ossature_crds::Scope>(&tenant_ns, &self.spec.owner)
            .is_none()
        {
            plan.outcome(Outcome::failed(
                ACCOUNT_READY,
                reasons::SCOPE_NOT_FOUND,
                format!(
                    "owner {} is not a Scope of tenant {}; create the Scope or name an existing one in spec.owner",
                    self.spec.owner, names.tenant
                ),
            ));
        } else {
            let objects = service_objects(self, &names, &root_domain);
            let what = format!(
                "ServiceAccount {} and Certificate {}",
                names.service_account,
                names.certificate_name()
            );
            let calls = &ctx.calls;
            let client = ctx.client.clone();
            let ns = namespace.clone();
            plan.step(Step::new(ACCOUNT_READY, what, async move {
                let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
                let certificates = Api::<Certificate>::namespaced(client, &ns);
                Ok::<_, kube::Error>(vec![
                    kubernetes::ensure(&accounts, &objects.service_account, calls).await?,
                    kubernetes::ensure(&certificates, &objects.certificate, calls).await?,
                ])
            }));
        }
        plan.outcome(certificate_outcome(ctx, &names, &root_domain));

        let env = ctx
            .stores
            .get_in::<Environment>(&tenant_ns, &names.environment);
        let slot: Slot = Arc::default();
        match (&tenant.status, backend_ready(&tenant, REALM_READY)) {
            (Some(status), true) if status.realm.is_some() => {
                let realm = status.realm.clone().unwrap_or_default();
                let isolation = status.isolation.unwrap_or(Isolation::Organization);
                let slot = slot.clone();
                let names = names.clone();
                let what = format!("Keycloak client {} in realm {realm}", names.keycloak_client_id);
                plan.step(Step::reporting(REALM_READY, what, async move {
                    ensure_client(ctx, self, &names, &realm, isolation, slot).await
                }));
            }
            _ => plan.outcome(Outcome::failed(
                REALM_READY,
                reasons::WAITING_FOR_TENANT,
                format!(
                    "Keycloak client {} waits for tenant {}'s realm",
                    names.keycloak_client_id, names.tenant
                ),
            )),
        }

        if backend_ready(&tenant, SECRETS_READY) {
            let what = format!(
                "OpenBao role {} and Secret {}",
                names.openbao_role, names.secret_name
            );
            let names = names.clone();
            plan.step(
                Step::reporting(SECRETS_READY, what, async move {
                    ensure_secrets(ctx, self, &names, slot).await
                })
                .after(
                    &[REALM_READY],
                    reasons::PROGRESSING,
                    "the credentials are written once the Keycloak client is in place",
                ),
            );
        } else {
            plan.outcome(Outcome::failed(
                SECRETS_READY,
                reasons::WAITING_FOR_TENANT,
                format!(
                    "the credentials of {} wait for tenant {}'s OpenBao paths",
                    names.service, names.tenant
                ),
            ));
        }

        match not_ready(env.as_deref(), &names.tenant, &names.environment) {
            Some(why) => plan.outcome(Outcome::failed(
                MESSAGING_READY,
                reasons::WAITING_FOR_ENVIRONMENT,
                format!("the grants of {} wait: Pulsar namespace {why}", names.service),
            )),
            None => {
                let what = format!("subscription permissions of {}", names.pulsar_role);
                let names = names.clone();
                plan.step(Step::reporting(MESSAGING_READY, what, async move {
                    match sync_subscriptions(ctx, &names).await {
                        Ok(changes) => match grants_outcome(ctx, self, &names) {
                            Some(waiting) => Report::of(Ok(changes)).outcome(waiting),
                            None => Report::of(Ok(changes)),
                        },
                        Err(e) => Report::of(Err(e.into())),
                    }
                }));
            }
        }
        plan.due_within(Some(SECRETS_REFRESH));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let Some(names) = ServiceNames::of(self) else {
            return Ok(Vec::new());
        };
        // Its grants go with it; the other services' stay as they are.
        for grant in &self.spec.grants {
            let topic = ctx
                .stores
                .get_in::<Topic>(&names.namespace, &grant.topic)
                .and_then(|t| PulsarTopic::of_topic(&t));
            if let Some(topic) = topic
                && ctx.pulsar.topic_shape(&topic).await?.is_some()
            {
                ctx.pulsar.revoke(&topic, &names.pulsar_role).await?;
            }
        }
        if pulsar_namespace_exists(ctx, &names).await? {
            sync_subscriptions(ctx, &names).await?;
        }
        let tenant = ctx.find::<Tenant>(&names.tenant).await?;
        if let Some(realm) = tenant
            .as_ref()
            .and_then(|t| t.status.as_ref())
            .and_then(|s| s.realm.clone())
        {
            ctx.keycloak
                .delete_client(&realm, &names.keycloak_client_id)
                .await?;
        }
        ctx.openbao.delete_kubernetes_role(&names.openbao_role).await?;
        ctx.openbao.delete_policy(&names.openbao_policy).await?;
        match ctx
            .openbao
            .delete_secret(&names.kv_mount, &names.credentials_key())
            .await
        {
            Ok(_) => {}
            // The tenant's KV mount went first.
            Err(BackendError::Refused { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            format!(
                "Keycloak client {}, OpenBao role {}, its credentials and its grants removed",
                names.keycloak_client_id, names.openbao_role
            ),
        )])
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let in_namespace = |stores: crate::stores::Stores| {
            move |namespace: Option<String>| {
                namespace
                    .map(|ns| stores.in_namespace::<ServiceIdentity>(&ns))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            }
        };
        let granting = watch.stores.clone();
        let by_environment = in_namespace(watch.stores.clone());
        let tenants = watch.stores.clone();
        controller
            // A Topic's grants applied, or the Topic created or deleted.
            // Only what a service reads of a Topic (who it has granted), not
            // its backlog, producers and consumers, which change all the time.
            .watches_shared_stream(
                watch.changes_of(|t: &Topic| t.status.as_ref().map(|s| s.granted_to.clone())),
                move |t: Arc<Topic>| {
                let topic = t.name_any();
                t.namespace()
                    .map(|ns| granting.in_namespace::<ServiceIdentity>(&ns))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| s.spec.grants.iter().any(|g| g.topic == topic))
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
                },
            )
            .watches_shared_stream(
                watch.changes::<Certificate>(),
                move |c: Arc<Certificate>| {
                    let namespace = c.namespace().unwrap_or_default();
                    c.owner_references()
                        .iter()
                        .filter(|o| o.kind == "ServiceIdentity")
                        .map(|o| ObjectRef::new(&o.name).within(&namespace))
                        .collect::<Vec<_>>()
                },
            )
            // Its Pulsar namespace becoming ready.
            .watches_shared_stream(
                watch.changes::<Environment>(),
                move |e: Arc<Environment>| {
                    let namespace = e
                        .namespace()
                        .as_deref()
                        .and_then(ossature_model::names::tenant_of)
                        .map(|t| TenantNames::new(t).environment(&e.name_any()).namespace);
                    by_environment(namespace)
                },
            )
            // Its realm or OpenBao paths becoming ready.
            .watches_shared_stream(watch.changes::<Tenant>(), move |t: Arc<Tenant>| {
                tenants
                    .of_tenant::<ServiceIdentity>(&t.name_any())
                    .into_iter()
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>()
            })
    }
}

/// The Certificate's readiness, as its own controller reports it.
fn certificate_outcome(ctx: &Context, names: &ServiceNames, root_domain: &str) -> Outcome {
    let name = names.certificate_name();
    let found = ctx.stores.get_in::<Certificate>(&names.namespace, &name);
    let ready = found
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .is_some_and(|s| conditions::is_true(s.conditions(), conditions::READY));
    if ready {
        Outcome::ready(CERTIFICATE_READY, format!("Certificate {name} is Ready"))
    } else {
        Outcome::failed(
            CERTIFICATE_READY,
            reasons::WAITING_FOR_CERTIFICATE,
            format!(
                "Certificate {name} for {} is not Ready yet; see its status",
                names.spiffe_id(root_domain)
            ),
        )
    }
}

/// The Keycloak client, and its secret rotated when due.
async fn ensure_client(
    ctx: &Context,
    identity: &ServiceIdentity,
    names: &ServiceNames,
    realm: &str,
    isolation: Isolation,
    slot: Slot,
) -> Report<ServiceIdentityStatus> {
    let run = async {
        let mut changes = vec![ctx.keycloak.ensure_secret_rotation(realm).await?];
        let client = ctx
            .keycloak
            .ensure_service_client(realm, &service_client(names, isolation))
            .await?;
        changes.push(client.change);
        let status = identity.status.clone().unwrap_or_default();
        let last = status.last_rotated.as_ref().map(|t| t.0);
        let now = Timestamp::now();
        let due = rotation(
            &identity.spec.credentials,
            last,
            status.last_rotation_request.as_deref(),
            now,
        );
        let (secret, rotated_at) = match due {
            Rotation::Requested | Rotation::Scheduled => {
                let secret = ctx.keycloak.rotate_client_secret(realm, &client.id).await?;
                changes.push(Change::Updated);
                (secret, now)
            }
            Rotation::First => (ctx.keycloak.client_secret(realm, &client.id).await?, now),
            Rotation::At(_) => (
                ctx.keycloak.client_secret(realm, &client.id).await?,
                last.unwrap_or(now),
            ),
        };
        *slot.lock().expect("never poisoned") = Some(secret);
        Ok::<_, Failure>((changes, rotated_at, due))
    };
    match run.await {
        Ok((changes, rotated_at, due)) => {
            let request = identity.spec.credentials.rotation_request.clone();
            let interval = ossature_model::services::rotation_interval(&identity.spec.credentials);
            Report::of(Ok(changes)).found(move |s: &mut ServiceIdentityStatus| {
                s.last_rotated = Some(Time(rotated_at));
                let next = rotated_at
                    .checked_add(k8s_openapi::jiff::SignedDuration::try_from(interval).ok()?)
                    .ok()?;
                s.next_rotation = Some(Time(next));
                if matches!(due, Rotation::Requested | Rotation::First) {
                    s.last_rotation_request = request;
                }
                let left = next.duration_since(Timestamp::now());
                Duration::try_from(left).ok()
            })
        }
        Err(failure) => Report::of(Err(failure)),
    }
}

/// The credentials in KV (a Pulsar token minted when due), the Secret the
/// Workloads mount, and the OpenBao role reading only the service's path.
async fn ensure_secrets(
    ctx: &Context,
    identity: &ServiceIdentity,
    names: &ServiceNames,
    slot: Slot,
) -> Report<ServiceIdentityStatus> {
    let run = async {
        let mut changes = Vec::new();
        let openbao = &ctx.openbao;
        changes.push(
            openbao
                .ensure_policy(&names.openbao_policy, &names.openbao_policy_hcl())
                .await?,
        );
        changes.push(
            openbao
                .ensure_kubernetes_role(
                    &names.openbao_role,
                    &names.service_account,
                    &names.namespace,
                    std::slice::from_ref(&names.openbao_policy),
                    Duration::from_secs(3600),
                )
                .await?,
        );
        let stored = openbao
            .get_secret(&names.kv_mount, &names.credentials_key())
            .await?
            .unwrap_or_default();
        let mut credentials = stored.clone();
        credentials.insert(CLIENT_ID_KEY.into(), names.keycloak_client_id.clone());
        if let Some(secret) = slot.lock().expect("never poisoned").clone() {
            credentials.insert(CLIENT_SECRET_KEY.into(), secret);
        }
        let now = Timestamp::now();
        if token_due(token_expiry(&stored), now) {
            let claims = token_claims(&names.pulsar_role, now);
            let token = openbao.sign_token(&ctx.settings.token_key, &claims).await?;
            credentials.insert(PULSAR_TOKEN_KEY.into(), token);
            credentials.insert(PULSAR_TOKEN_EXPIRES_KEY.into(), claims.exp.to_string());
        }
        if credentials != stored {
            changes.push(
                openbao
                    .write_secret(&names.kv_mount, &names.credentials_key(), &credentials)
                    .await?,
            );
        }
        let own = openbao
            .get_secret(&names.kv_mount, &names.secrets_key)
            .await?
            .unwrap_or_default();
        let data = secret_data(&own, &credentials);
        let secret = service_secret(identity, names, &data);
        let api = Api::<Secret>::namespaced(ctx.client.clone(), &names.namespace);
        changes.push(kubernetes::ensure(&api, &secret, &ctx.calls).await?);
        Ok::<_, Failure>((changes, secrets_hash(&data), token_expiry(&credentials)))
    };
    match run.await {
        Ok((changes, hash, expires)) => {
            let secret_name = names.secret_name.clone();
            Report::of(Ok(changes)).found(move |s: &mut ServiceIdentityStatus| {
                s.secret_name = Some(secret_name);
                s.secrets_hash = Some(hash);
                let expires = expires.and_then(|e| Timestamp::from_second(e).ok());
                s.pulsar_token_expires = expires.map(Time);
                // Back in time to mint the next token.
                let margin = ossature_model::services::TOKEN_MARGIN.as_secs() as i64;
                let remint = expires?.as_second() - margin - Timestamp::now().as_second();
                Some(Duration::from_secs(remint.max(1) as u64))
            })
        }
        Err(failure) => Report::of(Err(failure)),
    }
}

/// Whether the Pulsar namespace of the service's environment exists.
async fn pulsar_namespace_exists(ctx: &Context, names: &ServiceNames) -> Result<bool, Error> {
    let env = ctx
        .stores
        .get_in::<Environment>(&tenant_namespace(&names.tenant), &names.environment);
    Ok(env.is_some_and(|e| {
        e.status
            .as_ref()
            .is_some_and(|s| conditions::is_true(s.conditions(), MESSAGING_READY))
    }))
}

/// The subscription permissions of the service's Pulsar namespace, from
/// every ServiceIdentity of its Kubernetes namespace.
async fn sync_subscriptions(
    ctx: &Context,
    names: &ServiceNames,
) -> Result<Vec<Change>, BackendError> {
    let identities: Vec<ServiceIdentity> = ctx
        .stores
        .in_namespace::<ServiceIdentity>(&names.namespace)
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let grants = desired_grants(&names.tenant, &identities);
    let desired = subscriptions_in(&grants, &names.namespace);
    let pulsar_namespace = TenantNames::new(&names.tenant)
        .environment(&names.environment)
        .pulsar_namespace;
    let Some(live) = ctx
        .pulsar
        .subscription_permissions(&names.tenant, &pulsar_namespace)
        .await?
    else {
        // Gone with its environment: nothing is left to allow.
        return Ok(Vec::new());
    };
    let mut changes = Vec::new();
    for call in subscription_calls(&names.tenant, &desired, &live) {
        changes.push(match call {
            ossature_model::services::SubscriptionCall::Set {
                subscription,
                roles,
            } => {
                ctx.pulsar
                    .set_subscription_roles(&names.tenant, &pulsar_namespace, &subscription, &roles)
                    .await?
            }
            ossature_model::services::SubscriptionCall::Revoke { subscription, role } => {
                ctx.pulsar
                    .revoke_subscription_role(&names.tenant, &pulsar_namespace, &subscription, &role)
                    .await?
            }
        });
    }
    Ok(changes)
}

/// Why the service's topic grants are not all in place, if they are not:
/// a Topic that does not exist, or one whose controller has not applied
/// the grant yet (it reports the services it granted).
fn grants_outcome(
    ctx: &Context,
    identity: &ServiceIdentity,
    names: &ServiceNames,
) -> Option<Outcome> {
    let mut missing = Vec::new();
    let mut pending = Vec::new();
    for grant in &identity.spec.grants {
        let Some(topic) = ctx.stores.get_in::<Topic>(&names.namespace, &grant.topic) else {
            missing.push(grant.topic.clone());
            continue;
        };
        let applied = topic.status.as_ref().is_some_and(|s| {
            s.granted_to.iter().any(|u| {
                u.service == names.service
                    && grant.actions.iter().all(|a| u.actions.contains(a))
            })
        });
        if !applied {
            pending.push(grant.topic.clone());
        }
    }
    if !missing.is_empty() {
        return Some(Outcome::failed(
            MESSAGING_READY,
            reasons::TOPIC_NOT_FOUND,
            format!(
                "grants name Topics that do not exist in namespace {}: {}; create them or remove the grants",
                names.namespace,
                missing.join(", ")
            ),
        ));
    }
    (!pending.is_empty()).then(|| {
        Outcome::failed(
            MESSAGING_READY,
            reasons::PROGRESSING,
            format!(
                "waiting for the grants on {} to be applied to role {}",
                pending.join(", "),
                names.pulsar_role
            ),
        )
    })
}
