//! Whether each backend answers, from one cheap request every few seconds
//! (the edge's probe included). It feeds `ossature_backend_up`, and a
//! backend found answering again after it did not brings back, at once,
//! every object that waits on it, instead of at its next backoff.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::adapters::Backend;

/// Between two probes of one backend.
pub const PROBE_EVERY: Duration = Duration::from_secs(3);
/// A probe not answered within this time finds its backend down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The probes' findings; cheap to clone.
#[derive(Clone)]
pub struct Health {
    up: Arc<Mutex<BTreeMap<Backend, bool>>>,
    recovered: broadcast::Sender<Backend>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: Arc::default(),
            recovered: broadcast::channel(16).0,
        }
    }
}

/// What one probe's answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first answer of a backend that answers.
    FirstUp,
    /// It answered before, or was never seen, and does not answer now.
    Down,
    /// It did not answer before, and answers again.
    Recovered,
}

/// What a probe finding `now` after `was` changed; `None` while steady.
pub fn transition(was: Option<bool>, now: bool) -> Option<Transition> {
    match (was, now) {
        (None, true) => Some(Transition::FirstUp),
        (Some(false), true) => Some(Transition::Recovered),
        (None | Some(true), false) => Some(Transition::Down),
        (Some(true), true) | (Some(false), false) => None,
    }
}

impl Health {
    /// Records one probe's answer; says so in the log, and announces a
    /// recovery, only when it changed something.
    pub fn observe(&self, backend: Backend, answer: Result<(), String>) {
        let was = self
            .up
            .lock()
            .expect("never poisoned")
            .insert(backend, answer.is_ok());
        let name = backend.as_str();
        match (transition(was, answer.is_ok()), answer) {
            (Some(Transition::FirstUp), _) => info!(backend = name, "{backend} answers"),
            (Some(Transition::Recovered), _) => {
                info!(
                    backend = name,
                    "{backend} answers again; retrying what waited on it"
                );
                let _ = self.recovered.send(backend);
            }
            (Some(Transition::Down), Err(why)) => {
                warn!(backend = name, "{backend} does not answer: {why}")
            }
            _ => {}
        }
    }

    /// Every probed backend and whether it answered its last probe.
    pub fn states(&self) -> Vec<(Backend, bool)> {
        let up = self.up.lock().expect("never poisoned");
        up.iter().map(|(b, u)| (*b, *u)).collect()
    }

    /// Backends as they answer again after they did not.
    pub fn recoveries(&self) -> broadcast::Receiver<Backend> {
        self.recovered.subscribe()
    }
}

/// Probes `backend` every [`PROBE_EVERY`] until the task ends, each answer
/// (within [`PROBE_TIMEOUT`]) recorded in `health`; what a probe returns is
/// handed to `then`.
pub async fn keep_probing<T, E, F, Fut>(
    health: Health,
    backend: Backend,
    mut probe: F,
    mut then: impl FnMut(T),
) where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(found)) => {
                health.observe(backend, Ok(()));
                then(found);
            }
            Ok(Err(e)) => health.observe(backend, Err(e.to_string())),
            Err(_) => health.observe(backend, Err(format!("no answer within {PROBE_TIMEOUT:?}"))),
        }
    }
}

/// Starts the probes of Keycloak, Pulsar, OpenBao and the ACME directories
/// of this instance's AcmeIssuers (the edge's runs with its batching task).
pub fn start(ctx: Arc<crate::context::Context>) {
    for backend in [Backend::Keycloak, Backend::Pulsar, Backend::OpenBao] {
        let ctx = ctx.clone();
        let health = ctx.health.clone();
        let probe = move || {
            let ctx = ctx.clone();
            async move {
                match backend {
                    Backend::Keycloak => ctx.keycloak.probe().await,
                    Backend::Pulsar => ctx.pulsar.probe().await,
                    _ => ctx.openbao.probe().await,
                }
            }
        };
        tokio::spawn(keep_probing(health, backend, probe, |()| {}));
    }
    let clients = Arc::new(Mutex::new(DirectoryClients::new()));
    let health = ctx.health.clone();
    let probe = move || {
        let (ctx, clients) = (ctx.clone(), clients.clone());
        async move { directories_answer(&ctx, &clients).await }
    };
    tokio::spawn(keep_probing(health, Backend::Acme, probe, |()| {}));
}

/// A client per directory and trust bundle, kept between probes.
type DirectoryClients = BTreeMap<(String, Option<String>), reqwest::Client>;

/// Whether the directory of every AcmeIssuer of this instance answers
/// (vacuously, without one).
async fn directories_answer(
    ctx: &crate::context::Context,
    clients: &Mutex<DirectoryClients>,
) -> Result<(), String> {
    let issuers = ctx.stores.of::<ossature_crds::AcmeIssuer>().state();
    for issuer in issuers {
        let key = (issuer.spec.directory.clone(), issuer.spec.ca_bundle.clone());
        let client = {
            let mut clients = clients.lock().expect("never poisoned");
            match clients.get(&key) {
                Some(client) => client.clone(),
                None => {
                    // An issuer whose bundle is unusable says so in its own
                    // status; the CA may still answer the others.
                    let Ok(client) = crate::adapters::acme::directory_client(key.1.as_deref())
                    else {
                        continue;
                    };
                    clients.insert(key.clone(), client.clone());
                    client
                }
            }
        };
        crate::adapters::http::answers(Backend::Acme, client.get(&key.0))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Reasons of a condition that failed because a backend did not answer
/// (or answered with a server error): retried when the backend is back.
const UNANSWERED: [&str; 2] = ["BackendUnreachable", "BackendFailing"];

/// Backends as condition messages name them ("Pulsar could not be reached").
const NAMED: [Backend; 5] = [
    Backend::Keycloak,
    Backend::Pulsar,
    Backend::OpenBao,
    Backend::Edge,
    Backend::Acme,
];

/// Whether an object with `conditions` waits on `backend`: it is not Ready,
/// and a condition failed because `backend` did not answer (its message
/// names it, or names no backend at all).
pub fn waits_on(conditions: &[Condition], backend: Backend) -> bool {
    let ready = conditions
        .iter()
        .any(|c| c.type_ == ossature_model::conditions::READY && c.status == "True");
    !ready
        && conditions.iter().any(|c| {
            c.status == "False"
                && UNANSWERED.contains(&c.reason.as_str())
                && (c.message.contains(&backend.to_string())
                    || !NAMED.iter().any(|b| c.message.contains(&b.to_string())))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    #[test]
    fn only_changes_are_transitions() {
        assert_eq!(transition(None, true), Some(Transition::FirstUp));
        assert_eq!(transition(None, false), Some(Transition::Down));
        assert_eq!(transition(Some(true), false), Some(Transition::Down));
        assert_eq!(transition(Some(false), true), Some(Transition::Recovered));
        assert_eq!(transition(Some(true), true), None);
        assert_eq!(transition(Some(false), false), None);
    }

    #[test]
    fn a_recovery_is_announced_once() {
        let health = Health::default();
        let mut recoveries = health.recoveries();
        health.observe(Backend::Pulsar, Ok(()));
        health.observe(Backend::Pulsar, Err("refused".into()));
        health.observe(Backend::Pulsar, Err("refused".into()));
        health.observe(Backend::Pulsar, Ok(()));
        health.observe(Backend::Pulsar, Ok(()));
        assert_eq!(recoveries.try_recv().unwrap(), Backend::Pulsar);
        assert!(recoveries.try_recv().is_err(), "steady: nothing more");
        assert_eq!(health.states(), vec![(Backend::Pulsar, true)]);
    }

    #[test]
    fn what_waits_on_a_backend() {
        let unreachable = condition(
            "MessagingReady",
            "False",
            "BackendUnreachable",
            "Pulsar could not be reached: error sending request",
        );
        let not_ready = condition("Ready", "False", "MessagingReady", "waiting for Pulsar");
        let waiting = [not_ready.clone(), unreachable.clone()];
        assert!(waits_on(&waiting, Backend::Pulsar));
        assert!(!waits_on(&waiting, Backend::Keycloak), "another backend");
        let unnamed = condition(
            "CertificateReady",
            "False",
            "BackendUnreachable",
            "timed out",
        );
        assert!(waits_on(&[unnamed], Backend::Acme));
        let ready = condition("Ready", "True", "Provisioned", "");
        assert!(!waits_on(&[ready, unreachable], Backend::Pulsar));
        let refused = condition(
            "MessagingReady",
            "False",
            "BackendRefused",
            "Pulsar refused",
        );
        assert!(!waits_on(&[not_ready, refused], Backend::Pulsar));
    }
}
