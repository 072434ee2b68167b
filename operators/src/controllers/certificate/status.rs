//! A certificate's status: what the held certificate is, when it renews
//! (within its CA's renewal window when the CA offers one), and why a new
//! one is on the way or failed.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use ossature_crds::CertificateStatus;
use ossature_model::certificates::{Record, TENANT_CA, renewal_time, time_in_window, window_end};
use ossature_model::conditions::{self, reasons};
use tracing::warn;

use crate::acme_accounts::Handle;

/// When a held certificate is renewed, and when to ask its CA again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Renewal {
    pub at: Timestamp,
    /// ACME: when the CA's renewal window may have moved.
    pub recheck: Option<Timestamp>,
}

/// The renewal of `record`: within the CA's renewal window (ARI) when its
/// ACME issuer offers one (less the last tenth of the lifetime), else by
/// the two-thirds rule (or `renewBefore`).
pub(super) async fn renewal(
    record: &Record,
    acme: Option<&Handle>,
    renew_before: Option<Duration>,
) -> Option<Renewal> {
    let (not_before, not_after) = record.validity()?;
    let by_rule = Renewal {
        at: renewal_time(not_before, not_after, renew_before, &record.serial),
        recheck: None,
    };
    let Some(handle) = acme.filter(|_| !record.certificate_id.is_empty()) else {
        return Some(by_rule);
    };
    match handle
        .window(
            &record.certificate,
            &record.certificate_id,
            Duration::try_from(not_after.duration_since(not_before)).unwrap_or_default(),
        )
        .await
    {
        Ok(Some(window)) => {
            let at = |t: SystemTime| Timestamp::try_from(t).ok();
            let (start, end) = (at(window.start)?, at(window.end)?);
            let end = window_end(start, end, not_before, not_after);
            let renews = time_in_window(start, end, &record.serial);
            tracing::debug!(serial = %record.serial, %start, %end, %renews, "renewal window");
            Some(Renewal {
                at: renews,
                recheck: at(window.check_again),
            })
        }
        Ok(None) => Some(by_rule),
        Err(e) => {
            warn!("renewal information of {}: {e}", record.serial);
            Some(by_rule)
        }
    }
}

/// What the issuance step found, for the status.
#[derive(Debug, Default)]
pub(super) struct Found {
    pub record: Option<Record>,
    pub renewal: Option<Renewal>,
    pub failure: Option<String>,
    pub issuing: Option<&'static str>,
    /// Held back by rate limits until then, and why.
    pub retry: Option<(Timestamp, String)>,
    /// Held back, the certificate held still serves what is wanted (its
    /// names and issuer, unexpired): the certificate stays Ready while its
    /// renewal waits.
    pub held_serves: bool,
    /// The ACME order left in progress.
    pub order_url: Option<String>,
}

/// The issuance fields of the previous status, kept until replaced.
pub(super) fn keep_issued(status: &mut CertificateStatus, previous: &CertificateStatus) {
    status.not_before = previous.not_before.clone();
    status.not_after = previous.not_after.clone();
    status.renewal_time = previous.renewal_time.clone();
    status.serial_number = previous.serial_number.clone();
    status.ca_generation = previous.ca_generation;
    status.last_failure = previous.last_failure.clone();
}

fn issuing_condition(issuing: Option<(&str, String)>, generation: Option<i64>) -> Condition {
    match issuing {
        Some((reason, message)) => {
            conditions::condition(conditions::ISSUING, true, reason, &message, generation)
        }
        None => conditions::condition(
            conditions::ISSUING,
            false,
            reasons::PROVISIONED,
            "the held certificate is current",
            generation,
        ),
    }
}

/// The status after an issuance step, from what it found; returns when to
/// come back (renewal, a renewal window to ask again, a rate limit's end).
pub(super) fn status_from(status: &mut CertificateStatus, found: Found) -> Option<Duration> {
    let generation = status.observed_generation;
    let mut due: Vec<Timestamp> = Vec::new();
    status.order_url = found.order_url;
    if let Some((until, why)) = &found.retry {
        // Held back, not failed: attempts are not counted.
        let message = format!("held back by the issuer's rate limits until {until}: {why}");
        status.retry_time = Some(until.to_string());
        let held_back: &[_] = if found.held_serves {
            &[(conditions::ISSUING, true)]
        } else {
            &[
                (conditions::CERTIFICATE_READY, false),
                (conditions::READY, false),
                (conditions::ISSUING, true),
            ]
        };
        for &(type_, on) in held_back {
            conditions::set(
                &mut status.conditions,
                conditions::condition(type_, on, reasons::RATE_LIMITED, &message, generation),
            );
        }
        due.push(*until);
    } else {
        let issuing = match (&found.failure, found.issuing) {
            (Some(failure), Some(why)) => {
                status.failed_attempts += 1;
                status.last_failure = Some(failure.clone());
                Some((
                    "Failing",
                    format!("a new certificate is needed ({why}) but issuance failed: {failure}"),
                ))
            }
            (Some(failure), None) => {
                status.last_failure = Some(failure.clone());
                None
            }
            (None, _) => {
                status.failed_attempts = 0;
                status.last_failure = None;
                None
            }
        };
        conditions::set(
            &mut status.conditions,
            issuing_condition(issuing, generation),
        );
    }
    if let Some(record) = found.record
        && let Some(renewal) = found.renewal
    {
        status.not_before = Some(record.not_before.clone());
        status.not_after = Some(record.not_after.clone());
        status.renewal_time = Some(renewal.at.to_string());
        status.serial_number = Some(record.serial.clone());
        status.ca_generation = (record.issuer() == TENANT_CA).then_some(record.generation);
        due.push(renewal.at);
        due.extend(renewal.recheck);
    }
    let next = due.into_iter().min()?;
    let wait = next.duration_since(Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &CertificateStatus, type_: &str) -> Option<(String, String)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn held_back(held_serves: bool) -> CertificateStatus {
        let mut status = CertificateStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        for type_ in [conditions::CERTIFICATE_READY, conditions::READY] {
            conditions::set(
                &mut status.conditions,
                conditions::condition(type_, true, reasons::PROVISIONED, "provisioned", Some(1)),
            );
        }
        let until = Timestamp::now() + std::time::Duration::from_secs(3600);
        let found = Found {
            retry: Some((until, "new orders per account reached".into())),
            held_serves,
            ..Default::default()
        };
        let wait = status_from(&mut status, found).expect("comes back when the limit ends");
        assert!(wait > Duration::from_secs(3500), "{wait:?}");
        assert_eq!(status.retry_time, Some(until.to_string()));
        assert_eq!(
            ready(&status, conditions::ISSUING),
            Some(("True".into(), reasons::RATE_LIMITED.into()))
        );
        status
    }

    #[test]
    fn a_renewal_held_back_by_rate_limits_leaves_only_a_serving_certificate_ready() {
        for (serves, expected) in [(true, ("True", reasons::PROVISIONED)), (false, ("False", reasons::RATE_LIMITED))] {
            let status = held_back(serves);
            for type_ in [conditions::CERTIFICATE_READY, conditions::READY] {
                assert_eq!(
                    ready(&status, type_),
                    Some((expected.0.to_string(), expected.1.to_string())),
                    "{type_}, held certificate serving: {serves}"
                );
            }
        }
    }
}
