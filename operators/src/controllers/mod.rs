//! One module per kind: what it reads, its steps, its cleanup, its status.
//! Kinds are registered below, one line each.

mod namespaces;

use std::sync::Arc;

use ossature_crds::Tenant;
use ossature_model::conditions::reasons;
use ossature_model::names::{tenant_of, tenant_of_any};

use crate::context::Context;
use crate::reconcile::{Error, Kinds, Plan};

/// Declares each kind's module and registers the kind with the registry.
macro_rules! kinds {
    ($($module:ident => $kind:ty),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every kind this operator reconciles. Tenants and AcmeIssuers keep
        /// to `selector`; the other kinds follow their tenant.
        pub fn kinds(client: &kube::Client, selector: Option<&str>, work: crate::metrics::Work) -> Kinds {
            Kinds::new(client, selector, work)$(.with::<$kind>())+
        }
    };
}

kinds! {
    tenant => ossature_crds::Tenant,
    scope => ossature_crds::Scope,
    environment => ossature_crds::Environment,
    certificate => ossature_crds::Certificate,
    acme_issuer => ossature_crds::AcmeIssuer,
    topic => ossature_crds::Topic,
    service_identity => ossature_crds::ServiceIdentity,
    workload => ossature_crds::Workload,
    tenant_role => ossature_crds::TenantRole,
}

/// Which of a tenant's namespaces a kind's objects live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    /// `tn-<tenant>` only.
    Tenant,
    /// `tn-<tenant>` or one of its environments' `tn-<tenant>--<environment>`.
    TenantOrEnvironment,
}

/// The tenant an object in `namespace` belongs to, or, as a Stalled plan
/// keeping the previous status, why it has none (what admission cannot see).
async fn owning_tenant<'a, S>(
    ctx: &Context,
    namespace: &str,
    (kinds, home): (&str, Home),
    previous: S,
) -> Result<Result<(String, Arc<Tenant>), Plan<'a, S>>, Error> {
    let tenant = match home {
        Home::Tenant => tenant_of(namespace),
        Home::TenantOrEnvironment => tenant_of_any(namespace),
    };
    let Some(tenant) = tenant else {
        let homes = match home {
            Home::Tenant => "tn-<tenant>",
            Home::TenantOrEnvironment => "tn-<tenant> or tn-<tenant>--<environment>",
        };
        return Ok(Err(Plan::stalled(
            previous,
            reasons::NOT_IN_TENANT_NAMESPACE,
            format!("namespace {namespace} is not a tenant namespace; create {kinds} in {homes}"),
        )));
    };
    match ctx.find::<Tenant>(tenant).await? {
        Some(owner) => Ok(Ok((tenant.to_string(), owner))),
        None => Ok(Err(Plan::stalled(
            previous,
            reasons::TENANT_NOT_FOUND,
            format!("tenant {tenant} does not exist; create it (or apply its file) first"),
        ))),
    }
}
