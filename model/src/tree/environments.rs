//! What an Environment's reconcile makes, and a Certificate's.

use kube::ResourceExt;
use ossature_crds::{Certificate, Environment};
use serde_json::json;

use super::tenant::{namespace, pulsar_tenant, record_key, to_json};
use super::{Key, Kind, Object, Owned, kubernetes, object};
use crate::conditions::{CERTIFICATE_READY, MESSAGING_READY};
use crate::messaging::namespace_policy;
use crate::names::{TenantNames, tenant_of_any};
use crate::objects::namespace_objects;

/// Its namespace with what is in it, and its Pulsar namespace. (Its
/// OpenBao path is a prefix inside the tenant's KV mount: nothing is made
/// for it until a service keeps secrets there.)
pub(super) fn environment(owned: &Owned, environment: &Environment) -> Vec<Object> {
    let owner = Key::of(Kind::Environment, environment);
    let name = environment.name_any();
    let names = owned.names.environment(&name);
    let mut all = namespace(
        namespace_objects(
            &names.namespace,
            &owned.names.tenant,
            Some(&name),
            &environment.spec.quotas,
        ),
        &owner,
    );
    let policy = namespace_policy(&environment.spec, &owned.tenant.spec.quotas);
    all.push(object(
        pulsar_namespace(&owned.names, &name),
        Some(&pulsar_tenant(&owned.names)),
        &owner,
        MESSAGING_READY,
        to_json(&policy),
    ));
    all
}

pub(super) fn pulsar_namespace(names: &TenantNames, environment: &str) -> Key {
    Key::new(
        super::Backend::Pulsar,
        Kind::PulsarNamespace,
        names.environment(environment).pulsar_path,
    )
}

/// What a Certificate's reconcile makes: its record in the tenant's KV
/// mount and, when one is named, its Secret.
pub(super) fn certificate(owned: &Owned, certificate: &Certificate) -> Vec<Object> {
    certificate_record(&owned.names, certificate, CERTIFICATE_READY)
}

/// The record (and Secret) of a Certificate, whoever makes the Certificate.
pub(super) fn certificate_record(
    names: &TenantNames,
    certificate: &Certificate,
    condition: &str,
) -> Vec<Object> {
    let owner = Key::of(Kind::Certificate, certificate);
    let namespace = certificate.metadata.namespace.clone().unwrap_or_default();
    if tenant_of_any(&namespace) != Some(names.tenant.as_str()) {
        return Vec::new();
    }
    let record = record_key(names, &namespace, &certificate.name_any());
    let issued = crate::certificates::Wanted::of(&certificate.spec);
    let mut all = vec![object(
        record,
        None,
        &owner,
        condition,
        json!({"issuedFor": issued.issued_for, "issuer": issued.issuer}),
    )];
    if let Some(secret) = &certificate.spec.secret_name {
        let mut desired = k8s_openapi::api::core::v1::Secret::default();
        desired.metadata.name = Some(secret.clone());
        desired.metadata.namespace = Some(namespace.clone());
        desired.type_ = Some("kubernetes.io/tls".into());
        all.push(kubernetes(Kind::Secret, &desired, None, &owner, condition));
    }
    all
}
