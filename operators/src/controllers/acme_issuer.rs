//! The AcmeIssuer controller: registers (or finds again) the operator's
//! account at an ACME CA and keeps its credentials in a Secret of the issuer
//! namespace (`--acme-namespace`). The accounts in use, and each issuer's
//! rate-limit budget, are kept in memory by [`crate::acme_accounts`], shared
//! by every Certificate of an issuer.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use ossature_crds::{AcmeIssuer, AcmeIssuerStatus};
use ossature_model::conditions;
use ossature_model::issuers::account_secret_name;

use crate::adapters::Failure;
use crate::context::Context;
use crate::kubernetes;
use crate::reconcile::{Error, Plan, Reconciled, Report, Step, event};

pub const FINALIZER: &str = "ossature.dev/acme-issuer-cleanup";

impl Reconciled for AcmeIssuer {
    const CONTROLLER: &'static str = "acmeissuer";
    const FINALIZER: &'static str = FINALIZER;
    const SELECTED_BY_LABEL: bool = true;

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, AcmeIssuerStatus>, Error> {
        let previous = self.status.clone().unwrap_or_default();
        let mut plan = Plan::new(AcmeIssuerStatus {
            account_url: previous.account_url,
            ..Default::default()
        });
        plan.step(Step::reporting(
            conditions::ACCOUNT_READY,
            format!("ACME account at {}", self.spec.directory),
            async move {
                match ctx.acme.refresh(self).await {
                    Ok(handle) => {
                        let url = handle.account.id().to_string();
                        Report::of(Ok(Vec::new())).found(move |status: &mut AcmeIssuerStatus| {
                            status.account_url = Some(url);
                            None
                        })
                    }
                    Err(failure) => Report::<AcmeIssuerStatus>::of(Err::<_, Failure>(failure)),
                }
            },
        ));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let name = self.name_any();
        let users: Vec<String> = ctx
            .stores
            .certificates_of_issuer(&name)
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        if !users.is_empty() {
            return Err(Error::Blocked(format!(
                "AcmeIssuer {name} is still the issuer of {}; delete those Certificates or move them to another issuer first",
                users.join(", ")
            )));
        }
        kubernetes::delete(
            &Api::<Secret>::namespaced(ctx.client.clone(), &ctx.settings.acme_namespace),
            &account_secret_name(&name),
            &ctx.calls,
        )
        .await?;
        ctx.acme.remove(&name);
        Ok(vec![event(
            EventType::Normal,
            "Deprovisioned",
            "Delete",
            "the account's credentials were removed; the account itself stays at the CA, unused",
        )])
    }
}
