//! Writes to the apiserver: server-side apply under the control plane's own
//! field manager, each object annotated with the invocation; or, in a dry
//! run, the apiserver's own dry run (admission, CEL, quota, RBAC), whose
//! result is what the command answers.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{ObjectChange, Operation};
use crate::problem::{FieldError, Problem, ProblemKind};

/// What a command can write: any object the apiserver serves, as JSON.
pub trait Writable:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug
{
}

impl<K> Writable for K where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug
{
}

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ossature-control-plane";

pub struct Writes {
    client: Client,
    pub dry_run: bool,
    annotations: BTreeMap<String, String>,
    /// Namespaces this command creates: in a dry run, objects inside them
    /// cannot be dry-run yet.
    new_namespaces: Vec<String>,
    pub changes: Vec<ObjectChange>,
}

/// The problem of an apiserver error while `doing` something.
pub fn problem_of(e: kube::Error, doing: &str) -> Problem {
    match e {
        kube::Error::Api(status) if crate::rbac::refused_by_rbac(&status) => {
            let detail = crate::rbac::lacking(doing, &status);
            tracing::error!("{detail}");
            Problem::new(ProblemKind::Internal, detail)
        }
        kube::Error::Api(status) => {
            let errors: Vec<FieldError> = status
                .details
                .as_ref()
                .map(|d| {
                    d.causes
                        .iter()
                        .map(|c| FieldError {
                            field: c.field.clone(),
                            message: c.message.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let kind = match status.code {
                404 => ProblemKind::ObjectNotFound,
                409 => ProblemKind::Conflict,
                400 | 403 | 422 => ProblemKind::RefusedByApiserver,
                429 | 500..=599 => ProblemKind::Unavailable,
                _ => ProblemKind::RefusedByApiserver,
            };
            Problem {
                errors,
                ..Problem::new(kind, format!("{doing}: {}", status.message))
            }
        }
        other => {
            tracing::warn!("{doing}: {other}");
            Problem::new(
                ProblemKind::Unavailable,
                format!("{doing}: the Kubernetes API cannot be reached now; try again"),
            )
        }
    }
}

/// The object without what only the apiserver keeps.
fn shown(mut value: Value) -> Value {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    value
}

impl Writes {
    pub fn new(client: Client, dry_run: bool, annotations: BTreeMap<String, String>) -> Self {
        Writes {
            client,
            dry_run,
            annotations,
            new_namespaces: Vec::new(),
            changes: Vec::new(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Notes that this command creates `namespace`.
    pub fn creates_namespace(&mut self, namespace: &str) {
        self.new_namespaces.push(namespace.to_string());
    }

    /// The API of `K`'s objects, whichever its scope.
    fn api<K>(&self, namespace: Option<&str>) -> Api<DynamicObject>
    where
        K: Resource<DynamicType = ()>,
    {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies `object` (its `resourceVersion`, when set, is a precondition);
    /// what the apiserver made of it.
    pub async fn apply<K: Writable>(&mut self, object: K) -> Result<Option<K>, Problem> {
        let (change, written) = self.apply_one(object).await?;
        self.changes.push(change);
        Ok(written)
    }

    /// Records what concurrent applies made, in their order; the first
    /// failure, if any.
    pub fn record<K>(
        &mut self,
        applied: Vec<Result<(ObjectChange, Option<K>), Problem>>,
    ) -> Result<Vec<Option<K>>, Problem> {
        let mut written = Vec::new();
        let mut failure = None;
        for result in applied {
            match result {
                Ok((change, object)) => {
                    self.changes.push(change);
                    written.push(object);
                }
                Err(problem) => {
                    failure.get_or_insert(problem);
                }
            }
        }
        match failure {
            Some(problem) => Err(problem),
            None => Ok(written),
        }
    }

    /// One apply, recorded by the caller.
    pub async fn apply_one<K: Writable>(
        &self,
        mut object: K,
    ) -> Result<(ObjectChange, Option<K>), Problem> {
        object.annotations_mut().extend(self.annotations.clone());
        object.meta_mut().managed_fields = None;
        let name = object.name_any();
        let namespace = object.namespace();
        let kind = K::kind(&()).to_string();
        let api_version = K::api_version(&()).to_string();
        let mut body = serde_json::to_value(&object).map_err(|e| {
            Problem::new(
                ProblemKind::Internal,
                format!("encoding {kind} {name}: {e}"),
            )
        })?;
        if let Some(map) = body.as_object_mut() {
            map.remove("status");
            map.insert("apiVersion".into(), api_version.clone().into());
            map.insert("kind".into(), kind.clone().into());
        }
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        if self.dry_run {
            params = params.dry_run();
        }
        let mut change = ObjectChange {
            api_version,
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            operation: Operation::Apply,
            object: None,
            note: None,
        };
        let doing = format!("applying {kind} {name}");
        let api = self.api::<K>(namespace.as_deref());
        match api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(written) => {
                let written = serde_json::to_value(&written).unwrap_or_default();
                if self.dry_run {
                    change.object = Some(shown(written.clone()));
                }
                Ok((change, serde_json::from_value(written).ok()))
            }
            Err(kube::Error::Api(status))
                if self.dry_run
                    && status.code == 404
                    && namespace
                        .as_ref()
                        .is_some_and(|ns| self.new_namespaces.contains(ns)) =>
            {
                change.object = Some(shown(body));
                change.note = Some(format!(
                    "not dry-run by the apiserver: its namespace {} is created by this command; the object is shown as it would be sent",
                    namespace.unwrap_or_default()
                ));
                Ok((change, None))
            }
            Err(e) => Err(problem_of(e, &doing)),
        }
    }

    /// Deletes an object; false when it was not there.
    pub async fn delete<K>(&mut self, namespace: Option<&str>, name: &str) -> Result<bool, Problem>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let kind = K::kind(&()).to_string();
        let params = DeleteParams {
            dry_run: self.dry_run,
            ..Default::default()
        };
        let api = self.api::<K>(namespace);
        match api.delete(name, &params).await {
            Ok(_) => {
                self.changes.push(ObjectChange {
                    api_version: K::api_version(&()).to_string(),
                    kind,
                    namespace: namespace.map(String::from),
                    name: name.to_string(),
                    operation: Operation::Delete,
                    object: None,
                    note: None,
                });
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(problem_of(e, &format!("deleting {kind} {name}"))),
        }
    }
}
