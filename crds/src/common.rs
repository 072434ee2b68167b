//! Types shared by several resources.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to backend objects (realm, Pulsar tenant, OpenBao mounts, ...)
/// when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Remove everything that was provisioned, in reverse order.
    #[default]
    Delete,
    /// Keep backend objects; only Ossature's bookkeeping goes.
    Retain,
}

/// Resource limits, turned into a ResourceQuota and a LimitRange, and the
/// limits of messaging in Pulsar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Total CPU requests allowed, e.g. `4` or `2500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory requests allowed, e.g. `8Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Largest number of pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub pods: Option<i32>,
    /// Total persistent storage requested, e.g. `100Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// Most topics in one Pulsar namespace (each environment has one). A
    /// Tenant's value holds in every environment that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub topics: Option<i32>,
    /// Most unconsumed data one topic may hold, e.g. `10Gi`; beyond it the
    /// broker holds producers back. A Tenant's value holds in every
    /// environment that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("backlog must be a positive quantity of bytes, such as 512Mi or 10Gi"))]
    pub backlog: Option<Quantity>,
    /// Most messages per second published to one topic. A Tenant's value
    /// holds in every environment that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub publish_rate: Option<i32>,
    /// Most partitions of one topic. A Tenant's value holds in every
    /// environment that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,
}

/// Conditions as kstatus reads them: one per backend plus `Ready`.
pub type Conditions = Vec<Condition>;

/// A status with conditions and the generation of the spec they describe:
/// what every kind's status has, so one driver can roll conditions up.
pub trait Conditioned {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, generation: Option<i64>, conditions: Conditions);
}

/// Implements [`Conditioned`] for a status struct with `conditions` and
/// `observed_generation` fields.
#[macro_export]
macro_rules! conditioned {
    ($status:ty) => {
        impl $crate::Conditioned for $status {
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, generation: Option<i64>, conditions: $crate::Conditions) {
                self.observed_generation = generation;
                self.conditions = conditions;
            }
        }
    };
}
