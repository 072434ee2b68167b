//! Topics: created explicitly (the broker creates none by itself), their
//! partitions grown, their runtime state read, their topic-level policies
//! read and written one by one, their subscriptions made ahead of their
//! consumers, and their deletion.

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use ossature_model::topics::{
    Policies, PolicyCall, PolicyKind, PolicyValue, PulsarTopic, TopicUsage,
};

use super::{Pulsar, refused};
use crate::adapters::{Backend, BackendError, Change};

/// A topic as the broker has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicShape {
    NonPartitioned,
    Partitioned(i32),
}

#[derive(Deserialize)]
struct PartitionedMetadata {
    partitions: i32,
}

/// What the stats of a topic (or the broker's sum over a partitioned
/// topic's partitions) say about its clients and backlog.
#[derive(Deserialize, Default)]
struct Stats {
    #[serde(default)]
    publishers: Vec<Value>,
    #[serde(default)]
    subscriptions: std::collections::BTreeMap<String, SubscriptionStats>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SubscriptionStats {
    #[serde(default)]
    msg_backlog: i64,
    #[serde(default)]
    consumers: Vec<Value>,
}

impl Stats {
    fn usage(&self) -> TopicUsage {
        TopicUsage {
            producers: self.publishers.len() as i64,
            consumers: self
                .subscriptions
                .values()
                .map(|s| s.consumers.len() as i64)
                .sum(),
            backlog: self.subscriptions.values().map(|s| s.msg_backlog).sum(),
        }
    }
}

/// One backlog quota, as the topic's `backlogQuotaMap` holds it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Quota {
    #[serde(default)]
    limit_size: i64,
    #[serde(default)]
    limit_time: i64,
    policy: String,
}

/// Pulsar's names of the backlog policies the spec can ask for.
const BACKLOG_POLICIES: [&str; 3] = [
    "producer_request_hold",
    "producer_exception",
    "consumer_backlog_eviction",
];

/// The path segment of each policy under the topic, and the backlog quota
/// type it stands for.
fn policy_path(kind: PolicyKind) -> (&'static str, Option<&'static str>) {
    match kind {
        PolicyKind::Retention => ("retention", None),
        PolicyKind::MessageTtl => ("messageTTL", None),
        PolicyKind::BacklogSize => ("backlogQuota", Some("destination_storage")),
        PolicyKind::BacklogAge => ("backlogQuota", Some("message_age")),
        PolicyKind::MaxProducers => ("maxProducers", None),
        PolicyKind::MaxConsumers => ("maxConsumers", None),
        PolicyKind::Deduplication => ("deduplicationEnabled", None),
        PolicyKind::SchemaCompatibility => ("schemaCompatibilityStrategy", None),
    }
}

/// The topic's own policies from the backlog quota map: each quota type
/// with a limit of its own.
fn backlog_policies(map: &std::collections::BTreeMap<String, Quota>, policies: &mut Policies) {
    for (kind, quota_type, limit) in [
        (
            PolicyKind::BacklogSize,
            "destination_storage",
            map.get("destination_storage").map(|q| q.limit_size),
        ),
        (
            PolicyKind::BacklogAge,
            "message_age",
            map.get("message_age").map(|q| q.limit_time),
        ),
    ] {
        let (Some(quota), Some(limit)) = (map.get(quota_type), limit) else {
            continue;
        };
        // A policy Pulsar adds later reads as different, so it is put back.
        let policy = BACKLOG_POLICIES
            .iter()
            .find(|p| **p == quota.policy)
            .copied()
            .unwrap_or("unknown");
        policies.insert(kind, PolicyValue::Backlog { limit, policy });
    }
}

/// The body that sets one policy (a message TTL goes in the query).
fn policy_body(kind: PolicyKind, value: &PolicyValue) -> Value {
    match value {
        PolicyValue::Retention { minutes, size_mb } => {
            json!({"retentionTimeInMinutes": minutes, "retentionSizeInMB": size_mb})
        }
        PolicyValue::Limit(n) => json!(n),
        PolicyValue::Flag(on) => json!(on),
        PolicyValue::Strategy(s) => json!(s),
        // Each quota type reads its own limit field back.
        PolicyValue::Backlog { limit, policy } if kind == PolicyKind::BacklogAge => {
            json!({"limitTime": limit, "policy": policy})
        }
        PolicyValue::Backlog { limit, policy } => json!({"limitSize": limit, "policy": policy}),
    }
}

impl Pulsar {
    pub(super) fn topic_url(&self, topic: &PulsarTopic, tail: &[&str]) -> Url {
        let mut segments = vec![
            "admin",
            "v2",
            topic.domain(),
            &topic.tenant,
            &topic.namespace,
            &topic.local,
        ];
        segments.extend_from_slice(tail);
        self.url(&segments)
    }

    /// How the topic exists, or `None` when it does not (nor its namespace).
    pub async fn topic_shape(
        &self,
        topic: &PulsarTopic,
    ) -> Result<Option<TopicShape>, BackendError> {
        let found: Option<PartitionedMetadata> = self
            .read_optional(
                self.topic_url(topic, &["partitions"]),
                &format!("read topic {topic}"),
            )
            .await?;
        Ok(found.map(|m| match m.partitions {
            0 => TopicShape::NonPartitioned,
            n => TopicShape::Partitioned(n),
        }))
    }

    /// Creates the topic, partitioned when `partitions` is given.
    pub async fn create_topic(
        &self,
        topic: &PulsarTopic,
        partitions: Option<i32>,
    ) -> Result<Change, BackendError> {
        let (url, body) = match partitions {
            Some(n) => (self.topic_url(topic, &["partitions"]), Some(json!(n))),
            None => (self.topic_url(topic, &[]), None),
        };
        let reply = self.send(Method::PUT, url, body).await?;
        match reply.status {
            s if s.is_success() => Ok(Change::Created),
            // Created in between by another reconcile: it is there.
            StatusCode::CONFLICT => Ok(Change::Unchanged),
            _ => Err(refused(&format!("create topic {topic}"), &reply)),
        }
    }

    /// Raises the partitions of a partitioned topic to `partitions`.
    pub async fn grow_partitions(
        &self,
        topic: &PulsarTopic,
        partitions: i32,
    ) -> Result<Change, BackendError> {
        self.write(
            Method::POST,
            self.topic_url(topic, &["partitions"]),
            Some(json!(partitions)),
            &format!("grow topic {topic} to {partitions} partitions"),
        )
        .await?;
        Ok(Change::Updated)
    }

    /// The durable subscription `name` of a persistent topic (of each of
    /// its partitions), created when missing. It starts at the latest
    /// message, as a consumer's would: from then on, what is published
    /// waits for its consumers, however late they come. Read first, so a
    /// subscription that exists costs no write.
    pub async fn ensure_subscription(
        &self,
        topic: &PulsarTopic,
        name: &str,
    ) -> Result<Change, BackendError> {
        let action = format!("create subscription {name} of topic {topic}");
        let subscriptions: Option<Vec<String>> = self
            .read_optional(
                self.topic_url(topic, &["subscriptions"]),
                &format!("list subscriptions of topic {topic}"),
            )
            .await?;
        match subscriptions {
            Some(subscriptions) if subscriptions.iter().any(|s| s == name) => {
                return Ok(Change::Unchanged);
            }
            Some(_) => {}
            None => {
                return Err(Backend::Pulsar.refused(
                    &action,
                    StatusCode::NOT_FOUND.as_u16(),
                    "the topic does not exist",
                ));
            }
        }
        let reply = self
            .send(
                Method::PUT,
                self.topic_url(topic, &["subscription", name]),
                None,
            )
            .await?;
        match reply.status {
            s if s.is_success() => Ok(Change::Created),
            // Made in between by a consumer or another reconcile.
            StatusCode::CONFLICT => Ok(Change::Unchanged),
            _ => Err(refused(&action, &reply)),
        }
    }

    /// Deletes the topic (all its partitions); `force` disconnects its
    /// clients and drops its subscriptions. `Absent` when already gone.
    pub async fn delete_topic(
        &self,
        topic: &PulsarTopic,
        partitioned: bool,
        force: bool,
    ) -> Result<Change, BackendError> {
        let tail: &[&str] = if partitioned { &["partitions"] } else { &[] };
        let mut url = self.topic_url(topic, tail);
        url.query_pairs_mut()
            .append_pair("force", if force { "true" } else { "false" });
        let reply = self.send(Method::DELETE, url, None).await?;
        match reply.status {
            s if s.is_success() => Ok(Change::Deleted),
            StatusCode::NOT_FOUND => Ok(Change::Absent),
            _ => Err(refused(&format!("delete topic {topic}"), &reply)),
        }
    }

    /// Producers, consumers and backlog of the topic, summed over its
    /// partitions by the broker; `None` when it does not exist.
    pub async fn topic_usage(
        &self,
        topic: &PulsarTopic,
        partitioned: bool,
    ) -> Result<Option<TopicUsage>, BackendError> {
        let tail = if partitioned {
            "partitioned-stats"
        } else {
            "stats"
        };
        let stats: Option<Stats> = self
            .read_optional(
                self.topic_url(topic, &[tail]),
                &format!("read stats of topic {topic}"),
            )
            .await?;
        Ok(stats.map(|s| s.usage()))
    }

    /// The policies set on the topic itself (not those it inherits).
    pub async fn topic_policies(&self, topic: &PulsarTopic) -> Result<Policies, BackendError> {
        let read = |tail: &'static str| {
            let url = self.topic_url(topic, &[tail]);
            let action = format!("read {tail} of topic {topic}");
            async move { self.read::<Option<Value>>(url, &action).await }
        };
        let mut policies = Policies::new();
        if let Some(retention) = read("retention").await? {
            let minutes = retention["retentionTimeInMinutes"].as_i64();
            let size_mb = retention["retentionSizeInMB"].as_i64();
            if let (Some(minutes), Some(size_mb)) = (minutes, size_mb) {
                policies.insert(
                    PolicyKind::Retention,
                    PolicyValue::Retention { minutes, size_mb },
                );
            }
        }
        for kind in [
            PolicyKind::MessageTtl,
            PolicyKind::MaxProducers,
            PolicyKind::MaxConsumers,
        ] {
            if let Some(n) = read(policy_path(kind).0).await?.and_then(|v| v.as_i64()) {
                policies.insert(kind, PolicyValue::Limit(n));
            }
        }
        if let Some(on) = read("deduplicationEnabled")
            .await?
            .and_then(|v| v.as_bool())
        {
            policies.insert(PolicyKind::Deduplication, PolicyValue::Flag(on));
        }
        let strategy = read("schemaCompatibilityStrategy")
            .await?
            .and_then(|v| v.as_str().and_then(super::compatibility_strategy));
        if let Some(strategy) = strategy.filter(|s| *s != "UNDEFINED") {
            policies.insert(
                PolicyKind::SchemaCompatibility,
                PolicyValue::Strategy(strategy),
            );
        }
        let quotas = read("backlogQuotaMap").await?.unwrap_or_default();
        let quotas = serde_json::from_value(quotas).unwrap_or_default();
        backlog_policies(&quotas, &mut policies);
        Ok(policies)
    }

    /// Sets or removes one topic-level policy.
    pub async fn apply_policy(
        &self,
        topic: &PulsarTopic,
        call: &PolicyCall,
    ) -> Result<Change, BackendError> {
        let kind = match call {
            PolicyCall::Set(kind, _) | PolicyCall::Remove(kind) => *kind,
        };
        let (tail, quota_type) = policy_path(kind);
        let mut url = self.topic_url(topic, &[tail]);
        if let Some(quota_type) = quota_type {
            url.query_pairs_mut()
                .append_pair("backlogQuotaType", quota_type);
        }
        let (method, body, change) = match call {
            PolicyCall::Set(_, PolicyValue::Limit(ttl)) if kind == PolicyKind::MessageTtl => {
                url.query_pairs_mut()
                    .append_pair("messageTTL", &ttl.to_string());
                (Method::POST, None, Change::Updated)
            }
            PolicyCall::Set(_, value) => {
                let method = if kind == PolicyKind::SchemaCompatibility {
                    Method::PUT
                } else {
                    Method::POST
                };
                (method, Some(policy_body(kind, value)), Change::Updated)
            }
            PolicyCall::Remove(_) => (Method::DELETE, None, Change::Deleted),
        };
        let verb = if change == Change::Deleted {
            "remove"
        } else {
            "set"
        };
        self.write(
            method,
            url,
            body,
            &format!("{verb} {tail} of topic {topic}"),
        )
        .await?;
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sum_clients_and_backlog_over_subscriptions() {
        let stats: Stats = serde_json::from_value(json!({
            "publishers": [{"producerName": "a"}, {"producerName": "b"}],
            "subscriptions": {
                "one": {"msgBacklog": 3, "consumers": [{}, {}]},
                "two": {"msgBacklog": 4, "consumers": []},
            },
            "msgRateIn": 0.0,
        }))
        .unwrap();
        assert_eq!(
            stats.usage(),
            TopicUsage {
                producers: 2,
                consumers: 2,
                backlog: 7
            }
        );
        let idle: Stats = serde_json::from_value(json!({"subscriptions": {}})).unwrap();
        assert_eq!(idle.usage(), TopicUsage::default());
    }

    #[test]
    fn backlog_quotas_read_back_by_type() {
        let map = serde_json::from_value(json!({
            "message_age": {"limit": 0, "limitSize": 0, "limitTime": 600, "policy": "producer_request_hold"},
            "destination_storage": {"limit": 10485760, "limitSize": 10485760, "limitTime": 0, "policy": "producer_exception"},
        }))
        .unwrap();
        let mut policies = Policies::new();
        backlog_policies(&map, &mut policies);
        assert_eq!(
            policies,
            Policies::from([
                (
                    PolicyKind::BacklogSize,
                    PolicyValue::Backlog {
                        limit: 10485760,
                        policy: "producer_exception"
                    }
                ),
                (
                    PolicyKind::BacklogAge,
                    PolicyValue::Backlog {
                        limit: 600,
                        policy: "producer_request_hold"
                    }
                ),
            ])
        );
    }

    #[test]
    fn policies_are_sent_as_pulsar_reads_them() {
        assert_eq!(
            policy_body(
                PolicyKind::Retention,
                &PolicyValue::Retention {
                    minutes: 60,
                    size_mb: -1
                }
            ),
            json!({"retentionTimeInMinutes": 60, "retentionSizeInMB": -1})
        );
        assert_eq!(
            policy_body(
                PolicyKind::SchemaCompatibility,
                &PolicyValue::Strategy("FULL")
            ),
            json!("FULL")
        );
        let backlog = PolicyValue::Backlog {
            limit: 600,
            policy: "producer_exception",
        };
        assert_eq!(
            policy_body(PolicyKind::BacklogAge, &backlog),
            json!({"limitTime": 600, "policy": "producer_exception"})
        );
        assert_eq!(
            policy_body(PolicyKind::BacklogSize, &backlog),
            json!({"limitSize": 600, "policy": "producer_exception"})
        );
        assert_eq!(policy_path(PolicyKind::MessageTtl), ("messageTTL", None));
        assert_eq!(
            policy_path(PolicyKind::BacklogAge),
            ("backlogQuota", Some("message_age"))
        );
    }
}
