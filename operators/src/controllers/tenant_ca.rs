//! A tenant's own CA and its rotation. Raising
//! `spec.certificateAuthority.generation` by one: the next generation is
//! created beside the current one, so every trust bundle holds both; it
//! becomes the one that signs; the Certificates the old one signed are
//! issued anew (see the Certificate controller, a few at a time); once none
//! is left on the old generation, it is retired and the bundles shrink back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ossature_crds::{CaGeneration, CertificateAuthorityStatus, Tenant, TenantStatus};

use super::certificate::of_tenant;
use crate::adapters::Change;
use crate::adapters::openbao::pki::{Issuer, TenantCa};
use crate::conditions;
use crate::context::Context;
use crate::desired::TenantNames;
use crate::reconcile::{Failure, Plan, Step};

/// Certificates of the tenant by the CA generation that signed them, from
/// the watch store; not yet issued ones are left out.
fn count(stores: &crate::context::Stores, tenant: &str) -> BTreeMap<i64, i64> {
    let mut counts = BTreeMap::new();
    for certificate in of_tenant(&stores.certificates, tenant) {
        if let Some(generation) = certificate.status.as_ref().and_then(|s| s.ca_generation) {
            *counts.entry(generation).or_default() += 1;
        }
    }
    counts
}

/// The Tenant whose CA status no longer counts its certificates right (a
/// certificate was issued, moved by a rotation, or removed).
pub fn tenant_to_recount(
    stores: &crate::context::Stores,
    certificate: &ossature_crds::Certificate,
) -> Option<kube::runtime::reflector::ObjectRef<Tenant>> {
    let tenant = crate::issuance::tenant_of_any(certificate.metadata.namespace.as_deref()?)?;
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
    (shown != count(stores, tenant)).then(|| kube::runtime::reflector::ObjectRef::new(tenant))
}

/// What to do with the generations present so that `wanted` signs and,
/// once no certificate is left on an older one, only it is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Create generations up to `wanted`.
    pub create: bool,
    /// Make `wanted` the default issuer.
    pub make_default: bool,
    /// Older generations to delete.
    pub retire: Vec<i64>,
}

pub fn rotation(
    issuers: &[(i64, bool)],
    wanted: i64,
    certificates: &BTreeMap<i64, i64>,
) -> Rotation {
    let newest = issuers.iter().map(|(g, _)| *g).max().unwrap_or(0);
    let create = newest < wanted;
    let make_default = create || !issuers.iter().any(|(g, d)| *g == wanted && *d);
    let left_on_older = certificates
        .iter()
        .any(|(generation, count)| *generation < wanted && *count > 0);
    let retire = if create || left_on_older {
        Vec::new()
    } else {
        issuers
            .iter()
            .map(|(g, _)| *g)
            .filter(|g| *g < wanted)
            .collect()
    };
    Rotation {
        create,
        make_default,
        retire,
    }
}

fn generation_of(issuer: &Issuer) -> i64 {
    i64::from(issuer.generation)
}

/// The CA step of a tenant, and the CA's status once it has run.
pub fn step<'a>(
    tenant: &'a Tenant,
    plan: &mut Plan<'a, TenantStatus>,
    ctx: &'a Context,
    names: &TenantNames,
) {
    let wanted = tenant.spec.certificate_authority.generation;
    let certificates = count(&ctx.stores, &names.tenant);
    let seen: Arc<Mutex<Option<Vec<i64>>>> = Arc::default();
    let found = seen.clone();
    let mount = names.pki_mount.clone();
    let name = names.tenant.clone();
    let counts = certificates.clone();
    // One generation, the one wanted, and no leaf on another.
    let steady = tenant
        .status
        .as_ref()
        .and_then(|s| s.certificate_authority.as_ref())
        .is_some_and(|ca| {
            ca.generation == wanted && ca.generations.iter().all(|g| g.generation == wanted)
        })
        && certificates.keys().all(|g| *g == wanted);
    plan.steps.push(Step::new(
        conditions::CERTIFICATE_AUTHORITY_READY,
        format!("certificate authority {mount}"),
        async move {
            let domains = [format!("{name}.{}", ctx.settings.root_domain)];
            let common_name = format!("{name} CA");
            let ca = TenantCa {
                mount: &mount,
                common_name: &common_name,
                domains: &domains,
            };
            let mut changes = vec![ctx.openbao.ensure_tenant_ca(&ca).await?];
            if steady {
                // Nothing to rotate or retire: no need to list the generations.
                *seen.lock().expect("never poisoned") = Some(vec![wanted]);
                return Ok(changes);
            }
            let mut issuers = ctx.openbao.ca_bundle(&mount).await?;
            let present: Vec<(i64, bool)> = issuers
                .iter()
                .map(|i| (generation_of(i), i.is_default))
                .collect();
            let todo = rotation(&present, wanted, &counts);
            if todo.create {
                while issuers.iter().map(generation_of).max().unwrap_or(0) < wanted {
                    issuers.push(ctx.openbao.rotate_ca(&ca).await?);
                    changes.push(Change::Created);
                }
            }
            if todo.make_default {
                changes.push(
                    ctx.openbao
                        .set_default_issuer(&mount, &format!("gen-{wanted}"))
                        .await?,
                );
            }
            for generation in &todo.retire {
                changes.push(
                    ctx.openbao
                        .retire_issuer(&mount, &format!("gen-{generation}"))
                        .await?,
                );
            }
            let live: Vec<i64> = issuers
                .iter()
                .map(generation_of)
                .filter(|g| !todo.retire.contains(g))
                .collect();
            *seen.lock().expect("never poisoned") = Some(live);
            Ok::<_, Failure>(changes)
        },
    ));
    let previous = tenant
        .status
        .as_ref()
        .and_then(|s| s.certificate_authority.clone());
    let before = plan.found.take();
    plan.found = Some(Box::new(move |status: &mut TenantStatus| {
        let due = before.and_then(|f| f(status));
        let live = found.lock().expect("never poisoned").take();
        // The step failed: what was known stays.
        status.certificate_authority = previous;
        if let Some(mut live) = live {
            live.sort();
            status.certificate_authority = Some(CertificateAuthorityStatus {
                generation: wanted,
                generations: live
                    .into_iter()
                    .map(|generation| CaGeneration {
                        generation,
                        certificates: certificates.get(&generation).copied().unwrap_or(0),
                    })
                    .collect(),
            });
        }
        due
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(i64, i64)]) -> BTreeMap<i64, i64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_steady_ca_is_left_alone() {
        assert_eq!(
            rotation(&[(1, true)], 1, &counts(&[(1, 5)])),
            Rotation::default()
        );
    }

    #[test]
    fn a_rotation_adds_the_next_generation_keeps_the_old_until_its_leaves_moved_then_retires_it() {
        // Asked for: the next one is created and signs; the old one stays.
        let start = rotation(&[(1, true)], 2, &counts(&[(1, 5)]));
        assert!(start.create && start.make_default && start.retire.is_empty());
        // Leaves are moving: nothing to retire yet.
        let moving = rotation(&[(1, false), (2, true)], 2, &counts(&[(1, 2), (2, 3)]));
        assert_eq!(moving, Rotation::default());
        // All moved: the old one goes.
        let done = rotation(&[(1, false), (2, true)], 2, &counts(&[(2, 5)]));
        assert_eq!(done.retire, vec![1]);
        assert!(!done.create && !done.make_default);
        // Interrupted after creating, before making it the default.
        let resumed = rotation(&[(1, true), (2, false)], 2, &counts(&[(1, 5)]));
        assert!(!resumed.create && resumed.make_default && resumed.retire.is_empty());
    }
}
