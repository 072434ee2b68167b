//! Everything Ossature decides without calling anything: the names every
//! backend object gets, the desired state of each backend object, the scope
//! tree, issuance and renewal rules, custom domains, and the condition
//! roll-up. Pure: no async runtime, no Kubernetes or HTTP client, so the
//! operators and the control plane (which shows what a change will do before
//! it is made) compute the same desired state.

pub mod certificates;
pub mod conditions;
pub mod domains;
pub mod environments;
pub mod identity;
pub mod issuers;
pub mod messaging;
pub mod names;
pub mod objects;
pub mod plan;
pub mod platform;
pub mod quantities;
pub mod scopes;
pub mod secrets;
pub mod services;
pub mod tenants;
pub mod time;
pub mod topics;
pub mod tree;
pub mod workloads;

pub use names::{TenantNames, tenant_namespace};
pub use platform::Platform;
