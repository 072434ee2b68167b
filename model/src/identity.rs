//! A tenant's identity in Keycloak, as desired: the settings of its realm
//! (or of the shared realm of its type and region, with its organization),
//! its client, and its identity providers with their scope mappings.

use std::collections::BTreeMap;

use ossature_crds::{Isolation, Tenant, TenantSpec, TenantType};
use serde_json::{Value, json};

use crate::conditions::{self, Outcome, reasons};
use crate::names::{TenantNames, sha256_hex};
use kube::ResourceExt;

/// The Lease whose holder (one operator instance) provisions the shared
/// realms; the others use them and wait for them.
pub const SHARED_REALMS_LEASE: &str = "ossature-shared-realms";
/// Client scope that carries the caller's group paths.
pub const SCOPE_NAME: &str = "ossature-scopes";
/// Token claim holding the full group paths.
pub const SCOPE_CLAIM: &str = "scopes";
/// Built-in client scope of realms with organizations; maps membership.
pub const ORGANIZATION_SCOPE: &str = "organization";

/// Managed settings of one realm.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RealmSettings {
    pub name: String,
    pub display_name: String,
    pub registration_allowed: bool,
    pub verify_email: bool,
    /// Realised as the CONFIGURE_TOTP required action being a default action.
    pub mfa_required: bool,
    /// Keycloak policy string, e.g. "length(12) and digits(1)".
    pub password_policy: String,
    pub access_token_lifespan_seconds: i32,
    /// Organizations enabled: a shared realm holding many tenants.
    pub organizations: bool,
}

/// An organization: one tenant in a shared realm.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSettings {
    /// Unique in the realm, immutable in Keycloak: the tenant's name.
    pub alias: String,
    pub description: String,
}

/// The client a tenant's people and services get tokens from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSettings {
    pub client_id: String,
    pub name: String,
    pub access_token_lifespan_seconds: i32,
    /// Claims and scopes the client's tokens carry, as protocol mappers.
    pub mappers: Vec<Value>,
    /// Client scopes (by name) every token of the client includes.
    pub default_scopes: Vec<String>,
    /// Where logins may be sent back to.
    pub redirect_uris: Vec<String>,
}

/// Marks what Ossature manages among a realm's identity providers.
pub const MANAGED_CONFIG: &str = "ossature.dev/managed";

/// One identity provider as Keycloak holds it. No `Debug`: it carries a secret.
#[derive(Clone, PartialEq)]
pub struct IdentityProviderSettings {
    /// Alias in Keycloak: prefixed by the tenant in a shared realm.
    pub alias: String,
    pub display_name: String,
    /// `oidc` or `saml`.
    pub provider: &'static str,
    /// Managed config keys and values (for SAML, added to what its metadata gives).
    pub config: BTreeMap<String, String>,
    /// The OIDC client secret: sent when the provider is created or its
    /// hash (in `config`) changed; Keycloak never shows it back.
    pub secret: Option<String>,
    /// For SAML: where Keycloak imports the rest of the config from.
    pub metadata_url: Option<String>,
    /// Mappers, each named `ossature-...`.
    pub mappers: Vec<Value>,
}

/// Where a tenant's groups live: the realm's own tree, or an organization's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupHome<'a> {
    Realm(&'a str),
    Organization { realm: &'a str, id: &'a str },
}

impl<'a> GroupHome<'a> {
    pub fn realm(self) -> &'a str {
        match self {
            GroupHome::Realm(realm) | GroupHome::Organization { realm, .. } => realm,
        }
    }
}

impl std::fmt::Display for GroupHome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupHome::Realm(realm) => write!(f, "realm {realm}"),
            GroupHome::Organization { realm, id } => {
                write!(f, "organization {id} of realm {realm}")
            }
        }
    }
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

/// The realm a tenant's people log in to: the shared realm of its type
/// and residency, or its own.
pub fn realm_of(names: &TenantNames, spec: &TenantSpec, isolation: Isolation) -> String {
    match isolation {
        Isolation::Organization => shared_realm(spec.tenant_type, &spec.residency),
        Isolation::Realm => names.realm.clone(),
    }
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
        Isolation::Realm => default_scopes.push(SCOPE_NAME.into()),
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
                sha256_hex(secret.unwrap_or_default().as_bytes()),
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

/// Where a tenant's scope groups live: its realm, and its organization in
/// a shared realm; `None` until its identity is recorded.
pub fn group_home(tenant: &Tenant) -> Option<(String, Option<String>)> {
    let status = tenant.status.as_ref()?;
    let realm = status.realm.clone()?;
    match status.isolation {
        Some(Isolation::Organization) => Some((realm, Some(status.organization_id.clone()?))),
        Some(Isolation::Realm) => Some((realm, None)),
        // Provisioned before isolation was recorded: not yet reconciled anew.
        None => None,
    }
}

/// A tenant's isolation cannot move once provisioned: the Stalled outcome
/// when the spec asks for another mode than the one recorded.
pub fn isolation_changed(
    wanted: Option<Isolation>,
    recorded: Option<Isolation>,
) -> Option<Outcome> {
    let (wanted, recorded) = (wanted?, recorded?);
    (wanted != recorded).then(|| {
        Outcome::failed(
            conditions::STALLED,
            reasons::ISOLATION_IMMUTABLE,
            format!(
                "identity.isolation is {wanted:?} but the tenant was provisioned as {recorded:?}; set it back to {recorded:?} (moving between modes is a migration)"
            ),
        )
    })
}

/// Dedicated realms are capped per Keycloak: those already provisioned
/// come first, then the oldest. `tenants` are all tenants known.
pub fn within_realm_capacity<'a>(
    tenant: &Tenant,
    tenants: impl IntoIterator<Item = &'a Tenant>,
    cap: usize,
) -> Result<(), Outcome> {
    let provisioned =
        |t: &Tenant| t.status.as_ref().and_then(|s| s.isolation) == Some(Isolation::Realm);
    if provisioned(tenant) {
        return Ok(());
    }
    let mut realm_tenants: Vec<_> = tenants
        .into_iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none()
                && (provisioned(t) || t.spec.identity.isolation == Some(Isolation::Realm))
        })
        .map(|t| {
            (
                !provisioned(t),
                t.metadata.creation_timestamp.clone().map(|c| c.0),
                t.name_any(),
            )
        })
        .collect();
    realm_tenants.sort();
    let rank = realm_tenants
        .iter()
        .position(|(_, _, n)| *n == tenant.name_any())
        .unwrap_or(realm_tenants.len());
    if rank < cap {
        return Ok(());
    }
    Err(Outcome::failed(
        conditions::STALLED,
        reasons::REALM_CAPACITY_REACHED,
        format!(
            "this Keycloak already holds {cap} dedicated realms (--max-dedicated-realms); use isolation: Organization, or raise the cap once Keycloak can carry more; the tenant proceeds when a dedicated realm is freed"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::{IdentitySettings, PasswordPolicy, Quotas};

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

    fn tenant(
        name: &str,
        wanted: Option<Isolation>,
        recorded: Option<Isolation>,
        created: &str,
    ) -> Tenant {
        let mut tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"type": "Business", "displayName": name, "residency": "eu"},
        }))
        .unwrap();
        tenant.spec.identity.isolation = wanted;
        if let Some(recorded) = recorded {
            tenant.status = Some(ossature_crds::TenantStatus {
                isolation: Some(recorded),
                ..Default::default()
            });
        }
        tenant
    }

    #[test]
    fn dedicated_realms_go_to_the_provisioned_then_the_oldest() {
        use Isolation::*;
        let old = tenant("old", Some(Realm), None, "2026-01-01T00:00:00Z");
        let young = tenant("young", Some(Realm), None, "2026-01-02T00:00:00Z");
        let held = tenant("held", None, Some(Realm), "2026-01-03T00:00:00Z");
        let org = tenant("org", None, Some(Organization), "2025-01-01T00:00:00Z");
        let all = [&old, &young, &held, &org];
        assert!(
            within_realm_capacity(&held, all, 1).is_ok(),
            "provisioned first"
        );
        assert!(within_realm_capacity(&old, all, 2).is_ok());
        let refused = within_realm_capacity(&young, all, 2).unwrap_err();
        assert_eq!(refused.reason, reasons::REALM_CAPACITY_REACHED);
        assert!(within_realm_capacity(&young, all, 3).is_ok());
    }

    #[test]
    fn isolation_cannot_move_and_the_group_home_follows_it() {
        use Isolation::*;
        assert!(isolation_changed(Some(Realm), Some(Organization)).is_some());
        assert!(isolation_changed(Some(Realm), Some(Realm)).is_none());
        assert!(isolation_changed(None, Some(Realm)).is_none());
        let mut t = tenant("acme", None, Some(Organization), "2026-01-01T00:00:00Z");
        assert_eq!(group_home(&t), None, "no organization id yet");
        let status = t.status.as_mut().unwrap();
        status.realm = Some("ossature-business-eu".into());
        status.organization_id = Some("id-1".into());
        assert_eq!(
            group_home(&t),
            Some(("ossature-business-eu".into(), Some("id-1".into())))
        );
    }
}
