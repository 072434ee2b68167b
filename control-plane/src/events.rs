//! A tenant's progress pushed as server-sent events: a snapshot, then each
//! change of its conditions (and its scopes' and environments'), until it is
//! Ready, failed or gone.
//!
//! Every stream is served from the one shared watch: a single task follows
//! the watch's announcements and, for each tenant someone streams, turns
//! store changes into events kept in a short journal and broadcast to that
//! tenant's streams only. A stream that falls behind gets a fresh snapshot
//! instead of stalling anyone; a reconnect with `Last-Event-ID` gets what
//! it missed from the journal, or a snapshot when the journal no longer
//! holds it (another replica, a restart, a long absence).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::api::{ChildStatus, ConditionView, OutcomeState, TenantStatus};
use crate::queries;
use crate::watch::{Changed, Watches};

/// Events a tenant's journal keeps for reconnects.
const JOURNAL_EVENTS: usize = 256;
/// Events a stream may fall behind before it gets a snapshot instead.
const STREAM_BACKLOG: usize = 64;
/// How long a journal nobody streams is kept, for reconnects.
const KEEP_IDLE: Duration = Duration::from_secs(300);

/// One change, as a stream sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum StreamEvent {
    /// Everything at once: the first event, and after a gap.
    Snapshot { status: Box<TenantStatus> },
    /// A condition of the tenant, one of its scopes or environments is new
    /// or says something else.
    #[serde(rename_all = "camelCase")]
    Condition {
        kind: String,
        name: String,
        condition: ConditionView,
    },
    /// The tenant's own readiness, generation or deletion changed.
    #[serde(rename_all = "camelCase")]
    Progress {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ready: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        generation: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_generation: Option<i64>,
        deleting: bool,
    },
    /// A scope or environment (or the tenant itself) is gone.
    Removed { kind: String, name: String },
    /// The last event: the tenant is Ready, failed or gone.
    End { state: OutcomeState },
}

impl StreamEvent {
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Snapshot { .. } => "snapshot",
            StreamEvent::Condition { .. } => "condition",
            StreamEvent::Progress { .. } => "progress",
            StreamEvent::Removed { .. } => "removed",
            StreamEvent::End { .. } => "end",
        }
    }
}

/// An event with its place in the server's sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequenced {
    pub seq: u64,
    pub event: StreamEvent,
    /// The tenant's outcome right after this event, if decided.
    pub outcome: Option<OutcomeState>,
}

/// The tenant's outcome in a status: Ready at its generation with every
/// scope and environment Ready, or Stalled.
pub fn outcome_of(status: Option<&TenantStatus>) -> Option<OutcomeState> {
    let Some(status) = status else {
        return Some(OutcomeState::Deleted);
    };
    let children_ready = status
        .scopes
        .iter()
        .chain(&status.environments)
        .all(|c| c.ready == Some(true));
    if status.ready == Some(true) && children_ready && !status.deleting {
        return Some(OutcomeState::Ready);
    }
    let current = status.observed_generation == Some(status.generation);
    let stalled = status
        .conditions
        .iter()
        .any(|c| c.type_ == ossature_model::conditions::STALLED && c.status == "True");
    (current && stalled && !status.deleting).then_some(OutcomeState::Failed)
}

/// The events that lead from `old` to `new`, in a fixed order: the
/// tenant's own progress and conditions, then its scopes', then its
/// environments'.
pub fn changes(old: Option<&TenantStatus>, new: Option<&TenantStatus>) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let Some(new) = new else {
        if let Some(old) = old {
            events.push(StreamEvent::Removed {
                kind: "Tenant".into(),
                name: old.tenant.clone(),
            });
        }
        return events;
    };
    let progress = |s: &TenantStatus| {
        (
            s.ready,
            s.summary.clone(),
            s.generation,
            s.observed_generation,
            s.deleting,
        )
    };
    if old.map(progress) != Some(progress(new)) {
        events.push(StreamEvent::Progress {
            ready: new.ready,
            summary: new.summary.clone(),
            generation: new.generation,
            observed_generation: new.observed_generation,
            deleting: new.deleting,
        });
    }
    condition_changes(
        "Tenant",
        &new.tenant,
        old.map(|o| o.conditions.as_slice()).unwrap_or_default(),
        &new.conditions,
        &mut events,
    );
    let empty = Vec::new();
    for (kind, old_children, new_children) in [
        (
            "Scope",
            old.map(|o| &o.scopes).unwrap_or(&empty),
            &new.scopes,
        ),
        (
            "Environment",
            old.map(|o| &o.environments).unwrap_or(&empty),
            &new.environments,
        ),
    ] {
        let before: BTreeMap<&str, &ChildStatus> =
            old_children.iter().map(|c| (c.name.as_str(), c)).collect();
        for child in new_children {
            let had = before
                .get(child.name.as_str())
                .map(|c| c.conditions.as_slice())
                .unwrap_or_default();
            condition_changes(kind, &child.name, had, &child.conditions, &mut events);
        }
        for name in before.keys() {
            if !new_children.iter().any(|c| c.name == *name) {
                events.push(StreamEvent::Removed {
                    kind: kind.into(),
                    name: name.to_string(),
                });
            }
        }
    }
    events
}

fn condition_changes(
    kind: &str,
    name: &str,
    old: &[ConditionView],
    new: &[ConditionView],
    events: &mut Vec<StreamEvent>,
) {
    for condition in new {
        let same = old.iter().any(|c| {
            c.type_ == condition.type_
                && c.status == condition.status
                && c.reason == condition.reason
                && c.message == condition.message
        });
        if !same {
            events.push(StreamEvent::Condition {
                kind: kind.into(),
                name: name.into(),
                condition: condition.clone(),
            });
        }
    }
}

/// What one tenant's streams share.
struct Journal {
    /// The status the last events lead to; `None` once the tenant is gone.
    last: Option<TenantStatus>,
    events: VecDeque<Arc<Sequenced>>,
    /// Events after this sequence number are all in `events`.
    covered_from: u64,
    sender: broadcast::Sender<Arc<Sequenced>>,
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct Journals {
    /// The last sequence number given.
    seq: u64,
    by_tenant: HashMap<String, Journal>,
}

/// Where a new stream starts.
pub struct Start {
    /// What to send first: a snapshot, or the events a reconnect missed.
    pub first: Vec<Arc<Sequenced>>,
    pub receiver: broadcast::Receiver<Arc<Sequenced>>,
    /// The tenant's outcome now, if decided.
    pub outcome: Option<OutcomeState>,
}

/// The journals of every tenant being streamed, fed by the shared watch.
pub struct Streams {
    /// Tells this server's event ids from another's (or an earlier run's).
    boot: String,
    watches: Watches,
    journals: Mutex<Journals>,
}

impl Streams {
    /// The streams, and the task that follows the watch for them.
    pub fn start(watches: Watches) -> Arc<Streams> {
        let streams = Arc::new(Streams {
            boot: ulid::Ulid::generate().to_string(),
            watches,
            journals: Mutex::new(Journals::default()),
        });
        tokio::spawn(streams.clone().follow());
        streams
    }

    /// The event id of `seq`: this server's run, then the number.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.boot)
    }

    fn seq_of(&self, event_id: &str) -> Option<u64> {
        let (boot, seq) = event_id.split_once('.')?;
        (boot == self.boot).then(|| seq.parse().ok()).flatten()
    }

    fn status(&self, tenant: &str) -> Option<TenantStatus> {
        queries::tenant_status(&self.watches, tenant).ok()
    }

    /// Brings a journal up to the stores, journaling and broadcasting the
    /// events on the way.
    fn refresh(&self, journals: &mut Journals, tenant: &str) {
        let Some(journal) = journals.by_tenant.get_mut(tenant) else {
            return;
        };
        let now = self.status(tenant);
        let events = changes(journal.last.as_ref(), now.as_ref());
        if events.is_empty() {
            return;
        }
        let outcome = outcome_of(now.as_ref());
        let last = events.len() - 1;
        for (i, event) in events.into_iter().enumerate() {
            journals.seq += 1;
            let sequenced = Arc::new(Sequenced {
                seq: journals.seq,
                event,
                // Decided only once the whole change is told.
                outcome: if i == last { outcome } else { None },
            });
            if journal.events.len() == JOURNAL_EVENTS
                && let Some(evicted) = journal.events.pop_front()
            {
                journal.covered_from = evicted.seq;
            }
            journal.events.push_back(sequenced.clone());
            // Nobody listening is no error.
            let _ = journal.sender.send(sequenced);
        }
        journal.last = now;
    }

    /// Subscribes to `tenant`'s events, resuming after `last_event_id` when
    /// the journal still holds what came since.
    pub fn subscribe(&self, tenant: &str, last_event_id: Option<&str>) -> Start {
        let mut journals = self.journals.lock().unwrap();
        if !journals.by_tenant.contains_key(tenant) {
            let journal = Journal {
                last: self.status(tenant),
                events: VecDeque::new(),
                covered_from: journals.seq,
                sender: broadcast::channel(STREAM_BACKLOG).0,
                idle_since: None,
            };
            journals.by_tenant.insert(tenant.to_string(), journal);
        }
        // Anything the follower has not turned into events yet is, now:
        // the snapshot below and the events after it then never overlap.
        self.refresh(&mut journals, tenant);
        let seq = journals.seq;
        let journal = journals.by_tenant.get_mut(tenant).expect("inserted above");
        journal.idle_since = None;
        let receiver = journal.sender.subscribe();
        let resumed = last_event_id
            .and_then(|id| self.seq_of(id))
            .filter(|after| *after >= journal.covered_from && *after <= seq);
        let first = match resumed {
            Some(after) => journal
                .events
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect(),
            None => vec![Arc::new(snapshot(seq, journal.last.as_ref()))],
        };
        Start {
            first,
            receiver,
            outcome: outcome_of(journal.last.as_ref()),
        }
    }

    /// A snapshot at the current sequence number, for a stream that fell
    /// behind.
    pub fn snapshot(&self, tenant: &str) -> Arc<Sequenced> {
        let mut journals = self.journals.lock().unwrap();
        self.refresh(&mut journals, tenant);
        let last = journals.by_tenant.get(tenant).and_then(|j| j.last.clone());
        Arc::new(snapshot(journals.seq, last.as_ref()))
    }

    /// Journals kept, for tests and metrics.
    pub fn journaled(&self) -> usize {
        self.journals.lock().unwrap().by_tenant.len()
    }

    async fn follow(self: Arc<Self>) {
        let mut announcements = self.watches.announcements();
        let mut sweep = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                announced = announcements.recv() => {
                    let mut journals = self.journals.lock().unwrap();
                    match announced {
                        Ok(Changed::Tenant { tenant, .. }) => self.refresh(&mut journals, &tenant),
                        // A relist or missed announcements: any tenant may have changed.
                        Ok(Changed::Relisted { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            let tenants: Vec<String> = journals.by_tenant.keys().cloned().collect();
                            for tenant in tenants {
                                self.refresh(&mut journals, &tenant);
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
                _ = sweep.tick() => self.sweep(Instant::now()),
            }
        }
    }

    /// Forgets journals nobody has streamed for a while.
    fn sweep(&self, now: Instant) {
        let mut journals = self.journals.lock().unwrap();
        journals.by_tenant.retain(|_, journal| {
            if journal.sender.receiver_count() > 0 {
                journal.idle_since = None;
                return true;
            }
            let since = *journal.idle_since.get_or_insert(now);
            now.duration_since(since) < KEEP_IDLE
        });
    }
}

fn snapshot(seq: u64, status: Option<&TenantStatus>) -> Sequenced {
    let outcome = outcome_of(status);
    match status {
        Some(status) => Sequenced {
            seq,
            event: StreamEvent::Snapshot {
                status: Box::new(status.clone()),
            },
            outcome,
        },
        None => Sequenced {
            seq,
            event: StreamEvent::End {
                state: OutcomeState::Deleted,
            },
            outcome,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str, message: &str) -> ConditionView {
        ConditionView {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: message.into(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn status(ready: Option<bool>, generation: i64, observed: Option<i64>) -> TenantStatus {
        TenantStatus {
            tenant: "acme".into(),
            ready,
            summary: None,
            generation,
            observed_generation: observed,
            deleting: false,
            conditions: vec![condition("Ready", "False", "waiting for Keycloak")],
            scopes: vec![ChildStatus {
                name: "eu".into(),
                ready: Some(false),
                conditions: vec![condition("Ready", "False", "waiting")],
            }],
            environments: Vec::new(),
        }
    }

    #[test]
    fn only_what_changed_becomes_an_event() {
        let old = status(Some(false), 1, Some(1));
        assert!(changes(Some(&old), Some(&old)).is_empty());

        let mut new = old.clone();
        new.scopes[0].conditions[0] = condition("Ready", "True", "ready");
        new.environments.push(ChildStatus {
            name: "prod".into(),
            ready: None,
            conditions: vec![condition("Ready", "False", "creating")],
        });
        let events = changes(Some(&old), Some(&new));
        let names: Vec<(&str, String)> = events
            .iter()
            .map(|e| match e {
                StreamEvent::Condition { kind, name, .. } => (e.name(), format!("{kind}/{name}")),
                other => (other.name(), String::new()),
            })
            .collect();
        assert_eq!(
            names,
            [
                ("condition", "Scope/eu".to_string()),
                ("condition", "Environment/prod".to_string())
            ]
        );

        let mut gone = new.clone();
        gone.scopes.clear();
        assert_eq!(
            changes(Some(&new), Some(&gone)),
            [StreamEvent::Removed {
                kind: "Scope".into(),
                name: "eu".into()
            }]
        );
        assert_eq!(
            changes(Some(&new), None),
            [StreamEvent::Removed {
                kind: "Tenant".into(),
                name: "acme".into()
            }]
        );
    }

    #[test]
    fn a_new_generation_observed_is_progress_even_with_the_same_conditions() {
        let old = status(Some(false), 2, Some(1));
        let new = status(Some(true), 2, Some(2));
        assert_eq!(
            changes(Some(&old), Some(&new)),
            [StreamEvent::Progress {
                ready: Some(true),
                summary: None,
                generation: 2,
                observed_generation: Some(2),
                deleting: false
            }]
        );
    }

    #[test]
    fn the_outcome_is_ready_failed_or_gone() {
        let mut ready = status(Some(true), 1, Some(1));
        // Not before its scopes and environments are Ready too.
        assert_eq!(outcome_of(Some(&ready)), None);
        ready.scopes[0].ready = Some(true);
        assert_eq!(outcome_of(Some(&ready)), Some(OutcomeState::Ready));
        assert_eq!(outcome_of(Some(&status(Some(false), 1, Some(1)))), None);
        let mut stalled = status(Some(false), 2, Some(2));
        stalled
            .conditions
            .push(condition("Stalled", "True", "bad input"));
        assert_eq!(outcome_of(Some(&stalled)), Some(OutcomeState::Failed));
        // Stalled at an older generation is not the outcome of the new one.
        stalled.generation = 3;
        assert_eq!(outcome_of(Some(&stalled)), None);
        assert_eq!(outcome_of(None), Some(OutcomeState::Deleted));
    }

    #[tokio::test]
    async fn ids_resume_only_on_this_server_within_the_journal() {
        let streams = Streams::start(Watches::empty());
        let id = streams.event_id(7);
        assert_eq!(streams.seq_of(&id), Some(7));
        assert_eq!(streams.seq_of("01HZZZZZZZZZZZZZZZZZZZZZZZ.7"), None);
        assert_eq!(streams.seq_of("garbage"), None);
        // A tenant the stores do not hold: the stream says it is gone.
        let start = streams.subscribe("ghost", Some(&id));
        assert_eq!(start.first.len(), 1);
        assert_eq!(
            start.first[0].event,
            StreamEvent::End {
                state: OutcomeState::Deleted
            }
        );
        assert_eq!(streams.journaled(), 1);
        drop(start);
        streams.sweep(Instant::now());
        streams.sweep(Instant::now() + KEEP_IDLE);
        assert_eq!(streams.journaled(), 0);
    }
}
