//! What is decided of a ServiceIdentity without calling anything: the names
//! it has in every backend, its OpenBao policy, its Pulsar token's claims and
//! when to mint another, when its credentials rotate, and the topic grants
//! of a whole tenant with the calls that apply only their difference.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use ossature_crds::{CredentialRotation, ServiceIdentity, TopicAction, default_rotate_every};
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
            openbao_role: qualified.clone(),
            openbao_policy: format!("service-{qualified}"),
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
    Grant { subscription: String, role: String },
    Revoke { subscription: String, role: String },
}

/// The calls that turn the subscription permissions of one Pulsar namespace
/// (subscription -> roles) into the desired ones, one role at a time, never
/// touching roles that are not the tenant's services.
pub fn subscription_calls(
    tenant: &str,
    desired: &BTreeMap<String, BTreeSet<String>>,
    live: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<SubscriptionCall> {
    let empty = BTreeSet::new();
    let mut calls = Vec::new();
    for (subscription, roles) in desired {
        let have = live.get(subscription).unwrap_or(&empty);
        calls.extend(roles.difference(have).map(|role| SubscriptionCall::Grant {
            subscription: subscription.clone(),
            role: role.clone(),
        }));
    }
    for (subscription, roles) in live {
        let want = desired.get(subscription).unwrap_or(&empty);
        calls.extend(
            roles
                .difference(want)
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
        assert_eq!(names.openbao_role, "acme.prod.orders");
        assert_eq!(names.openbao_policy, "service-acme.prod.orders");
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
            json!(["service-acme.prod.orders"])
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
    fn subscription_permissions_change_one_role_at_a_time() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let desired = BTreeMap::from([("billing".to_string(), roles(&["acme.prod.billing"]))]);
        let live = BTreeMap::from([
            ("billing".to_string(), roles(&["acme.prod.old", "ops-tool"])),
            ("gone".to_string(), roles(&["acme.prod.gone"])),
        ]);
        assert_eq!(
            subscription_calls("acme", &desired, &live),
            vec![
                SubscriptionCall::Grant {
                    subscription: "billing".into(),
                    role: "acme.prod.billing".into()
                },
                SubscriptionCall::Revoke {
                    subscription: "billing".into(),
                    role: "acme.prod.old".into()
                },
                SubscriptionCall::Revoke {
                    subscription: "gone".into(),
                    role: "acme.prod.gone".into()
                },
            ]
        );
        assert!(subscription_calls("acme", &desired, &desired).is_empty());
    }
}
