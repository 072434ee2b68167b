//! Certificates signed by a tenant's own CA (OpenBao PKI): the key is
//! generated here and recorded under the tenant's KV mount before it is
//! sent for signing, so an issuance interrupted there signs that same key
//! after a restart and no key is left orphaned. The Certificate controller
//! and the Tenant's reconcile (for its host) both sign through this module.

use ossature_model::certificates::keys::pem_count;
use ossature_model::certificates::{
    CaState, Record, TENANT_CA, Wanted, lifetime, new_key, read_leaf, request_for, trust_bundle,
};
use ossature_model::conditions::reasons;
use ossature_model::names::TenantNames;
use ossature_model::services::spiffe_uri_sans;

use crate::adapters::openbao::pki::{Issuer, SignRequest};
use crate::adapters::{Change, Failure};
use crate::context::Context;

/// Where a certificate is kept.
pub struct Target<'a> {
    pub tenant: &'a str,
    pub names: &'a TenantNames,
    pub path: &'a str,
    /// The tenant CA: the generation that signs, and how many generations
    /// are trusted (more than one while it rotates).
    pub ca: CaState,
    /// Its issuers, when just read (by the Tenant's CA step): not read again.
    pub issuers: Option<Vec<Issuer>>,
}

/// The certificate held for `at`, if any.
pub async fn held(ctx: &Context, at: &Target<'_>) -> Result<Option<Record>, Failure> {
    Ok(ctx
        .openbao
        .get_secret(&at.names.kv_mount, at.path)
        .await?
        .map(|m| Record::from_map(&m)))
}

/// Signs a key with the tenant's CA: the key is recorded first, and an
/// interrupted issuance's recorded key is the one signed.
pub async fn sign(
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
            let key = new_key(spec).map_err(key_failure)?;
            let pending = Record {
                key: key.clone(),
                issued_for: wanted.issued_for.clone(),
                issuer: TENANT_CA.into(),
                ..Default::default()
            };
            ctx.openbao
                .write_secret(&names.kv_mount, at.path, &pending.to_map())
                .await?;
            crate::failpoint::hit(crate::failpoint::CERTIFICATE_KEY_RECORDED);
            key
        }
    };
    let request = request_for(spec, &key).map_err(key_failure)?;
    let issuers = match &at.issuers {
        Some(issuers) => issuers.clone(),
        None => ctx.openbao.ca_bundle(&names.pki_mount).await?,
    };
    let Some(current) = issuers.iter().find(|i| i.is_default) else {
        return Err(Failure::new(
            reasons::WAITING_FOR_TENANT,
            format!(
                "tenant {}'s certificate authority has no issuer yet",
                at.tenant
            ),
        ));
    };
    let ttl = format!("{}s", lifetime(spec).as_secs());
    if !spec.uris.is_empty() {
        let allowed = spiffe_uri_sans(at.tenant, &ctx.settings.platform.root_domain);
        ctx.openbao
            .ensure_service_role(&names.pki_mount, &allowed)
            .await?;
    }
    let (common_name, alt_names) = match spec.dns_names.split_first() {
        Some((first, rest)) => (first.as_str(), rest),
        None => ("", &[][..]),
    };
    let signed = ctx
        .openbao
        .sign(
            &names.pki_mount,
            &SignRequest {
                issuer: &current.name,
                csr: &request,
                common_name,
                alt_names,
                uri_sans: &spec.uris,
                ttl: &ttl,
            },
        )
        .await?;
    let leaf = read_leaf(&signed.certificate).map_err(unreadable)?;
    let record = Record {
        key,
        // A root signs: the leaf is the whole chain to send. PEM files
        // end with a newline, so they can be concatenated.
        certificate: format!("{}\n", signed.certificate.trim_end()),
        ca: bundle_of(&issuers),
        issued_for: wanted.issued_for.clone(),
        serial: signed.serial,
        not_before: leaf.not_before.to_string(),
        not_after: leaf.not_after.to_string(),
        generation: i64::from(current.generation),
        issuer: TENANT_CA.into(),
        ..Default::default()
    };
    ctx.openbao
        .write_secret(&names.kv_mount, at.path, &record.to_map())
        .await?;
    Ok(record)
}

/// Keeps the record's trust bundle in line with the CA generations trusted
/// (both during a rotation, then the new one alone).
pub async fn follow_trust(
    ctx: &Context,
    at: &Target<'_>,
    record: &mut Record,
) -> Result<Option<Change>, Failure> {
    if pem_count(&record.ca) == at.ca.trusted {
        return Ok(None);
    }
    record.ca = bundle_of(&ctx.openbao.ca_bundle(&at.names.pki_mount).await?);
    ctx.openbao
        .write_secret(&at.names.kv_mount, at.path, &record.to_map())
        .await?;
    Ok(Some(Change::Updated))
}

/// The CA certificates of every live generation.
pub fn bundle_of(issuers: &[Issuer]) -> String {
    trust_bundle(issuers.iter().map(|i| i.certificate.as_str()))
}

fn unreadable(detail: String) -> Failure {
    Failure::new("BackendUnreadable", detail)
}

pub fn key_failure(e: rcgen::Error) -> Failure {
    Failure::new(
        reasons::INVALID_SPEC,
        format!("could not make a key and request: {e}"),
    )
}
