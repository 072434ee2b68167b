//! Who calls: `Authorization: Bearer` tokens issued by Keycloak, EdDSA only,
//! lasting at most an hour, checked for issuer, audience and expiry.
//!
//! A tenant's token comes from the realm its Tenant object says (the
//! shared realm of its type and residency, or its own realm), derived with
//! the model crate's names as the operator derives them: the issuer is
//! never taken from the token. The tenant is the token's `organization`
//! claim (shared realm) or `tenant` claim (own realm), never the issuer
//! alone, since a shared realm issues tokens for many tenants. People and
//! service accounts (client credentials) of the tenant are callers alike.
//! Platform operators are members of one group of one configured realm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ossature_crds::{Isolation, Tenant};
use ossature_model::TenantNames;
use ossature_model::identity::{effective_isolation, shared_realm};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::problem::{Problem, ProblemKind};
use crate::watch::Watches;

/// Keycloak's tokens last at most this long (the realms' own limit).
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 3600;
/// Clock skew allowed on expiry.
const LEEWAY_SECONDS: u64 = 30;
/// An unknown key id refetches a realm's keys at most this often.
const MIN_REFETCH: Duration = Duration::from_secs(10);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Who a caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    pub kind: CallerKind,
    /// The tenant whose token it is; none for a platform operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The token's subject (or, without one, its client).
    pub subject: String,
    /// A name for people: `preferred_username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The client the token was issued to (`azp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Groups the token names: its `groups` claim, the caller's groups in
    /// its tenant's organization (shared realm: paths of the scopes' groups
    /// it is a member of) and its `scopes` claim (own realm: the same).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum CallerKind {
    /// A member of the platform operators' group.
    PlatformOperator,
    /// A person of a tenant.
    TenantUser,
    /// A service account of a tenant (client credentials).
    TenantService,
}

impl Caller {
    /// The actor, as idempotency keys are namespaced and audits name it.
    pub fn actor(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!("tenant/{tenant}/{}", self.subject),
            None => format!("operator/{}", self.subject),
        }
    }

    pub fn is_platform_operator(&self) -> bool {
        self.kind == CallerKind::PlatformOperator
    }

    /// The caller as authorization decisions see it: a person by the
    /// username its grants name, a service account by its client id (a
    /// Scope grant names it `service-account-<clientId>`, as Keycloak
    /// names its user).
    pub fn policy_caller(&self) -> ossature_policy::Caller {
        let (kind, subject) = match self.kind {
            CallerKind::TenantService => (
                ossature_policy::CallerKind::ServiceAccount,
                self.client_id.clone().or_else(|| {
                    self.username
                        .as_deref()
                        .and_then(|u| {
                            u.strip_prefix(ossature_policy::scopes::SERVICE_ACCOUNT_USER_PREFIX)
                        })
                        .map(String::from)
                }),
            ),
            _ => (ossature_policy::CallerKind::User, self.username.clone()),
        };
        ossature_policy::Caller {
            subject: subject.unwrap_or_else(|| self.subject.clone()),
            kind,
            tenant: self.tenant.clone(),
            groups: self.groups.clone(),
            platform_operator: self.is_platform_operator(),
        }
    }
}

/// The platform operators' realm and group.
#[derive(Debug, Clone)]
pub struct Operators {
    pub realm: String,
    pub group: String,
    pub audience: String,
}

/// Checks tokens; keeps each realm's keys.
pub struct Authenticator {
    http: reqwest::Client,
    /// Where keys are fetched.
    keycloak_url: String,
    /// How issuers appear in tokens.
    issuer_url: String,
    operators: Option<Operators>,
    realms: Mutex<HashMap<String, Arc<tokio::sync::Mutex<RealmKeys>>>>,
}

#[derive(Default)]
struct RealmKeys {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// What is read of a token before its signature is checked, only to pick
/// the tenant and the realm whose keys check it.
#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    organization: Option<Value>,
    #[serde(default)]
    tenant: Option<String>,
}

/// The claims used once the signature holds.
#[derive(Deserialize)]
struct Claims {
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    organization: Option<Value>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// At most this many groups of a token are kept: decisions look each up.
const MAX_GROUPS: usize = 256;

/// The groups a token names for `tenant` (none: a platform operator).
fn groups_of(claims: &Claims, tenant: Option<&str>) -> Vec<String> {
    let organization_groups = match (&claims.organization, tenant) {
        (Some(Value::Object(map)), Some(tenant)) => map
            .get(tenant)
            .and_then(|o| o.get("groups"))
            .and_then(Value::as_array)
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(|g| g.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut groups = Vec::new();
    for group in claims
        .groups
        .iter()
        .chain(&organization_groups)
        .chain(&claims.scopes)
    {
        if !groups.contains(group) && groups.len() < MAX_GROUPS {
            groups.push(group.clone());
        }
    }
    groups
}

fn refuse(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemKind::Unauthenticated, detail)
}

/// The tenants an `organization` claim names: a list of aliases, or an
/// object keyed by alias (with the groups below each).
fn organizations(claim: &Option<Value>) -> Vec<String> {
    match claim {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn audiences(claim: &Option<Value>) -> Vec<String> {
    match claim {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// The realm that issues a tenant's tokens, and its mode, as the operator
/// provisions it.
pub fn tenant_realm(tenant: &Tenant) -> (String, Isolation) {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let status = tenant.status.as_ref();
    let has_own_realm = status.and_then(|s| s.realm.as_deref()) == Some(name.as_str());
    let isolation = effective_isolation(
        tenant.spec.identity.isolation,
        status.and_then(|s| s.isolation),
        has_own_realm,
    );
    let realm = match isolation {
        Isolation::Organization => shared_realm(tenant.spec.tenant_type, &tenant.spec.residency),
        Isolation::Realm => TenantNames::new(&name).realm,
    };
    (realm, isolation)
}

/// The tenant a token is for, read from its claims before the signature is
/// checked; the checks after it hold it to that.
fn candidate_tenant(claims: &Unverified) -> Result<String, Problem> {
    if let Some(tenant) = &claims.tenant {
        return Ok(tenant.clone());
    }
    let orgs = organizations(&claims.organization);
    let aud = audiences(&claims.aud);
    let both: Vec<&String> = orgs.iter().filter(|o| aud.contains(o)).collect();
    match (both.as_slice(), orgs.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        ([], [one]) => Ok(one.clone()),
        ([], []) => Err(refuse(
            "the token names no tenant: it has neither an organization nor a tenant claim; ask for a token from your tenant's client",
        )),
        _ => Err(refuse(
            "the token names several tenants; ask for a token from the client of the one tenant you act for (its audience names it)",
        )),
    }
}

impl Authenticator {
    pub fn new(
        keycloak_url: &str,
        issuer_url: Option<&str>,
        operators: Option<Operators>,
    ) -> anyhow::Result<Self> {
        let keycloak_url = keycloak_url.trim_end_matches('/').to_string();
        Ok(Authenticator {
            http: reqwest::Client::builder()
                .timeout(JWKS_TIMEOUT)
                .tls_certs_only([])
                .build()?,
            issuer_url: issuer_url
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or_else(|| keycloak_url.clone()),
            keycloak_url,
            operators,
            realms: Mutex::default(),
        })
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.issuer_url)
    }

    /// The caller of a request with this `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        watches: &Watches,
    ) -> Result<Caller, Problem> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refuse("send Authorization: Bearer <access token> with a token Keycloak issued for your tenant")
            })?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("the bearer token is not a JWT"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(refuse(format!(
                "the token is signed with {:?}; only EdDSA tokens are accepted (the realms sign with EdDSA)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| refuse("the token names no signing key (kid)"))?;
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| refuse("the token's claims cannot be read"))?;
        let iss = unverified.iss.clone().unwrap_or_default();

        if let Some(operators) = &self.operators
            && iss == self.issuer(&operators.realm)
        {
            let claims = self
                .verify(token, &kid, &operators.realm, &operators.audience)
                .await?;
            let group = operators.group.trim_start_matches('/');
            if !claims
                .groups
                .iter()
                .any(|g| g.trim_start_matches('/') == group)
            {
                return Err(Problem::new(
                    ProblemKind::Forbidden,
                    format!(
                        "the token is of the platform operators' realm but not of group {group}"
                    ),
                ));
            }
            return Ok(caller(CallerKind::PlatformOperator, None, claims));
        }

        let tenant_name = candidate_tenant(&unverified)?;
        // Before its signature holds, a token learns nothing of which
        // tenants exist: an unknown tenant and a wrong issuer read alike.
        let not_its_realm = || {
            refuse(format!(
                "the token's issuer is not the realm of tenant {tenant_name}; ask for a token from your tenant's realm"
            ))
        };
        let tenant = watches.tenant(&tenant_name).ok_or_else(not_its_realm)?;
        let (realm, isolation) = tenant_realm(&tenant);
        if iss != self.issuer(&realm) {
            return Err(not_its_realm());
        }
        let claims = self.verify(token, &kid, &realm, &tenant_name).await?;
        let names_tenant = match isolation {
            Isolation::Organization => organizations(&claims.organization).contains(&tenant_name),
            Isolation::Realm => claims.tenant.as_deref() == Some(tenant_name.as_str()),
        };
        if !names_tenant {
            let claim = match isolation {
                Isolation::Organization => "organization",
                Isolation::Realm => "tenant",
            };
            return Err(refuse(format!(
                "the token's {claim} claim does not name tenant {tenant_name}"
            )));
        }
        let kind = if claims.client_id.is_some()
            || claims
                .preferred_username
                .as_deref()
                .is_some_and(|u| u.starts_with("service-account-"))
        {
            CallerKind::TenantService
        } else {
            CallerKind::TenantUser
        };
        Ok(caller(kind, Some(tenant_name), claims))
    }

    /// Checks the signature with the realm's key and the registered claims.
    async fn verify(
        &self,
        token: &str,
        kid: &str,
        realm: &str,
        audience: &str,
    ) -> Result<Claims, Problem> {
        let key = self.key(realm, kid).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[self.issuer(realm)]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            refuse(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired; get a new one".to_string(),
                ErrorKind::InvalidAudience => {
                    format!("the token's audience does not name {audience}")
                }
                ErrorKind::InvalidIssuer => "the token's issuer is not the expected realm".into(),
                ErrorKind::InvalidSignature => "the token's signature does not hold".into(),
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the token lacks the {claim} claim")
                }
                _ => "the token is not valid".into(),
            })
        })?;
        let claims = data.claims;
        let iat = claims
            .iat
            .ok_or_else(|| refuse("the token lacks the iat claim"))?;
        if claims.exp - iat > MAX_TOKEN_LIFETIME_SECONDS {
            return Err(refuse(format!(
                "the token lasts {} s; tokens may last at most {MAX_TOKEN_LIFETIME_SECONDS} s",
                claims.exp - iat
            )));
        }
        Ok(claims)
    }

    /// The realm's key `kid`: from memory, else from the realm's JWKS,
    /// fetched again for an unknown key at most every `MIN_REFETCH`.
    async fn key(&self, realm: &str, kid: &str) -> Result<DecodingKey, Problem> {
        let entry = {
            let mut realms = self.realms.lock().unwrap_or_else(|e| e.into_inner());
            realms.entry(realm.to_string()).or_default().clone()
        };
        let mut keys = entry.lock().await;
        if let Some(key) = keys.keys.get(kid) {
            return Ok(key.clone());
        }
        if keys.fetched.is_some_and(|at| at.elapsed() < MIN_REFETCH) {
            return Err(refuse(format!(
                "the token's key {kid} is not among realm {realm}'s keys"
            )));
        }
        let fetched = self.fetch(realm).await;
        keys.fetched = Some(Instant::now());
        keys.keys = fetched?;
        keys.keys.get(kid).cloned().ok_or_else(|| {
            refuse(format!(
                "the token's key {kid} is not among realm {realm}'s keys"
            ))
        })
    }

    /// The realm's Ed25519 signing keys.
    async fn fetch(&self, realm: &str) -> Result<HashMap<String, DecodingKey>, Problem> {
        let url = format!(
            "{}/realms/{realm}/protocol/openid-connect/certs",
            self.keycloak_url
        );
        let unavailable = |e: String| {
            tracing::warn!(realm, "reading the realm's keys failed: {e}");
            Problem::new(
                ProblemKind::Unavailable,
                format!(
                    "the keys of realm {realm} cannot be read from Keycloak now; try again shortly"
                ),
            )
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "Keycloak answered {}",
                response.status()
            )));
        }
        let set: Value = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        // Each key on its own: one the library does not read leaves the others.
        let keys: Vec<Jwk> = set["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .collect();
        Ok(keys
            .iter()
            .filter(|jwk| {
                matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519)
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect())
    }
}

fn caller(kind: CallerKind, tenant: Option<String>, claims: Claims) -> Caller {
    Caller {
        groups: groups_of(&claims, tenant.as_deref()),
        kind,
        tenant,
        subject: claims
            .sub
            .clone()
            .or_else(|| claims.azp.clone())
            .unwrap_or_else(|| "unknown".into()),
        username: claims.preferred_username,
        client_id: claims.azp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unverified(value: Value) -> Unverified {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_tenant_comes_from_the_claims_never_the_issuer() {
        let shared = unverified(json!({
            "iss": "http://kc/realms/ossature-business-eu",
            "aud": ["acme", "account"], "organization": ["acme"]
        }));
        assert_eq!(candidate_tenant(&shared).unwrap(), "acme");
        let person = unverified(json!({
            "aud": "globex", "organization": {"acme": {}, "globex": {"groups": []}}
        }));
        assert_eq!(candidate_tenant(&person).unwrap(), "globex");
        let own = unverified(json!({"aud": "initech", "tenant": "initech"}));
        assert_eq!(candidate_tenant(&own).unwrap(), "initech");
        let none = unverified(json!({"iss": "http://kc/realms/acme", "aud": "acme"}));
        assert!(candidate_tenant(&none).is_err());
        let two = unverified(json!({"aud": "x", "organization": ["acme", "globex"]}));
        assert!(
            candidate_tenant(&two)
                .unwrap_err()
                .detail
                .contains("several")
        );
    }

    #[test]
    fn a_tenants_realm_is_derived_as_the_operator_derives_it() {
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"},
            "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"}
        }))
        .unwrap();
        assert_eq!(
            tenant_realm(&tenant),
            ("ossature-business-eu".to_string(), Isolation::Organization)
        );
        let mut own = tenant.clone();
        own.spec.identity.isolation = Some(Isolation::Realm);
        assert_eq!(tenant_realm(&own), ("acme".to_string(), Isolation::Realm));
    }

    #[test]
    fn actors_are_namespaced_by_tenant() {
        let caller = Caller {
            kind: CallerKind::TenantService,
            tenant: Some("acme".into()),
            subject: "s-1".into(),
            username: Some("service-account-acme.prod.orders".into()),
            client_id: Some("acme.prod.orders".into()),
            groups: Vec::new(),
        };
        assert_eq!(caller.actor(), "tenant/acme/s-1");
        let policy = caller.policy_caller();
        assert_eq!(policy.subject, "acme.prod.orders");
        assert_eq!(policy.kind, ossature_policy::CallerKind::ServiceAccount);
        assert!(!policy.platform_operator);
    }

    #[test]
    fn groups_come_from_the_groups_claim_the_tenants_organization_and_scopes() {
        let claims: Claims = serde_json::from_value(json!({
            "exp": 2, "groups": ["eu-team"],
            "organization": {"acme": {"groups": ["/global/eu", "eu-team"]},
                             "globex": {"groups": ["/global"]}},
            "scopes": ["/global/eu/france"]
        }))
        .unwrap();
        assert_eq!(
            groups_of(&claims, Some("acme")),
            ["eu-team", "/global/eu", "/global/eu/france"]
        );
        let list: Claims =
            serde_json::from_value(json!({"exp": 2, "organization": ["acme"]})).unwrap();
        assert!(groups_of(&list, Some("acme")).is_empty());
    }
}
