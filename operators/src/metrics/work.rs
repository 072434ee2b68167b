//! The work of each controller as a queue would show it. kube-runtime keeps
//! its queue to itself, so the operator keeps its own account: an object
//! is due when a change of it was seen, when something in the process
//! brought it back (a nudge, a takeover, a backend answering again), or
//! when the retry or resync its last reconcile asked for has come; it
//! stops being due when its reconcile starts. Changes of related objects
//! (a tenant's, an owned object's) that requeue it are not seen here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    name: &'static str,
}

#[derive(Debug, Default)]
struct Books {
    /// Every controller, so that an idle one shows 0.
    controllers: BTreeSet<&'static str>,
    /// When each object's next reconcile is due, by controller and object.
    due: HashMap<(&'static str, String), Instant>,
    /// Reconciles running, by a number of their own: controller, start.
    running: HashMap<u64, (&'static str, Instant)>,
}

/// Cheap to clone; every clone keeps the same books.
#[derive(Debug, Clone, Default)]
pub struct Work {
    books: Arc<Mutex<Books>>,
    next: Arc<AtomicU64>,
}

/// A reconcile running; it ends when this is dropped.
pub struct Running {
    books: Arc<Mutex<Books>>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.books
            .lock()
            .expect("never poisoned")
            .running
            .remove(&self.id);
    }
}

impl Work {
    /// Counts `controller` from now on, at 0 while it has nothing to do.
    pub fn controller(&self, controller: &'static str) {
        self.lock().controllers.insert(controller);
    }

    /// Every controller counted.
    pub fn controllers(&self) -> Vec<&'static str> {
        self.lock().controllers.iter().copied().collect()
    }

    /// `object` of `controller` is due at `at`, or sooner if it already was.
    pub fn due(&self, controller: &'static str, object: String, at: Instant) {
        let mut books = self.lock();
        let when = books.due.entry((controller, object)).or_insert(at);
        *when = (*when).min(at);
    }

    /// `object` of `controller` asked to be looked at again `after` this
    /// reconcile; it was no longer due since its reconcile started.
    pub fn again(&self, controller: &'static str, object: String, after: Duration) {
        self.due(controller, object, Instant::now() + after);
    }

    /// A reconcile of `object` starts: it is no longer due.
    pub fn start(&self, controller: &'static str, object: &str) -> Running {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut books = self.lock();
        books.due.remove(&(controller, object.to_string()));
        books.running.insert(id, (controller, Instant::now()));
        Running {
            books: self.books.clone(),
            id,
        }
    }

    /// `object` is gone (deleted, or no longer this instance's).
    pub fn forget(&self, controller: &'static str, object: &str) {
        self.lock().due.remove(&(controller, object.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().expect("never poisoned")
    }

    /// By controller: objects due at `now`, and the age of the oldest
    /// reconcile running.
    fn at(&self, now: Instant) -> BTreeMap<&'static str, (i64, f64)> {
        let books = self.lock();
        let mut found: BTreeMap<&'static str, (i64, f64)> =
            books.controllers.iter().map(|c| (*c, (0, 0.0))).collect();
        for ((controller, _), at) in &books.due {
            if *at <= now {
                found.entry(controller).or_default().0 += 1;
            }
        }
        for (controller, started) in books.running.values() {
            let age = now.saturating_duration_since(*started).as_secs_f64();
            let longest = &mut found.entry(controller).or_default().1;
            *longest = longest.max(age);
        }
        found
    }
}

impl Collector for Work {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let depth = Family::<QueueLabels, Gauge>::default();
        let longest = Family::<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for (name, (due, age)) in self.at(Instant::now()) {
            depth.get_or_create(&QueueLabels { name }).set(due);
            longest.get_or_create(&QueueLabels { name }).set(age);
        }
        depth.encode(encoder.encode_descriptor(
            "workqueue_depth",
            "Objects of this controller waiting for a reconcile: a change of the object \
             seen, brought back by the operator itself (a nudge, a takeover, a backend \
             answering again), or its retry or resync time come; not yet started. \
             Requeues caused by related objects are not counted",
            None,
            depth.metric_type(),
        )?)?;
        longest.encode(encoder.encode_descriptor(
            "workqueue_longest_running_processor_seconds",
            "How long the oldest reconcile of this controller still running has run, \
             at scrape time; 0 when none runs",
            None,
            longest.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_objects_and_the_oldest_running_reconcile() {
        let work = Work::default();
        work.controller("tenant");
        work.controller("scope");
        let now = Instant::now();
        work.due("tenant", "a".into(), now);
        work.due("tenant", "b".into(), now + Duration::from_secs(60));
        // An earlier wish wins over a later one.
        work.due("tenant", "b".into(), now);
        work.due("tenant", "c".into(), now + Duration::from_secs(60));
        let running = work.start("tenant", "a");
        let at = work.at(now + Duration::from_secs(2));
        assert_eq!(at["tenant"].0, 1, "b is due; a runs; c is not due yet");
        assert!(at["tenant"].1 > 1.9, "a runs for about 2 s");
        assert_eq!(at["scope"], (0, 0.0), "an idle controller shows 0");
        drop(running);
        work.forget("tenant", "b");
        assert_eq!(work.at(now + Duration::from_secs(2))["tenant"], (0, 0.0));
        assert_eq!(work.at(now + Duration::from_secs(61))["tenant"].0, 1);
    }

    #[test]
    fn rendered_with_workqueue_names() {
        let work = Work::default();
        work.controller("tenant");
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(work.clone()));
        work.due("tenant", "a".into(), Instant::now());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"workqueue_depth{name="tenant"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"workqueue_longest_running_processor_seconds{name="tenant"} 0"#),
            "{text}"
        );
    }
}
