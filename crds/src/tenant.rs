//! `Tenant`: one customer of the platform, and everything provisioned for it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, DeletionPolicy, Quotas};

/// A customer of the platform. Cluster-scoped; its name becomes the prefix of
/// everything provisioned for it (namespaces `tn-<name>`, the Keycloak realm,
/// the Pulsar tenant, OpenBao paths under `tenants/<name>/`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A customer of the platform and everything provisioned for it, across Kubernetes, Keycloak, Pulsar and OpenBao.",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    category = "ossature",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Residency","type":"string","jsonPath":".spec.residency"}"#,
    printcolumn = r#"{"name":"Isolation","type":"string","jsonPath":".status.isolation"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.host","priority":1}"#,
    printcolumn = r#"{"name":"Domains","type":"string","jsonPath":".status.domains[?(@.state==\"Verified\")].name","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("tenant name must be a DNS label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    validation = Rule::new("!self.metadata.name.contains('--')").message("tenant name must not contain '--': it separates the tenant from the environment in namespace names"),
    validation = Rule::new("size(self.metadata.name) <= 30").message("tenant name must be at most 30 characters, so that the namespaces, realm, Pulsar tenant and OpenBao paths derived from it fit every backend's limits"),
    validation = Rule::new("!(self.metadata.name in ['master', 'public', 'pulsar', 'default', 'system']) && !self.metadata.name.startsWith('kube-')").message("tenant name is reserved by a backend (Keycloak's master realm, Pulsar's public and pulsar tenants, Kubernetes' default and kube-* namespaces); choose another name"),
    validation = Rule::new("!self.metadata.name.startsWith('ossature-')").message("tenant names starting with ossature- are reserved for what Ossature shares between tenants (its shared Keycloak realms); choose another name")
)]
#[x_kube(
    validation = Rule::new("!(self.type == 'Consumer' && has(self.identity) && has(self.identity.identityProviderFederation) && self.identity.identityProviderFederation)").message("identity provider federation is for Business tenants; Consumer tenants sign up with their own accounts"),
    validation = Rule::new("!(self.type == 'Consumer' && has(self.identity) && has(self.identity.identityProviders) && size(self.identity.identityProviders) > 0)").message("identity providers are for Business tenants; Consumer tenants sign up with their own accounts"),
    validation = Rule::new("!has(self.identity) || (has(self.identity.isolation) && self.identity.isolation == 'Realm') || ((!has(self.identity.mfaRequired) || self.identity.mfaRequired == (self.type == 'Business')) && (!has(self.identity.selfRegistration) || !self.identity.selfRegistration) && (!has(self.identity.emailVerification) || self.identity.emailVerification) && !has(self.identity.passwordPolicy))").message("mfaRequired, selfRegistration, emailVerification and passwordPolicy apply to a whole realm: a tenant in the shared realm of its type (isolation: Organization, the default) takes the type's settings (MFA for Business, email verification, no self-registration); set identity.isolation: Realm to give the tenant a realm of its own with these settings")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Kind of customer: `Business` (B2B: stricter passwords, MFA, federation
    /// with the customer's identity provider) or `Consumer` (B2C:
    /// self-registration). Sets the identity defaults. Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("type is immutable: a tenant cannot move between Business and Consumer; create a new tenant"))]
    pub tenant_type: TenantType,

    /// Name shown to people, for example on the login page.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// Region where the tenant's data is kept, for example `eu` or `us`; decides
    /// which Pulsar clusters may hold its messages. Immutable.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("residency is immutable: moving a tenant's data to another region is a migration, not an edit"))]
    pub residency: String,

    /// Login and token settings of the tenant's realm; unset fields take the
    /// defaults of the tenant type.
    #[serde(default)]
    pub identity: IdentitySettings,

    /// Limits of the tenant namespace.
    #[serde(default)]
    pub quotas: Quotas,

    /// The tenant's host at the edge, `<tenant>.<root-domain>`: who may
    /// reach it. Changes reach the edge within seconds.
    #[serde(default)]
    pub edge: EdgeSettings,

    /// The tenant's own CA, which signs its Certificates.
    #[serde(default)]
    pub certificate_authority: CertificateAuthority,

    /// Custom domains of the tenant, e.g. `shop.acme.example`, besides
    /// `<tenant>.<root-domain>`. A domain is the tenant's (for its
    /// certificates and at the edge, with the names below it) once a DNS TXT
    /// record proves it: `status.domains` names the record and its value.
    /// One tenant at a time holds a domain: the first to prove it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 200), regex(pattern = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")), extend("x-kubernetes-list-type" = "set"))]
    pub domains: Vec<String>,

    /// Whether backend objects are removed (`Delete`, the default) or kept
    /// (`Retain`) when the tenant is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// The tenant's own CA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthority {
    /// The CA generation that signs. Raise it by one to rotate the CA: the
    /// new CA is trusted next to the current one (every `ca.crt` holds
    /// both), each certificate the old one signed is issued anew, a few at
    /// a time, then the old CA is retired. Status counts the certificates
    /// of each generation.
    #[serde(default = "first_generation")]
    #[schemars(range(min = 1, max = 1000))]
    #[x_kube(validation = Rule::new("self == oldSelf || self == oldSelf + 1").message("the CA generation moves up by one: set it to the current generation plus one to rotate"))]
    pub generation: i64,
}

fn first_generation() -> i64 {
    1
}

impl Default for CertificateAuthority {
    fn default() -> Self {
        CertificateAuthority {
            generation: first_generation(),
        }
    }
}

/// Where one custom domain stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainStatus {
    pub name: String,
    pub state: DomainState,
    /// The DNS TXT record that proves the domain: its name...
    pub record: String,
    /// ...and the value it must hold.
    pub value: String,
    /// What is wrong, or what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DomainState {
    /// The TXT record is not (yet) there; it is looked for again shortly.
    Pending,
    /// Proven, and held by this tenant.
    Verified,
    /// Another tenant holds the domain, or a domain above or below it.
    Claimed,
}

/// The tenant's CA as it is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthorityStatus {
    /// The generation that signs new certificates.
    pub generation: i64,
    /// Every generation clients trust, with the certificates it signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<CaGeneration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaGeneration {
    pub generation: i64,
    /// Certificates of the tenant this generation signed.
    pub certificates: i64,
}

/// Access to the tenant's host at the edge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgeSettings {
    /// Mutual TLS: the client certificates callers must (or may) present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,

    /// Source addresses allowed to reach the host, as CIDR ranges
    /// (`203.0.113.0/24`, `2001:db8::/32`) or single addresses. Empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 43)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(r, isCIDR(r) || isIP(r))").message("each allowed source range must be a CIDR range such as 203.0.113.0/24, or a single address"))]
    pub allowed_source_ranges: Vec<String>,
}

/// Client certificates asked of callers of the tenant's host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientAuth {
    /// `Required`: the TLS handshake fails without a certificate of a
    /// trusted CA. `Optional`: a certificate is verified when given.
    pub mode: ClientAuthMode,
    /// CA certificates (PEM) that client certificates must chain to.
    /// Default: the tenant's own CA, which issues its `Client` Certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self.contains('-----BEGIN CERTIFICATE-----')").message("caBundle must hold PEM certificates (-----BEGIN CERTIFICATE-----)"))]
    pub ca_bundle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClientAuthMode {
    Optional,
    Required,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TenantType {
    /// Organisations (B2B).
    Business,
    /// Individuals (B2C).
    Consumer,
}

/// Where a tenant's people live in Keycloak.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Isolation {
    /// An organization in the shared realm of the tenant's type and
    /// residency: scales to thousands of tenants. Realm-wide settings (MFA,
    /// password policy, email verification, self-registration) are the type's.
    Organization,
    /// A realm of its own, for tenants that need their own policies, keys
    /// or lifetimes. Their number per Keycloak is capped by the operator.
    Realm,
}

/// Identity settings; every field is optional and defaults by tenant type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.isolation) || (has(self.isolation) && self.isolation == oldSelf.isolation)").message("isolation is immutable: moving a tenant between a shared realm and a realm of its own is a migration, not an edit"))]
pub struct IdentitySettings {
    /// `Organization` (the default for new tenants): an organization in the
    /// shared realm of the tenant's type and residency. `Realm`: a realm of
    /// its own. Immutable. Tenants provisioned before this field existed keep
    /// their realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,

    /// Require a second factor at login. Default: true for Business, false for Consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_required: Option<bool>,

    /// Require users to verify their email address. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verification: Option<bool>,

    /// Let people create their own accounts. Default: false for Business, true for Consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_registration: Option<bool>,

    /// Allow federation with the customer's own identity provider. Business
    /// only. The providers themselves are listed in `identityProviders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider_federation: Option<bool>,

    /// The tenant's own identity providers (OIDC or SAML 2.0), linked to its
    /// organization or realm: a person's first login creates their user, and
    /// claims or attributes map to user attributes and scopes. Business only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    // Keyed by alias: unique, and merged per provider by server-side apply.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["alias"]))]
    pub identity_providers: Vec<IdentityProvider>,

    /// Where the tenant's applications may receive people's logins (OAuth
    /// redirect URIs of the tenant's client), e.g. `https://app.acme.example/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub redirect_uris: Vec<RedirectUri>,

    /// Lifetime of access tokens in seconds, from 60 to 3600 (1 hour).
    /// Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 3600").message("accessTokenLifetimeSeconds must be between 60 and 3600 (1 hour): a longer-lived token cannot be revoked in time"))]
    pub access_token_lifetime_seconds: Option<i32>,

    /// Password rules; defaults by tenant type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_policy: Option<PasswordPolicy>,
}

/// An OAuth redirect URI: http(s), a `*` allowed at the end.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(transparent)]
pub struct RedirectUri(
    #[schemars(regex(pattern = r"^https?://[^\s*]+\*?$"), length(max = 512))]
    pub String,
);

/// One of the tenant's own identity providers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.oidc) != has(self.saml)").message("an identity provider is either oidc or saml: set exactly one"))]
pub struct IdentityProvider {
    /// Name of the provider within the tenant (a DNS label); in Keycloak it
    /// becomes `<tenant>-<alias>` in a shared realm, `<alias>` in its own.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,28}[a-z0-9])?$"))]
    pub alias: String,
    /// Name shown on the login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,
    /// An OpenID Connect provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcProvider>,
    /// A SAML 2.0 provider, configured from its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlProvider>,
    /// People whose claim (OIDC) or attribute (SAML) holds a value are placed
    /// in a scope at every login. Name, email and username come as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub scopes: Vec<ScopeMapping>,
}

/// An OpenID Connect provider's endpoints and the client Ossature uses there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OidcProvider {
    /// Issuer, as in the provider's tokens.
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 512))]
    pub issuer: String,
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 512))]
    pub authorization_url: String,
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 512))]
    pub token_url: String,
    /// Where the provider publishes its signing keys; tokens are checked against them.
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 512))]
    pub jwks_url: String,
    #[schemars(length(min = 1, max = 255))]
    pub client_id: String,
    /// The client secret, from a Secret in the tenant's namespace labelled
    /// `ossature.dev/tenant=<tenant>`; never written inline.
    pub client_secret: SecretKeyRef,
    /// Scopes asked of the provider. Default: `openid profile email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub scopes: Option<String>,
}

/// A key of a Secret in the tenant's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub name: String,
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]{1,253}$"))]
    pub key: String,
}

/// A SAML 2.0 provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamlProvider {
    /// Where the provider publishes its SAML 2.0 metadata (EntityDescriptor);
    /// Keycloak reads its endpoints and signing certificate from there.
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 512))]
    pub metadata_url: String,
}

/// People whose claim holds `value` join `scope`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeMapping {
    #[schemars(length(min = 1, max = 255))]
    pub claim: String,
    #[schemars(length(min = 1, max = 255))]
    pub value: String,
    /// Name of a Scope of the tenant.
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub scope: String,
}

/// Password rules of the realm.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordPolicy {
    /// Shortest password accepted, 8 to 128. Default: 12 for Business, 8 for Consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 8 && self <= 128").message("password minLength must be between 8 and 128"))]
    pub min_length: Option<i32>,
    /// Require at least one digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_digit: Option<bool>,
    /// Require both upper and lower case letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mixed_case: Option<bool>,
    /// Require at least one character that is neither letter nor digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_special_character: Option<bool>,
    /// Refuse a password equal to one of the last N, 0 to 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 24))]
    pub history: Option<i32>,
}

/// One federated identity provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderStatus {
    /// The alias in the tenant's spec.
    pub alias: String,
    /// Its alias in Keycloak.
    pub keycloak_alias: String,
    /// Where logins at the provider come back: the OIDC redirect URI, or the
    /// SAML assertion consumer (its metadata is at `<endpoint>/descriptor`).
    pub endpoint: String,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` plus one condition per backend: `NamespaceReady`, `RealmReady`,
    /// `MessagingReady`, `SecretsReady`, `CertificateAuthorityReady`,
    /// `CertificateReady` (the host's certificate), `EdgeReady` and
    /// `DomainsReady` (custom domains proven).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where the tenant's people live: `Organization` or `Realm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The Keycloak realm the tenant's people log in to: the shared realm of
    /// its type and residency, or its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// The tenant's organization in the shared realm (Organization isolation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// The client the tenant's people and services get tokens from; tokens
    /// name it as their audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The tenant's identity providers as Keycloak knows them, with what
    /// their administrators need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_providers: Vec<IdentityProviderStatus>,
    /// The tenant's Pulsar tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_tenant: Option<String>,
    /// Prefix of the tenant's OpenBao paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_path: Option<String>,
    /// The tenant's host at the edge: `https://<this>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The tenant's CA: the generation that signs, and what each trusted
    /// generation signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<CertificateAuthorityStatus>,
    /// Each custom domain of the spec: proven and held, waiting for its TXT
    /// record, or held by another tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainStatus>,
}

crate::conditioned!(TenantStatus);

impl TenantStatus {
    /// The custom domains this tenant holds.
    pub fn verified_domains(&self) -> impl Iterator<Item = &str> {
        self.domains
            .iter()
            .filter(|d| d.state == DomainState::Verified)
            .map(|d| d.name.as_str())
    }
}
