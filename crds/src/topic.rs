//! `Topic`: a Pulsar topic of an environment, its schema and its policies.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, DeletionPolicy};

/// A Pulsar topic in an environment's namespace (`tn-<tenant>--<env>`). Its
/// Pulsar name is derived, `persistent://<tenant>/<environment>/<name>`,
/// never written by hand. Its schema is registered before any client may
/// use it, with the compatibility strategy enforced by the broker; its
/// policies are applied, read back, and unset when removed from the spec.
/// Access is granted by the ServiceIdentities that name it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A Pulsar topic of an environment: partitions, schema with enforced compatibility, and policies.",
    version = "v1alpha1",
    kind = "Topic",
    plural = "topics",
    shortname = "otopic",
    category = "ossature",
    namespaced,
    status = "TopicStatus",
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Schema","type":"integer","jsonPath":".status.schemaVersion"}"#,
    printcolumn = r#"{"name":"Backlog","type":"integer","jsonPath":".status.backlog"}"#,
    printcolumn = r#"{"name":"Producers","type":"integer","jsonPath":".status.producers"}"#,
    printcolumn = r#"{"name":"Consumers","type":"integer","jsonPath":".status.consumers"}"#,
    printcolumn = r#"{"name":"Pulsar","type":"string","jsonPath":".status.pulsarTopic","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 128").message("topic name must be at most 128 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit: it becomes the Pulsar topic's local name"),
    validation = Rule::new("!self.metadata.name.contains('-partition-')").message("topic name must not contain '-partition-': Pulsar reserves it for the partitions of a partitioned topic")
)]
#[x_kube(
    validation = Rule::new("has(self.partitions) == has(oldSelf.partitions)").message("a topic cannot move between partitioned and non-partitioned: Pulsar cannot convert one into the other; create a new Topic"),
    validation = Rule::new("!has(oldSelf.schema) || has(self.schema)").message("a schema cannot be removed from a topic: its producers and consumers rely on it; create a new Topic"),
    validation = Rule::new("!has(self.schema) || self.persistence == 'Persistent'").message("a schema needs a Persistent topic: the broker keeps schemas with stored messages")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// `Persistent` (the default: messages are stored until acknowledged and
    /// retained by the policies) or `NonPersistent`. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("persistence is immutable: create a new Topic"))]
    pub persistence: Persistence,

    /// Partitions of a partitioned topic; leave out for a non-partitioned
    /// topic. It can only grow: Pulsar cannot take partitions away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions can only grow: Pulsar cannot remove partitions; create a new Topic for fewer"))]
    pub partitions: Option<i32>,

    /// The schema every producer and consumer must use. Once set it cannot be
    /// removed; a new definition is checked for compatibility before it is
    /// registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<TopicSchema>,

    /// Retention, time to live, backlog quota and limits; each one left out
    /// is unset on the topic (the environment's namespace rules apply).
    #[serde(default)]
    pub policies: TopicPolicies,

    /// What happens when this Topic is deleted on its own.
    #[serde(default)]
    pub deletion: TopicDeletion,

    /// Whether the Pulsar topic is removed (`Delete`, the default) or kept
    /// (`Retain`) when the Topic, its Environment or its Tenant is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Persistence {
    #[default]
    Persistent,
    NonPersistent,
}

/// A schema: an Avro record definition, as JSON text.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == oldSelf.type").message("schema.type is immutable: Pulsar treats a change between AVRO and JSON as incompatible; create a new Topic")
)]
pub struct TopicSchema {
    /// `AVRO` (binary Avro) or `JSON` (JSON messages described by an Avro
    /// record, as Pulsar requires).
    #[serde(rename = "type")]
    pub schema_type: SchemaType,

    /// The Avro record schema, as JSON text: `{"type": "record", "name":
    /// "Order", "fields": [...]}`. A field added later needs a default for
    /// the FULL compatibility strategy to accept it.
    #[schemars(length(min = 2, max = 32768))]
    #[x_kube(validation = Rule::new(r#"self.matches('^\\s*\\{[\\s\\S]*"type"\\s*:\\s*"record"[\\s\\S]*\\}\\s*$')"#).message(r#"schema.definition must be an Avro record schema as JSON text, such as {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}"#))]
    pub definition: String,

    /// How a new definition must relate to the registered ones. Default:
    /// `FULL` (old and new readers read old and new messages).
    #[serde(default)]
    pub compatibility: Compatibility,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchemaType {
    #[serde(rename = "AVRO")]
    Avro,
    #[serde(rename = "JSON")]
    Json,
}

/// Pulsar's schema compatibility strategies. `ALWAYS_COMPATIBLE` is left
/// out: it would let any schema in, which is what a registry is for to stop.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    Backward,
    Forward,
    #[default]
    Full,
    BackwardTransitive,
    ForwardTransitive,
    FullTransitive,
    AlwaysIncompatible,
}

impl Compatibility {
    /// As Pulsar writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::Forward => "FORWARD",
            Compatibility::Full => "FULL",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::AlwaysIncompatible => "ALWAYS_INCOMPATIBLE",
        }
    }
}

/// Topic-level policies. Every field is optional: one left out is unset on
/// the topic, so the namespace's value applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.retentionMinutes) == has(self.retentionSizeMegabytes)").message("retentionMinutes and retentionSizeMegabytes are set together (Pulsar keeps them as one policy); use -1 for no limit"),
    validation = Rule::new("!has(self.backlogQuota) || !has(self.backlogQuota.sizeMegabytes) || !has(self.retentionSizeMegabytes) || self.retentionSizeMegabytes < 0 || self.backlogQuota.sizeMegabytes < self.retentionSizeMegabytes").message("backlogQuota.sizeMegabytes must be below retentionSizeMegabytes: Pulsar refuses a backlog larger than what it retains"),
    validation = Rule::new("!has(self.backlogQuota) || !has(self.backlogQuota.ageSeconds) || !has(self.retentionMinutes) || self.retentionMinutes < 0 || self.backlogQuota.ageSeconds < self.retentionMinutes * 60").message("backlogQuota.ageSeconds must be below retentionMinutes: Pulsar refuses a backlog older than what it retains")
)]
pub struct TopicPolicies {
    /// How long acknowledged messages are kept, in minutes; -1 keeps them
    /// without a time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 5256000))]
    #[x_kube(validation = Rule::new("self != 0").message("retentionMinutes is -1 (no limit) or at least 1; leave it out to use the namespace's retention"))]
    pub retention_minutes: Option<i64>,

    /// How much of acknowledged messages is kept, in MiB; -1 for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1, max = 1048576))]
    #[x_kube(validation = Rule::new("self != 0").message("retentionSizeMegabytes is -1 (no limit) or at least 1; leave it out to use the namespace's retention"))]
    pub retention_size_megabytes: Option<i64>,

    /// Unacknowledged messages older than this many seconds are acknowledged
    /// on the consumers' behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub message_ttl_seconds: Option<i32>,

    /// How large or old the backlog may grow, and what happens beyond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog_quota: Option<BacklogQuota>,

    /// Most producers connected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_producers: Option<i32>,

    /// Most consumers connected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_consumers: Option<i32>,

    /// Whether the broker drops messages a producer sends twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduplication: Option<bool>,
}

/// A limit on the backlog: by size, by age, or both, with one policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.sizeMegabytes) || has(self.ageSeconds)").message("backlogQuota sets sizeMegabytes, ageSeconds or both")
)]
pub struct BacklogQuota {
    /// Largest backlog, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub size_megabytes: Option<i64>,
    /// Oldest unacknowledged message, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31536000))]
    pub age_seconds: Option<i64>,
    /// What the broker does at the limit. Default: `ProducerRequestHold`.
    #[serde(default)]
    pub policy: BacklogPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BacklogPolicy {
    /// Producers wait until the backlog shrinks.
    #[default]
    ProducerRequestHold,
    /// Producers get an error.
    ProducerException,
    /// The oldest unacknowledged messages are dropped.
    ConsumerBacklogEviction,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicDeletion {
    /// Delete the Pulsar topic even with clients connected or messages not
    /// yet consumed. Without it such a deletion waits (`DeletionBlocked`)
    /// until they are gone. The deletion of the Topic's Environment or
    /// Tenant always goes through.
    #[serde(default)]
    pub force: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `MessagingReady`, `SchemaReady`; `Ready=False` with reason
    /// `SchemaIncompatible` when the broker refuses a new definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The Pulsar topic, `persistent://<tenant>/<environment>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_topic: Option<String>,
    /// Version of the registered schema, as the broker numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// SHA-256 (hex) of the registered definition's Avro canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_fingerprint: Option<String>,
    /// Messages not yet acknowledged, summed over subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<i64>,
    /// Producers connected when last looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<i32>,
    /// Consumers connected when last looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<i32>,
    /// The services granted access to it, from every ServiceIdentity of
    /// its namespace: "which services use this topic".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_to: Vec<TopicUser>,
}

crate::conditioned!(TopicStatus);

/// One service's access to a topic, as applied in Pulsar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicUser {
    /// The ServiceIdentity, in the Topic's namespace.
    pub service: String,
    /// `Produce`, `Consume` or both.
    pub actions: Vec<crate::TopicAction>,
    /// The subscriptions it consumes with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
}
