//! The Certificate controller: a key generated here, signed by the tenant's
//! CA in OpenBao or obtained from an ACME CA (an AcmeIssuer), kept under the
//! tenant's OpenBao paths (and in a Secret of the Certificate's namespace
//! when one is named), renewed at its renewal time. Issuance is crash-safe
//! (see [`crate::signing`] and [`acme`]). A tenant's host certificate from
//! its own CA is issued by its Tenant; this controller only reports it.

mod acme;
mod issue;
mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{
    AcmeIssuer, Certificate, CertificateStatus, ChallengeType, DeletionPolicy, Tenant,
};
use ossature_model::certificates::host::signed_by_its_tenant;
use ossature_model::certificates::{
    CERTIFICATE_LABEL, CaState, Wanted, names_not_owned, record_path, record_secret_path,
    secret_tampered,
};
use ossature_model::conditions::{self, Outcome, reasons};
use ossature_model::domains::covered;
use ossature_model::issuers;
use ossature_model::names::{TenantNames, tenant_of_any};
use ossature_model::tenants::{backend_ready, retained};
use ossature_model::time::parse_ttl;

use super::{Home, owning_tenant};
use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Report, Step, WatchContext, event};
use crate::signing::Target;
use issue::Signer;
use status::{Found, keep_issued, status_from};

pub const FINALIZER: &str = "ossature.dev/certificate-cleanup";

impl Reconciled for Certificate {
    const CONTROLLER: &'static str = "certificate";
    const FINALIZER: &'static str = FINALIZER;
    /// Tenants follow their host certificates and count theirs per CA.
    const FOLLOWED: bool = true;
    /// A host Certificate in the store is compared with the desired one.
    const KEEPS_MANAGED_FIELDS: bool = true;
    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, CertificateStatus>, Error> {
        let namespace: &'a str = self.metadata.namespace.as_deref().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        let home = ("Certificates", Home::TenantOrEnvironment);
        let (owned, owner) = match owning_tenant(ctx, namespace, home, previous.clone()).await? {
            Ok(found) => found,
            Err(stalled) => return Ok(stalled),
        };
        let tenant: &str = &owned;
        let root = &ctx.settings.platform.root_domain;
        let held: Vec<&str> = owner
            .status
            .iter()
            .flat_map(|s| s.verified_domains())
            .collect();
        let beyond = names_not_owned(&self.spec, tenant, root);
        let foreign: Vec<&str> = beyond
            .iter()
            .copied()
            .filter(|n| !covered(n, held.iter().copied()))
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
            secret_path: Some(record_secret_path(&names.kv_mount, namespace, &name)),
            failed_attempts: previous.failed_attempts,
            ..Default::default()
        };
        // Until the next issuance, the status keeps what the last one gave.
        keep_issued(&mut status, &previous);
        let mut plan = Plan::new(status);
        let signer = match self.spec.issuer.acme_name() {
            None => Signer::TenantCa,
            Some(issuer) => match ctx.find::<AcmeIssuer>(issuer).await? {
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
                    if !issuers::ready(&found) {
                        plan.outcomes.push(Outcome::failed(
                            conditions::CERTIFICATE_READY,
                            reasons::WAITING_FOR_ISSUER,
                            format!(
                                "AcmeIssuer {issuer} is not Ready ({})",
                                issuers::not_ready_reason(&found)
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
        if !backend_ready(&owner, needed) {
            plan.outcomes.push(Outcome::failed(
                conditions::CERTIFICATE_READY,
                reasons::WAITING_FOR_TENANT,
                format!("waits for tenant {tenant}'s {what}"),
            ));
            return Ok(plan);
        }

        let renew_before = self.spec.renew_before.as_deref().and_then(parse_ttl);
        let host = signed_by_its_tenant(self);
        plan.step(Step::reporting(
            conditions::CERTIFICATE_READY,
            format!("certificate {namespace}/{name}"),
            async move {
                let tenant = owned.as_str();
                let at = Target {
                    tenant,
                    names: &names,
                    path: &path,
                    ca: CaState::of(&owner),
                    issuers: None,
                };
                let found = Mutex::new(Found::default());
                let (result, outcome) = if host {
                    // Its Tenant issues it: this controller only reports it.
                    match issue::report(ctx, &at, &found).await {
                        Ok(true) => (Ok(Vec::new()), None),
                        Ok(false) => (
                            Ok(Vec::new()),
                            Some(Outcome::failed(
                                conditions::CERTIFICATE_READY,
                                reasons::WAITING_FOR_TENANT,
                                format!("tenant {tenant} issues its host certificate; it is not issued yet"),
                            )),
                        ),
                        Err(failure) => (Err(failure), None),
                    }
                } else {
                    let result = issue::issue(self, ctx, &at, &signer, renew_before, &found).await;
                    (result, None)
                };
                let mut found = found.into_inner().expect("never poisoned");
                if let Err(e) = &result {
                    found.failure = Some(e.message.clone());
                }
                let report = Report::of(result)
                    .found(move |status: &mut CertificateStatus| status_from(status, found));
                match outcome {
                    Some(outcome) => report.outcome(outcome),
                    None => report,
                }
            },
        ));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let Some(tenant) = tenant_of_any(&namespace) else {
            return Ok(Vec::new());
        };
        let owner = ctx.find::<Tenant>(tenant).await?;
        if self.spec.deletion_policy == DeletionPolicy::Retain || retained(owner.as_deref()) {
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
        // A namespace being deleted takes the Secret with it, and may have
        // taken the operator's right to it first (its RoleBinding).
        let namespace_goes = kubernetes::namespace(&ctx.client, &namespace, &ctx.calls)
            .await?
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
        if let Some(secret) = self.spec.secret_name.as_ref().filter(|_| !namespace_goes) {
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
        use kube::runtime::watcher;
        let stores = watch.stores.clone();
        let users = watch.stores.clone();
        // Its Secret, when changed or deleted by someone else (its own
        // writes carry the hash of what they wrote: no reconcile).
        let secrets = watch.secrets.watch(&watch.client, CERTIFICATE_LABEL).filter_map(|event| {
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
            .watches_shared_stream(watch.changes::<Tenant>(), {
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
                    stores
                        .of_tenant::<Certificate>(&tenant.name_any())
                        .into_iter()
                        .map(|c| ObjectRef::from_obj(&*c))
                        .collect::<Vec<_>>()
                }
            })
            // Its AcmeIssuer appearing, becoming Ready or changing.
            .watches(
                Api::<AcmeIssuer>::all(watch.client.clone()),
                watcher::Config::default(),
                move |issuer: AcmeIssuer| {
                    users
                        .certificates_of_issuer(&issuer.name_any())
                        .iter()
                        .map(|c| ObjectRef::from_obj(&**c))
                        .collect::<Vec<_>>()
                },
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
            retained: retained(Some(tenant)),
            ca_ready: backend_ready(tenant, conditions::CERTIFICATE_AUTHORITY_READY),
            secrets_ready: backend_ready(tenant, conditions::SECRETS_READY),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
