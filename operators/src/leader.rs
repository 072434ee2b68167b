//! Leader election: of the instances running with one `--selector` (one
//! shard), only the holder of the shard's Lease reconciles. The others keep
//! their watches and caches warm, and take over within the lease's duration
//! when the leader dies, or sooner when it hands the Lease back on shutdown.
//!
//! A leader that cannot renew stops working at once, before the Lease can
//! pass to another: renewals are due `GRACE` before expiry and time out
//! sooner than that. It then campaigns again under a new identity, so it
//! never takes back, unrenewed, the Lease it may already have lost.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A dead leader is replaced within this many seconds.
pub const LEASE_SECONDS: u64 = 15;
/// A renewal is due this long before the Lease expires.
const GRACE_SECONDS: u64 = 5;
/// Longest wait for one call to the Lease: a renewal that cannot finish in
/// time is a failed one, and the leader steps down before its Lease ends.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
// A renewal fails (times out) before the Lease can pass to another.
const _: () = assert!(CALL_TIMEOUT.as_secs() < GRACE_SECONDS && GRACE_SECONDS < LEASE_SECONDS);

/// The Lease of the instances running with `selector`.
pub fn lease_name(selector: Option<&str>) -> String {
    match selector {
        None => "ossature-operator".into(),
        Some(selector) => format!(
            "ossature-operator-{}",
            &ossature_model::names::sha256_hex(selector.as_bytes())[..12]
        ),
    }
}

/// Whether this instance leads, as it changes; never once it is stopping.
#[derive(Clone)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
    stop: CancellationToken,
    /// Keeps the channel of an instance that always leads open.
    _always: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// Always leading until `stop`: leader election turned off.
    pub fn always(stop: CancellationToken) -> Leadership {
        let (sender, leading) = watch::channel(true);
        Leadership {
            leading,
            stop,
            _always: Some(std::sync::Arc::new(sender)),
        }
    }

    pub fn leading(&self) -> bool {
        *self.leading.borrow() && !self.stop.is_cancelled()
    }

    /// Resolves once this instance leads (at once when it does); never
    /// once it is stopping.
    pub async fn gained(&self) {
        let mut leading = self.leading.clone();
        tokio::select! {
            _ = async { leading.wait_for(|l| *l).await.is_ok() } => {}
            _ = self.stop.cancelled() => std::future::pending().await,
        }
    }

    /// Resolves once this instance no longer leads, or is stopping.
    pub async fn lost(&self) {
        let mut leading = self.leading.clone();
        tokio::select! {
            _ = async { leading.wait_for(|l| !*l).await.is_ok() } => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Resolves once this instance is stopping.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }
}

/// Campaigns for Lease `name` in `namespace` until `stop` is cancelled,
/// then hands it back. `client` must time out within [`CALL_TIMEOUT`].
pub fn campaign(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    stop: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (sender, leading) = watch::channel(false);
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let stop = stopped;
        let mut term = 0u32;
        loop {
            // A fresh identity after a failure (see the module's comment).
            let me = if term == 0 {
                identity.clone()
            } else {
                format!("{identity}-{term}")
            };
            let manager = tokio::select! {
                _ = stop.cancelled() => return,
                manager = manager(&client, &namespace, &name, &me) => manager,
            };
            let manager = match manager {
                Ok(manager) => manager,
                Err(e) => {
                    warn!(lease = name, "reading the leader Lease: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let changed = tokio::select! {
                    _ = stop.cancelled() => {
                        let was = *sender.borrow();
                        let _ = sender.send(false);
                        if was {
                            match manager.release().await {
                                Ok(()) => info!(lease = name, "leadership handed over"),
                                Err(e) => warn!(lease = name, "handing the Lease over: {e}"),
                            }
                        }
                        return;
                    }
                    changed = manager.changed() => changed,
                };
                match changed {
                    Ok(leads) => {
                        info!(
                            lease = name,
                            identity = me,
                            leads,
                            "{}",
                            if leads { "leading" } else { "following" }
                        );
                        let _ = sender.send(leads);
                    }
                    Err(e) => {
                        if *sender.borrow() {
                            warn!(
                                lease = name,
                                "could not renew the Lease; stopped working: {e}"
                            );
                        } else {
                            warn!(lease = name, "campaigning for the Lease: {e}");
                        }
                        let _ = sender.send(false);
                        term += 1;
                        break;
                    }
                }
            }
        }
    });
    let leadership = Leadership {
        leading,
        stop: stop.clone(),
        _always: None,
    };
    (leadership, task)
}

async fn manager(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), name)
        .with_namespace(namespace)
        .with_parameters(
            LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS)
                .with_field_manager(format!("ossature-operator-{identity}")),
        )
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_has_its_own_lease() {
        assert_eq!(lease_name(None), "ossature-operator");
        let a = lease_name(Some("ossature.dev/shard=a"));
        let b = lease_name(Some("ossature.dev/shard=b"));
        assert_ne!(a, b);
        assert_eq!(a, lease_name(Some("ossature.dev/shard=a")));
        // A valid object name, whatever the selector.
        assert!(a.len() <= 63 && a.starts_with("ossature-operator-"));
    }
}
