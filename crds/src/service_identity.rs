//! `ServiceIdentity`: a service of the product in the registry, and the
//! credentials and grants it is given.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Conditions;

/// A service of the product, in an environment's namespace (where its
/// Workloads run). It gets a ServiceAccount, an OpenBao role reading only
/// its own secrets, a Pulsar role with the grants it declares, a Keycloak
/// client for service-to-service tokens and a certificate with its SPIFFE
/// ID; its credentials rotate on a schedule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A service of the product: registry entry, credentials, SPIFFE identity and topic grants.",
    version = "v1alpha1",
    kind = "ServiceIdentity",
    plural = "serviceidentities",
    shortname = "sid",
    category = "ossature",
    namespaced,
    status = "ServiceIdentityStatus",
    printcolumn = r#"{"name":"ID","type":"string","jsonPath":".spec.id","priority":1}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"SPIFFE ID","type":"string","jsonPath":".status.spiffeId","priority":1}"#,
    printcolumn = r#"{"name":"Rotates","type":"string","jsonPath":".status.nextRotation"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40").message("service name must be a DNS label of at most 40 characters (lowercase letters, digits and '-', starting with a letter): it names the ServiceAccount, the Pulsar role, the Keycloak client and the OpenBao role")
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIdentitySpec {
    /// The service's identity in the registry: a ULID (26 characters of
    /// Crockford base32, such as `01JQ3X5T0RYB9Q8K1W7ZC4M2NP`). Immutable.
    #[schemars(length(min = 26, max = 26), regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("id is immutable: it is the service's identity in the registry; create a new ServiceIdentity for a new service"))]
    pub id: String,

    /// The Scope (of the same tenant) that owns the service.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub owner: String,

    /// What the service does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Where its code lives: an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https://[^\s/$.?#][^\s]*$"))]
    pub repository: Option<String>,

    /// The services and topics it depends on.
    #[serde(default)]
    pub depends_on: Dependencies,

    /// What it may do on the topics of its environment. The operator keeps,
    /// per topic, exactly the grants every ServiceIdentity declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["topic"]))]
    pub grants: Vec<TopicGrant>,

    /// When its credentials (Keycloak client secret, Pulsar token) rotate.
    #[serde(default)]
    pub credentials: CredentialRotation,
}

/// What a service depends on, by name, in its own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependencies {
    /// ServiceIdentities it calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 40), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")), extend("x-kubernetes-list-type" = "set"))]
    pub services: Vec<String>,
    /// Topics it reads or writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 128), regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")), extend("x-kubernetes-list-type" = "set"))]
    pub topics: Vec<String>,
}

/// Access to one Topic of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.subscriptions) || size(self.subscriptions) == 0 || 'Consume' in self.actions").message("subscriptions are for consumers: add Consume to actions or remove subscriptions")
)]
pub struct TopicGrant {
    /// The Topic, by its name in this namespace. Only the tenant's own
    /// topics of this environment can be named.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(
        validation = Rule::new("!self.contains('/') && !self.contains(':')").message("grants name a Topic of this namespace by its name (such as orders); a Pulsar topic URL such as persistent://other/env/orders, which may be another tenant's, cannot be granted"),
        validation = Rule::new("self.matches('^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$')").message("topic must be the name of a Topic: lowercase letters, digits, '-' and '.'")
    )]
    pub topic: String,

    /// `Produce`, `Consume` or both.
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub actions: Vec<TopicAction>,

    /// Subscription names it consumes with; each name is reserved for the
    /// services that list it in this environment.
    #[serde(default)]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-_.a-z0-9]*[a-z0-9])?$")), extend("x-kubernetes-list-type" = "set"))]
    pub subscriptions: Vec<String>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum TopicAction {
    Produce,
    Consume,
}

impl TopicAction {
    /// As Pulsar's permission API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicAction::Produce => "produce",
            TopicAction::Consume => "consume",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRotation {
    /// How often the Keycloak client secret is replaced, as a duration such
    /// as `720h`: from `24h` to `2160h` (90 days). Default: `720h`.
    #[serde(default = "default_rotate_every")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"))]
    #[x_kube(validation = Rule::new("self != '' && duration(self) >= duration('24h') && duration(self) <= duration('2160h')").message("credentials.rotateEvery must be a duration from 24h to 2160h, such as 720h"))]
    pub rotate_every: String,

    /// Change this (to any new value, for example a date) to rotate now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub rotation_request: Option<String>,
}

pub fn default_rotate_every() -> String {
    "720h".to_string()
}

impl Default for CredentialRotation {
    fn default() -> Self {
        CredentialRotation {
            rotate_every: default_rotate_every(),
            rotation_request: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIdentityStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `MessagingReady`, `SecretsReady`, `RealmReady`, `CertificateReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The role the service's Pulsar token carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_role: Option<String>,
    /// Its Keycloak client, for service-to-service tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycloak_client_id: Option<String>,
    /// Its OpenBao Kubernetes-auth role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openbao_role: Option<String>,
    /// Its ServiceAccount, which its Workloads run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The Secret of its namespace holding its secrets as files (its
    /// credentials and what is kept at its OpenBao path), which its
    /// Workloads mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// SHA-256 (hex) of that Secret's data: Workloads roll out when it
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_hash: Option<String>,
    /// When its current Pulsar token expires (it is minted again well
    /// before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_token_expires: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The Certificate (in its namespace) carrying its SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The URI in its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// When its credentials were last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When they rotate next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The `credentials.rotationRequest` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_request: Option<String>,
}

crate::conditioned!(ServiceIdentityStatus);
