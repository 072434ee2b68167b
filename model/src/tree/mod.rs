//! Everything a tenant owns, in Kubernetes and in each backend, as the
//! operators make it: the desired objects of a Tenant and of its Scopes,
//! Environments, Certificates, Topics, ServiceIdentities and Workloads,
//! named by the same functions the operators call. [`desired`] lists them
//! flat (what [`crate::plan`] compares); [`tree`] nests them under the
//! custom resources that own them, each with its state from that owner's
//! status. Nothing here reads a backend: what the tree shows is what the
//! objects and their status say.

mod environments;
mod services;
mod tenant;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::core::object::HasStatus;
use kube::{Resource, ResourceExt};
use ossature_crds::{
    Certificate, Conditioned, Environment, Isolation, Scope, ServiceIdentity, Tenant, Topic,
    Workload,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conditions;
use crate::names::{TenantNames, tenant_of_any};
use crate::platform::Platform;
use crate::workloads::Autoscaler;

/// Where an object lives.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Backend {
    Kubernetes,
    Keycloak,
    Pulsar,
    OpenBao,
    Edge,
}

/// What an object is, within its backend.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum Kind {
    // Ossature's own kinds: the owners.
    Tenant,
    Scope,
    Environment,
    Certificate,
    Topic,
    ServiceIdentity,
    Workload,
    // Kubernetes.
    Namespace,
    ResourceQuota,
    LimitRange,
    NetworkPolicy,
    Role,
    RoleBinding,
    ServiceAccount,
    Secret,
    Deployment,
    Service,
    PodDisruptionBudget,
    ScaledObject,
    TriggerAuthentication,
    HorizontalPodAutoscaler,
    // Keycloak.
    Realm,
    Organization,
    Client,
    ClientScope,
    ClientProfile,
    ClientPolicy,
    Group,
    IdentityProvider,
    // Pulsar.
    PulsarTenant,
    PulsarNamespace,
    PulsarTopic,
    Schema,
    TopicGrant,
    SubscriptionGrant,
    Subscription,
    // OpenBao.
    KvMount,
    TransitMount,
    TransitKey,
    PkiMount,
    PkiIssuer,
    PkiRole,
    Policy,
    KubernetesAuthRole,
    KvSecret,
    // The edge.
    Host,
    Domain,
}

fn meta_key(kind: Kind, meta: &ObjectMeta) -> Key {
    let name = meta.name.clone().unwrap_or_default();
    let name = match &meta.namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    };
    Key::new(Backend::Kubernetes, kind, name)
}

/// An object's identity: unique among everything of its backend and kind.
/// Names are qualified by what holds the object (`<namespace>/<name>` in
/// Kubernetes, `<realm>/<clientId>` in Keycloak, `<mount>/<path>` in
/// OpenBao), so no two tenants' keys are ever equal.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub backend: Backend,
    pub kind: Kind,
    pub name: String,
}

impl Key {
    pub fn new(backend: Backend, kind: Kind, name: impl Into<String>) -> Self {
        Key {
            backend,
            kind,
            name: name.into(),
        }
    }

    /// A Kubernetes object: `<namespace>/<name>`, or `<name>` for one of
    /// the cluster (a Tenant, a Namespace).
    fn of<K: Resource>(kind: Kind, object: &K) -> Self {
        meta_key(kind, object.meta())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:?} {}", self.backend, self.kind, self.name)
    }
}

/// One object an operator makes, as desired.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    #[serde(flatten)]
    pub key: Key,
    /// The object it sits in (a Pulsar topic's namespace), if that is
    /// one of the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Key>,
    /// The custom resource whose reconcile makes it.
    pub owner: Key,
    /// The owner's condition that reports it.
    pub condition: String,
    /// Its desired settings: what a plan compares.
    pub fields: Value,
}

/// A Tenant and the objects it owns, with their status.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TenantObjects {
    pub tenant: Tenant,
    #[serde(default)]
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub environments: Vec<Environment>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub topics: Vec<Topic>,
    #[serde(default)]
    pub service_identities: Vec<ServiceIdentity>,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// The rules on scopes of the tenant's own roles (from its TenantRoles,
    /// as the policy crate resolves them); standard roles need none here.
    #[serde(default)]
    pub role_rules: std::collections::BTreeMap<String, Vec<crate::scopes::ScopeRule>>,
}

impl TenantObjects {
    pub fn new(tenant: Tenant) -> Self {
        TenantObjects {
            tenant,
            scopes: Vec::new(),
            environments: Vec::new(),
            certificates: Vec::new(),
            topics: Vec::new(),
            service_identities: Vec::new(),
            workloads: Vec::new(),
            role_rules: Default::default(),
        }
    }
}

/// The objects of each kind a tenant's tree holds, as found (a watch's
/// stores, lists of a tenant's namespaces): any tenant's, in any order.
#[derive(Default, Clone, Debug)]
pub struct Found {
    pub scopes: Vec<Arc<Scope>>,
    pub environments: Vec<Arc<Environment>>,
    pub certificates: Vec<Arc<Certificate>>,
    pub topics: Vec<Arc<Topic>>,
    pub service_identities: Vec<Arc<ServiceIdentity>>,
    pub workloads: Vec<Arc<Workload>>,
}

impl TenantObjects {
    /// What of `found` is `tenant`'s (in its namespaces), each kind sorted
    /// by namespace and name: the tree and plans of the control plane and
    /// the kubectl plugin are of the same objects. `role_rules` are its own
    /// roles' (`ossature_policy::own_scope_rules` resolves them).
    pub fn gather(
        tenant: Tenant,
        found: Found,
        role_rules: BTreeMap<String, Vec<crate::scopes::ScopeRule>>,
    ) -> Self {
        let name = tenant.name_any();
        TenantObjects {
            scopes: tenants_own(found.scopes, &name),
            environments: tenants_own(found.environments, &name),
            certificates: tenants_own(found.certificates, &name),
            topics: tenants_own(found.topics, &name),
            service_identities: tenants_own(found.service_identities, &name),
            workloads: tenants_own(found.workloads, &name),
            role_rules,
            tenant,
        }
    }
}

fn tenants_own<K>(found: Vec<Arc<K>>, tenant: &str) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let mut own: Vec<K> = found
        .into_iter()
        .filter(|o| crate::names::tenant_of_object(o.as_ref()) == Some(tenant))
        .map(Arc::unwrap_or_clone)
        .collect();
    own.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
    own
}

/// What of the platform shapes the objects besides [`Platform`]: what the
/// operator runs with.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub platform: &'a Platform,
    /// Tenants get a host at the edge (the operator runs without `--no-edge`).
    pub edge: bool,
    /// What scales event processors and sinks.
    pub autoscaler: Autoscaler,
    /// The Pulsar admin URL KEDA's triggers read.
    pub pulsar_admin_url: &'a str,
}

/// Where an object stands, from its owner's status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// The owner's condition that reports it (`Ready` for an owner itself).
    pub condition: String,
    pub ready: bool,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The reason of a condition the owner has not reported (yet).
pub const NOT_REPORTED: &str = "NotReported";

impl State {
    fn of(owner_conditions: Option<&[Condition]>, condition: &str) -> Self {
        let found = owner_conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == condition);
        match found {
            Some(c) => State {
                condition: condition.to_string(),
                ready: c.status == "True",
                reason: c.reason.clone(),
                message: c.message.clone(),
            },
            None => State {
                condition: condition.to_string(),
                ready: false,
                reason: NOT_REPORTED.to_string(),
                message: format!(
                    "{} has not reported {condition} yet",
                    match owner_conditions {
                        Some(_) => "its owner",
                        None => "its owner does not exist yet and",
                    }
                ),
            },
        }
    }
}

/// One node of a tenant's tree.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(flatten)]
    pub key: Key,
    /// The id the backend gave it, as status records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub state: State,
    /// For a certificate: when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

impl Node {
    /// This node and every node below it, depth first.
    pub fn walk(&self) -> Vec<&Node> {
        let mut all = vec![self];
        for child in &self.children {
            all.extend(child.walk());
        }
        all
    }

    /// The first node down the tree, depth first, that is not ready: the
    /// deepest of the first branch with one. A failure its owner reported
    /// comes before a condition not reported yet, which explains nothing
    /// (a Tenant stalled on its spec blocks, not its namespace waiting
    /// for it).
    pub fn first_blocking(&self) -> Option<&Node> {
        self.first_not_ready(true)
            .or_else(|| self.first_not_ready(false))
    }

    fn first_not_ready(&self, reported_only: bool) -> Option<&Node> {
        let reported = self.state.reason != NOT_REPORTED;
        self.children
            .iter()
            .find_map(|c| c.first_not_ready(reported_only))
            .or_else(|| (!self.state.ready && (reported || !reported_only)).then_some(self))
    }
}

/// The desired objects of a tenant, in the order the operators make them:
/// the tenant's own, then each Scope's, Environment's, Certificate's,
/// Topic's, ServiceIdentity's and Workload's, each set sorted by name.
pub fn desired(objects: &TenantObjects, settings: &Settings) -> Vec<Object> {
    let owned = Owned::of(objects);
    let mut all = tenant::objects(&owned, settings);
    all.extend(owned.scopes.iter().flat_map(|s| tenant::scope(&owned, s)));
    for environment in &owned.environments {
        all.extend(environments::environment(&owned, environment));
    }
    for certificate in owned.certificates.iter().filter(|c| !derived(c)) {
        all.extend(environments::certificate(&owned, certificate));
    }
    for topic in &owned.topics {
        all.extend(services::topic(&owned, topic));
    }
    for identity in &owned.identities {
        all.extend(services::identity(&owned, identity, settings));
    }
    for workload in &owned.workloads {
        all.extend(services::workload(&owned, workload, settings));
    }
    all
}

/// The tree of everything a tenant owns: the Tenant at the root, its
/// Scopes (nested as their tree) and Environments below it, the
/// Certificates, Topics, ServiceIdentities and Workloads of an environment
/// below it, and below each of those the objects its reconcile makes.
pub fn tree(objects: &TenantObjects, settings: &Settings) -> Node {
    let owned = Owned::of(objects);
    // The root, then the objects, then the other owners: each owner's own
    // objects come before the owners below it.
    let mut owners = owned.owners();
    let mut entries = vec![owners.remove(0)];
    let desired = desired(objects, settings);
    let conditions: BTreeMap<Key, &[Condition]> = owned
        .owner_list()
        .into_iter()
        .map(|(kind, meta, c)| (meta_key(kind, meta), c.unwrap_or(&[])))
        .collect();
    let owners_of: BTreeMap<Key, Key> = desired
        .iter()
        .map(|o| (o.key.clone(), o.owner.clone()))
        .collect();
    for object in desired {
        // Under what holds it when that is its owner's too; else its owner.
        let parent = object
            .parent
            .filter(|p| owners_of.get(p) == Some(&object.owner))
            .unwrap_or(object.owner.clone());
        let conditions = conditions.get(&object.owner).copied();
        let (id, expires) = owned.found(&object.key);
        entries.push(Entry {
            state: State::of(conditions, &object.condition),
            parent: Some(parent),
            key: object.key,
            id,
            expires,
        });
    }
    entries.extend(owners);
    nest(entries)
}

/// A node before nesting.
struct Entry {
    key: Key,
    parent: Option<Key>,
    id: Option<String>,
    state: State,
    expires: Option<String>,
}

/// Nests entries under their parents, in the order given; the first entry
/// is the root. An entry whose parent is missing (or in a cycle of
/// parents, as scopes may be) goes under the root.
fn nest(entries: Vec<Entry>) -> Node {
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    let mut kept: Vec<Option<Entry>> = Vec::new();
    for entry in entries {
        if !index.contains_key(&entry.key) {
            index.insert(entry.key.clone(), kept.len());
            kept.push(Some(entry));
        }
    }
    let parent_of = |i: usize, kept: &[Option<Entry>]| {
        let entry = kept[i].as_ref()?;
        entry.parent.as_ref().and_then(|p| index.get(p).copied())
    };
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); kept.len()];
    for i in 1..kept.len() {
        // Up the parents: a cycle never ends at the root or a missing parent.
        let (mut at, mut steps) = (i, 0);
        while at != 0 && steps <= kept.len() {
            match parent_of(at, &kept) {
                Some(parent) => (at, steps) = (parent, steps + 1),
                None => break,
            }
        }
        let parent = match parent_of(i, &kept) {
            Some(parent) if steps <= kept.len() => parent,
            _ => 0,
        };
        children[parent].push(i);
    }
    build(0, &mut kept, &children)
}

fn build(i: usize, entries: &mut [Option<Entry>], children: &[Vec<usize>]) -> Node {
    let entry = entries[i].take().expect("each entry is built once");
    Node {
        key: entry.key,
        id: entry.id,
        state: entry.state,
        expires: entry.expires,
        children: children[i]
            .iter()
            .map(|c| build(*c, entries, children))
            .collect(),
    }
}

/// Whether a Certificate is made by another owner (the tenant's host, a
/// ServiceIdentity's), which lists it among its own objects.
fn derived(certificate: &Certificate) -> bool {
    certificate.metadata.name.as_deref() == Some(crate::certificates::host::HOST)
        || certificate
            .owner_references()
            .iter()
            .any(|o| o.kind == "ServiceIdentity" && o.controller == Some(true))
}

/// The tenant's objects, only those in its own namespaces, sorted by name.
struct Owned<'a> {
    tenant: &'a Tenant,
    names: TenantNames,
    isolation: Isolation,
    scopes: Vec<&'a Scope>,
    environments: Vec<&'a Environment>,
    certificates: Vec<&'a Certificate>,
    topics: Vec<&'a Topic>,
    identities: Vec<&'a ServiceIdentity>,
    workloads: Vec<&'a Workload>,
    /// Every grant of the tenant's services, complete.
    grants: crate::services::Grants,
    role_rules: &'a std::collections::BTreeMap<String, Vec<crate::scopes::ScopeRule>>,
}

impl<'a> Owned<'a> {
    fn of(objects: &'a TenantObjects) -> Self {
        let tenant = &objects.tenant;
        let names = TenantNames::new(&tenant.name_any());
        let status = tenant.status.as_ref();
        let recorded = status.and_then(|s| s.isolation);
        // A realm of its name recorded before isolation was: its own.
        let own_realm = status.and_then(|s| s.realm.as_deref()) == Some(names.realm.as_str());
        let isolation = crate::identity::effective_isolation(
            tenant.spec.identity.isolation,
            recorded,
            own_realm,
        );
        let identities: Vec<ServiceIdentity> =
            of_tenant(&objects.service_identities, &names.tenant, false)
                .into_iter()
                .cloned()
                .collect();
        Owned {
            grants: crate::services::desired_grants(&names.tenant, &identities),
            isolation,
            scopes: of_tenant(&objects.scopes, &names.tenant, true),
            environments: of_tenant(&objects.environments, &names.tenant, true),
            certificates: of_tenant(&objects.certificates, &names.tenant, false),
            topics: of_tenant(&objects.topics, &names.tenant, false),
            identities: of_tenant(&objects.service_identities, &names.tenant, false),
            workloads: of_tenant(&objects.workloads, &names.tenant, false),
            role_rules: &objects.role_rules,
            tenant,
            names,
        }
    }

    /// Every owner (the Tenant first), with its conditions (none for a
    /// Certificate another owner makes, which it lists itself).
    fn owner_list(&self) -> Vec<(Kind, &'a ObjectMeta, Option<&'a [Condition]>)> {
        let mut all = listed(Kind::Tenant, &[self.tenant]);
        all.extend(listed(Kind::Scope, &self.scopes));
        all.extend(listed(Kind::Environment, &self.environments));
        all.extend(listed(Kind::Certificate, &self.certificates));
        all.extend(listed(Kind::Topic, &self.topics));
        all.extend(listed(Kind::ServiceIdentity, &self.identities));
        all.extend(listed(Kind::Workload, &self.workloads));
        all
    }

    /// The owners' own nodes: the Tenant, its Scopes under their parents,
    /// the rest under their Environment (or the Tenant). A Certificate
    /// another owner makes is among that owner's objects instead.
    fn owners(&self) -> Vec<Entry> {
        let tenant_key = Key::of(Kind::Tenant, self.tenant);
        let within = |kind: Kind, name: &str| {
            Key::new(
                Backend::Kubernetes,
                kind,
                format!("{}/{name}", self.names.namespace),
            )
        };
        let derived: Vec<&ObjectMeta> = self
            .certificates
            .iter()
            .filter(|c| derived(c))
            .map(|c| &c.metadata)
            .collect();
        let mut entries = Vec::new();
        for (kind, meta, conditions) in self.owner_list() {
            if derived.iter().any(|d| std::ptr::eq(*d, meta)) {
                continue;
            }
            let namespace = meta.namespace.as_deref();
            let parent = match kind {
                Kind::Tenant => None,
                Kind::Scope => self.scope_parent(meta).map(|p| within(Kind::Scope, p)),
                _ => namespace
                    .and_then(crate::names::environment_of)
                    .map(|(_, environment)| within(Kind::Environment, environment)),
            };
            let key = meta_key(kind, meta);
            // A Certificate's serial and expiry, from its own status.
            let (id, expires) = self.found(&key);
            entries.push(Entry {
                key,
                parent: parent.or_else(|| (kind != Kind::Tenant).then(|| tenant_key.clone())),
                id,
                state: State::of(conditions, conditions::READY),
                expires,
            });
        }
        entries
    }

    fn scope_parent(&self, meta: &ObjectMeta) -> Option<&'a str> {
        self.scopes
            .iter()
            .find(|s| std::ptr::eq(&s.metadata, meta))?
            .spec
            .parent
            .as_deref()
    }

    /// What status records of an object: the id a backend gave it, and a
    /// certificate's expiry.
    fn found(&self, key: &Key) -> (Option<String>, Option<String>) {
        match key.kind {
            Kind::Organization => (
                self.tenant
                    .status
                    .as_ref()
                    .and_then(|s| s.organization_id.clone()),
                None,
            ),
            Kind::Certificate => {
                let status = self
                    .certificates
                    .iter()
                    .find(|c| Key::of(Kind::Certificate, **c) == *key)
                    .and_then(|c| c.status.as_ref());
                (
                    status.and_then(|s| s.serial_number.clone()),
                    status.and_then(|s| s.not_after.clone()),
                )
            }
            _ => (None, None),
        }
    }

    /// The ServiceIdentity named `name` in `namespace`.
    fn identity(&self, namespace: &str, name: &str) -> Option<&'a ServiceIdentity> {
        self.identities
            .iter()
            .copied()
            .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && s.name_any() == name)
    }

    /// The Topic named `name` in `namespace`.
    fn topic(&self, namespace: &str, name: &str) -> Option<&'a Topic> {
        self.topics
            .iter()
            .copied()
            .find(|t| t.metadata.namespace.as_deref() == Some(namespace) && t.name_any() == name)
    }
}

/// Owners of one kind with their conditions.
fn listed<'a, K>(
    kind: Kind,
    owners: &[&'a K],
) -> Vec<(Kind, &'a ObjectMeta, Option<&'a [Condition]>)>
where
    K: Resource + HasStatus,
    K::Status: Conditioned,
{
    owners
        .iter()
        .map(|o| (kind, o.meta(), o.status().map(Conditioned::conditions)))
        .collect()
}

/// The objects in the tenant's namespaces (only its own namespace for
/// Scopes and Environments), sorted by namespace and name.
fn of_tenant<'a, K: Resource>(objects: &'a [K], tenant: &str, own_only: bool) -> Vec<&'a K> {
    let mut found: Vec<&K> = objects
        .iter()
        .filter(|o| {
            let namespace = o.meta().namespace.as_deref().unwrap_or_default();
            match own_only {
                true => crate::names::tenant_of(namespace) == Some(tenant),
                false => tenant_of_any(namespace) == Some(tenant),
            }
        })
        .collect();
    found.sort_by_key(|o| (o.meta().namespace.clone(), o.meta().name.clone()));
    found
}

/// A Kubernetes object the operator applies: keyed `<namespace>/<name>`,
/// its fields without owner references (their uid is the owner's, not a
/// setting).
fn kubernetes<K: Resource + Serialize>(
    kind: Kind,
    object: &K,
    parent: Option<&Key>,
    owner: &Key,
    condition: &str,
) -> Object {
    let mut fields = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(metadata) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("ownerReferences");
    }
    Object {
        key: Key::of(kind, object),
        parent: parent.cloned(),
        owner: owner.clone(),
        condition: condition.to_string(),
        fields,
    }
}

/// Any other backend's object.
fn object(key: Key, parent: Option<&Key>, owner: &Key, condition: &str, fields: Value) -> Object {
    Object {
        key,
        parent: parent.cloned(),
        owner: owner.clone(),
        condition: condition.to_string(),
        fields,
    }
}

#[cfg(test)]
mod tests;
