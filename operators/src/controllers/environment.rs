//! The Environment controller: a namespace per tenant environment, and a
//! Pulsar namespace under the tenant with schema validation and retention.
//! An environment with a `ttl` is deleted, with all of it, when its time is up.
//!
//! The Environment lives in `tn-<tenant>`, its namespace is `tn-<tenant>--<env>`:
//! owner references cannot cross namespaces (the garbage collector deletes
//! such dependents), so what it owns carries its labels, and its finalizer
//! removes it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{DeletionPolicy, Environment, EnvironmentKind, EnvironmentStatus, Tenant};

use super::{find_tenant, namespace_step, owning_tenant, tenant_of, tenant_selected};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired::{self, TenantNames};
use crate::kubernetes::{self, NamespaceOwner};
use crate::reconcile::{Error, Plan, Reconciled, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/environment-cleanup";

crate::object_status!(EnvironmentStatus);

/// When an environment with a ttl expires: its creation plus the ttl.
pub fn expiry(environment: &Environment) -> Option<Timestamp> {
    if environment.spec.kind != EnvironmentKind::Ephemeral {
        return None;
    }
    let ttl = desired::parse_ttl(environment.spec.ttl.as_deref()?)?;
    let created = environment.metadata.creation_timestamp.as_ref()?.0;
    created
        .checked_add(SignedDuration::try_from(ttl).ok()?)
        .ok()
}

impl Reconciled for Environment {
    const CONTROLLER: &'static str = "environment";
    const FINALIZER: &'static str = FINALIZER;
    type Status = EnvironmentStatus;

    fn status(&self) -> Option<&EnvironmentStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, environment: &Self) -> Api<Self> {
        Api::namespaced(client, &environment.namespace().unwrap_or_default())
    }

    fn selected(&self, ctx: &Context) -> bool {
        tenant_selected(self.metadata.namespace.as_deref(), ctx)
    }

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, EnvironmentStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();

        let (tenant, owner) = match owning_tenant(ctx, &namespace, "Environments", previous).await?
        {
            Ok(found) => found,
            Err(stalled) => return Ok(stalled),
        };
        let tenant = tenant.as_str();
        let names = TenantNames::new(tenant).environment(&name);
        let expires = expiry(self);
        let status = EnvironmentStatus {
            namespace: Some(names.namespace.clone()),
            pulsar_namespace: Some(format!("{tenant}/{}", names.pulsar_namespace)),
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

        let objects =
            desired::namespace_objects(&names.namespace, tenant, Some(&name), &self.spec.quotas);
        namespace_step(&mut plan, ctx, objects, tenant, Some(&name), None).await?;
        if plan.stalled.is_some() {
            return Ok(plan);
        }

        let what = format!("Pulsar namespace {tenant}/{}", names.pulsar_namespace);
        if super::tenant::backend_ready(&owner, conditions::MESSAGING_READY) {
            let policy = desired::namespace_policy(&self.spec);
            let pulsar_namespace = names.pulsar_namespace.clone();
            let tenant = tenant.to_string();
            plan.steps
                .push(Step::new(conditions::MESSAGING_READY, what, async move {
                    ctx.pulsar
                        .ensure_namespace(&tenant, &pulsar_namespace, &policy)
                        .await
                        .map(|c| vec![c])
                }));
        } else {
            plan.outcomes.push(Outcome::failed(
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
        let owner = find_tenant(ctx, tenant).await?;
        let objects =
            desired::namespace_objects(&names.namespace, tenant, Some(&name), &self.spec.quotas);
        let live = kubernetes::namespace(&ctx.client, &names.namespace, &ctx.calls).await?;
        let ours =
            kubernetes::namespace_owner(live.as_ref(), tenant, Some(&name)) == NamespaceOwner::Ours;
        if self.spec.deletion_policy == DeletionPolicy::Retain
            || super::tenant::retained(owner.as_deref())
        {
            if ours {
                kubernetes::release_namespace_objects(&ctx.client, &objects, &ctx.calls).await?;
            }
            return Ok(vec![event(
                EventType::Normal,
                "Retained",
                "Delete",
                format!(
                    "deletionPolicy is Retain: namespace {} (labelled {}=true, no longer managed) and Pulsar namespace {tenant}/{} are kept",
                    names.namespace,
                    desired::RETAINED_LABEL,
                    names.pulsar_namespace
                ),
            )]);
        }
        ctx.pulsar
            .delete_namespace(tenant, &names.pulsar_namespace)
            .await?;
        // Never a namespace that was not ours (a refused adoption).
        if ours {
            kubernetes::delete(
                &Api::<Namespace>::all(ctx.client.clone()),
                &names.namespace,
                &ctx.calls,
            )
            .await?;
        }
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            format!(
                "Pulsar namespace {tenant}/{} and namespace {} removed",
                names.pulsar_namespace, names.namespace
            ),
        )])
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let stores = watch.stores.clone();
        super::watch_namespace_objects(
            controller,
            watch,
            |tenant, environment| {
                environment.map(|e| ObjectRef::new(e).within(&format!("tn-{tenant}")))
            },
            |stores, tenant, environment| {
                let environment = environment?;
                let owner = stores.environments.get(
                    &ObjectRef::new(environment).within(&TenantNames::new(tenant).namespace),
                )?;
                let names = TenantNames::new(tenant).environment(environment);
                Some((
                    desired::namespace_objects(
                        &names.namespace,
                        tenant,
                        Some(environment),
                        &owner.spec.quotas,
                    ),
                    super::is_stalled(owner.status.as_ref()),
                ))
            },
        )
        // Its tenant appearing, or its Pulsar tenant becoming ready.
        .watches_shared_stream(
            watch.tenants.clone(),
            move |tenant: std::sync::Arc<Tenant>| {
                stores
                    .environments_in(&format!("tn-{}", tenant.name_any()))
                    .into_iter()
                    .map(|e| ObjectRef::from_obj(&*e))
                    .collect::<Vec<_>>()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn environment(kind: &str, ttl: Option<&str>) -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "pr-42", "namespace": "tn-acme",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"kind": kind, "ttl": ttl},
        }))
        .unwrap()
    }

    #[test]
    fn an_ephemeral_environment_expires_its_ttl_after_creation() {
        assert_eq!(
            expiry(&environment("Ephemeral", Some("1h30m"))).map(|t| t.to_string()),
            Some("2026-01-01T01:30:00Z".to_string())
        );
        assert_eq!(expiry(&environment("Ephemeral", None)), None);
        assert_eq!(
            expiry(&environment("Staging", Some("1h"))),
            None,
            "only Ephemeral environments expire"
        );
    }
}
