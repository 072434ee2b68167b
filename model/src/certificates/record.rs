//! What is kept in OpenBao for one certificate, and whether the held
//! certificate still does.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::Issued;

/// Who signed the certificate, in status.
pub const TENANT_CA: &str = "tenant-ca";

/// What is kept in OpenBao for one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: String,
    /// Empty while the key waits to be signed (issuance in progress).
    pub certificate: String,
    pub ca: String,
    pub issued_for: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub generation: i64,
    /// Who issued the held certificate: `tenant-ca` (also when empty, as in
    /// records written before ACME issuers) or `acme/<issuer>`.
    pub issuer: String,
    /// ACME: the held certificate's ARI id, named by the order renewing it.
    pub certificate_id: String,
    /// ACME: the order that issued the held certificate.
    pub issued_by_order: String,
    /// ACME: the order in progress (an `OrderRecord` as JSON), its key and
    /// its issuer; empty when none. The held certificate stays beside them.
    pub order: String,
    pub order_key: String,
    pub order_issuer: String,
}

impl Record {
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("key".into(), self.key.clone()),
            ("certificate".into(), self.certificate.clone()),
            ("ca".into(), self.ca.clone()),
            ("issuedFor".into(), self.issued_for.clone()),
            ("serial".into(), self.serial.clone()),
            ("notBefore".into(), self.not_before.clone()),
            ("notAfter".into(), self.not_after.clone()),
            ("generation".into(), self.generation.to_string()),
            ("issuer".into(), self.issuer.clone()),
            ("certificateId".into(), self.certificate_id.clone()),
            ("issuedByOrder".into(), self.issued_by_order.clone()),
            ("order".into(), self.order.clone()),
            ("orderKey".into(), self.order_key.clone()),
            ("orderIssuer".into(), self.order_issuer.clone()),
        ])
    }

    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        Record {
            key: get("key"),
            certificate: get("certificate"),
            ca: get("ca"),
            issued_for: get("issuedFor"),
            serial: get("serial"),
            not_before: get("notBefore"),
            not_after: get("notAfter"),
            generation: get("generation").parse().unwrap_or(0),
            issuer: get("issuer"),
            certificate_id: get("certificateId"),
            issued_by_order: get("issuedByOrder"),
            order: get("order"),
            order_key: get("orderKey"),
            order_issuer: get("orderIssuer"),
        }
    }

    /// When the held certificate is valid, as read from its record.
    pub fn validity(&self) -> Option<(Timestamp, Timestamp)> {
        Some((self.not_before.parse().ok()?, self.not_after.parse().ok()?))
    }

    /// Who issued the held certificate.
    pub fn issuer(&self) -> &str {
        if self.issuer.is_empty() {
            TENANT_CA
        } else {
            &self.issuer
        }
    }

    /// The same record without an order in progress.
    pub fn without_order(mut self) -> Self {
        self.order.clear();
        self.order_key.clear();
        self.order_issuer.clear();
        self
    }
}

/// What a certificate should be: what it is issued for, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub issued_for: String,
    pub issuer: String,
}

impl Wanted {
    pub fn of(spec: &ossature_crds::CertificateSpec) -> Self {
        Wanted {
            issued_for: issued_for(spec),
            issuer: match spec.issuer.acme_name() {
                Some(name) => format!("acme/{name}"),
                None => TENANT_CA.to_string(),
            },
        }
    }
}

/// A spec's names, usages and key algorithm as one comparable string.
pub fn issued_for(spec: &ossature_crds::CertificateSpec) -> String {
    let Issued {
        dns_names,
        uris,
        usages,
        key_algorithm,
    } = Issued::of(spec);
    let base = format!("{dns_names:?};{usages:?};{key_algorithm:?}");
    // Without URIs, as records written before there were any read.
    if uris.is_empty() {
        base
    } else {
        format!("{base};{uris:?}")
    }
}

/// Where a certificate is kept inside its tenant's KV mount.
pub fn record_path(namespace: &str, name: &str) -> String {
    format!("certificates/{namespace}/{name}")
}

/// Where a certificate's record is read, as its status shows it:
/// `<kv mount>/data/<record path>`.
pub fn record_secret_path(kv_mount: &str, namespace: &str, name: &str) -> String {
    format!("{kv_mount}/data/{}", record_path(namespace, name))
}

/// Why the held certificate must be replaced, if it must; `renews` is when
/// the held one is due (`None`: it cannot be read).
pub fn reissue_reason(
    record: Option<&Record>,
    wanted: &Wanted,
    renews: Option<Timestamp>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(record) = record else {
        return Some("no certificate yet");
    };
    if !record.order.is_empty() {
        return Some("an order is in progress");
    }
    if record.certificate.is_empty() {
        return Some("an issuance was interrupted");
    }
    if record.issued_for != wanted.issued_for {
        return Some("its names, usages or key algorithm changed");
    }
    if record.issuer() != wanted.issuer {
        return Some("its issuer changed");
    }
    let Some(renews) = renews else {
        return Some("the held certificate cannot be read");
    };
    if now >= renews {
        return Some("its renewal time has come");
    }
    None
}

/// Why the held certificate must be replaced: [`reissue_reason`], or,
/// for a tenant CA's certificate, because an older generation of that CA
/// signed it than the one that signs now (`signing`: a rotation).
pub fn replace_reason(
    record: Option<&Record>,
    wanted: &Wanted,
    renews: Option<Timestamp>,
    now: Timestamp,
    signing: Option<i64>,
) -> Option<&'static str> {
    let rotated = record.zip(signing).is_some_and(|(r, signing)| {
        !r.certificate.is_empty() && r.issuer() == TENANT_CA && r.generation < signing
    });
    match reissue_reason(record, wanted, renews, now) {
        None if rotated => Some("its CA is rotated"),
        other => other,
    }
}

/// Whether `record` still serves what is `wanted` at `now`: a whole
/// certificate for the wanted names, usages, key algorithm and issuer, not
/// expired. Due for renewal or not: a renewal that has to wait (a rate
/// limit) leaves it serving.
pub fn serves(record: &Record, wanted: &Wanted, now: Timestamp) -> bool {
    !record.certificate.is_empty()
        && record.issued_for == wanted.issued_for
        && record.issuer() == wanted.issuer
        && record
            .validity()
            .is_some_and(|(_, not_after)| now < not_after)
}

impl Record {
    /// When the held certificate renews by the two-thirds rule (or
    /// `renew_before`); `None` when its validity cannot be read.
    pub fn renewal_by_rule(&self, renew_before: Option<std::time::Duration>) -> Option<Timestamp> {
        let (not_before, not_after) = self.validity()?;
        Some(super::renewal_time(
            not_before,
            not_after,
            renew_before,
            &self.serial,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(issued_for: &str, serial: &str) -> Record {
        Record {
            key: "k".into(),
            certificate: "c".into(),
            ca: "ca".into(),
            issued_for: issued_for.into(),
            serial: serial.into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2026-01-31T00:00:00Z".into(),
            generation: 1,
            ..Default::default()
        }
    }

    fn wanted(issued_for: &str, issuer: &str) -> Wanted {
        Wanted {
            issued_for: issued_for.into(),
            issuer: issuer.into(),
        }
    }

    #[test]
    fn a_held_certificate_serves_its_names_and_issuer_until_it_expires() {
        let held = record("a.test|Server|ECDSAP256", "01");
        let want = wanted("a.test|Server|ECDSAP256", TENANT_CA);
        let during: Timestamp = "2026-01-30T00:00:00Z".parse().unwrap();
        assert!(serves(&held, &want, during), "due for renewal, still valid");
        let expired: Timestamp = "2026-01-31T00:00:00Z".parse().unwrap();
        assert!(!serves(&held, &want, expired));
        let renamed = wanted("b.test|Server|ECDSAP256", TENANT_CA);
        assert!(!serves(&held, &renamed, during));
        let elsewhere = wanted("a.test|Server|ECDSAP256", "acme/other");
        assert!(!serves(&held, &elsewhere, during));
        let interrupted = Record {
            certificate: String::new(),
            ..held.clone()
        };
        assert!(!serves(&interrupted, &want, during));
    }

    #[test]
    fn a_certificate_is_replaced_when_missing_interrupted_changed_or_due() {
        let early: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let late: Timestamp = "2026-01-30T00:00:00Z".parse().unwrap();
        let a = wanted("a", TENANT_CA);
        let r = record("a", "01");
        let renews = r
            .validity()
            .map(|(b, e)| super::super::renewal_time(b, e, None, &r.serial));
        assert!(reissue_reason(None, &a, None, early).is_some());
        assert_eq!(reissue_reason(Some(&r), &a, renews, early), None);
        assert!(reissue_reason(Some(&r), &wanted("b", TENANT_CA), renews, early).is_some());
        assert!(reissue_reason(Some(&r), &a, renews, late).is_some());
        assert!(
            reissue_reason(Some(&r), &a, None, early).is_some(),
            "unreadable"
        );
        let interrupted = Record {
            certificate: String::new(),
            ..r.clone()
        };
        assert_eq!(
            reissue_reason(Some(&interrupted), &a, renews, early),
            Some("an issuance was interrupted")
        );
        // A record from before ACME issuers is the tenant CA's.
        assert_eq!(r.issuer(), TENANT_CA);
        assert_eq!(
            reissue_reason(Some(&r), &wanted("a", "acme/pebble"), renews, early),
            Some("its issuer changed")
        );
        let ordering = Record {
            order: "{}".into(),
            ..r.clone()
        };
        assert_eq!(
            reissue_reason(Some(&ordering), &a, renews, early),
            Some("an order is in progress")
        );
    }

    #[test]
    fn the_wanted_issuer_is_the_tenant_ca_or_an_acme_issuer() {
        let spec = |issuer: serde_json::Value| -> ossature_crds::CertificateSpec {
            serde_json::from_value(serde_json::json!({
                "dnsNames": ["acme.ossature.test"], "issuer": issuer,
            }))
            .unwrap()
        };
        assert_eq!(
            Wanted::of(&spec(serde_json::json!({"tenantCA": {}}))).issuer,
            "tenant-ca"
        );
        assert_eq!(
            Wanted::of(&spec(serde_json::json!({"acme": {"name": "pebble"}}))).issuer,
            "acme/pebble"
        );
    }

    #[test]
    fn records_round_trip_through_openbao_maps() {
        let r = Record {
            issuer: "acme/pebble".into(),
            certificate_id: "aki.serial".into(),
            order: "{\"url\":\"https://ca/order/1\"}".into(),
            order_key: "key".into(),
            order_issuer: "acme/pebble".into(),
            issued_by_order: "https://ca/order/0".into(),
            ..record("x", "0a:0b")
        };
        assert_eq!(Record::from_map(&r.to_map()), r);
        assert_eq!(r.clone().without_order().order_key, "");
    }

    #[test]
    fn a_tenant_ca_certificate_moves_to_the_generation_that_signs() {
        let early: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let a = wanted("a", TENANT_CA);
        let r = record("a", "01");
        let renews = r.renewal_by_rule(None);
        assert!(renews.is_some());
        assert_eq!(replace_reason(Some(&r), &a, renews, early, Some(1)), None);
        assert_eq!(
            replace_reason(Some(&r), &a, renews, early, Some(2)),
            Some("its CA is rotated")
        );
        assert_eq!(
            replace_reason(Some(&r), &a, renews, early, None),
            None,
            "not a tenant CA's"
        );
        let acme = Record {
            issuer: "acme/pebble".into(),
            ..r.clone()
        };
        assert_eq!(
            replace_reason(
                Some(&acme),
                &wanted("a", "acme/pebble"),
                renews,
                early,
                Some(2)
            ),
            None,
            "an ACME certificate is no tenant CA's to rotate"
        );
    }
}
