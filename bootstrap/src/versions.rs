//! The pinned version of every component, from `versions.toml`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinned {
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    pub version: String,
    /// Version of the `k8s.io/*` staging modules that match `version`.
    pub staging: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    pub kubernetes: Kubernetes,
    pub etcd: Pinned,
    pub kwok: Pinned,
    pub pebble: Pinned,
    pub keycloak: Pinned,
    pub pulsar: Pinned,
    pub openbao: Pinned,
    pub caddy: Pinned,
    /// Prometheus, and its promtool (a tool of the alert rules' checks).
    pub prometheus: Pinned,
    /// KEDA's CRDs, without KEDA itself.
    pub keda: Pinned,
    /// Tools of the chart's checks (see `tools.rs`).
    pub helm: Pinned,
    pub kubeconform: Pinned,
    pub crane: Pinned,
}

const PINNED: &str = include_str!("../versions.toml");

impl Versions {
    pub fn pinned() -> Versions {
        toml::from_str(PINNED).expect("versions.toml is checked by a unit test")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_versions_parse_and_agree() {
        let v = Versions::pinned();
        // The staging modules are v0.X.Y for Kubernetes v1.X.Y.
        assert_eq!(
            v.kubernetes.version.trim_start_matches("v1."),
            v.kubernetes.staging.trim_start_matches("v0.")
        );
        let minor: u32 = v
            .kubernetes
            .version
            .split('.')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (33..=37).contains(&minor),
            "k8s-openapi supports 1.33 to 1.37"
        );
        assert!(v.etcd.version.starts_with("v3.5.") || v.etcd.version.starts_with("v3.6."));
        assert!(v.keycloak.version.starts_with("26."));
        assert!(v.keda.version.starts_with("v2."));
        // The chart is checked with Helm 4 (its module path says so).
        assert!(v.helm.version.starts_with("v4."));
        assert!(v.kubeconform.version.starts_with('v'));
        assert!(v.crane.version.starts_with("v0."));
        // Prometheus 3.X.Y is published as the Go module version v0.3XX.Y.
        assert!(v.prometheus.version.starts_with("v0.3"));
    }
}
