//! A tenant's host at the edge, `<tenant>.<root-domain>`: its certificate
//! (a Certificate the Tenant owns, in the tenant's namespace) and its route
//! with the tenant's mutual TLS and allowed source ranges. Part of the
//! Tenant's reconcile: `CertificateReady` and `EdgeReady` join its conditions.

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
    certificate.metadata.labels = Some(desired::labels(&names.tenant, None));
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
    // The renewed certificate's change brings the tenant back; in case it
    // is missed, it also comes back once the renewal is due.
    let due = current
        .and_then(|c| c.status.as_ref())
        .and_then(|s| renewal_check(s, k8s_openapi::jiff::Timestamp::now()));
    plan.due_in = match (plan.due_in, due) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
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

/// When to look at the host certificate again: a little after its renewal
/// time, then every minute while the renewal is overdue and it still holds.
fn renewal_check(
    status: &ossature_crds::CertificateStatus,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    use k8s_openapi::jiff::Timestamp;
    const AFTER: std::time::Duration = std::time::Duration::from_secs(15);
    const OVERDUE: std::time::Duration = std::time::Duration::from_secs(60);
    let at = |t: &Option<String>| t.as_deref()?.parse::<Timestamp>().ok();
    let (renews, expires) = (at(&status.renewal_time)?, at(&status.not_after)?);
    if renews > now {
        let wait = std::time::Duration::try_from(renews.duration_since(now)).ok()?;
        Some(wait + AFTER)
    } else {
        (expires > now).then_some(OVERDUE)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use std::time::Duration;

    #[test]
    fn a_tenant_looks_at_its_host_certificate_again_once_its_renewal_is_due() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let status = |renews: &str, expires: &str| ossature_crds::CertificateStatus {
            renewal_time: Some(renews.into()),
            not_after: Some(expires.into()),
            ..Default::default()
        };
        let ahead = status("2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z");
        assert_eq!(
            renewal_check(&ahead, now),
            Some(Duration::from_secs(600 + 15))
        );
        let overdue = status("2025-12-31T23:59:00Z", "2026-01-01T00:05:00Z");
        assert_eq!(renewal_check(&overdue, now), Some(Duration::from_secs(60)));
        let expired = status("2025-12-31T23:50:00Z", "2025-12-31T23:55:00Z");
        assert_eq!(renewal_check(&expired, now), None);
        assert_eq!(renewal_check(&Default::default(), now), None);
    }
}
