//! The Certificate controller: a key generated here, signed by the tenant's
//! CA in OpenBao or obtained from an ACME CA (an AcmeIssuer), kept under the
//! tenant's OpenBao paths (and in a Secret of the Certificate's namespace
//! when one is named), renewed at its renewal time. Issuance is crash-safe:
//! the key is recorded before it is sent for signing (with the ACME order,
//! in the same write, before the order is driven), and a restart signs that
//! same key through that same order, so no key or order is left orphaned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ossature_crds::{
    AcmeIssuer, Certificate, CertificateStatus, ChallengeType, DeletionPolicy, Tenant,
};
use tracing::warn;

use super::acme_issuer::{self, Handle, acme_failure};
use super::{find_tenant, tenant_domains, tenant_selected};
use crate::adapters::Change;
use crate::adapters::acme::{AcmeError, OrderRecord};
use crate::adapters::openbao::pki::{Issuer, SignRequest};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::issuance::{self, Issued};
use crate::kubernetes;
use crate::reconcile::{Error, Failure, Plan, Reconciled, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/certificate-cleanup";
/// Labels the Secret of a Certificate with the Certificate's name.
pub const CERTIFICATE_LABEL: &str = "ossature.dev/certificate";
/// Hash of a Secret's data as written: a Secret whose data no longer
/// matches it was changed by someone else.
pub const DATA_HASH_ANNOTATION: &str = "ossature.dev/data-sha256";
pub const ISSUING: &str = "Issuing";
/// Who signed the certificate, in status.
pub const TENANT_CA: &str = "tenant-ca";

crate::object_status!(CertificateStatus);

/// What is kept in OpenBao for one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: String,
    /// Empty while the key waits to be signed (issuance in progress).
    pub certificate: String,
    pub ca: String,
    pub issued_for: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub generation: i64,
    /// Who issued the held certificate: `tenant-ca` (also when empty, as in
    /// records written before ACME issuers) or `acme/<issuer>`.
    pub issuer: String,
    /// ACME: the held certificate's ARI id, named by the order renewing it.
    pub certificate_id: String,
    /// ACME: the order that issued the held certificate.
    pub issued_by_order: String,
    /// ACME: the order in progress (an `OrderRecord` as JSON), its key and
    /// its issuer; empty when none. The held certificate stays beside them.
    pub order: String,
    pub order_key: String,
    pub order_issuer: String,
}

impl Record {
    fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("key".into(), self.key.clone()),
            ("certificate".into(), self.certificate.clone()),
            ("ca".into(), self.ca.clone()),
            ("issuedFor".into(), self.issued_for.clone()),
            ("serial".into(), self.serial.clone()),
            ("notBefore".into(), self.not_before.clone()),
            ("notAfter".into(), self.not_after.clone()),
            ("generation".into(), self.generation.to_string()),
            ("issuer".into(), self.issuer.clone()),
            ("certificateId".into(), self.certificate_id.clone()),
            ("issuedByOrder".into(), self.issued_by_order.clone()),
            ("order".into(), self.order.clone()),
            ("orderKey".into(), self.order_key.clone()),
            ("orderIssuer".into(), self.order_issuer.clone()),
        ])
    }

    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Record {
            key: get("key"),
            certificate: get("certificate"),
            ca: get("ca"),
            issued_for: get("issuedFor"),
            serial: get("serial"),
            not_before: get("notBefore"),
            not_after: get("notAfter"),
            generation: get("generation").parse().unwrap_or(0),
            issuer: get("issuer"),
            certificate_id: get("certificateId"),
            issued_by_order: get("issuedByOrder"),
            order: get("order"),
            order_key: get("orderKey"),
            order_issuer: get("orderIssuer"),
        }
    }

    fn validity(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.not_before.parse().ok()?, self.not_after.parse().ok()?))
    }

    /// Who issued the held certificate.
    pub fn issuer(&self) -> &str {
        if self.issuer.is_empty() {
            TENANT_CA
        } else {
            &self.issuer
        }
    }

    /// The same record without an order in progress.
    fn without_order(mut self) -> Self {
        self.order.clear();
        self.order_key.clear();
        self.order_issuer.clear();
        self
    }
}

/// What a certificate should be: what it is issued for, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub issued_for: String,
    pub issuer: String,
}

impl Wanted {
    pub fn of(spec: &ossature_crds::CertificateSpec) -> Self {
        Wanted {
            issued_for: issued_for(spec),
            issuer: match spec.issuer.acme_name() {
                Some(name) => format!("acme/{name}"),
                None => TENANT_CA.to_string(),
            },
        }
    }
}

/// A spec's names, usages and key algorithm as one comparable string.
pub fn issued_for(spec: &ossature_crds::CertificateSpec) -> String {
    let Issued {
        dns_names,
        usages,
        key_algorithm,
    } = Issued::of(spec);
    format!("{dns_names:?};{usages:?};{key_algorithm:?}")
}

/// Where a certificate is kept inside its tenant's KV mount.
pub fn record_path(namespace: &str, name: &str) -> String {
    format!("certificates/{namespace}/{name}")
}

/// Why the held certificate must be replaced, if it must; `renews` is when
/// the held one is due (`None`: it cannot be read).
pub fn reissue_reason(
    record: Option<&Record>,
    wanted: &Wanted,
    renews: Option<Timestamp>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(record) = record else {
        return Some("no certificate yet");
    };
    if !record.order.is_empty() {
        return Some("an order is in progress");
    }
    if record.certificate.is_empty() {
        return Some("an issuance was interrupted");
    }
    if record.issued_for != wanted.issued_for {
        return Some("its names, usages or key algorithm changed");
    }
    if record.issuer() != wanted.issuer {
        return Some("its issuer changed");
    }
    let Some(renews) = renews else {
        return Some("the held certificate cannot be read");
    };
    if now >= renews {
        return Some("its renewal time has come");
    }
    None
}

/// When a held certificate is renewed, and when to ask its CA again.
#[derive(Debug, Clone, Copy)]
struct Renewal {
    at: Timestamp,
    /// ACME: when the CA's renewal window may have moved.
    recheck: Option<Timestamp>,
}

/// The renewal of `record`: within the CA's renewal window (ARI) when its
/// ACME issuer offers one (less the last tenth of the lifetime), else by
/// the two-thirds rule (or `renewBefore`).
async fn renewal(
    record: &Record,
    acme: Option<&Handle>,
    renew_before: Option<Duration>,
) -> Option<Renewal> {
    let (not_before, not_after) = record.validity()?;
    let by_rule = Renewal {
        at: issuance::renewal_time(not_before, not_after, renew_before, &record.serial),
        recheck: None,
    };
    let Some(handle) = acme.filter(|_| !record.certificate_id.is_empty()) else {
        return Some(by_rule);
    };
    match handle
        .window(
            &record.certificate,
            &record.certificate_id,
            Duration::try_from(not_after.duration_since(not_before)).unwrap_or_default(),
        )
        .await
    {
        Ok(Some(window)) => {
            let at = |t: SystemTime| Timestamp::try_from(t).ok();
            let (start, end) = (at(window.start)?, at(window.end)?);
            let end = issuance::window_end(start, end, not_before, not_after);
            let renews = issuance::time_in_window(start, end, &record.serial);
            tracing::debug!(serial = %record.serial, %start, %end, %renews, "renewal window");
            Some(Renewal {
                at: renews,
                recheck: at(window.check_again),
            })
        }
        Ok(None) => Some(by_rule),
        Err(e) => {
            warn!("renewal information of {}: {e}", record.serial);
            Some(by_rule)
        }
    }
}

/// The Secret of a Certificate: `kubernetes.io/tls` plus `ca.crt`.
pub fn secret(certificate: &Certificate, name: &str, record: &Record) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(record.certificate.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(record.key.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(record.ca.clone().into_bytes()),
        ),
    ]);
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = certificate.namespace();
    // Not the tenant label: on a Secret it hands the Secret to the tenant
    // (an identity provider's), and each write would run a tenant reconcile.
    secret.metadata.labels = Some(BTreeMap::from([
        (CERTIFICATE_LABEL.to_string(), certificate.name_any()),
        (
            desired::MANAGED_BY.0.to_string(),
            desired::MANAGED_BY.1.to_string(),
        ),
    ]));
    secret.metadata.annotations = Some(BTreeMap::from([(
        DATA_HASH_ANNOTATION.to_string(),
        data_hash(secret.data.as_ref()),
    )]));
    // Same namespace: the garbage collector honours this owner.
    secret.metadata.owner_references = certificate.controller_owner_ref(&()).map(|o| vec![o]);
    secret
}

/// Hash of a Secret's data, in key order.
pub fn data_hash(data: Option<&BTreeMap<String, ByteString>>) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (key, value) in data.into_iter().flatten() {
        context.update(key.as_bytes());
        context.update(&[0]);
        context.update(&value.0);
        context.update(&[0]);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a Secret of a Certificate was changed by someone else (or is
/// being deleted): its data no longer matches the hash written with it.
pub fn secret_tampered(secret: &Secret) -> bool {
    secret.metadata.deletion_timestamp.is_some()
        || secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DATA_HASH_ANNOTATION))
            != Some(&data_hash(secret.data.as_ref()))
}

/// What the issuance step found, for the status.
#[derive(Debug, Default)]
struct Found {
    record: Option<Record>,
    renewal: Option<Renewal>,
    failure: Option<String>,
    issuing: Option<&'static str>,
    /// Held back by rate limits until then, and why.
    retry: Option<(Timestamp, String)>,
    /// The ACME order left in progress.
    order_url: Option<String>,
}

/// Who signs, as decided by the plan.
enum Signer {
    TenantCa,
    Acme(Arc<AcmeIssuer>),
}

impl Reconciled for Certificate {
    const CONTROLLER: &'static str = "certificate";
    const FINALIZER: &'static str = FINALIZER;
    type Status = CertificateStatus;

    fn status(&self) -> Option<&CertificateStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, certificate: &Self) -> Api<Self> {
        Api::namespaced(client, &certificate.namespace().unwrap_or_default())
    }

    fn selected(&self, ctx: &Context) -> bool {
        let tenant = self
            .metadata
            .namespace
            .as_deref()
            .and_then(issuance::tenant_of_any)
            .map(|t| format!("tn-{t}"));
        tenant_selected(tenant.as_deref(), ctx)
    }

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, CertificateStatus>, Error> {
        let namespace: &'a str = self.metadata.namespace.as_deref().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        let Some(tenant) = issuance::tenant_of_any(namespace) else {
            return Ok(Plan::stalled(
                previous,
                reasons::NOT_IN_TENANT_NAMESPACE,
                format!(
                    "namespace {namespace} is not a tenant namespace; create Certificates in tn-<tenant> or tn-<tenant>--<environment>"
                ),
            ));
        };
        let Some(owner) = find_tenant(ctx, tenant).await? else {
            return Ok(Plan::stalled(
                previous,
                reasons::TENANT_NOT_FOUND,
                format!("tenant {tenant} does not exist; create it (or apply its file) first"),
            ));
        };
        let root = &ctx.settings.root_domain;
        let held: Vec<&str> = owner
            .status
            .iter()
            .flat_map(|s| s.verified_domains())
            .collect();
        let beyond = issuance::names_not_owned(&self.spec, tenant, root);
        let foreign: Vec<&str> = beyond
            .iter()
            .copied()
            .filter(|n| !tenant_domains::covered(n, held.iter().copied()))
            .collect();
        if !foreign.is_empty() {
            return Ok(Plan::stalled(
                previous,
                reasons::NAME_NOT_OWNED,
                format!(
                    "tenant {tenant} does not own {}; a tenant's names are {tenant}.{root}, the custom domains it has proven (spec.domains, see status.domains) and names below them",
                    foreign.join(", ")
                ),
            ));
        }
        if !beyond.is_empty() && self.spec.issuer.tenant_ca.is_some() {
            return Ok(Plan::stalled(
                previous,
                reasons::NAME_OUTSIDE_TENANT_CA,
                format!(
                    "the tenant CA signs names under {tenant}.{root} only (its name constraints); {} needs an acme issuer",
                    beyond.join(", ")
                ),
            ));
        }
        let issuer = &self.spec.issuer;
        if issuer.tenant_ca.is_some() == issuer.acme.is_some() {
            // Admission refuses this; an older CRD pruning `acme` does not.
            return Ok(Plan::stalled(
                previous,
                reasons::INVALID_SPEC,
                "issuer names exactly one of tenantCA or acme",
            ));
        }
        let names = TenantNames::new(tenant);
        let path = record_path(namespace, &name);
        let mut status = CertificateStatus {
            issuer: Some(Wanted::of(&self.spec).issuer),
            secret_path: Some(format!("{}/data/{path}", names.kv_mount)),
            failed_attempts: previous.failed_attempts,
            ..Default::default()
        };
        // Until the next issuance, the status keeps what the last one gave.
        keep_issued(&mut status, &previous);
        let mut plan = Plan::new(status);
        let signer = match self.spec.issuer.acme_name() {
            None => Signer::TenantCa,
            Some(issuer) => match acme_issuer::find(ctx, issuer).await? {
                None => {
                    plan.outcomes.push(Outcome::failed(
                        conditions::CERTIFICATE_READY,
                        reasons::WAITING_FOR_ISSUER,
                        format!("AcmeIssuer {issuer} does not exist"),
                    ));
                    return Ok(plan);
                }
                Some(found) => {
                    let wildcard = self.spec.dns_names.iter().find(|n| n.starts_with("*."));
                    if let Some(wildcard) = wildcard
                        && found.spec.challenge == ChallengeType::Http01
                    {
                        plan.stalled = Some(Outcome::failed(
                            conditions::STALLED,
                            reasons::CHALLENGE_UNSUPPORTED,
                            format!(
                                "{wildcard} is a wildcard: only DNS-01 validates it, and AcmeIssuer {issuer} answers HTTP-01; name a DNS01 issuer or drop the wildcard"
                            ),
                        ));
                        return Ok(plan);
                    }
                    if !acme_issuer::ready(&found) {
                        plan.outcomes.push(Outcome::failed(
                            conditions::CERTIFICATE_READY,
                            reasons::WAITING_FOR_ISSUER,
                            format!(
                                "AcmeIssuer {issuer} is not Ready ({})",
                                acme_issuer::not_ready_reason(&found)
                            ),
                        ));
                        return Ok(plan);
                    }
                    Signer::Acme(found)
                }
            },
        };
        // The record lives in the tenant's KV mount; the tenant CA signs.
        let (needed, what) = match signer {
            Signer::TenantCa => (
                conditions::CERTIFICATE_AUTHORITY_READY,
                "certificate authority",
            ),
            Signer::Acme(_) => (conditions::SECRETS_READY, "OpenBao paths"),
        };
        if !super::tenant::backend_ready(&owner, needed) {
            plan.outcomes.push(Outcome::failed(
                conditions::CERTIFICATE_READY,
                reasons::WAITING_FOR_TENANT,
                format!("waits for tenant {tenant}'s {what}"),
            ));
            return Ok(plan);
        }

        let cell: Arc<Mutex<Found>> = Arc::default();
        let seen = cell.clone();
        let renew_before = self
            .spec
            .renew_before
            .as_deref()
            .and_then(desired::parse_ttl);
        plan.steps.push(Step::new(
            conditions::CERTIFICATE_READY,
            format!("certificate {namespace}/{name}"),
            async move {
                let at = Target {
                    tenant,
                    names: &names,
                    path: &path,
                    ca: CaState::of(&owner),
                };
                let result = issue(self, ctx, &at, &signer, renew_before, &seen).await;
                if let Err(e) = &result {
                    seen.lock().expect("never poisoned").failure = Some(e.message.clone());
                }
                result
            },
        ));
        plan.found = Some(Box::new(move |status: &mut CertificateStatus| {
            let found = std::mem::take(&mut *cell.lock().expect("never poisoned"));
            status_from(status, found)
        }));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let Some(tenant) = issuance::tenant_of_any(&namespace) else {
            return Ok(Vec::new());
        };
        let owner = find_tenant(ctx, tenant).await?;
        if self.spec.deletion_policy == DeletionPolicy::Retain
            || super::tenant::retained(owner.as_deref())
        {
            return Ok(vec![event(
                EventType::Normal,
                "Retained",
                "Delete",
                "deletionPolicy is Retain: the key and certificate are kept in OpenBao (and in the Secret, no longer managed)",
            )]);
        }
        let names = TenantNames::new(tenant);
        // A tenant already gone took its mounts, and the record, with it.
        if owner.is_some() {
            ctx.openbao
                .delete_secret(&names.kv_mount, &record_path(&namespace, &name))
                .await?;
        }
        if let Some(secret) = &self.spec.secret_name {
            kubernetes::delete(
                &Api::<Secret>::namespaced(ctx.client.clone(), &namespace),
                secret,
                &ctx.calls,
            )
            .await?;
        }
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            format!(
                "key and certificate removed from OpenBao{}",
                self.spec
                    .secret_name
                    .as_ref()
                    .map(|s| format!(" and Secret {s}"))
                    .unwrap_or_default()
            ),
        )])
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let stores = watch.stores.clone();
        let users = watch.stores.certificates.clone();
        // Its Secret, when changed or deleted by someone else (its own
        // writes carry the hash of what they wrote: no reconcile).
        let secrets = watcher(
            Api::<Secret>::all(watch.client.clone()),
            watcher::Config::default().labels(CERTIFICATE_LABEL),
        )
        .default_backoff()
        .filter_map(|event| {
            std::future::ready(match event {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    secret_tampered(&s).then_some(Ok(s))
                }
                Ok(watcher::Event::Delete(s)) => Some(Ok(s)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
        });
        controller
            .watches_stream(secrets, |secret: Secret| {
                let name = secret.metadata.labels.as_ref()?.get(CERTIFICATE_LABEL)?;
                Some(ObjectRef::new(name).within(secret.metadata.namespace.as_deref()?))
            })
            // Its tenant's CA becoming ready, rotating, or the tenant going;
            // not every Tenant write: the tenant's status counts its
            // certificates, and requeueing all of them on each count made
            // issuing N certificates cost about N²/5 reconciles.
            .watches_shared_stream(watch.tenants.clone(), {
                let seen: Mutex<BTreeMap<String, TenantView>> = Mutex::default();
                move |tenant: Arc<Tenant>| {
                    let view = TenantView::of(&tenant);
                    let previous = seen
                        .lock()
                        .expect("never poisoned")
                        .insert(tenant.name_any(), view.clone());
                    if previous.as_ref() == Some(&view) {
                        return Vec::new();
                    }
                    of_tenant(&stores.certificates, &tenant.name_any())
                        .into_iter()
                        .map(|c| ObjectRef::from_obj(&*c))
                        .collect::<Vec<_>>()
                }
            })
            // Its AcmeIssuer appearing, becoming Ready or changing.
            .watches(
                Api::<AcmeIssuer>::all(watch.client.clone()),
                watcher::Config::default(),
                move |issuer: AcmeIssuer| acme_issuer::certificates_of(&users, &issuer.name_any()),
            )
    }
}

/// What a Certificate's reconcile reads of its Tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TenantView {
    uid: Option<String>,
    deleting: bool,
    retained: bool,
    ca_ready: bool,
    secrets_ready: bool,
    ca: CaState,
    /// Custom domains it holds: names a certificate may have.
    domains: Vec<String>,
}

impl TenantView {
    fn of(tenant: &Tenant) -> Self {
        TenantView {
            uid: tenant.metadata.uid.clone(),
            deleting: tenant.metadata.deletion_timestamp.is_some(),
            retained: super::tenant::retained(Some(tenant)),
            ca_ready: super::tenant::backend_ready(tenant, conditions::CERTIFICATE_AUTHORITY_READY),
            secrets_ready: super::tenant::backend_ready(tenant, conditions::SECRETS_READY),
            ca: CaState::of(tenant),
            domains: tenant
                .status
                .iter()
                .flat_map(|s| s.verified_domains())
                .map(str::to_string)
                .collect(),
        }
    }
}

/// The issuance fields of the previous status, kept until replaced.
fn keep_issued(status: &mut CertificateStatus, previous: &CertificateStatus) {
    status.not_before = previous.not_before.clone();
    status.not_after = previous.not_after.clone();
    status.renewal_time = previous.renewal_time.clone();
    status.serial_number = previous.serial_number.clone();
    status.ca_generation = previous.ca_generation;
    status.last_failure = previous.last_failure.clone();
}

fn issuing_condition(issuing: Option<(&str, String)>, generation: Option<i64>) -> Condition {
    match issuing {
        Some((reason, message)) => {
            conditions::condition(ISSUING, true, reason, &message, generation)
        }
        None => conditions::condition(
            ISSUING,
            false,
            reasons::PROVISIONED,
            "the held certificate is current",
            generation,
        ),
    }
}

/// The status after an issuance step, from what it found; returns when to
/// come back (renewal, a renewal window to ask again, a rate limit's end).
fn status_from(status: &mut CertificateStatus, found: Found) -> Option<Duration> {
    let generation = status.observed_generation;
    let mut due: Vec<Timestamp> = Vec::new();
    status.order_url = found.order_url;
    if let Some((until, why)) = &found.retry {
        // Held back, not failed: attempts are not counted.
        let message = format!("held back by the issuer's rate limits until {until}: {why}");
        status.retry_time = Some(until.to_string());
        for (type_, on) in [
            (conditions::CERTIFICATE_READY, false),
            (conditions::READY, false),
            (ISSUING, true),
        ] {
            conditions::set(
                &mut status.conditions,
                conditions::condition(type_, on, reasons::RATE_LIMITED, &message, generation),
            );
        }
        due.push(*until);
    } else {
        let issuing = match (&found.failure, found.issuing) {
            (Some(failure), Some(why)) => {
                status.failed_attempts += 1;
                status.last_failure = Some(failure.clone());
                Some((
                    "Failing",
                    format!("a new certificate is needed ({why}) but issuance failed: {failure}"),
                ))
            }
            (Some(failure), None) => {
                status.last_failure = Some(failure.clone());
                None
            }
            (None, _) => {
                status.failed_attempts = 0;
                status.last_failure = None;
                None
            }
        };
        conditions::set(
            &mut status.conditions,
            issuing_condition(issuing, generation),
        );
    }
    if let Some(record) = found.record
        && let Some(renewal) = found.renewal
    {
        status.not_before = Some(record.not_before.clone());
        status.not_after = Some(record.not_after.clone());
        status.renewal_time = Some(renewal.at.to_string());
        status.serial_number = Some(record.serial.clone());
        status.ca_generation = (record.issuer() == TENANT_CA).then_some(record.generation);
        due.push(renewal.at);
        due.extend(renewal.recheck);
    }
    let next = due.into_iter().min()?;
    let wait = next.duration_since(Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(100))
}

/// Where a certificate is kept.
struct Target<'a> {
    tenant: &'a str,
    names: &'a TenantNames,
    path: &'a str,
    /// The tenant CA: the generation that signs, and how many generations
    /// are trusted (more than one while it rotates).
    ca: CaState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaState {
    pub generation: i64,
    pub trusted: usize,
}

impl CaState {
    fn of(tenant: &ossature_crds::Tenant) -> Self {
        let status = tenant
            .status
            .as_ref()
            .and_then(|s| s.certificate_authority.as_ref());
        // What the CA is, not what it is asked to be: leaves move once the
        // new generation signs.
        CaState {
            generation: status.map_or(1, |ca| ca.generation),
            trusted: status.map_or(1, |ca| ca.generations.len().max(1)),
        }
    }
}

/// Certificates of one tenant issued anew at once during a CA rotation.
pub const ROTATION_WAVE: usize = 5;

/// Issues a certificate when the held one does not do, then keeps its
/// Secret (when asked for) in line with it.
async fn issue(
    certificate: &Certificate,
    ctx: &Context,
    at: &Target<'_>,
    signer: &Signer,
    renew_before: Option<Duration>,
    found: &Mutex<Found>,
) -> Result<Vec<Change>, Failure> {
    let spec = &certificate.spec;
    let wanted = Wanted::of(spec);
    let held = ctx
        .openbao
        .get_secret(&at.names.kv_mount, at.path)
        .await?
        .map(|m| Record::from_map(&m));
    let acme = match signer {
        Signer::TenantCa => None,
        Signer::Acme(issuer) => Some((
            issuer.name_any(),
            ctx.acme.get(ctx, issuer).await.map_err(|f| Failure {
                category: reasons::WAITING_FOR_ISSUER,
                message: format!("AcmeIssuer {}: {}", issuer.name_any(), f.message),
            })?,
        )),
    };
    let handle = acme.as_ref().map(|(_, h)| h.as_ref());
    // The CA's renewal window is asked only of the CA that issued it.
    let ari = |r: &Record| handle.filter(|_| r.issuer() == wanted.issuer);
    let renews = match held.as_ref().filter(|r| !r.certificate.is_empty()) {
        Some(r) => renewal(r, ari(r), renew_before).await,
        None => None,
    };
    let mut changes = Vec::new();
    let rotated = held.as_ref().is_some_and(|r| {
        acme.is_none() && !r.certificate.is_empty() && r.generation < at.ca.generation
    });
    let reason = match reissue_reason(
        held.as_ref(),
        &wanted,
        renews.map(|r| r.at),
        Timestamp::now(),
    ) {
        None if rotated => Some("its CA is rotated"),
        other => other,
    };
    // A rotation moves a tenant's certificates a few at a time.
    let _wave = match rotated {
        true => Some(ctx.rotation_wave(at.tenant).acquire_owned().await),
        false => None,
    };
    let mut record = match reason {
        None => held.expect("a held certificate that does not need replacing"),
        Some(why) => {
            found.lock().expect("never poisoned").issuing = Some(why);
            let issued = match &acme {
                None => Some(sign_by_tenant_ca(ctx, spec, at, held.clone(), &wanted).await?),
                Some((issuer, handle)) => {
                    let order = Ordering {
                        ctx,
                        spec,
                        at,
                        wanted: &wanted,
                        issuer,
                        handle,
                        found,
                    };
                    order.obtain(held.clone()).await?
                }
            };
            match issued {
                Some(record) => {
                    found.lock().expect("never poisoned").issuing = None;
                    changes.push(Change::Created);
                    record
                }
                // Held back: the certificate held (if any) is still served.
                None => match held.filter(|r| !r.certificate.is_empty()) {
                    Some(record) => record,
                    None => return Ok(changes),
                },
            }
        }
    };
    // The trust bundle follows the rotation: both CAs, then the new one.
    if acme.is_none() && pem_count(&record.ca) != at.ca.trusted {
        record.ca = trust_bundle(&ctx.openbao.ca_bundle(&at.names.pki_mount).await?);
        ctx.openbao
            .put_secret(&at.names.kv_mount, at.path, &record.to_map())
            .await?;
        changes.push(Change::Updated);
    }
    if let Some(secret_name) = &spec.secret_name {
        let desired = secret(certificate, secret_name, &record);
        let api = Api::<Secret>::namespaced(
            ctx.client.clone(),
            &certificate.namespace().unwrap_or_default(),
        );
        changes.push(kubernetes::ensure(&api, &desired, &ctx.calls).await?);
    }
    let renews = renewal(&record, ari(&record), renew_before).await;
    let mut found = found.lock().expect("never poisoned");
    found.renewal = renews;
    found.record = Some(record);
    Ok(changes)
}

/// Signs a key with the tenant's CA: the key is recorded first, and an
/// interrupted issuance's recorded key is the one signed.
async fn sign_by_tenant_ca(
    ctx: &Context,
    spec: &ossature_crds::CertificateSpec,
    at: &Target<'_>,
    held: Option<Record>,
    wanted: &Wanted,
) -> Result<Record, Failure> {
    let names = at.names;
    let pending = held
        .filter(|r| {
            r.certificate.is_empty() && r.issued_for == wanted.issued_for && r.issuer() == TENANT_CA
        })
        .map(|r| r.key);
    let key = match pending {
        Some(key) => key,
        None => {
            let key = issuance::new_key(spec).map_err(key_failure)?;
            let pending = Record {
                key: key.clone(),
                issued_for: wanted.issued_for.clone(),
                issuer: TENANT_CA.into(),
                ..Default::default()
            };
            ctx.openbao
                .put_secret(&names.kv_mount, at.path, &pending.to_map())
                .await?;
            crate::failpoint::hit(crate::failpoint::CERTIFICATE_KEY_RECORDED);
            key
        }
    };
    let request = issuance::request_for_key(spec, &key).map_err(key_failure)?;
    let issuers = ctx.openbao.ca_bundle(&names.pki_mount).await?;
    let Some(current) = issuers.iter().find(|i| i.is_default) else {
        return Err(Failure {
            category: reasons::WAITING_FOR_TENANT,
            message: format!(
                "tenant {}'s certificate authority has no issuer yet",
                at.tenant
            ),
        });
    };
    let ttl = format!("{}s", issuance::lifetime(spec).as_secs());
    let signed = ctx
        .openbao
        .sign(
            &names.pki_mount,
            &SignRequest {
                issuer: &current.name,
                csr: &request,
                common_name: &spec.dns_names[0],
                alt_names: &spec.dns_names[1..],
                ttl: &ttl,
            },
        )
        .await?;
    let leaf = read_leaf(&signed.certificate)?;
    let record = Record {
        key,
        // A root signs: the leaf is the whole chain to send. PEM files
        // end with a newline, so they can be concatenated.
        certificate: format!("{}\n", signed.certificate.trim_end()),
        ca: trust_bundle(&issuers),
        issued_for: wanted.issued_for.clone(),
        serial: signed.serial,
        not_before: leaf.not_before.to_string(),
        not_after: leaf.not_after.to_string(),
        generation: i64::from(current.generation),
        issuer: TENANT_CA.into(),
        ..Default::default()
    };
    ctx.openbao
        .put_secret(&names.kv_mount, at.path, &record.to_map())
        .await?;
    Ok(record)
}

/// One certificate's order at an ACME issuer.
struct Ordering<'a> {
    ctx: &'a Context,
    spec: &'a ossature_crds::CertificateSpec,
    at: &'a Target<'a>,
    wanted: &'a Wanted,
    issuer: &'a str,
    handle: &'a Handle,
    found: &'a Mutex<Found>,
}

impl Ordering<'_> {
    /// Completes the recorded order, or places one (within the budget) and
    /// records it with its key in one write before driving it. `None`: held
    /// back by a rate limit, nothing asked of the CA.
    async fn obtain(&self, held: Option<Record>) -> Result<Option<Record>, Failure> {
        let names = issuance::Issued::of(self.spec).dns_names;
        let recorded = held
            .as_ref()
            .filter(|r| !r.order.is_empty() && r.order_issuer == self.wanted.issuer)
            .and_then(|r| Some((serde_json::from_str::<OrderRecord>(&r.order).ok()?, r)))
            .filter(|(order, _)| order.names == names)
            .map(|(order, r)| (order, r.order_key.clone()));
        // What stays beside the order: the certificate held until now.
        let kept = held.map(Record::without_order).unwrap_or_else(|| Record {
            issued_for: self.wanted.issued_for.clone(),
            ..Default::default()
        });
        let (order, key) = match recorded {
            Some(resumed) => resumed,
            None => match self.begin(&names, &kept).await? {
                Some(begun) => begun,
                None => return Ok(None),
            },
        };
        self.found.lock().expect("never poisoned").order_url = Some(order.url.clone());
        match self.handle.account.complete(&order, &key).await {
            Ok(issued) => {
                self.handle
                    .budget
                    .lock()
                    .expect("never poisoned")
                    .record_issued(&order.names, SystemTime::now());
                let leaf = read_leaf(&issued.chain_pem)?;
                let record = Record {
                    key,
                    ca: leaf.rest.clone(),
                    certificate: issued.chain_pem,
                    issued_for: self.wanted.issued_for.clone(),
                    serial: leaf.serial,
                    not_before: leaf.not_before.to_string(),
                    not_after: leaf.not_after.to_string(),
                    generation: 0,
                    issuer: self.wanted.issuer.clone(),
                    certificate_id: issued.certificate_id,
                    issued_by_order: issued.order_url,
                    ..Default::default()
                };
                self.put(&record).await?;
                self.found.lock().expect("never poisoned").order_url = None;
                Ok(Some(record))
            }
            Err(e) if e.is_transient() || matches!(e, AcmeError::RateLimited { .. }) => {
                // The order goes on at the CA: the next call resumes it.
                self.failed(e)
            }
            Err(e) => {
                if let AcmeError::ValidationFailed { names, .. } = &e {
                    let mut budget = self.handle.budget.lock().expect("never poisoned");
                    for name in names {
                        budget.record_failed_validation(name, SystemTime::now());
                    }
                }
                self.put(&kept).await?;
                self.found.lock().expect("never poisoned").order_url = None;
                let discarded = Failure {
                    message: format!("order {} was discarded: {e}", order.url),
                    ..acme_failure(e)
                };
                Err(discarded)
            }
        }
    }

    /// Places a new order within the issuer's budget and records it with a
    /// new key beside what is `kept`, in one write.
    async fn begin(
        &self,
        names: &[String],
        kept: &Record,
    ) -> Result<Option<(OrderRecord, String)>, Failure> {
        let now = SystemTime::now();
        let reserved = {
            // Checked and counted at once: certificates ordering together
            // cannot both take the last place.
            let mut budget = self.handle.budget.lock().expect("never poisoned");
            budget.check(names, now).map(|()| budget.record_order(now))
        };
        if let Err(retry) = reserved {
            let why = format!("{} for {} reached", retry.limit.as_str(), retry.subject);
            return Ok(self.hold_back(retry.at, why));
        }
        let key = issuance::new_key(self.spec).map_err(key_failure)?;
        let replaces = (kept.issuer() == self.wanted.issuer && !kept.certificate.is_empty())
            .then_some(kept.certificate_id.as_str())
            .filter(|id| !id.is_empty());
        let order = match self
            .handle
            .account
            .begin(names, self.handle.profile.as_deref(), replaces)
            .await
        {
            Ok(order) => order,
            Err(e) => return self.failed(e),
        };
        let pending = Record {
            order: serde_json::to_string(&order).map_err(|e| Failure {
                category: "BackendUnreadable",
                message: format!("the order record cannot be written: {e}"),
            })?,
            order_key: key.clone(),
            order_issuer: self.wanted.issuer.clone(),
            ..kept.clone()
        };
        self.put(&pending).await?;
        crate::failpoint::hit(crate::failpoint::ACME_ORDER_RECORDED);
        Ok(Some((order, key)))
    }

    async fn put(&self, record: &Record) -> Result<(), Failure> {
        self.ctx
            .openbao
            .put_secret(&self.at.names.kv_mount, self.at.path, &record.to_map())
            .await?;
        Ok(())
    }

    /// Held back until `until`: the found status says so, nothing failed.
    fn hold_back<T>(&self, until: SystemTime, why: String) -> Option<T> {
        let until = Timestamp::try_from(until).unwrap_or_else(|_| Timestamp::now());
        self.found.lock().expect("never poisoned").retry = Some((until, why));
        None
    }

    /// An error of the CA as the step's outcome: a rate limit with a time
    /// holds the certificate back; an account the CA forgot is loaded again.
    fn failed<T>(&self, e: AcmeError) -> Result<Option<T>, Failure> {
        if let Some(at) = e.retry_after() {
            return Ok(self.hold_back(at, e.to_string()));
        }
        if let AcmeError::Refused {
            problem_type: Some(t),
            ..
        } = &e
            && t.ends_with(":accountDoesNotExist")
        {
            self.ctx.acme.forget(self.issuer);
        }
        Err(acme_failure(e))
    }
}

/// How many certificates a PEM bundle holds.
fn pem_count(bundle: &str) -> usize {
    bundle.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The CA certificates of every live generation: what clients trust, both
/// CAs while a rotation is under way.
pub fn trust_bundle(issuers: &[Issuer]) -> String {
    let mut bundle = String::new();
    for issuer in issuers {
        bundle.push_str(issuer.certificate.trim_end());
        bundle.push('\n');
    }
    bundle
}

/// What is read from a chain's leaf.
struct Leaf {
    not_before: Timestamp,
    not_after: Timestamp,
    /// Hex, colon-separated.
    serial: String,
    /// The certificates after the leaf, PEM.
    rest: String,
}

/// The validity and serial of a chain's leaf, read from its PEM.
fn read_leaf(chain: &str) -> Result<Leaf, Failure> {
    let unreadable = |e: String| Failure {
        category: "BackendUnreadable",
        message: format!("the signed certificate cannot be read: {e}"),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes())
        .map_err(|e| unreadable(e.to_string()))?;
    let parsed = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    let validity = parsed.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| unreadable(e.to_string()))
    };
    const END: &str = "-----END CERTIFICATE-----";
    let rest = chain
        .find(END)
        .map(|i| chain[i + END.len()..].trim_start())
        .unwrap_or_default();
    Ok(Leaf {
        not_before: at(&validity.not_before)?,
        not_after: at(&validity.not_after)?,
        serial: parsed.raw_serial_as_string(),
        rest: rest.to_string(),
    })
}

fn key_failure(e: rcgen::Error) -> Failure {
    Failure {
        category: "InvalidSpec",
        message: format!("could not make a key and request: {e}"),
    }
}

/// Certificates of a tenant, across its namespaces, from `store`.
pub fn of_tenant(
    store: &kube::runtime::reflector::Store<Certificate>,
    tenant: &str,
) -> Vec<Arc<Certificate>> {
    store
        .state()
        .into_iter()
        .filter(|c| {
            c.metadata
                .namespace
                .as_deref()
                .and_then(issuance::tenant_of_any)
                == Some(tenant)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(issued_for: &str, serial: &str) -> Record {
        Record {
            key: "k".into(),
            certificate: "c".into(),
            ca: "ca".into(),
            issued_for: issued_for.into(),
            serial: serial.into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2026-01-31T00:00:00Z".into(),
            generation: 1,
            ..Default::default()
        }
    }

    fn wanted(issued_for: &str, issuer: &str) -> Wanted {
        Wanted {
            issued_for: issued_for.into(),
            issuer: issuer.into(),
        }
    }

    #[test]
    fn a_certificate_is_replaced_when_missing_interrupted_changed_or_due() {
        let early: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let late: Timestamp = "2026-01-30T00:00:00Z".parse().unwrap();
        let a = wanted("a", TENANT_CA);
        let r = record("a", "01");
        let renews = r
            .validity()
            .map(|(b, e)| issuance::renewal_time(b, e, None, &r.serial));
        assert!(reissue_reason(None, &a, None, early).is_some());
        assert_eq!(reissue_reason(Some(&r), &a, renews, early), None);
        assert!(reissue_reason(Some(&r), &wanted("b", TENANT_CA), renews, early).is_some());
        assert!(reissue_reason(Some(&r), &a, renews, late).is_some());
        assert!(
            reissue_reason(Some(&r), &a, None, early).is_some(),
            "unreadable"
        );
        let interrupted = Record {
            certificate: String::new(),
            ..r.clone()
        };
        assert_eq!(
            reissue_reason(Some(&interrupted), &a, renews, early),
            Some("an issuance was interrupted")
        );
        // A record from before ACME issuers is the tenant CA's.
        assert_eq!(r.issuer(), TENANT_CA);
        assert_eq!(
            reissue_reason(Some(&r), &wanted("a", "acme/pebble"), renews, early),
            Some("its issuer changed")
        );
        let ordering = Record {
            order: "{}".into(),
            ..r.clone()
        };
        assert_eq!(
            reissue_reason(Some(&ordering), &a, renews, early),
            Some("an order is in progress")
        );
    }

    #[test]
    fn a_recount_of_the_tenants_certificates_is_no_change_to_them() {
        let tenant = |generation: i64, certificates: i64| -> Tenant {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
                "metadata": {"name": "acme", "uid": "1"},
                "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"},
                "status": {"certificateAuthority": {
                    "generation": generation,
                    "generations": [{"generation": generation, "certificates": certificates}],
                }},
            }))
            .unwrap()
        };
        assert_eq!(TenantView::of(&tenant(1, 3)), TenantView::of(&tenant(1, 4)));
        assert_ne!(TenantView::of(&tenant(1, 3)), TenantView::of(&tenant(2, 3)));
        let mut proven = tenant(1, 3);
        proven.status.as_mut().unwrap().domains = vec![ossature_crds::DomainStatus {
            name: "shop.example.test".into(),
            state: ossature_crds::DomainState::Verified,
            record: String::new(),
            value: String::new(),
            message: None,
        }];
        assert_ne!(TenantView::of(&tenant(1, 3)), TenantView::of(&proven));
    }

    #[test]
    fn a_certificates_secret_is_not_handed_to_its_tenant() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "tn-acme", "uid": "1"},
            "spec": {"dnsNames": ["acme.ossature.test"], "issuer": {"tenantCA": {}}},
        }))
        .unwrap();
        let labels = secret(&certificate, "web-tls", &Record::default())
            .metadata
            .labels
            .unwrap();
        assert_eq!(labels[CERTIFICATE_LABEL], "web");
        assert!(!labels.contains_key(desired::TENANT_LABEL), "{labels:?}");
    }

    #[test]
    fn the_wanted_issuer_is_the_tenant_ca_or_an_acme_issuer() {
        let spec = |issuer: serde_json::Value| -> ossature_crds::CertificateSpec {
            serde_json::from_value(serde_json::json!({
                "dnsNames": ["acme.ossature.test"], "issuer": issuer,
            }))
            .unwrap()
        };
        assert_eq!(
            Wanted::of(&spec(serde_json::json!({"tenantCA": {}}))).issuer,
            "tenant-ca"
        );
        assert_eq!(
            Wanted::of(&spec(serde_json::json!({"acme": {"name": "pebble"}}))).issuer,
            "acme/pebble"
        );
    }

    #[test]
    fn a_leaf_gives_its_validity_serial_and_the_rest_of_its_chain() {
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let other = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let read = read_leaf(&format!("{leaf}{other}")).unwrap();
        assert_eq!(read.rest.trim(), other.trim());
        assert!(read.not_before < read.not_after);
        assert!(read.serial.contains(':'), "{}", read.serial);
        assert_eq!(read_leaf(&leaf).unwrap().rest, "");
    }

    #[test]
    fn records_round_trip_through_openbao_maps() {
        let r = Record {
            issuer: "acme/pebble".into(),
            certificate_id: "aki.serial".into(),
            order: "{\"url\":\"https://ca/order/1\"}".into(),
            order_key: "key".into(),
            order_issuer: "acme/pebble".into(),
            issued_by_order: "https://ca/order/0".into(),
            ..record("x", "0a:0b")
        };
        assert_eq!(Record::from_map(&r.to_map()), r);
        assert_eq!(r.clone().without_order().order_key, "");
    }

    #[test]
    fn a_secret_tells_a_change_by_someone_else() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "api", "namespace": "tn-acme", "uid": "u1"},
            "spec": {"dnsNames": ["api.acme.ossature.test"], "issuer": {"tenantCA": {}}},
        }))
        .unwrap();
        let mut s = secret(&certificate, "api-tls", &record("x", "01"));
        assert!(!secret_tampered(&s), "as written");
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].name, "api");
        s.data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"other".to_vec()));
        assert!(secret_tampered(&s), "data changed by hand");
    }
}
