//! Gauges computed at each scrape from what the operator already holds:
//! the watch stores (objects by kind and state, how long the oldest one
//! has not been Ready, certificate expiry, edge routes, domains), the
//! health probes (backends up) and leadership.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use ossature_crds::{Certificate, Conditioned, DomainState, Tenant};
use ossature_model::conditions::{EDGE_READY, READY, STALLED};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::health::Health;
use crate::leader::Leadership;
use crate::stores::Stores;

/// Where an object stands, in kstatus's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ready,
    Progressing,
    Stalled,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Progressing => "progressing",
            State::Stalled => "stalled",
        }
    }
}

/// One object as the gauges count it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectState {
    pub state: State,
    /// Since when it has not been Ready; `None` while Ready.
    pub not_ready_since: Option<Timestamp>,
}

/// The state of an object with `conditions`, created at `created`: Ready
/// when its Ready condition is True, Stalled when Stalled is True, else
/// Progressing (not Ready since its Ready condition last changed, or since
/// it was created when it has none yet).
pub fn state_of(conditions: &[Condition], created: Option<Timestamp>) -> ObjectState {
    let find = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    let ready = find(READY);
    if ready.is_some_and(|c| c.status == "True") {
        return ObjectState {
            state: State::Ready,
            not_ready_since: None,
        };
    }
    let stalled = find(STALLED).is_some_and(|c| c.status == "True");
    ObjectState {
        state: if stalled {
            State::Stalled
        } else {
            State::Progressing
        },
        not_ready_since: ready.map(|c| c.last_transition_time.0).or(created),
    }
}

/// Every object of one kind this instance manages.
type Count = Arc<dyn Fn(&Stores, Option<&str>) -> Vec<ObjectState> + Send + Sync>;

/// How to count the objects of every registered kind.
#[derive(Clone, Default)]
pub struct Census {
    kinds: Vec<(&'static str, Count)>,
}

impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|(k, _)| *k).collect();
        f.debug_struct("Census").field("kinds", &kinds).finish()
    }
}

impl Census {
    /// Counts kind `K` too.
    pub fn add<K>(&mut self)
    where
        K: Resource<DynamicType = ()>
            + kube::core::object::HasStatus<Status: Conditioned>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let count: Count = Arc::new(|stores: &Stores, selector: Option<&str>| {
            stores
                .of::<K>()
                .state()
                .iter()
                .filter(|o| match o.meta().namespace.as_deref() {
                    // Cluster-scoped kinds' watches keep to the selector.
                    None => true,
                    namespace => stores.tenant_selected(namespace, selector),
                })
                .map(|o| {
                    let conditions = o.status().map(|s| s.conditions()).unwrap_or_default();
                    let created = o.meta().creation_timestamp.as_ref().map(|t| t.0);
                    state_of(conditions, created)
                })
                .collect()
        });
        self.kinds.push((leak_kind::<K>(), count));
    }
}

/// The kind's name as a label (`Tenant`): fixed for the process.
fn leak_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    Box::leak(K::kind(&()).into_owned().into_boxed_str())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindStateLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    namespace: String,
    certificate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LeaseLabels {
    lease: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// What the gauges are computed from.
pub struct Observed {
    pub census: Census,
    pub stores: Stores,
    pub selector: Option<String>,
    pub health: Health,
    pub leadership: Leadership,
    /// The Lease this instance campaigns for.
    pub lease: String,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("census", &self.census)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Objects by kind and state.
type ByState = BTreeMap<(&'static str, State), i64>;
/// By kind, the longest time one has not been Ready (seconds).
type Oldest = BTreeMap<&'static str, f64>;

/// Objects by kind and state, and the longest time one has not been Ready.
fn by_kind(counted: &[(&'static str, Vec<ObjectState>)], now: Timestamp) -> (ByState, Oldest) {
    let mut states = BTreeMap::new();
    let mut oldest = BTreeMap::new();
    for (kind, objects) in counted {
        for state in [State::Ready, State::Progressing, State::Stalled] {
            states.insert((*kind, state), 0);
        }
        let mut longest: f64 = 0.0;
        for object in objects {
            *states.entry((*kind, object.state)).or_default() += 1;
            if let Some(since) = object.not_ready_since {
                longest = longest.max(now.duration_since(since).as_secs_f64().max(0.0));
            }
        }
        oldest.insert(*kind, longest);
    }
    (states, oldest)
}

/// A tenant's edge route as a state: from its EdgeReady condition.
fn route_state(conditions: &[Condition]) -> Option<&'static str> {
    let edge = conditions.iter().find(|c| c.type_ == EDGE_READY)?;
    Some(match edge.status.as_str() {
        "True" => "ready",
        "False" => "failing",
        _ => "pending",
    })
}

fn domain_state(state: DomainState) -> &'static str {
    match state {
        DomainState::Pending => "pending",
        DomainState::Verified => "verified",
        DomainState::Claimed => "claimed",
    }
}

impl Collector for Observed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let selector = self.selector.as_deref();
        let counted: Vec<_> = self
            .census
            .kinds
            .iter()
            .map(|(kind, count)| (*kind, count(&self.stores, selector)))
            .collect();
        let (states, oldest) = by_kind(&counted, Timestamp::now());
        let objects = Family::<KindStateLabels, Gauge>::default();
        for ((kind, state), n) in states {
            let labels = KindStateLabels {
                kind,
                state: state.label(),
            };
            objects.get_or_create(&labels).set(n);
        }
        let not_ready = Family::<KindLabels, FloatGauge>::default();
        for (kind, seconds) in oldest {
            not_ready.get_or_create(&KindLabels { kind }).set(seconds);
        }

        let expiry = Family::<CertificateLabels, Gauge>::default();
        for certificate in self.stores.of::<Certificate>().state() {
            let namespace = certificate.meta().namespace.clone().unwrap_or_default();
            if !self.stores.tenant_selected(Some(&namespace), selector) {
                continue;
            }
            let not_after = certificate
                .status
                .as_ref()
                .and_then(|s| s.not_after.as_ref());
            if let Some(not_after) = not_after.and_then(|t| t.parse::<Timestamp>().ok()) {
                let labels = CertificateLabels {
                    namespace,
                    certificate: certificate.meta().name.clone().unwrap_or_default(),
                };
                expiry.get_or_create(&labels).set(not_after.as_second());
            }
        }

        let routes = Family::<StateLabels, Gauge>::default();
        let domains = Family::<StateLabels, Gauge>::default();
        for state in ["ready", "failing", "pending"] {
            routes.get_or_create(&StateLabels { state }).set(0);
        }
        for state in [
            DomainState::Pending,
            DomainState::Verified,
            DomainState::Claimed,
        ] {
            let state = domain_state(state);
            domains.get_or_create(&StateLabels { state }).set(0);
        }
        for tenant in self.stores.of::<Tenant>().state() {
            let Some(status) = tenant.status.as_ref() else {
                continue;
            };
            if let Some(state) = route_state(&status.conditions) {
                routes.get_or_create(&StateLabels { state }).inc();
            }
            for domain in &status.domains {
                let state = domain_state(domain.state);
                domains.get_or_create(&StateLabels { state }).inc();
            }
        }

        let up = Family::<BackendLabels, Gauge>::default();
        for (backend, answers) in self.health.states() {
            let labels = BackendLabels {
                backend: backend.as_str(),
            };
            up.get_or_create(&labels).set(i64::from(answers));
        }
        let leader = Family::<LeaseLabels, Gauge>::default();
        leader
            .get_or_create(&LeaseLabels {
                lease: self.lease.clone(),
            })
            .set(i64::from(self.leadership.leading()));

        let gauges: [(&str, &str, &dyn EncodeMetric); 7] = [
            (
                "ossature_objects",
                "Objects this instance manages, by kind and state (ready, progressing, stalled)",
                &objects,
            ),
            (
                "ossature_oldest_not_ready_seconds",
                "How long the object of this kind not Ready for the longest has been so \
                 (since its Ready condition last changed); 0 when every one is Ready",
                &not_ready,
            ),
            (
                "ossature_certificate_expiry_timestamp_seconds",
                "When each issued Certificate expires (unix time)",
                &expiry,
            ),
            (
                "ossature_edge_routes",
                "Tenants' routes at the edge, by state (ready, failing, pending) from their \
                 EdgeReady condition",
                &routes,
            ),
            (
                "ossature_domains",
                "Tenants' custom domains, by state (pending, verified, claimed)",
                &domains,
            ),
            (
                "ossature_backend_up",
                "Whether the backend answered its last health probe (1) or not (0)",
                &up,
            ),
            (
                "ossature_leader",
                "Whether this instance leads the Lease of its shard (1) or follows (0)",
                &leader,
            ),
        ];
        for (name, help, gauge) in gauges {
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(type_: &str, status: &str, at: Timestamp) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: Time(at),
            observed_generation: None,
        }
    }

    #[test]
    fn states_from_conditions() {
        let at = Timestamp::from_second(1_000).unwrap();
        let created = Some(Timestamp::from_second(500).unwrap());
        let ready = state_of(&[condition(READY, "True", at)], created);
        assert_eq!(ready.state, State::Ready);
        assert_eq!(ready.not_ready_since, None);
        let failing = state_of(&[condition(READY, "False", at)], created);
        assert_eq!(failing.state, State::Progressing);
        assert_eq!(failing.not_ready_since, Some(at));
        let stalled = state_of(
            &[
                condition(READY, "False", at),
                condition(STALLED, "True", at),
            ],
            created,
        );
        assert_eq!(stalled.state, State::Stalled);
        let new = state_of(&[], created);
        assert_eq!(new.not_ready_since, created, "not Ready since created");
    }

    #[test]
    fn every_state_shows_and_the_oldest_not_ready_wins() {
        let now = Timestamp::from_second(10_000).unwrap();
        let since = |s| Some(Timestamp::from_second(s).unwrap());
        let counted = vec![
            (
                "Tenant",
                vec![
                    ObjectState {
                        state: State::Ready,
                        not_ready_since: None,
                    },
                    ObjectState {
                        state: State::Progressing,
                        not_ready_since: since(9_000),
                    },
                    ObjectState {
                        state: State::Stalled,
                        not_ready_since: since(9_900),
                    },
                ],
            ),
            ("Topic", vec![]),
        ];
        let (states, oldest) = by_kind(&counted, now);
        assert_eq!(states[&("Tenant", State::Ready)], 1);
        assert_eq!(states[&("Tenant", State::Progressing)], 1);
        assert_eq!(states[&("Topic", State::Stalled)], 0, "every state shows");
        assert_eq!(oldest["Tenant"], 1_000.0);
        assert_eq!(oldest["Topic"], 0.0, "0 when none is not Ready");
    }

    #[test]
    fn edge_routes_follow_edge_ready() {
        let at = Timestamp::UNIX_EPOCH;
        assert_eq!(
            route_state(&[condition(EDGE_READY, "True", at)]),
            Some("ready")
        );
        assert_eq!(
            route_state(&[condition(EDGE_READY, "False", at)]),
            Some("failing")
        );
        assert_eq!(
            route_state(&[condition(EDGE_READY, "Unknown", at)]),
            Some("pending")
        );
        assert_eq!(route_state(&[condition(READY, "True", at)]), None);
    }
}
