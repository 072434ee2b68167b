//! A tenant's custom domains. A domain becomes the tenant's once a DNS TXT
//! record the operator names holds the value it names (a value no other
//! tenant can reuse: it is drawn from the tenant's uid). One tenant at a
//! time holds a domain: the holder is a Lease named after the domain,
//! created once, so of two tenants proving it only the first gets it; a
//! second is `Stalled` with reason `DomainClaimed` and never serves it. A
//! domain covers the names below it, so a domain above or below one another
//! tenant holds is claimed as well.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use ossature_crds::{DomainState, DomainStatus, Tenant};

use crate::adapters::{Backend, Verb};
use crate::conditions::{self, Outcome, reasons};
use crate::context::Context;
use crate::desired;
use crate::reconcile::Error;

/// The label of the DNS record that proves a domain: `_ossature-challenge.<domain>`.
pub const RECORD_LABEL: &str = "_ossature-challenge";
/// Marks the Leases that hold domains; its value is the domain.
pub const DOMAIN_LABEL: &str = "ossature.dev/domain";
/// The holding tenant's uid, on its Leases: a tenant deleted and created
/// again under the same name must prove its domains again.
const UID_ANNOTATION: &str = "ossature.dev/tenant-uid";
/// Between two looks for a missing TXT record.
pub const RECHECK: Duration = Duration::from_secs(10);
/// Between two tries for a domain another tenant holds.
pub const RECLAIM: Duration = Duration::from_secs(30);

pub fn record_name(domain: &str) -> String {
    format!("{RECORD_LABEL}.{domain}")
}

/// The value the record must hold for this tenant (by uid) and domain.
pub fn record_value(tenant_uid: &str, domain: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{tenant_uid}/{domain}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ossature-domain-verification={hex}")
}

/// The Lease that holds `domain`.
pub fn lease_name(domain: &str) -> String {
    format!("ossature-domain.{domain}")
}

/// Whether one domain is the other or below it, either way.
pub fn overlap(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

/// Whether `name` (a certificate name, a leading `*.` counting as below)
/// is one of `domains` or below one.
pub fn covered<'a>(name: &str, mut domains: impl Iterator<Item = &'a str>) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    domains.any(|d| name == d || name.ends_with(&format!(".{d}")))
}

/// What the tenant's domains came to in this reconcile.
pub struct Domains {
    pub statuses: Vec<DomainStatus>,
    /// The domains it holds: signed into its host certificate, served.
    pub held: Vec<String>,
    /// `DomainsReady`, when the tenant has or had custom domains.
    pub outcome: Option<Outcome>,
    /// `DomainClaimed`, when another tenant holds one of them.
    pub claimed: Option<Outcome>,
    pub due_in: Option<Duration>,
}

/// Who holds a domain, per its Lease.
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

/// Proves, claims and reports each domain of the spec; lets go of those
/// that left it (off the edge first, then their Lease).
pub async fn reconcile(tenant: &Tenant, ctx: &Context) -> Result<Domains, Error> {
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let previous = tenant.status.as_ref();
    for gone in previous
        .into_iter()
        .flat_map(|s| s.verified_domains())
        .filter(|d| !tenant.spec.domains.iter().any(|w| w == d))
    {
        release(ctx, &uid, gone).await?;
    }

    let mut statuses = Vec::new();
    let mut claims = Vec::new();
    let mut pending = Vec::new();
    let mut others: Option<Vec<Lease>> = None;
    for domain in &tenant.spec.domains {
        let record = record_name(domain);
        let value = record_value(&uid, domain);
        let mut status = DomainStatus {
            name: domain.clone(),
            state: DomainState::Pending,
            record: record.clone(),
            value: value.clone(),
            message: None,
        };
        let held_by = match get(ctx, domain).await? {
            Some(lease) => Some(holder(&lease)),
            None => match lookup(ctx, &record).await {
                Err(e) => {
                    status.message =
                        Some(format!("the DNS lookup failed, tried again shortly: {e}"));
                    None
                }
                Ok(values) if !values.contains(&value) => {
                    status.message = Some(format!(
                        "add a DNS TXT record {record} with the value {value}; it is looked for every {}s",
                        RECHECK.as_secs()
                    ));
                    None
                }
                Ok(_) => {
                    let all = match &others {
                        Some(all) => all,
                        None => others.insert(all_claims(ctx).await?),
                    };
                    // A domain above or below it, another tenant's.
                    let overlapping = all.iter().map(holder).zip(all).find(|((_, by), lease)| {
                        *by != uid
                            && lease
                                .labels()
                                .get(DOMAIN_LABEL)
                                .is_some_and(|d| overlap(d, domain))
                    });
                    match overlapping {
                        Some((by, _)) => Some(by),
                        None => Some(claim(ctx, tenant, &name, &uid, domain).await?),
                    }
                }
            },
        };
        match held_by {
            Some((_, by_uid)) if by_uid == uid => status.state = DomainState::Verified,
            Some((by, _)) => {
                status.state = DomainState::Claimed;
                let message = format!(
                    "{domain} (or a domain above or below it) is held by tenant {by}; it is tried again every {}s and is served for {name} once {by} lets it go",
                    RECLAIM.as_secs()
                );
                status.message = Some(message.clone());
                claims.push(message);
            }
            None => pending.push(format!(
                "{domain}: {}",
                status.message.clone().unwrap_or_default()
            )),
        }
        statuses.push(status);
    }

    let held: Vec<String> = statuses
        .iter()
        .filter(|s| s.state == DomainState::Verified)
        .map(|s| s.name.clone())
        .collect();
    let had = previous.is_some_and(|s| {
        !s.domains.is_empty()
            || s.conditions
                .iter()
                .any(|c| c.type_ == conditions::DOMAINS_READY)
    });
    let outcome = if !pending.is_empty() {
        Some(Outcome::failed(
            conditions::DOMAINS_READY,
            reasons::DOMAIN_NOT_VERIFIED,
            pending.join("; "),
        ))
    } else if !claims.is_empty() {
        Some(Outcome::failed(
            conditions::DOMAINS_READY,
            reasons::DOMAIN_CLAIMED,
            claims.join("; "),
        ))
    } else if !statuses.is_empty() || had {
        Some(Outcome::ready(
            conditions::DOMAINS_READY,
            match held.len() {
                0 => "no custom domains".to_string(),
                _ if ctx.edge.is_some() && ctx.settings.host_issuer.is_none() => format!(
                    "{} proven and held; served at the edge once the operator has a --host-issuer (the tenant CA signs names under the tenant's host only)",
                    held.join(", ")
                ),
                _ => format!("{} proven and held", held.join(", ")),
            },
        ))
    } else {
        None
    };
    let claimed = (!claims.is_empty()).then(|| {
        Outcome::failed(
            conditions::STALLED,
            reasons::DOMAIN_CLAIMED,
            claims.join("; "),
        )
    });
    let due_in = match (pending.is_empty(), claims.is_empty()) {
        (false, _) => Some(RECHECK),
        (true, false) => Some(RECLAIM),
        (true, true) => None,
    };
    Ok(Domains {
        statuses,
        held,
        outcome,
        claimed,
        due_in,
    })
}

async fn lookup(ctx: &Context, record: &str) -> Result<Vec<String>, String> {
    match &ctx.dns {
        Some(dns) => dns.txt(record).await,
        None => Err("the operator runs without a DNS resolver".into()),
    }
}

/// Every domain Lease, of every tenant.
async fn all_claims(ctx: &Context) -> Result<Vec<Lease>, kube::Error> {
    ctx.calls.record(Backend::Kubernetes, Verb::Read);
    Ok(leases(ctx)
        .list(&ListParams::default().labels(DOMAIN_LABEL))
        .await?
        .items)
}

/// Creates the domain's Lease for this tenant; if another got there first,
/// that one holds it.
async fn claim(
    ctx: &Context,
    tenant: &Tenant,
    name: &str,
    uid: &str,
    domain: &str,
) -> Result<(String, String), kube::Error> {
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(lease_name(domain)),
            labels: Some({
                let mut labels = desired::labels(name, None);
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
            holder_identity: Some(name.to_string()),
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
pub async fn release(ctx: &Context, uid: &str, domain: &str) -> Result<(), Error> {
    if let Some(edges) = &ctx.edge {
        edges
            .remove(domain.to_string())
            .await
            .map_err(|f| Error::Blocked(format!("taking {domain} off the edge: {}", f.message)))?;
    }
    let Some(lease) = get(ctx, domain).await? else {
        return Ok(());
    };
    if holder(&lease).1 != uid {
        return Ok(());
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
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_value_is_the_tenants_own() {
        let a = record_value("uid-a", "shop.example.test");
        assert!(a.starts_with("ossature-domain-verification="));
        assert_eq!(a, record_value("uid-a", "shop.example.test"));
        assert_ne!(a, record_value("uid-b", "shop.example.test"));
        assert_ne!(a, record_value("uid-a", "other.example.test"));
        assert_eq!(
            record_name("shop.example.test"),
            "_ossature-challenge.shop.example.test"
        );
    }

    #[test]
    fn domains_overlap_above_and_below_not_beside() {
        assert!(overlap("example.test", "example.test"));
        assert!(overlap("shop.example.test", "example.test"));
        assert!(overlap("example.test", "a.shop.example.test"));
        assert!(!overlap("myexample.test", "example.test"));
        assert!(!overlap("shop.example.test", "blog.example.test"));
    }

    #[test]
    fn held_domains_cover_the_names_below_them() {
        let held = ["shop.example.test"];
        assert!(covered("shop.example.test", held.into_iter()));
        assert!(covered("api.shop.example.test", held.into_iter()));
        assert!(covered("*.shop.example.test", held.into_iter()));
        assert!(!covered("example.test", held.into_iter()));
        assert!(!covered("evilshop.example.test", held.into_iter()));
    }
}
