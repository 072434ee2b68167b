//! The authorizer: tenants' data in, one Rego decision per request out.
//!
//! The policy is compiled once into a program of regorus' virtual machine
//! (three to four times faster than its tree interpreter on these rules).
//! Each tenant's index is one data document, replaced when the tenant's
//! data changes; a decision runs the program in a fresh machine over the
//! requested tenant's document (shared, not copied), so decisions run in
//! parallel with no lock held while they evaluate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::{Engine, Value};
use serde::{Deserialize, Serialize};

use crate::catalog::{Level, RESOURCES};
use crate::problems::Problems;
use crate::roles::{Permission, Policy, Resolved, Role, is_dns_label, standard_policies};
use crate::tenant::{TenantData, TenantIndex};

const POLICY: &str = include_str!("authz.rego");
const DECISION: &str = "data.ossature.authz.decision";
const PERMISSIONS: &str = "data.ossature.authz.permissions";
/// A decision takes a few thousand steps; this bounds one that data made
/// pathological, which is then refused with a reason.
const MAX_INSTRUCTIONS: usize = 2_000_000;

/// Who is calling, as authentication established it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Caller {
    /// The user's or service account's name, as its token carries it.
    pub subject: String,
    pub kind: CallerKind,
    /// The tenant the caller's token belongs to; none for a platform operator
    /// outside every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Groups from the token, including the identity provider's.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Set only by authentication, for members of the platform operators'
    /// group: they may do anything, and reasons say so.
    #[serde(default)]
    pub platform_operator: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallerKind {
    User,
    ServiceAccount,
}

impl CallerKind {
    fn key(self) -> &'static str {
        match self {
            CallerKind::User => "user",
            CallerKind::ServiceAccount => "serviceAccount",
        }
    }
}

/// One question: may the caller do `action` on `resource` of `tenant` in
/// `scope`?
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    pub caller: Caller,
    pub resource: String,
    pub action: String,
    /// The tenant acted on; none for platform-wide actions (listing tenants).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The scope the resource is in; none for the tenant's root.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The answer, with the reason recorded in the audit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub allowed: bool,
    /// In words: the role, scope and grant that allowed it, or why nothing did.
    pub reason: String,
    /// What allowed it, for the audit record and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Basis {
    PlatformOperator,
    #[serde(rename_all = "camelCase")]
    Grant {
        role: String,
        /// None for the tenant's root.
        scope: Option<String>,
        grant: String,
        via: String,
        policies: Vec<String>,
    },
}

/// What the caller may do in one place, for a front end to hide the rest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    pub permissions: Vec<Permission>,
    /// The roles they come from, or why there are none.
    pub reason: String,
}

/// The policies and permissions of a set of roles.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolePermissions {
    pub roles: Vec<RoleSummary>,
    /// Roles asked for that the tenant does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleSummary {
    pub name: String,
    pub standard: bool,
    pub description: String,
    pub policies: Vec<Policy>,
    /// Every permission of the role, each once.
    pub permissions: Vec<Permission>,
}

/// What loading a tenant's data did.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Loaded {
    /// (subject, role, scope) bindings the decisions now use.
    pub bindings: usize,
    /// Parts left out because they are invalid: they grant nothing.
    pub problems: Problems,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    #[error(
        "tenant name {0:?} must be lowercase letters, digits and '-', starting with a letter, at most 63 characters"
    )]
    TenantName(String),
    /// The policy or data did not load into the engine: a bug, not bad input.
    #[error("the authorization engine refused {what}: {message}")]
    Engine { what: &'static str, message: String },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::TenantName(_) => "InvalidTenantName",
            Error::Engine { .. } => "EngineError",
        }
    }
}

fn engine_error<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Engine {
        what,
        message: e.to_string(),
    }
}

struct TenantEntry {
    /// The catalog and the tenant's index, as the policy reads them.
    document: Value,
    /// Roles resolved to permissions, for the role queries.
    roles: Arc<Resolved>,
    data: TenantData,
}

/// The standard roles resolved, once: every tenant without roles of its
/// own shares them (with 10,000 tenants, copies would take most of the
/// memory).
struct Standard {
    resolved: Arc<Resolved>,
    value: Value,
}

/// Decides requests of every tenant. `Send + Sync`: share one behind an
/// `Arc`; decisions run in parallel and a data change only swaps one
/// tenant's entry.
pub struct Authorizer {
    program: Arc<Program>,
    /// The catalog alone: the document of requests of tenants without data.
    catalog: Value,
    standard: Standard,
    tenants: RwLock<HashMap<String, Arc<TenantEntry>>>,
}

impl Authorizer {
    pub fn new() -> Result<Self, Error> {
        let mut engine = Engine::new();
        engine
            .add_policy("authz.rego".to_string(), POLICY.to_string())
            .map_err(engine_error("the policy"))?;
        let compiled = engine
            .compile_with_entrypoint(&DECISION.into())
            .map_err(engine_error("the policy"))?;
        let program = Compiler::compile_from_policy(&compiled, &[DECISION, PERMISSIONS])
            .map_err(engine_error("the policy"))?;
        let resolved = crate::roles::resolve(&[], &[], &mut Problems::default());
        let value = serde_json::to_value(&resolved).map_err(engine_error("the standard roles"))?;
        Ok(Self {
            program,
            catalog: document(catalog_value(), None),
            standard: Standard {
                resolved: Arc::new(resolved),
                value: Value::from(value),
            },
            tenants: RwLock::default(),
        })
    }

    /// Replaces everything known of `tenant`. Invalid parts are left out
    /// (they grant nothing) and returned as problems.
    pub fn set_tenant(&self, tenant: &str, data: TenantData) -> Result<Loaded, Error> {
        let (entry, loaded) = self.entry_of(tenant, data)?;
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_string(), entry);
        Ok(loaded)
    }

    /// Replaces every tenant at once, as after a watch's relist: tenants
    /// left out are forgotten. Nothing changes when a tenant name is invalid.
    pub fn replace_all(
        &self,
        tenants: impl IntoIterator<Item = (String, TenantData)>,
    ) -> Result<BTreeMap<String, Loaded>, Error> {
        let mut entries = HashMap::new();
        let mut report = BTreeMap::new();
        for (tenant, data) in tenants {
            let (entry, loaded) = self.entry_of(&tenant, data)?;
            entries.insert(tenant.clone(), entry);
            report.insert(tenant, loaded);
        }
        *self.tenants.write().unwrap_or_else(PoisonError::into_inner) = entries;
        Ok(report)
    }

    /// Indexes one tenant's data into the document decisions read.
    fn entry_of(
        &self,
        tenant: &str,
        data: TenantData,
    ) -> Result<(Arc<TenantEntry>, Loaded), Error> {
        if !is_dns_label(tenant) {
            return Err(Error::TenantName(tenant.to_string()));
        }
        let (index, problems) = TenantIndex::build(tenant, &data);
        let mut tenant_value =
            Value::from(serde_json::to_value(&index).map_err(engine_error("the tenant's data"))?);
        let standard_only = data.policies.is_empty() && data.roles.is_empty();
        let (roles, roles_value) = if standard_only {
            (self.standard.resolved.clone(), self.standard.value.clone())
        } else {
            let value =
                serde_json::to_value(&index.roles).map_err(engine_error("the tenant's roles"))?;
            (Arc::new(index.roles), Value::from(value))
        };
        tenant_value
            .as_object_mut()
            .map_err(engine_error("the tenant's data"))?
            .insert(text("roles"), roles_value);
        let loaded = Loaded {
            bindings: index.binding_count,
            problems,
        };
        let entry = Arc::new(TenantEntry {
            document: document(self.catalog["catalog"].clone(), Some(tenant_value)),
            roles,
            data,
        });
        Ok((entry, loaded))
    }

    /// Forgets `tenant`: its callers are then refused everything.
    pub fn remove_tenant(&self, tenant: &str) -> bool {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant)
            .is_some()
    }

    /// The data `tenant` was last loaded with.
    pub fn tenant_data(&self, tenant: &str) -> Option<TenantData> {
        self.entry(tenant).map(|e| e.data.clone())
    }

    pub fn tenants(&self) -> usize {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn entry(&self, tenant: &str) -> Option<Arc<TenantEntry>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Runs `entry_point` over `tenant`'s document (the catalog alone for
    /// a tenant without data).
    fn evaluate(
        &self,
        tenant: Option<&str>,
        input: Value,
        entry_point: &str,
    ) -> Result<Value, String> {
        let entry = tenant.and_then(|t| self.entry(t));
        let document = entry.as_ref().map_or(&self.catalog, |e| &e.document);
        let mut vm = RegoVM::new();
        vm.load_program(Arc::clone(&self.program));
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_data(document.clone()).map_err(|e| e.to_string())?;
        vm.set_input(input);
        vm.execute_entry_point_by_name(entry_point)
            .map_err(|e| e.to_string())
    }

    /// Decides one request. Never fails: an evaluation error is a refusal
    /// whose reason says so.
    pub fn decide(&self, request: &Request) -> Decision {
        let input = input(
            &request.caller,
            request.tenant.as_deref(),
            request.scope.as_deref(),
            Some((&request.resource, &request.action)),
        );
        match self.evaluate(request.tenant.as_deref(), input, DECISION) {
            Ok(value) => decision(&value).unwrap_or_else(|| Decision {
                allowed: false,
                reason: format!("denied: the policy gave no decision ({value})"),
                basis: None,
            }),
            Err(e) => Decision {
                allowed: false,
                reason: format!("denied: the policy failed: {e}"),
                basis: None,
            },
        }
    }

    /// Every action-resource the caller may do in `scope` of `tenant` (none
    /// for the tenant's root), with the roles they come from.
    pub fn permissions(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        scope: Option<&str>,
    ) -> Permissions {
        let value = match self.evaluate(tenant, input(caller, tenant, scope, None), PERMISSIONS) {
            Ok(value) => value,
            Err(e) => {
                return Permissions {
                    permissions: vec![],
                    reason: format!("the policy failed: {e}"),
                };
            }
        };
        let mut permissions: Vec<Permission> = value["permissions"]
            .as_set()
            .map(|set| {
                set.iter()
                    .filter_map(|pair| {
                        Some(Permission::new(
                            pair[0].as_string().ok()?,
                            pair[1].as_string().ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        permissions.sort();
        Permissions {
            permissions,
            reason: value["reason"]
                .as_string()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        }
    }

    /// The policies and permissions of `roles` in `tenant` (standard roles
    /// for a tenant without data), as a front end shows them.
    pub fn role_permissions(&self, tenant: &str, roles: &[String]) -> RolePermissions {
        let entry = self.entry(tenant);
        let standard;
        let (resolved, own_policies, own_roles): (&Resolved, &[Policy], &[Role]) = match &entry {
            Some(entry) => (
                entry.roles.as_ref(),
                &entry.data.policies,
                &entry.data.roles,
            ),
            None => {
                let mut ignored = Problems::default();
                standard = crate::roles::resolve(&[], &[], &mut ignored);
                (&standard, &[], &[])
            }
        };
        let policies: BTreeMap<String, Policy> = standard_policies()
            .into_iter()
            .chain(own_policies.iter().cloned())
            .map(|p| (p.name.clone(), p))
            .collect();
        let standard_roles = crate::roles::standard_roles();
        let mut summaries = Vec::new();
        let mut unknown = Vec::new();
        for name in roles {
            let Some(permissions) = resolved.get(name) else {
                unknown.push(name.clone());
                continue;
            };
            let definition = standard_roles
                .iter()
                .map(|r| (r, true))
                .chain(own_roles.iter().map(|r| (r, false)))
                .find(|(r, _)| &r.name == name);
            let Some((definition, standard)) = definition else {
                unknown.push(name.clone());
                continue;
            };
            let mut flat: Vec<Permission> = permissions
                .iter()
                .flat_map(|(resource, actions)| {
                    actions.keys().map(|a| Permission::new(resource, a))
                })
                .collect();
            flat.sort();
            summaries.push(RoleSummary {
                name: name.clone(),
                standard,
                description: definition.description.clone(),
                policies: definition
                    .policies
                    .iter()
                    .filter_map(|p| policies.get(p).cloned())
                    .collect(),
                permissions: flat,
            });
        }
        RolePermissions {
            roles: summaries,
            unknown,
        }
    }
}

/// The data document: the catalog, and the tenant's index when it has one.
fn document(catalog: Value, tenant: Option<Value>) -> Value {
    let mut fields = BTreeMap::new();
    fields.insert(text("catalog"), catalog);
    if let Some(tenant) = tenant {
        fields.insert(text("tenant"), tenant);
    }
    Value::from(fields)
}

/// The catalog as the policy reads it: resource -> level and actions.
fn catalog_value() -> Value {
    let catalog: serde_json::Map<String, serde_json::Value> = RESOURCES
        .iter()
        .map(|resource| {
            let actions: serde_json::Map<String, serde_json::Value> = resource
                .actions
                .iter()
                .map(|a| {
                    (
                        a.name.to_string(),
                        serde_json::json!({ "platformOnly": a.platform_only }),
                    )
                })
                .collect();
            let level = match resource.level {
                Level::Tenant => "tenant",
                Level::Scope => "scope",
            };
            (
                resource.name.to_string(),
                serde_json::json!({ "level": level, "actions": actions }),
            )
        })
        .collect();
    Value::from(serde_json::Value::Object(catalog))
}

fn text(s: &str) -> Value {
    Value::from(s)
}

/// The input document; absent tenant and scope are `""`.
fn input(
    caller: &Caller,
    tenant: Option<&str>,
    scope: Option<&str>,
    asked: Option<(&str, &str)>,
) -> Value {
    let mut caller_fields = BTreeMap::new();
    caller_fields.insert(text("subject"), text(&caller.subject));
    caller_fields.insert(text("kind"), text(caller.kind.key()));
    caller_fields.insert(
        text("tenant"),
        text(caller.tenant.as_deref().unwrap_or_default()),
    );
    caller_fields.insert(
        text("groups"),
        Value::from(caller.groups.iter().map(|g| text(g)).collect::<Vec<_>>()),
    );
    caller_fields.insert(
        text("platformOperator"),
        Value::from(caller.platform_operator),
    );
    let mut fields = BTreeMap::new();
    fields.insert(text("caller"), Value::from(caller_fields));
    fields.insert(text("tenant"), text(tenant.unwrap_or_default()));
    fields.insert(text("scope"), text(scope.unwrap_or_default()));
    if let Some((resource, action)) = asked {
        fields.insert(text("resource"), text(resource));
        fields.insert(text("action"), text(action));
    }
    Value::from(fields)
}

fn string_of(value: &Value) -> Option<String> {
    value.as_string().ok().map(|s| s.to_string())
}

fn decision(value: &Value) -> Option<Decision> {
    let allowed = *value["allowed"].as_bool().ok()?;
    let reason = string_of(&value["reason"])?;
    let basis = &value["basis"];
    let basis = if basis == &Value::Undefined {
        None
    } else if basis["platformOperator"] == Value::from(true) {
        Some(Basis::PlatformOperator)
    } else {
        let scope = string_of(&basis["scope"])?;
        Some(Basis::Grant {
            role: string_of(&basis["role"])?,
            scope: (!scope.is_empty()).then_some(scope),
            grant: string_of(&basis["grant"])?,
            via: string_of(&basis["via"])?,
            policies: basis["policies"]
                .as_array()
                .ok()?
                .iter()
                .filter_map(string_of)
                .collect(),
        })
    };
    Some(Decision {
        allowed,
        reason,
        basis,
    })
}
