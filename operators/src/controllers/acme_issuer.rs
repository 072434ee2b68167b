//! The AcmeIssuer controller: registers (or finds again) the operator's
//! account at an ACME CA and keeps its credentials in a Secret of the issuer
//! namespace (`--acme-namespace`). The accounts in use, and each issuer's
//! rate-limit budget, are kept in memory by [`AcmeIssuers`], shared by every
//! Certificate of an issuer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use ossature_crds::{AcmeIssuer, AcmeIssuerStatus, ChallengeType, RateWindow};

use crate::adapters::Change;
use crate::adapters::acme::{
    Acme, AcmeAccount, AcmeError, Budget, BudgetConfig, ChallTestSrv, ChallengeKind,
    ExternalAccountBinding, IssuerSettings, RenewalWindow, Window,
};
use crate::conditions::{self, reasons};
use crate::context::Context;
use crate::desired;
use crate::kubernetes;
use crate::reconcile::{Error, Failure, Plan, Reconciled, Step, WatchContext, event};

pub const FINALIZER: &str = "ossature.dev/acme-issuer-cleanup";
/// Labels the Secret holding an issuer's account credentials.
pub const ISSUER_LABEL: &str = "ossature.dev/acme-issuer";
const CREDENTIALS_KEY: &str = "credentials";
/// Longest a reconcile waits for the CA inside one `complete`.
const ORDER_WAIT: Duration = Duration::from_secs(30);
/// Soonest a renewal window is asked again, whatever the CA says.
const WINDOW_RECHECK_FLOOR: Duration = Duration::from_secs(60);

crate::object_status!(AcmeIssuerStatus);

/// The Secret holding issuer `name`'s account credentials.
pub fn account_secret_name(name: &str) -> String {
    format!("acme-account-{name}")
}

/// Whether an AcmeIssuer is Ready for its current generation.
pub fn ready(issuer: &AcmeIssuer) -> bool {
    issuer.status.as_ref().is_some_and(|s| {
        s.observed_generation == issuer.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == conditions::READY && c.status == "True")
    })
}

/// Why an issuer is not Ready, from its own condition.
pub fn not_ready_reason(issuer: &AcmeIssuer) -> String {
    issuer
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not reconciled yet".into())
}

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

/// Accounts in use and budgets, by issuer name.
#[derive(Default)]
pub struct AcmeIssuers {
    /// Each with the fingerprint of the spec it was made from.
    handles: Mutex<HashMap<String, (String, Arc<Handle>)>>,
    budgets: Mutex<HashMap<String, Budgeted>>,
    /// One account lookup at a time: two at once could register two accounts.
    loading: tokio::sync::Mutex<()>,
}

/// What a cached handle was made from: a change makes a new one.
fn fingerprint(issuer: &AcmeIssuer) -> String {
    format!(
        "{}/{}",
        issuer.metadata.uid.as_deref().unwrap_or_default(),
        issuer.metadata.generation.unwrap_or_default()
    )
}

impl AcmeIssuers {
    /// The issuer's handle: the cached one, or its account loaded from the
    /// stored credentials (registered anew if the CA forgot it).
    pub async fn get(&self, ctx: &Context, issuer: &AcmeIssuer) -> Result<Arc<Handle>, Failure> {
        let name = issuer.name_any();
        if let Some((made_from, handle)) = self.handles.lock().expect("never poisoned").get(&name)
            && *made_from == fingerprint(issuer)
        {
            return Ok(handle.clone());
        }
        self.refresh(ctx, issuer).await
    }

    /// Loads the account again, asking the CA whether it still knows it.
    pub async fn refresh(
        &self,
        ctx: &Context,
        issuer: &AcmeIssuer,
    ) -> Result<Arc<Handle>, Failure> {
        let _one = self.loading.lock().await;
        let name = issuer.name_any();
        let secrets: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &ctx.settings.acme_namespace);
        let secret_name = account_secret_name(&name);
        ctx.calls.record(
            crate::adapters::Backend::Kubernetes,
            crate::adapters::Verb::Read,
        );
        let stored = secrets
            .get_opt(&secret_name)
            .await?
            .and_then(|s| s.data?.remove(CREDENTIALS_KEY))
            .and_then(|b| String::from_utf8(b.0).ok());
        let acme = adapter(ctx, issuer).await?;
        let (account, credentials) = acme
            .account(stored.as_deref())
            .await
            .map_err(acme_failure)?;
        if stored.as_deref() != Some(credentials.as_str()) {
            kubernetes::ensure(
                &secrets,
                &credentials_secret(issuer, &ctx.settings.acme_namespace, &credentials),
                &ctx.calls,
            )
            .await?;
        }
        let handle = Arc::new(Handle {
            account,
            budget: self.budget(&name, budget_config(issuer, &ctx.settings.root_domain)),
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

    /// Forgets a handle whose account the CA no longer knows.
    pub fn forget(&self, name: &str) {
        self.handles.lock().expect("never poisoned").remove(name);
    }

    /// The issuer's budget, kept across reloads while its limits stay the same.
    fn budget(&self, name: &str, config: BudgetConfig) -> Arc<Mutex<Budget>> {
        let mut budgets = self.budgets.lock().expect("never poisoned");
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
        self.forget(name);
        self.budgets.lock().expect("never poisoned").remove(name);
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
                period: desired::parse_ttl(&w.period)?,
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
async fn adapter(ctx: &Context, issuer: &AcmeIssuer) -> Result<Acme, Failure> {
    let spec = &issuer.spec;
    let external_account = match &spec.external_account_binding {
        Some(eab) => Some(ExternalAccountBinding {
            key_id: eab.key_id.clone(),
            hmac_key: secret_value(ctx, &eab.hmac_key_secret_ref).await?,
        }),
        None => None,
    };
    let Some(challtestsrv) = &spec.solver.chall_test_srv else {
        return Err(invalid("solver names no responder"));
    };
    let responder = ChallTestSrv::new(&challtestsrv.url).map_err(acme_failure)?;
    let settings = IssuerSettings {
        contact: spec.emails.iter().map(|e| format!("mailto:{e}")).collect(),
        directory_trust_pem: spec.ca_bundle.clone(),
        external_account,
        challenge: challenge_kind(spec.challenge),
        default_profile: spec.profile.clone(),
        wait: ORDER_WAIT,
        ..IssuerSettings::new(&spec.directory)
    };
    Acme::new(settings, Arc::new(responder), ctx.calls.clone()).map_err(acme_failure)
}

/// A key of a Secret in the issuer namespace, as text.
async fn secret_value(
    ctx: &Context,
    reference: &ossature_crds::SecretKeyRef,
) -> Result<String, Failure> {
    let namespace = &ctx.settings.acme_namespace;
    ctx.calls.record(
        crate::adapters::Backend::Kubernetes,
        crate::adapters::Verb::Read,
    );
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&reference.name)
        .await?;
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
        (
            desired::MANAGED_BY.0.to_string(),
            desired::MANAGED_BY.1.to_string(),
        ),
    ]));
    secret
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        category: reasons::INVALID_SPEC,
        message: message.into(),
    }
}

/// An adapter error, as a step's failure.
pub fn acme_failure(e: AcmeError) -> Failure {
    Failure {
        category: e.category(),
        message: e.to_string(),
    }
}

impl Reconciled for AcmeIssuer {
    const CONTROLLER: &'static str = "acmeissuer";
    const FINALIZER: &'static str = FINALIZER;
    type Status = AcmeIssuerStatus;

    fn status(&self) -> Option<&AcmeIssuerStatus> {
        self.status.as_ref()
    }

    fn api(client: kube::Client, _: &Self) -> Api<Self> {
        Api::all(client)
    }

    async fn plan<'a>(&'a self, ctx: &'a Context) -> Result<Plan<'a, AcmeIssuerStatus>, Error> {
        let previous = self.status.clone().unwrap_or_default();
        let mut plan = Plan::new(AcmeIssuerStatus {
            account_url: previous.account_url,
            ..Default::default()
        });
        let found: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = found.clone();
        plan.steps.push(Step::new(
            conditions::ACCOUNT_READY,
            format!("ACME account at {}", self.spec.directory),
            async move {
                let handle = ctx.acme.refresh(ctx, self).await?;
                *seen.lock().expect("never poisoned") = Some(handle.account.id().to_string());
                Ok::<_, Failure>(Vec::<Change>::new())
            },
        ));
        plan.found = Some(Box::new(move |status: &mut AcmeIssuerStatus| {
            if let Some(url) = found.lock().expect("never poisoned").take() {
                status.account_url = Some(url);
            }
            None
        }));
        Ok(plan)
    }

    async fn cleanup<'a>(&'a self, ctx: &'a Context) -> Result<Vec<Event>, Error> {
        let name = self.name_any();
        let users: Vec<String> = ctx
            .stores
            .certificates
            .state()
            .iter()
            .filter(|c| {
                c.metadata.deletion_timestamp.is_none()
                    && c.spec.issuer.acme_name() == Some(name.as_str())
            })
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

    fn watches(controller: Controller<Self>, _: &WatchContext) -> Controller<Self> {
        controller
    }
}

/// Certificates that name issuer `name`, from `store`.
pub fn certificates_of(
    store: &kube::runtime::reflector::Store<ossature_crds::Certificate>,
    name: &str,
) -> Vec<ObjectRef<ossature_crds::Certificate>> {
    store
        .state()
        .iter()
        .filter(|c| c.spec.issuer.acme_name() == Some(name))
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}

/// The AcmeIssuer, from the store or, when not this instance's, the API.
pub async fn find(ctx: &Context, name: &str) -> Result<Option<Arc<AcmeIssuer>>, kube::Error> {
    super::find_cluster_object(ctx, &ctx.stores.acme_issuers, name).await
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
        let issuers = AcmeIssuers::default();
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

    #[test]
    fn an_issuer_is_ready_only_for_its_current_generation() {
        let mut i = issuer(serde_json::Value::Null);
        i.metadata.generation = Some(2);
        assert!(!ready(&i));
        i.status = Some(AcmeIssuerStatus {
            observed_generation: Some(1),
            conditions: vec![conditions::condition(
                conditions::READY,
                true,
                "Provisioned",
                "ok",
                Some(1),
            )],
            account_url: None,
        });
        assert!(!ready(&i), "an older generation");
        i.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(ready(&i));
    }
}
