//! Who may do what in the control plane.
//!
//! Resources and the actions they offer ([`catalog`]); policies, named sets
//! of action-resource permissions, and roles, bundles of policies
//! ([`roles`]): `Viewer`, `Editor` and `Admin` for every tenant, plus the
//! tenant's own; grants of roles to users, groups and service accounts in a
//! scope, applying in every scope below it, and groups of the tenant's
//! identity provider mapped to roles in scopes ([`tenant`]). Decisions are
//! made in Rego ([`Authorizer`]), each with a reason in words.
//!
//! Pure: no async runtime, no client. The control plane feeds it from its
//! watches with [`Authorizer::set_tenant`] and asks one decision per
//! invocation.

pub mod authorizer;
pub mod catalog;
pub mod kubernetes;
pub mod problems;
pub mod roles;
pub mod scopes;
pub mod tenant;

pub use authorizer::{
    Authorizer, Basis, Caller, CallerKind, Decision, Error, Loaded, Permissions, Request,
    RolePermissions, RoleSummary,
};
pub use catalog::{Action, Level, RESOURCES, Resource};
pub use kubernetes::{KubernetesRule, kubernetes_rules, own_scope_rules, scope_rules};
pub use problems::{Invalid, Problem, Problems};
pub use roles::{ADMIN, EDITOR, Permission, Policy, ResourceActions, Role, VIEWER};
pub use scopes::{from_scopes, from_tenant_roles, group_mappings_of, own_policy};
pub use tenant::{Grant, GroupMapping, ScopeNode, TenantData};
