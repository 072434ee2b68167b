//! The names every backend object gets, and the labels that mark what is
//! Ossature's.
//!
//! Every derived name starts with the tenant's name (validated at admission to
//! be a DNS label of at most 30 characters), so no tenant can name another's.

use std::collections::BTreeMap;

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ossature");
pub const TENANT_LABEL: &str = "ossature.dev/tenant";
pub const ENVIRONMENT_LABEL: &str = "ossature.dev/environment";
pub const SCOPE_LABEL: &str = "ossature.dev/scope";
/// Marks what a `Retain` deletion left behind, no longer managed.
pub const RETAINED_LABEL: &str = "ossature.dev/retained";
/// Every Kubernetes object the operator writes is applied under this field
/// manager; it never changes, so an upgrade takes over its own fields.
pub const FIELD_MANAGER: &str = "ossature-operator";

/// Prefix of every tenant namespace.
const NAMESPACE_PREFIX: &str = "tn-";
/// Between a tenant and one of its environments in a namespace name. `--`
/// cannot occur in tenant or environment names (refused at admission), so
/// `acme` + `eu-prod` and `acme-eu` + `prod` differ.
pub const ENVIRONMENT_SEPARATOR: &str = "--";

/// The namespace of a tenant: `tn-<tenant>`.
pub fn tenant_namespace(tenant: &str) -> String {
    format!("{NAMESPACE_PREFIX}{tenant}")
}

/// Whose a namespace is, read from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceOf<'a> {
    pub tenant: &'a str,
    /// `Some` for `tn-<tenant>--<environment>`.
    pub environment: Option<&'a str>,
}

impl<'a> NamespaceOf<'a> {
    /// `tn-<tenant>` or `tn-<tenant>--<environment>`; `None` for any other.
    pub fn parse(namespace: &'a str) -> Option<Self> {
        let rest = namespace.strip_prefix(NAMESPACE_PREFIX)?;
        let (tenant, environment) = match rest.split_once(ENVIRONMENT_SEPARATOR) {
            Some((tenant, environment)) => (tenant, Some(environment)),
            None => (rest, None),
        };
        let valid = |s: &str| !s.is_empty() && !s.contains(ENVIRONMENT_SEPARATOR);
        (valid(tenant) && environment.is_none_or(valid)).then_some(NamespaceOf {
            tenant,
            environment,
        })
    }
}

/// The tenant whose own namespace `tn-<tenant>` this is (not an
/// environment's).
pub fn tenant_of(namespace: &str) -> Option<&str> {
    NamespaceOf::parse(namespace)
        .filter(|n| n.environment.is_none())
        .map(|n| n.tenant)
}

/// The tenant of a tenant namespace or of one of its environments'.
pub fn tenant_of_any(namespace: &str) -> Option<&str> {
    NamespaceOf::parse(namespace).map(|n| n.tenant)
}

/// The tenant an object is of: a Tenant itself, or what its namespace (the
/// tenant's, or one of its environments') names.
pub fn tenant_of_object<K: kube::Resource<DynamicType = ()>>(object: &K) -> Option<&str> {
    if K::kind(&()) == "Tenant" {
        return object.meta().name.as_deref();
    }
    tenant_of_any(object.meta().namespace.as_deref()?)
}

/// The tenant and environment of an environment namespace
/// `tn-<tenant>--<environment>`; `None` for a tenant's own or any other.
pub fn environment_of(namespace: &str) -> Option<(&str, &str)> {
    let of = NamespaceOf::parse(namespace)?;
    Some((of.tenant, of.environment?))
}

/// Names of everything a tenant owns, in every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    pub tenant: String,
    pub namespace: String,
    pub realm: String,
    pub pulsar_tenant: String,
    pub kv_mount: String,
    pub transit_mount: String,
    /// The tenant's CA.
    pub pki_mount: String,
    pub transit_key: String,
    pub policy: String,
    /// Everything the tenant has in OpenBao sits below it.
    pub secrets_path: String,
}

impl TenantNames {
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            namespace: tenant_namespace(tenant),
            realm: tenant.to_string(),
            pulsar_tenant: tenant.to_string(),
            kv_mount: format!("tenants/{tenant}/kv"),
            transit_mount: format!("tenants/{tenant}/transit"),
            pki_mount: format!("tenants/{tenant}/pki"),
            transit_key: tenant.to_string(),
            policy: format!("tenant-{tenant}"),
            secrets_path: format!("tenants/{tenant}/"),
        }
    }

    /// Names of one of the tenant's environments.
    pub fn environment(&self, environment: &str) -> EnvironmentNames {
        EnvironmentNames {
            namespace: format!("{}{ENVIRONMENT_SEPARATOR}{environment}", self.namespace),
            pulsar_namespace: environment.to_string(),
            pulsar_path: format!("{}/{environment}", self.pulsar_tenant),
            secrets_prefix: format!("{}/data/{environment}/", self.kv_mount),
        }
    }

    /// What the tenant's KV mount says it is.
    pub fn kv_description(&self) -> String {
        format!("secrets of tenant {}", self.tenant)
    }

    /// The tenant's host at the edge: `<tenant>.<root-domain>`.
    pub fn host(&self, root_domain: &str) -> String {
        format!("{}.{root_domain}", self.tenant)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentNames {
    pub namespace: String,
    /// Within the tenant's Pulsar tenant: `<tenant>/<this>`.
    pub pulsar_namespace: String,
    /// `<tenant>/<environment>`, as Pulsar's namespace admin API names it.
    pub pulsar_path: String,
    /// Prefix of the environment's secrets inside the tenant's KV mount.
    pub secrets_prefix: String,
}

/// What marks an object as the operator's, for a tenant (and an environment).
pub fn labels(tenant: &str, environment: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (TENANT_LABEL.to_string(), tenant.to_string()),
    ]);
    if let Some(env) = environment {
        labels.insert(ENVIRONMENT_LABEL.to_string(), env.to_string());
    }
    labels
}

/// A SHA-256 digest in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Bytes in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_scoped_by_the_tenant() {
        let acme = TenantNames::new("acme");
        let acme_eu = TenantNames::new("acme-eu");
        assert_eq!(acme.namespace, "tn-acme");
        assert_eq!(acme.kv_mount, "tenants/acme/kv");
        assert_eq!(acme.secrets_path, "tenants/acme/");
        assert_eq!(acme.environment("prod").namespace, "tn-acme--prod");
        assert_eq!(acme.host("ossature.test"), "acme.ossature.test");
        // A tenant whose name extends another's never shares a name with it.
        assert!(!acme_eu.kv_mount.starts_with(&format!("{}/", acme.kv_mount)));
        assert_ne!(
            acme.environment("eu-prod").namespace,
            acme_eu.environment("prod").namespace
        );
        // Longest names stay within Kubernetes' 63-character namespace limit.
        let long = TenantNames::new(&"t".repeat(30));
        assert!(long.environment(&"e".repeat(28)).namespace.len() <= 63);
    }

    #[test]
    fn the_tenant_is_read_from_its_namespaces() {
        assert_eq!(tenant_of("tn-acme"), Some("acme"));
        assert_eq!(tenant_of("tn-acme-eu"), Some("acme-eu"));
        assert_eq!(
            tenant_of("tn-acme--prod"),
            None,
            "an environment namespace is not a tenant's"
        );
        assert_eq!(tenant_of("default"), None);
        assert_eq!(tenant_of("tn-"), None);
        assert_eq!(tenant_of_any("tn-acme"), Some("acme"));
        assert_eq!(tenant_of_any("tn-acme--prod"), Some("acme"));
        assert_eq!(tenant_of_any("tn-acme-eu"), Some("acme-eu"));
        assert_eq!(tenant_of_any("tn-"), None);
        assert_eq!(tenant_of_any("tn---prod"), None);
        assert_eq!(tenant_of_any("tn-acme--"), None);
        assert_eq!(tenant_of_any("default"), None);
        assert_eq!(
            NamespaceOf::parse("tn-acme--prod"),
            Some(NamespaceOf {
                tenant: "acme",
                environment: Some("prod")
            })
        );
        assert_eq!(tenant_namespace("acme"), "tn-acme");
        assert_eq!(environment_of("tn-acme--prod"), Some(("acme", "prod")));
        assert_eq!(environment_of("tn-acme"), None);
        assert_eq!(environment_of("prod"), None);
    }

    #[test]
    fn labels_mark_the_tenant_and_environment() {
        let labels = labels("acme", Some("prod"));
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels[ENVIRONMENT_LABEL], "prod");
        assert_eq!(labels[MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
