//! ACME adapter: certificates for tenant hosts from an ACME CA (Pebble
//! locally), through instant-acme.
//!
//! # Crash-safe issuance
//!
//! Issuing is two calls around state the caller persists:
//! 1. [`AcmeAccount::begin`] places the order and returns an [`OrderRecord`].
//!    The caller stores it, together with the leaf key it generated
//!    ([`generate_leaf_key`]), in one write, before anything else.
//! 2. [`AcmeAccount::complete`] takes that record and key and drives the
//!    order from whatever state the CA has it in: it never places an order,
//!    so calling it again after a crash (or after it returned) resumes the
//!    same order and yields the same certificate for the same key.
//!
//! A crash inside `begin`, after the CA created the order but before the
//! record was stored, leaves an order nobody completes; it expires at the CA
//! with no key or certificate attached. The account's credentials
//! ([`Acme::account`]) are persisted the same way, once.

pub mod budget;
mod http;
pub mod responder;

pub use http::client as directory_client;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeStatus,
    ChallengeType, ExternalAccountKey, Identifier, Key, NewAccount, NewOrder, Order, OrderStatus,
    Problem,
};
use rcgen::PublicKeyData;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

pub use budget::{Budget, BudgetConfig, Limit, RetryAt, Window};
pub use responder::{ChallTestSrv, ChallengeKind, ChallengeResponse, Responder};

use self::http::AcmeHttp;
use super::Calls;

const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
const ACCOUNT_UNKNOWN: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
const SERVER_INTERNAL: &str = "urn:ietf:params:acme:error:serverInternal";
const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
const PROBLEM_PREFIX: &str = "urn:ietf:params:acme:error:";

/// First and longest pause between two looks at an order in progress.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_LONGEST: Duration = Duration::from_secs(3);

/// External Account Binding: the CA's key id and HMAC key for the account.
#[derive(Clone)]
pub struct ExternalAccountBinding {
    pub key_id: String,
    /// base64url, as CAs hand it out.
    pub hmac_key: String,
}

// By hand, so the HMAC key never reaches a log line.
impl std::fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// One ACME issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub directory_url: String,
    /// Account contacts, as URLs (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// PEM certificates trusted for the directory's HTTPS; `None`: the
    /// platform's roots.
    pub directory_trust_pem: Option<String>,
    pub external_account: Option<ExternalAccountBinding>,
    pub challenge: ChallengeKind,
    /// Profile of orders that name none; `None` leaves it to the CA (Pebble
    /// then picks one at random).
    pub default_profile: Option<String>,
    /// How long one `complete` call waits for the CA before returning
    /// [`AcmeError::Waiting`]; the order goes on and a later call resumes it.
    pub wait: Duration,
}

impl IssuerSettings {
    pub fn new(directory_url: impl Into<String>) -> Self {
        Self {
            directory_url: directory_url.into(),
            contact: Vec::new(),
            directory_trust_pem: None,
            external_account: None,
            challenge: ChallengeKind::Http01,
            default_profile: None,
            wait: Duration::from_secs(60),
        }
    }
}

/// A failed ACME step. `category()` is the low-cardinality reason used in
/// conditions, Events and metrics.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused for one of its rate limits; wait, do not retry now.
    #[error("the ACME CA rate-limited {action}: {problem}")]
    RateLimited {
        action: String,
        problem: String,
        retry_after: Option<SystemTime>,
    },
    /// The CA refused the request; retrying the same will not help.
    #[error("the ACME CA refused to {action}: {problem}")]
    Refused {
        action: String,
        problem: String,
        problem_type: Option<String>,
    },
    /// Challenges of these names failed at the CA; the order is invalid.
    #[error("the ACME CA's validation failed: {problem}")]
    ValidationFailed { names: Vec<String>, problem: String },
    /// The recorded order is no longer known to the CA (another account,
    /// or the CA forgot it): begin a new one.
    #[error("the ACME order {url} is gone: {problem}")]
    OrderGone { url: String, problem: String },
    /// Transport failure or a failing CA; worth retrying soon.
    #[error("the ACME CA could not be reached to {action}: {detail}")]
    Unreachable { action: String, detail: String },
    /// The CA answered something we could not use.
    #[error("the ACME CA answered {action} with something unreadable: {detail}")]
    Unreadable { action: String, detail: String },
    /// The order is still in progress at the CA; call `complete` again.
    #[error("the ACME order {url} is still {status} after waiting; it resumes on the next call")]
    Waiting { url: String, status: String },
    #[error("challenge responder failed: {0}")]
    Responder(String),
    /// The request itself is wrong (names, key, settings).
    #[error("{0}")]
    Invalid(String),
}

impl AcmeError {
    pub fn category(&self) -> &'static str {
        match self {
            AcmeError::RateLimited { .. } => "RateLimited",
            AcmeError::Refused { .. } => "AcmeRefused",
            AcmeError::ValidationFailed { .. } => "ValidationFailed",
            AcmeError::OrderGone { .. } => "AcmeOrderGone",
            AcmeError::Unreachable { .. } => "BackendUnreachable",
            AcmeError::Unreadable { .. } => "BackendUnreadable",
            AcmeError::Waiting { .. } => "AcmeWaiting",
            AcmeError::Responder(_) => "ChallengeResponderFailed",
            AcmeError::Invalid(_) => "InvalidCertificateRequest",
        }
    }

    /// Worth trying again shortly (as opposed to after a change or a wait).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AcmeError::Unreachable { .. } | AcmeError::Waiting { .. } | AcmeError::Responder(_)
        )
    }

    /// When the CA said to try again, for rate limits.
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A problem document as one line: short type, detail, then each
/// identifier's subproblem.
pub fn describe_problem(problem: &Problem) -> String {
    let short = |t: &Option<String>| {
        t.as_deref()
            .map(|t| t.strip_prefix(PROBLEM_PREFIX).unwrap_or(t).to_string())
    };
    let mut text = match (short(&problem.r#type), &problem.detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t,
        (None, Some(d)) => d.clone(),
        (None, None) => "no detail given".to_string(),
    };
    for sub in &problem.subproblems {
        let name = match &sub.identifier {
            Some(Identifier::Dns(name)) => name.clone(),
            Some(other) => format!("{other:?}"),
            None => "?".to_string(),
        };
        text.push_str(&format!(
            "; {name}: {}{}",
            short(&sub.r#type).map(|t| t + ": ").unwrap_or_default(),
            sub.detail.as_deref().unwrap_or("no detail given")
        ));
    }
    text
}

/// The serialisable state of an order in progress: what the caller persists
/// between `begin` and a successful `complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRecord {
    /// The order at the CA: the only handle to it.
    pub url: String,
    /// Names ordered, normalised and sorted; the CSR carries exactly these.
    pub names: Vec<String>,
    pub profile: Option<String>,
    /// ARI identifier of the certificate this order replaces.
    pub replaces: Option<String>,
    /// When the order was placed, in seconds since the Unix epoch.
    pub created_at: u64,
}

impl OrderRecord {
    pub fn created_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.created_at)
    }
}

/// A certificate issued for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// ARI identifier of the leaf: `replaces` of its renewal.
    pub certificate_id: String,
    pub order_url: String,
}

/// When the CA suggests renewing a certificate (ACME Renewal Information).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    pub start: SystemTime,
    pub end: SystemTime,
    /// When to ask the CA again: the window may move.
    pub check_again: SystemTime,
    pub explanation_url: Option<String>,
}

/// A fresh ECDSA P-256 leaf key, PKCS#8 PEM, for the caller to persist with
/// the order record.
pub fn generate_leaf_key() -> Result<String, AcmeError> {
    rcgen::KeyPair::generate()
        .map(|k| k.serialize_pem())
        .map_err(|e| AcmeError::Invalid(format!("generating a leaf key: {e}")))
}

/// The ARI identifier (`base64url(AKI).base64url(serial)`) of a chain's leaf.
pub fn certificate_id(chain_pem: &str) -> Result<String, AcmeError> {
    let leaf = leaf(chain_pem)?;
    CertificateIdentifier::try_from(&leaf)
        .map(|id| id.to_string())
        .map_err(|e| AcmeError::Invalid(format!("certificate has no ARI identifier: {e}")))
}

fn leaf(chain_pem: &str) -> Result<CertificateDer<'static>, AcmeError> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| AcmeError::Invalid("no certificate in the chain".into()))?
        .map_err(|e| AcmeError::Invalid(format!("certificate chain is not PEM: {e}")))
}

/// Lowercase, without a trailing dot, sorted, once each.
fn normalise_names(names: &[String]) -> Result<Vec<String>, AcmeError> {
    let mut out: Vec<String> = names
        .iter()
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() || out.iter().any(String::is_empty) {
        return Err(AcmeError::Invalid(
            "a certificate needs at least one non-empty name".into(),
        ));
    }
    Ok(out)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

struct Shared {
    settings: IssuerSettings,
    http: AcmeHttp,
    responder: Arc<dyn Responder>,
}

impl Shared {
    /// Maps an instant-acme error of `action` onto our categories.
    fn error(&self, action: &str, error: instant_acme::Error) -> AcmeError {
        use instant_acme::Error as E;
        let action = action.to_string();
        match error {
            E::Api(problem) => self.problem(action, &problem),
            E::Other(inner) if inner.downcast_ref::<reqwest::Error>().is_some() => {
                AcmeError::Unreachable {
                    action,
                    detail: error_chain(inner.as_ref()),
                }
            }
            E::Hyper(e) => AcmeError::Unreachable {
                action,
                detail: e.to_string(),
            },
            E::Timeout(_) => AcmeError::Unreachable {
                action,
                detail: "timed out".into(),
            },
            E::Crypto | E::KeyRejected => {
                AcmeError::Invalid(format!("{action}: the account key is unusable ({error})"))
            }
            other => AcmeError::Unreadable {
                action,
                detail: other.to_string(),
            },
        }
    }

    fn problem(&self, action: String, problem: &Problem) -> AcmeError {
        let described = describe_problem(problem);
        match problem.r#type.as_deref() {
            Some(RATE_LIMITED) => AcmeError::RateLimited {
                action,
                problem: described,
                retry_after: self.http.take_retry_after(),
            },
            Some(SERVER_INTERNAL | BAD_NONCE) => AcmeError::Unreachable {
                action,
                detail: described,
            },
            _ if problem.status.is_some_and(|s| s >= 500) => AcmeError::Unreachable {
                action,
                detail: described,
            },
            t => AcmeError::Refused {
                action,
                problem: described,
                problem_type: t.map(str::to_string),
            },
        }
    }
}

/// An error and its sources, outermost first: reqwest's own message alone
/// rarely says what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The adapter for one issuer.
pub struct Acme {
    shared: Arc<Shared>,
    calls: Calls,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.shared.settings.directory_url)
            .finish_non_exhaustive()
    }
}

impl Acme {
    pub fn new(
        settings: IssuerSettings,
        responder: Arc<dyn Responder>,
        calls: Calls,
    ) -> Result<Self, AcmeError> {
        if let Some(eab) = &settings.external_account {
            decode_hmac(eab)?;
        }
        let http = AcmeHttp::new(settings.directory_trust_pem.as_deref(), calls.clone())
            .map_err(AcmeError::Invalid)?;
        Ok(Self {
            shared: Arc::new(Shared {
                settings,
                http,
                responder,
            }),
            calls,
        })
    }

    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// The issuer's account: restored from `stored` credentials (JSON, as
    /// returned before) when the CA still knows them, created otherwise
    /// (with the External Account Binding when configured). Returns the
    /// credentials to persist, a secret; they change only when an account
    /// was created.
    pub async fn account(&self, stored: Option<&str>) -> Result<(AcmeAccount, String), AcmeError> {
        let directory = &self.shared.settings.directory_url;
        if let Some(stored) = stored {
            let credentials: AccountCredentials = serde_json::from_str(stored)
                .map_err(|e| AcmeError::Invalid(format!("stored ACME credentials: {e}")))?;
            let same_ca = serde_json::from_str::<serde_json::Value>(stored)
                .is_ok_and(|v| v["directory"].as_str() == Some(directory));
            if same_ca {
                // Asks the CA for the account of this key (onlyReturnExisting),
                // so an account it forgot is found here, not mid-order.
                let key = Key::from_pkcs8_der(credentials.private_key().clone_key())
                    .map_err(|e| self.shared.error("restore the ACME account key", e))?;
                let pkcs8 =
                    rustls::pki_types::PrivateKeyDer::Pkcs8(credentials.private_key().clone_key());
                match self
                    .builder()
                    .from_key((key, pkcs8), directory.clone())
                    .await
                {
                    Ok((account, _)) => return Ok((self.wrap(account), stored.to_string())),
                    Err(instant_acme::Error::Api(p))
                        if p.r#type.as_deref() == Some(ACCOUNT_UNKNOWN) => {}
                    Err(e) => return Err(self.shared.error("look up the ACME account", e)),
                }
            }
        }
        self.create_account().await
    }

    fn builder(&self) -> instant_acme::AccountBuilder {
        Account::builder_with_http(Box::new(self.shared.http.clone()))
    }

    fn wrap(&self, account: Account) -> AcmeAccount {
        AcmeAccount {
            account,
            shared: self.shared.clone(),
        }
    }

    async fn create_account(&self) -> Result<(AcmeAccount, String), AcmeError> {
        let settings = &self.shared.settings;
        let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
        let eab = settings
            .external_account
            .as_ref()
            .map(|eab| {
                Ok::<_, AcmeError>(ExternalAccountKey::new(
                    eab.key_id.clone(),
                    &decode_hmac(eab)?,
                ))
            })
            .transpose()?;
        let (account, credentials) = self
            .builder()
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory_url.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| self.shared.error("create an ACME account", e))?;
        let json = serde_json::to_string(&credentials).map_err(|e| AcmeError::Unreadable {
            action: "create an ACME account".into(),
            detail: e.to_string(),
        })?;
        Ok((self.wrap(account), json))
    }
}

fn decode_hmac(eab: &ExternalAccountBinding) -> Result<Vec<u8>, AcmeError> {
    BASE64_URL_SAFE_NO_PAD
        .decode(eab.hmac_key.trim().trim_end_matches('='))
        .map_err(|e| {
            AcmeError::Invalid(format!(
                "External Account Binding key of {} is not base64url: {e}",
                eab.key_id
            ))
        })
}

/// An account at the issuer; cheap to clone.
#[derive(Clone)]
pub struct AcmeAccount {
    account: Account,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccount")
            .field("id", &self.account.id())
            .finish_non_exhaustive()
    }
}

impl AcmeAccount {
    /// The account URL at the CA.
    pub fn id(&self) -> &str {
        self.account.id()
    }

    fn error(&self, action: &str, e: instant_acme::Error) -> AcmeError {
        self.shared.error(action, e)
    }

    /// Places an order for `names` with `profile` (or the issuer's default),
    /// replacing the certificate with ARI identifier `replaces` if given.
    /// Persist the record (with the leaf key) before calling `complete`.
    pub async fn begin(
        &self,
        names: &[String],
        profile: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<OrderRecord, AcmeError> {
        let names = normalise_names(names)?;
        let settings = &self.shared.settings;
        if settings.challenge == ChallengeKind::Http01
            && let Some(wildcard) = names.iter().find(|n| n.starts_with("*."))
        {
            return Err(AcmeError::Invalid(format!(
                "{wildcard} is a wildcard: only DNS-01 validates it, and this issuer answers HTTP-01"
            )));
        }
        let profile = profile.or(settings.default_profile.as_deref());
        let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut request = NewOrder::new(&identifiers);
        if let Some(profile) = profile {
            request = request.profile(profile);
        }
        if let Some(replaces) = replaces {
            let (aki, serial) = replaces.split_once('.').ok_or_else(|| {
                AcmeError::Invalid(format!("{replaces:?} is no ARI certificate identifier"))
            })?;
            request = request.replaces(CertificateIdentifier {
                authority_key_identifier: aki.into(),
                serial: serial.into(),
            });
        }
        let action = format!("order a certificate for {}", names.join(", "));
        let order = self
            .account
            .new_order(&request)
            .await
            .map_err(|e| self.error(&action, e))?;
        Ok(OrderRecord {
            url: order.url().to_string(),
            names,
            profile: profile.map(str::to_string),
            replaces: replaces.map(str::to_string),
            created_at: unix_seconds(SystemTime::now()),
        })
    }

    /// Drives the recorded order to its certificate, for the leaf key
    /// `key_pem` (PKCS#8 PEM, stored with the record), from whatever state
    /// it is in at the CA. Never places an order: call it again after any
    /// error but `Refused`/`ValidationFailed`/`OrderGone`, or after a crash.
    pub async fn complete(&self, record: &OrderRecord, key_pem: &str) -> Result<Issued, AcmeError> {
        let key = rcgen::KeyPair::from_pem(key_pem)
            .map_err(|e| AcmeError::Invalid(format!("the recorded leaf key: {e}")))?;
        let mut order = match self.account.order(record.url.clone()).await {
            Ok(order) => order,
            Err(instant_acme::Error::Api(problem))
                if matches!(problem.status, Some(401 | 403 | 404)) =>
            {
                return Err(AcmeError::OrderGone {
                    url: record.url.clone(),
                    problem: describe_problem(&problem),
                });
            }
            Err(e) => return Err(self.error("read the recorded ACME order", e)),
        };
        if order.state().status != OrderStatus::Pending {
            // A crash may have come between publishing and unpublishing.
            self.unpublish_all(&mut order).await?;
        }
        let deadline = Instant::now() + self.shared.settings.wait;
        let mut pause = POLL_FIRST;
        let chain = loop {
            let status = order.state().status;
            match status {
                OrderStatus::Pending => self.validate(&mut order, deadline).await?,
                OrderStatus::Ready => {
                    let csr = csr(&record.names, &key)?;
                    order
                        .finalize_csr(&csr)
                        .await
                        .map_err(|e| self.error("finalize the ACME order", e))?;
                }
                OrderStatus::Processing => {
                    pause = self.wait(&order, "processing", deadline, pause).await?;
                    order
                        .refresh()
                        .await
                        .map_err(|e| self.error("read the ACME order", e))?;
                }
                OrderStatus::Valid => {
                    break order
                        .certificate()
                        .await
                        .map_err(|e| self.error("download the certificate", e))?
                        .ok_or_else(|| AcmeError::Unreadable {
                            action: "download the certificate".into(),
                            detail: "no certificate".into(),
                        })?;
                }
                OrderStatus::Invalid => return Err(self.why_invalid(&mut order).await),
            }
        };
        issued(chain, &key, order.url())
    }

    /// Publishes every pending challenge's answer, tells the CA, waits until
    /// the order leaves `pending`, and always takes the answers away again
    /// (unless the wait ran out while the CA may still be looking).
    async fn validate(&self, order: &mut Order, deadline: Instant) -> Result<(), AcmeError> {
        let mut published = Vec::new();
        let mut outcome = self.answer(order, &mut published).await;
        let mut pause = POLL_FIRST;
        while outcome.is_ok() && order.state().status == OrderStatus::Pending {
            outcome = match self.wait(order, "pending", deadline, pause).await {
                Ok(next) => {
                    pause = next;
                    order
                        .refresh()
                        .await
                        .map(drop)
                        .map_err(|e| self.error("read the ACME order", e))
                }
                Err(e) => return Err(e),
            };
        }
        let mut cleanup = Ok(());
        for response in &published {
            if let Err(e) = self.shared.responder.unpublish(response).await {
                cleanup = Err(e);
            }
        }
        outcome.and(cleanup)
    }

    /// Publishes answers for pending authorizations, then marks their
    /// challenges ready. Answers are published before any is marked, so a
    /// wildcard and its base name (one TXT record) are both in place.
    async fn answer(
        &self,
        order: &mut Order,
        published: &mut Vec<ChallengeResponse>,
    ) -> Result<(), AcmeError> {
        let kind = self.shared.settings.challenge;
        let mut to_mark = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.error("read an ACME authorization", e))?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Refused {
                        action: format!("authorize {name}"),
                        problem: format!("authorization is {other:?}"),
                        problem_type: None,
                    });
                }
            }
            let url = authz.url().to_string();
            let challenge =
                authz
                    .challenge(challenge_type(kind))
                    .ok_or_else(|| AcmeError::Refused {
                        action: format!("authorize {name}"),
                        problem: format!("the CA offers no {} challenge for it", kind.as_str()),
                        problem_type: None,
                    })?;
            let response = response_for(kind, &challenge);
            self.shared.responder.publish(&response).await?;
            published.push(response);
            // A challenge already processing (marked before a crash) is
            // being looked at: marking it again would be refused.
            if challenge.status == ChallengeStatus::Pending {
                to_mark.push(url);
            }
        }
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.error("read an ACME authorization", e))?;
            if !to_mark.iter().any(|u| u == authz.url()) {
                continue;
            }
            let name = authz.identifier().to_string();
            if let Some(mut challenge) = authz.challenge(challenge_type(kind)) {
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| self.error(&format!("start validating {name}"), e))?;
            }
        }
        Ok(())
    }

    /// Takes away the answers of every authorization of the order.
    async fn unpublish_all(&self, order: &mut Order) -> Result<(), AcmeError> {
        let kind = self.shared.settings.challenge;
        let mut responses = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.error("read an ACME authorization", e))?;
            if let Some(challenge) = authz.challenge(challenge_type(kind)) {
                responses.push(response_for(kind, &challenge));
            }
        }
        for response in &responses {
            self.shared.responder.unpublish(response).await?;
        }
        Ok(())
    }

    /// Sleeps before the next look at the order, or gives up at `deadline`.
    async fn wait(
        &self,
        order: &Order,
        status: &str,
        deadline: Instant,
        pause: Duration,
    ) -> Result<Duration, AcmeError> {
        if Instant::now() + pause > deadline {
            return Err(AcmeError::Waiting {
                url: order.url().to_string(),
                status: status.to_string(),
            });
        }
        tokio::time::sleep(pause).await;
        Ok((pause * 3 / 2).min(POLL_LONGEST))
    }

    /// Why an order is invalid: the failed challenges' problems by name,
    /// else the order's own problem.
    async fn why_invalid(&self, order: &mut Order) -> AcmeError {
        let order_problem = order.state().error.clone();
        let mut names = Vec::new();
        let mut problems = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = match authz {
                Ok(authz) => authz,
                Err(e) => return self.error("read an ACME authorization", e),
            };
            // States cached before validation say nothing of its outcome.
            if let Err(e) = authz.refresh().await {
                return self.error("read an ACME authorization", e);
            }
            if authz.status != AuthorizationStatus::Invalid {
                continue;
            }
            let name = authz.identifier().to_string();
            let detail = authz
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref())
                .map(describe_problem)
                .unwrap_or_else(|| "authorization is invalid".into());
            problems.push(format!("{name}: {detail}"));
            names.push(name);
        }
        if !names.is_empty() {
            return AcmeError::ValidationFailed {
                names,
                problem: problems.join("; "),
            };
        }
        AcmeError::Refused {
            action: format!("issue the order {}", order.url()),
            problem: order_problem
                .as_ref()
                .map(describe_problem)
                .unwrap_or_else(|| "the order is invalid".into()),
            problem_type: order_problem.and_then(|p| p.r#type),
        }
    }

    /// The CA's suggested renewal window for a certificate it issued
    /// (ACME Renewal Information); `None` when the CA does not offer ARI.
    pub async fn renewal_window(
        &self,
        chain_pem: &str,
    ) -> Result<Option<RenewalWindow>, AcmeError> {
        let leaf = leaf(chain_pem)?;
        let id = CertificateIdentifier::try_from(&leaf)
            .map_err(|e| AcmeError::Invalid(format!("certificate has no ARI identifier: {e}")))?;
        match self.account.renewal_info(&id).await {
            Ok((info, again)) => Ok(Some(RenewalWindow {
                start: info.suggested_window.start.into(),
                end: info.suggested_window.end.into(),
                check_again: SystemTime::now() + again,
                explanation_url: info.explanation_url,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(self.error("read the certificate's renewal information", e)),
        }
    }
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
    }
}

fn response_for(
    kind: ChallengeKind,
    challenge: &instant_acme::ChallengeHandle<'_>,
) -> ChallengeResponse {
    let key_authorization = challenge.key_authorization();
    let name = match challenge.identifier().identifier {
        Identifier::Dns(name) => name.clone(),
        other => format!("{other:?}"),
    };
    ChallengeResponse {
        kind,
        name,
        token: challenge.token.clone(),
        value: match kind {
            ChallengeKind::Http01 => key_authorization.as_str().to_string(),
            ChallengeKind::Dns01 => key_authorization.dns_value(),
        },
    }
}

/// A CSR for exactly `names`, signed by the recorded key.
fn csr(names: &[String], key: &rcgen::KeyPair) -> Result<Vec<u8>, AcmeError> {
    let csr = ossature_model::certificates::request(names, &[], None, &[], key)
        .map_err(|e| AcmeError::Invalid(format!("a request for {names:?}: {e}")))?;
    Ok(csr.der().to_vec())
}

/// Checks the chain's leaf is for `key` and reads its validity.
fn issued(chain_pem: String, key: &rcgen::KeyPair, order_url: &str) -> Result<Issued, AcmeError> {
    let unreadable = |detail: String| AcmeError::Unreadable {
        action: "download the certificate".into(),
        detail,
    };
    let der = leaf(&chain_pem).map_err(|e| unreadable(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| unreadable(format!("leaf certificate: {e}")))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        // Never hand out a certificate the stored key cannot serve.
        return Err(unreadable(
            "the certificate is for another key than the recorded one".into(),
        ));
    }
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let certificate_id = CertificateIdentifier::try_from(&der)
        .map(|id| id.to_string())
        .map_err(unreadable)?;
    Ok(Issued {
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        chain_pem,
        certificate_id,
        order_url: order_url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: serde_json::Value) -> Problem {
        serde_json::from_value(json).unwrap()
    }

    fn shared() -> Shared {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Shared {
            settings: IssuerSettings::new("https://ca.invalid/dir"),
            http: AcmeHttp::new(None, Calls::default()).unwrap(),
            responder: Arc::new(ChallTestSrv::new("http://127.0.0.1:1").unwrap()),
        }
    }

    #[test]
    fn problems_read_as_type_detail_and_subproblems() {
        let p = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Some identifiers were rejected",
            "status": 400,
            "subproblems": [{
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": "Invalid underscore",
                "identifier": {"type": "dns", "value": "_a.example"}
            }]
        }));
        assert_eq!(
            describe_problem(&p),
            "rejectedIdentifier: Some identifiers were rejected; _a.example: malformed: Invalid underscore"
        );
        let e = shared().problem("order a certificate for a".into(), &p);
        assert_eq!(e.category(), "AcmeRefused");
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .contains("refused to order a certificate for a")
        );
    }

    #[test]
    fn rate_limits_and_server_failures_have_their_own_categories() {
        let s = shared();
        let limited = s.problem(
            "order".into(),
            &problem(serde_json::json!({
                "type": RATE_LIMITED, "detail": "too many certificates", "status": 429
            })),
        );
        assert_eq!(limited.category(), "RateLimited");
        assert!(limited.to_string().contains("too many certificates"));
        let failing = s.problem(
            "order".into(),
            &problem(serde_json::json!({"type": SERVER_INTERNAL, "status": 500})),
        );
        assert_eq!(failing.category(), "BackendUnreachable");
        assert!(failing.is_transient());
    }

    #[test]
    fn names_are_normalised_and_wildcards_kept() {
        let names = normalise_names(&[
            "B.example.".to_string(),
            "*.b.example".to_string(),
            "b.example".to_string(),
        ])
        .unwrap();
        assert_eq!(names, ["*.b.example", "b.example"]);
        assert!(normalise_names(&[]).is_err());
    }

    #[test]
    fn order_records_round_trip_through_json() {
        let record = OrderRecord {
            url: "https://ca.invalid/order/1".into(),
            names: vec!["a.example".into()],
            profile: Some("shortlived".into()),
            replaces: None,
            created_at: 1_700_000_000,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"createdAt\":1700000000"), "{json}");
        assert_eq!(serde_json::from_str::<OrderRecord>(&json).unwrap(), record);
    }

    #[test]
    fn the_hmac_key_never_reaches_debug_output() {
        let eab = ExternalAccountBinding {
            key_id: "kid".into(),
            hmac_key: "c2VjcmV0".into(),
        };
        assert!(!format!("{eab:?}").contains("c2VjcmV0"));
        assert_eq!(decode_hmac(&eab).unwrap(), b"secret");
    }
}
