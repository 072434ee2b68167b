//! What is decided of a ServiceIdentity without calling anything: the names
//! it has in every backend, its OpenBao policy, its Pulsar token's claims and
//! when to mint another, when its credentials rotate, and the topic grants
//! of a whole tenant with the calls that apply only their difference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Resource;
use ossature_crds::{
    Certificate, CertificateSpec, CredentialRotation, DeletionPolicy, Isolation, IssuerRef,
    KeyAlgorithm, ServiceIdentity, TenantCaRef, TopicAction, Usage, default_rotate_every,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::names::{ENVIRONMENT_SEPARATOR, TenantNames, environment_of};

/// The names of one service in every backend. `qualified` is
/// `<tenant>.<environment>.<service>`: the three are DNS labels without
/// dots, so it is unique across tenants and environments and cannot be
/// mistaken for a tenant's own Keycloak client (a bare tenant name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    pub tenant: String,
    pub environment: String,
    pub service: String,
    /// Its Kubernetes namespace, `tn-<tenant>--<environment>`.
    pub namespace: String,
    pub qualified: String,
    pub service_account: String,
    /// The `sub` of its Pulsar token.
    pub pulsar_role: String,
    pub keycloak_client_id: String,
    /// Its Kubernetes-auth role in OpenBao.
    pub openbao_role: String,
    pub openbao_policy: String,
    /// The tenant's KV mount, where its secrets are kept.
    pub kv_mount: String,
    /// Its secrets inside the mount: `<environment>/services/<service>`.
    pub secrets_key: String,
    /// The Secret of its namespace that its Workloads mount.
    pub secret_name: String,
}

impl ServiceNames {
    /// The names of service `service` in `namespace`; `None` outside an
    /// environment namespace.
    pub fn new(namespace: &str, service: &str) -> Option<Self> {
        let (tenant, environment) = environment_of(namespace)?;
        let tenant_names = TenantNames::new(tenant);
        let qualified = format!("{tenant}.{environment}.{service}");
        Some(ServiceNames {
            tenant: tenant.to_string(),
            environment: environment.to_string(),
            service: service.to_string(),
            namespace: namespace.to_string(),
            service_account: service.to_string(),
            pulsar_role: qualified.clone(),
            keycloak_client_id: qualified.clone(),
            // The operator's OpenBao policy lets it write roles and
            // policies named `tenant-*` only.
            openbao_role: format!("tenant-{qualified}"),
            openbao_policy: format!("tenant-{qualified}"),
            kv_mount: tenant_names.kv_mount,
            secrets_key: format!("{environment}/services/{service}"),
            secret_name: format!("{service}-secrets"),
            qualified,
        })
    }

    pub fn of(identity: &ServiceIdentity) -> Option<Self> {
        Self::new(
            identity.metadata.namespace.as_deref()?,
            identity.metadata.name.as_deref()?,
        )
    }

    /// `spiffe://<tenant>.<root-domain>/ns/<namespace>/sa/<service-account>`:
    /// each tenant is its own trust domain, as it has its own CA.
    pub fn spiffe_id(&self, root_domain: &str) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            TenantNames::new(&self.tenant).host(root_domain),
            self.namespace,
            self.service_account
        )
    }

    /// Where the operator keeps the credentials it makes (Keycloak client
    /// secret, Pulsar token), under the service's path: the path itself is
    /// the tenant's own, for secrets it puts there.
    pub fn credentials_key(&self) -> String {
        format!("{}/{CREDENTIALS}", self.secrets_key)
    }

    /// The Certificate carrying its SPIFFE ID, and the Secret of its key.
    pub fn certificate_name(&self) -> String {
        format!("{}-identity", self.service)
    }

    pub fn certificate_secret(&self) -> String {
        format!("{}-tls", self.service)
    }

    /// The policy reading this service's secrets and nothing else: not the
    /// environment's, not another service's (whose path only shares a
    /// prefix: the paths end at the service name or a `/` after it).
    pub fn openbao_policy_hcl(&self) -> String {
        let kv = self.kv_mount.trim_matches('/');
        let key = &self.secrets_key;
        format!(
            r#"# Managed by ossature-operator; edits are overwritten.
path "{kv}/data/{key}" {{
  capabilities = ["read"]
}}
path "{kv}/data/{key}/*" {{
  capabilities = ["read"]
}}
path "{kv}/metadata/{key}" {{
  capabilities = ["read", "list"]
}}
path "{kv}/metadata/{key}/*" {{
  capabilities = ["read", "list"]
}}
"#
        )
    }

    /// The Kubernetes-auth role: only this ServiceAccount in this namespace
    /// logs in, and gets only this service's policy.
    pub fn openbao_role_settings(&self) -> Value {
        json!({
            "bound_service_account_names": [self.service_account],
            "bound_service_account_namespaces": [self.namespace],
            "token_policies": [self.openbao_policy],
            "token_ttl": "1h",
            "token_max_ttl": "1h",
        })
    }
}

/// The Keycloak client of a service: confidential, client credentials
/// only, EdDSA tokens naming the tenant (its audience and claim) so the
/// platform's APIs take them as the tenant's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceClient {
    pub client_id: String,
    pub name: String,
    /// Attributes the operator owns; others (Keycloak's rotation records)
    /// are kept.
    pub attributes: BTreeMap<String, String>,
    pub mappers: Vec<Value>,
}

/// Client attribute that puts a client under the secret-rotation policy.
pub const SERVICE_CLIENT_ATTRIBUTE: &str = "ossature.dev/service";
/// The realm's client profile and policy that keep a rotated secret valid.
pub const ROTATION_PROFILE: &str = "ossature-secret-rotation";
pub const ROTATION_POLICY: &str = "ossature-services";
/// How long the previous secret stays valid after a rotation: long enough
/// for the new one to reach every pod, and for an OpenBao outage of a day
/// to pass with the previous one still working.
pub const ROTATED_SECRET_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// When Keycloak itself would expire a secret: beyond the longest
/// `rotateEvery` (90 days), so the operator's schedule is what rotates.
pub const SECRET_EXPIRY: Duration = Duration::from_secs(100 * 24 * 3600);
/// Lifetime of a service's access token.
pub const SERVICE_TOKEN_LIFESPAN: u32 = 300;

pub fn service_client(names: &ServiceNames, isolation: Isolation) -> ServiceClient {
    let tenant = &names.tenant;
    let mut mappers = vec![json!({
        "name": "audience",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.client.audience": tenant,
            "access.token.claim": "true",
            "introspection.token.claim": "true",
        },
    })];
    // A service account is no member of the organization: the claim that
    // names the tenant is fixed on its client (which only the operator
    // writes), as the tenant's own tokens carry it.
    let (claim, value, json_type) = match isolation {
        Isolation::Organization => ("organization", json!([tenant]).to_string(), "JSON"),
        Isolation::Realm => (crate::identity::TENANT_CLAIM, tenant.clone(), "String"),
    };
    mappers.push(json!({
        "name": claim,
        "protocol": "openid-connect",
        "protocolMapper": "oidc-hardcoded-claim-mapper",
        "config": {
            "claim.name": claim,
            "claim.value": value,
            "jsonType.label": json_type,
            "access.token.claim": "true",
            "id.token.claim": "false",
            "introspection.token.claim": "true",
        },
    }));
    ServiceClient {
        client_id: names.keycloak_client_id.clone(),
        name: format!("{} ({} of {})", names.service, names.environment, tenant),
        attributes: BTreeMap::from([
            (SERVICE_CLIENT_ATTRIBUTE.to_string(), "true".to_string()),
            (
                "access.token.signed.response.alg".to_string(),
                "EdDSA".to_string(),
            ),
            (
                "access.token.lifespan".to_string(),
                SERVICE_TOKEN_LIFESPAN.to_string(),
            ),
        ]),
        mappers,
    }
}

/// The client profile of the realm that rotates secrets keeping the
/// previous one valid, as Keycloak's `secret-rotation` executor does.
pub fn rotation_profile() -> Value {
    json!({
        "name": ROTATION_PROFILE,
        "description": "Managed by ossature-operator: service client secrets rotate with the previous one still valid for a while.",
        "executors": [{
            "executor": "secret-rotation",
            "configuration": {
                "expiration-period": SECRET_EXPIRY.as_secs().to_string(),
                "rotated-expiration-period": ROTATED_SECRET_VALIDITY.as_secs().to_string(),
                "remaining-rotation-period": ROTATED_SECRET_VALIDITY.as_secs().to_string(),
            },
        }],
    })
}

/// The client policy applying the profile to service clients only.
pub fn rotation_policy() -> Value {
    json!({
        "name": ROTATION_POLICY,
        "description": "Managed by ossature-operator: service clients rotate their secrets without a gap.",
        "enabled": true,
        "conditions": [{
            "condition": "client-attributes",
            "configuration": {
                "is-negative-logic": false,
                "attributes": json!([{"key": SERVICE_CLIENT_ATTRIBUTE, "value": "true"}]).to_string(),
            },
        }],
        "profiles": [ROTATION_PROFILE],
    })
}

/// The Kubernetes objects of a service, owned by its ServiceIdentity.
#[derive(Debug, Clone)]
pub struct ServiceObjects {
    pub service_account: ServiceAccount,
    /// From the tenant CA, with the SPIFFE ID as its only name, for
    /// mutual TLS; its key reaches `<service>-tls`.
    pub certificate: Certificate,
}

/// Lifetime of a service's certificate: a day, renewed after two thirds.
pub const CERTIFICATE_LIFETIME: &str = "24h";

pub fn service_objects(
    identity: &ServiceIdentity,
    names: &ServiceNames,
    root_domain: &str,
) -> ServiceObjects {
    let labels = || {
        Some(crate::names::labels(
            &names.tenant,
            Some(&names.environment),
        ))
    };
    let owner = identity.controller_owner_ref(&()).map(|o| vec![o]);
    let mut service_account = ServiceAccount::default();
    service_account.metadata.name = Some(names.service_account.clone());
    service_account.metadata.namespace = Some(names.namespace.clone());
    service_account.metadata.labels = labels();
    service_account.metadata.owner_references = owner.clone();
    // Its pods reach OpenBao with a projected token; no long-lived one.
    service_account.automount_service_account_token = Some(false);

    let mut certificate = Certificate::new(
        &names.certificate_name(),
        CertificateSpec {
            dns_names: Vec::new(),
            uris: vec![names.spiffe_id(root_domain)],
            usages: vec![Usage::Client, Usage::Server],
            lifetime: Some(CERTIFICATE_LIFETIME.into()),
            renew_before: None,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            secret_name: Some(names.certificate_secret()),
            deletion_policy: DeletionPolicy::Delete,
            issuer: IssuerRef {
                tenant_ca: Some(TenantCaRef {}),
                acme: None,
            },
        },
    );
    certificate.metadata.namespace = Some(names.namespace.clone());
    certificate.metadata.labels = labels();
    certificate.metadata.owner_references = owner;
    ServiceObjects {
        service_account,
        certificate,
    }
}

/// The service's Secret, which its Workloads mount as files.
pub fn service_secret(
    identity: &ServiceIdentity,
    names: &ServiceNames,
    data: &BTreeMap<String, String>,
) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(names.secret_name.clone());
    secret.metadata.namespace = Some(names.namespace.clone());
    secret.metadata.labels = Some(crate::names::labels(
        &names.tenant,
        Some(&names.environment),
    ));
    secret.metadata.owner_references = identity.controller_owner_ref(&()).map(|o| vec![o]);
    secret.type_ = Some("Opaque".into());
    secret.string_data = None;
    secret.data = Some(
        data.iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
            .collect(),
    );
    secret
}

/// The last segment of the service's credentials path in KV.
pub const CREDENTIALS: &str = "credentials";
/// Keys of the credentials, in KV and in the service's Secret.
pub const CLIENT_ID_KEY: &str = "client-id";
pub const CLIENT_SECRET_KEY: &str = "client-secret";
pub const PULSAR_TOKEN_KEY: &str = "pulsar-token";
/// Unix seconds at which the Pulsar token expires.
pub const PULSAR_TOKEN_EXPIRES_KEY: &str = "pulsar-token-expires";

/// The data of the service's Secret: what the tenant keeps at the
/// service's own path, and the credentials the operator makes (which win a
/// clash of keys, so a stray key cannot hide a live credential).
pub fn secret_data(
    own: &BTreeMap<String, String>,
    credentials: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut data = own.clone();
    data.extend(credentials.clone());
    data
}

/// SHA-256 (hex) of a Secret's data, keys in order: Workloads roll out
/// when it changes.
pub fn secrets_hash(data: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in data {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    crate::names::sha256_hex(&bytes)
}

/// The expiry of the token in `credentials`, if there is a readable one.
pub fn token_expiry(credentials: &BTreeMap<String, String>) -> Option<i64> {
    credentials.get(PULSAR_TOKEN_KEY)?;
    credentials.get(PULSAR_TOKEN_EXPIRES_KEY)?.parse().ok()
}

/// Whether `role` is a service role of `tenant`: the only Pulsar roles the
/// tenant's grants may add or take away.
pub fn is_service_role(tenant: &str, role: &str) -> bool {
    role.strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('.').collect();
            parts.len() == 2 && parts.iter().all(|p| !p.is_empty())
        })
}

/// How long a Pulsar token is valid: at most a day, so a leaked token dies
/// soon; a revoked grant takes effect at once whatever the token.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A token is minted again this long before it expires, so a service that
/// reads its file late, or a reconcile that fails for hours, never meets
/// an expired one.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(8 * 3600);

/// The claims of a Pulsar token: the broker takes `sub` as the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn token_claims(role: &str, now: Timestamp) -> TokenClaims {
    TokenClaims {
        sub: role.to_string(),
        iat: now.as_second(),
        exp: now.as_second() + TOKEN_LIFETIME.as_secs() as i64,
    }
}

/// Whether a token expiring at `expires` (Unix seconds; `None`: there is no
/// token) must be minted again now.
pub fn token_due(expires: Option<i64>, now: Timestamp) -> bool {
    expires.is_none_or(|exp| now.as_second() >= exp - TOKEN_MARGIN.as_secs() as i64)
}

/// The JWS signing input (`header.claims`, base64url) of an ES256 token,
/// which OpenBao's transit key signs (`marshaling_algorithm: jws`) so the
/// signing key never leaves OpenBao.
pub fn token_signing_input(claims: &TokenClaims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    format!("{header}.{body}")
}

/// The token, from the signing input and transit's signature
/// (`vault:v<n>:<base64url>`); `None` for a signature of another shape.
pub fn token_from_signature(input: &str, signature: &str) -> Option<String> {
    let mut parts = signature.splitn(3, ':');
    let (vault, version, sig) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = vault == "vault"
        && version.starts_with('v')
        && !sig.is_empty()
        && sig
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| format!("{input}.{sig}"))
}

/// The rotation interval of the spec (its default when unreadable, which
/// admission does not let through).
pub fn rotation_interval(credentials: &CredentialRotation) -> Duration {
    crate::time::parse_ttl(&credentials.rotate_every)
        .or_else(|| crate::time::parse_ttl(&default_rotate_every()))
        .expect("the default interval parses")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Never rotated yet: create the credentials.
    First,
    /// `credentials.rotationRequest` changed.
    Requested,
    /// The interval has passed.
    Scheduled,
    /// Nothing to do until then.
    At(Timestamp),
}

/// Whether the credentials rotate now, or when they will.
pub fn rotation(
    credentials: &CredentialRotation,
    last_rotated: Option<Timestamp>,
    last_request: Option<&str>,
    now: Timestamp,
) -> Rotation {
    let Some(last) = last_rotated else {
        return Rotation::First;
    };
    if credentials.rotation_request.is_some()
        && credentials.rotation_request.as_deref() != last_request
    {
        return Rotation::Requested;
    }
    let interval = SignedDuration::try_from(rotation_interval(credentials))
        .expect("intervals are bounded at admission");
    let next = last.saturating_add(interval).expect("a span in range");
    if now >= next {
        Rotation::Scheduled
    } else {
        Rotation::At(next)
    }
}

/// A Topic, by its Kubernetes namespace and name: the key of grants, which
/// name topics this way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicRef {
    pub namespace: String,
    pub name: String,
}

/// Role -> actions on one topic.
pub type Permissions = BTreeMap<String, BTreeSet<TopicAction>>;

/// Every grant of a tenant, complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub topics: BTreeMap<TopicRef, Permissions>,
    /// (Kubernetes namespace, subscription) -> the roles that may use it.
    pub subscriptions: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Grants {
    /// The permissions on one topic (none when nothing grants it).
    pub fn on(&self, namespace: &str, topic: &str) -> Permissions {
        let key = TopicRef {
            namespace: namespace.into(),
            name: topic.into(),
        };
        self.topics.get(&key).cloned().unwrap_or_default()
    }
}

/// The complete grants of `tenant` from every one of its ServiceIdentities:
/// one being deleted grants nothing, and one outside the tenant's
/// environment namespaces is ignored, so no grant reaches another tenant.
pub fn desired_grants(tenant: &str, identities: &[ServiceIdentity]) -> Grants {
    let mut grants = Grants::default();
    let live = identities
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none());
    for (identity, names) in live.filter_map(|i| Some((i, ServiceNames::of(i)?))) {
        if names.tenant != tenant {
            continue;
        }
        for grant in &identity.spec.grants {
            let key = TopicRef {
                namespace: names.namespace.clone(),
                name: grant.topic.clone(),
            };
            grants
                .topics
                .entry(key)
                .or_default()
                .entry(names.pulsar_role.clone())
                .or_default()
                .extend(grant.actions.iter().copied());
            for subscription in &grant.subscriptions {
                grants
                    .subscriptions
                    .entry((names.namespace.clone(), subscription.clone()))
                    .or_default()
                    .insert(names.pulsar_role.clone());
            }
        }
    }
    grants
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantCall {
    /// Set the role's actions on the topic (Pulsar replaces that role's
    /// entry and no other).
    Grant {
        role: String,
        actions: BTreeSet<TopicAction>,
    },
    /// Take the role's entry away.
    Revoke { role: String },
}

/// The calls that turn a topic's live permissions (role -> actions as
/// Pulsar writes them) into the desired ones. Each call names one role; a
/// role that is not one of the tenant's services (a superuser, another
/// tool's) is never revoked.
pub fn grant_calls(
    tenant: &str,
    desired: &Permissions,
    live: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<GrantCall> {
    let as_strings =
        |actions: &BTreeSet<TopicAction>| actions.iter().map(|a| a.as_str().to_string()).collect();
    let grants = desired
        .iter()
        .filter(|(role, actions)| live.get(*role) != Some(&as_strings(actions)))
        .map(|(role, actions)| GrantCall::Grant {
            role: role.clone(),
            actions: actions.clone(),
        });
    let revokes = live
        .keys()
        .filter(|role| !desired.contains_key(*role) && is_service_role(tenant, role))
        .map(|role| GrantCall::Revoke { role: role.clone() });
    grants.chain(revokes).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionCall {
    /// Set the roles of a subscription (Pulsar replaces the whole set).
    Set {
        subscription: String,
        roles: BTreeSet<String>,
    },
    /// Take one role off a subscription.
    Revoke { subscription: String, role: String },
}

/// The calls that turn the subscription permissions of one Pulsar namespace
/// (subscription -> roles) into the desired ones. Roles that are not the
/// tenant's services (another tool's) are kept in every set written and
/// never revoked.
pub fn subscription_calls(
    tenant: &str,
    desired: &BTreeMap<String, BTreeSet<String>>,
    live: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<SubscriptionCall> {
    let empty = BTreeSet::new();
    let mut calls = Vec::new();
    for (subscription, roles) in desired {
        let have = live.get(subscription).unwrap_or(&empty);
        let mut wanted = roles.clone();
        wanted.extend(
            have.iter()
                .filter(|role| !is_service_role(tenant, role))
                .cloned(),
        );
        if &wanted != have {
            calls.push(SubscriptionCall::Set {
                subscription: subscription.clone(),
                roles: wanted,
            });
        }
    }
    for (subscription, roles) in live.iter().filter(|(s, _)| !desired.contains_key(*s)) {
        calls.extend(
            roles
                .iter()
                .filter(|role| is_service_role(tenant, role))
                .map(|role| SubscriptionCall::Revoke {
                    subscription: subscription.clone(),
                    role: role.clone(),
                }),
        );
    }
    calls
}

/// The desired subscription permissions of one Kubernetes namespace.
pub fn subscriptions_in(grants: &Grants, namespace: &str) -> BTreeMap<String, BTreeSet<String>> {
    grants
        .subscriptions
        .iter()
        .filter(|((ns, _), _)| ns == namespace)
        .map(|((_, sub), roles)| (sub.clone(), roles.clone()))
        .collect()
}

/// The URIs a tenant's CA signs (OpenBao globs): SPIFFE IDs in the
/// tenant's trust domain whose namespace is one of the tenant's.
pub fn spiffe_uri_sans(tenant: &str, root_domain: &str) -> Vec<String> {
    let names = TenantNames::new(tenant);
    let domain = names.host(root_domain);
    let namespace = &names.namespace;
    vec![
        format!("spiffe://{domain}/ns/{namespace}/sa/*"),
        format!("spiffe://{domain}/ns/{namespace}{ENVIRONMENT_SEPARATOR}*/sa/*"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicAction::{Consume, Produce};

    fn identity(namespace: &str, name: &str, grants: Value) -> ServiceIdentity {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global", "grants": grants},
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_name_of_a_service_carries_its_tenant_and_environment() {
        let names = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        assert_eq!(names.pulsar_role, "acme.prod.orders");
        assert_eq!(names.keycloak_client_id, "acme.prod.orders");
        assert_eq!(names.openbao_role, "tenant-acme.prod.orders");
        assert_eq!(names.openbao_policy, "tenant-acme.prod.orders");
        assert_eq!(names.service_account, "orders");
        assert_eq!(names.secret_name, "orders-secrets");
        assert_eq!(names.kv_mount, "tenants/acme/kv");
        assert_eq!(names.secrets_key, "prod/services/orders");
        assert_eq!(
            names.spiffe_id("ossature.test"),
            "spiffe://acme.ossature.test/ns/tn-acme--prod/sa/orders"
        );
        assert_eq!(ServiceNames::new("tn-acme", "orders"), None);
        let settings = names.openbao_role_settings();
        assert_eq!(settings["bound_service_account_names"], json!(["orders"]));
        assert_eq!(
            settings["bound_service_account_namespaces"],
            json!(["tn-acme--prod"])
        );
        assert_eq!(
            settings["token_policies"],
            json!(["tenant-acme.prod.orders"])
        );
    }

    #[test]
    fn the_openbao_policy_reads_only_the_services_own_path() {
        let hcl = ServiceNames::new("tn-acme--prod", "orders")
            .unwrap()
            .openbao_policy_hcl();
        let paths = crate::secrets::policy_paths(&hcl);
        assert_eq!(
            paths,
            [
                "tenants/acme/kv/data/prod/services/orders",
                "tenants/acme/kv/data/prod/services/orders/*",
                "tenants/acme/kv/metadata/prod/services/orders",
                "tenants/acme/kv/metadata/prod/services/orders/*",
            ]
        );
        // `orders-admin` shares a prefix but none of these paths match it.
        assert!(paths.iter().all(|p| !p.ends_with("orders*")));
        for write in ["create", "update", "delete", "sudo"] {
            assert!(!hcl.contains(write), "{write}");
        }
    }

    #[test]
    fn tokens_live_a_day_at_most_and_are_minted_again_well_before() {
        let now = at("2026-01-01T00:00:00Z");
        let claims = token_claims("acme.prod.orders", now);
        assert_eq!(claims.sub, "acme.prod.orders");
        assert!(claims.exp - claims.iat <= 24 * 3600);
        assert!(token_due(None, now));
        assert!(!token_due(Some(claims.exp), at("2026-01-01T15:59:59Z")));
        assert!(token_due(Some(claims.exp), at("2026-01-01T16:00:00Z")));

        let input = token_signing_input(&claims);
        let (header, body) = input.split_once('.').unwrap();
        let header = URL_SAFE_NO_PAD.decode(header).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&header).unwrap()["alg"],
            "ES256"
        );
        let body: TokenClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        assert_eq!(body, claims);
        assert_eq!(
            token_from_signature(&input, "vault:v2:c2ln-_x").unwrap(),
            format!("{input}.c2ln-_x")
        );
        assert_eq!(token_from_signature(&input, "c2ln"), None);
        assert_eq!(token_from_signature(&input, "vault:v1:a+b/"), None);
    }

    #[test]
    fn credentials_rotate_first_on_request_and_on_schedule() {
        let mut creds = CredentialRotation::default();
        assert_eq!(rotation_interval(&creds), Duration::from_secs(720 * 3600));
        let last = at("2026-01-01T00:00:00Z");
        assert_eq!(rotation(&creds, None, None, last), Rotation::First);
        assert_eq!(
            rotation(&creds, Some(last), None, at("2026-01-10T00:00:00Z")),
            Rotation::At(at("2026-01-31T00:00:00Z"))
        );
        assert_eq!(
            rotation(&creds, Some(last), None, at("2026-01-31T00:00:00Z")),
            Rotation::Scheduled
        );
        creds.rotation_request = Some("2026-01-05".into());
        assert_eq!(
            rotation(&creds, Some(last), None, at("2026-01-10T00:00:00Z")),
            Rotation::Requested
        );
        assert_eq!(
            rotation(
                &creds,
                Some(last),
                Some("2026-01-05"),
                at("2026-01-10T00:00:00Z")
            ),
            Rotation::At(at("2026-01-31T00:00:00Z")),
            "a request acted on does not rotate again"
        );
        creds.rotate_every = "48h".into();
        assert_eq!(rotation_interval(&creds), Duration::from_secs(48 * 3600));
    }

    #[test]
    fn grants_are_complete_per_topic_and_stay_within_the_tenant() {
        let mut leaving = identity(
            "tn-acme--prod",
            "audit",
            json!([{"topic": "orders", "actions": ["Consume"]}]),
        );
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-01-01T00:00:00Z")),
        );
        let identities = [
            identity(
                "tn-acme--prod",
                "orders",
                json!([{"topic": "orders", "actions": ["Produce"]}]),
            ),
            identity(
                "tn-acme--prod",
                "billing",
                json!([{"topic": "orders", "actions": ["Consume", "Produce"], "subscriptions": ["billing"]}]),
            ),
            identity(
                "tn-acme--staging",
                "orders",
                json!([{"topic": "orders", "actions": ["Produce"]}]),
            ),
            identity(
                "tn-globex--prod",
                "spy",
                json!([{"topic": "orders", "actions": ["Consume"]}]),
            ),
            leaving,
        ];
        let grants = desired_grants("acme", &identities);
        assert_eq!(
            grants.on("tn-acme--prod", "orders"),
            Permissions::from([
                (
                    "acme.prod.billing".into(),
                    BTreeSet::from([Produce, Consume])
                ),
                ("acme.prod.orders".into(), BTreeSet::from([Produce])),
            ])
        );
        assert_eq!(
            grants.on("tn-acme--staging", "orders"),
            Permissions::from([("acme.staging.orders".into(), BTreeSet::from([Produce]))])
        );
        assert!(grants.on("tn-globex--prod", "orders").is_empty());
        assert_eq!(grants.topics.len(), 2);
        assert_eq!(
            subscriptions_in(&grants, "tn-acme--prod"),
            BTreeMap::from([(
                "billing".to_string(),
                BTreeSet::from(["acme.prod.billing".to_string()])
            )])
        );
    }

    #[test]
    fn revoking_one_grant_touches_no_other_role() {
        let desired = Permissions::from([
            ("acme.prod.orders".into(), BTreeSet::from([Produce])),
            ("acme.prod.billing".into(), BTreeSet::from([Consume])),
        ]);
        let set = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let live = BTreeMap::from([
            ("acme.prod.orders".to_string(), set(&["produce"])),
            (
                "acme.prod.billing".to_string(),
                set(&["consume", "produce"]),
            ),
            ("acme.prod.gone".to_string(), set(&["consume"])),
            ("admin".to_string(), set(&["produce"])),
            ("acme-eu.prod.other".to_string(), set(&["consume"])),
        ]);
        assert_eq!(
            grant_calls("acme", &desired, &live),
            vec![
                GrantCall::Grant {
                    role: "acme.prod.billing".into(),
                    actions: BTreeSet::from([Consume])
                },
                GrantCall::Revoke {
                    role: "acme.prod.gone".into()
                },
            ]
        );
        let matching: BTreeMap<String, BTreeSet<String>> = desired
            .iter()
            .map(|(r, a)| {
                (
                    r.clone(),
                    a.iter().map(|x| x.as_str().to_string()).collect(),
                )
            })
            .collect();
        assert!(grant_calls("acme", &desired, &matching).is_empty());
        assert!(is_service_role("acme", "acme.prod.orders"));
        assert!(!is_service_role("acme", "acme-eu.prod.orders"));
        assert!(!is_service_role("acme", "acme.prod"));
        assert!(!is_service_role("acme", "acme.prod.x.y"));
    }

    #[test]
    fn subscription_permissions_keep_other_roles_and_revoke_one_at_a_time() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let desired = BTreeMap::from([("billing".to_string(), roles(&["acme.prod.billing"]))]);
        let live = BTreeMap::from([
            ("billing".to_string(), roles(&["acme.prod.old", "ops-tool"])),
            ("gone".to_string(), roles(&["acme.prod.gone", "ops-tool"])),
        ]);
        assert_eq!(
            subscription_calls("acme", &desired, &live),
            vec![
                SubscriptionCall::Set {
                    subscription: "billing".into(),
                    roles: roles(&["acme.prod.billing", "ops-tool"])
                },
                SubscriptionCall::Revoke {
                    subscription: "gone".into(),
                    role: "acme.prod.gone".into()
                },
            ]
        );
        assert!(subscription_calls("acme", &desired, &desired).is_empty());
    }

    #[test]
    fn a_service_has_an_account_and_a_certificate_of_its_spiffe_id_owned_by_it() {
        let mut orders = identity("tn-acme--prod", "orders", json!([]));
        orders.metadata.uid = Some("u1".into());
        let names = ServiceNames::of(&orders).unwrap();
        let objects = service_objects(&orders, &names, "ossature.test");
        assert_eq!(
            objects.service_account.metadata.name.as_deref(),
            Some("orders")
        );
        assert_eq!(
            objects
                .service_account
                .metadata
                .owner_references
                .as_ref()
                .unwrap()[0]
                .uid,
            "u1"
        );
        let spec = &objects.certificate.spec;
        assert_eq!(
            spec.uris,
            ["spiffe://acme.ossature.test/ns/tn-acme--prod/sa/orders"]
        );
        assert!(spec.dns_names.is_empty());
        assert!(spec.issuer.tenant_ca.is_some());
        assert_eq!(spec.secret_name.as_deref(), Some("orders-tls"));
        assert!(spec.usages.contains(&Usage::Client));
        // The tenant CA signs it: the SPIFFE ID fits its URI globs.
        let globs = spiffe_uri_sans("acme", "ossature.test");
        let glob = globs[1].trim_end_matches("*/sa/*");
        assert!(spec.uris[0].starts_with(glob), "{glob}");

        let data = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let secret = service_secret(&orders, &names, &data);
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-secrets"));
        assert_eq!(secret.data.unwrap()["k"].0, b"v");
    }

    #[test]
    fn service_clients_name_their_tenant_as_its_own_tokens_do() {
        let names = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        let shared = service_client(&names, Isolation::Organization);
        assert_eq!(shared.client_id, "acme.prod.orders");
        assert_eq!(shared.attributes[SERVICE_CLIENT_ATTRIBUTE], "true");
        assert_eq!(
            shared.attributes["access.token.signed.response.alg"],
            "EdDSA"
        );
        assert_eq!(
            shared.mappers[0]["config"]["included.client.audience"],
            "acme"
        );
        assert_eq!(shared.mappers[1]["config"]["claim.name"], "organization");
        assert_eq!(shared.mappers[1]["config"]["claim.value"], r#"["acme"]"#);
        let own = service_client(&names, Isolation::Realm);
        assert_eq!(own.mappers[1]["config"]["claim.name"], "tenant");
        assert_eq!(own.mappers[1]["config"]["claim.value"], "acme");

        let profile = rotation_profile();
        let config = &profile["executors"][0]["configuration"];
        let rotated: u64 = config["rotated-expiration-period"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expiry: u64 = config["expiration-period"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rotated < expiry, "Keycloak refuses otherwise");
        let longest = rotation_interval(&CredentialRotation {
            rotate_every: "2160h".into(),
            rotation_request: None,
        });
        assert!(
            expiry > longest.as_secs(),
            "the operator's schedule rotates first"
        );
        assert_eq!(rotation_policy()["profiles"][0], ROTATION_PROFILE);
    }

    #[test]
    fn the_secret_holds_the_tenants_keys_and_the_credentials_win() {
        let own = BTreeMap::from([
            ("db-password".to_string(), "p".to_string()),
            (CLIENT_SECRET_KEY.to_string(), "stale".to_string()),
        ]);
        let credentials = BTreeMap::from([
            (CLIENT_SECRET_KEY.to_string(), "live".to_string()),
            (PULSAR_TOKEN_KEY.to_string(), "t".to_string()),
            (PULSAR_TOKEN_EXPIRES_KEY.to_string(), "100".to_string()),
        ]);
        let data = secret_data(&own, &credentials);
        assert_eq!(data[CLIENT_SECRET_KEY], "live");
        assert_eq!(data["db-password"], "p");
        let hash = secrets_hash(&data);
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, secrets_hash(&data.clone()));
        assert_ne!(hash, secrets_hash(&own));
        // Moving a byte between key and value changes the hash.
        let a = BTreeMap::from([("ab".to_string(), "c".to_string())]);
        let b = BTreeMap::from([("a".to_string(), "bc".to_string())]);
        assert_ne!(secrets_hash(&a), secrets_hash(&b));
        assert_eq!(token_expiry(&credentials), Some(100));
        assert_eq!(token_expiry(&own), None);
        let names = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        assert_eq!(names.credentials_key(), "prod/services/orders/credentials");
    }
}
