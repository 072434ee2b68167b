//! Desired state, computed by pure functions from the custom resources: the
//! names every backend object gets, the Kubernetes objects of a tenant, and
//! the settings of its realm, Pulsar tenant and OpenBao paths.
//!
//! Every derived name starts with the tenant's name (validated at admission to
//! be a DNS label of at most 30 characters), so no tenant can name another's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use ossature_crds::{EnvironmentKind, EnvironmentSpec, Isolation, Quotas, TenantSpec, TenantType};
use serde_json::json;

use crate::adapters::keycloak::{ClientSettings, OrganizationSettings, RealmSettings};
use crate::adapters::pulsar::NamespacePolicy;

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ossature");
pub const TENANT_LABEL: &str = "ossature.dev/tenant";
pub const ENVIRONMENT_LABEL: &str = "ossature.dev/environment";
pub const SCOPE_LABEL: &str = "ossature.dev/scope";
/// Marks what a `Retain` deletion left behind, no longer managed.
pub const RETAINED_LABEL: &str = "ossature.dev/retained";

/// A `ttl` such as `72h`, `1h30m` or `90s` (the CRD's pattern), as a duration.
pub fn parse_ttl(ttl: &str) -> Option<std::time::Duration> {
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in ttl.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        seconds += number.parse::<u64>().ok()? * unit;
        number.clear();
    }
    (number.is_empty() && !ttl.is_empty()).then(|| std::time::Duration::from_secs(seconds))
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
}

impl TenantNames {
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            namespace: format!("tn-{tenant}"),
            realm: tenant.to_string(),
            pulsar_tenant: tenant.to_string(),
            kv_mount: format!("tenants/{tenant}/kv"),
            transit_mount: format!("tenants/{tenant}/transit"),
            pki_mount: format!("tenants/{tenant}/pki"),
            transit_key: tenant.to_string(),
            policy: format!("tenant-{tenant}"),
        }
    }

    /// Names of one of the tenant's environments.
    pub fn environment(&self, environment: &str) -> EnvironmentNames {
        EnvironmentNames {
            // `--` cannot occur in tenant or environment names (refused at
            // admission), so `acme` + `eu-prod` and `acme-eu` + `prod` differ.
            namespace: format!("{}--{environment}", self.namespace),
            pulsar_namespace: environment.to_string(),
            secrets_prefix: format!("{}/data/{environment}/", self.kv_mount),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentNames {
    pub namespace: String,
    /// Within the tenant's Pulsar tenant: `<tenant>/<this>`.
    pub pulsar_namespace: String,
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

/// The namespace, its quota, limit range and network policies.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceObjects {
    pub namespace: Namespace,
    pub quota: ResourceQuota,
    pub limits: LimitRange,
    /// Default deny, then same-tenant traffic and DNS allowed.
    pub policies: Vec<NetworkPolicy>,
}

pub fn namespace_objects(
    namespace: &str,
    tenant: &str,
    environment: Option<&str>,
    quotas: &Quotas,
) -> NamespaceObjects {
    let labels = labels(tenant, environment);
    let meta = |name: &str| json!({"name": name, "namespace": namespace, "labels": labels});
    let mut hard = BTreeMap::new();
    let mut set = |key: &str, value: Option<Quantity>| {
        if let Some(value) = value {
            hard.insert(key.to_string(), value);
        }
    };
    set("requests.cpu", quotas.cpu.clone());
    set("requests.memory", quotas.memory.clone());
    set("requests.storage", quotas.storage.clone());
    set("pods", quotas.pods.map(|p| Quantity(p.to_string())));

    NamespaceObjects {
        namespace: from(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": labels},
        })),
        quota: from(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": meta("ossature-quota"),
            "spec": {"hard": hard},
        })),
        limits: from(json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": meta("ossature-limits"),
            "spec": {"limits": [{
                "type": "Container",
                "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                "default": {"cpu": "1", "memory": "512Mi"},
            }]},
        })),
        policies: vec![
            from(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": meta("ossature-default-deny"),
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            })),
            from(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": meta("ossature-same-tenant"),
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]}],
                    "egress": [
                        {"to": [{"namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}}}]},
                        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                    ],
                },
            })),
        ],
    }
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("literal objects are valid")
}

/// Realm settings: the tenant type's defaults, overridden by what the spec sets.
pub fn realm_settings(names: &TenantNames, spec: &TenantSpec) -> RealmSettings {
    let business = spec.tenant_type == TenantType::Business;
    let identity = &spec.identity;
    let policy = identity.password_policy.clone().unwrap_or_default();
    let min_length = policy.min_length.unwrap_or(if business { 12 } else { 8 });
    let mut rules = vec![format!("length({min_length})"), "notUsername".to_string()];
    if policy.require_digit.unwrap_or(business) {
        rules.push("digits(1)".into());
    }
    if policy.require_mixed_case.unwrap_or(business) {
        rules.push("upperCase(1)".into());
        rules.push("lowerCase(1)".into());
    }
    if policy.require_special_character.unwrap_or(business) {
        rules.push("specialChars(1)".into());
    }
    let history = policy.history.unwrap_or(if business { 5 } else { 0 });
    if history > 0 {
        rules.push(format!("passwordHistory({history})"));
    }
    RealmSettings {
        organizations: false,
        name: names.realm.clone(),
        display_name: spec.display_name.clone(),
        registration_allowed: identity.self_registration.unwrap_or(!business),
        verify_email: identity.email_verification.unwrap_or(true),
        mfa_required: identity.mfa_required.unwrap_or(business),
        password_policy: rules.join(" and "),
        access_token_lifespan_seconds: identity.access_token_lifetime_seconds.unwrap_or(300),
    }
}

/// Where a tenant's people live. What the spec says; else what was recorded
/// when it was first provisioned; else `Realm` for a tenant provisioned
/// before isolation existed (it has a realm of its name), `Organization`
/// for a new one. An upgrade never changes a tenant's mode.
pub fn effective_isolation(
    wanted: Option<Isolation>,
    recorded: Option<Isolation>,
    has_own_realm: bool,
) -> Isolation {
    wanted.or(recorded).unwrap_or(if has_own_realm {
        Isolation::Realm
    } else {
        Isolation::Organization
    })
}

/// The shared realm of a tenant type in a residency region: its people's
/// data stays in the region. Tenant names cannot start with `ossature-`.
pub fn shared_realm(tenant_type: TenantType, residency: &str) -> String {
    let kind = match tenant_type {
        TenantType::Business => "business",
        TenantType::Consumer => "consumer",
    };
    format!("ossature-{kind}-{residency}")
}

/// The shared realm's settings: the type's defaults, with organizations on
/// and no self-registration (people join a tenant by invitation or through
/// its identity provider).
pub fn shared_realm_settings(tenant_type: TenantType, residency: &str) -> RealmSettings {
    let spec = TenantSpec {
        tenant_type,
        display_name: format!("{tenant_type:?} tenants ({residency})"),
        residency: residency.to_string(),
        identity: Default::default(),
        quotas: Default::default(),
        edge: Default::default(),
        certificate_authority: Default::default(),
        domains: Vec::new(),
        deletion_policy: Default::default(),
    };
    let names = TenantNames {
        realm: shared_realm(tenant_type, residency),
        ..TenantNames::new("shared")
    };
    RealmSettings {
        organizations: true,
        registration_allowed: false,
        ..realm_settings(&names, &spec)
    }
}

/// The tenant's organization in its shared realm.
pub fn organization_settings(names: &TenantNames, spec: &TenantSpec) -> OrganizationSettings {
    OrganizationSettings {
        alias: names.tenant.clone(),
        description: spec.display_name.clone(),
    }
}

/// Token claim naming the tenant in tokens of a realm of its own.
pub const TENANT_CLAIM: &str = "tenant";

/// The tenant's client: tokens name it as audience and last the tenant's
/// lifetime. In a shared realm the `organization` scope names the tenant
/// (from membership, so another tenant's people never get it); in a realm
/// of its own a fixed claim does.
pub fn client_settings(
    names: &TenantNames,
    spec: &TenantSpec,
    isolation: Isolation,
) -> ClientSettings {
    let lifetime = spec.identity.access_token_lifetime_seconds.unwrap_or(300);
    let mut mappers = vec![json!({
        "name": "audience",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.client.audience": names.tenant,
            "access.token.claim": "true",
            "introspection.token.claim": "true",
        },
    })];
    // Naming default scopes replaces Keycloak's: keep its own (`basic`
    // carries `sub`), add the one that carries the tenant's scope paths.
    let mut default_scopes: Vec<String> =
        ["basic", "profile", "email", "roles", "web-origins", "acr"]
            .map(String::from)
            .to_vec();
    match isolation {
        Isolation::Organization => default_scopes.push("organization".into()),
        Isolation::Realm => default_scopes.push(crate::adapters::keycloak::SCOPE_NAME.into()),
    }
    match isolation {
        Isolation::Organization => {}
        Isolation::Realm => mappers.push(json!({
            "name": TENANT_CLAIM,
            "protocol": "openid-connect",
            "protocolMapper": "oidc-hardcoded-claim-mapper",
            "config": {
                "claim.name": TENANT_CLAIM,
                "claim.value": names.tenant,
                "jsonType.label": "String",
                "access.token.claim": "true",
                "id.token.claim": "true",
                "introspection.token.claim": "true",
            },
        })),
    }
    ClientSettings {
        redirect_uris: spec
            .identity
            .redirect_uris
            .iter()
            .map(|u| u.0.clone())
            .collect(),
        client_id: names.tenant.clone(),
        name: spec.display_name.clone(),
        access_token_lifespan_seconds: lifetime,
        mappers,
        default_scopes,
    }
}

pub use crate::adapters::keycloak::{IdentityProviderSettings, MANAGED_CONFIG};
/// Keycloak never shows a client secret back: its hash tells a change.
pub const SECRET_HASH_CONFIG: &str = "ossature.dev/secret-sha256";
/// The metadata a SAML provider was configured from.
pub const METADATA_URL_CONFIG: &str = "ossature.dev/metadata-url";

/// The Keycloak alias of a tenant's provider: realm-unique in a shared realm.
pub fn provider_alias(tenant: &str, alias: &str, isolation: Isolation) -> String {
    match isolation {
        Isolation::Organization => format!("{tenant}-{alias}"),
        Isolation::Realm => alias.to_string(),
    }
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What Keycloak is given for `provider`: `secret` is the OIDC client secret
/// read from its Secret, `scope_paths` the path of each scope by name.
pub fn identity_provider_settings(
    tenant: &str,
    isolation: Isolation,
    provider: &ossature_crds::IdentityProvider,
    secret: Option<&str>,
    scope_paths: &BTreeMap<String, String>,
) -> IdentityProviderSettings {
    let alias = provider_alias(tenant, &provider.alias, isolation);
    let mut config = BTreeMap::from([
        (MANAGED_CONFIG.to_string(), "true".to_string()),
        ("syncMode".to_string(), "FORCE".to_string()),
    ]);
    let (kind, metadata_url) = match (&provider.oidc, &provider.saml) {
        (Some(oidc), _) => {
            for (key, value) in [
                ("issuer", oidc.issuer.as_str()),
                ("authorizationUrl", &oidc.authorization_url),
                ("tokenUrl", &oidc.token_url),
                ("jwksUrl", &oidc.jwks_url),
                ("useJwksUrl", "true"),
                ("validateSignature", "true"),
                ("clientId", &oidc.client_id),
                ("clientAuthMethod", "client_secret_post"),
                (
                    "defaultScope",
                    oidc.scopes.as_deref().unwrap_or("openid profile email"),
                ),
            ] {
                config.insert(key.into(), value.into());
            }
            config.insert(
                SECRET_HASH_CONFIG.into(),
                sha256_hex(secret.unwrap_or_default()),
            );
            ("oidc", None)
        }
        (None, Some(saml)) => {
            config.insert(METADATA_URL_CONFIG.into(), saml.metadata_url.clone());
            ("saml", Some(saml.metadata_url.clone()))
        }
        (None, None) => ("oidc", None),
    };
    let mut mappers = Vec::new();
    for (i, mapping) in provider.scopes.iter().enumerate() {
        let Some(path) = scope_paths.get(&mapping.scope) else {
            continue;
        };
        let pairs = json!([{"key": mapping.claim, "value": mapping.value}]).to_string();
        let (mapper, key, regex) = match kind {
            "saml" => (
                "saml-advanced-group-idp-mapper",
                "attributes",
                "are.attribute.values.regex",
            ),
            _ => (
                "oidc-advanced-group-idp-mapper",
                "claims",
                "are.claim.values.regex",
            ),
        };
        let mut config = json!({key: pairs, regex: "false", "group": path, "syncMode": "FORCE"});
        if isolation == Isolation::Organization {
            config["groupType"] = json!("ORGANIZATION");
        }
        mappers.push(json!({
            "name": format!("ossature-scope-{}-{i}", mapping.scope),
            "identityProviderAlias": alias,
            "identityProviderMapper": mapper,
            "config": config,
        }));
    }
    IdentityProviderSettings {
        display_name: provider
            .display_name
            .clone()
            .unwrap_or_else(|| provider.alias.clone()),
        alias,
        provider: kind,
        config,
        secret: secret.map(String::from),
        metadata_url,
        mappers,
    }
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
    use ossature_crds::{IdentitySettings, PasswordPolicy};

    fn spec(kind: TenantType) -> TenantSpec {
        TenantSpec {
            tenant_type: kind,
            display_name: "Acme".into(),
            residency: "eu".into(),
            identity: IdentitySettings::default(),
            quotas: Quotas::default(),
            edge: Default::default(),
            certificate_authority: Default::default(),
            domains: Vec::new(),
            deletion_policy: Default::default(),
        }
    }

    #[test]
    fn every_name_is_scoped_by_the_tenant() {
        let acme = TenantNames::new("acme");
        let acme_eu = TenantNames::new("acme-eu");
        assert_eq!(acme.namespace, "tn-acme");
        assert_eq!(acme.kv_mount, "tenants/acme/kv");
        assert_eq!(acme.environment("prod").namespace, "tn-acme--prod");
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
    fn business_and_consumer_realms_differ_by_default() {
        let names = TenantNames::new("acme");
        let business = realm_settings(&names, &spec(TenantType::Business));
        let consumer = realm_settings(&names, &spec(TenantType::Consumer));
        assert!(business.mfa_required && !business.registration_allowed);
        assert!(!consumer.mfa_required && consumer.registration_allowed);
        assert!(business.password_policy.contains("length(12)"));
        assert!(business.password_policy.contains("specialChars(1)"));
        assert!(consumer.password_policy.starts_with("length(8)"));
        assert_eq!(business.access_token_lifespan_seconds, 300);
    }

    #[test]
    fn explicit_identity_settings_override_type_defaults() {
        let mut s = spec(TenantType::Business);
        s.identity = IdentitySettings {
            mfa_required: Some(false),
            access_token_lifetime_seconds: Some(900),
            password_policy: Some(PasswordPolicy {
                min_length: Some(20),
                history: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let realm = realm_settings(&TenantNames::new("acme"), &s);
        assert!(!realm.mfa_required);
        assert_eq!(realm.access_token_lifespan_seconds, 900);
        assert!(realm.password_policy.contains("length(20)"));
        assert!(!realm.password_policy.contains("passwordHistory"));
    }

    #[test]
    fn namespace_objects_carry_labels_quota_and_deny_by_default() {
        let quotas = Quotas {
            cpu: Some(Quantity("4".into())),
            pods: Some(20),
            ..Default::default()
        };
        let objects = namespace_objects("tn-acme--prod", "acme", Some("prod"), &quotas);
        let labels = objects.namespace.metadata.labels.clone().unwrap();
        assert_eq!(labels[TENANT_LABEL], "acme");
        assert_eq!(labels[ENVIRONMENT_LABEL], "prod");
        let hard = objects.quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"], Quantity("4".into()));
        assert_eq!(hard["pods"], Quantity("20".into()));
        assert!(!hard.contains_key("requests.memory"));
        let deny = objects.policies[0].spec.clone().unwrap();
        assert!(deny.ingress.is_none() && deny.egress.is_none());
        assert_eq!(deny.policy_types.unwrap(), vec!["Ingress", "Egress"]);
        let allow = serde_json::to_value(&objects.policies[1]).unwrap();
        assert_eq!(
            allow["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
                [TENANT_LABEL],
            "acme"
        );
    }

    #[test]
    fn isolation_never_changes_for_a_provisioned_tenant() {
        use Isolation::*;
        assert_eq!(effective_isolation(None, None, false), Organization);
        assert_eq!(
            effective_isolation(None, None, true),
            Realm,
            "a tenant from before isolation keeps its realm"
        );
        assert_eq!(
            effective_isolation(None, Some(Organization), true),
            Organization
        );
        assert_eq!(effective_isolation(Some(Realm), None, false), Realm);
    }

    #[test]
    fn shared_realms_are_per_type_and_region_and_take_the_type_defaults() {
        assert_eq!(
            shared_realm(TenantType::Business, "eu"),
            "ossature-business-eu"
        );
        let business = shared_realm_settings(TenantType::Business, "eu");
        assert!(business.organizations && business.mfa_required && !business.registration_allowed);
        let consumer = shared_realm_settings(TenantType::Consumer, "us");
        assert_eq!(consumer.name, "ossature-consumer-us");
        assert!(!consumer.mfa_required && !consumer.registration_allowed);
        assert!(consumer.password_policy.starts_with("length(8)"));
    }

    #[test]
    fn the_client_carries_the_tenants_lifetime_and_audience() {
        let mut s = spec(TenantType::Business);
        s.identity.access_token_lifetime_seconds = Some(900);
        let names = TenantNames::new("acme");
        let org = client_settings(&names, &s, Isolation::Organization);
        assert_eq!(org.client_id, "acme");
        assert_eq!(org.access_token_lifespan_seconds, 900);
        assert_eq!(org.mappers[0]["config"]["included.client.audience"], "acme");
        assert!(org.default_scopes.contains(&"organization".to_string()));
        let realm = client_settings(&names, &s, Isolation::Realm);
        assert_eq!(realm.mappers[1]["config"]["claim.value"], "acme");
        assert!(!realm.default_scopes.contains(&"organization".to_string()));
    }

    #[test]
    fn identity_providers_are_prefixed_in_a_shared_realm_and_carry_no_secret() {
        let provider: ossature_crds::IdentityProvider = serde_json::from_value(json!({
            "alias": "corp",
            "oidc": {"issuer": "https://idp", "authorizationUrl": "https://idp/auth",
                     "tokenUrl": "https://idp/token", "jwksUrl": "https://idp/certs",
                     "clientId": "ossature", "clientSecret": {"name": "s", "key": "k"}},
            "scopes": [{"claim": "groups", "value": "eu-admins", "scope": "eu"},
                       {"claim": "groups", "value": "x", "scope": "unknown"}],
        }))
        .unwrap();
        let paths = BTreeMap::from([("eu".to_string(), "/global/eu".to_string())]);
        let org = identity_provider_settings(
            "acme",
            Isolation::Organization,
            &provider,
            Some("s3cr3t"),
            &paths,
        );
        assert_eq!(org.alias, "acme-corp");
        assert_eq!(org.config["clientId"], "ossature");
        assert!(
            !org.config.values().any(|v| v.contains("s3cr3t")),
            "never the secret itself"
        );
        assert_eq!(org.config[SECRET_HASH_CONFIG].len(), 64);
        assert_eq!(
            org.mappers.len(),
            1,
            "a mapping to an unknown scope waits for it"
        );
        assert_eq!(org.mappers[0]["config"]["group"], "/global/eu");
        assert_eq!(org.mappers[0]["config"]["groupType"], "ORGANIZATION");
        let own =
            identity_provider_settings("acme", Isolation::Realm, &provider, Some("other"), &paths);
        assert_eq!(own.alias, "corp");
        assert_ne!(
            own.config[SECRET_HASH_CONFIG],
            org.config[SECRET_HASH_CONFIG]
        );
        assert!(own.mappers[0]["config"].get("groupType").is_none());
    }

    #[test]
    fn ttls_read_as_durations() {
        use std::time::Duration;
        assert_eq!(parse_ttl("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_ttl("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2m5s"), Some(Duration::from_secs(125)));
        assert_eq!(parse_ttl(""), None);
        assert_eq!(parse_ttl("10"), None);
        assert_eq!(parse_ttl("3d"), None);
    }

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
