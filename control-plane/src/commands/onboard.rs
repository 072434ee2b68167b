//! Onboarding a tenant: its namespace, Tenant, Scopes and Environments, in
//! two durable rounds when its idempotency key is new (the namespace while
//! the key is claimed, then the rest at once), else namespace and Tenant
//! first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{GetParams, ObjectMeta};
use kube::{Api, ResourceExt};
use ossature_crds::{Environment, Scope, Tenant};
use ossature_model::names::{TENANT_LABEL, tenant_namespace};

use super::write::{self, Writes, problem_of};
use super::{Awaited, Command, environment_object, tenant_awaited};
use crate::api::{ObjectChange, OnboardTenant, Operation};
use crate::problem::Problem;

/// What became of an onboarding's namespace while its key was claimed.
#[derive(Debug)]
pub enum Early {
    /// Not tried (a dry run, another command, a key used before) or not
    /// settled: the command writes it first, as usual.
    Unknown,
    /// Created then, as the command would write it.
    Created(ObjectChange),
    /// It was there already.
    Existed,
}

/// Returns once the apiserver's watch cache holds `namespace` as written
/// (a read at its resourceVersion waits for that): its admission of
/// creates in a namespace its cache has not seen yet sleeps 50 ms first
/// (NamespaceLifecycle), which was most of onboarding's slowest answers.
/// Best effort: on an error the creates only risk that wait.
async fn in_admissions_cache(client: &kube::Client, namespace: &Namespace) {
    let (Some(name), Some(version)) = (
        namespace.metadata.name.as_deref(),
        namespace.metadata.resource_version.as_deref(),
    ) else {
        return;
    };
    let _ = Api::<Namespace>::all(client.clone())
        .get_metadata_with(name, &GetParams::at(version))
        .await;
}

/// The namespace of `tenant`, labelled for it (the operator adopts it).
fn tenant_namespace_object(tenant: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(tenant_namespace(tenant)),
            labels: Some([(TENANT_LABEL.to_string(), tenant.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Early {
    /// Creates the namespace of an onboarding (not a dry run) while its
    /// key, never used before, is being claimed: one durable write fewer
    /// on the way to the answer. Only a create: an existing namespace is
    /// left as it is until the claim is won. A claim of an unused key is
    /// lost only to a request with the same key, so for the same tenant,
    /// running now: the namespace is the one it writes too.
    pub async fn create(
        client: &kube::Client,
        command: &Command,
        annotations: BTreeMap<String, String>,
    ) -> Early {
        let Command::OnboardTenant(c) = command else {
            return Early::Unknown;
        };
        if c.dry_run {
            return Early::Unknown;
        }
        let mut namespace = tenant_namespace_object(&c.tenant);
        namespace.metadata.annotations = Some(annotations);
        let params = kube::api::PostParams {
            field_manager: Some(write::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&params, &namespace)
            .await
        {
            Ok(created) => {
                in_admissions_cache(client, &created).await;
                Early::Created(ObjectChange {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                    namespace: None,
                    name: created.name_any(),
                    operation: Operation::Apply,
                    object: None,
                    note: None,
                })
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Early::Existed,
            // Whatever went wrong, the command meets it again, and says so.
            Err(_) => Early::Unknown,
        }
    }
}

pub(super) async fn onboard(
    c: &OnboardTenant,
    writes: &mut Writes,
    early: Early,
) -> Result<Awaited, Problem> {
    let namespace_name = tenant_namespace(&c.tenant);
    // A dry run cannot place objects in a namespace it only pretends to
    // create: it needs to know whether the namespace is there.
    if writes.dry_run {
        let exists = Api::<Namespace>::all(writes.client().clone())
            .get_opt(&namespace_name)
            .await
            .map_err(|e| problem_of(e, "reading the tenant's namespace"))?
            .is_some();
        if !exists {
            writes.creates_namespace(&namespace_name);
        }
    }
    let namespace = tenant_namespace_object(&c.tenant);
    let mut tenant = Tenant::new(&c.tenant, c.tenant_spec());
    tenant.labels_mut().extend(c.labels.clone());
    let scopes: Vec<Scope> = c
        .scopes
        .iter()
        .map(|scope| {
            let mut object = Scope::new(&scope.name, scope.to_spec());
            object.metadata.namespace = Some(namespace_name.clone());
            object
                .labels_mut()
                .insert(TENANT_LABEL.into(), c.tenant.clone());
            object
        })
        .collect();
    let environments: Vec<Environment> = c
        .environments
        .iter()
        .map(|e| environment_object(&c.tenant, e))
        .collect();
    let written = match early {
        // The namespace first (with the Tenant): what is in it needs it;
        // then its Scopes and Environments at once (not each other: the
        // operator waits for parents).
        Early::Unknown => {
            let namespace = async {
                let written = writes.apply_one(namespace).await;
                if let Ok((_, Some(namespace))) = &written {
                    in_admissions_cache(writes.client(), namespace).await;
                }
                written
            };
            let (namespace, tenant) = futures::join!(namespace, writes.apply_one(tenant));
            // Both recorded (one may have been written when the other failed).
            let namespace = writes.record(vec![namespace]);
            let written = writes.record(vec![tenant]);
            namespace?;
            let written = written?.pop().flatten();
            let (scopes, environments) =
                futures::join!(apply_each(writes, scopes), apply_each(writes, environments));
            let scopes = writes.record(scopes);
            let environments = writes.record(environments);
            scopes?;
            environments?;
            written
        }
        // The namespace is there: everything at once.
        early => {
            let namespace = match early {
                Early::Created(change) => {
                    writes.changes.push(change);
                    None
                }
                _ => Some(namespace),
            };
            let (namespace, tenant, scopes, environments) = futures::join!(
                async {
                    match namespace {
                        Some(n) => Some(writes.apply_one(n).await),
                        None => None,
                    }
                },
                writes.apply_one(tenant),
                apply_each(writes, scopes),
                apply_each(writes, environments),
            );
            let namespace = writes.record(namespace.into_iter().collect());
            let written = writes.record(vec![tenant]);
            let scopes = writes.record(scopes);
            let environments = writes.record(environments);
            namespace?;
            scopes?;
            environments?;
            written?.pop().flatten()
        }
    };
    Ok(tenant_awaited(&c.tenant, written.as_ref()))
}

/// Applies `objects` at once; each one's result, in order.
async fn apply_each<K: write::Writable>(
    writes: &Writes,
    objects: Vec<K>,
) -> Vec<Result<(ObjectChange, Option<K>), Problem>> {
    futures::future::join_all(objects.into_iter().map(|o| writes.apply_one(o))).await
}
