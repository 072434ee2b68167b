//! The Topic controller: a Pulsar topic in its Environment's Pulsar
//! namespace, created explicitly (the broker creates none by itself), its
//! partitions grown, its topic-level policies applied and unset when they
//! leave the spec, and its schema registered only after the broker said it
//! is compatible. A schema is never deleted: not by a spec change, not by
//! an upgrade.
//!
//! A Topic deleted on its own keeps its Pulsar topic while clients are
//! connected or messages wait (`DeletionBlocked`), unless forced; when its
//! Environment or Tenant goes, the topic goes with it.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use ossature_crds::{
    Conditioned, DeletionPolicy, Environment, ServiceIdentity, Tenant, Topic, TopicStatus,
    TopicUser,
};
use ossature_model::conditions::{
    self, GRANTS_READY, MESSAGING_READY, Outcome, READY, SCHEMA_READY, STALLED, reasons,
};
use ossature_model::services::{GrantCall, Permissions, ServiceNames, desired_grants, grant_calls};
use ossature_model::names::{FIELD_MANAGER, environment_of, tenant_namespace};
use ossature_model::tenants::retained;
use ossature_model::topics::{
    DeletionCause, DeletionDecision, DesiredSchema, FINGERPRINT_PROPERTY, Policies, PulsarTopic,
    TopicUsage, deletion_decision, desired_policies, desired_schema, policy_calls,
    schema_differs,
};

use crate::adapters::pulsar::{SchemaVerdict, TopicShape};
use crate::adapters::{Backend, BackendError, Change, Failure, Verb};
use crate::context::Context;
use crate::reconcile::{Error, Plan, Reconciled, Report, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/topic-cleanup";

impl Reconciled for Topic {
    const CONTROLLER: &'static str = "topic";
    const FINALIZER: &'static str = FINALIZER;
    /// ServiceIdentities and Workloads follow it.
    const FOLLOWED: bool = true;

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, TopicStatus>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let previous = self.status.clone().unwrap_or_default();
        let (Some(topic), Some((tenant, environment))) =
            (PulsarTopic::of_topic(self), environment_of(&namespace))
        else {
            return Ok(Plan::stalled(
                previous,
                reasons::NOT_IN_ENVIRONMENT_NAMESPACE,
                format!(
                    "namespace {namespace} is not an environment namespace; create Topics in tn-<tenant>--<environment>"
                ),
            ));
        };
        if ctx.find::<Tenant>(tenant).await?.is_none() {
            return Ok(Plan::stalled(
                previous,
                reasons::TENANT_NOT_FOUND,
                format!("tenant {tenant} does not exist; create it (or apply its file) first"),
            ));
        }
        let mut plan = Plan::new(TopicStatus {
            pulsar_topic: Some(topic.to_string()),
            ..previous.clone()
        });

        let owner = ctx
            .stores
            .get_in::<Environment>(&tenant_namespace(tenant), environment);
        if let Some(why) = not_ready(owner.as_deref(), tenant, environment) {
            plan.outcome(Outcome::failed(
                MESSAGING_READY,
                reasons::WAITING_FOR_ENVIRONMENT,
                format!("Pulsar topic {topic} {why}"),
            ));
            return Ok(plan);
        }

        let desired = match self.spec.schema.as_ref().map(desired_schema) {
            Some(Ok(schema)) => Some(schema),
            Some(Err(invalid)) => {
                let message = invalid.to_string();
                plan.outcome(Outcome::failed(
                    SCHEMA_READY,
                    reasons::INVALID_SCHEMA,
                    message.clone(),
                ));
                plan.stalled = Some(Outcome::failed(STALLED, reasons::INVALID_SCHEMA, message));
                None
            }
            None => None,
        };

        let tenant_quotas = ctx.find::<Tenant>(tenant).await?.map(|t| t.spec.quotas.clone());
        let limit = owner
            .as_ref()
            .and_then(|e| e.spec.quotas.partitions)
            .or(tenant_quotas.and_then(|q| q.partitions));
        if let (Some(wanted), Some(limit)) = (self.spec.partitions, limit)
            && wanted > limit
        {
            plan.outcome(Outcome::failed(
                MESSAGING_READY,
                reasons::QUOTA_EXCEEDED,
                format!(
                    "Pulsar topic {topic} asks for {wanted} partitions; the quota of tenant {tenant} (quotas.partitions) allows {limit} per topic. Lower spec.partitions or raise the quota"
                ),
            ));
            return Ok(plan);
        }

        let policies = desired_policies(&self.spec);
        let partitions = self.spec.partitions;
        let messaging = topic.clone();
        plan.step(Step::reporting(
            MESSAGING_READY,
            format!("Pulsar topic {topic}"),
            async move {
                match ensure_topic(ctx, &messaging, partitions, &policies).await {
                    Ok((changes, usage)) => Report::of(Ok(changes)).found(move |s: &mut TopicStatus| {
                        s.backlog = Some(usage.backlog);
                        s.producers = Some(usage.producers.try_into().unwrap_or(i32::MAX));
                        s.consumers = Some(usage.consumers.try_into().unwrap_or(i32::MAX));
                        None
                    }),
                    Err(failure) => Report::of(Err(failure)),
                }
            },
        ));

        let identities: Vec<ServiceIdentity> = ctx
            .stores
            .in_namespace::<ServiceIdentity>(&namespace)
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let permissions = desired_grants(tenant, &identities).on(&namespace, &self.name_any());
        let users = topic_users(&permissions, &identities, &self.name_any());
        let granted = topic.clone();
        let tenant_name = tenant.to_string();
        plan.step(
            Step::reporting(GRANTS_READY, format!("grants on topic {topic}"), async move {
                match ensure_grants(ctx, &tenant_name, &granted, &permissions).await {
                    Ok(changes) => Report::of(Ok(changes)).found(move |s: &mut TopicStatus| {
                        s.granted_to = users;
                        None
                    }),
                    Err(e) => Report::of(Err(e.into())),
                }
            })
            .after(
                &[MESSAGING_READY],
                reasons::PROGRESSING,
                "grants are applied once the topic exists",
            ),
        );

        if let Some(desired) = desired {
            let what = format!("schema of topic {topic}");
            plan.step(
                Step::reporting(SCHEMA_READY, what, async move {
                    ensure_schema(ctx, &topic, desired).await
                })
                .after(
                    &[MESSAGING_READY],
                    reasons::PROGRESSING,
                    "the schema is registered once the topic and its compatibility strategy are in place",
                ),
            );
        }
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let namespace = self.namespace().unwrap_or_default();
        let (Some(topic), Some((tenant, environment))) =
            (PulsarTopic::of_topic(self), environment_of(&namespace))
        else {
            return Ok(Vec::new());
        };
        let cause = deletion_cause(ctx, tenant, environment).await?;
        let shape = match deletion_decision(&self.spec, cause, TopicUsage::default()) {
            DeletionDecision::Retain => {
                return Ok(vec![event(
                    EventType::Normal,
                    "Retained",
                    "Delete",
                    format!("deletionPolicy is Retain: Pulsar topic {topic} and its schema are kept"),
                )]);
            }
            _ => match ctx.pulsar.topic_shape(&topic).await? {
                Some(shape) => shape,
                // Never created, deleted by hand, or its namespace went first.
                None => return Ok(Vec::new()),
            },
        };
        let partitioned = matches!(shape, TopicShape::Partitioned(_));
        let usage = ctx
            .pulsar
            .topic_usage(&topic, partitioned)
            .await?
            .unwrap_or_default();
        match deletion_decision(&self.spec, cause, usage) {
            DeletionDecision::Retain => Ok(Vec::new()),
            DeletionDecision::Delete { force } => {
                ctx.pulsar.delete_topic(&topic, partitioned, force).await?;
                Ok(vec![event(
                    EventType::Normal,
                    "Deprovisioned",
                    "Delete",
                    format!("Pulsar topic {topic} deleted"),
                )])
            }
            DeletionDecision::Blocked { usage, message } => {
                blocked(self, ctx, usage, &message).await?;
                Err(Error::Blocked(format!("Pulsar topic {topic}: {message}")))
            }
        }
    }

    fn watches(controller: Controller<Self>, watch: &WatchContext) -> Controller<Self> {
        let stores = watch.stores.clone();
        let topics = watch.stores.clone();
        // A grant added, changed or dropped, or a service deleted: the
        // complete grants of every topic of its namespace. Grants are in
        // the spec: a service's status changes are not the topics' business.
        let controller = controller.watches_shared_stream(
            watch.changes_of(|identity: &ServiceIdentity| identity.metadata.generation),
            move |identity: Arc<ServiceIdentity>| {
                let service = identity.name_any();
                identity
                    .namespace()
                    .map(|ns| topics.in_namespace::<Topic>(&ns))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|topic| {
                        let name = topic.name_any();
                        let granted = identity.spec.grants.iter().any(|g| g.topic == name);
                        let was = topic
                            .status
                            .as_ref()
                            .is_some_and(|s| s.granted_to.iter().any(|u| u.service == service));
                        granted || was
                    })
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        );
        // Its Environment's Pulsar namespace becoming ready, or its deletion.
        controller.watches_shared_stream(
            watch.changes::<Environment>(),
            move |environment: Arc<Environment>| {
                let names = environment
                    .namespace()
                    .as_deref()
                    .and_then(ossature_model::names::tenant_of)
                    .map(|tenant| {
                        ossature_model::names::TenantNames::new(tenant)
                            .environment(&environment.name_any())
                            .namespace
                    });
                names
                    .map(|ns| stores.in_namespace::<Topic>(&ns))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| ObjectRef::from_obj(&*t))
                    .collect::<Vec<_>>()
            },
        )
    }
}

/// Why the Environment cannot hold the topic now, if it cannot.
pub(super) fn not_ready(owner: Option<&Environment>, tenant: &str, environment: &str) -> Option<String> {
    let Some(owner) = owner else {
        return Some(format!(
            "waits for Environment {environment} of tenant {tenant}; create it"
        ));
    };
    if owner.metadata.deletion_timestamp.is_some() {
        return Some(format!(
            "is not touched: Environment {environment} is being deleted"
        ));
    }
    let ready = owner
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(s.conditions(), MESSAGING_READY));
    (!ready).then(|| {
        format!("waits for the Pulsar namespace of Environment {environment} to be Ready")
    })
}

/// The topic as the spec says: created, partitions grown, topic-level
/// policies set and removed; then its clients and backlog.
async fn ensure_topic(
    ctx: &Context,
    topic: &PulsarTopic,
    partitions: Option<i32>,
    policies: &Policies,
) -> Result<(Vec<Change>, TopicUsage), Failure> {
    let mut changes = Vec::new();
    let shape = ctx.pulsar.topic_shape(topic).await?;
    match (shape, partitions) {
        (None, _) => changes.push(ctx.pulsar.create_topic(topic, partitions).await?),
        (Some(TopicShape::Partitioned(live)), Some(wanted)) if live < wanted => {
            changes.push(ctx.pulsar.grow_partitions(topic, wanted).await?);
        }
        (Some(TopicShape::Partitioned(_)), Some(_)) | (Some(TopicShape::NonPartitioned), None) => {}
        (Some(live), _) => {
            return Err(Failure::new(
                "TopicShapeMismatch",
                format!(
                    "Pulsar topic {topic} exists as {} while the spec asks for {}; delete it in Pulsar or create a new Topic",
                    shape_words(Some(live)),
                    shape_words(partitions.map(TopicShape::Partitioned))
                ),
            ));
        }
    }
    // Pulsar keeps no metadata of a non-persistent topic without
    // partitions, so it has nowhere to hold topic-level policies.
    if topic.persistent || partitions.is_some() {
        let live = ctx.pulsar.topic_policies(topic).await?;
        for call in policy_calls(policies, &live) {
            changes.push(ctx.pulsar.apply_policy(topic, &call).await?);
        }
    } else if !policies.is_empty() {
        return Err(Failure::new(
            "PoliciesUnsupported",
            format!(
                "Pulsar cannot hold policies of {topic}, a non-persistent topic without partitions; leave spec.policies out or create a partitioned Topic"
            ),
        ));
    }
    let partitioned = partitions.is_some();
    let usage = ctx
        .pulsar
        .topic_usage(topic, partitioned)
        .await?
        .unwrap_or_default();
    Ok((changes, usage))
}

fn shape_words(shape: Option<TopicShape>) -> String {
    match shape {
        Some(TopicShape::Partitioned(n)) => format!("a topic of {n} partitions"),
        _ => "a non-partitioned topic".into(),
    }
}

/// The schema registered when it differs from the live one and the broker
/// finds it compatible; otherwise the live one stays and the Topic says why.
async fn ensure_schema(
    ctx: &Context,
    topic: &PulsarTopic,
    desired: DesiredSchema,
) -> Report<TopicStatus> {
    let live = match ctx.pulsar.latest_schema(topic).await {
        Ok(live) => live,
        Err(e) => return Report::of(Err(e.into())),
    };
    let live_pair = live
        .as_ref()
        .map(|l| (l.schema_type.as_str(), l.data.as_str()));
    let fingerprint = desired.fingerprint.clone();
    if !schema_differs(&desired, live_pair) {
        let version = live.map(|l| l.version);
        return Report::of(Ok(vec![Change::Unchanged])).found(move |s: &mut TopicStatus| {
            s.schema_version = version;
            s.schema_fingerprint = Some(fingerprint);
            None
        });
    }
    // Asked first: the upload of an incompatible schema is refused too, but
    // the check writes nothing, whatever the broker's version does.
    let verdict = match ctx.pulsar.check_schema(topic, &desired.payload).await {
        Ok(SchemaVerdict::Accepted(_)) => ctx.pulsar.upload_schema(topic, &desired.payload).await,
        other => other,
    };
    let live_version = live.as_ref().map(|l| l.version);
    let live_fingerprint = live
        .as_ref()
        .and_then(|l| l.properties.get(FINGERPRINT_PROPERTY).cloned());
    let refused = |reason: &str, message: String| {
        Report::of(Ok(Vec::new()))
            .outcome(Outcome::failed(SCHEMA_READY, reason, message.clone()))
            .stalled(Outcome::failed(STALLED, reason, message))
            .found(move |s: &mut TopicStatus| {
                s.schema_version = live_version;
                s.schema_fingerprint = live_fingerprint;
                None
            })
    };
    match verdict {
        Ok(SchemaVerdict::Accepted(version)) => {
            let change = if live.is_some() {
                Change::Updated
            } else {
                Change::Created
            };
            Report::of(Ok(vec![change])).found(move |s: &mut TopicStatus| {
                s.schema_version = version;
                s.schema_fingerprint = Some(fingerprint);
                None
            })
        }
        Ok(SchemaVerdict::Incompatible(words)) => refused(
            reasons::SCHEMA_INCOMPATIBLE,
            format!(
                "the new schema.definition is not compatible with the registered schema{}; the live schema is kept. The broker says: {words}. Change the definition (a new field needs a default), or create a new Topic",
                live_version.map_or(String::new(), |v| format!(" (version {v})"))
            ),
        ),
        Ok(SchemaVerdict::Invalid(words)) => refused(
            reasons::INVALID_SCHEMA,
            format!("the broker refuses schema.definition: {words}; fix the definition"),
        ),
        Err(e) => Report::of(Err(e.into())),
    }
}

/// Each role's actions on the topic as every ServiceIdentity declares
/// them; only the difference with what the broker holds is written, one
/// role at a time.
async fn ensure_grants(
    ctx: &Context,
    tenant: &str,
    topic: &PulsarTopic,
    desired: &Permissions,
) -> Result<Vec<Change>, BackendError> {
    let live = ctx.pulsar.topic_permissions(topic).await?;
    let mut changes = Vec::new();
    for call in grant_calls(tenant, desired, &live) {
        changes.push(match call {
            GrantCall::Grant { role, actions } => ctx.pulsar.grant(topic, &role, &actions).await?,
            GrantCall::Revoke { role } => ctx.pulsar.revoke(topic, &role).await?,
        });
    }
    Ok(changes)
}

/// The services granted the topic, for its status.
fn topic_users(
    permissions: &Permissions,
    identities: &[ServiceIdentity],
    topic: &str,
) -> Vec<TopicUser> {
    let mut users: Vec<TopicUser> = identities
        .iter()
        .filter_map(|identity| {
            let names = ServiceNames::of(identity)?;
            let actions = permissions.get(&names.pulsar_role)?;
            let subscriptions = identity
                .spec
                .grants
                .iter()
                .filter(|g| g.topic == topic)
                .flat_map(|g| g.subscriptions.iter().cloned())
                .collect();
            Some(TopicUser {
                service: names.service,
                actions: actions.iter().copied().collect(),
                subscriptions,
            })
        })
        .collect();
    // In a stable order: the store's would rewrite the status for nothing.
    users.sort_by(|a, b| a.service.cmp(&b.service));
    users
}

/// Who is deleting the Topic: the Topic alone, or its Environment or
/// Tenant (being deleted, or gone).
async fn deletion_cause(
    ctx: &Context,
    tenant: &str,
    environment: &str,
) -> Result<DeletionCause, Error> {
    let owner = ctx.find::<Tenant>(tenant).await?;
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    let env = Api::<Environment>::namespaced(ctx.client.clone(), &tenant_namespace(tenant))
        .get_opt(environment)
        .await?;
    let tenant_going = owner
        .as_ref()
        .is_none_or(|t| t.metadata.deletion_timestamp.is_some());
    let env_going = env
        .as_ref()
        .is_none_or(|e| e.metadata.deletion_timestamp.is_some());
    if !tenant_going && !env_going {
        return Ok(DeletionCause::Own);
    }
    let env_retains = env.as_ref().is_some_and(|e| {
        e.metadata.deletion_timestamp.is_some() && e.spec.deletion_policy == DeletionPolicy::Retain
    });
    Ok(DeletionCause::Owner {
        retain: env_retains || retained(owner.as_deref()),
    })
}

/// Says on the Topic why its deletion waits: `Ready=False` with reason
/// `DeletionBlocked` and the counts, and one Event when that is news.
async fn blocked(
    topic: &Topic,
    ctx: &Context,
    usage: TopicUsage,
    message: &str,
) -> Result<(), Error> {
    let previous = topic.status.clone().unwrap_or_default();
    let generation = topic.metadata.generation;
    let mut status = previous.clone();
    let mut list: Vec<Condition> = previous.conditions().to_vec();
    conditions::set(
        &mut list,
        conditions::condition(READY, false, reasons::DELETION_BLOCKED, message, generation),
    );
    status.set_conditions(generation, list);
    status.backlog = Some(usage.backlog);
    status.producers = Some(usage.producers.try_into().unwrap_or(i32::MAX));
    status.consumers = Some(usage.consumers.try_into().unwrap_or(i32::MAX));
    if conditions::same(previous.conditions(), status.conditions()) && previous == status {
        return Ok(());
    }
    ctx.calls.record(Backend::Kubernetes, Verb::Write);
    Api::<Topic>::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default())
        .patch_status(
            &topic.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "ossature.dev/v1alpha1",
                "kind": "Topic",
                "status": status,
            })),
        )
        .await?;
    ctx.publish(
        topic.object_ref(&()),
        vec![event(
            EventType::Warning,
            reasons::DELETION_BLOCKED,
            "Delete",
            message,
        )],
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(status: serde_json::Value, deleting: bool) -> Environment {
        let mut metadata = json!({"name": "prod", "namespace": "tn-acme"});
        if deleting {
            metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
            "metadata": metadata,
            "spec": {"kind": "Production"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_topic_waits_for_its_environment_pulsar_namespace() {
        let ready = json!({"conditions": [{"type": "MessagingReady", "status": "True",
            "reason": "Provisioned", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        assert_eq!(
            not_ready(Some(&environment(ready.clone(), false)), "acme", "prod"),
            None
        );
        let why = not_ready(None, "acme", "prod").unwrap();
        assert!(why.contains("Environment prod of tenant acme"), "{why}");
        let why = not_ready(Some(&environment(json!({}), false)), "acme", "prod").unwrap();
        assert!(why.contains("Pulsar namespace"), "{why}");
        let why = not_ready(Some(&environment(ready, true)), "acme", "prod").unwrap();
        assert!(why.contains("being deleted"), "{why}");
    }

    #[test]
    fn shapes_are_named_for_people() {
        assert_eq!(
            shape_words(Some(TopicShape::Partitioned(3))),
            "a topic of 3 partitions"
        );
        assert_eq!(
            shape_words(Some(TopicShape::NonPartitioned)),
            "a non-partitioned topic"
        );
    }
}
