//! A tenant's messaging in Pulsar: which clusters may hold its data, and
//! the rules of each environment's namespace.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use ossature_crds::{EnvironmentKind, EnvironmentSpec, Quotas};

/// Rules of one Pulsar namespace.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePolicy {
    pub retention_minutes: i32,
    pub retention_size_mb: i64,
    /// A Pulsar schema compatibility strategy, e.g. "FULL".
    pub schema_compatibility: String,
    pub limits: MessagingLimits,
}

/// Limits of one Pulsar namespace; `None` leaves (or makes) it unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagingLimits {
    pub max_topics: Option<i32>,
    /// Backlog of one topic, in bytes.
    pub backlog_bytes: Option<i64>,
    /// Messages per second published to one topic.
    pub publish_rate: Option<i32>,
}

impl MessagingLimits {
    /// The environment's own limits, else its tenant's.
    pub fn of(environment: &Quotas, tenant: &Quotas) -> Self {
        MessagingLimits {
            max_topics: environment.topics.or(tenant.topics),
            backlog_bytes: environment
                .backlog
                .as_ref()
                .or(tenant.backlog.as_ref())
                .and_then(bytes),
            publish_rate: environment.publish_rate.or(tenant.publish_rate),
        }
    }
}

/// A quantity of bytes (`512Mi`, `10G`, `1.5Gi`, `1000`), as admission
/// lets through; `None` for anything else.
pub fn bytes(quantity: &Quantity) -> Option<i64> {
    const NANO: i128 = 1_000_000_000;
    let nanos = crate::quantities::billionths(&quantity.0)?;
    let whole = (nanos + NANO - 1).div_euclid(NANO);
    (nanos >= NANO).then(|| i64::try_from(whole).ok()).flatten()
}

/// Pulsar clusters allowed to hold a tenant's data: those of its region.
pub fn allowed_clusters(
    residency: &str,
    clusters_by_region: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    clusters_by_region.get(residency).cloned()
}

/// Retention, schema rules and limits of an environment's Pulsar
/// namespace; `tenant` holds the limits of its Tenant.
pub fn namespace_policy(spec: &EnvironmentSpec, tenant: &Quotas) -> NamespacePolicy {
    let default_minutes = match spec.kind {
        EnvironmentKind::Production => 7 * 24 * 60,
        _ => 24 * 60,
    };
    NamespacePolicy {
        retention_minutes: spec.message_retention_minutes.unwrap_or(default_minutes),
        retention_size_mb: 1024,
        schema_compatibility: "FULL".to_string(),
        limits: MessagingLimits::of(&spec.quotas, tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::Quotas;

    #[test]
    fn residency_decides_the_clusters_and_environment_kind_the_retention() {
        let map = BTreeMap::from([("eu".to_string(), vec!["standalone".to_string()])]);
        assert_eq!(
            allowed_clusters("eu", &map),
            Some(vec!["standalone".to_string()])
        );
        assert_eq!(allowed_clusters("us", &map), None);
        let env = |kind| EnvironmentSpec {
            kind,
            ttl: None,
            quotas: Quotas::default(),
            message_retention_minutes: None,
            deletion_policy: Default::default(),
        };
        assert_eq!(
            namespace_policy(&env(EnvironmentKind::Production), &Quotas::default())
                .retention_minutes,
            10080
        );
        assert_eq!(
            namespace_policy(&env(EnvironmentKind::Staging), &Quotas::default()).retention_minutes,
            1440
        );
    }

    #[test]
    fn an_environment_takes_its_own_limits_else_its_tenants() {
        let tenant = Quotas {
            topics: Some(50),
            backlog: Some(Quantity("1Gi".into())),
            publish_rate: Some(1000),
            ..Quotas::default()
        };
        let environment = Quotas {
            topics: Some(5),
            ..Quotas::default()
        };
        assert_eq!(
            MessagingLimits::of(&environment, &tenant),
            MessagingLimits {
                max_topics: Some(5),
                backlog_bytes: Some(1 << 30),
                publish_rate: Some(1000),
            }
        );
        assert_eq!(
            MessagingLimits::of(&Quotas::default(), &Quotas::default()),
            MessagingLimits::default()
        );
    }

    #[test]
    fn quantities_of_bytes_read_as_admission_lets_them_through() {
        let b = |q: &str| bytes(&Quantity(q.into()));
        assert_eq!(b("512Mi"), Some(512 << 20));
        assert_eq!(b("10G"), Some(10_000_000_000));
        assert_eq!(b("1.5Ki"), Some(1536));
        assert_eq!(b("1000"), Some(1000));
        assert_eq!(b("5x"), None);
        assert_eq!(b("0"), None);
        assert_eq!(b(""), None);
    }
}
