//! The platform's settings that shape every tenant's desired state. The
//! operator takes them from its flags, the control plane from its own, and
//! the chart's values carry the same fields, so all three compute the same
//! desired objects.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const DEFAULT_ROOT_DOMAIN: &str = "ossature.test";
pub const DEFAULT_MAX_DEDICATED_REALMS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Platform {
    /// Every tenant's names sit under it: tenant `acme` owns
    /// `acme.<rootDomain>` and the names below it. One per cluster.
    pub root_domain: String,
    /// Pulsar clusters allowed to hold the data of each residency region.
    pub residency: BTreeMap<String, Vec<String>>,
    /// The AcmeIssuer that signs tenant hosts' certificates; none: each
    /// tenant's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_issuer: Option<String>,
    /// Most dedicated realms (`isolation: Realm`) one Keycloak is given.
    pub max_dedicated_realms: usize,
}

impl Default for Platform {
    fn default() -> Self {
        let standalone = || vec!["standalone".to_string()];
        Platform {
            root_domain: DEFAULT_ROOT_DOMAIN.to_string(),
            residency: BTreeMap::from([
                ("eu".to_string(), standalone()),
                ("us".to_string(), standalone()),
            ]),
            host_issuer: None,
            max_dedicated_realms: DEFAULT_MAX_DEDICATED_REALMS,
        }
    }
}

impl Platform {
    /// What is wrong with these settings, each in words that say how to
    /// fix it; empty when they can be used.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !valid_root_domain(&self.root_domain) {
            problems.push(format!(
                "rootDomain {:?} is not a lowercase DNS name of at least two labels, such as apps.example.com",
                self.root_domain
            ));
        }
        if self.residency.is_empty() {
            problems
                .push("residency names no region; give at least one, such as eu=standalone".into());
        }
        for (region, clusters) in &self.residency {
            if region.trim().is_empty() || clusters.iter().all(|c| c.trim().is_empty()) {
                problems.push(format!(
                    "residency region {region:?} needs a name and at least one Pulsar cluster"
                ));
            }
        }
        if self.host_issuer.as_deref().is_some_and(str::is_empty) {
            problems.push("hostIssuer is empty; name an AcmeIssuer or leave it out".into());
        }
        problems
    }
}

/// A residency flag, `REGION=CLUSTER[,CLUSTER...]`, as the operator and
/// the control plane take it.
pub fn parse_residency(value: &str) -> Result<(String, Vec<String>), String> {
    let (region, clusters) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not REGION=CLUSTER[,CLUSTER...]"))?;
    let clusters: Vec<String> = clusters
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if region.trim().is_empty() || clusters.is_empty() {
        return Err(format!("{value:?} needs a region and at least one cluster"));
    }
    Ok((region.trim().to_string(), clusters))
}

/// A root domain flag, checked as [`valid_root_domain`] does.
pub fn parse_root_domain(value: &str) -> Result<String, String> {
    if valid_root_domain(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a lowercase DNS name of at least two labels, such as apps.example.com"
        ))
    }
}

/// Whether `name` may be used as the root domain: a lowercase DNS name of
/// at least two labels (it is spliced into admission expressions, so no
/// quote may pass).
pub fn valid_root_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 200
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_domains_are_dns_names_without_quotes() {
        assert!(valid_root_domain("ossature.test"));
        assert!(valid_root_domain("apps.example.com"));
        for bad in [
            "test",
            "",
            "Ossature.test",
            "a..b",
            "x'.test",
            "-a.test",
            "a_b.test",
        ] {
            assert!(!valid_root_domain(bad), "{bad}");
        }
    }

    #[test]
    fn the_defaults_are_usable_and_bad_settings_say_how_to_fix_them() {
        assert!(Platform::default().problems().is_empty());
        let bad = Platform {
            root_domain: "test".into(),
            residency: BTreeMap::from([("eu".to_string(), vec![])]),
            host_issuer: Some(String::new()),
            ..Platform::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("rootDomain"));
    }

    #[test]
    fn settings_read_as_the_charts_values_do() {
        let platform: Platform = serde_json::from_value(serde_json::json!({
            "rootDomain": "apps.example.com",
            "residency": {"eu": ["eu-1", "eu-2"]},
            "hostIssuer": "letsencrypt",
            "maxDedicatedRealms": 20,
        }))
        .unwrap();
        assert_eq!(platform.residency["eu"], ["eu-1", "eu-2"]);
        assert_eq!(platform.host_issuer.as_deref(), Some("letsencrypt"));
        assert!(
            serde_json::from_value::<Platform>(serde_json::json!({"rootDomain": "a.b", "typo": 1}))
                .is_err(),
            "unknown fields are refused"
        );
    }
}
