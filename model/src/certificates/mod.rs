//! What a certificate should be, decided without calling anything: which
//! names a tenant may have, when a certificate is renewed, whether the one
//! held still fits its spec, and the key and request sent to the CA.

pub mod authority;
pub mod host;
pub mod keys;
pub mod record;
pub mod secret;

pub use authority::{
    CaState, LEAF_ROLE, ROTATION_WAVE, Rotation, SERVICE_ROLE, issuer_generation, issuer_name,
    rotation,
};
pub use keys::{Leaf, new_key, read_leaf, request, request_for, trust_bundle};
pub use record::{
    Record, TENANT_CA, Wanted, issued_for, record_path, record_secret_path, reissue_reason,
    replace_reason, serves,
};
pub use secret::{CERTIFICATE_LABEL, DATA_HASH_ANNOTATION, data_hash, secret, secret_tampered};

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use ossature_crds::{CertificateSpec, KeyAlgorithm, Usage};

/// Lifetime when the spec names none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Whether `name` is the tenant's under the root domain: `<tenant>.<root>`
/// or below it (a leading wildcard label counts as a subdomain).
pub fn name_owned(name: &str, tenant: &str, root_domain: &str) -> bool {
    let own = format!("{tenant}.{root_domain}");
    let name = name.strip_prefix("*.").map_or(name, |rest| rest);
    name == own || name.ends_with(&format!(".{own}"))
}

/// The names of `spec` the tenant does not own, in the order given.
pub fn names_not_owned<'a>(
    spec: &'a CertificateSpec,
    tenant: &str,
    root_domain: &str,
) -> Vec<&'a str> {
    spec.dns_names
        .iter()
        .map(String::as_str)
        .filter(|n| !name_owned(n, tenant, root_domain))
        .collect()
}

/// Lifetime asked for by the spec.
pub fn lifetime(spec: &CertificateSpec) -> Duration {
    spec.lifetime
        .as_deref()
        .and_then(crate::time::parse_ttl)
        .unwrap_or(DEFAULT_LIFETIME)
}

/// A number in [0, 1) drawn from `seed`, the same for the same seed: a
/// certificate's jitter stays put across reconciles and restarts.
fn unit(seed: &str) -> f64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// When a certificate valid from `not_before` to `not_after` is renewed:
/// `renew_before` ahead of expiry when given; otherwise once two thirds of
/// its lifetime have passed, brought forward by up to a twelfth of it, by a
/// jitter drawn from `seed` (its serial), so that certificates issued
/// together spread their renewals.
pub fn renewal_time(
    not_before: Timestamp,
    not_after: Timestamp,
    renew_before: Option<Duration>,
    seed: &str,
) -> Timestamp {
    let valid = not_after.duration_since(not_before);
    let lead = match renew_before {
        Some(before) => SignedDuration::try_from(before).unwrap_or(SignedDuration::MAX),
        None => {
            let third = valid / 3;
            third + (valid / 12).mul_f64(unit(seed))
        }
    };
    let at = not_after.checked_sub(lead).unwrap_or(not_before);
    at.max(not_before)
}

/// A time within the window from `start` to `end` (a CA's suggested
/// renewal window), drawn from `seed` like the jitter above: certificates
/// in the same window spread over it, each at a time that stays put.
pub fn time_in_window(start: Timestamp, end: Timestamp, seed: &str) -> Timestamp {
    if end <= start {
        return start;
    }
    let width = end.duration_since(start);
    start
        .checked_add(width.mul_f64(unit(seed)))
        .unwrap_or(start)
}

/// The end of a CA's renewal window for a certificate valid from
/// `not_before` to `not_after`, brought forward to leave the last tenth of
/// its lifetime: a window that runs to expiry (Pebble's, for short-lived
/// certificates) could have it renewed too late to be handed out in time.
pub fn window_end(
    start: Timestamp,
    end: Timestamp,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Timestamp {
    let latest = not_after
        .checked_sub(not_after.duration_since(not_before) / 10)
        .unwrap_or(not_before);
    end.min(latest).max(start)
}

/// What the held certificate was issued for, compared with the spec: a
/// change of names, usages or key algorithm calls for a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub usages: Vec<Usage>,
    pub key_algorithm: KeyAlgorithm,
}

impl Issued {
    pub fn of(spec: &CertificateSpec) -> Self {
        let mut dns_names = spec.dns_names.clone();
        dns_names.sort();
        let mut uris = spec.uris.clone();
        uris.sort();
        let mut usages = spec.usages.clone();
        usages.sort_by_key(|u| *u as u8);
        Issued {
            dns_names,
            uris,
            usages,
            key_algorithm: spec.key_algorithm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossature_crds::{DeletionPolicy, IssuerRef, TenantCaRef};

    fn spec(names: &[&str]) -> CertificateSpec {
        CertificateSpec {
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            uris: Vec::new(),
            usages: vec![Usage::Server],
            lifetime: None,
            renew_before: None,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            secret_name: None,
            deletion_policy: DeletionPolicy::Delete,
            issuer: IssuerRef {
                tenant_ca: Some(TenantCaRef {}),
                acme: None,
            },
        }
    }

    #[test]
    fn what_a_certificate_is_issued_for_reads_as_before_without_uris() {
        // Records written before there were URIs must not call for a new
        // certificate after an upgrade.
        assert_eq!(
            issued_for(&spec(&["b.test", "a.test"])),
            r#"["a.test", "b.test"];[Server];EcdsaP256"#
        );
        let mut workload = spec(&[]);
        workload.uris = vec!["spiffe://a.test/ns/tn-a/sa/x".into()];
        assert_eq!(
            issued_for(&workload),
            r#"[];[Server];EcdsaP256;["spiffe://a.test/ns/tn-a/sa/x"]"#
        );
    }

    #[test]
    fn a_tenant_owns_its_host_and_below_and_nothing_of_a_longer_name() {
        let root = "ossature.test";
        for owned in [
            "acme.ossature.test",
            "api.acme.ossature.test",
            "*.acme.ossature.test",
            "a.b.acme.ossature.test",
        ] {
            assert!(name_owned(owned, "acme", root), "{owned}");
        }
        for foreign in [
            "acme-eu.ossature.test",
            "api.acme-eu.ossature.test",
            "xacme.ossature.test",
            "acme.ossature.test.evil.com",
            "ossature.test",
            "*.ossature.test",
            "acme.other.test",
        ] {
            assert!(!name_owned(foreign, "acme", root), "{foreign}");
        }
        let s = spec(&["acme.ossature.test", "api.acme-eu.ossature.test"]);
        assert_eq!(
            names_not_owned(&s, "acme", root),
            vec!["api.acme-eu.ossature.test"]
        );
    }

    #[test]
    fn renewal_comes_at_two_thirds_spread_by_a_stable_jitter() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let end = start + SignedDuration::from_hours(90 * 24);
        let mut times: Vec<Timestamp> = (0..1000)
            .map(|i| renewal_time(start, end, None, &format!("serial-{i}")))
            .collect();
        let earliest = end - SignedDuration::from_hours(90 * 24 / 3 + 90 * 24 / 12);
        let latest = end - SignedDuration::from_hours(90 * 24 / 3);
        assert!(times.iter().all(|t| *t >= earliest && *t <= latest));
        assert_eq!(
            renewal_time(start, end, None, "serial-7"),
            times[7],
            "the same serial renews at the same time"
        );
        times.sort();
        times.dedup();
        assert!(times.len() > 990, "a thousand renewals spread out");
        // Spread over the window (180 hours here): about 6 an hour.
        let mut per_hour = std::collections::BTreeMap::<i64, usize>::new();
        for t in &times {
            *per_hour
                .entry(t.duration_since(earliest).as_secs() / 3600)
                .or_default() += 1;
        }
        let busiest = per_hour.values().max().unwrap();
        assert!(*busiest < 20, "{busiest} renewals within one hour");

        let asked = renewal_time(start, end, Some(Duration::from_secs(24 * 3600)), "x");
        assert_eq!(asked, end - SignedDuration::from_hours(24));
        let too_early = renewal_time(start, end, Some(Duration::from_secs(365 * 24 * 3600)), "x");
        assert_eq!(too_early, start, "never before the certificate began");
    }

    #[test]
    fn a_renewal_window_is_spread_over_by_a_stable_jitter() {
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let end = start + SignedDuration::from_hours(10);
        let times: Vec<Timestamp> = (0..200)
            .map(|i| time_in_window(start, end, &format!("s{i}")))
            .collect();
        assert!(times.iter().all(|t| *t >= start && *t < end));
        assert_eq!(time_in_window(start, end, "s3"), times[3]);
        let late = times
            .iter()
            .filter(|t| **t > start + SignedDuration::from_hours(5));
        assert!((60..140).contains(&late.count()), "about half in each half");
        assert_eq!(time_in_window(end, start, "x"), end, "an empty window");
    }

    #[test]
    fn a_window_running_to_expiry_leaves_the_last_tenth_out() {
        let issued: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let expires = issued + SignedDuration::from_secs(300);
        let latest = expires - SignedDuration::from_secs(30);
        assert_eq!(window_end(issued, expires, issued, expires), latest);
        let early = issued + SignedDuration::from_secs(100);
        assert_eq!(window_end(issued, early, issued, expires), early, "kept");
        let late = expires - SignedDuration::from_secs(10);
        assert_eq!(
            window_end(late, expires, issued, expires),
            late,
            "never before its start"
        );
    }

    #[test]
    fn names_usages_and_key_decide_whether_the_held_certificate_fits() {
        let a = spec(&["b.acme.ossature.test", "a.acme.ossature.test"]);
        let b = spec(&["a.acme.ossature.test", "b.acme.ossature.test"]);
        assert_eq!(Issued::of(&a), Issued::of(&b), "order does not matter");
        let mut c = b.clone();
        c.usages.push(Usage::Client);
        assert_ne!(Issued::of(&b), Issued::of(&c));
        let mut d = b.clone();
        d.key_algorithm = KeyAlgorithm::Ed25519;
        assert_ne!(Issued::of(&b), Issued::of(&d));
    }
}
