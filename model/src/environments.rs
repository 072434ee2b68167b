//! What is decided of an Environment without calling anything.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use ossature_crds::{Environment, EnvironmentKind};

/// When an environment with a ttl expires: its creation plus the ttl.
pub fn expiry(environment: &Environment) -> Option<Timestamp> {
    if environment.spec.kind != EnvironmentKind::Ephemeral {
        return None;
    }
    let ttl = crate::time::parse_ttl(environment.spec.ttl.as_deref()?)?;
    let created = environment.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(SignedDuration::try_from(ttl).ok()?)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn environment(kind: &str, ttl: Option<&str>) -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "pr-42", "namespace": "tn-acme",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"kind": kind, "ttl": ttl},
        }))
        .unwrap()
    }

    #[test]
    fn an_ephemeral_environment_expires_its_ttl_after_creation() {
        assert_eq!(
            expiry(&environment("Ephemeral", Some("1h30m"))).map(|t| t.to_string()),
            Some("2026-01-01T01:30:00Z".to_string())
        );
        assert_eq!(expiry(&environment("Ephemeral", None)), None);
        assert_eq!(
            expiry(&environment("Staging", Some("1h"))),
            None,
            "only Ephemeral environments expire"
        );
    }
}
