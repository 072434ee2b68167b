//! The ACME adapter against the stack's real Pebble and challtestsrv. Each
//! test orders certificates for its own names under `acme.ossature.test`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ossature_bootstrap::components::{
    CHALLTESTSRV_DNS_PORT, CHALLTESTSRV_HTTP01_PORT, PEBBLE_BLOCKED_DOMAIN, PEBBLE_DEFAULT_PROFILE,
    PEBBLE_EAB_HMAC_KEY, PEBBLE_EAB_KEY_ID, PEBBLE_SHORTLIVED_PROFILE,
    PEBBLE_SHORTLIVED_VALIDITY_SECONDS,
};
use ossature_operator::adapters::acme::{
    Acme, AcmeAccount, AcmeError, Budget, BudgetConfig, ChallTestSrv, ChallengeKind,
    ChallengeResponse, ExternalAccountBinding, Issued, IssuerSettings, Limit, OrderRecord,
    Responder, generate_leaf_key,
};
use ossature_operator::adapters::{Backend, Calls, Verb};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::sync::Notify;

mod common;

use common::{key_public_key, leaf_public_key};

const DOMAIN: &str = "acme.ossature.test";

struct Stack {
    directory: String,
    /// Trusts Pebble's HTTPS API (not its issuing root).
    api_trust: String,
    roots_url: String,
    challenge_admin: String,
}

async fn stack() -> Stack {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    Stack {
        directory: env["OSSATURE_ACME_DIRECTORY"].clone(),
        api_trust: std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"]).unwrap(),
        roots_url: env["OSSATURE_ACME_ROOTS_URL"].clone(),
        challenge_admin: env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"].clone(),
    }
}

impl Stack {
    fn settings(&self, challenge: ChallengeKind) -> IssuerSettings {
        IssuerSettings {
            contact: vec![format!("mailto:certificates@{DOMAIN}")],
            directory_trust_pem: Some(self.api_trust.clone()),
            challenge,
            default_profile: Some(PEBBLE_DEFAULT_PROFILE.into()),
            ..IssuerSettings::new(&self.directory)
        }
    }

    fn challtestsrv(&self) -> ChallTestSrv {
        ChallTestSrv::new(&self.challenge_admin).unwrap()
    }

    fn acme(&self, settings: IssuerSettings, responder: Arc<dyn Responder>) -> (Acme, Calls) {
        let calls = Calls::default();
        (
            Acme::new(settings, responder, calls.clone()).unwrap(),
            calls,
        )
    }

    /// A new account of an issuer answering through `responder`.
    async fn account(
        &self,
        settings: IssuerSettings,
        responder: Arc<dyn Responder>,
    ) -> (AcmeAccount, Calls) {
        let (acme, calls) = self.acme(settings, responder);
        (acme.account(None).await.unwrap().0, calls)
    }

    /// A new account answering through a [`Recorder`] of challtestsrv.
    async fn recorded_account(
        &self,
        kind: ChallengeKind,
        corrupt: bool,
    ) -> (AcmeAccount, Calls, Arc<Recorder>) {
        let recorder = Recorder::answering(self.challtestsrv(), corrupt);
        let (account, calls) = self.account(self.settings(kind), recorder.clone()).await;
        (account, calls, recorder)
    }

    /// A new account of an HTTP-01 issuer answering through challtestsrv.
    async fn http01_account(&self) -> (AcmeAccount, Calls) {
        let responder = Arc::new(self.challtestsrv());
        self.account(self.settings(ChallengeKind::Http01), responder)
            .await
    }

    /// Pebble's issuing root, which changes whenever Pebble restarts.
    async fn issuing_root(&self) -> String {
        let roots = reqwest::Certificate::from_pem_bundle(self.api_trust.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .build()
            .unwrap();
        let response = client.get(&self.roots_url).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.text().await.unwrap()
    }
}

fn unique(label: &str) -> String {
    format!("{label}-{}", common::suffix())
}

/// Places an order and completes it, logging how long issuance took.
async fn issue(
    account: &AcmeAccount,
    names: &[String],
    profile: Option<&str>,
    replaces: Option<&str>,
) -> (Issued, String) {
    let begun = Instant::now();
    let key = generate_leaf_key().unwrap();
    let record = account.begin(names, profile, replaces).await.unwrap();
    let issued = account.complete(&record, &key).await.unwrap();
    eprintln!("ISSUANCE_MS {}", begun.elapsed().as_millis());
    assert_eq!(issued.order_url, record.url);
    (issued, key)
}

fn certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Whether `chain_pem` is valid for `name` when trusting `root_pem` only.
fn verifies(chain_pem: &str, root_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for root in certificates(root_pem) {
        roots.add(root).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let chain = certificates(chain_pem);
    let (leaf, intermediates) = chain.split_first().unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(drop)
}

fn lifetime(issued: &Issued) -> Duration {
    issued.not_after.duration_since(issued.not_before).unwrap()
}

/// Answers through challtestsrv and remembers what it published and took
/// away, checking each answer is really visible while published.
struct Recorder {
    inner: ChallTestSrv,
    published: Mutex<Vec<ChallengeResponse>>,
    unpublished: Mutex<Vec<ChallengeResponse>>,
    /// Publishes this instead of the right value, to fail validation.
    corrupt: bool,
}

impl Recorder {
    fn new(inner: ChallTestSrv) -> Arc<Self> {
        Self::answering(inner, false)
    }

    fn answering(inner: ChallTestSrv, corrupt: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            published: Mutex::default(),
            unpublished: Mutex::default(),
            corrupt,
        })
    }

    fn published(&self) -> Vec<ChallengeResponse> {
        self.published.lock().unwrap().clone()
    }

    /// Everything published was taken away, and is no longer visible.
    async fn assert_clean(&self) {
        let published = self.published();
        assert!(!published.is_empty(), "nothing was published");
        let unpublished = self.unpublished.lock().unwrap().clone();
        for response in &published {
            assert!(unpublished.contains(response), "{response:?} was left");
            assert!(
                !visible(response).await,
                "{response:?} still answers after unpublishing"
            );
        }
    }
}

#[async_trait]
impl Responder for Recorder {
    async fn publish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        let mut sent = response.clone();
        if self.corrupt {
            sent.value = format!("{}-wrong", sent.value);
        }
        self.inner.publish(&sent).await?;
        assert!(
            visible(&sent).await,
            "{sent:?} is not visible once published"
        );
        self.published.lock().unwrap().push(response.clone());
        Ok(())
    }

    async fn unpublish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        self.inner.unpublish(response).await?;
        self.unpublished.lock().unwrap().push(response.clone());
        Ok(())
    }
}

/// Whether the CA would find an answer: the HTTP-01 path serves it, or the
/// TXT record exists in challtestsrv's DNS.
async fn visible(response: &ChallengeResponse) -> bool {
    match response.kind {
        ChallengeKind::Http01 => {
            let url = format!(
                "http://127.0.0.1:{CHALLTESTSRV_HTTP01_PORT}/.well-known/acme-challenge/{}",
                response.token
            );
            // challtestsrv answers every path, with an empty body when unknown.
            let answer = reqwest::Client::new().get(url).send().await.unwrap();
            answer.text().await.unwrap() == response.value
        }
        ChallengeKind::Dns01 => txt_answers(&response.dns_record()).await > 0,
    }
}

/// Number of TXT answers for `name` from challtestsrv's DNS server, asked
/// with a hand-made query (one question, recursion desired).
async fn txt_answers(name: &str) -> u16 {
    let mut query = vec![0x4f, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 16, 0, 1]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query, ("127.0.0.1", CHALLTESTSRV_DNS_PORT))
        .await
        .unwrap();
    let mut answer = [0u8; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut answer))
        .await
        .expect("challtestsrv answers DNS")
        .unwrap();
    assert!(len >= 12 && answer[..2] == query[..2], "not our answer");
    u16::from_be_bytes([answer[6], answer[7]])
}

#[tokio::test]
async fn http01_certificate_verifies_against_pebbles_issuing_root() {
    let stack = stack().await;
    let (account, calls, responder) = stack.recorded_account(ChallengeKind::Http01, false).await;
    let name = format!("{}.{DOMAIN}", unique("http"));
    let www = format!("www.{name}");

    let (issued, key) = issue(&account, &[www.clone(), name.clone()], None, None).await;

    let root = stack.issuing_root().await;
    for host in [&name, &www] {
        verifies(&issued.chain_pem, &root, host).unwrap();
    }
    assert!(verifies(&issued.chain_pem, &root, &format!("other.{DOMAIN}")).is_err());
    assert_eq!(leaf_public_key(&issued.chain_pem), key_public_key(&key));
    let days = lifetime(&issued).as_secs() / 86_400;
    assert!((89..=90).contains(&days), "default profile: {days} days");
    assert!(
        calls.count(Backend::Acme, Verb::Write) >= 4,
        "account, order, challenges, finalize"
    );
    assert!(calls.count(Backend::Acme, Verb::Read) >= 3);
    responder.assert_clean().await;
    assert_eq!(responder.published().len(), 2, "one answer per name");
}

#[tokio::test]
async fn dns01_issues_a_wildcard_with_its_base_name() {
    let stack = stack().await;
    let (account, _, responder) = stack.recorded_account(ChallengeKind::Dns01, false).await;
    let base = format!("x.{}.{DOMAIN}", unique("dns"));
    let wildcard = format!("*.{base}");

    let (issued, _) = issue(&account, &[wildcard, base.clone()], None, None).await;

    let root = stack.issuing_root().await;
    verifies(&issued.chain_pem, &root, &base).unwrap();
    verifies(&issued.chain_pem, &root, &format!("tenant-app.{base}")).unwrap();
    assert!(verifies(&issued.chain_pem, &root, &format!("a.b.{base}")).is_err());
    let published = responder.published();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|r| r.kind == ChallengeKind::Dns01
        && r.name == base
        && r.dns_record() == format!("_acme-challenge.{base}.")));
    assert_ne!(published[0].value, published[1].value);
    responder.assert_clean().await;
}

#[tokio::test]
async fn a_wildcard_is_refused_before_ordering_when_the_issuer_answers_http01() {
    let stack = stack().await;
    let (account, calls) = stack.http01_account().await;
    let writes = calls.count(Backend::Acme, Verb::Write);
    let names = [format!("*.{}.{DOMAIN}", unique("wild"))];
    let error = account.begin(&names, None, None).await.unwrap_err();
    assert_eq!(error.category(), "InvalidCertificateRequest");
    assert!(error.to_string().contains("DNS-01"), "{error}");
    assert_eq!(calls.count(Backend::Acme, Verb::Write), writes);
}

/// Answers through challtestsrv, then hangs: the process "dies" there.
struct DiesAfterPublishing {
    inner: ChallTestSrv,
    published: Notify,
}

#[async_trait]
impl Responder for DiesAfterPublishing {
    async fn publish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        self.inner.publish(response).await?;
        self.published.notify_one();
        std::future::pending().await
    }

    async fn unpublish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        self.inner.unpublish(response).await
    }
}

/// What the caller persisted: nothing else survives a crash.
struct Persisted {
    credentials: String,
    record: String,
    key: String,
}

/// Before a crash: a new account orders for `name`; credentials, record
/// and key are persisted, as the caller does before completing.
async fn begin_and_persist(
    stack: &Stack,
    responder: Arc<dyn Responder>,
    name: &str,
) -> (AcmeAccount, OrderRecord, Persisted) {
    let (acme, _) = stack.acme(stack.settings(ChallengeKind::Http01), responder);
    let (account, credentials) = acme.account(None).await.unwrap();
    let key = generate_leaf_key().unwrap();
    let record = account
        .begin(&[name.to_string()], None, None)
        .await
        .unwrap();
    let persisted = Persisted {
        credentials,
        record: serde_json::to_string(&record).unwrap(),
        key,
    };
    (account, record, persisted)
}

/// After the restart: a fresh adapter and account from `persisted` complete
/// the recorded order, with the recorded key, answering through a recorder.
async fn resume(stack: &Stack, persisted: &Persisted) -> (AcmeAccount, Calls, OrderRecord, Issued) {
    let responder = Recorder::new(stack.challtestsrv());
    let (acme, calls) = stack.acme(stack.settings(ChallengeKind::Http01), responder.clone());
    let (account, credentials) = acme.account(Some(&persisted.credentials)).await.unwrap();
    assert_eq!(credentials, persisted.credentials, "the same account");
    let record: OrderRecord = serde_json::from_str(&persisted.record).unwrap();
    let issued = account.complete(&record, &persisted.key).await.unwrap();
    assert_eq!(issued.order_url, record.url, "the recorded order, no other");
    assert_eq!(
        leaf_public_key(&issued.chain_pem),
        key_public_key(&persisted.key)
    );
    responder.assert_clean().await;
    (account, calls, record, issued)
}

#[tokio::test]
async fn an_order_resumes_after_a_crash_with_its_recorded_key() {
    let stack = stack().await;
    let name = format!("{}.{DOMAIN}", unique("resume"));
    // The crash: everything but what was persisted is dropped.
    let (_, _, persisted) = begin_and_persist(&stack, Arc::new(stack.challtestsrv()), &name).await;

    let (account, calls, record, issued) = resume(&stack, &persisted).await;
    verifies(&issued.chain_pem, &stack.issuing_root().await, &name).unwrap();
    let writes = calls.count(Backend::Acme, Verb::Write);

    // Completing a valid order again only reads: the same certificate.
    let again = account.complete(&record, &persisted.key).await.unwrap();
    assert_eq!(again, issued);
    assert_eq!(
        calls.count(Backend::Acme, Verb::Write),
        writes,
        "no new order"
    );

    // Another key than the recorded one is never handed a certificate.
    let other_key = generate_leaf_key().unwrap();
    let error = account.complete(&record, &other_key).await.unwrap_err();
    assert!(error.to_string().contains("another key"), "{error}");
}

#[tokio::test]
async fn an_order_killed_while_validating_resumes_without_a_second_order() {
    let stack = stack().await;
    let name = format!("{}.{DOMAIN}", unique("killed"));
    let dying = Arc::new(DiesAfterPublishing {
        inner: stack.challtestsrv(),
        published: Notify::new(),
    });
    let (account, record, persisted) = begin_and_persist(&stack, dying.clone(), &name).await;
    // Killed mid-step: the answer is published, the CA not yet told.
    tokio::select! {
        outcome = account.complete(&record, &persisted.key) => panic!("{outcome:?}"),
        _ = dying.published.notified() => {}
    }
    drop(account);

    resume(&stack, &persisted).await;
}

#[tokio::test]
async fn a_short_lived_profile_is_chosen_per_order_and_renewal_follows_ari() {
    let stack = stack().await;
    let (account, _) = stack.http01_account().await;
    let names = [format!("{}.{DOMAIN}", unique("short"))];

    let (issued, _) = issue(&account, &names, Some(PEBBLE_SHORTLIVED_PROFILE), None).await;
    let seconds = lifetime(&issued).as_secs();
    // Pebble makes notAfter the last valid second: validity minus one.
    assert!(
        (PEBBLE_SHORTLIVED_VALIDITY_SECONDS - 1..=PEBBLE_SHORTLIVED_VALIDITY_SECONDS)
            .contains(&seconds),
        "{seconds}s"
    );

    let window = account
        .renewal_window(&issued.chain_pem)
        .await
        .unwrap()
        .expect("Pebble offers ARI");
    let floor = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(
        floor(window.start) >= floor(issued.not_before),
        "{window:?} {issued:?}"
    );
    assert!(
        floor(window.end) <= floor(issued.not_after),
        "{window:?} {issued:?}"
    );
    assert!(window.start < window.end);
    assert!(window.check_again > SystemTime::now());

    // The renewal names the certificate it replaces.
    let key = generate_leaf_key().unwrap();
    let record = account
        .begin(
            &names,
            Some(PEBBLE_SHORTLIVED_PROFILE),
            Some(&issued.certificate_id),
        )
        .await
        .unwrap();
    assert_eq!(
        record.replaces.as_deref(),
        Some(issued.certificate_id.as_str())
    );
    let renewed = account.complete(&record, &key).await.unwrap();
    assert_ne!(renewed.certificate_id, issued.certificate_id);
    assert!(renewed.not_after >= issued.not_after);
}

#[tokio::test]
async fn a_failed_validation_names_the_name_and_leaves_nothing_published() {
    let stack = stack().await;
    let (account, _, responder) = stack.recorded_account(ChallengeKind::Http01, true).await;
    let name = format!("{}.{DOMAIN}", unique("fail"));
    let names = [name.clone()];
    let key = generate_leaf_key().unwrap();
    let record = account.begin(&names, None, None).await.unwrap();

    let error = account.complete(&record, &key).await.unwrap_err();
    let AcmeError::ValidationFailed {
        names: failed,
        problem,
    } = &error
    else {
        panic!("{error}");
    };
    eprintln!("{error}");
    assert_eq!(failed, &names);
    assert!(problem.contains("unauthorized"), "{problem}");
    assert_eq!(error.category(), "ValidationFailed");
    responder.assert_clean().await;

    // The caller counts it against the name.
    let mut budget = Budget::new(BudgetConfig::default());
    for _ in 0..5 {
        budget.record_failed_validation(&failed[0], SystemTime::now());
    }
    let retry = budget.check(&names, SystemTime::now()).unwrap_err();
    assert_eq!(retry.limit, Limit::FailedValidations);
}

#[tokio::test]
async fn refused_orders_carry_the_cas_detail() {
    let stack = stack().await;
    let (account, _) = stack.http01_account().await;

    let blocked = [format!("{}.{PEBBLE_BLOCKED_DOMAIN}", unique("blocked"))];
    let error = account.begin(&blocked, None, None).await.unwrap_err();
    let text = error.to_string();
    eprintln!("{text}");
    assert_eq!(error.category(), "AcmeRefused", "{text}");
    assert!(text.contains("rejectedIdentifier"), "{text}");
    assert!(text.contains("forbidden by policy"), "{text}");
    assert!(text.contains(&blocked[0]), "{text}");

    let malformed = [format!("bad_name.{}.{DOMAIN}", unique("malformed"))];
    let error = account.begin(&malformed, None, None).await.unwrap_err();
    let text = error.to_string();
    eprintln!("{text}");
    assert_eq!(error.category(), "AcmeRefused", "{text}");
    assert!(
        text.contains("malformed") && text.contains("illegal character"),
        "{text}"
    );

    let profile = [format!("{}.{DOMAIN}", unique("profile"))];
    let error = account
        .begin(&profile, Some("no-such-profile"), None)
        .await
        .unwrap_err();
    eprintln!("{error}");
    assert!(error.to_string().contains("no-such-profile"), "{error}");
}

#[tokio::test]
async fn accounts_bind_to_an_external_account_and_are_reused() {
    let stack = stack().await;
    let bound = |hmac_key: &str| IssuerSettings {
        external_account: Some(ExternalAccountBinding {
            key_id: PEBBLE_EAB_KEY_ID.into(),
            hmac_key: hmac_key.into(),
        }),
        ..stack.settings(ChallengeKind::Http01)
    };
    let responder: Arc<dyn Responder> = Arc::new(stack.challtestsrv());

    let (acme, _) = stack.acme(bound(PEBBLE_EAB_HMAC_KEY), responder.clone());
    let (account, credentials) = acme.account(None).await.unwrap();
    let (again, same) = acme.account(Some(&credentials)).await.unwrap();
    assert_eq!((again.id(), &same), (account.id(), &credentials));
    // The bound account issues.
    issue(
        &account,
        &[format!("{}.{DOMAIN}", unique("eab"))],
        None,
        None,
    )
    .await;

    let (impostor, _) = stack.acme(
        bound("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk"),
        responder.clone(),
    );
    let error = impostor.account(None).await.unwrap_err();
    eprintln!("{error}");
    assert_eq!(error.category(), "AcmeRefused", "{error}");
    assert!(
        error.to_string().contains("create an ACME account"),
        "{error}"
    );

    // Credentials of another CA are not reused: a new account is made here.
    let mut foreign: serde_json::Value = serde_json::from_str(&credentials).unwrap();
    foreign["directory"] = "https://ca.invalid/directory".into();
    let (other, fresh) = acme.account(Some(&foreign.to_string())).await.unwrap();
    assert_ne!(other.id(), account.id());
    assert_ne!(fresh, credentials);
}
