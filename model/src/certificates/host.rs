//! The certificate of a tenant's host at the edge, `<tenant>.<root-domain>`:
//! a Certificate `ossature-host` the Tenant owns in its namespace, the
//! record users see. Signed by the tenant's CA, it is issued by the
//! Tenant's own reconcile (one writer of its record, renewal and rotation);
//! from an ACME issuer, by the Certificate controller like any other.

use kube::Resource;
use ossature_crds::{
    AcmeIssuerRef, Certificate, CertificateSpec, DeletionPolicy, IssuerRef, KeyAlgorithm, Tenant,
    TenantCaRef, Usage,
};

use crate::names::{TENANT_LABEL, TenantNames, labels};

/// The Certificate of a tenant's host, in its namespace.
pub const HOST: &str = "ossature-host";

/// The host's Certificate as the Tenant wants it.
/// Its names: the host, then the custom domains the tenant holds when a
/// public CA signs it (the tenant CA signs names under the host only).
pub fn certificate(
    tenant: &Tenant,
    names: &TenantNames,
    host: &str,
    domains: &[String],
    host_issuer: Option<&str>,
) -> Certificate {
    // The platform's ACME issuer when there is one: a name the public trusts.
    let (issuer, domains) = match host_issuer {
        Some(name) => (
            IssuerRef {
                tenant_ca: None,
                acme: Some(AcmeIssuerRef {
                    name: name.to_string(),
                }),
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
        HOST,
        CertificateSpec {
            dns_names,
            uris: Vec::new(),
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
    certificate.metadata.labels = Some(labels(&names.tenant, None));
    // A cluster-scoped owner: honoured across namespaces.
    certificate.metadata.owner_references = tenant.controller_owner_ref(&()).map(|o| vec![o]);
    certificate
}

/// The tenant whose host certificate this is.
pub fn host_of(certificate: &Certificate) -> Option<&str> {
    if certificate.metadata.name.as_deref() != Some(HOST) {
        return None;
    }
    let tenant = certificate.metadata.labels.as_ref()?.get(TENANT_LABEL)?;
    let owned = certificate
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Tenant" && o.name == *tenant && o.controller == Some(true));
    owned.then_some(tenant.as_str())
}

/// Whether a Certificate is a tenant's host certificate signed by the
/// tenant's CA: the Tenant's reconcile issues it, its own controller only
/// reports it.
pub fn signed_by_its_tenant(certificate: &Certificate) -> bool {
    host_of(certificate).is_some() && certificate.spec.issuer.tenant_ca.is_some()
}

/// When to look at the host certificate again: a little after its renewal
/// time, then every minute while the renewal is overdue and it still holds.
pub fn renewal_check(
    status: &ossature_crds::CertificateStatus,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    use k8s_openapi::jiff::Timestamp;
    let at = |t: &Option<String>| t.as_deref()?.parse::<Timestamp>().ok();
    check_at(at(&status.renewal_time)?, at(&status.not_after)?, now)
}

/// When to look again at a certificate that renews at `renews` and
/// expires at `expires`.
pub fn check_at(
    renews: k8s_openapi::jiff::Timestamp,
    expires: k8s_openapi::jiff::Timestamp,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<std::time::Duration> {
    const AFTER: std::time::Duration = std::time::Duration::from_secs(15);
    const OVERDUE: std::time::Duration = std::time::Duration::from_secs(60);
    if renews > now {
        let wait = std::time::Duration::try_from(renews.duration_since(now)).ok()?;
        Some(wait + AFTER)
    } else {
        (expires > now).then_some(OVERDUE)
    }
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

    #[test]
    fn a_host_certificate_is_the_tenants_and_signed_by_whom_the_platform_says() {
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "uid": "u-1"},
            "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"},
        }))
        .unwrap();
        let names = TenantNames::new("acme");
        let domains = ["shop.example.test".to_string()];
        let own = certificate(&tenant, &names, "acme.ossature.test", &domains, None);
        assert_eq!(
            own.spec.dns_names,
            ["acme.ossature.test"],
            "the tenant CA signs the host only"
        );
        assert!(signed_by_its_tenant(&own));
        assert_eq!(host_of(&own), Some("acme"));
        let public = certificate(
            &tenant,
            &names,
            "acme.ossature.test",
            &domains,
            Some("pebble"),
        );
        assert_eq!(
            public.spec.dns_names,
            ["acme.ossature.test", "shop.example.test"]
        );
        assert!(!signed_by_its_tenant(&public));
        assert_eq!(host_of(&public), Some("acme"));
        let mut other = own.clone();
        other.metadata.owner_references = None;
        assert_eq!(host_of(&other), None, "not owned by its Tenant");
    }
}
