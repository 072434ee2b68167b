//! The one shape every kind follows. A kind says what it reads and decides
//! (`plan`), its backend steps (each a pure build of the desired state plus
//! an adapter call), its cleanup and its status fields; this module does the
//! rest, once: the finalizer, running the steps (concurrently, each after
//! what it needs), the condition roll-up, writing status only when it
//! changed, Events, the requeue, and metrics of runs, durations and failures
//! by category.

mod kinds;
mod plan;
mod steps;

pub use kinds::{ApiScope, KindStatus, Kinds, Reconciled, StatusOf, WatchContext};
pub use plan::{Found, Plan, Report, Step};

pub use crate::adapters::Failure;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, finalizer};
use serde_json::json;
use tracing::{Instrument, info, warn};

use ossature_crds::Conditioned;
use ossature_model::conditions::{self, Outcome};
use ossature_model::names::FIELD_MANAGER;

use crate::adapters::{Backend, BackendError, Change, Verb};
use crate::context::Context;
use crate::kubernetes;
use crate::metrics::{ReconcileResult, Work};
use kube::runtime::reflector::ObjectRef;
use steps::Ran;

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
    /// Cleanup waits for what it asked for to finish (a namespace
    /// terminating): no fault, looked at again shortly.
    #[error("{0}")]
    Waiting(String),
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
            Error::Waiting(_) => "Waiting",
        }
    }
}

fn key<K: Reconciled>(object: &K) -> String {
    key_of::<K>(object.namespace().as_deref(), &object.name_any())
}

/// The key of an object of `K` (its backoff's, its work's).
fn key_of<K: Reconciled>(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{}/{ns}/{name}", K::CONTROLLER),
        None => format!("{}/{name}", K::CONTROLLER),
    }
}

/// `triggers`, each counted due now (see [`crate::metrics::Work`]).
fn counted_due<K: Reconciled>(
    triggers: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    work: Work,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    triggers.inspect(move |object| {
        let key = key_of::<K>(object.namespace.as_deref(), &object.name);
        work.due(K::CONTROLLER, key, Instant::now());
    })
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
    ctx.stores.ready().await;
    let key = key(&*object);
    // A follower keeps its caches only; it reconciles every object once it
    // leads (see `Kinds`).
    if !object.selected(&ctx) || !ctx.leadership.leading() {
        ctx.metrics.work().forget(K::CONTROLLER, &key);
        return Ok(Action::await_change());
    }
    let _running = ctx.metrics.work().start(K::CONTROLLER, &key);
    let started = Instant::now();
    let api = K::api(ctx.client.clone(), &object);
    // Its lines carry the control plane invocation that last wrote it.
    let invocation = ossature_records::invocation_span(object.annotations());
    // Set by a run whose steps did not all reach their desired state.
    let retrying = AtomicBool::new(false);
    let work = finalizer(&api, K::FINALIZER, object, |event| async {
        match event {
            finalizer::Event::Apply(o) => apply(&*o, &ctx, &retrying).await,
            finalizer::Event::Cleanup(o) => cleanup(&*o, &ctx).await,
        }
    })
    .instrument(invocation);
    // Leadership lost (or a shutdown): stop at once, mid-way if need be;
    // every step is idempotent, and the next leader does it again.
    let result = tokio::select! {
        result = work => result,
        _ = ctx.leadership.lost() => return Ok(Action::await_change()),
    }
    .or_else(|e| match e {
        // A cleanup run again from a stale store entry, after the object was
        // removed: done already.
        finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    });
    let outcome = match &result {
        Ok(_) if retrying.load(Ordering::Relaxed) => ReconcileResult::RequeueAfter,
        Ok(_) => ReconcileResult::Success,
        Err(Error::Waiting(_)) => ReconcileResult::Requeue,
        Err(_) => ReconcileResult::Error,
    };
    ctx.metrics
        .reconciled(K::CONTROLLER, outcome, started.elapsed());
    result
}

/// Asks for `object` again `after` (and counts it due then).
fn again(ctx: &Context, controller: &'static str, key: &str, after: Duration) -> Action {
    ctx.metrics.work().again(controller, key.to_string(), after);
    Action::requeue(after)
}

fn error_policy<K: Reconciled>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let _invocation = ossature_records::invocation_span(object.annotations()).entered();
    let key = key(&*object);
    if let Error::Waiting(why) = error {
        tracing::debug!(controller = K::CONTROLLER, object = %object.name_any(), "{why}");
        return again(&ctx, K::CONTROLLER, &key, WAITING);
    }
    warn!(
        controller = K::CONTROLLER,
        object = %object.name_any(),
        category = error.category(),
        "reconcile failed: {error}"
    );
    again(&ctx, K::CONTROLLER, &key, ctx.backoff(&key))
}

/// Between two looks at something a cleanup waits for (its watch usually
/// brings the object back sooner).
const WAITING: Duration = Duration::from_secs(2);

async fn apply<K: Reconciled>(
    object: &K,
    ctx: &Context,
    retrying: &AtomicBool,
) -> Result<Action, Error> {
    let generation = object.meta().generation;
    let previous: StatusOf<K> = object.status().cloned().unwrap_or_default();
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

    let mut events = Vec::new();
    let mut outcomes = plan.outcomes;
    let mut stalled = plan.stalled;
    let mut found = Vec::new();
    for ended in steps::run(plan.steps, &outcomes).await {
        let report = match ended.ran {
            Ran::Waited(outcome) => {
                outcomes.push(outcome);
                continue;
            }
            Ran::Done(report) => report,
        };
        ctx.metrics.step(K::CONTROLLER, ended.condition, ended.took);
        if let Err(failure) = &report.result {
            ctx.metrics
                .step_failure(K::CONTROLLER, ended.condition, failure.category);
        }
        found.extend(report.found);
        stalled = stalled.or(report.stalled);
        let outcome = outcome_of(
            ctx,
            K::CONTROLLER,
            (ended.condition, &ended.what),
            report.result,
            settled,
            &mut events,
        );
        outcomes.push(match (report.outcome, outcome.ok) {
            // A step that did not fail may still leave its condition unmet.
            (Some(own), true) => own,
            _ => outcome,
        });
    }

    let mut status = plan.status;
    status.set_conditions(
        generation,
        conditions::roll_up(
            previous.conditions(),
            &outcomes,
            stalled.as_ref(),
            generation,
        ),
    );
    let mut due_in = plan.due_in;
    for found in found {
        if let Some(due) = found(&mut status) {
            due_in = Some(due_in.map_or(due, |d| d.min(due)));
        }
    }
    if changed(&previous, &status) {
        tracing::debug!(controller = K::CONTROLLER, object = %object.name_any(), "status changed");
        ctx.calls.record(Backend::Kubernetes, Verb::Write);
        K::api(ctx.client.clone(), object)
            .patch_status(
                &object.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
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

    let next = |after: Duration| {
        let after = due_in.map_or(after, |due| due.min(after));
        again(ctx, K::CONTROLLER, &key, after)
    };
    if stalled.is_some() {
        // Only a change helps, and the watches bring it.
        ctx.reset_backoff(&key);
        Ok(next(ctx.settings.resync))
    } else if outcomes.iter().any(|o| !o.ok) {
        retrying.store(true, Ordering::Relaxed);
        Ok(next(ctx.backoff(&key)))
    } else {
        ctx.reset_backoff(&key);
        Ok(next(ctx.settings.resync))
    }
}

/// The outcome of one backend step, and the Events that report it: a
/// failure, a first provisioning, or drift put back on an object that was
/// already Ready for its generation.
fn outcome_of(
    ctx: &Context,
    controller: &'static str,
    (condition, what): (&'static str, &str),
    result: Result<Vec<Change>, Failure>,
    settled: bool,
    events: &mut Vec<Event>,
) -> Outcome {
    match result {
        Ok(changes) if changes.iter().any(|c| c.wrote()) => {
            if settled {
                ctx.metrics.drift(controller, condition);
                events.push(event(
                    EventType::Warning,
                    "DriftCorrected",
                    "Reconcile",
                    format!("{what} had drifted from the desired state and was put back"),
                ));
            } else {
                events.push(event(
                    EventType::Normal,
                    "Provisioned",
                    "Reconcile",
                    format!("{what} created or updated"),
                ));
            }
            Outcome::ready(condition, format!("{what} is provisioned"))
        }
        Ok(_) => Outcome::ready(condition, format!("{what} is provisioned")),
        Err(failure) => {
            events.push(event(
                EventType::Warning,
                failure.category,
                "Reconcile",
                failure.message.clone(),
            ));
            Outcome::failed(condition, failure.category, failure.message)
        }
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
fn changed<S: KindStatus>(previous: &S, new: &S) -> bool {
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

/// Changes of a kind's own objects, each counted due now.
fn changes_due<K: Reconciled>(
    changes: impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
    work: Work,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static {
    own_changes(changes).inspect(move |change| {
        if let Ok(object) = change {
            work.due(K::CONTROLLER, key(object), Instant::now());
        }
    })
}

/// The watch of a kind's own objects, limited to `selector` when given.
pub fn controller<K: Reconciled>(
    client: &kube::Client,
    selector: Option<&str>,
    work: Work,
) -> Controller<K> {
    // `for_stream` (unstable-runtime) is how a predicate filter reaches a Controller.
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let changes = watcher(Api::<K>::all(client.clone()), watch_config(selector))
        .default_backoff()
        .modify(slim::<K>)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(changes_due(changes, work), reader)
}

/// What no controller reads of an object, left out of the stores (their
/// memory grows with every object): its managed fields (unless the kind's
/// store is compared with desired objects) and kubectl's copy of the last
/// applied object.
fn slim<K: Reconciled>(object: &mut K) {
    let meta = object.meta_mut();
    if !K::KEEPS_MANAGED_FIELDS {
        meta.managed_fields = None;
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Room for Tenant changes not yet taken by every kind that follows them.
const SHARED_BUFFER: usize = 1024;

/// Like [`controller`], for a kind other kinds follow: its one watch also
/// feeds their triggers through the returned handle, so a change is sent by
/// the apiserver once, not once per kind.
pub fn shared_controller<K: Reconciled>(
    client: &kube::Client,
    selector: Option<&str>,
    work: Work,
) -> (Controller<K>, kube::runtime::reflector::ReflectHandle<K>) {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
    let followers = writer
        .subscribe()
        .expect("a shared store hands out subscriptions");
    let changes = watcher(Api::<K>::all(client.clone()), watch_config(selector))
        .default_backoff()
        .modify(slim::<K>)
        .reflect_shared(writer)
        .applied_objects();
    (
        Controller::for_stream(changes_due(changes, work), reader),
        followers,
    )
}

/// Runs a kind, its related watches added, until a shutdown signal.
pub async fn run<K: Reconciled>(controller: Controller<K>, ctx: Arc<Context>, concurrency: u16) {
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(ctx.leadership.stopping())
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
