//! Runs a plan's steps: those that come after nothing at once, each of the
//! others as soon as every condition it comes after is met (or, when one
//! is not, reports what it waits for without running).

use std::collections::HashMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ossature_model::conditions::Outcome;

use super::plan::{Report, Step};

/// How a step ended.
pub(crate) enum Ran<S> {
    Done(Report<S>),
    /// A condition it comes after was not met: its own outcome says so.
    Waited(Outcome),
}

/// One step's end, in plan order.
pub(crate) struct Ended<S> {
    pub condition: &'static str,
    pub what: String,
    pub ran: Ran<S>,
    /// How long it ran (zero for one that waited).
    pub took: std::time::Duration,
}

/// Whether each condition is met, as steps end.
struct Met {
    /// Known at plan time, or set by a step that ended.
    known: HashMap<&'static str, bool>,
    /// Steps still to end, by the condition they set.
    remaining: HashMap<&'static str, usize>,
}

impl Met {
    /// `Some(met)` once the condition is decided; `None` while a step that
    /// sets it has not ended. A condition nothing sets is not met.
    fn get(&self, condition: &str) -> Option<bool> {
        if self.remaining.get(condition).copied().unwrap_or(0) > 0 {
            return None;
        }
        Some(self.known.get(condition).copied().unwrap_or(false))
    }

    fn ended(&mut self, condition: &'static str, ok: bool) {
        if let Some(n) = self.remaining.get_mut(condition) {
            *n -= 1;
        }
        let met = self.known.entry(condition).or_insert(true);
        *met = *met && ok;
    }
}

pub(crate) async fn run<S>(steps: Vec<Step<'_, S>>, known: &[Outcome]) -> Vec<Ended<S>> {
    let mut met = Met {
        known: HashMap::new(),
        remaining: HashMap::new(),
    };
    for outcome in known {
        met.known.insert(outcome.condition, outcome.ok);
    }
    for step in &steps {
        // What a step sets, it decides: a known outcome of the same
        // condition does not count.
        met.known.remove(step.condition);
        *met.remaining.entry(step.condition).or_default() += 1;
    }
    let mut ended: Vec<Option<Ended<S>>> = steps.iter().map(|_| None).collect();
    let mut pending: Vec<Option<Step<'_, S>>> = steps.into_iter().map(Some).collect();
    let mut running = FuturesUnordered::new();
    loop {
        // Start (or settle) every pending step whose turn has come; a
        // settled one may decide the turn of another, so look again.
        let mut moved = true;
        while moved {
            moved = false;
            for (index, slot) in pending.iter_mut().enumerate() {
                let Some(step) = slot else { continue };
                let turn = match &step.waiting {
                    None => Some(true),
                    Some(waiting) => waiting
                        .after
                        .iter()
                        .map(|c| met.get(c))
                        .try_fold(true, |all, m| m.map(|m| all && m)),
                };
                let Some(go) = turn else { continue };
                let step = slot.take().expect("pending");
                moved = true;
                if go {
                    let (condition, what) = (step.condition, step.what);
                    let run = step.run;
                    running.push(async move {
                        let started = std::time::Instant::now();
                        let report = run.await;
                        (index, condition, what, report, started.elapsed())
                    });
                } else {
                    let waiting = step.waiting.expect("a step that waits");
                    met.ended(step.condition, false);
                    ended[index] = Some(Ended {
                        condition: step.condition,
                        what: step.what,
                        ran: Ran::Waited(Outcome::failed(
                            step.condition,
                            waiting.reason,
                            waiting.message,
                        )),
                        took: std::time::Duration::ZERO,
                    });
                }
            }
        }
        let Some((index, condition, what, report, took)) = running.next().await else {
            break;
        };
        met.ended(condition, report.ok());
        ended[index] = Some(Ended {
            condition,
            what,
            ran: Ran::Done(report),
            took,
        });
    }
    ended.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::{Change, Failure};
    use std::sync::{Arc, Mutex};

    fn log_step<'a>(
        log: &Arc<Mutex<Vec<&'static str>>>,
        condition: &'static str,
        ok: bool,
    ) -> Step<'a, ()> {
        let log = log.clone();
        Step::new(condition, condition, async move {
            tokio::task::yield_now().await;
            log.lock().unwrap().push(condition);
            if ok {
                Ok(vec![Change::Unchanged])
            } else {
                Err(Failure::new("BackendRefused", "no"))
            }
        })
    }

    #[tokio::test]
    async fn a_step_runs_after_what_it_needs_and_waits_when_that_failed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let steps = vec![
            log_step(&log, "Edge", true).after(&["Certificate"], "Waiting", "edge waits"),
            log_step(&log, "Certificate", true).after(
                &["Namespace", "Authority"],
                "Progressing",
                "being issued",
            ),
            log_step(&log, "Namespace", true),
            log_step(&log, "Authority", true),
            log_step(&log, "Realm", false),
            log_step(&log, "Group", true).after(&["Realm"], "WaitingForTenant", "no realm"),
        ];
        let ended = run(steps, &[]).await;
        let order = log.lock().unwrap().clone();
        let at = |c: &str| order.iter().position(|x| *x == c).unwrap();
        assert!(at("Certificate") > at("Namespace") && at("Certificate") > at("Authority"));
        assert!(at("Edge") > at("Certificate"));
        assert!(!order.contains(&"Group"), "never run: its realm failed");
        let conditions: Vec<&str> = ended.iter().map(|e| e.condition).collect();
        assert_eq!(
            conditions,
            [
                "Edge",
                "Certificate",
                "Namespace",
                "Authority",
                "Realm",
                "Group"
            ],
            "reported in plan order"
        );
        match &ended[5].ran {
            Ran::Waited(o) => assert_eq!((o.ok, o.reason.as_str()), (false, "WaitingForTenant")),
            Ran::Done(_) => panic!("the group step ran"),
        }
    }

    #[tokio::test]
    async fn known_outcomes_decide_a_turn_and_a_step_that_waited_decides_the_next() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let known = [
            Outcome::ready("Certificate", "issued"),
            Outcome::failed("Tenant", "WaitingForTenant", "not yet"),
        ];
        let steps = vec![
            log_step(&log, "Edge", true).after(&["Certificate"], "Waiting", "x"),
            log_step(&log, "Pulsar", true).after(&["Tenant"], "Waiting", "x"),
            log_step(&log, "Topic", true).after(&["Pulsar"], "Waiting", "x"),
            log_step(&log, "Nothing", true).after(&["Unknown"], "Waiting", "x"),
        ];
        let ended = run(steps, &known).await;
        assert_eq!(*log.lock().unwrap(), ["Edge"]);
        assert!(matches!(ended[0].ran, Ran::Done(_)));
        assert!(matches!(ended[2].ran, Ran::Waited(_)), "chain of waits");
        assert!(matches!(ended[3].ran, Ran::Waited(_)), "nothing sets it");
    }

    #[tokio::test]
    async fn a_step_met_only_by_its_own_outcome_is_not_met() {
        // A step that ran without failing but left its condition unmet
        // (an order still at the CA) holds back what comes after it.
        let steps: Vec<Step<'_, ()>> = vec![
            Step::reporting("Certificate", "certificate", async {
                Report::of(Ok(vec![])).outcome(Outcome::failed(
                    "Certificate",
                    "Progressing",
                    "being issued",
                ))
            }),
            Step::new("Edge", "edge", async { Ok::<_, Failure>(vec![]) }).after(
                &["Certificate"],
                "WaitingForCertificate",
                "waits",
            ),
        ];
        let ended = run(steps, &[]).await;
        assert!(matches!(&ended[1].ran, Ran::Waited(o) if o.reason == "WaitingForCertificate"));
    }
}
