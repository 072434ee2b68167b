//! `Scope`: a nestable container of a tenant's organisation ("Global" > "EU" > "France").

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Conditions;

/// A node of the tenant's organisation tree, in the tenant's namespace. It
/// becomes a Keycloak group nested like the tree, a scope path carried in
/// members' tokens, and RBAC: a grant here applies in every descendant.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A node of a tenant's organisation tree: a Keycloak group, a token scope path and cascading RBAC.",
    version = "v1alpha1",
    kind = "Scope",
    plural = "scopes",
    shortname = "scp",
    category = "ossature",
    namespaced,
    status = "ScopeStatus",
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parent"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".status.path"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63").message("scope name must be a DNS label of at most 63 characters: lowercase letters, digits and '-', starting with a letter"),
    validation = Rule::new("!has(self.spec.parent) || self.spec.parent != self.metadata.name").message("a Scope cannot be its own parent; name another Scope of the same tenant, or leave parent out for a root scope")
)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpec {
    /// Name shown to people, for example "France".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// Name of the parent Scope, in the same namespace (so the same tenant).
    /// Leave out for a root of the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub parent: Option<String>,

    /// Roles granted in this scope and every scope below it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub grants: Vec<ScopeGrant>,

    /// Groups of the tenant's identity provider (as its people's tokens
    /// carry them) given a role in this scope and every scope below it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub group_mappings: Vec<GroupMapping>,
}

/// A role given to groups and users within a scope.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.groups) + size(self.users) > 0").message("a grant names at least one group or user"))]
pub struct ScopeGrant {
    /// The role: `Viewer` reads, `Editor` also changes, `Admin` also manages
    /// grants; or a TenantRole of the tenant, by name.
    pub role: RoleName,
    /// Groups (as in tokens and `--as-group`) that receive the role.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
    /// Users that receive the role.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub users: Vec<String>,
}

/// An identity provider's group given a role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMapping {
    /// The group, as the identity provider's tokens carry it.
    #[schemars(length(min = 1, max = 256))]
    pub group: String,
    pub role: RoleName,
}

/// `Viewer`, `Editor`, `Admin`, or a TenantRole's name.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct RoleName(
    #[schemars(regex(pattern = r"^(Viewer|Editor|Admin|[a-z]([-a-z0-9]{0,61}[a-z0-9])?)$"))]
    pub String,
);

impl RoleName {
    pub fn new(name: impl Into<String>) -> Self {
        RoleName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RoleName {
    fn from(name: &str) -> Self {
        RoleName(name.to_string())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `GroupReady`, `RbacReady`; `Stalled` when the tree is invalid
    /// (missing parent, a cycle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// Path from the root, for example `/global/eu/france`; carried in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

crate::conditioned!(ScopeStatus);
