//! `Workload`: a product service run on the platform from one of four templates.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Conditions;

/// A product service run on the platform, in an environment's namespace:
/// a Deployment running as its ServiceIdentity's ServiceAccount, a Service
/// on the traffic port, probes and metrics on a separate management port
/// (`/livez`, `/readyz`, `/metrics`), a NetworkPolicy, a
/// PodDisruptionBudget with more than one replica, and the service's
/// secrets as files under `/var/run/secrets/ossature` (never environment
/// variables). Event processors and sinks scale on their subscription's
/// backlog. Containers run as a non-root user.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ossature.dev",
    doc = "A product service run on the platform: Deployment, Service, secrets as files, and backlog scaling for event processors and sinks.",
    version = "v1alpha1",
    kind = "Workload",
    plural = "workloads",
    shortname = "owl",
    category = "ossature",
    namespaced,
    status = "WorkloadStatus",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.template"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.serviceIdentity"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.availableReplicas"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 50").message("workload name must be a DNS label of at most 50 characters (lowercase letters, digits and '-', starting with a letter): it names the Deployment, Service and their companions")
)]
#[x_kube(
    validation = Rule::new("self.trafficPort != self.managementPort").message("trafficPort and managementPort must differ: probes and metrics stay off the port that serves traffic"),
    validation = Rule::new("(self.template == 'EventProcessor' || self.template == 'EventSink') == has(self.subscription)").message("EventProcessor and EventSink workloads name the subscription they consume; CommandEndpoint and QueryEndpoint workloads do not"),
    validation = Rule::new("!has(self.scaling) || self.template == 'EventProcessor' || self.template == 'EventSink'").message("scaling follows a subscription's backlog, so only EventProcessor and EventSink workloads have it; set replicas instead"),
    validation = Rule::new("!has(self.scaling) || !has(self.replicas)").message("with scaling, the number of replicas is the autoscaler's, between scaling.minReplicas and scaling.maxReplicas; leave replicas out"),
    validation = Rule::new("!has(self.subscription) || self.subscription.type != 'Exclusive' || ((!has(self.replicas) || self.replicas <= 1) && (!has(self.scaling) || self.scaling.maxReplicas <= 1))").message("an Exclusive subscription admits one consumer: use at most one replica, or a Shared or KeyShared subscription to spread the work")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// What kind of service it is: `CommandEndpoint` and `QueryEndpoint`
    /// serve requests; `EventProcessor` consumes and produces events;
    /// `EventSink` consumes events into something outside the platform.
    pub template: WorkloadTemplate,

    /// The ServiceIdentity (in this namespace) it runs as.
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub service_identity: String,

    /// The container image, such as `registry.example/orders:1.4.2`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("!self.matches('\\\\s')").message("image must not contain whitespace"))]
    pub image: String,

    /// Replicas to run. Default: 1. Leave out with `scaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,

    /// The port that serves traffic; the Service exposes only this one.
    /// Default: 8080.
    #[serde(default = "default_traffic_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub traffic_port: i32,

    /// The port of probes (`/livez`, `/readyz`) and metrics (`/metrics`).
    /// Default: 9090.
    #[serde(default = "default_management_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub management_port: i32,

    /// Plain settings as environment variables. Secrets are never given
    /// here: they reach the container as files from the service's OpenBao
    /// path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// CPU and memory of the container.
    #[serde(default)]
    pub resources: Resources,

    /// For EventProcessor and EventSink: the subscription it consumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,

    /// For EventProcessor and EventSink: scale on the subscription's backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

fn default_traffic_port() -> i32 {
    8080
}

fn default_management_port() -> i32 {
    9090
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WorkloadTemplate {
    CommandEndpoint,
    QueryEndpoint,
    EventProcessor,
    EventSink,
}

impl WorkloadTemplate {
    /// Whether it consumes a subscription.
    pub fn consumes(self) -> bool {
        matches!(
            self,
            WorkloadTemplate::EventProcessor | WorkloadTemplate::EventSink
        )
    }

    /// As the `app.kubernetes.io/component` label writes it.
    pub fn component(self) -> &'static str {
        match self {
            WorkloadTemplate::CommandEndpoint => "command-endpoint",
            WorkloadTemplate::QueryEndpoint => "query-endpoint",
            WorkloadTemplate::EventProcessor => "event-processor",
            WorkloadTemplate::EventSink => "event-sink",
        }
    }
}

/// A plain setting: a literal value, never a reference to a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("!self.name.upperAscii().matches('(PASSWORD|PASSWD|SECRET|PRIVATE_KEY|API_KEY|CREDENTIAL)')").message("this looks like a secret: secrets are not environment variables; put it in the service's OpenBao path and read it from /var/run/secrets/ossature"),
    validation = Rule::new("!self.name.startsWith('OSSATURE_')").message("names starting with OSSATURE_ are set by the platform")
)]
pub struct EnvVar {
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Requests and limits of the container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// What is reserved for it. Without it, the namespace's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    /// The most it may use. Without it, the namespace's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    /// Such as `250m` or `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Such as `256Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// The subscription an event processor or sink consumes. Its ServiceIdentity
/// must be granted `Consume` on the topic with this subscription name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The Topic, by its name in this namespace.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"))]
    pub topic: String,
    /// The subscription's name.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-_.a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// How messages are spread over the consumers. Default: `Shared`.
    #[serde(rename = "type", default)]
    pub subscription_type: SubscriptionType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SubscriptionType {
    /// One consumer; any other is refused.
    Exclusive,
    /// One active consumer per partition; the others wait as standbys.
    Failover,
    /// Messages spread over every consumer.
    #[default]
    Shared,
    /// Messages spread over every consumer, each key to one of them.
    KeyShared,
}

/// Replicas follow the subscription's backlog, within bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("scaling.minReplicas must not exceed scaling.maxReplicas")
)]
pub struct Scaling {
    /// Fewest replicas. Default: 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most replicas; never more than the topic's partitions with a
    /// Failover subscription.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Unacknowledged messages per replica to aim for. Default: 1000.
    #[serde(default = "default_backlog_target")]
    #[schemars(range(min = 1, max = 100000000))]
    pub backlog_target: i64,
}

fn one() -> i32 {
    1
}

fn default_backlog_target() -> i64 {
    1000
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Generation of the spec the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (following the Deployment's available replicas),
    /// `SecretsReady` (its ServiceIdentity's ServiceAccount and Secret),
    /// `MessagingReady` (the subscription of a processor or sink),
    /// `DeploymentReady`, `ScalingReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// Replicas wanted now (the spec's, or the autoscaler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Replicas available, from the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// What scales it: `KEDA`, `HPA`, or nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<String>,
}

crate::conditioned!(WorkloadStatus);
