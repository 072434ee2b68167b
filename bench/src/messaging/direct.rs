//! The baseline of the messaging benchmark: the backend calls that
//! provisioning the Topics and services takes, made directly with the
//! operator's own adapters (which read before they write, as in the
//! operator), at the operator's concurrency per kind, into an environment
//! of their own. What the controllers add (queues, watches, statuses,
//! Events, the Certificate object) is what the ratio measures.
//!
//! A topic: created, its policies read and set, its stats read; then its
//! complete grants and its schema (compatibility check, upload) at once. A
//! service: its ServiceAccount and its certificate (a key recorded in KV,
//! signed by the tenant CA's service role, recorded again, its Secret); its
//! Keycloak client under the realm's rotation policy and its secret; its
//! OpenBao policy, Kubernetes-auth role, Pulsar token and credentials in
//! KV, and its Secret; the subscription permissions of its namespace.
//! Removal does what the cleanups do, then the garbage collector.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use ossature_crds::{Certificate, Isolation, Persistence, ServiceIdentity, Tenant, Topic};
use ossature_model::certificates::{CaState, Wanted, record_path, secret};
use ossature_model::names::TenantNames;
use ossature_model::platform::{DEFAULT_ROOT_DOMAIN, Platform};
use ossature_model::services::{
    CLIENT_ID_KEY, CLIENT_SECRET_KEY, GrantCall, PULSAR_TOKEN_EXPIRES_KEY, PULSAR_TOKEN_KEY,
    Permissions, ServiceNames, SubscriptionCall, desired_grants, secret_data, service_client,
    service_objects, service_secret, subscription_calls, subscriptions_in, token_claims, token_due,
    token_expiry,
};
use ossature_model::topics::{
    PulsarTopic, desired_policies, desired_schema, policy_calls, schema_differs,
};
use ossature_operator::adapters::keycloak::Keycloak;
use ossature_operator::adapters::openbao::OpenBao;
use ossature_operator::adapters::openbao::tokens::TokenKey;
use ossature_operator::adapters::pulsar::{Pulsar, SchemaVerdict, TokenFile, TopicShape};
use ossature_operator::adapters::{Backend, BackendError, Calls, Failure, Verb};
use ossature_operator::context::{Backends, Context, Settings};
use ossature_operator::kubernetes;
use ossature_operator::metrics::Metrics;
use ossature_operator::signing::{self, Target};
use ossature_operator::stores::{Nudges, Stores};

use super::left::Left;
use crate::{latencies, line, secs};

/// Tries of one object's provisioning or removal before the baseline fails.
const TRIES: u32 = 6;

/// What the baseline measured.
pub(in crate::messaging) struct Baseline {
    /// From the first call to the last object's.
    pub elapsed: Duration,
    /// When each topic and each service was done, from the first call, sorted.
    pub topics: Vec<Duration>,
    pub services: Vec<Duration>,
    /// Writes and reads by backend, of the topics and of the services.
    topic_calls: (BTreeMap<String, u64>, BTreeMap<String, u64>),
    service_calls: (BTreeMap<String, u64>, BTreeMap<String, u64>),
    /// Objects tried again: while provisioning, while removing.
    retries: (usize, usize),
    pub removed_in: Duration,
}

impl Baseline {
    /// Every write, by backend.
    pub fn writes(&self) -> BTreeMap<String, u64> {
        let mut all = self.topic_calls.0.clone();
        for (backend, n) in &self.service_calls.0 {
            *all.entry(backend.clone()).or_default() += n;
        }
        all
    }

    pub fn print(&self, left: &Left) {
        line(
            "baseline",
            format!(
                "{} topics and {} services in {}",
                self.topics.len(),
                self.services.len(),
                secs(self.elapsed)
            ),
        );
        if self.retries.0 > 0 {
            line(
                "baseline retries",
                format!("{} objects tried again", self.retries.0),
            );
        }
        line("baseline topics", latencies(&self.topics));
        line("baseline services", latencies(&self.services));
        for (kind, n, (writes, reads)) in [
            ("topic", self.topics.len(), &self.topic_calls),
            ("service", self.services.len(), &self.service_calls),
        ] {
            line(
                &format!("baseline per {kind}"),
                format!(
                    "writes {}  reads {}",
                    super::per_object(writes, n),
                    super::per_object(reads, n)
                ),
            );
        }
        line(
            "baseline removed in",
            format!(
                "{} ({} objects tried again; left behind: {left})",
                secs(self.removed_in),
                self.retries.1
            ),
        );
    }
}

/// Provisions every tenant's `objects` directly, topics and services each
/// `concurrency` at a time, then removes them all, whether provisioning
/// succeeded or not.
pub(in crate::messaging) async fn run(
    env: &BTreeMap<String, String>,
    client: &kube::Client,
    tenants: &[Tenant],
    objects: &[(Vec<Topic>, Vec<ServiceIdentity>)],
    concurrency: usize,
) -> Result<Baseline> {
    // One context per kind, so their calls are counted apart.
    let (for_topics, for_services) = (context(env, client)?, context(env, client)?);
    let topics: Vec<(&Tenant, &Topic, Permissions)> = tenants
        .iter()
        .zip(objects)
        .flat_map(|(tenant, (topics, services))| {
            let grants = desired_grants(&tenant.name_any(), services);
            topics.iter().map(move |topic| {
                let namespace = topic.namespace().unwrap_or_default();
                (tenant, topic, grants.on(&namespace, &topic.name_any()))
            })
        })
        .collect();
    let services: Vec<(&Tenant, &ServiceIdentity, &[ServiceIdentity])> = tenants
        .iter()
        .zip(objects)
        .flat_map(|(tenant, (_, services))| {
            services
                .iter()
                .map(move |service| (tenant, service, services.as_slice()))
        })
        .collect();

    let retries = AtomicUsize::new(0);
    let began = Instant::now();
    let done = |result: Result<()>| result.map(|()| began.elapsed());
    let (topic_times, service_times) = tokio::join!(
        stream::iter(&topics)
            .map(|(tenant, topic, grants)| async {
                let tenant = tenant.name_any();
                let provision = || provision_topic(&for_topics, &tenant, topic, grants);
                done(retried(provision, &retries).await)
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>(),
        stream::iter(&services)
            .map(|(tenant, service, all)| async {
                let provision = || provision_service(&for_services, tenant, service, all);
                done(retried(provision, &retries).await)
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>(),
    );
    let elapsed = began.elapsed();
    let topic_calls = counted(&for_topics.calls);
    let service_calls = counted(&for_services.calls);
    let provision_retries = retries.swap(0, Ordering::Relaxed);

    // Services first: their grants are revoked on topics still there.
    let removing = Instant::now();
    let services_removed: Vec<Result<()>> = stream::iter(&services)
        .map(|(tenant, service, _)| {
            retried(|| remove_service(&for_services, tenant, service), &retries)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let topics_removed: Vec<Result<()>> = stream::iter(&topics)
        .map(|(_, topic, _)| retried(|| remove_topic(&for_topics, topic), &retries))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let removed_in = removing.elapsed();

    let sorted = |times: Vec<Result<Duration>>| -> Result<Vec<Duration>> {
        let mut times = times.into_iter().collect::<Result<Vec<_>>>()?;
        times.sort();
        Ok(times)
    };
    let topics = sorted(topic_times).context("the baseline's topics")?;
    let services = sorted(service_times).context("the baseline's services")?;
    services_removed
        .into_iter()
        .chain(topics_removed)
        .collect::<Result<Vec<()>>>()
        .context("removing the baseline's objects")?;
    Ok(Baseline {
        elapsed,
        topics,
        services,
        topic_calls,
        service_calls,
        retries: (provision_retries, retries.into_inner()),
        removed_in,
    })
}

/// Tries to provision or remove an object again after a failure, as the
/// operator does (a call times out after 15 s when a backend is loaded),
/// after 1, 2, 4 ... s, [`TRIES`] times at most; `retries` counts the
/// tries again.
async fn retried<F, Fut>(attempt: F, retries: &AtomicUsize) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut pause = Duration::from_secs(1);
    for _ in 1..TRIES {
        if attempt().await.is_ok() {
            return Ok(());
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    attempt().await
}

/// The operator's adapters with counters of their own, in a context the
/// signing module takes; the operator's own credentials.
fn context(env: &BTreeMap<String, String>, client: &kube::Client) -> Result<Context> {
    let var = |name: &str| {
        env.get(name)
            .cloned()
            .with_context(|| format!("the stack's environment has no {name}"))
    };
    let calls = Calls::default();
    let token = TokenFile::read(var("OSSATURE_PULSAR_TOKEN_FILE")?)
        .context("reading the stack's Pulsar token")?;
    let backends = Backends {
        client: client.clone(),
        keycloak: Keycloak::new(
            &var("OSSATURE_KEYCLOAK_URL")?,
            &var("OSSATURE_KEYCLOAK_ADMIN_USER")?,
            &var("OSSATURE_KEYCLOAK_ADMIN_PASSWORD")?,
            calls.clone(),
        )?,
        pulsar: Pulsar::new(
            &var("OSSATURE_PULSAR_ADMIN_URL")?,
            Some(token),
            calls.clone(),
        )?,
        openbao: OpenBao::new(
            &var("OSSATURE_OPENBAO_ADDR")?,
            &var("OSSATURE_OPENBAO_TOKEN")?,
            calls.clone(),
        )?,
        edge: None,
        dns: None,
        calls: calls.clone(),
        health: Default::default(),
    };
    let platform = Platform {
        root_domain: std::env::var("OSSATURE_ROOT_DOMAIN")
            .unwrap_or_else(|_| DEFAULT_ROOT_DOMAIN.into()),
        ..Platform::default()
    };
    let settings = Settings {
        platform,
        resync: Duration::from_secs(300),
        max_backoff: Duration::from_secs(60),
        selector: None,
        acme_namespace: "default".into(),
        lease_namespace: "default".into(),
        token_key: Default::default(),
        // The baseline makes no workloads.
        autoscaler: None,
        secrets: ossature_operator::secrets_access::SecretsAccess::Cluster,
    };
    let metrics = Metrics::new(&calls);
    Ok(Context::new(
        backends,
        settings,
        metrics,
        (Stores::default(), Nudges::default()),
        ossature_operator::leader::Leadership::always(Default::default()),
    ))
}

/// The calls counted so far: (writes, reads) by backend.
fn counted(calls: &Calls) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let by_backend = |verb| {
        [
            Backend::Kubernetes,
            Backend::Keycloak,
            Backend::Pulsar,
            Backend::OpenBao,
        ]
        .into_iter()
        .map(|b| (b.as_str().to_string(), calls.count(b, verb)))
        .filter(|(_, n)| *n > 0)
        .collect()
    };
    (by_backend(Verb::Write), by_backend(Verb::Read))
}

fn failed(failure: Failure) -> anyhow::Error {
    anyhow!("{}: {}", failure.category, failure.message)
}

fn pulsar_topic(topic: &Topic) -> Result<PulsarTopic> {
    PulsarTopic::of_topic(topic).context("a Topic of an environment namespace")
}

fn names_of(service: &ServiceIdentity) -> Result<ServiceNames> {
    ServiceNames::of(service).context("a ServiceIdentity of an environment namespace")
}

async fn provision_topic(
    ctx: &Context,
    tenant: &str,
    topic: &Topic,
    grants: &Permissions,
) -> Result<()> {
    let at = pulsar_topic(topic)?;
    let partitions = topic.spec.partitions;
    if ctx.pulsar.topic_shape(&at).await?.is_none() {
        ctx.pulsar.create_topic(&at, partitions).await?;
    }
    let live = ctx.pulsar.topic_policies(&at).await?;
    for call in policy_calls(&desired_policies(&topic.spec), &live) {
        ctx.pulsar.apply_policy(&at, &call).await?;
    }
    ctx.pulsar.topic_usage(&at, partitions.is_some()).await?;

    let granted = async {
        let live = ctx.pulsar.topic_permissions(&at).await?;
        for call in ossature_model::services::grant_calls(tenant, grants, &live) {
            match call {
                GrantCall::Grant { role, actions } => {
                    ctx.pulsar.grant(&at, &role, &actions).await?
                }
                GrantCall::Revoke { role } => ctx.pulsar.revoke(&at, &role).await?,
            };
        }
        anyhow::Ok(())
    };
    let registered = async {
        let Some(schema) = &topic.spec.schema else {
            return Ok(());
        };
        let desired = desired_schema(schema)?;
        let live = ctx.pulsar.latest_schema(&at).await?;
        let live = live
            .as_ref()
            .map(|l| (l.schema_type.as_str(), l.data.as_str()));
        if !schema_differs(&desired, live) {
            return Ok(());
        }
        let verdict = match ctx.pulsar.check_schema(&at, &desired.payload).await? {
            SchemaVerdict::Accepted(_) => ctx.pulsar.upload_schema(&at, &desired.payload).await?,
            refused => refused,
        };
        match verdict {
            SchemaVerdict::Accepted(_) => Ok(()),
            refused => bail!("the broker refused the schema of {at}: {refused:?}"),
        }
    };
    tokio::try_join!(granted, registered)?;
    Ok(())
}

async fn provision_service(
    ctx: &Context,
    tenant: &Tenant,
    service: &ServiceIdentity,
    all: &[ServiceIdentity],
) -> Result<()> {
    let names = names_of(service)?;
    let objects = service_objects(service, &names, &ctx.settings.platform.root_domain);
    let account = async {
        let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &names.namespace);
        kubernetes::ensure(&accounts, &objects.service_account, &ctx.calls).await?;
        issue(ctx, tenant, &objects.certificate).await
    };
    let credentials = async {
        let secret = client_secret(ctx, tenant, &names).await?;
        write_credentials(ctx, service, &names, secret).await
    };
    tokio::try_join!(account, credentials, sync_subscriptions(ctx, &names, all))?;
    Ok(())
}

/// What the Certificate's controller does for the service's certificate.
async fn issue(ctx: &Context, tenant: &Tenant, certificate: &Certificate) -> Result<()> {
    let name = tenant.name_any();
    let names = TenantNames::new(&name);
    let namespace = certificate.namespace().unwrap_or_default();
    let path = record_path(&namespace, &certificate.name_any());
    let at = Target {
        tenant: &name,
        names: &names,
        path: &path,
        ca: CaState::of(tenant),
        issuers: None,
    };
    let held = signing::held(ctx, &at).await.map_err(failed)?;
    let wanted = Wanted::of(&certificate.spec);
    let record = signing::sign(ctx, &certificate.spec, &at, held, &wanted)
        .await
        .map_err(failed)?;
    if let Some(secret_name) = &certificate.spec.secret_name {
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
        let desired = secret(certificate, secret_name, &record);
        kubernetes::ensure(&secrets, &desired, &ctx.calls).await?;
    }
    Ok(())
}

/// The realm of the tenant and how it is isolated, from its status.
fn realm_of(tenant: &Tenant) -> Result<(String, Isolation)> {
    let status = tenant.status.as_ref();
    let realm = status
        .and_then(|s| s.realm.clone())
        .with_context(|| format!("tenant {} has no realm in its status", tenant.name_any()))?;
    let isolation = status
        .and_then(|s| s.isolation)
        .unwrap_or(Isolation::Organization);
    Ok((realm, isolation))
}

/// The service's Keycloak client under the realm's rotation policy, and
/// its secret (a first one: no rotation yet).
async fn client_secret(ctx: &Context, tenant: &Tenant, names: &ServiceNames) -> Result<String> {
    let (realm, isolation) = realm_of(tenant)?;
    // Services of a realm race to add its policy: the losers' writes are
    // refused (409), and the operator tries again, as here.
    let mut attempts = 0;
    while let Err(e) = ctx.keycloak.ensure_secret_rotation(&realm).await {
        match e {
            BackendError::Refused { status: 409, .. } if attempts < 5 => attempts += 1,
            e => return Err(e.into()),
        }
    }
    let client = ctx
        .keycloak
        .ensure_service_client(&realm, &service_client(names, isolation))
        .await?;
    Ok(ctx.keycloak.client_secret(&realm, &client.id).await?)
}

/// The OpenBao policy and role, the credentials in KV with a Pulsar token,
/// and the Secret the service's Workloads mount.
async fn write_credentials(
    ctx: &Context,
    service: &ServiceIdentity,
    names: &ServiceNames,
    client_secret: String,
) -> Result<()> {
    let openbao = &ctx.openbao;
    openbao
        .ensure_policy(&names.openbao_policy, &names.openbao_policy_hcl())
        .await?;
    openbao
        .ensure_kubernetes_role(
            &names.openbao_role,
            &names.service_account,
            &names.namespace,
            std::slice::from_ref(&names.openbao_policy),
            Duration::from_secs(3600),
        )
        .await?;
    let key = names.credentials_key();
    let stored = openbao
        .get_secret(&names.kv_mount, &key)
        .await?
        .unwrap_or_default();
    let mut credentials = stored.clone();
    credentials.insert(CLIENT_ID_KEY.into(), names.keycloak_client_id.clone());
    credentials.insert(CLIENT_SECRET_KEY.into(), client_secret);
    let now = Timestamp::now();
    if token_due(token_expiry(&stored), now) {
        let claims = token_claims(&names.pulsar_role, now);
        let token = openbao.sign_token(&TokenKey::default(), &claims).await?;
        credentials.insert(PULSAR_TOKEN_KEY.into(), token);
        credentials.insert(PULSAR_TOKEN_EXPIRES_KEY.into(), claims.exp.to_string());
    }
    if credentials != stored {
        openbao
            .write_secret(&names.kv_mount, &key, &credentials)
            .await?;
    }
    let own = openbao
        .get_secret(&names.kv_mount, &names.secrets_key)
        .await?
        .unwrap_or_default();
    let data = secret_data(&own, &credentials);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &names.namespace);
    kubernetes::ensure(&secrets, &service_secret(service, names, &data), &ctx.calls).await?;
    Ok(())
}

/// The subscription permissions of the service's Pulsar namespace, from
/// `identities` (none: every service's are taken off).
async fn sync_subscriptions(
    ctx: &Context,
    names: &ServiceNames,
    identities: &[ServiceIdentity],
) -> Result<()> {
    let desired = subscriptions_in(&desired_grants(&names.tenant, identities), &names.namespace);
    let namespace = TenantNames::new(&names.tenant)
        .environment(&names.environment)
        .pulsar_namespace;
    let tenant = names.tenant.as_str();
    let Some(live) = ctx
        .pulsar
        .subscription_permissions(tenant, &namespace)
        .await?
    else {
        return Ok(());
    };
    for call in subscription_calls(tenant, &desired, &live) {
        match call {
            SubscriptionCall::Set {
                subscription,
                roles,
            } => drop(
                ctx.pulsar
                    .set_subscription_roles(tenant, &namespace, &subscription, &roles)
                    .await?,
            ),
            SubscriptionCall::Revoke { subscription, role } => {
                let revoked = ctx
                    .pulsar
                    .revoke_subscription_role(tenant, &namespace, &subscription, &role)
                    .await;
                match revoked {
                    // Taken off by another service's removal in between,
                    // with the subscription's last role (the broker says 500).
                    Err(BackendError::Refused { body, .. })
                        if body.contains("couldn't find subscription") => {}
                    other => drop(other?),
                }
            }
        };
    }
    Ok(())
}

/// What the service's cleanup and its Certificate's do, then the garbage
/// collector (its account and Secrets); every step is tried, so a failed
/// one leaves no more behind than it must.
async fn remove_service(ctx: &Context, tenant: &Tenant, service: &ServiceIdentity) -> Result<()> {
    let names = names_of(service)?;
    let mut failed = Vec::new();
    let mut step = |result: Result<()>| {
        if let Err(e) = result {
            failed.push(format!("{e:#}"));
        }
    };
    for grant in &service.spec.grants {
        let topic = PulsarTopic::of(&names.namespace, &grant.topic, Persistence::Persistent)
            .context("a grant of an environment namespace")?;
        step(revoke(ctx, &topic, &names.pulsar_role).await);
    }
    step(sync_subscriptions(ctx, &names, &[]).await);
    let (realm, _) = realm_of(tenant)?;
    let client = &names.keycloak_client_id;
    step(done(ctx.keycloak.delete_client(&realm, client).await));
    let openbao = &ctx.openbao;
    step(done(
        openbao.delete_kubernetes_role(&names.openbao_role).await,
    ));
    step(done(openbao.delete_policy(&names.openbao_policy).await));
    let credentials = names.credentials_key();
    step(done(
        openbao.delete_secret(&names.kv_mount, &credentials).await,
    ));
    let record = record_path(&names.namespace, &names.certificate_name());
    step(done(openbao.delete_secret(&names.kv_mount, &record).await));
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &names.namespace);
    for secret in [names.certificate_secret(), names.secret_name.clone()] {
        step(done(
            kubernetes::delete(&secrets, &secret, &ctx.calls).await,
        ));
    }
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &names.namespace);
    let account = &names.service_account;
    step(done(
        kubernetes::delete(&accounts, account, &ctx.calls).await,
    ));
    match failed.is_empty() {
        true => Ok(()),
        false => bail!(
            "removing service {}: {}",
            names.qualified,
            failed.join("; ")
        ),
    }
}

/// The role's grant on the topic taken away, if the topic is there.
async fn revoke(ctx: &Context, topic: &PulsarTopic, role: &str) -> Result<()> {
    if ctx.pulsar.topic_shape(topic).await?.is_some() {
        match ctx.pulsar.revoke(topic, role).await {
            Ok(_) | Err(BackendError::Refused { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn done<E: std::error::Error + Send + Sync + 'static, T>(result: Result<T, E>) -> Result<()> {
    result.map(drop).map_err(Into::into)
}

/// What a Topic's cleanup does when it is deleted on its own, unused.
async fn remove_topic(ctx: &Context, topic: &Topic) -> Result<()> {
    let at = pulsar_topic(topic)?;
    let Some(shape) = ctx.pulsar.topic_shape(&at).await? else {
        return Ok(());
    };
    let partitioned = matches!(shape, TopicShape::Partitioned(_));
    ctx.pulsar.topic_usage(&at, partitioned).await?;
    ctx.pulsar.delete_topic(&at, partitioned, false).await?;
    Ok(())
}
