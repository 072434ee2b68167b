//! What all tenants share (the shared Keycloak realms, one per tenant type
//! and residency region) is managed by exactly one operator instance: of the
//! shards' leaders, the holder of a Kubernetes Lease. Others use the realms and wait for them;
//! no instance's cleanup ever removes them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use ossature_crds::TenantType;
use tokio::sync::watch;
use tracing::{info, warn};

use ossature_model::identity::{self, SHARED_REALMS_LEASE as LEASE};

use crate::context::Context;
/// A crashed holder is replaced within a minute: shared realms rarely need
/// anything, so renewals stay rare.
const LEASE_SECONDS: i32 = 60;
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// Whether a lease held by `holder`, renewed at `renewed`, may be taken by `me` at `now`.
pub fn may_take(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    seconds: i32,
    me: &str,
    now: Timestamp,
) -> bool {
    match (holder, renewed) {
        (Some(h), _) if h == me => true,
        (None, _) | (_, None) => true,
        (Some(_), Some(renewed)) => renewed
            .checked_add(SignedDuration::from_secs(i64::from(seconds)))
            .is_ok_and(|expiry| expiry < now),
    }
}

/// Tries to hold the lease once; true when this instance holds it now.
async fn try_hold(api: &Api<Lease>, me: &str, ctx: &Context) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(LEASE).await?;
    let spec = current
        .as_ref()
        .and_then(|l| l.spec.clone())
        .unwrap_or_default();
    if !may_take(
        spec.holder_identity.as_deref(),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS),
        me,
        now,
    ) {
        return Ok(false);
    }
    let mut lease = current.clone().unwrap_or_else(|| Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(LEASE.into()),
            ..Default::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(me) {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(me.into());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    lease.spec = Some(spec);
    // Counted apart from reconcile writes: they do not depend on any object.
    ctx.metrics.lease_write();
    // The resourceVersion read above makes this a compare-and-swap: of two
    // instances renewing at once, one gets a conflict.
    let written = match current {
        Some(_) => api.replace(LEASE, &PostParams::default(), &lease).await,
        None => api.create(&PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Keeps trying to hold the lease; the receiver says whether it is held.
pub fn hold(ctx: Arc<Context>, namespace: String, me: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &namespace);
        loop {
            // Only the leader of a shard competes for the shared realms.
            let leading = ctx.leadership.leading();
            let held = if !leading {
                false
            } else {
                match try_hold(&api, &me, &ctx).await {
                    Ok(held) => held,
                    Err(e) => {
                        warn!("could not renew lease {namespace}/{LEASE}: {e}");
                        false
                    }
                }
            };
            if *tx.borrow() != held {
                info!(
                    lease = LEASE,
                    held,
                    "shared realms are {}managed by this instance",
                    if held { "" } else { "no longer " }
                );
            }
            let _ = tx.send(held);
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = ctx.leadership.gained(), if !leading => {}
            }
        }
    });
    rx
}

/// Hands the lease back on shutdown, so another instance takes over at once
/// rather than when it expires.
pub async fn release(ctx: &Context, namespace: &str, me: &str) {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), namespace);
    let Ok(Some(mut lease)) = api.get_opt(LEASE).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(me) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    ctx.metrics.lease_write();
    match api.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = LEASE, "shared realms handed over"),
        Err(e) => warn!("could not hand over lease {namespace}/{LEASE}: {e}"),
    }
}

/// While this instance holds the lease: provisions every shared realm and
/// keeps it from drifting, at every resync (sooner after a failure).
pub async fn manage_realms(ctx: Arc<Context>, mut held: watch::Receiver<bool>) {
    loop {
        if !*held.borrow() {
            if held.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut failed = false;
        for region in ctx.settings.platform.residency.keys() {
            for kind in [TenantType::Business, TenantType::Consumer] {
                let settings = identity::shared_realm_settings(kind, region);
                let result = async {
                    let realm = ctx.keycloak.ensure_realm(&settings).await?;
                    let claims = ctx
                        .keycloak
                        .ensure_organization_claims(&settings.name)
                        .await?;
                    Ok::<_, crate::adapters::BackendError>([realm, claims])
                }
                .await;
                match result {
                    Ok(changes) if changes.iter().any(|c| c.wrote()) => {
                        info!(realm = %settings.name, "shared realm provisioned");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed = true;
                        ctx.metrics
                            .step_failure("shared-realm", "RealmReady", e.category());
                        warn!(realm = %settings.name, category = e.category(), "shared realm: {e}");
                    }
                }
            }
        }
        let wait = if failed {
            Duration::from_secs(5)
        } else {
            ctx.settings.resync
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = held.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_ours_or_expired() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let fresh: Timestamp = "2026-01-01T00:00:50Z".parse().unwrap();
        let stale: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        assert!(may_take(None, None, 15, "a", now));
        assert!(may_take(Some("a"), Some(fresh), 15, "a", now));
        assert!(!may_take(Some("b"), Some(fresh), 15, "a", now));
        assert!(may_take(Some("b"), Some(stale), 15, "a", now));
    }
}
