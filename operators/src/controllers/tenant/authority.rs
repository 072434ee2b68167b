//! A tenant's own CA and its rotation. Raising
//! `spec.certificateAuthority.generation` by one: the next generation is
//! created beside the current one, so every trust bundle holds both; it
//! becomes the one that signs; the Certificates the old one signed are
//! issued anew (see the Certificate controller, a few at a time); once none
//! is left on the old generation, it is retired and the bundles shrink back.

use std::collections::BTreeMap;

use kube::runtime::reflector::ObjectRef;
use ossature_crds::{CaGeneration, Certificate, CertificateAuthorityStatus, Tenant, TenantStatus};
use ossature_model::certificates::host::signed_by_its_tenant;
use ossature_model::certificates::authority::common_name as ca_common_name;
use ossature_model::certificates::{issuer_name, rotation};
use ossature_model::conditions;
use ossature_model::names::tenant_of_any;

use super::Provisioning;
use crate::adapters::openbao::pki::{Issuer, TenantCa};
use crate::adapters::{Change, Failure};
use crate::reconcile::{Plan, Report, Step};
use tokio::sync::oneshot;
use crate::stores::Stores;

/// Certificates of the tenant by the CA generation that signed them, from
/// the watch store; not yet issued ones are left out, and so is its host
/// certificate when `but_host`.
fn count_of(stores: &Stores, tenant: &str, but_host: bool) -> BTreeMap<i64, i64> {
    let mut counts = BTreeMap::new();
    for certificate in stores.of_tenant::<Certificate>(tenant) {
        if but_host && signed_by_its_tenant(&certificate) {
            continue;
        }
        if let Some(generation) = certificate.status.as_ref().and_then(|s| s.ca_generation) {
            *counts.entry(generation).or_default() += 1;
        }
    }
    counts
}

fn count(stores: &Stores, tenant: &str) -> BTreeMap<i64, i64> {
    count_of(stores, tenant, false)
}

/// The Tenant whose CA status no longer counts its certificates right (a
/// certificate was issued, moved by a rotation, or removed).
pub fn tenant_to_recount(stores: &Stores, certificate: &Certificate) -> Option<ObjectRef<Tenant>> {
    let tenant = tenant_of_any(certificate.metadata.namespace.as_deref()?)?;
    let owner = stores.tenant(tenant)?;
    let shown: BTreeMap<i64, i64> = owner
        .status
        .as_ref()
        .and_then(|s| s.certificate_authority.as_ref())
        .map(|ca| {
            ca.generations
                .iter()
                .filter(|g| g.certificates > 0)
                .map(|g| (g.generation, g.certificates))
                .collect()
        })
        .unwrap_or_default();
    (shown != count(stores, tenant)).then(|| ObjectRef::new(tenant))
}

fn generation_of(issuer: &Issuer) -> i64 {
    i64::from(issuer.generation)
}

impl<'a> Provisioning<'a> {
    /// The CA step of a tenant (`CertificateAuthorityReady`), and the CA's
    /// status from what it found. Its issuers go to the host step; when the
    /// tenant signs its host itself (`signs_host`), that step counts the
    /// host certificate in this status.
    pub(super) fn authority(
        &self,
        plan: &mut Plan<'a, TenantStatus>,
        issuers_to_host: oneshot::Sender<Vec<Issuer>>,
        signs_host: bool,
    ) {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let wanted = tenant.spec.certificate_authority.generation;
        let certificates = count(&ctx.stores, &self.names.tenant);
        let counted = match signs_host {
            true => count_of(&ctx.stores, &self.names.tenant, true),
            false => certificates.clone(),
        };
        // One generation, the one wanted, and no leaf on another.
        let steady = tenant
            .status
            .as_ref()
            .and_then(|s| s.certificate_authority.as_ref())
            .is_some_and(|ca| {
                ca.generation == wanted && ca.generations.iter().all(|g| g.generation == wanted)
            })
            && certificates.keys().all(|g| *g == wanted);
        let previous = tenant
            .status
            .as_ref()
            .and_then(|s| s.certificate_authority.clone());
        let mount = self.names.pki_mount.clone();
        let domains = [self.host()];
        let common_name = ca_common_name(&self.names.tenant);
        plan.step(Step::reporting(
            conditions::CERTIFICATE_AUTHORITY_READY,
            format!("certificate authority {mount}"),
            async move {
                let ca = TenantCa {
                    mount: &mount,
                    common_name: &common_name,
                    domains: &domains,
                };
                let result = rotate(ctx, &ca, wanted, steady, &certificates).await;
                let (result, live) = match result {
                    Ok((changes, live, issuers)) => {
                        if let Some(issuers) = issuers {
                            let _ = issuers_to_host.send(issuers);
                        }
                        (Ok(changes), Some(live))
                    }
                    Err(failure) => (Err(failure), None),
                };
                Report::of(result).found(move |status: &mut TenantStatus| {
                    let certificates = counted;
                    // The step failed: what was known stays.
                    status.certificate_authority = match live {
                        Some(mut live) => {
                            live.sort();
                            Some(CertificateAuthorityStatus {
                                generation: wanted,
                                generations: live
                                    .into_iter()
                                    .map(|generation| CaGeneration {
                                        generation,
                                        certificates: certificates
                                            .get(&generation)
                                            .copied()
                                            .unwrap_or(0),
                                    })
                                    .collect(),
                            })
                        }
                        None => previous,
                    };
                    None
                })
            },
        ));
    }
}

/// The CA in place, the `wanted` generation signing, and older generations
/// retired once no certificate is left on them; the generations live after.
/// The issuers are handed on when nothing here changed them.
async fn rotate(
    ctx: &crate::context::Context,
    ca: &TenantCa<'_>,
    wanted: i64,
    steady: bool,
    certificates: &BTreeMap<i64, i64>,
) -> Result<(Vec<Change>, Vec<i64>, Option<Vec<Issuer>>), Failure> {
    let mut changes = vec![ctx.openbao.ensure_tenant_ca(ca).await?];
    if steady {
        // Nothing to rotate or retire: no need to list the generations.
        return Ok((changes, vec![wanted], None));
    }
    let mount = ca.mount;
    let mut issuers = ctx.openbao.ca_bundle(mount).await?;
    let present: Vec<(i64, bool)> = issuers
        .iter()
        .map(|i| (generation_of(i), i.is_default))
        .collect();
    let todo = rotation(&present, wanted, certificates);
    if todo.create {
        while issuers.iter().map(generation_of).max().unwrap_or(0) < wanted {
            issuers.push(ctx.openbao.rotate_ca(ca).await?);
            changes.push(Change::Created);
        }
    }
    if todo.make_default {
        changes.push(
            ctx.openbao
                .set_default_issuer(mount, &issuer_name(wanted))
                .await?,
        );
    }
    for generation in &todo.retire {
        changes.push(
            ctx.openbao
                .retire_issuer(mount, &issuer_name(*generation))
                .await?,
        );
    }
    let live: Vec<i64> = issuers
        .iter()
        .map(generation_of)
        .filter(|g| !todo.retire.contains(g))
        .collect();
    let unchanged = !todo.create && !todo.make_default && todo.retire.is_empty();
    Ok((changes, live, unchanged.then_some(issuers)))
}
