//! A tenant's host at the edge, `<tenant>.<root-domain>`: its certificate
//! (a Certificate the Tenant owns, in the tenant's namespace) and its route
//! with the tenant's mutual TLS and allowed source ranges. Part of the
//! Tenant's reconcile: `CertificateReady` and `EdgeReady` join its conditions.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use ossature_crds::{
    AcmeIssuerRef, Certificate, CertificateSpec, ClientAuthMode, DeletionPolicy, IssuerRef,
    KeyAlgorithm, Tenant, TenantCaRef, TenantStatus, Usage,
};

use super::certificate::{Record, record_path, trust_bundle};
use crate::adapters::Change;
use crate::adapters::edge::{self, EdgeCertificate, HostState, Upstream};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::edge::Edges;
use crate::kubernetes;
use crate::reconcile::{Failure, Plan, Step};

/// The Certificate of a tenant's host, in its namespace.
pub const HOST_CERTIFICATE: &str = "ossature-host";

/// The host's Certificate as the Tenant wants it.
/// Its names: the host, then the custom domains the tenant holds when a
/// public CA signs it (the tenant CA signs names under the host only).
pub fn certificate(
    tenant: &Tenant,
    names: &TenantNames,
    host: &str,
    domains: &[String],
    ctx: &Context,
) -> Certificate {
    // The platform's ACME issuer when there is one: a name the public trusts.
    let (issuer, domains) = match &ctx.settings.host_issuer {
        Some(name) => (
            IssuerRef {
                tenant_ca: None,
                acme: Some(AcmeIssuerRef { name: name.clone() }),
            },
            domains,
        ),
        None => (
            IssuerRef {
                tenant_ca: Some(TenantCaRef {}),
                acme: None,
            },
            &[][..],
        ),
    };
    let mut dns_names = vec![host.to_string()];
    dns_names.extend(domains.iter().cloned());
    let mut certificate = Certificate::new(
        HOST_CERTIFICATE,
        CertificateSpec {
            dns_names,
            usages: vec![Usage::Server],
            lifetime: None,
            renew_before: None,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            secret_name: None,
            deletion_policy: DeletionPolicy::Delete,
            issuer,
        },
    );
    certificate.metadata.namespace = Some(names.namespace.clone());
    certificate.metadata.labels = Some(BTreeMap::from([
        (desired::TENANT_LABEL.to_string(), names.tenant.clone()),
        (
            desired::MANAGED_BY.0.to_string(),
            desired::MANAGED_BY.1.to_string(),
        ),
    ]));
    // A cluster-scoped owner: honoured across namespaces.
    certificate.metadata.owner_references = tenant.controller_owner_ref(&()).map(|o| vec![o]);
    certificate
}

/// Writes the host's Certificate unless the watched one already matches.
pub async fn ensure_certificate(
    ctx: &Context,
    desired: Certificate,
) -> Result<Vec<Change>, kube::Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let live = ctx
        .stores
        .certificates
        .get(&ObjectRef::new(HOST_CERTIFICATE).within(&namespace));
    if let Some(live) = &live
        && !kubernetes::differs(&desired, live.as_ref())?
    {
        return Ok(vec![Change::Unchanged]);
    }
    let api = Api::<Certificate>::namespaced(ctx.client.clone(), &namespace);
    kubernetes::apply(&api, &desired, &ctx.calls).await?;
    Ok(vec![if live.is_some() {
        Change::Updated
    } else {
        Change::Created
    }])
}

/// Whether the watched host Certificate is Ready for its current spec.
fn issued(live: Option<&Certificate>) -> bool {
    live.and_then(|c| {
        let status = c.status.as_ref()?;
        (status.observed_generation == c.metadata.generation).then_some(status)
    })
    .is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::READY && c.status == "True")
    })
}

/// `CertificateReady` from the watched host Certificate, and, once it is
/// issued, the step that puts the host on the edge.
pub fn steps<'a>(
    tenant: &'a Tenant,
    plan: &mut Plan<'a, TenantStatus>,
    ctx: &'a Context,
    edges: &'a Edges,
    names: &TenantNames,
    host: String,
    desired: &Certificate,
) {
    let live = ctx
        .stores
        .certificates
        .get(&ObjectRef::new(HOST_CERTIFICATE).within(&names.namespace));
    let current = live
        .as_deref()
        .filter(|l| l.spec == desired.spec)
        .filter(|l| issued(Some(l)));
    if current.is_none() {
        let message = format!("the certificate of {host} is being issued");
        plan.outcomes.push(Outcome::failed(
            conditions::CERTIFICATE_READY,
            reasons::PROGRESSING,
            message.clone(),
        ));
        plan.outcomes.push(Outcome::failed(
            conditions::EDGE_READY,
            reasons::WAITING_FOR_CERTIFICATE,
            format!("{host} waits for its certificate"),
        ));
        return;
    }
    plan.outcomes.push(Outcome::ready(
        conditions::CERTIFICATE_READY,
        format!("the certificate of {host} is issued"),
    ));
    let names = names.clone();
    // The host and each custom domain held: one certificate serves them all.
    let hosts = desired.spec.dns_names.clone();
    plan.steps.push(Step::new(
        conditions::EDGE_READY,
        format!("edge host {}", hosts.join(", ")),
        async move {
            let state = host_state(tenant, ctx, &names, host).await?;
            let applied = hosts.into_iter().map(|host| {
                let state = HostState {
                    host,
                    ..state.clone()
                };
                async move {
                    edges.apply(state).await.map_err(|f| Failure {
                        category: f.category,
                        message: f.message,
                    })
                }
            });
            let changes = futures::future::try_join_all(applied).await?;
            Ok::<_, Failure>(changes.into_iter().map(|c| c.change).collect())
        },
    ));
}

/// The host as the edge should serve it: the issued certificate and key
/// (read from OpenBao), the client CA and mode, the allowed ranges.
async fn host_state(
    tenant: &Tenant,
    ctx: &Context,
    names: &TenantNames,
    host: String,
) -> Result<HostState, Failure> {
    let path = record_path(&names.namespace, HOST_CERTIFICATE);
    let record = ctx
        .openbao
        .get_secret(&names.kv_mount, &path)
        .await?
        .map(|m| Record::from_map(&m))
        .filter(|r| !r.certificate.is_empty())
        .ok_or_else(|| Failure {
            category: reasons::WAITING_FOR_CERTIFICATE,
            message: format!("the certificate of {host} is not in OpenBao yet"),
        })?;
    let client_auth = match &tenant.spec.edge.client_auth {
        None => None,
        Some(wanted) => {
            let ca_pem_bundle = match &wanted.ca_bundle {
                Some(bundle) => bundle.clone(),
                None => trust_bundle(&ctx.openbao.ca_bundle(&names.pki_mount).await?),
            };
            Some(edge::ClientAuth {
                ca_pem_bundle,
                mode: match wanted.mode {
                    ClientAuthMode::Optional => edge::ClientAuthMode::Optional,
                    ClientAuthMode::Required => edge::ClientAuthMode::Required,
                },
            })
        }
    };
    Ok(HostState {
        host,
        owner: names.tenant.clone(),
        certificate: EdgeCertificate::Pem {
            chain: record.certificate,
            key: record.key,
        },
        client_auth,
        allowed_ranges: tenant.spec.edge.allowed_source_ranges.clone(),
        upstream: Upstream::Static {
            body: format!("ossature edge: {}\n", names.tenant),
        },
    })
}

/// The Tenant whose host Certificate changed.
pub fn tenant_of_host_certificate(certificate: Arc<Certificate>) -> Option<ObjectRef<Tenant>> {
    if certificate.metadata.name.as_deref() != Some(HOST_CERTIFICATE) {
        return None;
    }
    let tenant = certificate
        .metadata
        .labels
        .as_ref()?
        .get(desired::TENANT_LABEL)?;
    Some(ObjectRef::new(tenant))
}
