//! `Environment`: one of a tenant's environments (production, staging, ephemeral ...).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, DeletionPolicy, Quotas};

/// An environment of a tenant, in the tenant's namespace. It becomes a
/// namespace `tn-<tenant>--<name>` with quota and network policies, a Pulsar
/// namespace `<tenant>/<name>` with schema validation enforced, and an OpenBao
/// path prefix inside the tenant's KV mount.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "An environment of a tenant: its own namespace, Pulsar namespace and OpenBao path.",
    version = "v1alpha1",
    kind = "Environment",
    plural = "environments",
    shortname = "env",
    category = "ossature",
    namespaced,
    status = "EnvironmentStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.kind"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("environment name must be a DNS label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    validation = Rule::new("!self.metadata.name.contains('--')").message("environment name must not contain '--': it separates the tenant from the environment in namespace names"),
    validation = Rule::new("size(self.metadata.name) <= 28").message("environment name must be at most 28 characters, so that the namespace tn-<tenant>--<environment> stays within 63"),
    validation = Rule::new("!(self.metadata.name in ['default', 'system']) && !self.metadata.name.startsWith('kube-')").message("environment name is reserved; choose another name")
)]
#[x_kube(
    validation = Rule::new("!has(self.ttl) || self.kind == 'Ephemeral'").message("ttl is only for Ephemeral environments")
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// What the environment is for; sets retention defaults.
    pub kind: EnvironmentKind,

    /// For `Ephemeral` environments: how long after its creation the
    /// environment is deleted, with everything it provisioned, as a duration
    /// such as `72h`, `1h30m` or `90s`. `status.expiresAt` shows when; raise
    /// the ttl to extend it. An environment kept in Git is recreated by the
    /// GitOps tool after it expires: remove it from Git instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$"))]
    #[x_kube(validation = Rule::new("self != ''").message("ttl must name a duration such as 72h, 30m or 90s"))]
    pub ttl: Option<String>,

    /// Limits of the environment's namespace.
    #[serde(default)]
    pub quotas: Quotas,

    /// How long messages are kept in the environment's Pulsar namespace, in
    /// minutes. Default: 7 days for Production, 1 day otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 525600))]
    pub message_retention_minutes: Option<i32>,

    /// Whether backend objects are removed (`Delete`, the default) or kept
    /// (`Retain`) when the environment is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EnvironmentKind {
    Production,
    Staging,
    Development,
    /// Short-lived, for example per pull request; may carry a `ttl`.
    Ephemeral,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `NamespaceReady`, `MessagingReady`, `SecretsReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The environment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The environment's Pulsar namespace, `<tenant>/<environment>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulsar_namespace: Option<String>,
    /// Where the environment's secrets live in OpenBao, inside the tenant's KV mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_path: Option<String>,
    /// For an environment with a `ttl`: when it is deleted (creation time plus ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

crate::conditioned!(EnvironmentStatus);
