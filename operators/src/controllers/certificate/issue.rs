//! The issuance step of a Certificate: a new certificate when the held one
//! does not do (none yet, an interrupted issuance, a changed spec or
//! issuer, its renewal time come, its CA rotated), from the tenant's CA or
//! an ACME issuer; then its trust bundle and its Secret in line with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use ossature_crds::{AcmeIssuer, Certificate};
use ossature_model::certificates::{Record, Wanted, replace_reason, secret, serves};
use ossature_model::conditions::reasons;

use super::acme::Ordering;
use super::status::{Found, renewal};
use crate::adapters::{Change, Failure};
use crate::context::Context;
use crate::kubernetes;
use crate::signing::{self, Target};

/// Who signs, as decided by the plan.
pub(super) enum Signer {
    TenantCa,
    Acme(Arc<AcmeIssuer>),
}

/// Issues a certificate when the held one does not do, then keeps its
/// Secret (when asked for) in line with it; `found` gathers what the
/// status shows.
pub(super) async fn issue(
    certificate: &Certificate,
    ctx: &Context,
    at: &Target<'_>,
    signer: &Signer,
    renew_before: Option<Duration>,
    found: &Mutex<Found>,
) -> Result<Vec<Change>, Failure> {
    let spec = &certificate.spec;
    let wanted = Wanted::of(spec);
    let held = signing::held(ctx, at).await?;
    let acme = match signer {
        Signer::TenantCa => None,
        Signer::Acme(issuer) => Some((
            issuer.name_any(),
            ctx.acme.get(issuer).await.map_err(|f| {
                Failure::new(
                    reasons::WAITING_FOR_ISSUER,
                    format!("AcmeIssuer {}: {}", issuer.name_any(), f.message),
                )
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
    let signing = acme.is_none().then_some(at.ca.generation);
    let reason = replace_reason(
        held.as_ref(),
        &wanted,
        renews.map(|r| r.at),
        Timestamp::now(),
        signing,
    );
    // A rotation moves a tenant's certificates a few at a time.
    let _wave = match reason {
        Some("its CA is rotated") => Some(ctx.rotation_wave(at.tenant).acquire_owned().await),
        _ => None,
    };
    let mut record = match reason {
        None => held.expect("a held certificate that does not need replacing"),
        Some(why) => {
            found.lock().expect("never poisoned").issuing = Some(why);
            let issued = match &acme {
                None => Some(signing::sign(ctx, spec, at, held.clone(), &wanted).await?),
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
                    Some(record) => {
                        found.lock().expect("never poisoned").held_serves =
                            serves(&record, &wanted, Timestamp::now());
                        record
                    }
                    None => return Ok(changes),
                },
            }
        }
    };
    // The trust bundle follows the rotation: both CAs, then the new one.
    if acme.is_none() {
        changes.extend(signing::follow_trust(ctx, at, &mut record).await?);
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

/// Reads a certificate another writer issues (a tenant's host certificate,
/// which its Tenant signs) for the status; never issues one. False when
/// none is held yet.
pub(super) async fn report(
    ctx: &Context,
    at: &Target<'_>,
    found: &Mutex<Found>,
) -> Result<bool, Failure> {
    let held = signing::held(ctx, at)
        .await?
        .filter(|r| !r.certificate.is_empty());
    let Some(record) = held else {
        return Ok(false);
    };
    let renews = renewal(&record, None, None).await;
    let mut found = found.lock().expect("never poisoned");
    found.renewal = renews;
    found.record = Some(record);
    Ok(true)
}
