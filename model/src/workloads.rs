//! The Kubernetes objects of a Workload: Deployment, Service, NetworkPolicy,
//! a PodDisruptionBudget with more than one replica, and for event
//! processors and sinks an autoscaler on their subscription's backlog.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use ossature_crds::{
    Conditioned, CpuMemory, Scaling, ServiceIdentity, SubscriptionType, Topic, Workload,
};
use serde_json::{Value, json};

use crate::conditions::{self, ACCOUNT_READY, READY, reasons};
use crate::names::{MANAGED_BY, labels};
use crate::objects::from;
use crate::services::ServiceNames;
use crate::topics::PulsarTopic;

/// Where the service's secrets appear in the container, one file a key.
pub const SECRETS_DIR: &str = "/var/run/secrets/ossature";
/// Pod-template annotation holding a hash of the Secret's data: a change
/// of the secrets changes the template, so the Deployment rolls out.
pub const SECRETS_HASH_ANNOTATION: &str = "ossature.dev/secrets-hash";
/// Key of the service's Secret holding its Pulsar token.
pub use crate::services::PULSAR_TOKEN_KEY;

/// What scales event processors and sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autoscaler {
    /// KEDA's CRDs are installed: a ScaledObject with a pulsar trigger.
    Keda,
    /// Otherwise: an HPA on an external backlog metric.
    Hpa,
}

/// The topic a processor or sink consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTopic {
    pub topic: PulsarTopic,
    /// `None` for a non-partitioned topic.
    pub partitions: Option<i32>,
}

pub struct WorkloadInput<'a> {
    pub workload: &'a Workload,
    /// Names of its ServiceIdentity.
    pub service: &'a ServiceNames,
    /// The ServiceIdentity's ULID.
    pub service_id: &'a str,
    /// Hash of the data of the service's Secret.
    pub secrets_hash: &'a str,
    /// For processors and sinks: the Topic of the subscription.
    pub subscribed: Option<&'a SubscribedTopic>,
    pub autoscaler: Autoscaler,
    /// The Pulsar admin URL KEDA's trigger reads the backlog from.
    pub pulsar_admin_url: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scaler {
    Keda {
        scaled_object: Value,
        trigger_authentication: Value,
    },
    Hpa(Box<HorizontalPodAutoscaler>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadObjects {
    /// Without `replicas` when a scaler owns them, so applying it never
    /// fights the autoscaler.
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    pub disruption_budget: Option<PodDisruptionBudget>,
    pub scaler: Option<Scaler>,
    pub replicas: Replicas,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadError {
    /// Not in an environment namespace, or without a name.
    NotInEnvironment,
    /// Its ServiceIdentity's names are of another namespace.
    ServiceElsewhere,
    /// A processor or sink whose subscribed Topic was not given.
    NoSubscribedTopic,
}

/// The most consumers a subscription type lets work at once. Exclusive
/// admits a single consumer (the broker refuses a second); Failover gives
/// each partition one active consumer and keeps the others idle as
/// standbys (a non-partitioned topic counts as one), so replicas beyond
/// the partitions add no throughput. Shared and KeyShared spread messages
/// over any number of consumers.
pub fn replica_cap(subscription_type: SubscriptionType, partitions: Option<i32>) -> Option<i32> {
    match subscription_type {
        SubscriptionType::Exclusive => Some(1),
        SubscriptionType::Failover => Some(partitions.unwrap_or(1).max(1)),
        SubscriptionType::Shared | SubscriptionType::KeyShared => None,
    }
}

/// The scaling bounds after the cap: (min, max), min never above max.
pub fn scaling_bounds(
    scaling: &Scaling,
    subscription_type: SubscriptionType,
    partitions: Option<i32>,
) -> (i32, i32) {
    let max = replica_cap(subscription_type, partitions)
        .map_or(scaling.max_replicas, |cap| scaling.max_replicas.min(cap));
    (scaling.min_replicas.min(max), max)
}

/// What a Workload takes of its ServiceIdentity, once the identity made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The ServiceIdentity's ULID.
    pub id: String,
    pub service_account: String,
    /// The Secret of its secrets, which the pods mount.
    pub secret_name: String,
    pub secrets_hash: String,
}

impl Identity {
    /// The names of the service, with the ServiceAccount and Secret its
    /// identity reports (they are what exists).
    pub fn names(&self, namespace: &str, service: &str) -> Option<ServiceNames> {
        let mut names = ServiceNames::new(namespace, service)?;
        names.service_account.clone_from(&self.service_account);
        names.secret_name.clone_from(&self.secret_name);
        Some(names)
    }
}

/// What the Workload needs of ServiceIdentity `name`, or why it waits: it
/// does not exist, is being deleted, or has not made its ServiceAccount
/// and Secret yet (its controller reports them in its status).
pub fn identity_of(identity: Option<&ServiceIdentity>, name: &str) -> Result<Identity, String> {
    let Some(identity) = identity else {
        return Err(format!(
            "waits for ServiceIdentity {name}, which does not exist: create it in this namespace (the workload runs as its ServiceAccount and mounts its secrets)"
        ));
    };
    if identity.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "ServiceIdentity {name} is being deleted: its ServiceAccount and secrets are going; re-create it, or delete this workload"
        ));
    }
    // Its status names the ServiceAccount before it is made.
    let conditions = identity
        .status
        .as_ref()
        .map(|s| s.conditions())
        .unwrap_or_default();
    if !conditions::is_true(conditions, ACCOUNT_READY) {
        let why = conditions
            .iter()
            .find(|c| c.type_ == ACCOUNT_READY)
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        return Err(format!(
            "waits for ServiceIdentity {name} to make its ServiceAccount{why}; see its conditions"
        ));
    }
    let status = identity.status.clone().unwrap_or_default();
    match (
        status.service_account,
        status.secret_name,
        status.secrets_hash,
    ) {
        (Some(service_account), Some(secret_name), Some(secrets_hash)) => Ok(Identity {
            id: identity.spec.id.clone(),
            service_account,
            secret_name,
            secrets_hash,
        }),
        (account, secret, hash) => {
            let missing: Vec<&str> = [
                ("serviceAccount", account.is_none()),
                ("secretName", secret.is_none()),
                ("secretsHash", hash.is_none()),
            ]
            .into_iter()
            .filter_map(|(field, missing)| missing.then_some(field))
            .collect();
            Err(format!(
                "waits for ServiceIdentity {name} to make its ServiceAccount and the Secret of its secrets (its status has no {} yet); see its conditions",
                missing.join(", ")
            ))
        }
    }
}

/// The Topic a processor or sink subscribes to, once it is Ready for its
/// current spec (its partitions are then the broker's); otherwise the
/// reason and message of the wait.
pub fn subscribed_topic(
    topic: Option<&Topic>,
    name: &str,
) -> Result<SubscribedTopic, (&'static str, String)> {
    let Some(topic) = topic else {
        return Err((
            reasons::TOPIC_NOT_FOUND,
            format!(
                "Topic {name} does not exist in this namespace: create it, or name another in spec.subscription.topic"
            ),
        ));
    };
    let status = topic.status.clone().unwrap_or_default();
    let ready = conditions::ready_for(
        status.conditions(),
        status.observed_generation,
        topic.metadata.generation,
    );
    let pulsar = PulsarTopic::of_topic(topic);
    match pulsar {
        Some(pulsar) if ready && topic.metadata.deletion_timestamp.is_none() => {
            Ok(SubscribedTopic {
                topic: pulsar,
                partitions: topic.spec.partitions,
            })
        }
        _ => {
            let why = status
                .conditions()
                .iter()
                .find(|c| c.type_ == READY && c.status != "True")
                .map(|c| format!(" ({}: {})", c.reason, c.message))
                .unwrap_or_default();
            Err((
                reasons::WAITING_FOR_TOPIC,
                format!("waits for Topic {name} to be Ready{why}"),
            ))
        }
    }
}

/// How many replicas run, and who decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    /// The spec's number.
    Fixed(i32),
    /// An autoscaler's, within these bounds.
    Scaled { min: i32, max: i32 },
}

impl Replicas {
    /// The replicas that must be available for the workload to be Ready.
    pub fn needed(self) -> i32 {
        match self {
            Replicas::Fixed(n) => n,
            Replicas::Scaled { min, .. } => min,
        }
    }

    /// The replicas to set through the Deployment's scale when the live
    /// number is outside the bounds: before an autoscaler acts (a new
    /// Deployment starts at one), or with none running. Inside them the
    /// autoscaler decides, and nothing is written.
    pub fn correction(self, live: Option<i32>) -> Option<i32> {
        let Replicas::Scaled { min, max } = self else {
            return None;
        };
        // A Deployment without replicas has one.
        let live = live.unwrap_or(1);
        let wanted = live.clamp(min, max);
        (wanted != live).then_some(wanted)
    }
}

/// Whether a Deployment is available enough: its controller has seen its
/// current spec, has rolled it out to every replica (no pod of an older
/// template remains), and `needed` replicas are available. The message
/// says where it stands.
pub fn availability(deployment: &Deployment, needed: i32) -> (bool, String) {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let status = deployment.status.clone().unwrap_or_default();
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let old = status.replicas.unwrap_or(0) - updated;
    let seen = status.observed_generation >= deployment.metadata.generation;
    if !seen {
        return (
            false,
            format!("Deployment {name} has a new spec its controller has not acted on yet"),
        );
    }
    if updated < wanted || old > 0 {
        return (
            false,
            format!(
                "Deployment {name} is rolling out: {updated} of {wanted} replicas updated, {} of the previous template remaining",
                old.max(0)
            ),
        );
    }
    let ok = available >= needed;
    let message = format!("Deployment {name}: {available} of {wanted} replicas available");
    if ok {
        (true, message)
    } else {
        (false, format!("{message}, {needed} needed"))
    }
}

/// The standard labels plus the tenant's; the first two select the pods.
fn workload_labels(name: &str, input: &WorkloadInput) -> BTreeMap<String, String> {
    let mut all = labels(&input.service.tenant, Some(&input.service.environment));
    all.extend([
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        ("app.kubernetes.io/instance".to_string(), name.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            input.workload.spec.template.component().to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            input.service.service.clone(),
        ),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]);
    all
}

fn selector(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name})
}

pub fn desired(input: &WorkloadInput) -> Result<WorkloadObjects, WorkloadError> {
    let workload = input.workload;
    let spec = &workload.spec;
    let name = workload
        .metadata
        .name
        .as_deref()
        .ok_or(WorkloadError::NotInEnvironment)?;
    let namespace = workload
        .metadata
        .namespace
        .as_deref()
        .ok_or(WorkloadError::NotInEnvironment)?;
    if crate::names::environment_of(namespace).is_none() {
        return Err(WorkloadError::NotInEnvironment);
    }
    if input.service.namespace != namespace {
        return Err(WorkloadError::ServiceElsewhere);
    }
    let labels = workload_labels(name, input);
    let meta = json!({"name": name, "namespace": namespace, "labels": labels});

    let scaling = match (&spec.subscription, &spec.scaling) {
        (Some(subscription), Some(scaling)) => {
            let subscribed = input.subscribed.ok_or(WorkloadError::NoSubscribedTopic)?;
            let bounds = scaling_bounds(
                scaling,
                subscription.subscription_type,
                subscribed.partitions,
            );
            Some((subscription, scaling, subscribed, bounds))
        }
        _ => None,
    };
    // Replicas when running; with a scaler, its lower bound.
    let replicas = match scaling {
        Some((_, _, _, (min, _))) => min,
        None => spec.replicas.unwrap_or(1),
    };

    let mut env: Vec<Value> = spec
        .env
        .iter()
        .map(|e| json!({"name": e.name, "value": e.value}))
        .collect();
    env.push(json!({"name": "OSSATURE_SECRETS_DIR", "value": SECRETS_DIR}));
    env.push(json!({"name": "OSSATURE_SERVICE_ID", "value": input.service_id}));
    // As the apiserver keeps them, so that an unchanged spec compares equal.
    let amounts = |amounts: &CpuMemory| {
        let mut all = serde_json::Map::new();
        for (name, amount) in [("cpu", &amounts.cpu), ("memory", &amounts.memory)] {
            if let Some(Quantity(amount)) = amount {
                let kept = crate::quantities::canonical(amount).unwrap_or_else(|| amount.clone());
                all.insert(name.into(), json!(kept));
            }
        }
        Value::Object(all)
    };
    let mut resources = serde_json::Map::new();
    if let Some(requests) = &spec.resources.requests {
        resources.insert("requests".into(), amounts(requests));
    }
    if let Some(limits) = &spec.resources.limits {
        resources.insert("limits".into(), amounts(limits));
    }
    let probe =
        |path: &str| json!({"httpGet": {"path": path, "port": "management"}, "periodSeconds": 10});
    let mut deployment_spec = json!({
        "selector": {"matchLabels": selector(name)},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {SECRETS_HASH_ANNOTATION: input.secrets_hash},
            },
            "spec": {
                "serviceAccountName": input.service.service_account,
                // Group-readable secret files for a non-root user of any uid.
                "securityContext": {
                    "runAsNonRoot": true,
                    "fsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "app",
                    "image": spec.image,
                    "ports": [
                        {"name": "traffic", "containerPort": spec.traffic_port, "protocol": "TCP"},
                        {"name": "management", "containerPort": spec.management_port, "protocol": "TCP"},
                    ],
                    "env": env,
                    "resources": resources,
                    "livenessProbe": probe("/livez"),
                    "readinessProbe": probe("/readyz"),
                    "volumeMounts": [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": true}],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }],
                "volumes": [{
                    "name": "secrets",
                    "secret": {"secretName": input.service.secret_name, "defaultMode": 0o440},
                }],
            },
        },
    });
    if scaling.is_none() {
        deployment_spec["replicas"] = json!(replicas);
    }
    let deployment = from(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta, "spec": deployment_spec,
    }));

    let service = from(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": selector(name),
            "ports": [{"name": "traffic", "port": spec.traffic_port, "targetPort": "traffic", "protocol": "TCP"}],
        },
    }));

    // Policies add up: the namespace's default deny and same-tenant ones
    // still apply; this one opens the management port to monitoring.
    let network_policy = from(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "ports": [{"port": spec.traffic_port, "protocol": "TCP"}],
                    "from": [{"namespaceSelector": {"matchLabels": {crate::names::TENANT_LABEL: input.service.tenant}}}],
                },
                {
                    "ports": [{"port": spec.management_port, "protocol": "TCP"}],
                    "from": [{"namespaceSelector": {"matchLabels": {MONITORING_LABEL: "true"}}}],
                },
            ],
        },
    }));

    let disruption_budget = (replicas > 1).then(|| {
        from(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta,
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
        }))
    });

    let scaler = scaling.map(|(subscription, scaling, subscribed, (min, max))| {
        let target = scaling.backlog_target;
        match input.autoscaler {
            Autoscaler::Keda => {
                let auth_name = trigger_authentication_name(name);
                Scaler::Keda {
                    scaled_object: json!({
                        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                        "metadata": meta,
                        "spec": {
                            "scaleTargetRef": {"name": name},
                            "minReplicaCount": min,
                            "maxReplicaCount": max,
                            "triggers": [{
                                "type": "pulsar",
                                "authenticationRef": {"name": auth_name},
                                "metadata": {
                                    "adminURL": input.pulsar_admin_url,
                                    "topic": subscribed.topic.to_string(),
                                    "subscription": subscription.name,
                                    "isPartitionedTopic": subscribed.partitions.is_some().to_string(),
                                    "msgBacklogThreshold": target.to_string(),
                                    "authModes": "bearer",
                                },
                            }],
                        },
                    }),
                    trigger_authentication: json!({
                        "apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
                        "metadata": {"name": auth_name, "namespace": namespace, "labels": labels},
                        "spec": {"secretTargetRef": [{
                            "parameter": "bearerToken",
                            "name": input.service.secret_name,
                            "key": PULSAR_TOKEN_KEY,
                        }]},
                    }),
                }
            }
            Autoscaler::Hpa => Scaler::Hpa(Box::new(from(json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": min,
                    "maxReplicas": max,
                    "metrics": [{
                        "type": "External",
                        "external": {
                            "metric": {
                                "name": BACKLOG_METRIC,
                                // Label values cannot hold `persistent://`, so the topic goes in parts.
                                "selector": {"matchLabels": {
                                    "tenant": subscribed.topic.tenant,
                                    "namespace": subscribed.topic.namespace,
                                    "topic": subscribed.topic.local,
                                    "subscription": subscription.name,
                                }},
                            },
                            // As the apiserver keeps it: 1000 is `1k`.
                            "target": {"type": "AverageValue", "averageValue": crate::quantities::canonical(&target.to_string())},
                        },
                    }],
                },
            })))),
        }
    });

    Ok(WorkloadObjects {
        deployment,
        service,
        network_policy,
        disruption_budget,
        scaler,
        replicas: match scaling {
            Some((_, _, _, (min, max))) => Replicas::Scaled { min, max },
            None => Replicas::Fixed(replicas),
        },
    })
}

/// The TriggerAuthentication that hands KEDA a workload's Pulsar token.
pub fn trigger_authentication_name(workload: &str) -> String {
    format!("{workload}-pulsar")
}

/// Namespaces whose pods may scrape workloads' management ports.
pub const MONITORING_LABEL: &str = "ossature.dev/monitoring";
/// The external metric an HPA reads: a subscription's backlog, labelled by
/// tenant, namespace, topic and subscription.
pub const BACKLOG_METRIC: &str = "pulsar_subscription_backlog";

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::Persistence;

    fn workload(spec: Value) -> Workload {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": "orders-api", "namespace": "tn-acme--prod"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn objects(
        workload: &Workload,
        subscribed: Option<&SubscribedTopic>,
        autoscaler: Autoscaler,
    ) -> WorkloadObjects {
        let service = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        desired(&WorkloadInput {
            workload,
            service: &service,
            service_id: "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
            secrets_hash: "abc123",
            subscribed,
            autoscaler,
            pulsar_admin_url: "http://pulsar:8080",
        })
        .unwrap()
    }

    fn orders(partitions: Option<i32>) -> SubscribedTopic {
        SubscribedTopic {
            topic: PulsarTopic::of("tn-acme--prod", "orders", Persistence::Persistent).unwrap(),
            partitions,
        }
    }

    fn processor(subscription_type: &str, max: i32) -> Workload {
        workload(json!({
            "template": "EventProcessor", "serviceIdentity": "orders", "image": "orders:1",
            "subscription": {"topic": "orders", "name": "billing", "type": subscription_type},
            "scaling": {"minReplicas": 2, "maxReplicas": max, "backlogTarget": 500},
        }))
    }

    #[test]
    fn an_endpoint_gets_a_deployment_with_secrets_as_files_and_probes_on_management() {
        let w = workload(json!({
            "template": "CommandEndpoint", "serviceIdentity": "orders", "image": "orders:1",
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "resources": {"requests": {"cpu": "0.1"}, "limits": {"memory": "1024Mi"}},
        }));
        let o = objects(&w, None, Autoscaler::Keda);
        let d = serde_json::to_value(&o.deployment).unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        let labels = &d["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "orders-api");
        assert_eq!(labels["app.kubernetes.io/component"], "command-endpoint");
        assert_eq!(labels["app.kubernetes.io/part-of"], "orders");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ossature");
        assert_eq!(labels["ossature.dev/tenant"], "acme");
        let pod = &d["spec"]["template"];
        assert_eq!(
            pod["metadata"]["annotations"][SECRETS_HASH_ANNOTATION],
            "abc123"
        );
        assert_eq!(pod["spec"]["serviceAccountName"], "orders");
        assert_eq!(
            pod["spec"]["volumes"][0]["secret"]["secretName"],
            "orders-secrets"
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["volumeMounts"][0]["mountPath"], SECRETS_DIR);
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "management");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        // As the apiserver keeps them: compared equal when nothing changed.
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        assert_eq!(c["resources"]["limits"], json!({"memory": "1Gi"}));
        // No environment variable comes from a Secret.
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().all(|e| e.get("valueFrom").is_none()));
        assert!(env.iter().any(|e| e["name"] == "LOG_LEVEL"));
        // Selectors use only labels that never change.
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "orders-api", "app.kubernetes.io/instance": "orders-api"})
        );
        // The Service carries the traffic port only.
        let s = serde_json::to_value(&o.service).unwrap();
        let ports = s["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0]["port"], 8080);
        let np = serde_json::to_value(&o.network_policy).unwrap();
        assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 8080);
        assert_eq!(np["spec"]["ingress"][1]["ports"][0]["port"], 9090);
        assert!(o.disruption_budget.is_none(), "one replica: no PDB");
        assert!(o.scaler.is_none());
    }

    #[test]
    fn a_new_secret_changes_the_pod_template() {
        let w = workload(
            json!({"template": "QueryEndpoint", "serviceIdentity": "orders", "image": "q:1", "replicas": 3}),
        );
        let service = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        let with_hash = |hash| {
            desired(&WorkloadInput {
                workload: &w,
                service: &service,
                service_id: "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
                secrets_hash: hash,
                subscribed: None,
                autoscaler: Autoscaler::Hpa,
                pulsar_admin_url: "",
            })
            .unwrap()
        };
        let (a, b) = (with_hash("one"), with_hash("two"));
        assert_ne!(a.deployment.spec.template, b.deployment.spec.template);
        let pdb = serde_json::to_value(a.disruption_budget.unwrap()).unwrap();
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    }

    #[test]
    fn replicas_never_exceed_what_the_subscription_type_lets_work() {
        let scaling = |max| Scaling {
            min_replicas: 2,
            max_replicas: max,
            backlog_target: 1,
        };
        assert_eq!(
            scaling_bounds(&scaling(10), SubscriptionType::Shared, Some(3)),
            (2, 10)
        );
        assert_eq!(
            scaling_bounds(&scaling(10), SubscriptionType::KeyShared, None),
            (2, 10)
        );
        assert_eq!(
            scaling_bounds(&scaling(10), SubscriptionType::Failover, Some(4)),
            (2, 4)
        );
        assert_eq!(
            scaling_bounds(&scaling(3), SubscriptionType::Failover, Some(8)),
            (2, 3)
        );
        assert_eq!(
            scaling_bounds(&scaling(10), SubscriptionType::Failover, None),
            (1, 1)
        );
        assert_eq!(
            scaling_bounds(&scaling(10), SubscriptionType::Exclusive, Some(8)),
            (1, 1)
        );
    }

    #[test]
    fn a_processor_scales_on_its_backlog_with_keda() {
        let w = processor("Failover", 10);
        let topic = orders(Some(4));
        let o = objects(&w, Some(&topic), Autoscaler::Keda);
        let d = serde_json::to_value(&o.deployment).unwrap();
        assert!(
            d["spec"].get("replicas").is_none(),
            "the scaler owns replicas"
        );
        let Some(Scaler::Keda {
            scaled_object,
            trigger_authentication,
        }) = o.scaler
        else {
            panic!("a ScaledObject");
        };
        assert_eq!(scaled_object["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(scaled_object["spec"]["minReplicaCount"], 2);
        assert_eq!(
            scaled_object["spec"]["maxReplicaCount"], 4,
            "capped by partitions"
        );
        let trigger = &scaled_object["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "pulsar");
        assert_eq!(
            trigger["metadata"]["topic"],
            "persistent://acme/prod/orders"
        );
        assert_eq!(trigger["metadata"]["subscription"], "billing");
        assert_eq!(trigger["metadata"]["isPartitionedTopic"], "true");
        assert_eq!(trigger["metadata"]["msgBacklogThreshold"], "500");
        assert_eq!(
            trigger["authenticationRef"]["name"],
            trigger_authentication["metadata"]["name"]
        );
        assert_eq!(
            trigger_authentication["spec"]["secretTargetRef"][0]["key"],
            PULSAR_TOKEN_KEY
        );
        assert!(o.disruption_budget.is_some(), "at least two replicas");
    }

    #[test]
    fn without_keda_an_hpa_reads_the_backlog_as_an_external_metric() {
        let w = processor("Shared", 10);
        let topic = orders(None);
        let o = objects(&w, Some(&topic), Autoscaler::Hpa);
        let Some(Scaler::Hpa(hpa)) = o.scaler else {
            panic!("an HPA");
        };
        let hpa = serde_json::to_value(hpa).unwrap();
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 10);
        let metric = &hpa["spec"]["metrics"][0]["external"];
        assert_eq!(metric["metric"]["name"], BACKLOG_METRIC);
        assert_eq!(
            metric["metric"]["selector"]["matchLabels"]["topic"],
            "orders"
        );
        assert_eq!(
            metric["metric"]["selector"]["matchLabels"]["subscription"],
            "billing"
        );
        assert_eq!(metric["target"]["averageValue"], "500");
        // The default target, as the apiserver keeps it.
        let w = workload(json!({
            "template": "EventSink", "serviceIdentity": "orders", "image": "orders:1",
            "subscription": {"topic": "orders", "name": "billing"},
            "scaling": {"maxReplicas": 4},
        }));
        let Some(Scaler::Hpa(hpa)) = objects(&w, Some(&topic), Autoscaler::Hpa).scaler else {
            panic!("an HPA");
        };
        let hpa = serde_json::to_value(hpa).unwrap();
        assert_eq!(
            hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"],
            "1k"
        );
    }

    #[test]
    fn a_workload_outside_its_services_environment_is_refused() {
        let mut w = processor("Shared", 2);
        let service = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        let refused = |w: &Workload| {
            desired(&WorkloadInput {
                workload: w,
                service: &service,
                service_id: "x",
                secrets_hash: "x",
                subscribed: None,
                autoscaler: Autoscaler::Hpa,
                pulsar_admin_url: "",
            })
            .unwrap_err()
        };
        assert_eq!(refused(&w), WorkloadError::NoSubscribedTopic);
        w.metadata.namespace = Some("tn-acme--staging".into());
        assert_eq!(refused(&w), WorkloadError::ServiceElsewhere);
        w.metadata.namespace = Some("tn-acme".into());
        assert_eq!(refused(&w), WorkloadError::NotInEnvironment);
    }

    fn identity(status: Value) -> ServiceIdentity {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
            "metadata": {"name": "orders", "namespace": "tn-acme--prod"},
            "spec": {"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_workload_waits_for_what_its_service_identity_makes() {
        let why = identity_of(None, "orders").unwrap_err();
        assert!(
            why.contains("ServiceIdentity orders, which does not exist"),
            "{why}"
        );
        let account = |ok: &str| {
            json!([{"type": "AccountReady", "status": ok, "reason": "Provisioned",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
        };
        // Named in its status before it is made: not yet.
        let why = identity_of(
            Some(&identity(
                json!({"serviceAccount": "orders", "secretName": "orders-secrets",
                                  "secretsHash": "h1", "conditions": account("False")}),
            )),
            "orders",
        )
        .unwrap_err();
        assert!(
            why.contains("to make its ServiceAccount (Provisioned"),
            "{why}"
        );
        let why = identity_of(
            Some(&identity(
                json!({"serviceAccount": "orders", "conditions": account("True")}),
            )),
            "orders",
        )
        .unwrap_err();
        assert!(why.contains("no secretName, secretsHash yet"), "{why}");
        let made = identity(json!({
            "serviceAccount": "orders-sa", "secretName": "orders-files", "secretsHash": "h1",
            "conditions": account("True"),
        }));
        let found = identity_of(Some(&made), "orders").unwrap();
        assert_eq!(found.id, "01JQ3X5T0RYB9Q8K1W7ZC4M2NP");
        assert_eq!(found.secrets_hash, "h1");
        // The names it reports are the ones the pods use.
        let names = found.names("tn-acme--prod", "orders").unwrap();
        assert_eq!(
            (names.service_account.as_str(), names.secret_name.as_str()),
            ("orders-sa", "orders-files")
        );
        assert_eq!(names.tenant, "acme");
        let mut going = made;
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(
            identity_of(Some(&going), "orders")
                .unwrap_err()
                .contains("being deleted")
        );
    }

    fn topic(generation: i64, status: Value) -> Topic {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "tn-acme--prod", "generation": generation},
            "spec": {"partitions": 3},
            "status": status,
        }))
        .unwrap()
    }

    fn ready(generation: i64, ok: bool) -> Value {
        json!({"observedGeneration": generation, "conditions": [{
            "type": "Ready", "status": if ok { "True" } else { "False" },
            "reason": if ok { "Provisioned" } else { "SchemaIncompatible" },
            "message": "the broker says no", "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]})
    }

    #[test]
    fn a_subscription_waits_for_its_topic_ready_for_its_current_spec() {
        let (reason, why) = subscribed_topic(None, "orders").unwrap_err();
        assert_eq!(reason, reasons::TOPIC_NOT_FOUND);
        assert!(why.contains("Topic orders does not exist"), "{why}");
        let (reason, why) =
            subscribed_topic(Some(&topic(2, ready(2, false))), "orders").unwrap_err();
        assert_eq!(reason, reasons::WAITING_FOR_TOPIC);
        assert!(
            why.contains("SchemaIncompatible: the broker says no"),
            "{why}"
        );
        // Ready for an older spec (fewer partitions, maybe): not yet.
        assert!(subscribed_topic(Some(&topic(3, ready(2, true))), "orders").is_err());
        let found = subscribed_topic(Some(&topic(2, ready(2, true))), "orders").unwrap();
        assert_eq!(found.partitions, Some(3));
        assert_eq!(found.topic.to_string(), "persistent://acme/prod/orders");
    }

    #[test]
    fn replicas_outside_the_bounds_are_brought_back_inside_and_others_left_to_the_autoscaler() {
        let scaled = Replicas::Scaled { min: 2, max: 4 };
        assert_eq!(scaled.correction(None), Some(2), "a new Deployment has one");
        assert_eq!(scaled.correction(Some(1)), Some(2));
        assert_eq!(scaled.correction(Some(3)), None);
        assert_eq!(scaled.correction(Some(9)), Some(4));
        assert_eq!(
            Replicas::Fixed(3).correction(Some(1)),
            None,
            "the spec sets them"
        );
        assert_eq!(scaled.needed(), 2);
        assert_eq!(Replicas::Fixed(3).needed(), 3);
    }

    fn deployment(generation: i64, replicas: i32, status: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "orders-api", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_is_available_once_rolled_out_with_the_replicas_needed() {
        let status = |observed: i64, updated: i32, available: i32| {
            json!({"observedGeneration": observed, "replicas": updated,
                   "updatedReplicas": updated, "availableReplicas": available})
        };
        let (ok, message) = availability(&deployment(2, 3, status(2, 3, 3)), 3);
        assert!(ok, "{message}");
        assert_eq!(message, "Deployment orders-api: 3 of 3 replicas available");
        let (ok, message) = availability(&deployment(2, 3, status(2, 3, 1)), 3);
        assert!(!ok);
        assert!(
            message.ends_with("1 of 3 replicas available, 3 needed"),
            "{message}"
        );
        let (ok, message) = availability(&deployment(2, 3, status(1, 3, 3)), 3);
        assert!(!ok && message.contains("has not acted on yet"), "{message}");
        let (ok, message) = availability(&deployment(2, 3, status(2, 1, 3)), 3);
        assert!(!ok && message.contains("rolling out: 1 of 3"), "{message}");
        // A new pod that cannot start keeps the old one serving: still
        // rolling out, however many are available.
        let stuck = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1,
                           "availableReplicas": 1});
        let (ok, message) = availability(&deployment(2, 1, stuck), 1);
        assert!(!ok, "{message}");
        assert!(
            message.ends_with("1 of the previous template remaining"),
            "{message}"
        );
        // Scaled: the autoscaler's minimum is enough.
        assert!(availability(&deployment(1, 3, status(1, 3, 2)), 2).0);
        // Nothing is needed of a Deployment scaled to zero.
        assert!(availability(&deployment(1, 0, json!({"observedGeneration": 1})), 0).0);
    }
}
