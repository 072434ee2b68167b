//! What callers send and receive: one type per command and query input,
//! each refusing unknown fields and checking every field, and the answers.
//! The handlers decode exactly these types and the OpenAPI document is
//! generated from them.

pub mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::ProblemDocument;
use validate::Check;

/// What every command has: its tenant, whether it is a dry run, and
/// whether to wait for its outcome.
pub trait CommandInput: Send + Sync {
    /// The tenant the command acts on.
    fn tenant(&self) -> &str;
    fn dry_run(&self) -> bool;
    fn wait(&self) -> Option<&Wait> {
        None
    }
    /// Adds an error for each field that is wrong.
    fn check(&self, check: &mut Check);
}

/// The getters every command input has alike.
macro_rules! common_fields {
    () => {
        fn tenant(&self) -> &str {
            &self.tenant
        }
        fn dry_run(&self) -> bool {
            self.dry_run
        }
    };
    (wait) => {
        common_fields!();
        fn wait(&self) -> Option<&Wait> {
            self.wait.as_ref()
        }
    };
}

/// Wait for the outcome before answering: the tenant Ready (or gone, for
/// an offboarding), a failure, or the timeout. The answer then carries
/// the final conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wait {
    /// Longest wait, 1 to 300 seconds.
    pub timeout_seconds: u32,
}

fn check_wait(wait: Option<&Wait>, check: &mut Check) {
    if let Some(wait) = wait {
        check.field(
            "wait.timeoutSeconds",
            validate::range(wait.timeout_seconds.into(), 1, 300),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TenantType {
    /// Organisations (B2B): MFA, stricter passwords, federation.
    Business,
    /// Individuals (B2C): self-registration.
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Isolation {
    /// An organization in the shared realm of the tenant's type and residency.
    Organization,
    /// A realm of its own.
    Realm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum DeletionPolicy {
    Delete,
    Retain,
}

/// A role's name: `Viewer` (reads), `Editor` (also changes), `Admin` (also
/// manages scopes, grants, roles and settings), or one of the tenant's own
/// (defined with `defineRole`).
pub type Role = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EnvironmentKind {
    Production,
    Staging,
    Development,
    Ephemeral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ClientAuthMode {
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Usage {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum KeyAlgorithm {
    #[serde(rename = "ECDSAP256")]
    EcdsaP256,
    Ed25519,
}

/// Login and token settings; unset fields take the tenant type's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// `Organization` (default) or `Realm`. Immutable once onboarded.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Lifetime of access tokens, 60 to 3600 seconds.
    #[serde(default)]
    pub access_token_lifetime_seconds: Option<i32>,
    /// Where the tenant's applications receive logins, e.g. `https://app.acme.example/*`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Realm isolation only.
    #[serde(default)]
    pub mfa_required: Option<bool>,
    /// Realm isolation only.
    #[serde(default)]
    pub email_verification: Option<bool>,
    /// Realm isolation only.
    #[serde(default)]
    pub self_registration: Option<bool>,
    /// Business tenants only.
    #[serde(default)]
    pub identity_provider_federation: Option<bool>,
}

impl Identity {
    fn check(&self, at: &str, check: &mut Check) {
        if let Some(lifetime) = self.access_token_lifetime_seconds {
            check.field(
                format!("{at}.accessTokenLifetimeSeconds"),
                validate::range(lifetime.into(), 60, 3600)
                    .map_err(|e| format!("{e}: a longer-lived token cannot be revoked in time")),
            );
        }
        if self.redirect_uris.len() > 16 {
            check.fail(format!("{at}.redirectUris"), "at most 16 redirect URIs");
        }
        for (i, uri) in self.redirect_uris.iter().enumerate() {
            check.field(
                format!("{at}.redirectUris[{i}]"),
                validate::redirect_uri(uri),
            );
        }
        let realm_wide = self.mfa_required.is_some()
            || self.email_verification.is_some()
            || self.self_registration.is_some();
        if realm_wide && self.isolation != Some(Isolation::Realm) {
            check.fail(
                format!("{at}.isolation"),
                "mfaRequired, emailVerification and selfRegistration apply to a whole realm: set isolation: Realm to give the tenant a realm of its own, or leave them out",
            );
        }
    }

    fn to_crd(&self) -> ossature_crds::IdentitySettings {
        ossature_crds::IdentitySettings {
            isolation: self.isolation.map(|i| match i {
                Isolation::Organization => ossature_crds::Isolation::Organization,
                Isolation::Realm => ossature_crds::Isolation::Realm,
            }),
            mfa_required: self.mfa_required,
            email_verification: self.email_verification,
            self_registration: self.self_registration,
            identity_provider_federation: self.identity_provider_federation,
            identity_providers: Vec::new(),
            redirect_uris: self
                .redirect_uris
                .iter()
                .map(|u| ossature_crds::RedirectUri(u.clone()))
                .collect(),
            access_token_lifetime_seconds: self.access_token_lifetime_seconds,
            password_policy: None,
        }
    }
}

/// Limits of a namespace and of its messaging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    /// Total CPU requests, e.g. `4` or `2500m`.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Total memory requests, e.g. `8Gi`.
    #[serde(default)]
    pub memory: Option<String>,
    /// Total persistent storage, e.g. `100Gi`.
    #[serde(default)]
    pub storage: Option<String>,
    /// Most pods, 0 to 100000.
    #[serde(default)]
    pub pods: Option<i32>,
    /// Most topics per environment, 1 to 100000.
    #[serde(default)]
    pub topics: Option<i32>,
    /// Most unconsumed data per topic, e.g. `10Gi`.
    #[serde(default)]
    pub backlog: Option<String>,
    /// Most messages per second per topic, 1 to 10000000.
    #[serde(default)]
    pub publish_rate: Option<i32>,
    /// Most partitions per topic, 1 to 10000.
    #[serde(default)]
    pub partitions: Option<i32>,
}

impl Quotas {
    fn check(&self, at: &str, check: &mut Check) {
        for (name, value) in [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("storage", &self.storage),
            ("backlog", &self.backlog),
        ] {
            if let Some(value) = value {
                check.field(format!("{at}.{name}"), validate::quantity(value));
            }
        }
        for (name, value, min, max) in [
            ("pods", self.pods, 0, 100_000),
            ("topics", self.topics, 1, 100_000),
            ("publishRate", self.publish_rate, 1, 10_000_000),
            ("partitions", self.partitions, 1, 10_000),
        ] {
            if let Some(value) = value {
                check.field(
                    format!("{at}.{name}"),
                    validate::range(value.into(), min, max),
                );
            }
        }
    }

    fn to_crd(&self) -> ossature_crds::Quotas {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let q = |v: &Option<String>| v.clone().map(Quantity);
        ossature_crds::Quotas {
            cpu: q(&self.cpu),
            memory: q(&self.memory),
            pods: self.pods,
            storage: q(&self.storage),
            topics: self.topics,
            backlog: q(&self.backlog),
            publish_rate: self.publish_rate,
            partitions: self.partitions,
        }
    }
}

/// Who may reach the tenant's host at the edge.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    /// Mutual TLS.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// CIDR ranges or addresses allowed; empty: everyone. At most 100.
    #[serde(default)]
    pub allowed_source_ranges: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// PEM CA certificates client certificates chain to; default: the tenant's CA.
    #[serde(default)]
    pub ca_bundle: Option<String>,
}

impl Edge {
    fn check(&self, at: &str, check: &mut Check) {
        if self.allowed_source_ranges.len() > 100 {
            check.fail(
                format!("{at}.allowedSourceRanges"),
                "at most 100 ranges; merge neighbouring ones",
            );
        }
        for (i, range) in self.allowed_source_ranges.iter().enumerate() {
            check.field(
                format!("{at}.allowedSourceRanges[{i}]"),
                validate::source_range(range),
            );
        }
        if let Some(bundle) = self.client_auth.as_ref().and_then(|c| c.ca_bundle.as_ref())
            && (!bundle.contains("-----BEGIN CERTIFICATE-----") || bundle.len() > 65536)
        {
            check.fail(
                format!("{at}.clientAuth.caBundle"),
                "must hold PEM certificates (-----BEGIN CERTIFICATE-----), at most 64 KiB",
            );
        }
    }

    fn to_crd(&self) -> ossature_crds::EdgeSettings {
        ossature_crds::EdgeSettings {
            client_auth: self
                .client_auth
                .as_ref()
                .map(|c| ossature_crds::ClientAuth {
                    mode: match c.mode {
                        ClientAuthMode::Optional => ossature_crds::ClientAuthMode::Optional,
                        ClientAuthMode::Required => ossature_crds::ClientAuthMode::Required,
                    },
                    ca_bundle: c.ca_bundle.clone(),
                }),
            allowed_source_ranges: self.allowed_source_ranges.clone(),
        }
    }
}

fn check_domains(domains: &[String], at: &str, check: &mut Check) {
    if domains.len() > 20 {
        check.fail(at, "at most 20 domains");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, domain) in domains.iter().enumerate() {
        check.field(format!("{at}[{i}]"), validate::dns_name(domain, false));
        if !seen.insert(domain) {
            check.fail(format!("{at}[{i}]"), format!("{domain} is listed twice"));
        }
    }
}

/// A role given to groups and users in a scope and every scope below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// `Viewer`, `Editor`, `Admin`, or one of the tenant's own roles.
    pub role: Role,
    /// Groups (as tokens name them) that receive the role.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Users that receive the role.
    #[serde(default)]
    pub users: Vec<String>,
}

/// The groups and users of a grant at `at` ("" for the body's own).
fn check_principals(groups: &[String], users: &[String], at: &str, check: &mut Check) {
    let path = |what: &str| match at {
        "" => what.to_string(),
        _ => format!("{at}.{what}"),
    };
    if groups.is_empty() && users.is_empty() {
        check.fail(path("groups"), "name at least one group or user");
    }
    for (what, list) in [("groups", groups), ("users", users)] {
        if list.len() > 64 {
            check.fail(path(what), format!("at most 64 {what}"));
        }
        for (i, name) in list.iter().enumerate() {
            check.field(format!("{}[{i}]", path(what)), validate::principal(name));
        }
    }
}

/// A scope: a node of the tenant's organisation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeDefinition {
    /// Its name, a DNS label of at most 63 characters.
    pub name: String,
    /// Name shown to people, e.g. "France".
    pub display_name: String,
    /// The parent scope; leave out for a root.
    #[serde(default)]
    pub parent: Option<String>,
    /// Roles granted here and below, at most 64.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

impl ScopeDefinition {
    fn check(&self, at: &str, check: &mut Check) {
        check.field(format!("{at}.name"), validate::scope_name(&self.name));
        check.field(
            format!("{at}.displayName"),
            validate::text(&self.display_name, 128),
        );
        if let Some(parent) = &self.parent {
            check.field(format!("{at}.parent"), validate::scope_name(parent));
            if parent == &self.name {
                check.fail(
                    format!("{at}.parent"),
                    "a scope cannot be its own parent; name another scope or leave parent out",
                );
            }
        }
        if self.grants.len() > 64 {
            check.fail(format!("{at}.grants"), "at most 64 grants");
        }
        for (i, grant) in self.grants.iter().enumerate() {
            check.field(
                format!("{at}.grants[{i}].role"),
                validate::role_name(&grant.role),
            );
            check_principals(
                &grant.groups,
                &grant.users,
                &format!("{at}.grants[{i}]"),
                check,
            );
        }
    }

    pub fn to_spec(&self) -> ossature_crds::ScopeSpec {
        ossature_crds::ScopeSpec {
            display_name: self.display_name.clone(),
            parent: self.parent.clone(),
            grants: self.grants.iter().map(Grant::to_crd).collect(),
            group_mappings: Vec::new(),
        }
    }
}

impl Grant {
    fn to_crd(&self) -> ossature_crds::ScopeGrant {
        ossature_crds::ScopeGrant {
            role: ossature_crds::RoleName(self.role.clone()),
            groups: self.groups.clone(),
            users: self.users.clone(),
        }
    }
}

fn deletion_to_crd(policy: Option<DeletionPolicy>) -> ossature_crds::DeletionPolicy {
    match policy {
        Some(DeletionPolicy::Retain) => ossature_crds::DeletionPolicy::Retain,
        _ => ossature_crds::DeletionPolicy::Delete,
    }
}

/// An environment of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentDefinition {
    /// Its name, a DNS label of at most 28 characters.
    pub name: String,
    pub kind: EnvironmentKind,
    /// Ephemeral only: deleted this long after creation, e.g. `72h`.
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub quotas: Quotas,
    /// Minutes messages are kept, 1 to 525600.
    #[serde(default)]
    pub message_retention_minutes: Option<i32>,
    #[serde(default)]
    pub deletion_policy: Option<DeletionPolicy>,
    /// The scope it belongs to: callers with a role there or in a scope
    /// above act on it. Left out: the tenant's root, where only grants of
    /// the whole tenant (and platform operators) act. Recorded in the
    /// label `control-plane.ossature.dev/scope`.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The label that places an Environment in a scope, for authorization.
pub const SCOPE_LABEL: &str = "control-plane.ossature.dev/scope";

impl EnvironmentDefinition {
    fn check(&self, at: &str, check: &mut Check) {
        check.field(format!("{at}.name"), validate::environment_name(&self.name));
        if let Some(scope) = &self.scope {
            check.field(format!("{at}.scope"), validate::scope_name(scope));
        }
        if let Some(ttl) = &self.ttl {
            check.field(format!("{at}.ttl"), validate::duration(ttl));
            if self.kind != EnvironmentKind::Ephemeral {
                check.fail(
                    format!("{at}.ttl"),
                    "ttl is only for Ephemeral environments; set kind: Ephemeral or leave ttl out",
                );
            }
        }
        self.quotas.check(&format!("{at}.quotas"), check);
        if let Some(minutes) = self.message_retention_minutes {
            check.field(
                format!("{at}.messageRetentionMinutes"),
                validate::range(minutes.into(), 1, 525_600),
            );
        }
    }

    pub fn to_spec(&self) -> ossature_crds::EnvironmentSpec {
        ossature_crds::EnvironmentSpec {
            kind: match self.kind {
                EnvironmentKind::Production => ossature_crds::EnvironmentKind::Production,
                EnvironmentKind::Staging => ossature_crds::EnvironmentKind::Staging,
                EnvironmentKind::Development => ossature_crds::EnvironmentKind::Development,
                EnvironmentKind::Ephemeral => ossature_crds::EnvironmentKind::Ephemeral,
            },
            ttl: self.ttl.clone(),
            quotas: self.quotas.to_crd(),
            message_retention_minutes: self.message_retention_minutes,
            deletion_policy: deletion_to_crd(self.deletion_policy),
        }
    }
}

/// Onboard a tenant: its Tenant, namespace, Scopes and Environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnboardTenant {
    /// The tenant's name: a DNS label of at most 30 characters; it prefixes
    /// everything provisioned for it.
    pub tenant: String,
    #[serde(rename = "type")]
    pub tenant_type: TenantType,
    /// Name shown to people, 1 to 128 characters.
    pub display_name: String,
    /// Region where its data is kept, e.g. `eu`. Immutable.
    pub residency: String,
    /// Labels of the Tenant object (for example an operator's selector).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub edge: Edge,
    /// Custom domains, proven by DNS; at most 20.
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Its scope tree, at most 100.
    #[serde(default)]
    pub scopes: Vec<ScopeDefinition>,
    /// Its environments, at most 50.
    #[serde(default)]
    pub environments: Vec<EnvironmentDefinition>,
    /// Only show what would be written: the apiserver's own dry run.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl OnboardTenant {
    pub fn tenant_spec(&self) -> ossature_crds::TenantSpec {
        ossature_crds::TenantSpec {
            tenant_type: match self.tenant_type {
                TenantType::Business => ossature_crds::TenantType::Business,
                TenantType::Consumer => ossature_crds::TenantType::Consumer,
            },
            display_name: self.display_name.clone(),
            residency: self.residency.clone(),
            identity: self.identity.to_crd(),
            quotas: self.quotas.to_crd(),
            edge: self.edge.to_crd(),
            certificate_authority: Default::default(),
            domains: self.domains.clone(),
            deletion_policy: deletion_to_crd(self.deletion_policy),
        }
    }
}

impl CommandInput for OnboardTenant {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("displayName", validate::text(&self.display_name, 128));
        check.field("residency", validate::residency(&self.residency));
        for (key, value) in &self.labels {
            check.field(format!("labels.{key}"), validate::label(key, value));
        }
        self.identity.check("identity", check);
        if self.tenant_type == TenantType::Consumer
            && self.identity.identity_provider_federation == Some(true)
        {
            check.fail(
                "identity.identityProviderFederation",
                "identity provider federation is for Business tenants; Consumer tenants sign up with their own accounts",
            );
        }
        self.quotas.check("quotas", check);
        self.edge.check("edge", check);
        check_domains(&self.domains, "domains", check);
        if self.scopes.len() > 100 {
            check.fail("scopes", "at most 100 scopes; add more with addScope");
        }
        let names: std::collections::BTreeSet<&str> =
            self.scopes.iter().map(|s| s.name.as_str()).collect();
        for (i, scope) in self.scopes.iter().enumerate() {
            let at = format!("scopes[{i}]");
            scope.check(&at, check);
            if let Some(parent) = &scope.parent
                && !names.contains(parent.as_str())
            {
                check.fail(
                    format!("{at}.parent"),
                    format!("{parent} is not among the scopes onboarded; list it too, or add it later with addScope"),
                );
            }
        }
        if names.len() != self.scopes.len() {
            check.fail("scopes", "scope names must be unique");
        }
        if self.environments.len() > 50 {
            check.fail(
                "environments",
                "at most 50 environments; add more with createEnvironment",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, environment) in self.environments.iter().enumerate() {
            environment.check(&format!("environments[{i}]"), check);
            if let Some(scope) = &environment.scope
                && !names.contains(scope.as_str())
            {
                check.fail(
                    format!("environments[{i}].scope"),
                    format!("{scope} is not among the scopes onboarded; list it in scopes, or leave scope out"),
                );
            }
            if !seen.insert(&environment.name) {
                check.fail(
                    format!("environments[{i}].name"),
                    format!("{} is listed twice", environment.name),
                );
            }
        }
        check_wait(self.wait.as_ref(), check);
    }
}

/// Change a tenant's identity, edge, domains or quotas; what is left out
/// stays as it is, what is given replaces that whole section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeTenant {
    pub tenant: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub edge: Option<Edge>,
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl ChangeTenant {
    /// The spec after this change.
    pub fn apply_to(&self, spec: &mut ossature_crds::TenantSpec) {
        if let Some(name) = &self.display_name {
            spec.display_name = name.clone();
        }
        if let Some(identity) = &self.identity {
            let providers = std::mem::take(&mut spec.identity.identity_providers);
            let password = spec.identity.password_policy.take();
            let recorded = spec.identity.isolation;
            spec.identity = identity.to_crd();
            // Kept: what this API does not set yet, and the mode, immutable.
            spec.identity.identity_providers = providers;
            spec.identity.password_policy = password;
            spec.identity.isolation = spec.identity.isolation.or(recorded);
        }
        if let Some(edge) = &self.edge {
            spec.edge = edge.to_crd();
        }
        if let Some(domains) = &self.domains {
            spec.domains = domains.clone();
        }
        if let Some(quotas) = &self.quotas {
            spec.quotas = quotas.to_crd();
        }
    }
}

impl CommandInput for ChangeTenant {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        if let Some(name) = &self.display_name {
            check.field("displayName", validate::text(name, 128));
        }
        if let Some(identity) = &self.identity {
            identity.check("identity", check);
        }
        if let Some(edge) = &self.edge {
            edge.check("edge", check);
        }
        if let Some(domains) = &self.domains {
            check_domains(domains, "domains", check);
        }
        if let Some(quotas) = &self.quotas {
            quotas.check("quotas", check);
        }
        if self.display_name.is_none()
            && self.identity.is_none()
            && self.edge.is_none()
            && self.domains.is_none()
            && self.quotas.is_none()
        {
            check.fail(
                "",
                "name at least one of displayName, identity, edge, domains or quotas to change",
            );
        }
        check_wait(self.wait.as_ref(), check);
    }
}

/// Add a scope to the tenant's tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddScope {
    pub tenant: String,
    pub scope: ScopeDefinition,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl CommandInput for AddScope {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        self.scope.check("scope", check);
        check_wait(self.wait.as_ref(), check);
    }
}

/// Move a scope under another parent (or make it a root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveScope {
    pub tenant: String,
    pub scope: String,
    /// The new parent; leave out to make the scope a root.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl CommandInput for MoveScope {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("scope", validate::scope_name(&self.scope));
        if let Some(parent) = &self.parent {
            check.field("parent", validate::scope_name(parent));
            if parent == &self.scope {
                check.fail("parent", "a scope cannot be its own parent");
            }
        }
        check_wait(self.wait.as_ref(), check);
    }
}

/// Remove a scope that has no scopes below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoveScope {
    pub tenant: String,
    pub scope: String,
    #[serde(default)]
    pub dry_run: bool,
}

impl CommandInput for RemoveScope {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("scope", validate::scope_name(&self.scope));
    }
}

/// Grant a role in a scope (and every scope below it) to groups and users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRole {
    pub tenant: String,
    pub scope: String,
    pub role: Role,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Take a role in a scope back from groups and users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeRole {
    pub tenant: String,
    pub scope: String,
    pub role: Role,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub dry_run: bool,
}

macro_rules! role_change {
    ($type:ty) => {
        impl CommandInput for $type {
            common_fields!();
            fn check(&self, check: &mut Check) {
                check.field("tenant", validate::tenant_name(&self.tenant));
                check.field("scope", validate::scope_name(&self.scope));
                check.field("role", validate::role_name(&self.role));
                check_principals(&self.groups, &self.users, "", check);
            }
        }
    };
}
role_change!(GrantRole);
role_change!(RevokeRole);

/// Create or change one of the tenant's objects in one of its environments
/// (a Topic, a ServiceIdentity or a Workload): its `spec` is the one kubectl
/// would apply, as the CRD describes it (`crds/yaml/`); the apiserver checks
/// it (schema, CEL, unknown fields) and the operator provisions it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyObject {
    pub tenant: String,
    /// The environment whose namespace holds it.
    pub environment: String,
    /// Its name, a DNS label.
    pub name: String,
    /// The object's spec, as in its CRD.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

/// Create or change a Topic: `spec` as in `crds/yaml/topics.ossature.dev.yaml`.
pub type ApplyTopic = ApplyObject;
/// Create or change a ServiceIdentity: `spec` as in `crds/yaml/serviceidentities.ossature.dev.yaml`.
pub type ApplyServiceIdentity = ApplyObject;
/// Create or change a Workload: `spec` as in `crds/yaml/workloads.ossature.dev.yaml`.
pub type ApplyWorkload = ApplyObject;

impl CommandInput for ApplyObject {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("environment", validate::environment_name(&self.environment));
        check.field("name", validate::dns_label(&self.name, 63));
        if !self.spec.is_object() {
            check.fail(
                "spec",
                "the object's spec is a JSON object, as its CRD describes it",
            );
        }
        check_wait(self.wait.as_ref(), check);
    }
}

/// One of the tenant's objects in one of its environments, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentObject {
    pub tenant: String,
    pub environment: String,
    pub name: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// Remove a Topic (safe by default: refused by the operator while it has a backlog or clients, unless its spec says `force`).
pub type RemoveTopic = EnvironmentObject;
/// Remove a ServiceIdentity: its client, credentials, grants and certificate go.
pub type RemoveServiceIdentity = EnvironmentObject;
/// Remove a Workload.
pub type RemoveWorkload = EnvironmentObject;
/// Rotate a ServiceIdentity's credentials now (the previous secret stays valid for a while).
pub type RotateCredentials = EnvironmentObject;

impl CommandInput for EnvironmentObject {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("environment", validate::environment_name(&self.environment));
        check.field("name", validate::dns_label(&self.name, 63));
    }
}

/// Define (or redefine) one of the tenant's own roles: standard policies it
/// bundles and permissions of its own. It becomes a TenantRole, granted in
/// scopes by name like `Viewer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefineRole {
    pub tenant: String,
    pub role: RoleDefinition,
    #[serde(default)]
    pub dry_run: bool,
}

/// A tenant's own role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleDefinition {
    /// A DNS label other than viewer, editor and admin, e.g. `deployer`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Standard policies: `<resource>-reader`, `<resource>-manager` (every
    /// other change), `scope-editor`; see `rolePermissions` of `Admin`.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Actions on resources of the catalog it gives besides.
    #[serde(default)]
    pub permissions: Vec<RolePermissionInput>,
}

/// Actions on one resource of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolePermissionInput {
    /// For example `workload`, `serviceIdentity`.
    pub resource: String,
    /// For example `read`, `update`.
    pub actions: Vec<String>,
}

/// Most policies and permissions of one role.
const MAX_ROLE_PARTS: usize = 64;

impl CommandInput for DefineRole {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        let role = &self.role;
        check.field("role.name", validate::own_role_name(&role.name));
        if !role.description.is_empty() {
            check.field("role.description", validate::text(&role.description, 1024));
        }
        if role.policies.is_empty() && role.permissions.is_empty() {
            check.fail(
                "role",
                "a role gives something: name standard policies (such as workload-reader) or list permissions",
            );
        }
        if role.policies.len() > MAX_ROLE_PARTS {
            check.fail(
                "role.policies",
                format!("at most {MAX_ROLE_PARTS} policies"),
            );
        }
        for (i, policy) in role.policies.iter().enumerate() {
            check.field(
                format!("role.policies[{i}]"),
                validate::dns_label(policy, 63),
            );
        }
        if role.permissions.len() > MAX_ROLE_PARTS {
            check.fail(
                "role.permissions",
                format!("at most {MAX_ROLE_PARTS} permissions"),
            );
        }
        for (i, permission) in role.permissions.iter().enumerate() {
            let at = format!("role.permissions[{i}]");
            check.field(
                format!("{at}.resource"),
                validate::identifier(&permission.resource),
            );
            if permission.actions.is_empty() || permission.actions.len() > 32 {
                check.fail(format!("{at}.actions"), "1 to 32 actions");
            }
            for (j, action) in permission.actions.iter().enumerate() {
                check.field(format!("{at}.actions[{j}]"), validate::identifier(action));
            }
        }
    }
}

impl RoleDefinition {
    pub fn to_spec(&self) -> ossature_crds::TenantRoleSpec {
        ossature_crds::TenantRoleSpec {
            description: self.description.clone(),
            policies: self
                .policies
                .iter()
                .cloned()
                .map(ossature_crds::PolicyName)
                .collect(),
            permissions: self
                .permissions
                .iter()
                .map(|p| ossature_crds::RolePermission {
                    resource: p.resource.clone(),
                    actions: p
                        .actions
                        .iter()
                        .cloned()
                        .map(ossature_crds::ActionName)
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Remove one of the tenant's own roles; refused while a scope grants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoveRole {
    pub tenant: String,
    pub role: String,
    #[serde(default)]
    pub dry_run: bool,
}

impl CommandInput for RemoveRole {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("role", validate::own_role_name(&self.role));
    }
}

/// Map a group of the tenant's identity provider (as its people's tokens
/// carry it) to a role in a scope and every scope below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MapGroup {
    pub tenant: String,
    pub scope: String,
    pub group: String,
    pub role: Role,
    #[serde(default)]
    pub dry_run: bool,
}

/// Remove a group's mapping to a role in a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnmapGroup {
    pub tenant: String,
    pub scope: String,
    pub group: String,
    pub role: Role,
    #[serde(default)]
    pub dry_run: bool,
}

macro_rules! mapping_change {
    ($type:ty) => {
        impl CommandInput for $type {
            common_fields!();
            fn check(&self, check: &mut Check) {
                check.field("tenant", validate::tenant_name(&self.tenant));
                check.field("scope", validate::scope_name(&self.scope));
                check.field("group", validate::principal(&self.group));
                check.field("role", validate::role_name(&self.role));
            }
        }
    };
}
mapping_change!(MapGroup);
mapping_change!(UnmapGroup);

/// Create an environment of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateEnvironment {
    pub tenant: String,
    pub environment: EnvironmentDefinition,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl CommandInput for CreateEnvironment {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        self.environment.check("environment", check);
        check_wait(self.wait.as_ref(), check);
    }
}

/// Remove an environment, with what it provisioned (unless it retains).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoveEnvironment {
    pub tenant: String,
    pub environment: String,
    #[serde(default)]
    pub dry_run: bool,
}

impl CommandInput for RemoveEnvironment {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check.field("environment", validate::environment_name(&self.environment));
    }
}

/// Request a certificate for names the tenant owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestCertificate {
    pub tenant: String,
    /// The environment whose namespace holds it; else the tenant's namespace.
    #[serde(default)]
    pub environment: Option<String>,
    /// The Certificate's name, a DNS label of at most 63 characters.
    pub name: String,
    /// DNS names, e.g. `api.acme.ossature.test`; at most 100.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// SPIFFE IDs of the tenant's workloads (tenant CA only); at most 10.
    #[serde(default)]
    pub uris: Vec<String>,
    /// Default: `[Server]`.
    #[serde(default)]
    pub usages: Vec<Usage>,
    #[serde(default)]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// e.g. `2160h`; tenant CA only.
    #[serde(default)]
    pub lifetime: Option<String>,
    #[serde(default)]
    pub renew_before: Option<String>,
    /// Also write a `kubernetes.io/tls` Secret of this name.
    #[serde(default)]
    pub secret_name: Option<String>,
    /// An AcmeIssuer's name; left out, the tenant's own CA signs.
    #[serde(default)]
    pub acme_issuer: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl RequestCertificate {
    pub fn to_spec(&self) -> ossature_crds::CertificateSpec {
        ossature_crds::CertificateSpec {
            dns_names: self.dns_names.clone(),
            uris: self.uris.clone(),
            usages: if self.usages.is_empty() {
                vec![ossature_crds::Usage::Server]
            } else {
                self.usages
                    .iter()
                    .map(|u| match u {
                        Usage::Server => ossature_crds::Usage::Server,
                        Usage::Client => ossature_crds::Usage::Client,
                    })
                    .collect()
            },
            lifetime: self.lifetime.clone(),
            renew_before: self.renew_before.clone(),
            key_algorithm: match self.key_algorithm {
                Some(KeyAlgorithm::Ed25519) => ossature_crds::KeyAlgorithm::Ed25519,
                _ => ossature_crds::KeyAlgorithm::EcdsaP256,
            },
            secret_name: self.secret_name.clone(),
            deletion_policy: Default::default(),
            issuer: match &self.acme_issuer {
                Some(name) => ossature_crds::IssuerRef {
                    tenant_ca: None,
                    acme: Some(ossature_crds::AcmeIssuerRef { name: name.clone() }),
                },
                None => ossature_crds::IssuerRef {
                    tenant_ca: Some(Default::default()),
                    acme: None,
                },
            },
        }
    }
}

impl CommandInput for RequestCertificate {
    common_fields!();
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        if let Some(environment) = &self.environment {
            check.field("environment", validate::environment_name(environment));
        }
        check.field("name", validate::dns_label(&self.name, 63));
        if self.dns_names.is_empty() && self.uris.is_empty() {
            check.fail("dnsNames", "name at least one DNS name or URI");
        }
        if self.dns_names.len() > 100 {
            check.fail("dnsNames", "at most 100 names");
        }
        for (i, name) in self.dns_names.iter().enumerate() {
            check.field(format!("dnsNames[{i}]"), validate::dns_name(name, true));
        }
        if self.uris.len() > 10 {
            check.fail("uris", "at most 10 URIs");
        }
        for (i, uri) in self.uris.iter().enumerate() {
            if !uri.starts_with("spiffe://") || uri.len() > 512 || !uri.contains("/ns/") {
                check.fail(
                    format!("uris[{i}]"),
                    format!("{uri:?} is not a SPIFFE ID such as spiffe://acme.ossature.test/ns/tn-acme--prod/sa/billing"),
                );
            }
        }
        for (field, value) in [
            ("lifetime", &self.lifetime),
            ("renewBefore", &self.renew_before),
        ] {
            if let Some(value) = value {
                check.field(field, validate::duration(value));
            }
        }
        if let Some(secret) = &self.secret_name {
            check.field("secretName", validate::dns_label(secret, 63));
        }
        if let Some(issuer) = &self.acme_issuer {
            check.field("acmeIssuer", validate::dns_label(issuer, 63));
            if self.key_algorithm == Some(KeyAlgorithm::Ed25519) {
                check.fail(
                    "keyAlgorithm",
                    "Ed25519 is for the tenant CA only: public ACME CAs sign ECDSA keys",
                );
            }
            if self.usages.contains(&Usage::Client) {
                check.fail(
                    "usages",
                    "Client is for the tenant CA only: ACME CAs issue server certificates",
                );
            }
            if self.lifetime.is_some() {
                check.fail("lifetime", "an ACME CA sets the lifetime; leave it out");
            }
            if !self.uris.is_empty() {
                check.fail("uris", "URIs are for the tenant CA only");
            }
        }
    }
}

/// Offboard a tenant: its Tenant is deleted and the operator removes
/// everything it had (or retains it, per its deletion policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffboardTenant {
    pub tenant: String,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub wait: Option<Wait>,
}

impl CommandInput for OffboardTenant {
    common_fields!(wait);
    fn check(&self, check: &mut Check) {
        check.field("tenant", validate::tenant_name(&self.tenant));
        check_wait(self.wait.as_ref(), check);
    }
}

// ---- queries ----

/// A tenant's status: every condition of it, its scopes and environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantStatusQuery {
    pub tenant: String,
}

/// Tenants the caller may see, by name, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListTenantsQuery {
    /// Page size, 1 to 500; default 100.
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `continue` of the previous page.
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

/// What became of a command, by its invocation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvocationStatusQuery {
    pub invocation_id: String,
}

/// Everything a tenant owns, in Kubernetes and in each backend, as the
/// operators make it, with each object's state from its owner's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantTreeQuery {
    pub tenant: String,
    /// Only this scope's subtree: its objects and the scopes below it.
    #[serde(default)]
    pub scope: Option<String>,
}

/// What the caller may do in a scope of its tenant, for a front end to
/// hide the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallerPermissionsQuery {
    pub tenant: String,
    /// Left out: the tenant's root.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The policies and permissions of a set of roles of a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolePermissionsQuery {
    pub tenant: String,
    /// 1 to 50 role names, such as `Viewer` or one of the tenant's own.
    pub roles: Vec<String>,
}

// ---- answers ----

/// The authorization decision, made once at the start of the invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub allowed: bool,
    /// Why, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Operation {
    /// Written with server-side apply.
    Apply,
    /// Deleted.
    Delete,
}

/// One object a command wrote (or, in a dry run, would write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectChange {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub operation: Operation,
    /// In a dry run: the object as the apiserver's own dry run returned it
    /// (after admission, defaults and validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub object: Option<serde_json::Value>,
    /// Anything the reader should know about this object's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The backend objects the operators would create, change or remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendPlan {
    /// Whether the plan was computed; when false, `note` says why.
    pub computed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<serde_json::Value>,
}

/// A condition, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum OutcomeState {
    /// The tenant is Ready at the generation written.
    Ready,
    /// The tenant is gone (offboarding).
    Deleted,
    /// The tenant failed: Stalled, or Ready False with a failure reason.
    Failed,
    /// Neither within the timeout; the conditions are the last seen.
    TimedOut,
}

/// The outcome waited for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub state: OutcomeState,
    pub conditions: Vec<ConditionView>,
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub command: String,
    /// The invocation that did the work (for a replay: the first one).
    pub invocation_id: String,
    pub tenant: String,
    pub dry_run: bool,
    /// True when this answer is the stored answer of an earlier request
    /// with the same Idempotency-Key and body: nothing was done again.
    pub replay: bool,
    pub decision: DecisionView,
    pub objects: Vec<ObjectChange>,
    /// Dry runs: what the operators would do in the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<BackendPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// One scope or environment of a tenant, with its conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    pub conditions: Vec<ConditionView>,
}

/// A tenant's status. Conditions only: no secret ever reaches them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    pub tenant: String,
    /// Whether it is Ready at its latest generation; absent before the
    /// operator first reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// What the Ready condition says: the backend that blocks, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Being deleted.
    pub deleting: bool,
    pub conditions: Vec<ConditionView>,
    pub scopes: Vec<ChildStatus>,
    pub environments: Vec<ChildStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub tenant_type: TenantType,
    pub display_name: String,
    pub residency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantList {
    pub items: Vec<TenantSummary>,
    /// Pass it as `continue` for the next page; absent on the last.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum InvocationState {
    InFlight,
    Completed,
}

/// What became of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvocationStatus {
    pub invocation_id: String,
    pub command: String,
    pub tenant: String,
    pub state: InvocationState,
    /// The HTTP status it answered with, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its answer, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub started_at: String,
}

/// A tenant's tree: `root` is the Tenant (or the scope asked for), each
/// node with its `backend`, `kind`, `name`, the `id` its backend gave it,
/// its `state` (the owner's condition that reports it) and `children`.
/// Built from the custom resources and their status only: no backend is
/// read and no secret is ever in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantTree {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[schema(value_type = Object)]
    pub root: serde_json::Value,
}

/// One action on one resource of the policy catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionView {
    pub resource: String,
    pub action: String,
}

/// What the caller may do where it asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallerPermissions {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub permissions: Vec<PermissionView>,
    /// The roles they come from, or why there are none.
    pub reason: String,
}

/// A policy: a named set of permissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub permissions: Vec<PermissionView>,
}

/// A role: its policies, and every permission they give, each once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub name: String,
    /// `Viewer`, `Editor` and `Admin` are every tenant's.
    pub standard: bool,
    pub description: String,
    pub policies: Vec<PolicyView>,
    pub permissions: Vec<PermissionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolePermissions {
    pub tenant: String,
    pub roles: Vec<RoleView>,
    /// Roles asked for that the tenant does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

// ---- bulk ----

/// Several commands, run in order; each has its own result, and one
/// failing does not undo the others (bulk is never atomic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCommands {
    /// Decode, check and authorize every item before running any: one
    /// item refused means none runs.
    #[serde(default)]
    pub validate_first: bool,
    /// 1 to 100 commands.
    pub items: Vec<BulkCommand>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkCommand {
    /// A command's name, e.g. `onboardTenant`.
    pub command: String,
    /// The item's own Idempotency-Key.
    pub idempotency_key: String,
    /// The command's input, as its own path takes it.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

/// Several queries, answered in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkQueries {
    /// 1 to 100 queries.
    pub items: Vec<BulkQuery>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkQuery {
    /// A query's name, e.g. `tenantStatus`.
    pub query: String,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

/// One item's result, at the item's position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkItemResult {
    pub index: usize,
    /// The HTTP status the item would have had on its own.
    pub status: u16,
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ProblemDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// False when `validateFirst` found a problem: then nothing ran.
    pub executed: bool,
    pub items: Vec<BulkItemResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors<T: CommandInput>(input: &T) -> Vec<String> {
        let mut check = Check::default();
        input.check(&mut check);
        check.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let e = serde_json::from_value::<OnboardTenant>(json!({
            "tenant": "acme", "type": "Business", "displayName": "A", "residency": "eu",
            "colour": "red"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let e = serde_json::from_value::<OnboardTenant>(json!({
            "tenant": "acme", "type": "Business", "displayName": "A", "residency": "eu",
            "scopes": [{"name": "g", "displayName": "G", "owner": "x"}]
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `owner`"), "{e}");
    }

    #[test]
    fn every_field_is_checked_at_once() {
        let input: OnboardTenant = serde_json::from_value(json!({
            "tenant": "Acme", "type": "Consumer", "displayName": "", "residency": "EU",
            "identity": {"accessTokenLifetimeSeconds": 7200, "mfaRequired": true,
                         "identityProviderFederation": true},
            "quotas": {"cpu": "lots"},
            "edge": {"allowedSourceRanges": ["10.0.0.0/99"]},
            "scopes": [{"name": "eu", "displayName": "EU", "parent": "global"}],
            "environments": [{"name": "prod", "kind": "Production", "ttl": "1h"}],
            "wait": {"timeoutSeconds": 0}
        }))
        .unwrap();
        assert_eq!(
            errors(&input),
            [
                "tenant",
                "displayName",
                "residency",
                "identity.accessTokenLifetimeSeconds",
                "identity.isolation",
                "identity.identityProviderFederation",
                "quotas.cpu",
                "edge.allowedSourceRanges[0]",
                "scopes[0].parent",
                "environments[0].ttl",
                "wait.timeoutSeconds",
            ]
        );
    }

    #[test]
    fn a_grants_bad_member_is_named_by_its_path_in_the_body() {
        let grant: GrantRole = serde_json::from_value(json!({
            "tenant": "acme", "scope": "eu", "role": "Viewer",
            "groups": ["ok", ""], "users": ["a\tb"]
        }))
        .unwrap();
        assert_eq!(errors(&grant), ["groups[1]", "users[0]"]);
        let nobody: RevokeRole = serde_json::from_value(json!({
            "tenant": "acme", "scope": "eu", "role": "Viewer"
        }))
        .unwrap();
        assert_eq!(errors(&nobody), ["groups"]);
        let scope: AddScope = serde_json::from_value(json!({
            "tenant": "acme", "scope": {"name": "eu", "displayName": "EU",
                "grants": [{"role": "Admin", "users": [""]}]}
        }))
        .unwrap();
        assert_eq!(errors(&scope), ["scope.grants[0].users[0]"]);
    }

    #[test]
    fn an_onboarding_becomes_the_crds_specs() {
        let input: OnboardTenant = serde_json::from_value(json!({
            "tenant": "acme", "type": "Business", "displayName": "Acme", "residency": "eu",
            "quotas": {"cpu": "8", "pods": 100},
            "scopes": [{"name": "global", "displayName": "Global",
                        "grants": [{"role": "Admin", "groups": ["admins"]}]}],
            "environments": [{"name": "prod", "kind": "Production"}]
        }))
        .unwrap();
        assert!(errors(&input).is_empty());
        let spec = input.tenant_spec();
        assert_eq!(spec.tenant_type, ossature_crds::TenantType::Business);
        assert_eq!(spec.quotas.pods, Some(100));
        let scope = input.scopes[0].to_spec();
        assert_eq!(scope.grants[0].role.as_str(), "Admin");
    }

    #[test]
    fn a_change_keeps_what_it_does_not_name() {
        let onboard: OnboardTenant = serde_json::from_value(json!({
            "tenant": "acme", "type": "Business", "displayName": "Acme", "residency": "eu",
            "identity": {"isolation": "Realm", "accessTokenLifetimeSeconds": 600},
            "domains": ["shop.acme.example"]
        }))
        .unwrap();
        let mut spec = onboard.tenant_spec();
        let change: ChangeTenant = serde_json::from_value(json!({
            "tenant": "acme", "edge": {"allowedSourceRanges": ["203.0.113.0/24"]},
            "identity": {"accessTokenLifetimeSeconds": 900}
        }))
        .unwrap();
        assert!(errors(&change).is_empty());
        change.apply_to(&mut spec);
        assert_eq!(spec.domains, ["shop.acme.example"]);
        assert_eq!(spec.edge.allowed_source_ranges, ["203.0.113.0/24"]);
        assert_eq!(spec.identity.access_token_lifetime_seconds, Some(900));
        assert_eq!(
            spec.identity.isolation,
            Some(ossature_crds::Isolation::Realm)
        );
        let empty: ChangeTenant = serde_json::from_value(json!({"tenant": "acme"})).unwrap();
        assert_eq!(errors(&empty), [""]);
    }
}
