//! `TenantRole`: a role a tenant defines for itself, a bundle of the
//! standard policies and permissions of its own, granted in Scopes like
//! `Viewer`, `Editor` and `Admin`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Conditions;

/// A role of the tenant, in the tenant's namespace (`tn-<tenant>`). Scope
/// grants and group mappings name it; the control plane decides with it and
/// the Scope controller turns it into RBAC on Ossature's kinds.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A role a tenant defines: standard policies and permissions of its own, granted in Scopes.",
    version = "v1alpha1",
    kind = "TenantRole",
    plural = "tenantroles",
    shortname = "trole",
    category = "ossature",
    namespaced,
    status = "TenantRoleStatus",
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".spec.description"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63").message("a role's name is a DNS label of at most 63 characters: lowercase letters, digits and '-', starting with a letter"),
    validation = Rule::new("!(self.metadata.name in ['viewer', 'editor', 'admin'])").message("viewer, editor and admin are the standard roles Viewer, Editor and Admin; grant those, or choose another name"),
    validation = Rule::new("size(self.spec.policies) + size(self.spec.permissions) > 0").message("a role gives something: name standard policies (such as workload-reader) or list permissions")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantRoleSpec {
    /// What the role is for, shown to people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub description: String,
    /// Standard policies it bundles: `<resource>-reader` reads a resource,
    /// `<resource>-manager` makes every other change to it (for example
    /// `workload-reader`, `topic-manager`).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub policies: Vec<PolicyName>,
    /// Actions on resources it gives besides.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub permissions: Vec<RolePermission>,
}

/// A standard policy's name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct PolicyName(#[schemars(regex(pattern = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"))] pub String);

/// Actions on one resource of the policy catalog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolePermission {
    /// A resource of the catalog, for example `workload` or `serviceIdentity`.
    #[schemars(regex(pattern = r"^[a-z][a-zA-Z]{0,62}$"))]
    pub resource: String,
    /// Actions that resource offers, for example `read`, `update`.
    #[schemars(length(min = 1, max = 32))]
    pub actions: Vec<ActionName>,
}

/// An action's name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct ActionName(#[schemars(regex(pattern = r"^[a-z][a-zA-Z]{0,62}$"))] pub String);

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRoleStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` when every policy and permission is known; `Stalled`
    /// (`InvalidRole`) naming what is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// What the role gives, resource by resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<RolePermission>,
}

crate::conditioned!(TenantRoleStatus);
