//! Pulsar through its admin REST API (v2): tenants, namespaces with their
//! retention and schema policies, and (in the modules below) topics with
//! their policies and schemas.

mod permissions;
mod schemas;
mod topics;

pub use permissions::LivePermissions;
pub use schemas::{LiveSchema, SchemaVerdict, broker_words};
pub use topics::TopicShape;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use reqwest::{Client, Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// Its path from before the adapters shared it.
pub use super::http::truncate;
use super::{Backend, BackendError, Calls, Change, Verb};

/// Strategies Pulsar knows; it silently ignores any other name, so they are
/// checked before sending.
const COMPATIBILITY_STRATEGIES: [&str; 9] = [
    "UNDEFINED",
    "ALWAYS_INCOMPATIBLE",
    "ALWAYS_COMPATIBLE",
    "BACKWARD",
    "FORWARD",
    "FULL",
    "BACKWARD_TRANSITIVE",
    "FORWARD_TRANSITIVE",
    "FULL_TRANSITIVE",
];

/// Topic domains; a namespace can hold topics of both.
const DOMAINS: [&str; 2] = ["persistent", "non-persistent"];

pub use ossature_model::messaging::{MessagingLimits, NamespacePolicy};
use ossature_model::topics::PulsarTopic;

/// A tenant as Pulsar stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantInfo {
    #[serde(default)]
    pub admin_roles: Vec<String>,
    #[serde(default)]
    pub allowed_clusters: Vec<String>,
}

impl TenantInfo {
    /// The desired tenant: no admin roles, since only the operator's
    /// superuser administers it; lists sorted so writes are deterministic.
    pub fn desired(allowed_clusters: &[String]) -> Self {
        let clusters: BTreeSet<&String> = allowed_clusters.iter().collect();
        TenantInfo {
            admin_roles: Vec::new(),
            allowed_clusters: clusters.into_iter().cloned().collect(),
        }
    }
}

/// Whether the stored tenant differs from the desired one; Pulsar keeps both
/// lists as sets, so order and repeats do not count.
pub fn tenant_differs(current: &TenantInfo, desired: &TenantInfo) -> bool {
    fn set(v: &[String]) -> BTreeSet<&str> {
        v.iter().map(String::as_str).collect()
    }
    set(&current.admin_roles) != set(&desired.admin_roles)
        || set(&current.allowed_clusters) != set(&desired.allowed_clusters)
}

/// A namespace's retention policy, as the retention endpoint reads and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub retention_time_in_minutes: i32,
    // camelCase would give "retentionSizeInMb"; Pulsar spells it "MB".
    #[serde(rename = "retentionSizeInMB")]
    pub retention_size_in_mb: i64,
}

impl From<&NamespacePolicy> for Retention {
    fn from(policy: &NamespacePolicy) -> Self {
        Retention {
            retention_time_in_minutes: policy.retention_minutes,
            retention_size_in_mb: policy.retention_size_mb,
        }
    }
}

/// Whether the namespace's retention (None when never set) must be written.
pub fn retention_differs(current: Option<&Retention>, desired: &Retention) -> bool {
    current != Some(desired)
}

/// The strategy name as Pulsar spells it, or None when Pulsar does not know it.
pub fn compatibility_strategy(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    COMPATIBILITY_STRATEGIES
        .iter()
        .copied()
        .find(|known| *known == upper)
}

/// The backlog quota Ossature sets: on stored data, holding producers back.
const BACKLOG_QUOTA_TYPE: &str = "destination_storage";
const BACKLOG_POLICY: &str = "producer_request_hold";

/// The limits a namespace's policies hold, as Ossature sets them: a backlog
/// quota of another policy, or with a time limit, reads as none, so it is
/// written again.
pub fn live_limits(policies: &Value) -> MessagingLimits {
    let positive = |v: &Value| v.as_i64().filter(|n| *n > 0);
    let backlog = &policies["backlog_quota_map"][BACKLOG_QUOTA_TYPE];
    let ours =
        backlog["policy"] == BACKLOG_POLICY && backlog["limitTime"].as_i64().unwrap_or(0) <= 0;
    let rate = policies["publishMaxMessageRate"]
        .as_object()
        .and_then(|rates| rates.values().next());
    MessagingLimits {
        max_topics: positive(&policies["max_topics_per_namespace"]).map(|n| n as i32),
        backlog_bytes: positive(&backlog["limitSize"]).filter(|_| ours),
        publish_rate: rate
            .filter(|r| r["publishThrottlingRateInByte"].as_i64().unwrap_or(-1) <= 0)
            .and_then(|r| positive(&r["publishThrottlingRateInMsg"]))
            .map(|n| n as i32),
    }
}

/// Splits `persistent://tenant/ns/local` into its domain and local name.
pub fn topic_parts(topic: &str) -> Option<(&str, &str)> {
    let (domain, rest) = topic.split_once("://")?;
    let mut parts = rest.splitn(3, '/');
    let (_tenant, _namespace, local) = (parts.next()?, parts.next()?, parts.next()?);
    (DOMAINS.contains(&domain) && !local.is_empty()).then_some((domain, local))
}

/// One answer: status and body, read in full.
struct Reply {
    status: StatusCode,
    body: String,
}

/// A superuser's token in a file: read at start, and again when Pulsar
/// refuses the one held (it was minted again). Never printed.
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
    token: Arc<RwLock<String>>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish()
    }
}

impl TokenFile {
    pub fn read(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let token = std::fs::read_to_string(&path)?.trim().to_string();
        Ok(TokenFile {
            path,
            token: Arc::new(RwLock::new(token)),
        })
    }

    fn current(&self) -> String {
        self.token.read().expect("never poisoned").clone()
    }

    /// Reads the file again; whether the token changed.
    fn reload(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return false;
        };
        let mut token = self.token.write().expect("never poisoned");
        let changed = *token != text.trim();
        *token = text.trim().to_string();
        changed
    }
}

/// Client of one Pulsar cluster's admin API; every call is counted.
#[derive(Debug, Clone)]
pub struct Pulsar {
    client: Client,
    base: Url,
    token: Option<TokenFile>,
    calls: Calls,
}

impl Pulsar {
    /// `token`: none for a broker without authentication.
    pub fn new(
        admin_url: &str,
        token: Option<TokenFile>,
        calls: Calls,
    ) -> Result<Self, BackendError> {
        let base = Backend::Pulsar.base_url(admin_url, "use the admin URL")?;
        let client = Backend::Pulsar.client(Client::builder())?;
        Ok(Pulsar {
            client,
            base,
            token,
            calls,
        })
    }

    /// The admin URL, without a trailing slash.
    pub fn admin_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Whether the admin API answers (the clusters' list, uncounted).
    pub async fn probe(&self) -> Result<(), BackendError> {
        let mut request = self.client.get(self.url(&["admin", "v2", "clusters"]));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.current());
        }
        super::http::answers(Backend::Pulsar, request).await
    }

    /// Names of the clusters this Pulsar instance knows.
    pub async fn clusters(&self) -> Result<Vec<String>, BackendError> {
        self.read(self.url(&["admin", "v2", "clusters"]), "list clusters")
            .await
    }

    /// Tenant `tenant` as Pulsar holds it, if it exists.
    pub async fn tenant(&self, tenant: &str) -> Result<Option<TenantInfo>, BackendError> {
        let url = self.url(&["admin", "v2", "tenants", tenant]);
        self.read_optional(url, &format!("read tenant {tenant}"))
            .await
    }

    /// Whether namespace `<tenant>/<namespace>` exists.
    pub async fn namespace_exists(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<bool, BackendError> {
        let url = self.url(&["admin", "v2", "namespaces", tenant, namespace]);
        let action = format!("read namespace {tenant}/{namespace}");
        Ok(self.read_optional::<Value>(url, &action).await?.is_some())
    }

    /// Tenant with exactly these allowed clusters and no admin roles; created,
    /// or updated only if different.
    pub async fn ensure_tenant(
        &self,
        tenant: &str,
        allowed_clusters: &[String],
    ) -> Result<Change, BackendError> {
        let url = self.url(&["admin", "v2", "tenants", tenant]);
        let desired = TenantInfo::desired(allowed_clusters);
        let current = self.tenant(tenant).await?;
        let (method, action, change) = match current {
            None => (Method::PUT, "create", Change::Created),
            Some(current) if tenant_differs(&current, &desired) => {
                (Method::POST, "update", Change::Updated)
            }
            Some(_) => return Ok(Change::Unchanged),
        };
        let body = serde_json::to_value(&desired).expect("plain struct serializes");
        self.write(
            method,
            url,
            Some(body),
            &format!("{action} tenant {tenant}"),
        )
        .await?;
        Ok(change)
    }

    /// Creates the tenant without reading first, for one never provisioned:
    /// `None` when it exists already (then [`Self::ensure_tenant`] compares).
    pub async fn create_tenant(
        &self,
        tenant: &str,
        allowed_clusters: &[String],
    ) -> Result<Option<Change>, BackendError> {
        let body = serde_json::to_value(TenantInfo::desired(allowed_clusters))
            .expect("plain struct serializes");
        let reply = self
            .send(
                Method::PUT,
                self.url(&["admin", "v2", "tenants", tenant]),
                Some(body),
            )
            .await?;
        match reply.status {
            s if s.is_success() => Ok(Some(Change::Created)),
            StatusCode::CONFLICT => Ok(None),
            _ => Err(refused(&format!("create tenant {tenant}"), &reply)),
        }
    }

    /// Deletes the tenant. Pulsar refuses while namespaces remain (the caller
    /// deletes them first); the error then names them.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<Change, BackendError> {
        let action = format!("delete tenant {tenant}");
        let namespaces: Option<Vec<String>> = self
            .read_optional(
                self.url(&["admin", "v2", "namespaces", tenant]),
                &format!("list namespaces of tenant {tenant}"),
            )
            .await?;
        let Some(namespaces) = namespaces else {
            return Ok(Change::Absent);
        };
        let reply = self
            .send(
                Method::DELETE,
                self.url(&["admin", "v2", "tenants", tenant]),
                None,
            )
            .await?;
        match reply.status {
            s if s.is_success() => Ok(Change::Deleted),
            StatusCode::NOT_FOUND => Ok(Change::Absent),
            StatusCode::CONFLICT if !namespaces.is_empty() => {
                let body = format!(
                    "{} (namespaces remain: {}; delete them first)",
                    reply.body.trim(),
                    namespaces.join(", ")
                );
                Err(Backend::Pulsar.refused(&action, reply.status.as_u16(), &body))
            }
            _ => Err(refused(&action, &reply)),
        }
    }

    /// Namespace `tenant/namespace` with schema validation enforced, the
    /// given schema compatibility strategy, retention and limits; its
    /// policies are read once, and each is written only if different.
    pub async fn ensure_namespace(
        &self,
        tenant: &str,
        namespace: &str,
        policy: &NamespacePolicy,
    ) -> Result<Change, BackendError> {
        let name = format!("{tenant}/{namespace}");
        let ns = |tail: &[&str]| {
            let mut segments = vec!["admin", "v2", "namespaces", tenant, namespace];
            segments.extend_from_slice(tail);
            self.url(&segments)
        };
        let Some(strategy) = compatibility_strategy(&policy.schema_compatibility) else {
            // Not sent: Pulsar would answer 204 and keep UNDEFINED, so the
            // namespace would never converge.
            return Err(BackendError::Refused {
                backend: Backend::Pulsar,
                action: format!(
                    "set schema compatibility of namespace {name} to {:?}",
                    policy.schema_compatibility
                ),
                status: StatusCode::BAD_REQUEST.as_u16(),
                body: format!(
                    "unknown strategy, not sent; expected one of {}",
                    COMPATIBILITY_STRATEGIES.join(", ")
                ),
            });
        };

        // One read of the namespace's policies: every rule below is compared
        // with it, and a 404 says the namespace is not there.
        let read: Option<Value> = self
            .read_optional(ns(&[]), &format!("read policies of {name}"))
            .await?;
        let (created, policies) = match read {
            Some(policies) => (false, policies),
            None => {
                self.write(
                    Method::PUT,
                    ns(&[]),
                    None,
                    &format!("create namespace {name}"),
                )
                .await?;
                // A new namespace has no rules of its own.
                (true, Value::Null)
            }
        };
        let mut updated = false;

        let retention: Option<Retention> =
            serde_json::from_value(policies["retention_policies"].clone()).unwrap_or(None);
        let desired = Retention::from(policy);
        if retention_differs(retention.as_ref(), &desired) {
            let body = serde_json::to_value(desired).expect("plain struct serializes");
            self.write(
                Method::POST,
                ns(&["retention"]),
                Some(body),
                &format!("set retention of {name}"),
            )
            .await?;
            updated = true;
        }

        if policies["schema_validation_enforced"] != Value::Bool(true) {
            self.write(
                Method::POST,
                ns(&["schemaValidationEnforced"]),
                Some(Value::Bool(true)),
                &format!("enforce schema validation of {name}"),
            )
            .await?;
            updated = true;
        }

        if policies["schema_compatibility_strategy"] != strategy {
            self.write(
                Method::PUT,
                ns(&["schemaCompatibilityStrategy"]),
                Some(Value::from(strategy)),
                &format!("set schema compatibility of {name} to {strategy}"),
            )
            .await?;
            updated = true;
        }
        updated |= self
            .ensure_limits(tenant, namespace, &policies, &policy.limits)
            .await?;

        Ok(match (created, updated) {
            (true, _) => Change::Created,
            (false, true) => Change::Updated,
            (false, false) => Change::Unchanged,
        })
    }

    /// The namespace's limits as `limits` says, compared with its policies
    /// as read: set, changed or removed; whether anything was written.
    async fn ensure_limits(
        &self,
        tenant: &str,
        namespace: &str,
        policies: &Value,
        limits: &MessagingLimits,
    ) -> Result<bool, BackendError> {
        let name = format!("{tenant}/{namespace}");
        let ns = |tail: &str| self.url(&["admin", "v2", "namespaces", tenant, namespace, tail]);
        let live = live_limits(policies);
        let mut updated = false;

        if live.max_topics != limits.max_topics {
            let (method, body) = match limits.max_topics {
                Some(max) => (Method::POST, Some(Value::from(max))),
                None => (Method::DELETE, None),
            };
            let action = format!("set the topic limit of {name}");
            self.write(method, ns("maxTopicsPerNamespace"), body, &action)
                .await?;
            updated = true;
        }
        if live.backlog_bytes != limits.backlog_bytes {
            let mut url = ns("backlogQuota");
            url.query_pairs_mut()
                .append_pair("backlogQuotaType", BACKLOG_QUOTA_TYPE);
            let (method, body) = match limits.backlog_bytes {
                // Producers wait rather than lose data or fail.
                Some(size) => (
                    Method::POST,
                    Some(serde_json::json!({"limitSize": size, "policy": BACKLOG_POLICY})),
                ),
                None => (Method::DELETE, None),
            };
            let action = format!("set the backlog quota of {name}");
            self.write(method, url, body, &action).await?;
            updated = true;
        }
        if live.publish_rate != limits.publish_rate {
            let (method, body) = match limits.publish_rate {
                Some(rate) => (
                    Method::POST,
                    Some(serde_json::json!({
                        "publishThrottlingRateInMsg": rate,
                        "publishThrottlingRateInByte": -1,
                    })),
                ),
                None => (Method::DELETE, None),
            };
            let action = format!("set the publish rate of {name}");
            self.write(method, ns("publishRate"), body, &action).await?;
            updated = true;
        }
        Ok(updated)
    }

    /// Deletes the namespace and its topics. Topics go one by one rather than
    /// with `?force=true`, which brokers refuse unless `forceDeleteNamespaceAllowed`.
    pub async fn delete_namespace(
        &self,
        tenant: &str,
        namespace: &str,
    ) -> Result<Change, BackendError> {
        let name = format!("{tenant}/{namespace}");
        // Read first: one marked deleted by a deletion that failed half way
        // still exists (and can be deleted), though its topics can no
        // longer be listed.
        if !self.namespace_exists(tenant, namespace).await? {
            return Ok(Change::Absent);
        }
        let mut deleted = false;

        // Partitioned topics first: deleting one removes its partitions.
        for domain in DOMAINS {
            let partitioned: Option<Vec<String>> = self
                .read_optional(
                    self.url(&["admin", "v2", domain, tenant, namespace, "partitioned"]),
                    &format!("list {domain} partitioned topics of {name}"),
                )
                .await?;
            for topic in partitioned.iter().flatten() {
                deleted |= self
                    .delete_listed_topic(tenant, namespace, topic, true)
                    .await?;
            }
        }

        let mut url = self.url(&["admin", "v2", "namespaces", tenant, namespace, "topics"]);
        url.query_pairs_mut().append_pair("mode", "ALL");
        let topics: Option<Vec<String>> = self
            .read_optional(url, &format!("list topics of {name}"))
            .await?;
        for topic in topics.iter().flatten() {
            deleted |= self
                .delete_listed_topic(tenant, namespace, topic, false)
                .await?;
        }

        let action = format!("delete namespace {name}");
        let reply = self
            .send(
                Method::DELETE,
                self.url(&["admin", "v2", "namespaces", tenant, namespace]),
                None,
            )
            .await?;
        match reply.status {
            s if s.is_success() => Ok(Change::Deleted),
            StatusCode::NOT_FOUND if deleted => Ok(Change::Deleted),
            StatusCode::NOT_FOUND => Ok(Change::Absent),
            _ => Err(refused(&action, &reply)),
        }
    }

    /// Deletes one listed topic even with producers or subscriptions
    /// attached; false when it was already gone.
    async fn delete_listed_topic(
        &self,
        tenant: &str,
        namespace: &str,
        topic: &str,
        partitioned: bool,
    ) -> Result<bool, BackendError> {
        let (domain, local) = topic_parts(topic).ok_or_else(|| {
            Backend::Pulsar.unreadable(
                &format!("list topics of {tenant}/{namespace}"),
                format!("unexpected topic name {topic:?}"),
            )
        })?;
        let topic = PulsarTopic {
            persistent: domain == "persistent",
            tenant: tenant.into(),
            namespace: namespace.into(),
            local: local.into(),
        };
        let change = self.delete_topic(&topic, partitioned, true).await?;
        Ok(change == Change::Deleted)
    }

    /// The admin URL with these path segments appended, each percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: a base URL")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// One counted HTTP call; any answer is returned, only transport fails.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Reply, BackendError> {
        let reply = self.send_once(method.clone(), url.clone(), &body).await?;
        if reply.status == StatusCode::UNAUTHORIZED
            && self.token.as_ref().is_some_and(TokenFile::reload)
        {
            return self.send_once(method, url, &body).await;
        }
        Ok(reply)
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: &Option<Value>,
    ) -> Result<Reply, BackendError> {
        let verb = if method == Method::GET {
            Verb::Read
        } else {
            Verb::Write
        };
        let mut request = self.client.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.current());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e| Backend::Pulsar.unreachable(e);
        self.calls
            .timed(Backend::Pulsar, verb, async {
                let response = request.send().await.map_err(unreachable)?;
                let status = response.status();
                let body = response.text().await.map_err(unreachable)?;
                Ok(Reply { status, body })
            })
            .await
    }

    /// A GET that must succeed.
    async fn read<T: DeserializeOwned>(&self, url: Url, action: &str) -> Result<T, BackendError> {
        let reply = self.send(Method::GET, url, None).await?;
        if !reply.status.is_success() {
            return Err(refused(action, &reply));
        }
        parse(action, &reply.body)
    }

    /// A GET where 404 means the object does not exist.
    async fn read_optional<T: DeserializeOwned>(
        &self,
        url: Url,
        action: &str,
    ) -> Result<Option<T>, BackendError> {
        let reply = self.send(Method::GET, url, None).await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => parse(action, &reply.body).map(Some),
            _ => Err(refused(action, &reply)),
        }
    }

    /// A write that must succeed.
    async fn write(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        action: &str,
    ) -> Result<(), BackendError> {
        let reply = self.send(method, url, body).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(refused(action, &reply))
        }
    }
}

fn refused(action: &str, reply: &Reply) -> BackendError {
    Backend::Pulsar.refused(action, reply.status.as_u16(), &reply.body)
}

/// Parses a JSON answer; an empty one (an unset policy) reads as null.
fn parse<T: DeserializeOwned>(action: &str, body: &str) -> Result<T, BackendError> {
    let body = if body.trim().is_empty() { "null" } else { body };
    serde_json::from_str(body)
        .map_err(|e| Backend::Pulsar.unreadable(action, format!("{e}: {}", truncate(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(roles: &[&str], clusters: &[&str]) -> TenantInfo {
        TenantInfo {
            admin_roles: roles.iter().map(|s| s.to_string()).collect(),
            allowed_clusters: clusters.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn tenant_comparison_ignores_order_and_repeats() {
        let desired = tenant(&[], &["a", "b"]);
        assert!(!tenant_differs(&tenant(&[], &["b", "a"]), &desired));
        assert!(!tenant_differs(&tenant(&[], &["a", "b", "a"]), &desired));
        assert!(tenant_differs(&tenant(&[], &["a"]), &desired));
        assert!(tenant_differs(&tenant(&[], &["a", "b", "c"]), &desired));
        assert!(tenant_differs(&tenant(&["someone"], &["a", "b"]), &desired));
    }

    #[test]
    fn desired_tenant_has_sorted_unique_clusters_and_no_roles() {
        let clusters = ["b".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(TenantInfo::desired(&clusters), tenant(&[], &["a", "b"]));
    }

    #[test]
    fn tenant_info_reads_and_writes_pulsar_json() {
        let read: TenantInfo =
            serde_json::from_str(r#"{"adminRoles":["r"],"allowedClusters":["standalone"]}"#)
                .unwrap();
        assert_eq!(read, tenant(&["r"], &["standalone"]));
        let partial: TenantInfo = serde_json::from_str(r#"{"allowedClusters":["x"]}"#).unwrap();
        assert_eq!(partial, tenant(&[], &["x"]));
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"adminRoles":["r"],"allowedClusters":["standalone"]}"#
        );
    }

    #[test]
    fn retention_is_written_when_unset_or_different() {
        let desired = Retention {
            retention_time_in_minutes: 60,
            retention_size_in_mb: 100,
        };
        assert!(retention_differs(None, &desired));
        assert!(!retention_differs(Some(&desired), &desired));
        let shorter = Retention {
            retention_time_in_minutes: 30,
            ..desired
        };
        assert!(retention_differs(Some(&shorter), &desired));
        let smaller = Retention {
            retention_size_in_mb: 1,
            ..desired
        };
        assert!(retention_differs(Some(&smaller), &desired));
    }

    #[test]
    fn retention_uses_pulsar_field_names_and_unset_reads_as_none() {
        let limits = serde_json::json!({
            "max_topics_per_namespace": 50,
            "backlog_quota_map": {"destination_storage":
                {"limit": 1024, "limitSize": 1024, "limitTime": 0, "policy": "producer_request_hold"}},
            "publishMaxMessageRate": {"standalone":
                {"publishThrottlingRateInMsg": 100, "publishThrottlingRateInByte": -1}},
        });
        assert_eq!(
            live_limits(&limits),
            MessagingLimits {
                max_topics: Some(50),
                backlog_bytes: Some(1024),
                publish_rate: Some(100)
            }
        );
        // Someone else's kinds of limit are not ours: they are written over.
        let theirs = serde_json::json!({
            "max_topics_per_namespace": 0,
            "backlog_quota_map": {"destination_storage":
                {"limitSize": 1024, "limitTime": 60, "policy": "consumer_backlog_eviction"}},
            "publishMaxMessageRate": {"standalone":
                {"publishThrottlingRateInMsg": 100, "publishThrottlingRateInByte": 4096}},
        });
        assert_eq!(live_limits(&theirs), MessagingLimits::default());
        assert_eq!(
            live_limits(&serde_json::json!({})),
            MessagingLimits::default()
        );

        let policy = NamespacePolicy {
            retention_minutes: 60,
            retention_size_mb: 100,
            schema_compatibility: "FULL".into(),
            limits: Default::default(),
        };
        assert_eq!(
            serde_json::to_string(&Retention::from(&policy)).unwrap(),
            r#"{"retentionTimeInMinutes":60,"retentionSizeInMB":100}"#
        );
        let unset: Option<Retention> = parse("read retention", "").unwrap();
        assert_eq!(unset, None);
        let set: Option<Retention> = parse(
            "read retention",
            r#"{"retentionTimeInMinutes":60,"retentionSizeInMB":100}"#,
        )
        .unwrap();
        assert_eq!(set, Some(Retention::from(&policy)));
    }

    #[test]
    fn bad_json_is_unreadable() {
        let err = parse::<bool>("read schema validation", "<html>").unwrap_err();
        assert_eq!(err.category(), "BackendUnreadable");
        assert!(err.to_string().contains("read schema validation"), "{err}");
    }

    #[test]
    fn compatibility_strategies_are_normalized_or_rejected() {
        assert_eq!(compatibility_strategy("FULL"), Some("FULL"));
        assert_eq!(compatibility_strategy(" full "), Some("FULL"));
        assert_eq!(
            compatibility_strategy("backward_transitive"),
            Some("BACKWARD_TRANSITIVE")
        );
        assert_eq!(compatibility_strategy("BOGUS"), None);
        assert_eq!(compatibility_strategy(""), None);
    }

    #[test]
    fn topic_names_split_into_domain_and_local_name() {
        assert_eq!(
            topic_parts("persistent://t/ns/orders"),
            Some(("persistent", "orders"))
        );
        assert_eq!(
            topic_parts("non-persistent://t/ns/orders-partition-0"),
            Some(("non-persistent", "orders-partition-0"))
        );
        assert_eq!(topic_parts("t/ns/orders"), None);
        assert_eq!(topic_parts("persistent://t/ns"), None);
        assert_eq!(topic_parts("persistent://t/ns/"), None);
        assert_eq!(topic_parts("other://t/ns/orders"), None);
    }

    #[test]
    fn admin_urls_encode_each_segment() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pulsar = Pulsar::new("http://127.0.0.1:18080/", None, Calls::default()).unwrap();
        assert_eq!(
            pulsar.url(&["admin", "v2", "tenants", "a b/c"]).as_str(),
            "http://127.0.0.1:18080/admin/v2/tenants/a%20b%2Fc"
        );
        assert!(Pulsar::new("not a url", None, Calls::default()).is_err());
    }
}
