//! A tenant's custom domains (`DomainsReady`), as the model decides them
//! (see [`ossature_model::domains`]): the plan reads each domain's Lease and
//! DNS record; a step claims the proven ones (creates their Leases) and lets
//! go of those that left the spec (off the edge, then their Lease).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use ossature_crds::{Tenant, TenantStatus};
use ossature_model::domains::{self, DOMAIN_LABEL, Seen, UID_ANNOTATION, lease_name, overlap};
use ossature_model::conditions::{self, Outcome, reasons};
use ossature_model::names::labels;

use super::Provisioning;
use crate::adapters::{Backend, Change, Failure, Verb};
use crate::context::Context;
use crate::reconcile::{Error, Plan, Report, Step};

/// Who holds a domain, per its Lease: the tenant's name and uid.
fn holder(lease: &Lease) -> (String, String) {
    let tenant = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    let uid = lease
        .annotations()
        .get(UID_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    (tenant, uid)
}

fn leases(ctx: &Context) -> Api<Lease> {
    Api::namespaced(ctx.client.clone(), &ctx.settings.lease_namespace)
}

async fn get(ctx: &Context, domain: &str) -> Result<Option<Lease>, kube::Error> {
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    leases(ctx).get_opt(&lease_name(domain)).await
}

/// Every domain Lease, of every tenant.
async fn all_claims(ctx: &Context) -> Result<Vec<Lease>, kube::Error> {
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    Ok(leases(ctx)
        .list(&ListParams::default().labels(DOMAIN_LABEL))
        .await?
        .items)
}

impl<'a> Provisioning<'a> {
    /// Reads and decides the tenant's domains; the claims and releases are
    /// a step. Returns the domains it holds now (served, signed into its
    /// host certificate) and the Stalled outcome when another tenant holds
    /// one of them.
    pub(super) async fn domains(
        &self,
        plan: &mut Plan<'a, TenantStatus>,
    ) -> Result<domains::Domains, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let uid = tenant.uid().unwrap_or_default();
        let mut seen = Vec::new();
        let mut others: Option<Vec<Lease>> = None;
        for domain in &tenant.spec.domains {
            let found = match get(ctx, domain).await? {
                Some(lease) => match holder(&lease) {
                    (_, by) if by == uid => Seen::Held,
                    (by, _) => Seen::HeldBy(by),
                },
                None => match lookup(ctx, &domains::record_name(domain)).await {
                    Err(e) => Seen::LookupFailed(e),
                    Ok(values) if !values.contains(&domains::record_value(&uid, domain)) => {
                        Seen::NotProven
                    }
                    Ok(_) => {
                        let all = match &others {
                            Some(all) => all,
                            None => others.insert(all_claims(ctx).await?),
                        };
                        // A domain above or below it, another tenant's.
                        let overlapping = all.iter().find(|lease| {
                            holder(lease).1 != uid
                                && lease
                                    .labels()
                                    .get(DOMAIN_LABEL)
                                    .is_some_and(|d| overlap(d, domain))
                        });
                        match overlapping {
                            Some(lease) => Seen::HeldBy(holder(lease).0),
                            None => Seen::Claimable,
                        }
                    }
                },
            };
            seen.push((domain.clone(), found));
        }
        let served_later = ctx.edge.is_some() && ctx.settings.platform.host_issuer.is_none();
        let decided = domains::decide(tenant, &uid, &seen, served_later);
        plan.status.domains = decided.statuses.clone();
        plan.due_within(decided.due_in);
        if decided.to_claim.is_empty() && decided.to_release.is_empty() {
            plan.outcomes.extend(decided.outcome.clone());
            return Ok(decided);
        }
        let previous = tenant.status.as_ref().map(|s| s.domains.clone());
        let (to_claim, to_release) = (decided.to_claim.clone(), decided.to_release.clone());
        plan.step(Step::reporting(
            conditions::DOMAINS_READY,
            "custom domains",
            async move {
                let result = async {
                    let mut changes = Vec::new();
                    for domain in &to_release {
                        changes.push(release(ctx, &uid, domain).await?);
                    }
                    let mut claimed = BTreeMap::new();
                    for domain in &to_claim {
                        let (by, by_uid) = claim(ctx, tenant, &uid, domain).await?;
                        changes.push(Change::Created);
                        claimed.insert(domain.clone(), (by, by_uid));
                    }
                    Ok::<_, Failure>((changes, claimed))
                }
                .await;
                match result {
                    Ok((changes, claimed)) => {
                        let seen: Vec<(String, Seen)> = seen
                            .into_iter()
                            .map(|(domain, found)| match claimed.get(&domain) {
                                Some((_, by_uid)) if *by_uid == uid => (domain, Seen::Held),
                                Some((by, _)) => (domain, Seen::HeldBy(by.clone())),
                                None => (domain, found),
                            })
                            .collect();
                        let now = domains::decide(tenant, &uid, &seen, served_later);
                        let ours: Vec<&str> = claimed
                            .iter()
                            .filter(|(_, (_, by_uid))| *by_uid == uid)
                            .map(|(d, _)| d.as_str())
                            .collect();
                        // Held now, served from the next reconcile (its host
                        // certificate and route include it then).
                        let outcome = match ours.is_empty() {
                            true => now.outcome.clone(),
                            false => Some(Outcome::failed(
                                conditions::DOMAINS_READY,
                                reasons::PROGRESSING,
                                format!("{} proven and held; being served", ours.join(", ")),
                            )),
                        };
                        let report = Report {
                            result: Ok(changes),
                            outcome,
                            stalled: now.claimed.clone(),
                            found: None,
                        };
                        let statuses = now.statuses;
                        // A domain just claimed is served at the next reconcile.
                        let due = (!to_claim.is_empty())
                            .then_some(domains::CLAIMED_JUST_NOW)
                            .or(now.due_in);
                        report.found(move |status: &mut TenantStatus| {
                            status.domains = statuses;
                            due
                        })
                    }
                    // What was held stays in status, so the next reconcile
                    // lets go of it again.
                    Err(failure) => {
                        Report::of(Err(failure)).found(move |status: &mut TenantStatus| {
                            status.domains = previous.unwrap_or_default();
                            None
                        })
                    }
                }
            },
        ));
        Ok(decided)
    }
}

async fn lookup(ctx: &Context, record: &str) -> Result<Vec<String>, String> {
    match &ctx.dns {
        Some(dns) => dns.txt(record).await,
        None => Err("the operator runs without a DNS resolver".into()),
    }
}

/// Creates the domain's Lease for this tenant; if another got there first,
/// that one holds it.
async fn claim(
    ctx: &Context,
    tenant: &Tenant,
    uid: &str,
    domain: &str,
) -> Result<(String, String), kube::Error> {
    let name = tenant.name_any();
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(lease_name(domain)),
            labels: Some({
                let mut labels = labels(&name, None);
                labels.insert(DOMAIN_LABEL.to_string(), domain.to_string());
                labels
            }),
            annotations: Some(BTreeMap::from([(
                UID_ANNOTATION.to_string(),
                uid.to_string(),
            )])),
            // Gone with the tenant even if its cleanup never runs.
            owner_references: tenant.controller_owner_ref(&()).map(|mut o| {
                o.controller = Some(false);
                o.block_owner_deletion = Some(false);
                vec![o]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            ..Default::default()
        }),
    };
    ctx.calls.record(Backend::Kubernetes, Verb::Write);
    match leases(ctx).create(&PostParams::default(), &lease).await {
        Ok(created) => Ok(holder(&created)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let lease = get(ctx, domain).await?;
            Ok(lease.as_ref().map(holder).unwrap_or_default())
        }
        Err(e) => Err(e),
    }
}

/// Lets go of a domain this tenant held: off the edge, then its Lease (only
/// if it is still this tenant's).
pub(super) async fn release(ctx: &Context, uid: &str, domain: &str) -> Result<Change, Failure> {
    if let Some(edges) = &ctx.edge {
        edges.remove(domain.to_string()).await.map_err(|f| {
            Failure::new(
                f.category,
                format!("taking {domain} off the edge: {}", f.message),
            )
        })?;
    }
    let Some(lease) = get(ctx, domain).await? else {
        return Ok(Change::Absent);
    };
    if holder(&lease).1 != uid {
        return Ok(Change::Absent);
    }
    ctx.calls.record(Backend::Kubernetes, Verb::Write);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.meta().uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match leases(ctx).delete(&lease.name_any(), &params).await {
        Ok(_) => Ok(Change::Deleted),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            Ok(Change::Absent)
        }
        Err(e) => Err(e.into()),
    }
}
