//! `why`: the first blocking condition down a tenant's tree, what reports
//! it, and the Events that led there. Pure: the Events are read by the
//! caller, for the subjects this module names.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use ossature_model::conditions::READY;
use ossature_model::tree::{Backend, Key, Kind, Node, State, TenantObjects};
use serde::Serialize;

/// What blocks a tenant, and what led there.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    pub tenant: String,
    /// The Tenant's own `Ready` (its backends; Scopes and Environments
    /// report theirs).
    pub ready: bool,
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Nothing when every object down the tree is Ready.
    pub blocking: Option<Blocking>,
    /// The Events of the blocking object, what reports it, and the tenant,
    /// oldest first.
    pub events: Vec<EventView>,
    /// Why the Events could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_error: Option<String>,
}

/// The first object down the tree that is not Ready.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blocking {
    #[serde(flatten)]
    pub key: Key,
    /// Its owner's condition that reports it, with reason and message.
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The custom resource whose status reports it (itself, for one).
    pub reported_by: Key,
    /// From the tenant down to it.
    pub branch: Vec<Key>,
}

/// An object Events may be about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    /// None for a cluster-scoped object.
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

/// One Event, as `why` shows it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// When it was last seen (RFC 3339).
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    /// `Kind/name` of the object it is about.
    pub object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub message: String,
    /// How many times it happened.
    pub count: i32,
    /// The controller that reported it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip)]
    pub at: Option<Timestamp>,
}

/// The branch from the root down to the first node that is not Ready, as
/// [`Node::first_blocking`] picks it: depth first, the deepest such node
/// of the first branch that has one, which explains the nodes above it (a
/// failure reported before a condition not reported yet).
pub fn blocking_branch(root: &Node) -> Option<Vec<&Node>> {
    let blocking = root.first_blocking()?;
    branch_to(root, &blocking.key)
}

fn branch_to<'a>(node: &'a Node, key: &Key) -> Option<Vec<&'a Node>> {
    if node.key == *key {
        return Some(vec![node]);
    }
    node.children.iter().find_map(|child| {
        let mut branch = branch_to(child, key)?;
        branch.insert(0, node);
        Some(branch)
    })
}

/// The custom resource whose status reports the last node of `branch`:
/// the node itself when it is one (its state is its `Ready`), else the
/// nearest above it that is (each object sits below its owner).
pub fn reporter<'a>(branch: &[&'a Node]) -> Option<&'a Node> {
    branch
        .iter()
        .rev()
        .find(|n| n.state.condition == READY && owner_kind(n.key.kind))
        .copied()
}

fn owner_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Tenant
            | Kind::Scope
            | Kind::Environment
            | Kind::Certificate
            | Kind::Topic
            | Kind::ServiceIdentity
            | Kind::Workload
    )
}

/// Whose Events explain the branch: the blocking object (when it is a
/// Kubernetes object), what reports it, and the tenant; each once.
pub fn subjects(branch: &[&Node], objects: &TenantObjects) -> Vec<Subject> {
    let mut keys: Vec<&Key> = Vec::new();
    if let Some(last) = branch.last()
        && last.key.backend == Backend::Kubernetes
    {
        keys.push(&last.key);
    }
    keys.extend(reporter(branch).map(|n| &n.key));
    keys.extend(branch.first().map(|n| &n.key));
    let mut subjects: Vec<Subject> = Vec::new();
    for key in keys {
        let (namespace, name) = match key.name.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_string()), name.to_string()),
            None => (None, key.name.clone()),
        };
        let subject = Subject {
            kind: format!("{:?}", key.kind),
            uid: uid_of(objects, key.kind, namespace.as_deref(), &name),
            namespace,
            name,
        };
        if !subjects.contains(&subject) {
            subjects.push(subject);
        }
    }
    subjects
}

/// The uid of one of the tenant's custom resources, so that Events of a
/// deleted one of the same name are left out.
fn uid_of(
    objects: &TenantObjects,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
) -> Option<String> {
    fn find<K: kube::Resource>(list: &[K], namespace: Option<&str>, name: &str) -> Option<String> {
        list.iter()
            .find(|o| {
                o.meta().namespace.as_deref() == namespace && o.meta().name.as_deref() == Some(name)
            })
            .and_then(|o| o.meta().uid.clone())
    }
    match kind {
        Kind::Tenant if objects.tenant.name_any() == name => objects.tenant.uid(),
        Kind::Scope => find(&objects.scopes, namespace, name),
        Kind::Environment => find(&objects.environments, namespace, name),
        Kind::Certificate => find(&objects.certificates, namespace, name),
        Kind::Topic => find(&objects.topics, namespace, name),
        Kind::ServiceIdentity => find(&objects.service_identities, namespace, name),
        Kind::Workload => find(&objects.workloads, namespace, name),
        _ => None,
    }
}

/// The diagnosis of a tenant's tree, with the Events read about its
/// subjects (`latest` of them at most).
pub fn diagnose(root: &Node, events: Vec<Event>, latest: usize) -> Diagnosis {
    let branch = blocking_branch(root);
    let blocking = branch.as_ref().and_then(|branch| {
        let last = branch.last()?;
        Some(Blocking {
            key: last.key.clone(),
            state: last.state.clone(),
            id: last.id.clone(),
            expires: last.expires.clone(),
            reported_by: reporter(branch).unwrap_or(root).key.clone(),
            branch: branch.iter().map(|n| n.key.clone()).collect(),
        })
    });
    Diagnosis {
        tenant: root.key.name.clone(),
        ready: root.state.ready,
        reason: root.state.reason.clone(),
        message: root.state.message.clone(),
        blocking,
        events: event_views(events, latest),
        events_error: None,
    }
}

/// Events oldest first, each once, the `latest` of them.
pub fn event_views(events: Vec<Event>, latest: usize) -> Vec<EventView> {
    let mut seen = std::collections::BTreeSet::new();
    let mut views: Vec<EventView> = events
        .into_iter()
        .filter(|e| {
            e.metadata
                .uid
                .as_ref()
                .is_none_or(|uid| seen.insert(uid.clone()))
        })
        .map(view)
        .collect();
    views.sort_by_key(|v| v.at);
    let skip = views.len().saturating_sub(latest);
    views.split_off(skip)
}

fn view(event: Event) -> EventView {
    let at = last_seen(&event);
    let involved = &event.involved_object;
    EventView {
        time: at.map(|t| t.to_string()),
        type_: event.type_.unwrap_or_default(),
        reason: event.reason.unwrap_or_default(),
        object: format!(
            "{}/{}",
            involved.kind.as_deref().unwrap_or("?"),
            involved.name.as_deref().unwrap_or("?")
        ),
        namespace: involved.namespace.clone(),
        message: event.message.unwrap_or_default(),
        count: event
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(event.count)
            .unwrap_or(1),
        source: event
            .reporting_component
            .filter(|c| !c.is_empty())
            .or_else(|| event.source.and_then(|s| s.component))
            .unwrap_or_default(),
        at,
    }
}

/// When an Event was last seen: its series' last observation, or its
/// last timestamp, or when it happened, or was created.
fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests;
