//! The one shape every kind follows. A kind says what it reads and decides
//! (`plan`), its backend steps (each a pure build of the desired state plus
//! an adapter call), its cleanup and its status fields; this module does the
//! rest, once: the finalizer, running the steps concurrently, the condition
//! roll-up, writing status only when it changed, Events, the requeue, and
//! metrics of runs, durations and failures by category.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use crate::adapters::{Backend, BackendError, Change, Verb};
use crate::conditions::{self, Outcome};
use crate::context::Context;
use crate::kubernetes;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("finalizer: {0}")]
    Finalizer(Box<finalizer::Error<Error>>),
    /// Cleanup waits for something else to go first.
    #[error("{0}")]
    Blocked(String),
}

impl Error {
    /// Low-cardinality label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Backend(e) => e.category(),
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => "Finalizer",
            },
            Error::Blocked(_) => "CleanupBlocked",
        }
    }
}

/// Why a step failed, in the words of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub category: &'static str,
    pub message: String,
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure {
            category: e.category(),
            message: e.to_string(),
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Failure {
            category: "KubernetesApi",
            message: e.to_string(),
        }
    }
}

/// One backend's part of a reconcile: it sets one condition.
pub struct Step<'a> {
    pub condition: &'static str,
    /// What it provisions, for conditions and Events: "namespace tn-acme".
    pub what: String,
    pub run: BoxFuture<'a, Result<Vec<Change>, Failure>>,
}

impl<'a> Step<'a> {
    pub fn new<E: Into<Failure>>(
        condition: &'static str,
        what: impl Into<String>,
        run: impl Future<Output = Result<Vec<Change>, E>> + Send + 'a,
    ) -> Self {
        Step {
            condition,
            what: what.into(),
            run: Box::pin(async move { run.await.map_err(Into::into) }),
        }
    }
}

/// Sets status fields once the steps have run and the conditions are rolled
/// up (it may add a condition of its own); returns when to come back, if
/// sooner than the resync (a renewal the steps scheduled).
pub type Found<'a, S> = Box<dyn FnOnce(&mut S) -> Option<Duration> + Send + 'a>;

/// What a kind decided for one object.
pub struct Plan<'a, S> {
    /// Steps that do not depend on each other; they run concurrently.
    pub steps: Vec<Step<'a>>,
    /// Outcomes known without calling a backend (a condition that cannot be met).
    pub outcomes: Vec<Outcome>,
    /// Set when only a change to the object (or a related one) can help.
    pub stalled: Option<Outcome>,
    /// The kind's own status fields; conditions and generation are filled in here.
    pub status: S,
    /// Reconcile again no later than this (a ttl running out).
    pub due_in: Option<Duration>,
    /// The object's time is up: delete it (its finalizer then cleans up).
    pub expired: Option<String>,
    /// Fills status fields from what the steps found (an id a backend gave).
    pub found: Option<Found<'a, S>>,
}

impl<S> Plan<'_, S> {
    pub fn new(status: S) -> Self {
        Plan {
            steps: Vec::new(),
            outcomes: Vec::new(),
            stalled: None,
            status,
            due_in: None,
            expired: None,
            found: None,
        }
    }

    pub fn stalled(status: S, reason: &str, message: impl Into<String>) -> Self {
        Plan {
            stalled: Some(Outcome::failed(conditions::STALLED, reason, message)),
            ..Plan::new(status)
        }
    }
}

/// Status of a kind: conditions and observed generation, plus its own fields.
pub trait ObjectStatus: Serialize + Clone + Default + PartialEq + Send + Sync {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, generation: Option<i64>, conditions: Vec<Condition>);
}

/// Implements [`ObjectStatus`] for a status struct with `conditions` and
/// `observed_generation` fields.
#[macro_export]
macro_rules! object_status {
    ($status:ty) => {
        impl $crate::reconcile::ObjectStatus for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn set_conditions(
                &mut self,
                generation: Option<i64>,
                conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
            ) {
                self.observed_generation = generation;
                self.conditions = conditions;
            }
        }
    };
}

/// What a kind supplies.
pub trait Reconciled:
    Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Label of metrics and logs, e.g. "tenant".
    const CONTROLLER: &'static str;
    const FINALIZER: &'static str;
    type Status: ObjectStatus;

    fn status(&self) -> Option<&Self::Status>;

    fn api(client: kube::Client, object: &Self) -> Api<Self>;

    /// Whether this operator instance manages the object (see `--selector`).
    fn selected(&self, _ctx: &Context) -> bool {
        true
    }

    /// Reads what the object depends on and decides its steps.
    fn plan<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Plan<'a, Self::Status>, Error>> + Send + 'a;

    /// Removes what was provisioned (or keeps it, on Retain) and returns the
    /// Events that say so; `Error::Blocked` while something must go first.
    fn cleanup<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Vec<Event>, Error>> + Send + 'a;

    /// Related watches that requeue this kind (parents, owned objects).
    fn watches(controller: Controller<Self>, ctx: &WatchContext) -> Controller<Self>;
}

/// What `watches` may use: the client, the stores of every kind, and the
/// Tenants' changes, from the one Tenant watch every kind shares.
pub struct WatchContext {
    pub client: kube::Client,
    pub stores: crate::context::Stores,
    pub tenants: kube::runtime::reflector::ReflectHandle<ossature_crds::Tenant>,
    pub certificates: kube::runtime::reflector::ReflectHandle<ossature_crds::Certificate>,
    /// Changes when the edge lost our configuration (see [`crate::edge`]).
    pub edge_losses: Option<tokio::sync::watch::Receiver<u64>>,
}

fn key<K: Reconciled>(object: &K) -> String {
    match object.namespace() {
        Some(ns) => format!("{}/{ns}/{}", K::CONTROLLER, object.name_any()),
        None => format!("{}/{}", K::CONTROLLER, object.name_any()),
    }
}

pub fn event(type_: EventType, reason: &str, action: &str, note: impl Into<String>) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    }
}

async fn reconcile<K: Reconciled>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !object.selected(&ctx) {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let api = K::api(ctx.client.clone(), &object);
    let result = finalizer(&api, K::FINALIZER, object, |event| async {
        match event {
            finalizer::Event::Apply(o) => apply(&*o, &ctx).await,
            finalizer::Event::Cleanup(o) => cleanup(&*o, &ctx).await,
        }
    })
    .await
    .or_else(|e| match e {
        // A cleanup run again from a stale store entry, after the object was
        // removed: done already.
        finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    });
    ctx.metrics
        .run(K::CONTROLLER, result.is_ok(), started.elapsed());
    result
}

fn error_policy<K: Reconciled>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(
        controller = K::CONTROLLER,
        object = %object.name_any(),
        category = error.category(),
        "reconcile failed: {error}"
    );
    ctx.metrics.failure(K::CONTROLLER, error.category());
    Action::requeue(ctx.backoff(&key(&*object)))
}

async fn apply<K: Reconciled>(object: &K, ctx: &Context) -> Result<Action, Error> {
    let generation = object.meta().generation;
    let previous = object.status().cloned().unwrap_or_default();
    let settled = conditions::settled(previous.conditions(), generation);
    let plan = object.plan(ctx).await?;
    let key = key(object);

    if let Some(why) = plan.expired {
        info!(controller = K::CONTROLLER, object = %object.name_any(), "{why}");
        ctx.publish(
            object.object_ref(&()),
            vec![event(EventType::Normal, "Expired", "Delete", why)],
        )
        .await;
        kubernetes::delete(
            &K::api(ctx.client.clone(), object),
            &object.name_any(),
            &ctx.calls,
        )
        .await?;
        return Ok(Action::await_change());
    }

    // Steps of one object do not depend on each other: run them together.
    let mut events = Vec::new();
    let mut outcomes = plan.outcomes;
    let (meta, runs): (Vec<_>, Vec<_>) = plan
        .steps
        .into_iter()
        .map(|s| ((s.condition, s.what), s.run))
        .unzip();
    let results = futures::future::join_all(runs).await;
    for ((condition, what), result) in meta.into_iter().zip(results) {
        if let Err(failure) = &result {
            ctx.metrics
                .step_failure(K::CONTROLLER, condition, failure.category);
        }
        outcomes.push(ctx.step(
            K::CONTROLLER,
            condition,
            &what,
            result,
            settled,
            &mut events,
        ));
    }

    let mut status = plan.status;
    status.set_conditions(
        generation,
        conditions::roll_up(
            previous.conditions(),
            &outcomes,
            plan.stalled.as_ref(),
            generation,
        ),
    );
    let due_in = match plan.found {
        Some(found) => found(&mut status).or(plan.due_in),
        None => plan.due_in,
    };
    if changed(&previous, &status) {
        ctx.calls.record(Backend::Kubernetes, Verb::Write);
        K::api(ctx.client.clone(), object)
            .patch_status(
                &object.name_any(),
                &PatchParams::apply(kubernetes::FIELD_MANAGER).force(),
                &Patch::Apply(json!({
                    "apiVersion": K::api_version(&()),
                    "kind": K::kind(&()),
                    "status": status,
                })),
            )
            .await?;
    }
    ctx.publish(object.object_ref(&()), merge_provisioned(events))
        .await;

    let next = |after: Duration| due_in.map_or(after, |due| due.min(after));
    if plan.stalled.is_some() {
        // Only a change helps, and the watches bring it.
        ctx.reset_backoff(&key);
        Ok(Action::requeue(next(ctx.settings.resync)))
    } else if outcomes.iter().any(|o| !o.ok) {
        Ok(Action::requeue(next(ctx.backoff(&key))))
    } else {
        ctx.reset_backoff(&key);
        Ok(Action::requeue(next(ctx.settings.resync)))
    }
}

/// What the steps of one reconcile provisioned, as one Event: an Event is
/// a write, and a new tenant would otherwise cost one per backend.
fn merge_provisioned(events: Vec<Event>) -> Vec<Event> {
    let (provisioned, mut rest): (Vec<Event>, Vec<Event>) = events
        .into_iter()
        .partition(|e| e.reason == "Provisioned" && e.type_ == EventType::Normal);
    if !provisioned.is_empty() {
        let notes: Vec<String> = provisioned.into_iter().filter_map(|e| e.note).collect();
        rest.insert(
            0,
            event(
                EventType::Normal,
                "Provisioned",
                "Reconcile",
                notes.join("; "),
            ),
        );
    }
    rest
}

/// Whether a status write is needed: transition times alone do not count.
fn changed<S: ObjectStatus>(previous: &S, new: &S) -> bool {
    let strip = |s: &S| {
        let mut s = s.clone();
        s.set_conditions(None, Vec::new());
        s
    };
    !conditions::same(previous.conditions(), new.conditions()) || strip(previous) != strip(new)
}

async fn cleanup<K: Reconciled>(object: &K, ctx: &Context) -> Result<Action, Error> {
    let events = object.cleanup(ctx).await?;
    ctx.publish(object.object_ref(&()), events).await;
    ctx.reset_backoff(&key(object));
    Ok(Action::await_change())
}

fn watch_config(selector: Option<&str>) -> kube::runtime::watcher::Config {
    let config = kube::runtime::watcher::Config::default().any_semantic();
    match selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

/// Only spec (generation) and finalizer changes trigger a reconcile of the
/// object itself: the operator's own status writes do not come back as work.
fn own_changes<K: Reconciled>(
    changes: impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static {
    use kube::runtime::{Predicate, WatchStreamExt, predicates};
    changes.predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        Default::default(),
    )
}

/// The watch of a kind's own objects, limited to `selector` when given.
pub fn controller<K: Reconciled>(client: &kube::Client, selector: Option<&str>) -> Controller<K> {
    // `for_stream` (unstable-runtime) is how a predicate filter reaches a Controller.
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let changes = watcher(Api::<K>::all(client.clone()), watch_config(selector))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(own_changes(changes), reader)
}

/// Room for Tenant changes not yet taken by every kind that follows them.
const SHARED_BUFFER: usize = 1024;

/// Like [`controller`], for a kind other kinds follow: its one watch also
/// feeds their triggers through the returned handle, so a change is sent by
/// the apiserver once, not once per kind.
pub fn shared_controller<K: Reconciled>(
    client: &kube::Client,
    selector: Option<&str>,
) -> (Controller<K>, kube::runtime::reflector::ReflectHandle<K>) {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
    let followers = writer
        .subscribe()
        .expect("a shared store hands out subscriptions");
    let changes = watcher(Api::<K>::all(client.clone()), watch_config(selector))
        .default_backoff()
        .reflect_shared(writer)
        .applied_objects();
    (
        Controller::for_stream(own_changes(changes), reader),
        followers,
    )
}

/// Runs a kind, its related watches added, until a shutdown signal.
pub async fn run<K: Reconciled>(controller: Controller<K>, ctx: Arc<Context>, concurrency: u16) {
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller = K::CONTROLLER, "reconcile: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_reconcile_provisioned_is_one_event() {
        let events = vec![
            event(
                EventType::Normal,
                "Provisioned",
                "Reconcile",
                "namespace tn-a created or updated",
            ),
            event(
                EventType::Warning,
                "BackendUnreachable",
                "Reconcile",
                "Pulsar could not be reached",
            ),
            event(
                EventType::Normal,
                "Provisioned",
                "Reconcile",
                "realm a created or updated",
            ),
        ];
        let merged = merge_provisioned(events);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].reason, "Provisioned");
        assert_eq!(
            merged[0].note.as_deref(),
            Some("namespace tn-a created or updated; realm a created or updated")
        );
        assert_eq!(merged[1].reason, "BackendUnreachable");
        assert!(merge_provisioned(Vec::new()).is_empty());
    }
}
