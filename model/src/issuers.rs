//! What other kinds read of an AcmeIssuer.

use ossature_crds::AcmeIssuer;

use crate::conditions;

/// The Secret holding issuer `name`'s account credentials.
pub fn account_secret_name(name: &str) -> String {
    format!("acme-account-{name}")
}

/// Whether an AcmeIssuer is Ready for its current generation.
pub fn ready(issuer: &AcmeIssuer) -> bool {
    issuer.status.as_ref().is_some_and(|s| {
        conditions::ready_for(
            &s.conditions,
            s.observed_generation,
            issuer.metadata.generation,
        )
    })
}

/// Why an issuer is not Ready, from its own condition.
pub fn not_ready_reason(issuer: &AcmeIssuer) -> String {
    issuer
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not reconciled yet".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::AcmeIssuerStatus;

    #[test]
    fn an_issuer_is_ready_only_for_its_current_generation() {
        let mut i: AcmeIssuer = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
            "metadata": {"name": "pebble"},
            "spec": {"directory": "https://127.0.0.1:14000/dir",
                     "solver": {"challTestSrv": {"url": "http://127.0.0.1:8055"}}},
        }))
        .unwrap();
        i.metadata.generation = Some(2);
        assert!(!ready(&i));
        assert_eq!(not_ready_reason(&i), "not reconciled yet");
        i.status = Some(AcmeIssuerStatus {
            observed_generation: Some(1),
            conditions: vec![conditions::condition(
                conditions::READY,
                true,
                "Provisioned",
                "ok",
                Some(1),
            )],
            account_url: None,
        });
        assert!(!ready(&i), "an older generation");
        i.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(ready(&i));
        assert_eq!(account_secret_name("pebble"), "acme-account-pebble");
    }
}
