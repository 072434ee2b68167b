//! The Workload controller: a product service run from one of four
//! templates. It waits for its ServiceIdentity's ServiceAccount and Secret
//! (that controller makes them; this one mounts them), and, for an event
//! processor or sink, for its Topic; it makes the subscription before the
//! consumers start, then applies the Deployment (its pod template carries
//! the secrets' hash, so new secrets roll it out), Service, NetworkPolicy,
//! a PodDisruptionBudget with more than one replica, and the autoscaler of
//! a scaled one: a KEDA ScaledObject when KEDA's CRDs are installed, an HPA
//! otherwise. Everything it writes is owned by the Workload, so deleting
//! the Workload deletes it; what leaves the desired set is deleted at once.
//!
//! The subscription stays in Pulsar when the Workload goes: it holds the
//! messages not yet consumed, which a Workload made again (renamed, moved
//! by a GitOps tool) takes up; the Topic's deletion removes it.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::core::PartialObjectMeta;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use ossature_crds::{ServiceIdentity, Topic, Workload, WorkloadStatus};
use ossature_model::conditions::{
    DEPLOYMENT_READY, MESSAGING_READY, Outcome, SCALING_READY, SECRETS_READY, reasons,
};
use ossature_model::names::{FIELD_MANAGER, MANAGED_BY, environment_of};
use ossature_model::workloads::{
    Autoscaler, Replicas, Scaler, WorkloadInput, WorkloadObjects, availability, desired,
    identity_of, subscribed_topic, trigger_authentication_name,
};

use crate::adapters::{Backend, Change, Failure, Verb};
use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Report, Step, WatchContext};

pub const FINALIZER: &str = "ossature.dev/workload-cleanup";
/// The CRD whose presence says KEDA scales workloads.
const KEDA_CRD: &str = "scaledobjects.keda.sh";

fn keda_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn scaled_objects() -> ApiResource {
    keda_resource("ScaledObject", "scaledobjects")
}

fn trigger_authentications() -> ApiResource {
    keda_resource("TriggerAuthentication", "triggerauthentications")
}

impl Reconciled for Workload {
    const CONTROLLER: &'static str = "workload";
    const FINALIZER: &'static str = FINALIZER;

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, WorkloadStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let previous = self.status.clone().unwrap_or_default();
        let Some((tenant, _)) = environment_of(&namespace) else {
            return Ok(Plan::stalled(
                previous,
                reasons::NOT_IN_ENVIRONMENT_NAMESPACE,
                format!(
                    "namespace {namespace} is not an environment namespace; create Workloads in tn-<tenant>--<environment>, beside their ServiceIdentity"
                ),
            ));
        };
        if ctx.find::<ossature_crds::Tenant>(tenant).await?.is_none() {
            return Ok(Plan::stalled(
                previous,
                reasons::TENANT_NOT_FOUND,
                format!("tenant {tenant} does not exist; create it (or apply its file) first"),
            ));
        }
        let mut plan = Plan::new(previous.clone());

        let service = &self.spec.service_identity;
        let found = ctx.stores.get_in::<ServiceIdentity>(&namespace, service);
        let identity = match identity_of(found.as_deref(), service) {
            Ok(identity) => identity,
            Err(why) => {
                plan.outcome(Outcome::failed(
                    SECRETS_READY,
                    reasons::WAITING_FOR_SERVICE_IDENTITY,
                    why,
                ));
                plan.outcome(Outcome::failed(
                    DEPLOYMENT_READY,
                    reasons::WAITING_FOR_SERVICE_IDENTITY,
                    format!(
                        "Deployment {name} waits for the ServiceAccount and secrets of ServiceIdentity {service}"
                    ),
                ));
                return Ok(plan);
            }
        };
        plan.outcome(Outcome::ready(
            SECRETS_READY,
            format!(
                "Secret {} of ServiceIdentity {service} is mounted at {}",
                identity.secret_name,
                ossature_model::workloads::SECRETS_DIR
            ),
        ));

        let subscribed = match &self.spec.subscription {
            None => None,
            Some(subscription) => {
                let topic = ctx.stores.get_in::<Topic>(&namespace, &subscription.topic);
                match subscribed_topic(topic.as_deref(), &subscription.topic) {
                    Ok(subscribed) => Some(subscribed),
                    Err((reason, why)) => {
                        plan.outcome(Outcome::failed(MESSAGING_READY, reason, why));
                        plan.outcome(Outcome::failed(
                            DEPLOYMENT_READY,
                            reason,
                            format!(
                                "Deployment {name} waits for subscription {} of Topic {}: its consumers start once it exists",
                                subscription.name, subscription.topic
                            ),
                        ));
                        return Ok(plan);
                    }
                }
            }
        };

        let keda = keda_installed(ctx).await?;
        let autoscaler = ctx.settings.autoscaler.unwrap_or(if keda {
            Autoscaler::Keda
        } else {
            Autoscaler::Hpa
        });
        let Some(names) = identity.names(&namespace, service) else {
            return Ok(Plan::stalled(
                previous,
                reasons::NOT_IN_ENVIRONMENT_NAMESPACE,
                format!("namespace {namespace} is not an environment namespace"),
            ));
        };
        let objects = desired(&WorkloadInput {
            workload: self,
            service: &names,
            service_id: &identity.id,
            secrets_hash: &identity.secrets_hash,
            subscribed: subscribed.as_ref(),
            autoscaler,
            pulsar_admin_url: ctx.pulsar.admin_url(),
        });
        let objects = match objects {
            Ok(objects) => objects,
            Err(refused) => {
                return Ok(Plan::stalled(
                    previous,
                    reasons::INVALID_SPEC,
                    format!("the workload's objects cannot be made: {refused:?}"),
                ));
            }
        };
        let Some(owner) = self.controller_owner_ref(&()) else {
            return Ok(Plan::stalled(
                previous,
                reasons::INVALID_SPEC,
                "the workload has no uid yet",
            ));
        };
        plan.status.autoscaler = match &objects.scaler {
            Some(Scaler::Keda { .. }) => Some("KEDA".into()),
            Some(Scaler::Hpa(_)) => Some("HPA".into()),
            None => None,
        };

        // The consumers' subscription first: what is published from then on
        // waits for them.
        let consumes = match (&self.spec.subscription, subscribed) {
            (Some(subscription), Some(subscribed)) => {
                let topic = subscribed.topic;
                let what = format!("subscription {} of topic {topic}", subscription.name);
                if topic.persistent {
                    let subscription = subscription.name.clone();
                    plan.step(Step::new(MESSAGING_READY, what, async move {
                        let change = ctx.pulsar.ensure_subscription(&topic, &subscription).await?;
                        Ok::<_, Failure>(vec![change])
                    }));
                } else {
                    plan.outcome(Outcome::ready(
                        MESSAGING_READY,
                        format!(
                            "{what}: a non-persistent topic keeps no subscription before its consumers connect"
                        ),
                    ));
                }
                true
            }
            _ => false,
        };
        let after = |step: Step<'a, WorkloadStatus>| {
            if consumes {
                step.after(
                    &[MESSAGING_READY],
                    reasons::PROGRESSING,
                    "waits for the subscription its consumers read",
                )
            } else {
                step
            }
        };

        let WorkloadObjects {
            deployment,
            service,
            network_policy,
            disruption_budget,
            scaler,
            replicas,
        } = objects;
        let owned = Owned {
            namespace: namespace.clone(),
            name: name.clone(),
            owner,
        };
        let running = Running {
            deployment,
            service,
            network_policy,
            disruption_budget,
            replicas,
        };
        let deploy_owned = owned.clone();
        plan.step(after(Step::reporting(
            DEPLOYMENT_READY,
            format!("Deployment {name}"),
            async move { deploy(ctx, &deploy_owned, running).await },
        )));
        let what = match &scaler {
            Some(Scaler::Keda { .. }) => format!("ScaledObject {name}"),
            Some(Scaler::Hpa(_)) => format!("HorizontalPodAutoscaler {name}"),
            None => format!("autoscaler of {name}"),
        };
        plan.step(after(Step::reporting(SCALING_READY, what, async move {
            scale(ctx, &owned, scaler, replicas, keda).await
        })));
        Ok(plan)
    }

    /// Nothing outside Kubernetes is removed (the subscription keeps its
    /// messages, see above); the garbage collector deletes what the
    /// Workload owns.
    async fn cleanup<'a>(
        &'a self,
        _ctx: &'a Context,
    ) -> Result<Vec<kube::runtime::events::Event>, Error> {
        Ok(Vec::new())
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        // Its Deployments (their availability), as metadata: a Deployment's
        // changes are what matter, not its whole body in memory.
        let deployments = watcher(
            Api::<PartialObjectMeta<Deployment>>::all(watch.client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={},app.kubernetes.io/component",
                MANAGED_BY.0, MANAGED_BY.1
            )),
        )
        .default_backoff()
        .touched_objects();
        let (by_topic, by_identity) = (watch.stores.clone(), watch.stores.clone());
        controller
            .owns_stream(deployments)
            // Its Topic becoming Ready, or growing partitions.
            .watches_shared_stream(watch.changes::<Topic>(), move |topic: Arc<Topic>| {
                let namespace = topic.namespace().unwrap_or_default();
                let name = topic.name_any();
                workloads_where(&by_topic, &namespace, |w| {
                    w.spec
                        .subscription
                        .as_ref()
                        .is_some_and(|s| s.topic == name)
                })
            })
            // Its ServiceIdentity's ServiceAccount, Secret and secrets hash.
            .watches_shared_stream(
                watch.changes::<ServiceIdentity>(),
                move |identity: Arc<ServiceIdentity>| {
                    let namespace = identity.namespace().unwrap_or_default();
                    let name = identity.name_any();
                    workloads_where(&by_identity, &namespace, |w| w.spec.service_identity == name)
                },
            )
    }
}

/// The Workloads of `namespace` that `pick` chooses.
fn workloads_where(
    stores: &crate::stores::Stores,
    namespace: &str,
    pick: impl Fn(&Workload) -> bool,
) -> Vec<ObjectRef<Workload>> {
    stores
        .in_namespace::<Workload>(namespace)
        .into_iter()
        .filter(|w| pick(w))
        .map(|w| ObjectRef::from_obj(&*w))
        .collect()
}

/// Whether KEDA's ScaledObject CRD is installed and served.
async fn keda_installed(ctx: &Context) -> Result<bool, kube::Error> {
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let crd = Api::<CustomResourceDefinition>::all(ctx.client.clone())
        .get_opt(KEDA_CRD)
        .await?;
    Ok(crd
        .and_then(|c| c.status)
        .and_then(|s| s.conditions)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        }))
}

/// Where the Workload's objects go, and who owns them.
#[derive(Clone)]
struct Owned {
    namespace: String,
    name: String,
    owner: OwnerReference,
}

impl Owned {
    fn api<K>(&self, ctx: &Context) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(ctx.client.clone(), &self.namespace)
    }

    fn dynamic(&self, ctx: &Context, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(ctx.client.clone(), &self.namespace, resource)
    }

    /// `object` with the Workload as its owner.
    fn own<K: Resource>(&self, mut object: K) -> K {
        object.meta_mut().owner_references = Some(vec![self.owner.clone()]);
        object
    }

    fn own_json(&self, mut object: Value) -> Result<DynamicObject, Failure> {
        object["metadata"]["ownerReferences"] = json!([self.owner]);
        serde_json::from_value(object).map_err(|e| {
            Failure::new(
                "InvalidObject",
                format!("a KEDA object could not be made: {e}"),
            )
        })
    }

    fn uid(&self) -> &str {
        &self.owner.uid
    }
}

/// What runs the pods.
struct Running {
    deployment: Deployment,
    service: Service,
    network_policy: NetworkPolicy,
    disruption_budget: Option<PodDisruptionBudget>,
    replicas: Replicas,
}

/// The Service, NetworkPolicy, Deployment (its replicas brought inside a
/// scaler's bounds) and PodDisruptionBudget; the condition follows the
/// Deployment's available replicas.
async fn deploy(ctx: &Context, owned: &Owned, running: Running) -> Report<WorkloadStatus> {
    match deploy_objects(ctx, owned, running).await {
        Ok((changes, outcome, replicas, available)) => Report::of(Ok(changes))
            .outcome(outcome)
            .found(move |s: &mut WorkloadStatus| {
                s.replicas = Some(replicas);
                s.available_replicas = Some(available);
                None
            }),
        Err(failure) => Report::of(Err(failure)),
    }
}

async fn deploy_objects(
    ctx: &Context,
    owned: &Owned,
    running: Running,
) -> Result<(Vec<Change>, Outcome, i32, i32), Failure> {
    let calls = &ctx.calls;
    let mut changes = vec![
        kubernetes::ensure(&owned.api(ctx), &owned.own(running.service), calls).await?,
        kubernetes::ensure(&owned.api(ctx), &owned.own(running.network_policy), calls).await?,
    ];
    let deployments: Api<Deployment> = owned.api(ctx);
    let (change, mut live) =
        kubernetes::ensure_live(&deployments, &owned.own(running.deployment), calls).await?;
    changes.push(change);
    // Scaled as an autoscaler scales it, through its scale: the applied
    // Deployment never holds replicas, so its apply never undoes this.
    if let Some(replicas) = running.replicas.correction(live.spec.replicas) {
        calls.record(Backend::Kubernetes, Verb::Write);
        deployments
            .patch_scale(
                &owned.name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
        live.spec.replicas = Some(replicas);
        changes.push(Change::Updated);
    }
    let budgets: Api<PodDisruptionBudget> = owned.api(ctx);
    changes.push(match running.disruption_budget {
        Some(budget) => kubernetes::ensure(&budgets, &owned.own(budget), calls).await?,
        None => kubernetes::remove_owned(&budgets, &owned.name, owned.uid(), calls).await?,
    });

    let (ok, message) = availability(&live, running.replicas.needed());
    let outcome = if ok {
        Outcome::ready(DEPLOYMENT_READY, message)
    } else {
        Outcome::failed(DEPLOYMENT_READY, reasons::PROGRESSING, message)
    };
    let replicas = live.spec.replicas.unwrap_or(1);
    let available = live
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    Ok((changes, outcome, replicas, available))
}

/// The autoscaler the spec asks for, and no other: a ScaledObject (with
/// the TriggerAuthentication that hands KEDA the service's Pulsar token)
/// or an HPA; whichever is no longer wanted is deleted.
async fn scale(
    ctx: &Context,
    owned: &Owned,
    scaler: Option<Scaler>,
    replicas: Replicas,
    keda: bool,
) -> Report<WorkloadStatus> {
    let outcome = scaler_outcome(&owned.name, scaler.as_ref(), replicas);
    match scale_objects(ctx, owned, scaler, keda).await {
        Ok(changes) => Report::of(Ok(changes)).outcome(outcome),
        Err(failure) => Report::of(Err(failure)),
    }
}

fn scaler_outcome(name: &str, scaler: Option<&Scaler>, replicas: Replicas) -> Outcome {
    let message = match (scaler, replicas) {
        (Some(Scaler::Keda { .. }), Replicas::Scaled { min, max }) => format!(
            "ScaledObject {name} (KEDA) scales Deployment {name} between {min} and {max} replicas on its subscription's backlog"
        ),
        (Some(Scaler::Hpa(_)), Replicas::Scaled { min, max }) => format!(
            "HorizontalPodAutoscaler {name} scales Deployment {name} between {min} and {max} replicas on its subscription's backlog"
        ),
        (_, replicas) => format!(
            "no autoscaler: Deployment {name} runs {} replicas, as the spec says",
            replicas.needed()
        ),
    };
    Outcome::ready(SCALING_READY, message)
}

async fn scale_objects(
    ctx: &Context,
    owned: &Owned,
    scaler: Option<Scaler>,
    keda: bool,
) -> Result<Vec<Change>, Failure> {
    let calls = &ctx.calls;
    let hpas: Api<HorizontalPodAutoscaler> = owned.api(ctx);
    let scaled = owned.dynamic(ctx, &scaled_objects());
    let authentications = owned.dynamic(ctx, &trigger_authentications());
    let wants_keda = matches!(scaler, Some(Scaler::Keda { .. }));
    if wants_keda && !keda {
        return Err(Failure::new(
            "KedaNotInstalled",
            format!(
                "the operator is told to scale with KEDA (--autoscaler keda) and KEDA's CRD {KEDA_CRD} is not installed: install KEDA, or run the operator with --autoscaler auto or hpa"
            ),
        ));
    }
    let mut changes = Vec::new();
    let hpa = match scaler {
        Some(Scaler::Keda {
            scaled_object,
            trigger_authentication,
        }) => {
            let authentication = owned.own_json(trigger_authentication)?;
            changes.push(kubernetes::ensure(&authentications, &authentication, calls).await?);
            let object = owned.own_json(scaled_object)?;
            changes.push(kubernetes::ensure(&scaled, &object, calls).await?);
            None
        }
        Some(Scaler::Hpa(hpa)) => Some(hpa),
        None => None,
    };
    match hpa {
        Some(hpa) => changes.push(kubernetes::ensure(&hpas, &owned.own(*hpa), calls).await?),
        None => {
            changes.push(kubernetes::remove_owned(&hpas, &owned.name, owned.uid(), calls).await?)
        }
    }
    // Without KEDA's CRDs there is no ScaledObject to remove.
    if keda && !wants_keda {
        let authentication = trigger_authentication_name(&owned.name);
        changes.push(kubernetes::remove_owned(&scaled, &owned.name, owned.uid(), calls).await?);
        changes.push(
            kubernetes::remove_owned(&authentications, &authentication, owned.uid(), calls).await?,
        );
    }
    Ok(changes)
}
