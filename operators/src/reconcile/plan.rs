//! What a kind decides for one object: a plan of steps. The plan only reads
//! and decides; every write is a step. A step sets one condition and may
//! report what it found (an id a backend handed back) for the status; a step
//! that needs another first names that step's condition.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use ossature_model::conditions::{self, Outcome};

use crate::adapters::{Change, Failure};

/// Sets status fields once the steps have run and the conditions are rolled
/// up (it may set a condition of its own); returns when to come back, if
/// sooner than the resync (a renewal the step scheduled).
pub type Found<S> = Box<dyn FnOnce(&mut S) -> Option<Duration> + Send>;

/// What one step did.
pub struct Report<S> {
    pub result: Result<Vec<Change>, Failure>,
    /// The step's condition as it leaves it, when that is more than "`what`
    /// is provisioned": a condition that waits for something else (an ACME
    /// order) without anything having failed.
    pub outcome: Option<Outcome>,
    /// Only a change can help now (a domain another tenant claimed first).
    pub stalled: Option<Outcome>,
    /// Status fields from what the step found.
    pub found: Option<Found<S>>,
}

impl<S> Report<S> {
    pub fn of(result: Result<Vec<Change>, Failure>) -> Self {
        Report {
            result,
            outcome: None,
            stalled: None,
            found: None,
        }
    }

    /// With status fields found by the step.
    pub fn found(
        mut self,
        found: impl FnOnce(&mut S) -> Option<Duration> + Send + 'static,
    ) -> Self {
        self.found = Some(Box::new(found));
        self
    }

    /// With the condition as the step leaves it.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// With only a change able to help (a definition the broker refuses).
    pub fn stalled(mut self, outcome: Outcome) -> Self {
        self.stalled = Some(outcome);
        self
    }

    /// Whether the step's condition is met.
    pub fn ok(&self) -> bool {
        match &self.outcome {
            Some(outcome) => self.result.is_ok() && outcome.ok,
            None => self.result.is_ok(),
        }
    }
}

/// What a step reports when a step it comes after did not succeed.
pub(crate) struct Waiting {
    pub after: Vec<&'static str>,
    pub reason: &'static str,
    pub message: String,
}

/// One backend's part of a reconcile: it sets one condition.
pub struct Step<'a, S> {
    pub condition: &'static str,
    /// What it provisions, for conditions and Events: "namespace tn-acme".
    pub what: String,
    pub(crate) waiting: Option<Waiting>,
    pub(crate) run: BoxFuture<'a, Report<S>>,
}

impl<'a, S: 'a> Step<'a, S> {
    /// A step whose only news is whether it succeeded.
    pub fn new<E: Into<Failure>>(
        condition: &'static str,
        what: impl Into<String>,
        run: impl Future<Output = Result<Vec<Change>, E>> + Send + 'a,
    ) -> Self {
        // Boxed apart: the wrapper would otherwise hold `run` twice over.
        let run = Box::pin(run);
        Self::reporting(condition, what, async move {
            Report::of(run.await.map_err(Into::into))
        })
    }

    /// A step that reports more: status fields, or a condition of its own.
    pub fn reporting(
        condition: &'static str,
        what: impl Into<String>,
        run: impl Future<Output = Report<S>> + Send + 'a,
    ) -> Self {
        Step {
            condition,
            what: what.into(),
            waiting: None,
            run: Box::pin(run),
        }
    }

    /// Runs once the steps (or known outcomes) setting `conditions` are met;
    /// when one is not, this step does not run and its condition says
    /// `reason` and `message`.
    pub fn after(
        mut self,
        conditions: &[&'static str],
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        self.waiting = Some(Waiting {
            after: conditions.to_vec(),
            reason,
            message: message.into(),
        });
        self
    }
}

/// What a kind decided for one object.
pub struct Plan<'a, S> {
    /// Steps; those that come after none run concurrently, the others as
    /// soon as what they come after is met.
    pub steps: Vec<Step<'a, S>>,
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
}

impl<'a, S> Plan<'a, S> {
    pub fn new(status: S) -> Self {
        Plan {
            steps: Vec::new(),
            outcomes: Vec::new(),
            stalled: None,
            status,
            due_in: None,
            expired: None,
        }
    }

    pub fn stalled(status: S, reason: &str, message: impl Into<String>) -> Self {
        Plan {
            stalled: Some(Outcome::failed(conditions::STALLED, reason, message)),
            ..Plan::new(status)
        }
    }

    /// Comes back no later than `after` as well.
    pub fn due_within(&mut self, after: Option<Duration>) {
        self.due_in = match (self.due_in, after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// A step of the plan.
    pub fn step(&mut self, step: Step<'a, S>) {
        self.steps.push(step);
    }

    /// An outcome known without calling a backend.
    pub fn outcome(&mut self, outcome: Outcome) {
        self.outcomes.push(outcome);
    }
}
