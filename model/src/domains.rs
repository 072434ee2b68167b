//! A tenant's custom domains. A domain becomes the tenant's once a DNS TXT
//! record the operator names holds the value it names (a value no other
//! tenant can reuse: it is drawn from the tenant's uid). One tenant at a
//! time holds a domain: the holder is a Lease named after the domain,
//! created once, so of two tenants proving it only the first gets it; a
//! second is `Stalled` with reason `DomainClaimed` and never serves it. A
//! domain covers the names below it, so a domain above or below one another
//! tenant holds is claimed as well.

use std::time::Duration;

use ossature_crds::{DomainState, DomainStatus, Tenant};

use crate::conditions::{self, Outcome, reasons};

/// The label of the DNS record that proves a domain: `_ossature-challenge.<domain>`.
pub const RECORD_LABEL: &str = "_ossature-challenge";
/// Marks the Leases that hold domains; its value is the domain.
pub const DOMAIN_LABEL: &str = "ossature.dev/domain";
/// The holding tenant's uid, on its Leases: a tenant deleted and created
/// again under the same name must prove its domains again.
pub const UID_ANNOTATION: &str = "ossature.dev/tenant-uid";
/// Between two looks for a missing TXT record.
pub const RECHECK: Duration = Duration::from_secs(10);
/// Between two tries for a domain another tenant holds.
pub const RECLAIM: Duration = Duration::from_secs(30);
/// After a domain was claimed: soon back, to serve it.
pub const CLAIMED_JUST_NOW: Duration = Duration::from_millis(200);

pub fn record_name(domain: &str) -> String {
    format!("{RECORD_LABEL}.{domain}")
}

/// The value the record must hold for this tenant (by uid) and domain.
pub fn record_value(tenant_uid: &str, domain: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{tenant_uid}/{domain}").as_bytes(),
    );
    format!(
        "ossature-domain-verification={}",
        crate::names::hex(&digest.as_ref()[..16])
    )
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

/// What was seen of one domain of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Its Lease names this tenant (by uid).
    Held,
    /// Its Lease, or that of a domain above or below it, names another
    /// tenant (by name).
    HeldBy(String),
    /// No Lease; the DNS lookup failed.
    LookupFailed(String),
    /// No Lease; the record does not hold the value.
    NotProven,
    /// No Lease, the record proves it, and no other tenant holds a domain
    /// above or below it: this tenant may claim it.
    Claimable,
}

/// What the tenant's domains come to.
#[derive(Debug, Clone, PartialEq)]
pub struct Domains {
    pub statuses: Vec<DomainStatus>,
    /// The domains it holds: signed into its host certificate, served.
    pub held: Vec<String>,
    /// Proven and free: to be claimed (a Lease created) by a step.
    pub to_claim: Vec<String>,
    /// Held before and gone from the spec: to be let go (off the edge,
    /// then the Lease deleted) by a step.
    pub to_release: Vec<String>,
    /// `DomainsReady`, when the tenant has or had custom domains.
    pub outcome: Option<Outcome>,
    /// `DomainClaimed`, when another tenant holds one of them.
    pub claimed: Option<Outcome>,
    pub due_in: Option<Duration>,
}

/// The decision for `tenant`'s domains from what was `seen` of each domain
/// of its spec (in spec order). `served_later`: the edge serves held
/// domains only with a public host issuer, so say so.
pub fn decide(tenant: &Tenant, uid: &str, seen: &[(String, Seen)], served_later: bool) -> Domains {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let previous = tenant.status.as_ref();
    let to_release: Vec<String> = previous
        .into_iter()
        .flat_map(|s| s.verified_domains())
        .filter(|d| !seen.iter().any(|(w, _)| w == d))
        .map(str::to_string)
        .collect();
    let mut statuses = Vec::new();
    let mut claims = Vec::new();
    let mut pending = Vec::new();
    let mut to_claim = Vec::new();
    for (domain, seen) in seen {
        let record = record_name(domain);
        let value = record_value(uid, domain);
        let mut status = DomainStatus {
            name: domain.clone(),
            state: DomainState::Pending,
            record: record.clone(),
            value: value.clone(),
            message: None,
        };
        match seen {
            Seen::Held => status.state = DomainState::Verified,
            Seen::HeldBy(by) => {
                status.state = DomainState::Claimed;
                let message = format!(
                    "{domain} (or a domain above or below it) is held by tenant {by}; it is tried again every {}s and is served for {name} once {by} lets it go",
                    RECLAIM.as_secs()
                );
                status.message = Some(message.clone());
                claims.push(message);
            }
            Seen::LookupFailed(e) => {
                let message = format!("the DNS lookup failed, tried again shortly: {e}");
                pending.push(format!("{domain}: {message}"));
                status.message = Some(message);
            }
            Seen::NotProven => {
                let message = format!(
                    "add a DNS TXT record {record} with the value {value}; it is looked for every {}s",
                    RECHECK.as_secs()
                );
                pending.push(format!("{domain}: {message}"));
                status.message = Some(message);
            }
            Seen::Claimable => {
                let message = "proven; being claimed".to_string();
                pending.push(format!("{domain}: {message}"));
                status.message = Some(message);
                to_claim.push(domain.clone());
            }
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
                _ if served_later => format!(
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
    let only_claiming = pending.len() == to_claim.len();
    let due_in = match (pending.is_empty(), claims.is_empty()) {
        (false, _) if only_claiming => Some(CLAIMED_JUST_NOW),
        (false, _) => Some(RECHECK),
        (true, false) => Some(RECLAIM),
        (true, true) => None,
    };
    Domains {
        statuses,
        held,
        to_claim,
        to_release,
        outcome,
        claimed,
        due_in,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_value_is_the_tenants_own() {
        let a = record_value("uid-a", "shop.example.test");
        assert!(a.starts_with("ossature-domain-verification="));
        assert_eq!(a.len(), "ossature-domain-verification=".len() + 32);
        assert_eq!(a, record_value("uid-a", "shop.example.test"));
        assert_ne!(a, record_value("uid-b", "shop.example.test"));
        assert_ne!(a, record_value("uid-a", "other.example.test"));
        assert_eq!(
            record_name("shop.example.test"),
            "_ossature-challenge.shop.example.test"
        );
        assert_eq!(
            lease_name("shop.example.test"),
            "ossature-domain.shop.example.test"
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

    fn tenant(verified: &[&str]) -> Tenant {
        let mut tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme", "uid": "u-1"},
            "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"},
        }))
        .unwrap();
        if !verified.is_empty() {
            tenant.status = Some(ossature_crds::TenantStatus {
                domains: verified
                    .iter()
                    .map(|d| DomainStatus {
                        name: d.to_string(),
                        state: DomainState::Verified,
                        record: record_name(d),
                        value: record_value("u-1", d),
                        message: None,
                    })
                    .collect(),
                ..Default::default()
            });
        }
        tenant
    }

    fn seen(pairs: &[(&str, Seen)]) -> Vec<(String, Seen)> {
        pairs
            .iter()
            .map(|(d, s)| (d.to_string(), s.clone()))
            .collect()
    }

    #[test]
    fn a_tenant_without_domains_has_no_domain_condition() {
        let none = decide(&tenant(&[]), "u-1", &[], false);
        assert_eq!(none.outcome, None);
        assert_eq!(none.due_in, None);
        assert!(none.statuses.is_empty() && none.to_claim.is_empty());
    }

    #[test]
    fn proven_domains_are_claimed_by_a_step_and_held_ones_served() {
        let d = decide(
            &tenant(&["old.example.test"]),
            "u-1",
            &seen(&[
                ("shop.example.test", Seen::Held),
                ("new.example.test", Seen::Claimable),
            ]),
            false,
        );
        assert_eq!(d.held, ["shop.example.test"]);
        assert_eq!(d.to_claim, ["new.example.test"]);
        assert_eq!(d.to_release, ["old.example.test"], "it left the spec");
        assert_eq!(
            d.due_in,
            Some(CLAIMED_JUST_NOW),
            "served right after its claim"
        );
        let outcome = d.outcome.unwrap();
        assert_eq!(outcome.reason, reasons::DOMAIN_NOT_VERIFIED);
        assert!(d.claimed.is_none());
    }

    #[test]
    fn a_domain_another_tenant_holds_stalls_and_a_missing_record_says_what_to_add() {
        let d = decide(
            &tenant(&[]),
            "u-1",
            &seen(&[
                ("shop.example.test", Seen::HeldBy("globex".into())),
                ("blog.example.test", Seen::NotProven),
            ]),
            false,
        );
        assert_eq!(d.statuses[0].state, DomainState::Claimed);
        assert_eq!(d.claimed.unwrap().reason, reasons::DOMAIN_CLAIMED);
        let message = d.statuses[1].message.clone().unwrap();
        assert!(
            message.contains("_ossature-challenge.blog.example.test"),
            "{message}"
        );
        assert!(message.contains(&record_value("u-1", "blog.example.test")));
        assert_eq!(d.due_in, Some(RECHECK));
        assert!(d.held.is_empty());
    }

    #[test]
    fn every_domain_held_is_ready() {
        let d = decide(
            &tenant(&["shop.example.test"]),
            "u-1",
            &seen(&[("shop.example.test", Seen::Held)]),
            false,
        );
        let outcome = d.outcome.unwrap();
        assert!(outcome.ok);
        assert_eq!(outcome.message, "shop.example.test proven and held");
        assert_eq!(d.due_in, None);
        assert!(d.to_release.is_empty() && d.to_claim.is_empty());
        let later = decide(
            &tenant(&["shop.example.test"]),
            "u-1",
            &seen(&[("shop.example.test", Seen::Held)]),
            true,
        );
        assert!(later.outcome.unwrap().message.contains("--host-issuer"));
        let gone = decide(&tenant(&["shop.example.test"]), "u-1", &[], false);
        assert_eq!(gone.outcome.unwrap().message, "no custom domains");
        assert_eq!(gone.to_release, ["shop.example.test"]);
    }
}
