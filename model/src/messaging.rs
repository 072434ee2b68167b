//! A tenant's messaging in Pulsar: which clusters may hold its data, and
//! the rules of each environment's namespace.

use std::collections::BTreeMap;

use ossature_crds::{EnvironmentKind, EnvironmentSpec};

/// Rules of one Pulsar namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespacePolicy {
    pub retention_minutes: i32,
    pub retention_size_mb: i64,
    /// A Pulsar schema compatibility strategy, e.g. "FULL".
    pub schema_compatibility: String,
}

/// Pulsar clusters allowed to hold a tenant's data: those of its region.
pub fn allowed_clusters(
    residency: &str,
    clusters_by_region: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    clusters_by_region.get(residency).cloned()
}

/// Retention and schema rules of an environment's Pulsar namespace.
pub fn namespace_policy(spec: &EnvironmentSpec) -> NamespacePolicy {
    let default_minutes = match spec.kind {
        EnvironmentKind::Production => 7 * 24 * 60,
        _ => 24 * 60,
    };
    NamespacePolicy {
        retention_minutes: spec.message_retention_minutes.unwrap_or(default_minutes),
        retention_size_mb: 1024,
        schema_compatibility: "FULL".to_string(),
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
            namespace_policy(&env(EnvironmentKind::Production)).retention_minutes,
            10080
        );
        assert_eq!(
            namespace_policy(&env(EnvironmentKind::Staging)).retention_minutes,
            1440
        );
    }
}
