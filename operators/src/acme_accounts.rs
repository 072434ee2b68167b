//! The ACME accounts this process uses, one per AcmeIssuer, with each
//! issuer's rate-limit budget: shared by every Certificate of an issuer,
//! loaded from (and kept in) a Secret of the issuer namespace
//! (`--acme-namespace`), registered anew if the CA forgot the account.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use ossature_crds::{AcmeIssuer, ChallengeType, RateWindow};
use ossature_model::conditions::reasons;
use ossature_model::issuers::account_secret_name;
use ossature_model::names::MANAGED_BY;

use crate::adapters::acme::{
    Acme, AcmeAccount, AcmeError, Budget, BudgetConfig, ChallTestSrv, ChallengeKind,
    ExternalAccountBinding, IssuerSettings, RenewalWindow, Window,
};
use crate::adapters::{Backend, Calls, Failure, Verb};
use crate::kubernetes;

/// Labels the Secret holding an issuer's account credentials.
pub const ISSUER_LABEL: &str = "ossature.dev/acme-issuer";
const CREDENTIALS_KEY: &str = "credentials";
/// Longest a reconcile waits for the CA inside one `complete`.
const ORDER_WAIT: Duration = Duration::from_secs(30);
/// Soonest a renewal window is asked again, whatever the CA says.
const WINDOW_RECHECK_FLOOR: Duration = Duration::from_secs(60);

/// One issuer as this process uses it.
pub struct Handle {
    pub account: AcmeAccount,
    /// Shared by every certificate of the issuer; survives account reloads.
    pub budget: Arc<Mutex<Budget>>,
    pub profile: Option<String>,
    pub challenge: ChallengeKind,
    /// Renewal windows (ARI) by certificate id, until asked again.
    windows: Mutex<HashMap<String, RenewalWindow>>,
}

impl Handle {
    /// The CA's renewal window of a certificate living `lifetime`, cached
    /// until the CA says to ask again, but never for more than a tenth of
    /// that lifetime (a CA's hours are a short-lived certificate's whole
    /// life); `None` when it offers none.
    pub async fn window(
        &self,
        chain_pem: &str,
        certificate_id: &str,
        lifetime: Duration,
    ) -> Result<Option<RenewalWindow>, AcmeError> {
        let now = SystemTime::now();
        if let Some(known) = self
            .windows
            .lock()
            .expect("never poisoned")
            .get(certificate_id)
            && known.check_again > now
        {
            return Ok(Some(known.clone()));
        }
        let Some(mut window) = self.account.renewal_window(chain_pem).await? else {
            return Ok(None);
        };
        window.check_again = recheck_at(window.check_again, now, lifetime);
        let mut windows = self.windows.lock().expect("never poisoned");
        windows.retain(|_, w| w.end > now);
        windows.insert(certificate_id.to_string(), window.clone());
        Ok(Some(window))
    }
}

/// When to ask for a renewal window again: when the CA says, at the latest
/// after a tenth of the certificate's lifetime, never sooner than a minute.
fn recheck_at(said: SystemTime, now: SystemTime, lifetime: Duration) -> SystemTime {
    said.min(now + lifetime / 10)
        .max(now + WINDOW_RECHECK_FLOOR)
}

/// A budget and the limits it was made with.
type Budgeted = (BudgetConfig, Arc<Mutex<Budget>>);

/// Accounts in use and budgets, by issuer name; the Secrets of the issuer
/// namespace where account credentials are kept.
pub struct AcmeAccounts {
    secrets: Api<Secret>,
    root_domain: String,
    calls: Calls,
    /// Each with the fingerprint of the spec it was made from.
    handles: Mutex<HashMap<String, (String, Arc<Handle>)>>,
    budgets: Budgets,
    /// One account lookup at a time: two at once could register two accounts.
    loading: tokio::sync::Mutex<()>,
}

/// Rate-limit budgets by issuer name.
#[derive(Default)]
pub struct Budgets {
    by_issuer: Mutex<HashMap<String, Budgeted>>,
}

impl Budgets {
    /// The issuer's budget, kept across reloads while its limits stay the same.
    pub fn budget(&self, name: &str, config: BudgetConfig) -> Arc<Mutex<Budget>> {
        let mut budgets = self.by_issuer.lock().expect("never poisoned");
        match budgets.get(name) {
            Some((kept, budget)) if *kept == config => budget.clone(),
            _ => {
                let budget = Arc::new(Mutex::new(Budget::new(config.clone())));
                budgets.insert(name.to_string(), (config, budget.clone()));
                budget
            }
        }
    }

    fn remove(&self, name: &str) {
        self.by_issuer.lock().expect("never poisoned").remove(name);
    }
}

/// What a cached handle was made from: a change makes a new one.
fn fingerprint(issuer: &AcmeIssuer) -> String {
    format!(
        "{}/{}",
        issuer.metadata.uid.as_deref().unwrap_or_default(),
        issuer.metadata.generation.unwrap_or_default()
    )
}

impl AcmeAccounts {
    pub fn new(secrets: Api<Secret>, root_domain: String, calls: Calls) -> Self {
        AcmeAccounts {
            secrets,
            root_domain,
            calls,
            handles: Mutex::default(),
            budgets: Budgets::default(),
            loading: tokio::sync::Mutex::default(),
        }
    }

    /// The issuer's handle: the cached one, or its account loaded from the
    /// stored credentials (registered anew if the CA forgot it).
    pub async fn get(&self, issuer: &AcmeIssuer) -> Result<Arc<Handle>, Failure> {
        let name = issuer.name_any();
        if let Some((made_from, handle)) = self.handles.lock().expect("never poisoned").get(&name)
            && *made_from == fingerprint(issuer)
        {
            return Ok(handle.clone());
        }
        self.refresh(issuer).await
    }

    /// Loads the account again, asking the CA whether it still knows it.
    pub async fn refresh(&self, issuer: &AcmeIssuer) -> Result<Arc<Handle>, Failure> {
        let _one = self.loading.lock().await;
        let name = issuer.name_any();
        let secret_name = account_secret_name(&name);
        self.calls.record(Backend::Kubernetes, Verb::Read);
        let stored = self
            .secrets
            .get_opt(&secret_name)
            .await?
            .and_then(|s| s.data?.remove(CREDENTIALS_KEY))
            .and_then(|b| String::from_utf8(b.0).ok());
        let acme = self.adapter(issuer).await?;
        let (account, credentials) = acme
            .account(stored.as_deref())
            .await
            .map_err(Failure::from)?;
        if stored.as_deref() != Some(credentials.as_str()) {
            let namespace = self.secrets.namespace().unwrap_or_default();
            kubernetes::ensure(
                &self.secrets,
                &credentials_secret(issuer, namespace, &credentials),
                &self.calls,
            )
            .await?;
        }
        let handle = Arc::new(Handle {
            account,
            budget: self
                .budgets
                .budget(&name, budget_config(issuer, &self.root_domain)),
            profile: issuer.spec.profile.clone(),
            challenge: challenge_kind(issuer.spec.challenge),
            windows: Mutex::default(),
        });
        self.handles
            .lock()
            .expect("never poisoned")
            .insert(name, (fingerprint(issuer), handle.clone()));
        Ok(handle)
    }

    async fn adapter(&self, issuer: &AcmeIssuer) -> Result<Acme, Failure> {
        adapter_of(self, issuer).await
    }

    /// Forgets a handle whose account the CA no longer knows.
    pub fn forget(&self, name: &str) {
        self.handles.lock().expect("never poisoned").remove(name);
    }

    /// Forgets the issuer and its budget: it was deleted.
    pub fn remove(&self, name: &str) {
        self.forget(name);
        self.budgets.remove(name);
    }
}

fn challenge_kind(challenge: ChallengeType) -> ChallengeKind {
    match challenge {
        ChallengeType::Http01 => ChallengeKind::Http01,
        ChallengeType::Dns01 => ChallengeKind::Dns01,
    }
}

/// The budget of an issuer's spec: its limits, the adapter's defaults for
/// those it leaves out.
pub fn budget_config(issuer: &AcmeIssuer, root_domain: &str) -> BudgetConfig {
    let defaults = BudgetConfig::default();
    let limits = issuer.spec.rate_limits.clone().unwrap_or_default();
    let window = |set: Option<RateWindow>, default: Window| {
        set.and_then(|w| {
            Some(Window {
                count: usize::try_from(w.count).ok()?,
                period: ossature_model::time::parse_ttl(&w.period)?,
            })
        })
        .unwrap_or(default)
    };
    BudgetConfig {
        new_orders: window(limits.new_orders, defaults.new_orders),
        certificates_per_domain: window(
            limits.certificates_per_domain,
            defaults.certificates_per_domain,
        ),
        duplicate_certificates: window(
            limits.duplicate_certificates,
            defaults.duplicate_certificates,
        ),
        failed_validations: window(limits.failed_validations, defaults.failed_validations),
        root_domain: Some(root_domain.to_string()),
    }
}

/// The adapter of an issuer's spec, with its EAB key read from its Secret.
async fn adapter_of(accounts: &AcmeAccounts, issuer: &AcmeIssuer) -> Result<Acme, Failure> {
    let spec = &issuer.spec;
    let external_account = match &spec.external_account_binding {
        Some(eab) => Some(ExternalAccountBinding {
            key_id: eab.key_id.clone(),
            hmac_key: secret_value(accounts, &eab.hmac_key_secret_ref).await?,
        }),
        None => None,
    };
    let Some(challtestsrv) = &spec.solver.chall_test_srv else {
        return Err(invalid("solver names no responder"));
    };
    let responder = ChallTestSrv::new(&challtestsrv.url).map_err(Failure::from)?;
    let settings = IssuerSettings {
        contact: spec.emails.iter().map(|e| format!("mailto:{e}")).collect(),
        directory_trust_pem: spec.ca_bundle.clone(),
        external_account,
        challenge: challenge_kind(spec.challenge),
        default_profile: spec.profile.clone(),
        wait: ORDER_WAIT,
        ..IssuerSettings::new(&spec.directory)
    };
    Acme::new(settings, Arc::new(responder), accounts.calls.clone()).map_err(Failure::from)
}

/// A key of a Secret in the issuer namespace, as text.
async fn secret_value(
    accounts: &AcmeAccounts,
    reference: &ossature_crds::SecretKeyRef,
) -> Result<String, Failure> {
    let namespace = accounts.secrets.namespace().unwrap_or_default();
    accounts.calls.record(Backend::Kubernetes, Verb::Read);
    let secret = accounts.secrets.get_opt(&reference.name).await?;
    secret
        .and_then(|s| s.data?.remove(&reference.key))
        .and_then(|b| String::from_utf8(b.0).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Failure {
            category: reasons::SECRET_NOT_USABLE,
            message: format!(
                "Secret {namespace}/{} has no key {}; the External Account Binding's HMAC key is read from there",
                reference.name, reference.key
            ),
        })
}

fn credentials_secret(issuer: &AcmeIssuer, namespace: &str, credentials: &str) -> Secret {
    let mut secret = Secret {
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CREDENTIALS_KEY.to_string(),
            ByteString(credentials.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    secret.metadata.name = Some(account_secret_name(&issuer.name_any()));
    secret.metadata.namespace = Some(namespace.to_string());
    secret.metadata.labels = Some(BTreeMap::from([
        (ISSUER_LABEL.to_string(), issuer.name_any()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]));
    secret
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        category: reasons::INVALID_SPEC,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_window_is_asked_again_within_a_tenth_of_the_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hours = now + Duration::from_secs(6 * 3600);
        let ninety_days = Duration::from_secs(90 * 24 * 3600);
        assert_eq!(recheck_at(hours, now, ninety_days), hours, "the CA's time");
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            recheck_at(hours, now, day),
            now + day / 10,
            "a tenth of a day"
        );
        assert_eq!(
            recheck_at(hours, now, Duration::from_secs(300)),
            now + WINDOW_RECHECK_FLOOR,
            "not sooner than the floor"
        );
    }

    fn issuer(limits: serde_json::Value) -> AcmeIssuer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
            "metadata": {"name": "pebble"},
            "spec": {"directory": "https://127.0.0.1:14000/dir",
                     "solver": {"challTestSrv": {"url": "http://127.0.0.1:8055"}},
                     "rateLimits": limits},
        }))
        .unwrap()
    }

    #[test]
    fn a_budget_takes_the_issuers_limits_and_the_defaults_for_the_rest() {
        let config = budget_config(
            &issuer(serde_json::json!({"newOrders": {"count": 1, "period": "1h"}})),
            "ossature.test",
        );
        let defaults = BudgetConfig::default();
        assert_eq!(
            config.new_orders,
            Window {
                count: 1,
                period: Duration::from_secs(3600)
            }
        );
        assert_eq!(config.failed_validations, defaults.failed_validations);
        assert_eq!(
            config.duplicate_certificates,
            defaults.duplicate_certificates
        );
        assert_eq!(config.root_domain.as_deref(), Some("ossature.test"));
    }

    #[test]
    fn budgets_survive_reloads_unless_the_limits_change() {
        let issuers = Budgets::default();
        let a = issuers.budget("x", BudgetConfig::default());
        let b = issuers.budget("x", BudgetConfig::default());
        assert!(Arc::ptr_eq(&a, &b));
        let tighter = BudgetConfig {
            new_orders: Window {
                count: 1,
                period: Duration::from_secs(60),
            },
            ..BudgetConfig::default()
        };
        assert!(!Arc::ptr_eq(&a, &issuers.budget("x", tighter)));
    }

    #[test]
    fn credentials_are_kept_in_a_labelled_secret_of_the_issuer_namespace() {
        let secret = credentials_secret(&issuer(serde_json::Value::Null), "kube-system", "{}");
        assert_eq!(secret.metadata.name.as_deref(), Some("acme-account-pebble"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(secret.metadata.labels.unwrap()[ISSUER_LABEL], "pebble");
    }
}
