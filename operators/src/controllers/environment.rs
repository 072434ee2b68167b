//! The Environment controller: a namespace per tenant environment, and a
//! Pulsar namespace under the tenant with schema validation and retention.
//! An environment with a `ttl` is deleted, with all of it, when its time is up.
//!
//! The Environment lives in `tn-<tenant>`, its namespace is `tn-<tenant>--<env>`:
//! owner references cannot cross namespaces (the garbage collector deletes
//! such dependents), so what it owns carries its labels, and its finalizer
//! removes it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{DeletionPolicy, Environment, EnvironmentStatus, Tenant};
use ossature_model::conditions::{self, Outcome, is_stalled, reasons};
use ossature_model::environments::expiry;
use ossature_model::messaging::namespace_policy;
use ossature_model::names::{TenantNames, tenant_namespace, tenant_of};
use ossature_model::objects::namespace_objects;
use ossature_model::tenants::{backend_ready, retained};

use super::namespaces::{self, Owner, Removal};
use super::{Home, owning_tenant};
use crate::context::Context;
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/environment-cleanup";

impl Reconciled for Environment {
    const CONTROLLER: &'static str = "environment";
    const FINALIZER: &'static str = FINALIZER;
    /// Its Topics follow it.
    const FOLLOWED: bool = true;
    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, EnvironmentStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();

        let (tenant, owner) = match owning_tenant(ctx, &namespace, ("Environments", Home::Tenant), previous).await?
        {
            Ok(found) => found,
            Err(stalled) => return Ok(stalled),
        };
        let tenant = tenant.as_str();
        let names = TenantNames::new(tenant).environment(&name);
        let expires = expiry(self);
        let status = EnvironmentStatus {
            namespace: Some(names.namespace.clone()),
            pulsar_namespace: Some(names.pulsar_path.clone()),
            secrets_path: Some(names.secrets_prefix.clone()),
            expires_at: expires.map(Time),
            ..Default::default()
        };
        let mut plan = Plan::new(status);
        if let Some(expires) = expires {
            let left = expires.duration_since(Timestamp::now());
            if left <= SignedDuration::ZERO {
                plan.expired = Some(format!(
                    "ttl {} ran out at {expires}; deleting the environment and everything it provisioned",
                    self.spec.ttl.as_deref().unwrap_or_default()
                ));
                return Ok(plan);
            }
            // Wake up when it runs out, not at the next resync.
            plan.due_in =
                Some(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(200));
        }

        let objects = namespace_objects(&names.namespace, tenant, Some(&name), &self.spec.quotas);
        let owner_of_namespace = Owner::environment(tenant, &name);
        namespaces::step(&mut plan, ctx, objects, owner_of_namespace).await?;
        if plan.stalled.is_some() {
            return Ok(plan);
        }

        let what = format!("Pulsar namespace {}", names.pulsar_path);
        if backend_ready(&owner, conditions::MESSAGING_READY) {
            let policy = namespace_policy(&self.spec, &owner.spec.quotas);
            let pulsar_namespace = names.pulsar_namespace.clone();
            let tenant = tenant.to_string();
            plan.step(Step::new(conditions::MESSAGING_READY, what, async move {
                ctx.pulsar
                    .ensure_namespace(&tenant, &pulsar_namespace, &policy)
                    .await
                    .map(|c| vec![c])
            }));
        } else {
            plan.outcome(Outcome::failed(
                conditions::MESSAGING_READY,
                reasons::WAITING_FOR_TENANT,
                format!("{what} waits for tenant {tenant}'s Pulsar tenant"),
            ));
        }
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let Some(tenant) = tenant_of(&namespace) else {
            return Ok(Vec::new());
        };
        let names = TenantNames::new(tenant).environment(&name);
        let owner = ctx.find::<Tenant>(tenant).await?;
        let objects = namespace_objects(&names.namespace, tenant, Some(&name), &self.spec.quotas);
        let retain =
            self.spec.deletion_policy == DeletionPolicy::Retain || retained(owner.as_deref());
        let owner_of_namespace = Owner::environment(tenant, &name);
        let removal = namespaces::removal(ctx, &objects, owner_of_namespace, retain).await?;
        if retain {
            let rest = format!(" and Pulsar namespace {}", names.pulsar_path);
            return Ok(vec![namespaces::retained(&names.namespace, &rest)]);
        }
        ctx.pulsar
            .delete_namespace(tenant, &names.pulsar_namespace)
            .await?;
        // The Environment is gone only once its namespace is.
        if let Removal::Delete = removal {
            namespaces::delete(ctx, &objects).await?;
        }
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            format!(
                "Pulsar namespace {} and namespace {} removed",
                names.pulsar_path, names.namespace
            ),
        )])
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let stores = watch.stores.clone();
        namespaces::watch(
            controller,
            watch,
            |tenant, environment| {
                environment.map(|e| ObjectRef::new(e).within(&tenant_namespace(tenant)))
            },
            |stores, tenant, environment| {
                let environment = environment?;
                let owner = stores.get_in::<Environment>(&tenant_namespace(tenant), environment)?;
                let names = TenantNames::new(tenant).environment(environment);
                Some((
                    namespace_objects(
                        &names.namespace,
                        tenant,
                        Some(environment),
                        &owner.spec.quotas,
                    ),
                    is_stalled(owner.status.as_ref()),
                ))
            },
        )
        // Its tenant appearing, or its Pulsar tenant becoming ready.
        .watches_shared_stream(
            watch.changes::<Tenant>(),
            move |tenant: std::sync::Arc<Tenant>| {
                stores
                    .in_namespace::<Environment>(&tenant_namespace(&tenant.name_any()))
                    .into_iter()
                    .map(|e| ObjectRef::from_obj(&*e))
                    .collect::<Vec<_>>()
            },
        )
    }
}
