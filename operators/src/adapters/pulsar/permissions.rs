//! Who may do what: the roles granted on a topic, and the roles allowed on
//! each subscription of a namespace. Every call names one role or one
//! subscription, so a change never rewrites another's grant.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::json;

use ossature_crds::TopicAction;
use ossature_model::topics::PulsarTopic;

use super::Pulsar;
use crate::adapters::{BackendError, Change};

/// Role -> actions, as the broker writes them (`produce`, `consume`).
pub type LivePermissions = BTreeMap<String, BTreeSet<String>>;

impl Pulsar {
    /// `/admin/v2/namespaces/<tenant>/<namespace>/permissions/<tail>`.
    fn permissions_url(&self, tenant: &str, namespace: &str, tail: &[&str]) -> reqwest::Url {
        let mut segments = vec![
            "admin",
            "v2",
            "namespaces",
            tenant,
            namespace,
            "permissions",
        ];
        segments.extend_from_slice(tail);
        self.url(&segments)
    }

    /// The roles granted on the topic (with those of its namespace, which
    /// Ossature grants none of).
    pub async fn topic_permissions(
        &self,
        topic: &PulsarTopic,
    ) -> Result<LivePermissions, BackendError> {
        self.read(
            self.topic_url(topic, &["permissions"]),
            &format!("read permissions of topic {topic}"),
        )
        .await
    }

    /// Sets the role's actions on the topic (replacing that role's only).
    pub async fn grant(
        &self,
        topic: &PulsarTopic,
        role: &str,
        actions: &BTreeSet<TopicAction>,
    ) -> Result<Change, BackendError> {
        let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        self.write(
            Method::POST,
            self.topic_url(topic, &["permissions", role]),
            Some(json!(actions)),
            &format!("grant {} on topic {topic} to {role}", actions.join(" and ")),
        )
        .await?;
        Ok(Change::Updated)
    }

    /// Takes the role's grant on the topic away (nothing when it has none).
    pub async fn revoke(&self, topic: &PulsarTopic, role: &str) -> Result<Change, BackendError> {
        self.write(
            Method::DELETE,
            self.topic_url(topic, &["permissions", role]),
            None,
            &format!("revoke the grant of {role} on topic {topic}"),
        )
        .await?;
        Ok(Change::Deleted)
    }

    /// Subscription -> the roles allowed on it, in one namespace; `None`
    /// when the namespace does not exist (any more).
    pub async fn subscription_permissions(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<Option<LivePermissions>, BackendError> {
        self.read_optional(
            self.permissions_url(tenant, namespace, &["subscription"]),
            &format!("read subscription permissions of namespace {tenant}/{namespace}"),
        )
        .await
    }

    /// Sets the roles allowed on a subscription (the broker replaces the set).
    pub async fn set_subscription_roles(
        &self,
        tenant: &str,
        namespace: &str,
        subscription: &str,
        roles: &BTreeSet<String>,
    ) -> Result<Change, BackendError> {
        self.write(
            Method::POST,
            self.permissions_url(tenant, namespace, &["subscription", subscription]),
            Some(json!(roles)),
            &format!("allow subscription {subscription} in {tenant}/{namespace} to its services"),
        )
        .await?;
        Ok(Change::Updated)
    }

    /// Takes one role off a subscription.
    pub async fn revoke_subscription_role(
        &self,
        tenant: &str,
        namespace: &str,
        subscription: &str,
        role: &str,
    ) -> Result<Change, BackendError> {
        self.write(
            Method::DELETE,
            self.permissions_url(tenant, namespace, &[subscription, role]),
            None,
            &format!("take {role} off subscription {subscription} in {tenant}/{namespace}"),
        )
        .await?;
        Ok(Change::Deleted)
    }
}
