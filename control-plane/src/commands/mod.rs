//! The commands: each writes the custom resources a platform engineer
//! would (never a backend itself), and may wait for the outcome the
//! operators report.

mod onboard;
pub mod plan;
pub mod write;

pub use onboard::Early;
use onboard::onboard;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ObjectMeta;
use kube::{Api, ResourceExt};
use ossature_crds::{
    Certificate, Environment, RoleName, Scope, ServiceIdentity, Tenant, TenantRole, Topic, Workload,
};
use ossature_model::names::{TENANT_LABEL, tenant_namespace};
use serde_json::Value;

use crate::api::{
    self, AddScope, ApplyObject, ApplyServiceIdentity, ApplyTopic, ApplyWorkload, ChangeTenant,
    CommandInput, ConditionView, CreateEnvironment, DefineRole, EnvironmentObject, GrantRole,
    MapGroup, MoveScope, OffboardTenant, OnboardTenant, Outcome, OutcomeState, RemoveEnvironment,
    RemoveRole, RemoveScope, RemoveServiceIdentity, RemoveTopic, RemoveWorkload,
    RequestCertificate, RevokeRole, RotateCredentials, UnmapGroup,
};
use crate::problem::{FieldError, Problem, ProblemKind};
use crate::watch::Watches;
use write::{Writes, problem_of};

macro_rules! commands {
    ($($name:literal => $variant:ident),+ $(,)?) => {
        /// A decoded command.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Command {
            $($variant($variant)),+
        }

        /// Every command's name, as its path ends.
        pub const NAMES: &[&str] = &[$($name),+];

        impl Command {
            /// The command `name` decoded from `body`; `None` for a name
            /// that is no command.
            pub fn decode(name: &str, body: &Value) -> Option<Result<Command, Problem>> {
                match name {
                    $($name => Some(decode_as::<$variant>(body).map(Command::$variant)),)+
                    _ => None,
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Command::$variant(_) => $name),+
                }
            }

            pub fn input(&self) -> &dyn CommandInput {
                match self {
                    $(Command::$variant(input) => input),+
                }
            }
        }
    };
}

commands! {
    "onboardTenant" => OnboardTenant,
    "changeTenant" => ChangeTenant,
    "addScope" => AddScope,
    "moveScope" => MoveScope,
    "removeScope" => RemoveScope,
    "grantRole" => GrantRole,
    "revokeRole" => RevokeRole,
    "createEnvironment" => CreateEnvironment,
    "removeEnvironment" => RemoveEnvironment,
    "requestCertificate" => RequestCertificate,
    "offboardTenant" => OffboardTenant,
    "defineRole" => DefineRole,
    "removeRole" => RemoveRole,
    "mapGroup" => MapGroup,
    "unmapGroup" => UnmapGroup,
    "applyTopic" => ApplyTopic,
    "removeTopic" => RemoveTopic,
    "applyServiceIdentity" => ApplyServiceIdentity,
    "removeServiceIdentity" => RemoveServiceIdentity,
    "rotateCredentials" => RotateCredentials,
    "applyWorkload" => ApplyWorkload,
    "removeWorkload" => RemoveWorkload,
}

/// Decodes a body as `T`, naming the field that does not fit.
pub fn decode_as<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, Problem> {
    // serde would take a list as the fields in order: only names count.
    if !body.is_object() {
        return Err(invalid(
            "",
            "the body must be a JSON object of named fields, as /openapi.json describes".into(),
        ));
    }
    serde_path_to_error::deserialize(body.clone()).map_err(|e| {
        let path = e.path().to_string();
        Problem::invalid(vec![FieldError {
            field: if path == "." { String::new() } else { path },
            message: e.inner().to_string(),
        }])
    })
}

impl Command {
    /// Every field checked; all errors at once.
    pub fn check(&self) -> Result<(), Problem> {
        let mut check = api::validate::Check::default();
        self.input().check(&mut check);
        check.into_result().map_err(Problem::invalid)
    }
}

/// What a command waits for, once written.
#[derive(Debug, Clone)]
pub enum Awaited {
    /// The tenant Ready at this generation, or gone.
    Tenant {
        name: String,
        generation: Option<i64>,
        gone: bool,
    },
    Scope {
        tenant: String,
        name: String,
        generation: Option<i64>,
    },
    Environment {
        tenant: String,
        name: String,
        generation: Option<i64>,
    },
    /// A Topic, ServiceIdentity or Workload Ready at this generation, or gone.
    Object {
        kind: String,
        namespace: String,
        name: String,
        generation: Option<i64>,
        gone: bool,
    },
}

fn tenant_not_found(tenant: &str) -> Problem {
    Problem::new(
        ProblemKind::TenantNotFound,
        format!("there is no tenant {tenant}; onboard it first with onboardTenant"),
    )
}

async fn require_tenant(writes: &Writes, tenant: &str) -> Result<Tenant, Problem> {
    Api::<Tenant>::all(writes.client().clone())
        .get_opt(tenant)
        .await
        .map_err(|e| problem_of(e, &format!("reading tenant {tenant}")))?
        .ok_or_else(|| tenant_not_found(tenant))
}

async fn get_scope(writes: &Writes, tenant: &str, name: &str) -> Result<Option<Scope>, Problem> {
    Api::<Scope>::namespaced(writes.client().clone(), &tenant_namespace(tenant))
        .get_opt(name)
        .await
        .map_err(|e| problem_of(e, &format!("reading scope {name}")))
}

/// Refuses a `field` naming a scope the tenant does not have.
async fn require_scope(
    writes: &Writes,
    tenant: &str,
    scope: Option<&str>,
    field: &str,
    fix: &str,
) -> Result<(), Problem> {
    match scope {
        Some(scope) if get_scope(writes, tenant, scope).await?.is_none() => Err(invalid(
            field,
            format!("tenant {tenant} has no scope {scope}; {fix}"),
        )),
        _ => Ok(()),
    }
}

fn scope_not_found(tenant: &str, name: &str) -> Problem {
    Problem::new(
        ProblemKind::ObjectNotFound,
        format!("tenant {tenant} has no scope {name}; add it with addScope"),
    )
}

/// The object to apply again: name, namespace, labels and resourceVersion
/// (a precondition) of the one read, with `spec`.
fn again<K: kube::Resource<DynamicType = ()> + Clone>(read: &K, spec_of: impl FnOnce(&mut K)) -> K {
    let mut next = read.clone();
    let meta = next.meta_mut();
    *meta = ObjectMeta {
        name: read.meta().name.clone(),
        namespace: read.meta().namespace.clone(),
        labels: read.meta().labels.clone(),
        resource_version: read.meta().resource_version.clone(),
        ..Default::default()
    };
    spec_of(&mut next);
    next
}

/// Runs a command's writes; what it then waits for.
pub async fn run(
    command: &Command,
    watches: &Watches,
    writes: &mut Writes,
    early: Early,
) -> Result<Awaited, Problem> {
    match command {
        Command::OnboardTenant(c) => onboard(c, writes, early).await,
        Command::ChangeTenant(c) => {
            let mut attempt = 0;
            loop {
                let current = require_tenant(writes, &c.tenant).await?;
                let next = again(&current, |t| c.apply_to(&mut t.spec));
                match writes.apply(next).await {
                    Err(p) if changed_meanwhile(&p, &mut attempt) => continue,
                    written => return Ok(tenant_awaited(&c.tenant, written?.as_ref())),
                }
            }
        }
        Command::AddScope(c) => {
            require_tenant(writes, &c.tenant).await?;
            if get_scope(writes, &c.tenant, &c.scope.name).await?.is_some() {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!(
                        "tenant {} already has scope {}; change it with moveScope, grantRole or revokeRole",
                        c.tenant, c.scope.name
                    ),
                ));
            }
            require_scope(
                writes,
                &c.tenant,
                c.scope.parent.as_deref(),
                "scope.parent",
                "add the parent first",
            )
            .await?;
            let mut scope = Scope::new(&c.scope.name, c.scope.to_spec());
            scope.metadata.namespace = Some(tenant_namespace(&c.tenant));
            scope
                .labels_mut()
                .insert(TENANT_LABEL.into(), c.tenant.clone());
            let written = writes.apply(scope).await?;
            Ok(Awaited::Scope {
                tenant: c.tenant.clone(),
                name: c.scope.name.clone(),
                generation: written.and_then(|s| s.metadata.generation),
            })
        }
        Command::MoveScope(c) => {
            get_scope(writes, &c.tenant, &c.scope)
                .await?
                .ok_or_else(|| scope_not_found(&c.tenant, &c.scope))?;
            if let Some(parent) = &c.parent {
                if get_scope(writes, &c.tenant, parent).await?.is_none() {
                    return Err(invalid(
                        "parent",
                        format!("tenant {} has no scope {parent}", c.tenant),
                    ));
                }
                let tree = ossature_model::scopes::ScopeTree::new(
                    watches
                        .scopes_of(&c.tenant)
                        .iter()
                        .map(|s| (s.name_any(), s.spec.parent.clone()))
                        .filter(|(name, _)| name != &c.scope)
                        .chain([(c.scope.clone(), Some(parent.clone()))]),
                );
                if let Err(fault) = tree.path(&c.scope) {
                    return Err(invalid("parent", fault.message(&c.scope)));
                }
            }
            // Read again, and again on a conflict (the operator writes the
            // Scope too).
            change_scope(writes, &c.tenant, &c.scope, |spec| {
                spec.parent = c.parent.clone()
            })
            .await
        }
        Command::RemoveScope(c) => {
            let children: Vec<String> = watches
                .scopes_of(&c.tenant)
                .iter()
                .filter(|s| s.spec.parent.as_deref() == Some(c.scope.as_str()))
                .map(|s| s.name_any())
                .collect();
            if !children.is_empty() {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!(
                        "scope {} has scopes below it ({}); move or remove them first",
                        c.scope,
                        children.join(", ")
                    ),
                ));
            }
            if !writes
                .delete::<Scope>(Some(&tenant_namespace(&c.tenant)), &c.scope)
                .await?
            {
                return Err(scope_not_found(&c.tenant, &c.scope));
            }
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: false,
            })
        }
        Command::GrantRole(c) => {
            require_role(watches, &c.tenant, &c.role, "role")?;
            change_scope(writes, &c.tenant, &c.scope, |spec| {
                let role = RoleName(c.role.clone());
                match spec.grants.iter_mut().find(|g| g.role == role) {
                    Some(grant) => {
                        merge(&mut grant.groups, &c.groups);
                        merge(&mut grant.users, &c.users);
                    }
                    None => spec.grants.push(ossature_crds::ScopeGrant {
                        role,
                        groups: dedup(&c.groups),
                        users: dedup(&c.users),
                    }),
                }
            })
            .await
        }
        Command::RevokeRole(c) => {
            change_scope(writes, &c.tenant, &c.scope, |spec| {
                let role = RoleName(c.role.clone());
                for grant in spec.grants.iter_mut().filter(|g| g.role == role) {
                    grant.groups.retain(|g| !c.groups.contains(g));
                    grant.users.retain(|u| !c.users.contains(u));
                }
                spec.grants
                    .retain(|g| !(g.groups.is_empty() && g.users.is_empty()));
            })
            .await
        }
        Command::MapGroup(c) => {
            require_role(watches, &c.tenant, &c.role, "role")?;
            change_scope(writes, &c.tenant, &c.scope, |spec| {
                let mapping = ossature_crds::GroupMapping {
                    group: c.group.clone(),
                    role: RoleName(c.role.clone()),
                };
                if !spec.group_mappings.contains(&mapping) {
                    spec.group_mappings.push(mapping);
                }
            })
            .await
        }
        Command::UnmapGroup(c) => {
            change_scope(writes, &c.tenant, &c.scope, |spec| {
                spec.group_mappings
                    .retain(|m| !(m.group == c.group && m.role.as_str() == c.role));
            })
            .await
        }
        Command::DefineRole(c) => {
            require_tenant(writes, &c.tenant).await?;
            let mut role = TenantRole::new(&c.role.name, c.role.to_spec());
            role.metadata.namespace = Some(tenant_namespace(&c.tenant));
            role.labels_mut()
                .insert(TENANT_LABEL.into(), c.tenant.clone());
            check_role(watches, &c.tenant, &role)?;
            writes.apply(role).await?;
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: false,
            })
        }
        Command::RemoveRole(c) => {
            let granted: Vec<String> = watches
                .scopes_of(&c.tenant)
                .iter()
                .filter(|s| {
                    s.spec.grants.iter().any(|g| g.role.as_str() == c.role)
                        || s.spec
                            .group_mappings
                            .iter()
                            .any(|m| m.role.as_str() == c.role)
                })
                .map(|s| s.name_any())
                .collect();
            if !granted.is_empty() {
                return Err(Problem::new(
                    ProblemKind::Conflict,
                    format!(
                        "role {} is granted or mapped in scopes {}; revoke it there first (revokeRole, unmapGroup)",
                        c.role,
                        granted.join(", ")
                    ),
                ));
            }
            if !writes
                .delete::<TenantRole>(Some(&tenant_namespace(&c.tenant)), &c.role)
                .await?
            {
                return Err(Problem::new(
                    ProblemKind::ObjectNotFound,
                    format!("tenant {} has no role {}", c.tenant, c.role),
                ));
            }
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: false,
            })
        }
        Command::CreateEnvironment(c) => {
            require_tenant(writes, &c.tenant).await?;
            require_scope(
                writes,
                &c.tenant,
                c.environment.scope.as_deref(),
                "environment.scope",
                "add it first, or leave scope out",
            )
            .await?;
            let environment = environment_object(&c.tenant, &c.environment);
            let written = writes.apply(environment).await?;
            Ok(Awaited::Environment {
                tenant: c.tenant.clone(),
                name: c.environment.name.clone(),
                generation: written.and_then(|e| e.metadata.generation),
            })
        }
        Command::RemoveEnvironment(c) => {
            let namespace = tenant_namespace(&c.tenant);
            if !writes
                .delete::<Environment>(Some(&namespace), &c.environment)
                .await?
            {
                return Err(Problem::new(
                    ProblemKind::ObjectNotFound,
                    format!("tenant {} has no environment {}", c.tenant, c.environment),
                ));
            }
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: false,
            })
        }
        Command::RequestCertificate(c) => {
            require_tenant(writes, &c.tenant).await?;
            let names = ossature_model::TenantNames::new(&c.tenant);
            let namespace = match &c.environment {
                Some(environment) => {
                    let exists =
                        Api::<Environment>::namespaced(writes.client().clone(), &names.namespace)
                            .get_opt(environment)
                            .await
                            .map_err(|e| problem_of(e, "reading the environment"))?
                            .is_some();
                    if !exists {
                        return Err(invalid(
                            "environment",
                            format!(
                                "tenant {} has no environment {environment}; create it first",
                                c.tenant
                            ),
                        ));
                    }
                    names.environment(environment).namespace
                }
                None => names.namespace.clone(),
            };
            let mut certificate = Certificate::new(&c.name, c.to_spec());
            certificate.metadata.namespace = Some(namespace);
            certificate
                .labels_mut()
                .insert(TENANT_LABEL.into(), c.tenant.clone());
            writes.apply(certificate).await?;
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: false,
            })
        }
        Command::ApplyTopic(c) => apply_object::<Topic>(watches, writes, c).await,
        Command::ApplyServiceIdentity(c) => {
            apply_object::<ServiceIdentity>(watches, writes, c).await
        }
        Command::ApplyWorkload(c) => apply_object::<Workload>(watches, writes, c).await,
        Command::RemoveTopic(c) => remove_object::<Topic>(writes, c).await,
        Command::RemoveServiceIdentity(c) => remove_object::<ServiceIdentity>(writes, c).await,
        Command::RemoveWorkload(c) => remove_object::<Workload>(writes, c).await,
        Command::RotateCredentials(c) => {
            let namespace = environment_namespace(watches, c)?;
            let api = Api::<ServiceIdentity>::namespaced(writes.client().clone(), &namespace);
            // A new request value is what asks the operator to rotate.
            let request = ulid::Ulid::generate().to_string();
            let mut attempt = 0;
            let written = loop {
                let current = api
                    .get_opt(&c.name)
                    .await
                    .map_err(|e| problem_of(e, "reading the ServiceIdentity"))?
                    .ok_or_else(|| object_not_found("ServiceIdentity", c))?;
                let next = again(&current, |s| {
                    s.spec.credentials.rotation_request = Some(request.clone())
                });
                // The operator writes the object too: read again on a conflict.
                match writes.apply(next).await {
                    Err(p) if changed_meanwhile(&p, &mut attempt) => continue,
                    written => break written?,
                }
            };
            Ok(object_awaited(
                "ServiceIdentity",
                namespace,
                c,
                written.as_ref(),
            ))
        }
        Command::OffboardTenant(c) => {
            if !writes.delete::<Tenant>(None, &c.tenant).await? {
                return Err(tenant_not_found(&c.tenant));
            }
            // A stream or query of this replica right after the answer
            // sees the tenant leaving, not Ready.
            if !writes.dry_run {
                until_seen(watches, |w| {
                    w.tenant(&c.tenant)
                        .is_none_or(|t| t.metadata.deletion_timestamp.is_some())
                })
                .await;
            }
            Ok(Awaited::Tenant {
                name: c.tenant.clone(),
                generation: None,
                gone: true,
            })
        }
    }
}

/// Longest wait for this replica's watch to show a command's write.
const SEEN_WITHIN: Duration = Duration::from_secs(2);

/// Waits, at most [`SEEN_WITHIN`], until this replica's watch shows what
/// `seen` looks for.
async fn until_seen(watches: &Watches, seen: impl Fn(&Watches) -> bool) {
    let mut changes = watches.changes();
    let wait = async {
        while !seen(watches) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(SEEN_WITHIN, wait).await;
}

fn invalid(field: &str, message: String) -> Problem {
    Problem::invalid(vec![FieldError {
        field: field.into(),
        message,
    }])
}

fn dedup(names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    merge(&mut out, names);
    out
}

fn merge(into: &mut Vec<String>, names: &[String]) {
    for name in names {
        if !into.contains(name) {
            into.push(name.clone());
        }
    }
}

/// Whether a write failed because the object changed since it was read
/// (its resourceVersion is the write's precondition): read and write
/// again, a few times.
fn changed_meanwhile(problem: &Problem, attempt: &mut u32) -> bool {
    *attempt += 1;
    problem.kind == ProblemKind::Conflict && *attempt < 4
}

/// Changes a Scope's spec (its grants or group mappings) as `change` says,
/// with the read resourceVersion as precondition, again on a conflict.
async fn change_scope(
    writes: &mut Writes,
    tenant: &str,
    scope: &str,
    change: impl Fn(&mut ossature_crds::ScopeSpec),
) -> Result<Awaited, Problem> {
    let mut attempt = 0;
    let written = loop {
        let current = get_scope(writes, tenant, scope)
            .await?
            .ok_or_else(|| scope_not_found(tenant, scope))?;
        let next = again(&current, |s| change(&mut s.spec));
        if next.spec.grants.len() > 64 || next.spec.group_mappings.len() > 64 {
            return Err(invalid(
                "role",
                format!("scope {scope} would have more than 64 grants or group mappings"),
            ));
        }
        if next.spec == current.spec {
            break None;
        }
        match writes.apply(next).await {
            Err(p) if changed_meanwhile(&p, &mut attempt) => continue,
            written => break written?,
        }
    };
    Ok(Awaited::Scope {
        tenant: tenant.to_string(),
        name: scope.to_string(),
        generation: written.and_then(|s| s.metadata.generation),
    })
}

/// The namespace of the environment an object command names; refused when
/// the tenant has no such environment.
fn environment_namespace(watches: &Watches, c: &impl EnvironmentNamed) -> Result<String, Problem> {
    let (tenant, environment) = c.place();
    if watches.tenant(tenant).is_none() {
        return Err(tenant_not_found(tenant));
    }
    if watches.environment(tenant, environment).is_none() {
        return Err(invalid(
            "environment",
            format!(
                "tenant {tenant} has no environment {environment}; create it first with createEnvironment"
            ),
        ));
    }
    Ok(ossature_model::TenantNames::new(tenant)
        .environment(environment)
        .namespace)
}

/// Commands that name an object in an environment.
trait EnvironmentNamed {
    fn place(&self) -> (&str, &str);
    fn name(&self) -> &str;
}

impl EnvironmentNamed for ApplyObject {
    fn place(&self) -> (&str, &str) {
        (&self.tenant, &self.environment)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl EnvironmentNamed for EnvironmentObject {
    fn place(&self) -> (&str, &str) {
        (&self.tenant, &self.environment)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

fn object_not_found(kind: &str, c: &impl EnvironmentNamed) -> Problem {
    let (tenant, environment) = c.place();
    Problem::new(
        ProblemKind::ObjectNotFound,
        format!(
            "tenant {tenant} has no {kind} {} in environment {environment}",
            c.name()
        ),
    )
}

fn object_awaited<K: kube::Resource>(
    kind: &str,
    namespace: String,
    c: &impl EnvironmentNamed,
    written: Option<&K>,
) -> Awaited {
    Awaited::Object {
        kind: kind.to_string(),
        namespace,
        name: c.name().to_string(),
        generation: written.and_then(|o| o.meta().generation),
        gone: false,
    }
}

/// Applies a Topic, ServiceIdentity or Workload with the caller's spec,
/// refusing a spec that does not fit the kind, field by field.
async fn apply_object<K: write::Writable>(
    watches: &Watches,
    writes: &mut Writes,
    c: &ApplyObject,
) -> Result<Awaited, Problem> {
    let namespace = environment_namespace(watches, c)?;
    let kind = K::kind(&()).to_string();
    let object = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "metadata": {"name": c.name, "namespace": namespace,
                     "labels": {TENANT_LABEL: c.tenant}},
        "spec": c.spec,
    });
    let object: K = serde_path_to_error::deserialize(object).map_err(|e| {
        invalid(
            &e.path().to_string(),
            format!(
                "{}; the spec is a {kind}'s, as its CRD describes it",
                e.inner()
            ),
        )
    })?;
    let read_back = serde_json::to_value(&object).unwrap_or_default();
    if let Some(path) = unknown_field(&c.spec, &read_back["spec"], "spec") {
        return Err(invalid(
            &path,
            format!("a {kind}'s spec has no field {path}; its CRD lists the fields (crds/yaml/)"),
        ));
    }
    let written = writes.apply(object).await?;
    Ok(object_awaited(&kind, namespace, c, written.as_ref()))
}

/// The first field of `given` that `kept` (the same, decoded into the
/// kind's type and encoded again) lost: one the kind does not have.
fn unknown_field(given: &Value, kept: &Value, at: &str) -> Option<String> {
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => given.iter().find_map(|(key, value)| {
            let path = format!("{at}.{key}");
            match kept.get(key) {
                None if !value.is_null() => Some(path),
                None => None,
                Some(kept) => unknown_field(value, kept, &path),
            }
        }),
        (Value::Array(given), Value::Array(kept)) => given
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (g, k))| unknown_field(g, k, &format!("{at}[{i}]"))),
        _ => None,
    }
}

async fn remove_object<K>(writes: &mut Writes, c: &EnvironmentObject) -> Result<Awaited, Problem>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let namespace = ossature_model::TenantNames::new(&c.tenant)
        .environment(&c.environment)
        .namespace;
    let kind = K::kind(&()).to_string();
    if !writes.delete::<K>(Some(&namespace), &c.name).await? {
        return Err(object_not_found(&kind, c));
    }
    Ok(Awaited::Object {
        kind,
        namespace,
        name: c.name.clone(),
        generation: None,
        gone: true,
    })
}

/// Refuses a grant of a role that is neither standard nor the tenant's.
fn require_role(watches: &Watches, tenant: &str, role: &str, field: &str) -> Result<(), Problem> {
    if api::validate::is_standard_role(role) || watches.tenant_role(tenant, role).is_some() {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "role {role} is neither Viewer, Editor, Admin nor one of tenant {tenant}'s roles; define it with defineRole first"
        ),
    ))
}

/// Checks a role definition against the policy catalog, with the tenant's
/// other roles as they are.
fn check_role(watches: &Watches, tenant: &str, role: &TenantRole) -> Result<(), Problem> {
    let name = role.name_any();
    let others = watches.tenant_roles_of(tenant);
    let (policies, roles) = ossature_policy::from_tenant_roles(
        others
            .iter()
            .map(|r| r.as_ref())
            .filter(|r| r.name_any() != name)
            .chain([role]),
    );
    ossature_policy::roles::permissions_of(&policies, &roles, &name)
        .map(|_| ())
        .map_err(|why| invalid("role", why))
}

/// The Environment of `definition`, labelled for its tenant and scope.
fn environment_object(tenant: &str, definition: &api::EnvironmentDefinition) -> Environment {
    let mut object = Environment::new(&definition.name, definition.to_spec());
    object.metadata.namespace = Some(tenant_namespace(tenant));
    let labels = object.labels_mut();
    labels.insert(TENANT_LABEL.into(), tenant.to_string());
    if let Some(scope) = &definition.scope {
        labels.insert(api::SCOPE_LABEL.into(), scope.clone());
    }
    object
}

fn tenant_awaited(tenant: &str, written: Option<&Tenant>) -> Awaited {
    Awaited::Tenant {
        name: tenant.to_string(),
        generation: written.and_then(|t| t.metadata.generation),
        gone: false,
    }
}

/// A condition, in words.
pub fn condition_view(c: &Condition) -> ConditionView {
    ConditionView {
        type_: c.type_.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: c.last_transition_time.0.to_string(),
    }
}

/// Where an object stands: its outcome once decided.
fn decided(
    conditions: &[Condition],
    observed: Option<i64>,
    generation: Option<i64>,
) -> Option<OutcomeState> {
    let current = match (observed, generation) {
        (Some(o), Some(g)) => o >= g,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !current {
        return None;
    }
    let has = |type_: &str, status: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    };
    if has(ossature_model::conditions::STALLED, "True") {
        Some(OutcomeState::Failed)
    } else if has(ossature_model::conditions::READY, "True") {
        Some(OutcomeState::Ready)
    } else {
        None
    }
}

/// The outcome of `awaited` now: decided or not, and the conditions.
fn observe(watches: &Watches, awaited: &Awaited) -> (Option<OutcomeState>, Vec<ConditionView>) {
    let view = |c: &[Condition]| c.iter().map(condition_view).collect::<Vec<_>>();
    match awaited {
        Awaited::Tenant {
            name,
            generation,
            gone,
        } => match watches.tenant(name) {
            None if *gone => (Some(OutcomeState::Deleted), Vec::new()),
            None => (None, Vec::new()),
            Some(t) => {
                let status = t.status.clone().unwrap_or_default();
                let state = if *gone {
                    None
                } else {
                    decided(&status.conditions, status.observed_generation, *generation)
                };
                (state, view(&status.conditions))
            }
        },
        Awaited::Scope {
            tenant,
            name,
            generation,
        } => match watches.scope(tenant, name) {
            None => (None, Vec::new()),
            Some(s) => {
                let status = s.status.clone().unwrap_or_default();
                (
                    decided(&status.conditions, status.observed_generation, *generation),
                    view(&status.conditions),
                )
            }
        },
        Awaited::Object {
            kind,
            namespace,
            name,
            generation,
            gone,
        } => observe_object(watches, kind, namespace, name, *generation, *gone),
        Awaited::Environment {
            tenant,
            name,
            generation,
        } => {
            let namespace = tenant_namespace(tenant);
            let found = watches
                .environments
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(&namespace));
            match found {
                None => (None, Vec::new()),
                Some(e) => {
                    let status = e.status.clone().unwrap_or_default();
                    (
                        decided(&status.conditions, status.observed_generation, *generation),
                        view(&status.conditions),
                    )
                }
            }
        }
    }
}

/// The outcome and conditions of a Topic, ServiceIdentity or Workload in
/// the watch, read generically from its status.
fn observe_object(
    watches: &Watches,
    kind: &str,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
    gone: bool,
) -> (Option<OutcomeState>, Vec<ConditionView>) {
    fn at<K: kube::Resource<DynamicType = ()>>(
        namespace: &str,
        name: &str,
    ) -> kube::runtime::reflector::ObjectRef<K> {
        kube::runtime::reflector::ObjectRef::new(name).within(namespace)
    }
    let found = match kind {
        "Topic" => watches
            .topics
            .get(&at(namespace, name))
            .map(|o| serde_json::to_value(&*o)),
        "ServiceIdentity" => watches
            .service_identities
            .get(&at(namespace, name))
            .map(|o| serde_json::to_value(&*o)),
        "Workload" => watches
            .workloads
            .get(&at(namespace, name))
            .map(|o| serde_json::to_value(&*o)),
        _ => None,
    };
    let Some(Ok(object)) = found else {
        return (gone.then_some(OutcomeState::Deleted), Vec::new());
    };
    let conditions: Vec<Condition> =
        serde_json::from_value(object["status"]["conditions"].clone()).unwrap_or_default();
    let observed = object["status"]["observedGeneration"].as_i64();
    let state = if gone {
        None
    } else {
        decided(&conditions, observed, generation)
    };
    (state, conditions.iter().map(condition_view).collect())
}

/// Waits, on the shared watch, until `awaited` is decided or `timeout` passes.
pub async fn wait_outcome(watches: &Watches, awaited: &Awaited, timeout: Duration) -> Outcome {
    let mut changes = watches.changes();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (state, conditions) = observe(watches, awaited);
        if let Some(state) = state {
            return Outcome { state, conditions };
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return Outcome { state: OutcomeState::TimedOut, conditions };
            },
            _ = tokio::time::sleep_until(deadline) => {
                return Outcome { state: OutcomeState::TimedOut, conditions };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_command_is_decoded_by_its_name_with_the_bad_field_named() {
        let ok = Command::decode("removeScope", &json!({"tenant": "acme", "scope": "eu"}));
        assert_eq!(ok.unwrap().unwrap().name(), "removeScope");
        assert!(Command::decode("dropDatabase", &json!({})).is_none());
        let bad = Command::decode(
            "addScope",
            &json!({"tenant": "acme", "scope": {"name": "eu", "displayName": "EU", "grants": [{"role": "Owner", "groups": ["g"]}]}}),
        )
        .unwrap()
        .unwrap();
        let refused = bad.check().unwrap_err();
        assert_eq!(refused.errors[0].field, "scope.grants[0].role");
        assert!(
            refused.errors[0].message.contains("is no role"),
            "{:?}",
            refused.errors
        );
        let unknown_field = Command::decode(
            "addScope",
            &json!({"tenant": "acme", "scope": {"name": "eu", "displayName": "EU", "owner": "x"}}),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(unknown_field.errors[0].field, "scope.owner");
        assert!(
            unknown_field.errors[0]
                .message
                .contains("unknown field `owner`")
        );
        let missing = Command::decode("offboardTenant", &json!({}))
            .unwrap()
            .unwrap_err();
        assert!(missing.errors[0].message.contains("missing field `tenant`"));
        // Fields in order, without their names, are no body.
        let listed = Command::decode("offboardTenant", &json!(["acme", true]))
            .unwrap()
            .unwrap_err();
        assert!(
            listed.errors[0].message.contains("JSON object"),
            "{listed:?}"
        );
        assert_eq!(NAMES.len(), 22);
    }

    fn condition(type_: &str, status: &str) -> Condition {
        serde_json::from_value(json!({
            "type": type_, "status": status, "reason": "R", "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_field_the_kind_does_not_have_is_found_however_deep() {
        let given = json!({"partitions": 2, "schema": {"type": "AVRO", "colour": "red"},
                           "grants": [{"a": 1}, {}]});
        let kept = json!({"partitions": 2, "schema": {"type": "AVRO"}, "persistence": "Persistent",
                          "grants": [{"a": 1}, {}]});
        assert_eq!(
            unknown_field(&given, &kept, "spec").as_deref(),
            Some("spec.schema.colour")
        );
        let fine = json!({"partitions": 2, "schema": null});
        assert_eq!(unknown_field(&fine, &kept, "spec"), None);
        let mut deep = given.clone();
        deep["schema"] = json!({"type": "AVRO"});
        deep["grants"][1] = json!({"b": 2});
        assert_eq!(
            unknown_field(&deep, &kept, "spec").as_deref(),
            Some("spec.grants[1].b")
        );
    }

    #[test]
    fn an_outcome_is_decided_only_at_the_generation_written() {
        let ready = [condition("Ready", "True")];
        assert_eq!(decided(&ready, Some(2), Some(2)), Some(OutcomeState::Ready));
        assert_eq!(decided(&ready, Some(1), Some(2)), None);
        let stalled = [condition("Ready", "False"), condition("Stalled", "True")];
        assert_eq!(
            decided(&stalled, Some(3), Some(2)),
            Some(OutcomeState::Failed)
        );
        let progressing = [condition("Ready", "False")];
        assert_eq!(decided(&progressing, Some(2), Some(2)), None);
        assert_eq!(decided(&ready, None, None), None);
    }
}
