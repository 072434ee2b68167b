//! An issuer's rate-limit budget, modelled on the CA's published limits, so
//! that a certificate past it waits (`RateLimited`, with the time it will be
//! tried) instead of failing against the CA. Pure: time is passed in.
//!
//! Every limit is a sliding window: at most `count` events in any `period`.
//! The defaults follow Let's Encrypt's published limits; all are configurable
//! because other CAs (and Let's Encrypt's adjusted limits) differ.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A full sweep of stale keys happens every this many recorded events, so
/// names seen once do not stay in memory forever.
const SWEEP_EVERY: u64 = 256;

/// At most `count` events within any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub count: usize,
    pub period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// New orders per account (Let's Encrypt: 300 per 3 hours).
    pub new_orders: Window,
    /// Certificates per registered domain (Let's Encrypt: 50 per 7 days).
    pub certificates_per_domain: Window,
    /// Certificates for exactly the same set of names (Let's Encrypt: 5 per 7 days).
    pub duplicate_certificates: Window,
    /// Failed validations per name (Let's Encrypt: 5 per hour).
    pub failed_validations: Window,
    /// Tenant hosts are `<tenant>.<root_domain>`: under it, `<label>.<root>`
    /// is counted as the registered domain, as if the root were a public suffix.
    pub root_domain: Option<String>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            new_orders: Window {
                count: 300,
                period: 3 * HOUR,
            },
            certificates_per_domain: Window {
                count: 50,
                period: 7 * DAY,
            },
            duplicate_certificates: Window {
                count: 5,
                period: 7 * DAY,
            },
            failed_validations: Window {
                count: 5,
                period: HOUR,
            },
            root_domain: None,
        }
    }
}

/// Which limit holds a certificate back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    NewOrders,
    CertificatesPerDomain,
    DuplicateCertificates,
    FailedValidations,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::NewOrders => "new orders per account",
            Limit::CertificatesPerDomain => "certificates per registered domain",
            Limit::DuplicateCertificates => "duplicate certificates",
            Limit::FailedValidations => "failed validations per name",
        }
    }
}

/// Past the budget: try again at `at`, when `limit` (counted for `subject`:
/// the account, a registered domain, a name set or a name) has room again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAt {
    pub at: SystemTime,
    pub limit: Limit,
    pub subject: String,
}

impl fmt::Display for RetryAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wait = self
            .at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .as_secs();
        write!(
            f,
            "RateLimited: {} for {} reached; next try in {wait}s",
            self.limit.as_str(),
            self.subject
        )
    }
}

/// Event times of one counted subject, oldest first.
#[derive(Debug, Default, Clone)]
struct Events(VecDeque<SystemTime>);

impl Events {
    fn push(&mut self, now: SystemTime) {
        // Callers' clocks may step back a little: keep the times sorted.
        let at = self.0.partition_point(|t| *t <= now);
        self.0.insert(at, now);
    }

    fn prune(&mut self, now: SystemTime, window: Window) {
        let Some(horizon) = now.checked_sub(window.period) else {
            return;
        };
        while self.0.front().is_some_and(|t| *t <= horizon) {
            self.0.pop_front();
        }
    }

    /// When one more event fits in the window, if it does not fit now.
    fn full_until(&self, now: SystemTime, window: Window) -> Option<SystemTime> {
        let horizon = now.checked_sub(window.period);
        let first = horizon.map_or(0, |h| self.0.partition_point(|t| *t <= h));
        let within = self.0.len() - first;
        if within < window.count {
            return None;
        }
        // The event whose expiry brings the count below the limit.
        Some(self.0[first + within - window.count] + window.period)
    }
}

/// Events keyed by subject (registered domain, name set, name).
#[derive(Debug, Default, Clone)]
struct Keyed(HashMap<String, Events>);

impl Keyed {
    fn record(&mut self, key: String, now: SystemTime, window: Window) {
        let events = self.0.entry(key).or_default();
        events.prune(now, window);
        events.push(now);
    }

    fn full_until(&self, key: &str, now: SystemTime, window: Window) -> Option<SystemTime> {
        self.0.get(key)?.full_until(now, window)
    }

    fn sweep(&mut self, now: SystemTime, window: Window) {
        self.0.retain(|_, events| {
            events.prune(now, window);
            !events.0.is_empty()
        });
    }
}

/// One issuer's (one account's) budget.
#[derive(Debug, Clone)]
pub struct Budget {
    config: BudgetConfig,
    orders: Events,
    per_domain: Keyed,
    duplicates: Keyed,
    failed: Keyed,
    recorded: u64,
}

impl Budget {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            orders: Events::default(),
            per_domain: Keyed::default(),
            duplicates: Keyed::default(),
            failed: Keyed::default(),
            recorded: 0,
        }
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Whether a new order for `names` fits now; otherwise when it will,
    /// naming the limit that holds it back longest.
    pub fn check(&self, names: &[String], now: SystemTime) -> Result<(), RetryAt> {
        let c = &self.config;
        let mut blocked: Vec<RetryAt> = Vec::new();
        let mut block = |until: Option<SystemTime>, limit, subject: &str| {
            if let Some(at) = until {
                blocked.push(RetryAt {
                    at,
                    limit,
                    subject: subject.to_string(),
                });
            }
        };
        block(
            self.orders.full_until(now, c.new_orders),
            Limit::NewOrders,
            "the account",
        );
        for domain in self.registered_domains(names) {
            block(
                self.per_domain
                    .full_until(&domain, now, c.certificates_per_domain),
                Limit::CertificatesPerDomain,
                &domain,
            );
        }
        let set = name_set(names);
        block(
            self.duplicates
                .full_until(&set, now, c.duplicate_certificates),
            Limit::DuplicateCertificates,
            &set,
        );
        for name in names {
            let name = normalise(name);
            block(
                self.failed.full_until(&name, now, c.failed_validations),
                Limit::FailedValidations,
                &name,
            );
        }
        match blocked.into_iter().max_by_key(|r| r.at) {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    /// A new order was placed with the CA.
    pub fn record_order(&mut self, now: SystemTime) {
        self.orders.prune(now, self.config.new_orders);
        self.orders.push(now);
        self.recorded(now);
    }

    /// A certificate was issued for `names`.
    pub fn record_issued(&mut self, names: &[String], now: SystemTime) {
        for domain in self.registered_domains(names) {
            self.per_domain
                .record(domain, now, self.config.certificates_per_domain);
        }
        self.duplicates
            .record(name_set(names), now, self.config.duplicate_certificates);
        self.recorded(now);
    }

    /// Validation of `name` failed at the CA.
    pub fn record_failed_validation(&mut self, name: &str, now: SystemTime) {
        self.failed
            .record(normalise(name), now, self.config.failed_validations);
        self.recorded(now);
    }

    fn recorded(&mut self, now: SystemTime) {
        self.recorded += 1;
        if self.recorded.is_multiple_of(SWEEP_EVERY) {
            self.prune(now);
        }
    }

    /// Forgets every event outside its window (also done every few records).
    pub fn prune(&mut self, now: SystemTime) {
        let c = &self.config;
        self.orders.prune(now, c.new_orders);
        self.per_domain.sweep(now, c.certificates_per_domain);
        self.duplicates.sweep(now, c.duplicate_certificates);
        self.failed.sweep(now, c.failed_validations);
    }

    /// How many subjects (domains, name sets, names) are remembered.
    pub fn tracked(&self) -> usize {
        self.per_domain.0.len() + self.duplicates.0.len() + self.failed.0.len()
    }

    fn registered_domains(&self, names: &[String]) -> Vec<String> {
        let mut domains: Vec<String> = names
            .iter()
            .map(|n| registered_domain(n, self.config.root_domain.as_deref()))
            .collect();
        domains.sort();
        domains.dedup();
        domains
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The exact set of names, as one key.
fn name_set(names: &[String]) -> String {
    let mut names: Vec<String> = names.iter().map(|n| normalise(n)).collect();
    names.sort();
    names.dedup();
    names.join(",")
}

/// The unit a CA counts certificates by. Without the Public Suffix List we
/// take the last two labels, which is right for `example.com` but not for
/// `example.co.uk`; under the configured root domain, `<label>.<root>`.
pub fn registered_domain(name: &str, root: Option<&str>) -> String {
    let name = normalise(name);
    let name = name.strip_prefix("*.").unwrap_or(&name);
    if let Some(root) = root.map(normalise).filter(|r| !r.is_empty()) {
        if name == root {
            return root;
        }
        if let Some(below) = name.strip_suffix(&format!(".{root}")) {
            let label = below.rsplit('.').next().unwrap_or(below);
            return format!("{label}.{root}");
        }
    }
    let labels: Vec<&str> = name.rsplitn(3, '.').collect();
    match labels.as_slice() {
        [last, second, ..] => format!("{second}.{last}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn small() -> BudgetConfig {
        BudgetConfig {
            new_orders: Window {
                count: 3,
                period: Duration::from_secs(100),
            },
            certificates_per_domain: Window {
                count: 4,
                period: Duration::from_secs(1000),
            },
            duplicate_certificates: Window {
                count: 2,
                period: Duration::from_secs(500),
            },
            failed_validations: Window {
                count: 2,
                period: Duration::from_secs(60),
            },
            root_domain: Some("tenants.example".into()),
        }
    }

    #[test]
    fn defaults_follow_lets_encrypt() {
        let c = BudgetConfig::default();
        assert_eq!((c.new_orders.count, c.new_orders.period), (300, 3 * HOUR));
        assert_eq!(
            (
                c.certificates_per_domain.count,
                c.certificates_per_domain.period
            ),
            (50, 7 * DAY)
        );
        assert_eq!(
            (
                c.duplicate_certificates.count,
                c.duplicate_certificates.period
            ),
            (5, 7 * DAY)
        );
        assert_eq!(
            (c.failed_validations.count, c.failed_validations.period),
            (5, HOUR)
        );
    }

    #[test]
    fn new_orders_trip_at_the_count_and_release_when_the_oldest_leaves() {
        let mut budget = Budget::new(small());
        let a = names(&["a.tenants.example"]);
        budget.record_order(at(0));
        budget.record_order(at(10));
        assert_eq!(budget.check(&a, at(20)), Ok(()));
        budget.record_order(at(20));
        let retry = budget.check(&a, at(30)).unwrap_err();
        assert_eq!(retry.limit, Limit::NewOrders);
        assert_eq!(retry.at, at(100), "the order at 0 leaves the window at 100");
        assert!(budget.check(&a, at(99)).is_err());
        assert_eq!(budget.check(&a, at(100)), Ok(()));
    }

    #[test]
    fn certificates_are_counted_per_registered_domain() {
        let mut budget = Budget::new(small());
        for (i, host) in ["a", "www.a", "api.a", "x.a"].iter().enumerate() {
            let name = format!("{host}.tenants.example");
            budget.record_issued(&[name], at(i as u64));
        }
        let retry = budget
            .check(&names(&["new.a.tenants.example"]), at(10))
            .unwrap_err();
        assert_eq!(retry.limit, Limit::CertificatesPerDomain);
        assert_eq!(retry.subject, "a.tenants.example");
        assert_eq!(retry.at, at(1000));
        // Another tenant under the root is its own registered domain.
        assert_eq!(budget.check(&names(&["b.tenants.example"]), at(10)), Ok(()));
        assert_eq!(
            budget.check(&names(&["new.a.tenants.example"]), at(1000)),
            Ok(())
        );
    }

    #[test]
    fn duplicate_certificates_are_the_exact_same_names() {
        let mut budget = Budget::new(small());
        let pair = names(&["b.tenants.example", "*.b.tenants.example"]);
        budget.record_issued(&pair, at(0));
        budget.record_issued(
            &names(&["*.B.tenants.example.", "b.tenants.example"]),
            at(5),
        );
        let retry = budget.check(&pair, at(6)).unwrap_err();
        assert_eq!(retry.limit, Limit::DuplicateCertificates);
        assert_eq!(retry.at, at(500));
        assert_eq!(
            budget.check(&names(&["b.tenants.example"]), at(6)),
            Ok(()),
            "a different set of names is no duplicate"
        );
        assert_eq!(budget.check(&pair, at(500)), Ok(()));
    }

    #[test]
    fn failed_validations_are_capped_per_name() {
        let mut budget = Budget::new(small());
        budget.record_failed_validation("c.tenants.example", at(0));
        assert_eq!(budget.check(&names(&["c.tenants.example"]), at(1)), Ok(()));
        budget.record_failed_validation("C.tenants.example", at(30));
        let retry = budget
            .check(&names(&["d.tenants.example", "c.tenants.example"]), at(31))
            .unwrap_err();
        assert_eq!(retry.limit, Limit::FailedValidations);
        assert_eq!(retry.subject, "c.tenants.example");
        assert_eq!(retry.at, at(60));
        assert_eq!(
            budget.check(&names(&["d.tenants.example"]), at(31)),
            Ok(()),
            "other names are not held back"
        );
        assert_eq!(budget.check(&names(&["c.tenants.example"]), at(60)), Ok(()));
    }

    #[test]
    fn the_latest_release_is_reported_when_several_limits_trip() {
        let mut budget = Budget::new(small());
        let name = names(&["e.tenants.example"]);
        for t in 0..3 {
            budget.record_order(at(t));
        }
        budget.record_failed_validation("e.tenants.example", at(80));
        budget.record_failed_validation("e.tenants.example", at(90));
        let other = budget.check(&names(&["f.tenants.example"]), at(95));
        assert_eq!(other.unwrap_err().at, at(100), "orders alone");
        let retry = budget.check(&name, at(95)).unwrap_err();
        assert_eq!((retry.limit, retry.at), (Limit::FailedValidations, at(140)));
    }

    #[test]
    fn old_events_are_pruned_and_forgotten() {
        let mut budget = Budget::new(small());
        for i in 0..1000u64 {
            budget.record_failed_validation(&format!("h{i}.tenants.example"), at(i % 10));
        }
        assert_eq!(budget.tracked(), 1000);
        budget.prune(at(70));
        assert_eq!(
            budget.tracked(),
            0,
            "every failure is older than an hour's window"
        );
        // Sweeps also happen on their own while recording.
        for i in 0..SWEEP_EVERY {
            budget.record_failed_validation(&format!("late{i}.tenants.example"), at(10_000));
        }
        budget.record_order(at(20_000));
        for i in 0..SWEEP_EVERY {
            budget.record_order(at(20_000 + i));
        }
        assert_eq!(budget.tracked(), 0);
    }

    #[test]
    fn registered_domains_without_a_public_suffix_list() {
        assert_eq!(registered_domain("www.example.com", None), "example.com");
        assert_eq!(registered_domain("*.a.b.example.com.", None), "example.com");
        assert_eq!(registered_domain("localhost", None), "localhost");
        let root = Some("acme.ossature.test");
        assert_eq!(
            registered_domain("*.x.t1.acme.ossature.test", root),
            "t1.acme.ossature.test"
        );
        assert_eq!(
            registered_domain("t2.acme.ossature.test", root),
            "t2.acme.ossature.test"
        );
        assert_eq!(
            registered_domain("acme.ossature.test", root),
            "acme.ossature.test"
        );
        assert_eq!(registered_domain("other.test", root), "other.test");
    }
}
