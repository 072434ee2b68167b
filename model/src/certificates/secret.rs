//! The Secret of a Certificate, when one is asked for: `kubernetes.io/tls`
//! plus `ca.crt`, marked with a hash of what was written so that a change
//! by someone else is seen.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use ossature_crds::Certificate;

use super::Record;
use crate::names::{MANAGED_BY, hex};

/// Labels the Secret of a Certificate with the Certificate's name.
pub const CERTIFICATE_LABEL: &str = "ossature.dev/certificate";
/// Hash of a Secret's data as written: a Secret whose data no longer
/// matches it was changed by someone else.
pub const DATA_HASH_ANNOTATION: &str = "ossature.dev/data-sha256";

/// The Secret of a Certificate: `kubernetes.io/tls` plus `ca.crt`.
pub fn secret(certificate: &Certificate, name: &str, record: &Record) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(record.certificate.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(record.key.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(record.ca.clone().into_bytes()),
        ),
    ]);
    let mut secret = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = certificate.namespace();
    // Not the tenant label: on a Secret it hands the Secret to the tenant
    // (an identity provider's), and each write would run a tenant reconcile.
    secret.metadata.labels = Some(BTreeMap::from([
        (CERTIFICATE_LABEL.to_string(), certificate.name_any()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]));
    secret.metadata.annotations = Some(BTreeMap::from([(
        DATA_HASH_ANNOTATION.to_string(),
        data_hash(secret.data.as_ref()),
    )]));
    // Same namespace: the garbage collector honours this owner.
    secret.metadata.owner_references = certificate.controller_owner_ref(&()).map(|o| vec![o]);
    secret
}

/// Hash of a Secret's data, in key order.
pub fn data_hash(data: Option<&BTreeMap<String, ByteString>>) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (key, value) in data.into_iter().flatten() {
        context.update(key.as_bytes());
        context.update(&[0]);
        context.update(&value.0);
        context.update(&[0]);
    }
    hex(context.finish().as_ref())
}

/// Whether a Secret of a Certificate was changed by someone else (or is
/// being deleted): its data no longer matches the hash written with it.
pub fn secret_tampered(secret: &Secret) -> bool {
    secret.metadata.deletion_timestamp.is_some()
        || secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DATA_HASH_ANNOTATION))
            != Some(&data_hash(secret.data.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::TENANT_LABEL;

    fn record(issued_for: &str, serial: &str) -> Record {
        Record {
            key: "k".into(),
            certificate: "c".into(),
            ca: "ca".into(),
            issued_for: issued_for.into(),
            serial: serial.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_certificates_secret_is_not_handed_to_its_tenant() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "tn-acme", "uid": "1"},
            "spec": {"dnsNames": ["acme.ossature.test"], "issuer": {"tenantCA": {}}},
        }))
        .unwrap();
        let labels = secret(&certificate, "web-tls", &Record::default())
            .metadata
            .labels
            .unwrap();
        assert_eq!(labels[CERTIFICATE_LABEL], "web");
        assert!(!labels.contains_key(TENANT_LABEL), "{labels:?}");
    }

    #[test]
    fn a_secret_tells_a_change_by_someone_else() {
        let certificate: Certificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "api", "namespace": "tn-acme", "uid": "u1"},
            "spec": {"dnsNames": ["api.acme.ossature.test"], "issuer": {"tenantCA": {}}},
        }))
        .unwrap();
        let mut s = secret(&certificate, "api-tls", &record("x", "01"));
        assert!(!secret_tampered(&s), "as written");
        assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].name, "api");
        s.data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"other".to_vec()));
        assert!(secret_tampered(&s), "data changed by hand");
    }
}
