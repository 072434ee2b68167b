//! Tenant hosts at the edge, batched: every edge write reloads the edge's
//! configuration (Caddy) or activates a version (Fastly), so reconciles do
//! not write one host each. They hand their host to one task, which gathers
//! what arrives within a short window into one `apply` (or `remove`) and
//! answers each with its own outcome. A cheap probe notices an edge that
//! lost our configuration (restarted) and asks for every tenant again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::adapters::edge::caddy::CaddyEdge;
use crate::adapters::edge::{Edge, EdgeError, HostChange, HostState, Probe};
use crate::adapters::{Backend, Failure};

/// How long a batch waits for more hosts after its first.
const GATHER: Duration = Duration::from_millis(25);
/// Most hosts in one batch.
const BATCH: usize = 500;

type Answer = oneshot::Sender<Result<HostChange, Failure>>;
/// A host and everyone waiting to hear how it went.
type Waiting = (String, Vec<Answer>);

enum Job {
    Apply(HostState, Answer),
    Remove(String, Answer),
}

/// Handle to the batching task; cheap to clone.
#[derive(Clone)]
pub struct Edges {
    jobs: mpsc::Sender<Job>,
    /// Bumped each time the edge is found without our configuration.
    lost: watch::Receiver<u64>,
}

impl Edges {
    /// Starts the batching task and the probe on `edge`, whose answers
    /// also go to `health`.
    pub fn start(edge: CaddyEdge, health: crate::health::Health) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * BATCH);
        let (lost_tx, lost) = watch::channel(0);
        let edge = Arc::new(edge);
        let applied = Arc::new(AtomicU64::new(0));
        tokio::spawn(batches(edge.clone(), receiver, applied.clone()));
        tokio::spawn(probe(edge, lost_tx, applied, health));
        Edges { jobs, lost }
    }

    /// Puts `host` on the edge as stated (with the hosts of other reconciles
    /// in the same batch).
    pub async fn apply(&self, host: HostState) -> Result<HostChange, Failure> {
        self.send(|answer| Job::Apply(host, answer)).await
    }

    /// Takes `host` off the edge.
    pub async fn remove(&self, host: String) -> Result<HostChange, Failure> {
        self.send(|answer| Job::Remove(host, answer)).await
    }

    async fn send(&self, job: impl FnOnce(Answer) -> Job) -> Result<HostChange, Failure> {
        let (answer, outcome) = oneshot::channel();
        let gone = || Failure::new("EdgeUnavailable", "the edge batching task has stopped");
        self.jobs.send(job(answer)).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    /// Changes each time the edge is found to have lost our configuration.
    pub fn losses(&self) -> watch::Receiver<u64> {
        self.lost.clone()
    }
}

/// The latest job of each host, in arrival order: two reconciles of one
/// tenant in a batch ask for one host twice, and the later one wins.
fn latest(jobs: Vec<Job>) -> (Vec<(HostState, Vec<Answer>)>, Vec<Waiting>) {
    let mut applies: BTreeMap<String, (usize, HostState, Vec<Answer>)> = BTreeMap::new();
    let mut removes: BTreeMap<String, (usize, Vec<Answer>)> = BTreeMap::new();
    for (order, job) in jobs.into_iter().enumerate() {
        match job {
            Job::Apply(state, answer) => {
                let mut answers = removes
                    .remove(&state.host)
                    .map(|(_, a)| a)
                    .unwrap_or_default();
                if let Some((_, _, earlier)) = applies.remove(&state.host) {
                    answers.extend(earlier);
                }
                answers.push(answer);
                applies.insert(state.host.clone(), (order, state, answers));
            }
            Job::Remove(host, answer) => {
                let mut answers = applies.remove(&host).map(|(_, _, a)| a).unwrap_or_default();
                if let Some((_, earlier)) = removes.remove(&host) {
                    answers.extend(earlier);
                }
                answers.push(answer);
                removes.insert(host, (order, answers));
            }
        }
    }
    let mut applies: Vec<_> = applies.into_values().collect();
    applies.sort_by_key(|(order, _, _)| *order);
    let mut removes: Vec<_> = removes.into_iter().collect();
    removes.sort_by_key(|(_, (order, _))| *order);
    (
        applies.into_iter().map(|(_, s, a)| (s, a)).collect(),
        removes.into_iter().map(|(h, (_, a))| (h, a)).collect(),
    )
}

fn answer_all(answers: Vec<(String, Vec<Answer>)>, outcome: Result<Vec<HostChange>, EdgeError>) {
    match outcome {
        Ok(changes) => {
            let by_host: BTreeMap<&str, &HostChange> =
                changes.iter().map(|c| (c.host.as_str(), c)).collect();
            for (host, senders) in answers {
                let result = by_host
                    .get(host.as_str())
                    .map(|c| (*c).clone())
                    .ok_or_else(|| {
                        Failure::new(
                            "EdgeFailing",
                            format!("the edge did not report host {host}"),
                        )
                    });
                for sender in senders {
                    let _ = sender.send(result.clone());
                }
            }
        }
        Err(e) => {
            let failure = Failure::from(&e);
            for sender in answers.into_iter().flat_map(|(_, s)| s) {
                let _ = sender.send(Err(failure.clone()));
            }
        }
    }
}

/// `applied` counts the applies that succeeded, bumped before their callers
/// hear of it.
async fn batches(edge: Arc<CaddyEdge>, mut receiver: mpsc::Receiver<Job>, applied: Arc<AtomicU64>) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER;
        while jobs.len() < BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                _ => break,
            }
        }
        let started = std::time::Instant::now();
        let size = jobs.len();
        let (applies, removes) = latest(jobs);
        if !removes.is_empty() {
            let hosts: Vec<String> = removes.iter().map(|(h, _)| h.clone()).collect();
            answer_all(removes, edge.remove(&hosts).await);
        }
        if !applies.is_empty() {
            let (states, answers): (Vec<HostState>, Vec<Vec<Answer>>) = applies.into_iter().unzip();
            let hosts = states.iter().map(|s| s.host.clone());
            let answers: Vec<Waiting> = hosts.zip(answers).collect();
            let outcome = edge.apply(&states).await;
            if outcome.is_ok() {
                applied.fetch_add(1, Ordering::Release);
            }
            answer_all(answers, outcome);
        }
        tracing::debug!(hosts = size, took = ?started.elapsed(), "edge batch");
    }
}

async fn probe(
    edge: Arc<CaddyEdge>,
    lost: watch::Sender<u64>,
    applied: Arc<AtomicU64>,
    health: crate::health::Health,
) {
    let mut was = None;
    // Applies counted at the last probe.
    let mut seen = 0;
    let probe = move || {
        let edge = edge.clone();
        // Applies done before this read left our configuration complete.
        let written = applied.load(Ordering::Acquire);
        async move { edge.probe().await.map(|now| (written, now)) }
    };
    let then = move |(written, now): (u64, Probe)| {
        // Only a loss counts (at start nothing was written yet): of what
        // the last probe saw, or of what we wrote since, which a probe may
        // not have seen before it went.
        let had = was == Some(Probe::Configured) || written != seen;
        if had && now == Probe::Missing {
            info!("the edge lost its configuration; putting every tenant host back");
            lost.send_modify(|n| *n += 1);
        }
        was = Some(now);
        seen = written;
    };
    crate::health::keep_probing(health, Backend::Edge, probe, then).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::edge::{EdgeCertificate, Upstream};

    fn state(host: &str, body: &str) -> HostState {
        HostState {
            host: host.into(),
            owner: "t".into(),
            certificate: EdgeCertificate::Managed,
            client_auth: None,
            allowed_ranges: Vec::new(),
            upstream: Upstream::Static { body: body.into() },
        }
    }

    #[test]
    fn a_batch_keeps_the_latest_wish_for_each_host_and_answers_every_caller() {
        let mut receivers = Vec::new();
        let mut job = |make: &dyn Fn(Answer) -> Job| {
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            make(tx)
        };
        let jobs = vec![
            job(&|a| Job::Apply(state("a.example.test", "1"), a)),
            job(&|a| Job::Apply(state("b.example.test", "1"), a)),
            job(&|a| Job::Apply(state("a.example.test", "2"), a)),
            job(&|a| Job::Remove("b.example.test".into(), a)),
            job(&|a| Job::Remove("c.example.test".into(), a)),
        ];
        let (applies, removes) = latest(jobs);
        assert_eq!(applies.len(), 1);
        assert_eq!(applies[0].0.upstream, Upstream::Static { body: "2".into() });
        assert_eq!(applies[0].1.len(), 2, "both callers of a are answered");
        let removed: Vec<&str> = removes.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(removed, ["b.example.test", "c.example.test"]);
        assert_eq!(
            removes[0].1.len(),
            2,
            "b's apply caller hears of its removal"
        );
    }
}
