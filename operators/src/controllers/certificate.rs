//! The Certificate controller: a key generated here, signed by the tenant's
//! CA in OpenBao, kept under the tenant's OpenBao paths (and in a Secret of
//! the Certificate's namespace when one is named), renewed at its renewal
//! time. Issuance is crash-safe: the key is recorded before it is sent for
//! signing, and a restart signs that same key, so no key is left orphaned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ossature_crds::{Certificate, CertificateStatus, DeletionPolicy, Tenant};

use super::{find_tenant, tenant_selected};
use crate::adapters::Change;
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
        }
    }

    fn validity(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.not_before.parse().ok()?, self.not_after.parse().ok()?))
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

/// Why the held certificate must be replaced, if it must.
pub fn reissue_reason(
    record: Option<&Record>,
    wanted: &str,
    renew_before: Option<Duration>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(record) = record else {
        return Some("no certificate yet");
    };
    if record.certificate.is_empty() {
        return Some("an issuance was interrupted");
    }
    if record.issued_for != wanted {
        return Some("its names, usages or key algorithm changed");
    }
    let Some((not_before, not_after)) = record.validity() else {
        return Some("the held certificate cannot be read");
    };
    if now >= issuance::renewal_time(not_before, not_after, renew_before, &record.serial) {
        return Some("its renewal time has come");
    }
    None
}

/// The Secret of a Certificate: `kubernetes.io/tls` plus `ca.crt`.
pub fn secret(certificate: &Certificate, name: &str, tenant: &str, record: &Record) -> Secret {
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
    secret.metadata.labels = Some(BTreeMap::from([
        (desired::TENANT_LABEL.to_string(), tenant.to_string()),
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
    failure: Option<String>,
    issuing: Option<&'static str>,
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
        let foreign = issuance::names_not_owned(&self.spec, tenant, root);
        if !foreign.is_empty() {
            return Ok(Plan::stalled(
                previous,
                reasons::NAME_NOT_OWNED,
                format!(
                    "tenant {tenant} does not own {}; a tenant's names are {tenant}.{root} and names below it",
                    foreign.join(", ")
                ),
            ));
        }
        let names = TenantNames::new(tenant);
        let path = record_path(namespace, &name);
        let mut status = CertificateStatus {
            issuer: Some(TENANT_CA.into()),
            secret_path: Some(format!("{}/data/{path}", names.kv_mount)),
            failed_attempts: previous.failed_attempts,
            ..Default::default()
        };
        // Until the next issuance, the status keeps what the last one gave.
        keep_issued(&mut status, &previous);
        let mut plan = Plan::new(status);
        if !super::tenant::backend_ready(&owner, conditions::CERTIFICATE_AUTHORITY_READY) {
            plan.outcomes.push(Outcome::failed(
                conditions::CERTIFICATE_READY,
                reasons::WAITING_FOR_TENANT,
                format!("waits for tenant {tenant}'s certificate authority"),
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
                let result = issue(self, ctx, tenant, &names, &path, renew_before, &seen).await;
                if let Err(e) = &result {
                    seen.lock().expect("never poisoned").failure = Some(e.message.clone());
                }
                result
            },
        ));
        let spec_renew_before = renew_before;
        plan.found = Some(Box::new(move |status: &mut CertificateStatus| {
            let found = std::mem::take(&mut *cell.lock().expect("never poisoned"));
            let issuing = match (&found.failure, found.issuing) {
                (Some(failure), Some(why)) => {
                    status.failed_attempts += 1;
                    status.last_failure = Some(failure.clone());
                    Some((
                        "Failing",
                        format!(
                            "a new certificate is needed ({why}) but issuance failed: {failure}"
                        ),
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
                issuing_condition(issuing, status.observed_generation),
            );
            let record = found.record?;
            let (not_before, not_after) = record.validity()?;
            let renews =
                issuance::renewal_time(not_before, not_after, spec_renew_before, &record.serial);
            status.not_before = Some(record.not_before.clone());
            status.not_after = Some(record.not_after.clone());
            status.renewal_time = Some(renews.to_string());
            status.serial_number = Some(record.serial.clone());
            status.ca_generation = Some(record.generation);
            let wait = renews.duration_since(Timestamp::now());
            Some(Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(100))
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
            // Its tenant's CA becoming ready.
            .watches_shared_stream(watch.tenants.clone(), move |tenant: Arc<Tenant>| {
                of_tenant(&stores.certificates, &tenant.name_any())
                    .into_iter()
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            })
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
    let (status, reason, message) = match issuing {
        Some((reason, message)) => ("True", reason.to_string(), message),
        None => (
            "False",
            reasons::PROVISIONED.to_string(),
            "the held certificate is current".to_string(),
        ),
    };
    Condition {
        type_: ISSUING.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    }
}

/// Issues a certificate when the held one does not do, then keeps its
/// Secret (when asked for) in line with it.
async fn issue(
    certificate: &Certificate,
    ctx: &Context,
    tenant: &str,
    names: &TenantNames,
    path: &str,
    renew_before: Option<Duration>,
    found: &Mutex<Found>,
) -> Result<Vec<Change>, Failure> {
    let spec = &certificate.spec;
    let wanted = issued_for(spec);
    let held = ctx
        .openbao
        .get_secret(&names.kv_mount, path)
        .await?
        .map(|m| Record::from_map(&m));
    let mut changes = Vec::new();
    let record = match reissue_reason(held.as_ref(), &wanted, renew_before, Timestamp::now()) {
        None => held.expect("a held certificate that does not need replacing"),
        Some(why) => {
            found.lock().expect("never poisoned").issuing = Some(why);
            // An interrupted issuance left its key: sign that one.
            let pending = held
                .filter(|r| r.certificate.is_empty() && r.issued_for == wanted)
                .map(|r| r.key);
            let key = match pending {
                Some(key) => key,
                None => {
                    let key = issuance::new_key(spec).map_err(key_failure)?;
                    let pending = Record {
                        key: key.clone(),
                        issued_for: wanted.clone(),
                        ..Default::default()
                    };
                    ctx.openbao
                        .put_secret(&names.kv_mount, path, &pending.to_map())
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
                    message: format!("tenant {tenant}'s certificate authority has no issuer yet"),
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
            let (not_before, not_after) = validity(&signed.certificate)?;
            let record = Record {
                key,
                // A root signs: the leaf is the whole chain to send. PEM
                // files end with a newline, so they can be concatenated.
                certificate: format!("{}\n", signed.certificate.trim_end()),
                ca: trust_bundle(&issuers),
                issued_for: wanted,
                serial: signed.serial,
                not_before: not_before.to_string(),
                not_after: not_after.to_string(),
                generation: i64::from(current.generation),
            };
            ctx.openbao
                .put_secret(&names.kv_mount, path, &record.to_map())
                .await?;
            found.lock().expect("never poisoned").issuing = None;
            changes.push(Change::Created);
            record
        }
    };
    if let Some(secret_name) = &spec.secret_name {
        let desired = secret(certificate, secret_name, tenant, &record);
        let api = Api::<Secret>::namespaced(
            ctx.client.clone(),
            &certificate.namespace().unwrap_or_default(),
        );
        changes.push(kubernetes::ensure(&api, &desired, &ctx.calls).await?);
    }
    found.lock().expect("never poisoned").record = Some(record);
    Ok(changes)
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

/// Start and end of a certificate's validity, read from its PEM.
fn validity(certificate: &str) -> Result<(Timestamp, Timestamp), Failure> {
    let unreadable = |e: String| Failure {
        category: "BackendUnreadable",
        message: format!("the signed certificate cannot be read: {e}"),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate.as_bytes())
        .map_err(|e| unreadable(e.to_string()))?;
    let parsed = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    let validity = parsed.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| unreadable(e.to_string()))
    };
    Ok((at(&validity.not_before)?, at(&validity.not_after)?))
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
        }
    }

    #[test]
    fn a_certificate_is_replaced_when_missing_interrupted_changed_or_due() {
        let early: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let late: Timestamp = "2026-01-30T00:00:00Z".parse().unwrap();
        assert!(reissue_reason(None, "a", None, early).is_some());
        let r = record("a", "01");
        assert_eq!(reissue_reason(Some(&r), "a", None, early), None);
        assert!(reissue_reason(Some(&r), "b", None, early).is_some());
        assert!(reissue_reason(Some(&r), "a", None, late).is_some());
        let interrupted = Record {
            certificate: String::new(),
            ..r.clone()
        };
        assert_eq!(
            reissue_reason(Some(&interrupted), "a", None, early),
            Some("an issuance was interrupted")
        );
        // Asked to renew 29 days before expiry: due at once.
        assert!(
            reissue_reason(
                Some(&r),
                "a",
                Some(Duration::from_secs(29 * 24 * 3600)),
                early
            )
            .is_some()
        );
    }

    #[test]
    fn records_round_trip_through_openbao_maps() {
        let r = record("x", "0a:0b");
        assert_eq!(Record::from_map(&r.to_map()), r);
    }

    #[test]
    fn a_secret_tells_a_change_by_someone_else() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "api", "namespace": "tn-acme", "uid": "u1"},
            "spec": {"dnsNames": ["api.acme.ossature.test"], "issuer": {"tenantCA": {}}},
        }))
        .unwrap();
        let mut s = secret(&certificate, "api-tls", "acme", &record("x", "01"));
        assert!(!secret_tampered(&s), "as written");
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].name, "api");
        s.data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"other".to_vec()));
        assert!(secret_tampered(&s), "data changed by hand");
    }
}
