//! What is decided of a Topic without calling anything: its Pulsar name, its
//! schema as the broker receives it, the policy calls that make the live
//! topic match the spec, and whether a deletion may go ahead.

use std::collections::BTreeMap;
use std::fmt;

use ossature_crds::{
    BacklogPolicy, Persistence, SchemaType, Topic, TopicPolicies, TopicSchema, TopicSpec,
};
use serde_json::{Value, json};

use crate::names::{TenantNames, environment_of, sha256_hex};

/// A Topic's place in Pulsar.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PulsarTopic {
    pub persistent: bool,
    pub tenant: String,
    /// The environment's Pulsar namespace, inside the tenant.
    pub namespace: String,
    pub local: String,
}

impl PulsarTopic {
    /// The topic `name` of the environment whose Kubernetes namespace is
    /// `namespace`; `None` outside an environment namespace.
    pub fn of(namespace: &str, name: &str, persistence: Persistence) -> Option<Self> {
        let (tenant, environment) = environment_of(namespace)?;
        let names = TenantNames::new(tenant);
        Some(PulsarTopic {
            persistent: persistence == Persistence::Persistent,
            namespace: names.environment(environment).pulsar_namespace,
            tenant: names.pulsar_tenant,
            local: name.to_string(),
        })
    }

    /// The Topic's Pulsar topic, from its namespace and name.
    pub fn of_topic(topic: &Topic) -> Option<Self> {
        Self::of(
            topic.metadata.namespace.as_deref()?,
            topic.metadata.name.as_deref()?,
            topic.spec.persistence,
        )
    }

    /// `persistent` or `non-persistent`, as topic URLs and names start.
    pub fn domain(&self) -> &'static str {
        if self.persistent {
            "persistent"
        } else {
            "non-persistent"
        }
    }

    /// The path of the topic in the admin API: `persistent/<t>/<ns>/<name>`.
    pub fn admin_path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.domain(),
            self.tenant,
            self.namespace,
            self.local
        )
    }

    /// `<tenant>/<namespace>`, as the namespace admin API names it.
    pub fn pulsar_namespace(&self) -> String {
        format!("{}/{}", self.tenant, self.namespace)
    }
}

impl fmt::Display for PulsarTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/{}/{}",
            self.domain(),
            self.tenant,
            self.namespace,
            self.local
        )
    }
}

/// A definition that is not an Avro record; the message tells how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError(pub String);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SchemaError {}

/// A schema as it is registered.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSchema {
    /// SHA-256 (hex) of the definition's Parsing Canonical Form: names,
    /// types and order, not docs, defaults or whitespace.
    pub fingerprint: String,
    /// The body of the schema upload: `type`, `schema`, `properties`.
    pub payload: Value,
}

/// Property of the uploaded schema carrying its fingerprint.
pub const FINGERPRINT_PROPERTY: &str = "ossature.dev/fingerprint";

/// Parses the definition and builds the upload. The `schema` text is the
/// definition re-serialised compactly with sorted keys, so reformatting the
/// spec uploads nothing new, while defaults (which decide compatibility)
/// are kept, unlike in the canonical form.
pub fn desired_schema(schema: &TopicSchema) -> Result<DesiredSchema, SchemaError> {
    let parsed = apache_avro::Schema::parse_str(&schema.definition).map_err(|e| {
        SchemaError(format!(
            "schema.definition is not a valid Avro schema: {e}; fix the definition"
        ))
    })?;
    if !matches!(parsed, apache_avro::Schema::Record(_)) {
        return Err(SchemaError(
            "schema.definition must be an Avro record ({\"type\": \"record\", ...}): Pulsar takes a record for AVRO and JSON topics".into(),
        ));
    }
    let text = normalised(&schema.definition)
        .ok_or_else(|| SchemaError("schema.definition is not JSON".into()))?;
    let fingerprint = sha256_hex(parsed.canonical_form().as_bytes());
    let schema_type = match schema.schema_type {
        SchemaType::Avro => "AVRO",
        SchemaType::Json => "JSON",
    };
    Ok(DesiredSchema {
        payload: json!({
            "type": schema_type,
            "schema": text,
            "properties": {FINGERPRINT_PROPERTY: fingerprint},
        }),
        fingerprint,
    })
}

/// JSON text, compact and with object keys sorted.
fn normalised(text: &str) -> Option<String> {
    serde_json::from_str::<Value>(text)
        .ok()
        .map(|v| v.to_string())
}

/// Whether the live schema (its type and definition text as the broker
/// returns them) differs from the desired one, so must be uploaded. No live
/// schema differs; whitespace and key order do not.
pub fn schema_differs(desired: &DesiredSchema, live: Option<(&str, &str)>) -> bool {
    let Some((live_type, live_text)) = live else {
        return true;
    };
    desired.payload["type"] != live_type
        || normalised(live_text).as_deref() != desired.payload["schema"].as_str()
}

/// One topic-level policy, keyed so desired and live can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    Retention,
    MessageTtl,
    /// Backlog quota of type `destination_storage`.
    BacklogSize,
    /// Backlog quota of type `message_age`.
    BacklogAge,
    MaxProducers,
    MaxConsumers,
    Deduplication,
    SchemaCompatibility,
}

/// A policy's value, as Pulsar holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyValue {
    Retention {
        minutes: i64,
        size_mb: i64,
    },
    /// A limit (seconds, megabytes or a count).
    Limit(i64),
    /// A backlog limit (bytes or seconds) and Pulsar's name of its policy.
    Backlog {
        limit: i64,
        policy: &'static str,
    },
    Flag(bool),
    Strategy(&'static str),
}

pub type Policies = BTreeMap<PolicyKind, PolicyValue>;

/// The topic-level policies the spec asks for; a policy left out of the
/// spec is absent here, so a live one is removed.
pub fn desired_policies(spec: &TopicSpec) -> Policies {
    let p: &TopicPolicies = &spec.policies;
    let mut policies = Policies::new();
    if let (Some(minutes), Some(size_mb)) = (p.retention_minutes, p.retention_size_megabytes) {
        policies.insert(
            PolicyKind::Retention,
            PolicyValue::Retention { minutes, size_mb },
        );
    }
    if let Some(ttl) = p.message_ttl_seconds {
        policies.insert(PolicyKind::MessageTtl, PolicyValue::Limit(ttl.into()));
    }
    if let Some(quota) = &p.backlog_quota {
        let policy = match quota.policy {
            BacklogPolicy::ProducerRequestHold => "producer_request_hold",
            BacklogPolicy::ProducerException => "producer_exception",
            BacklogPolicy::ConsumerBacklogEviction => "consumer_backlog_eviction",
        };
        if let Some(mb) = quota.size_megabytes {
            let limit = mb * 1024 * 1024;
            policies.insert(
                PolicyKind::BacklogSize,
                PolicyValue::Backlog { limit, policy },
            );
        }
        if let Some(limit) = quota.age_seconds {
            policies.insert(
                PolicyKind::BacklogAge,
                PolicyValue::Backlog { limit, policy },
            );
        }
    }
    let mut limit = |kind, value: Option<i32>| {
        if let Some(v) = value {
            policies.insert(kind, PolicyValue::Limit(v.into()));
        }
    };
    limit(PolicyKind::MaxProducers, p.max_producers);
    limit(PolicyKind::MaxConsumers, p.max_consumers);
    if let Some(on) = p.deduplication {
        policies.insert(PolicyKind::Deduplication, PolicyValue::Flag(on));
    }
    if let Some(schema) = &spec.schema {
        policies.insert(
            PolicyKind::SchemaCompatibility,
            PolicyValue::Strategy(schema.compatibility.as_str()),
        );
    }
    policies
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyCall {
    Set(PolicyKind, PolicyValue),
    Remove(PolicyKind),
}

/// The calls that turn the live topic-level policies (read back with only
/// the topic's own values, not the namespace's) into the desired ones:
/// none when they match.
///
/// Pulsar refuses a retention below the backlog quota in effect, and a
/// backlog quota above the retention in effect: a retention that grows is
/// set before the backlog quotas, one that shrinks (or is new: the broker's
/// default quota is large) after them.
pub fn policy_calls(desired: &Policies, live: &Policies) -> Vec<PolicyCall> {
    let mut set: Vec<PolicyCall> = desired
        .iter()
        .filter(|(kind, value)| live.get(kind) != Some(value))
        .map(|(kind, value)| PolicyCall::Set(*kind, value.clone()))
        .collect();
    let grows = match (
        desired.get(&PolicyKind::Retention),
        live.get(&PolicyKind::Retention),
    ) {
        (
            Some(PolicyValue::Retention { minutes, size_mb }),
            Some(PolicyValue::Retention {
                minutes: old_minutes,
                size_mb: old_size,
            }),
        ) => at_least(*minutes, *old_minutes) && at_least(*size_mb, *old_size),
        _ => false,
    };
    if !grows
        && let Some(at) = set
            .iter()
            .position(|c| matches!(c, PolicyCall::Set(PolicyKind::Retention, _)))
    {
        let retention = set.remove(at);
        let after = set
            .iter()
            .rposition(|c| {
                matches!(
                    c,
                    PolicyCall::Set(PolicyKind::BacklogSize | PolicyKind::BacklogAge, _)
                )
            })
            .map_or(at, |last| last + 1);
        set.insert(after, retention);
    }
    let removed = live
        .keys()
        .filter(|kind| !desired.contains_key(kind))
        .map(|kind| PolicyCall::Remove(*kind));
    set.into_iter().chain(removed).collect()
}

/// Whether limit `new` is at least `old`, -1 being no limit.
fn at_least(new: i64, old: i64) -> bool {
    new < 0 || (old >= 0 && new >= old)
}

/// What is connected to a topic and not yet consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicUsage {
    pub producers: i64,
    pub consumers: i64,
    /// Unacknowledged messages, summed over subscriptions.
    pub backlog: i64,
}

/// Who is deleting the Topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionCause {
    /// The Topic alone.
    Own,
    /// Its Environment or Tenant (or an Ephemeral environment's expiry);
    /// `retain` when that owner's deletionPolicy is Retain.
    Owner { retain: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionDecision {
    /// Leave the Pulsar topic in place; only the finalizer goes.
    Retain,
    /// Delete it; `force` also disconnects clients and drops the backlog.
    Delete { force: bool },
    /// Keep the Topic until its clients leave and its backlog drains.
    Blocked { usage: TopicUsage, message: String },
}

/// Whether the Pulsar topic may be deleted now. Retain (the Topic's or its
/// owner's) keeps it; an owner's deletion, or `deletion.force`, forces it;
/// otherwise connected clients or a backlog block it.
pub fn deletion_decision(
    spec: &TopicSpec,
    cause: DeletionCause,
    usage: TopicUsage,
) -> DeletionDecision {
    let retain = spec.deletion_policy == ossature_crds::DeletionPolicy::Retain
        || cause == DeletionCause::Owner { retain: true };
    if retain {
        return DeletionDecision::Retain;
    }
    if matches!(cause, DeletionCause::Owner { .. }) || spec.deletion.force {
        return DeletionDecision::Delete { force: true };
    }
    if usage == TopicUsage::default() {
        return DeletionDecision::Delete { force: false };
    }
    let message = format!(
        "the topic has {} producer(s), {} consumer(s) and {} unconsumed message(s); stop its clients and drain it, or set spec.deletion.force: true to delete it anyway",
        usage.producers, usage.consumers, usage.backlog
    );
    DeletionDecision::Blocked { usage, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::{BacklogQuota, Compatibility, DeletionPolicy};

    const ORDER: &str = r#"{
        "type": "record", "name": "Order", "namespace": "acme",
        "fields": [
            {"name": "id", "type": "string", "doc": "the order"},
            {"name": "amount", "type": "long", "default": 0}
        ]
    }"#;

    fn spec(yaml: &str) -> TopicSpec {
        serde_norway::from_str(yaml).unwrap()
    }

    fn schema(definition: &str, schema_type: SchemaType) -> TopicSchema {
        TopicSchema {
            schema_type,
            definition: definition.into(),
            compatibility: Compatibility::Full,
        }
    }

    #[test]
    fn the_pulsar_name_comes_from_the_environment_namespace() {
        let topic = PulsarTopic::of("tn-acme--prod", "orders", Persistence::Persistent).unwrap();
        assert_eq!(topic.to_string(), "persistent://acme/prod/orders");
        assert_eq!(topic.admin_path(), "persistent/acme/prod/orders");
        assert_eq!(topic.pulsar_namespace(), "acme/prod");
        let fleeting = PulsarTopic::of("tn-acme--prod", "ticks", Persistence::NonPersistent);
        assert_eq!(
            fleeting.unwrap().to_string(),
            "non-persistent://acme/prod/ticks"
        );
        assert_eq!(
            PulsarTopic::of("tn-acme", "orders", Persistence::Persistent),
            None,
            "a tenant's own namespace has no Pulsar namespace"
        );
        assert_eq!(
            PulsarTopic::of("default", "orders", Persistence::Persistent),
            None
        );
        let topic: Topic = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "tn-acme-eu--prod"},
            "spec": {},
        }))
        .unwrap();
        assert_eq!(
            PulsarTopic::of_topic(&topic).unwrap().to_string(),
            "persistent://acme-eu/prod/orders"
        );
    }

    #[test]
    fn a_schema_is_fingerprinted_by_its_canonical_form() {
        let desired = desired_schema(&schema(ORDER, SchemaType::Avro)).unwrap();
        // Docs and whitespace are not part of the canonical form.
        let plain = r#"{"type":"record","name":"Order","namespace":"acme","fields":[{"name":"id","type":"string"},{"name":"amount","type":"long","default":0}]}"#;
        let same = desired_schema(&schema(plain, SchemaType::Avro)).unwrap();
        assert_eq!(desired.fingerprint, same.fingerprint);
        assert_eq!(desired.fingerprint.len(), 64);
        assert_eq!(
            desired.fingerprint,
            sha256_hex(
                br#"{"name":"acme.Order","type":"record","fields":[{"name":"id","type":"string"},{"name":"amount","type":"long"}]}"#
            )
        );
        // A new field changes it.
        let more = ORDER.replace(
            r#"{"name": "id""#,
            r#"{"name": "note", "type": "string", "default": ""}, {"name": "id""#,
        );
        assert_ne!(
            desired_schema(&schema(&more, SchemaType::Avro))
                .unwrap()
                .fingerprint,
            desired.fingerprint
        );
    }

    #[test]
    fn the_upload_keeps_defaults_and_ignores_formatting() {
        let desired = desired_schema(&schema(ORDER, SchemaType::Json)).unwrap();
        assert_eq!(desired.payload["type"], "JSON");
        let text = desired.payload["schema"].as_str().unwrap();
        assert!(text.contains(r#""default":0"#), "{text}");
        assert!(!text.contains('\n'));
        assert_eq!(
            desired.payload["properties"][FINGERPRINT_PROPERTY],
            desired.fingerprint.as_str()
        );
        assert!(!schema_differs(&desired, Some(("JSON", ORDER))));
        assert!(schema_differs(&desired, Some(("AVRO", ORDER))));
        assert!(schema_differs(&desired, None));
        let no_default = ORDER.replace(r#", "default": 0"#, "");
        assert!(schema_differs(&desired, Some(("JSON", &no_default))));
    }

    #[test]
    fn a_definition_that_is_not_an_avro_record_is_refused_with_a_reason() {
        let bad = desired_schema(&schema(
            r#"{"type": "record", "name": "X"}"#,
            SchemaType::Avro,
        ));
        assert!(bad.unwrap_err().0.contains("not a valid Avro schema"));
        let not_record = desired_schema(&schema(r#"{"type": "string"}"#, SchemaType::Avro));
        assert!(not_record.unwrap_err().0.contains("must be an Avro record"));
        assert!(desired_schema(&schema("{", SchemaType::Avro)).is_err());
    }

    #[test]
    fn policies_left_out_of_the_spec_are_removed_and_others_set_once() {
        let desired = desired_policies(&spec(
            r#"
policies:
  retentionMinutes: 60
  retentionSizeMegabytes: -1
  messageTtlSeconds: 300
  backlogQuota: {sizeMegabytes: 10, policy: ProducerException}
schema: {type: AVRO, definition: '{"type":"record","name":"A","fields":[]}'}
"#,
        ));
        assert_eq!(
            desired[&PolicyKind::Retention],
            PolicyValue::Retention {
                minutes: 60,
                size_mb: -1
            }
        );
        assert_eq!(
            desired[&PolicyKind::BacklogSize],
            PolicyValue::Backlog {
                limit: 10 * 1024 * 1024,
                policy: "producer_exception"
            }
        );
        assert_eq!(
            desired[&PolicyKind::SchemaCompatibility],
            PolicyValue::Strategy("FULL")
        );
        assert!(!desired.contains_key(&PolicyKind::BacklogAge));

        // Unchanged: no call at all.
        assert!(policy_calls(&desired, &desired).is_empty());

        // The TTL changed by hand, maxProducers was removed from the spec.
        let mut live = desired.clone();
        live.insert(PolicyKind::MessageTtl, PolicyValue::Limit(10));
        live.insert(PolicyKind::MaxProducers, PolicyValue::Limit(5));
        live.remove(&PolicyKind::Retention);
        let calls = policy_calls(&desired, &live);
        assert_eq!(
            calls,
            vec![
                PolicyCall::Set(
                    PolicyKind::Retention,
                    PolicyValue::Retention {
                        minutes: 60,
                        size_mb: -1
                    }
                ),
                PolicyCall::Set(PolicyKind::MessageTtl, PolicyValue::Limit(300)),
                PolicyCall::Remove(PolicyKind::MaxProducers),
            ]
        );
        assert!(desired_policies(&spec("{}")).is_empty());
        let mut by_age = spec("{}");
        by_age.policies.backlog_quota = Some(BacklogQuota {
            size_megabytes: None,
            age_seconds: Some(600),
            policy: BacklogPolicy::default(),
        });
        assert_eq!(
            desired_policies(&by_age),
            Policies::from([(
                PolicyKind::BacklogAge,
                PolicyValue::Backlog {
                    limit: 600,
                    policy: "producer_request_hold"
                }
            )])
        );
    }

    #[test]
    fn a_retention_that_shrinks_or_is_new_comes_after_the_backlog_quotas() {
        let desired = desired_policies(&spec(
            r#"
policies:
  retentionMinutes: 60
  retentionSizeMegabytes: 1024
  backlogQuota: {sizeMegabytes: 512}
"#,
        ));
        let kinds = |calls: Vec<PolicyCall>| -> Vec<PolicyKind> {
            calls
                .into_iter()
                .map(|c| match c {
                    PolicyCall::Set(k, _) | PolicyCall::Remove(k) => k,
                })
                .collect()
        };
        // New: the broker's default quota is larger than the retention.
        assert_eq!(
            kinds(policy_calls(&desired, &Policies::new())),
            [PolicyKind::BacklogSize, PolicyKind::Retention]
        );
        // Growing: the retention first, so the larger quota fits under it.
        let smaller = Policies::from([(
            PolicyKind::Retention,
            PolicyValue::Retention {
                minutes: 30,
                size_mb: 100,
            },
        )]);
        assert_eq!(
            kinds(policy_calls(&desired, &smaller)),
            [PolicyKind::Retention, PolicyKind::BacklogSize]
        );
        // Shrinking from no limit: after the quota.
        let unlimited = Policies::from([(
            PolicyKind::Retention,
            PolicyValue::Retention {
                minutes: -1,
                size_mb: -1,
            },
        )]);
        assert_eq!(
            kinds(policy_calls(&desired, &unlimited)),
            [PolicyKind::BacklogSize, PolicyKind::Retention]
        );
        assert!(at_least(-1, 5) && at_least(5, 5) && !at_least(5, -1) && !at_least(4, 5));
    }

    #[test]
    fn deletion_waits_for_clients_unless_forced_or_the_owner_goes() {
        let mut spec = spec("{}");
        let busy = TopicUsage {
            producers: 2,
            consumers: 1,
            backlog: 340,
        };
        match deletion_decision(&spec, DeletionCause::Own, busy) {
            DeletionDecision::Blocked { usage, message } => {
                assert_eq!(usage, busy);
                assert!(message.contains("2 producer(s), 1 consumer(s) and 340"));
                assert!(message.contains("spec.deletion.force"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            deletion_decision(&spec, DeletionCause::Own, TopicUsage::default()),
            DeletionDecision::Delete { force: false }
        );
        assert_eq!(
            deletion_decision(&spec, DeletionCause::Owner { retain: false }, busy),
            DeletionDecision::Delete { force: true }
        );
        assert_eq!(
            deletion_decision(&spec, DeletionCause::Owner { retain: true }, busy),
            DeletionDecision::Retain
        );
        spec.deletion.force = true;
        assert_eq!(
            deletion_decision(&spec, DeletionCause::Own, busy),
            DeletionDecision::Delete { force: true }
        );
        spec.deletion_policy = DeletionPolicy::Retain;
        assert_eq!(
            deletion_decision(&spec, DeletionCause::Owner { retain: false }, busy),
            DeletionDecision::Retain
        );
    }
}
