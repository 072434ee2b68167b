//! Certificates from an ACME issuer, against the stack's real Pebble and
//! challtestsrv: an AcmeIssuer registers its account; a Certificate for a
//! tenant's name is issued, verifies against Pebble's issuing root, is
//! renewed (short-lived profile) before it expires and is removed with its
//! Secret and record; an order recorded before a crash is completed after
//! the restart, with the recorded key; past the issuer's budget a
//! Certificate waits without ordering; admission refuses what an ACME CA
//! cannot issue.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use ossature_bootstrap::components::{
    PEBBLE_EAB_HMAC_KEY, PEBBLE_EAB_KEY_ID, PEBBLE_SHORTLIVED_PROFILE,
};
use ossature_crds::{AcmeIssuer, Certificate};
use serde_json::{Value, json};

const ROOT: &str = "ossature.test";
/// Where the operator keeps account credentials (its default).
const ACME_NAMESPACE: &str = "kube-system";

fn acme(issuer: &str) -> Value {
    json!({"acme": {"name": issuer}})
}

fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// Deletes a Certificate and waits until it is gone.
async fn delete_certificate(certificates: &Api<Certificate>, name: &str) {
    delete_and_wait(certificates, name, Duration::from_secs(30)).await;
}

/// Deletes an issuer (its Certificates gone first) and waits until it is gone.
async fn delete_issuer(client: &kube::Client, name: &str) {
    delete_and_wait(
        &Api::<AcmeIssuer>::all(client.clone()),
        name,
        Duration::from_secs(30),
    )
    .await;
}

/// What each test starts from: the stack's variables, a client, the
/// test's selector, its operator (managing this test's objects only) and a
/// Ready tenant.
async fn setup() -> (
    BTreeMap<String, String>,
    kube::Client,
    String,
    Operator,
    String,
) {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator(&env, &sel);
    let tenant = ready_tenant(&client, &sel).await;
    (env, client, sel, operator, tenant)
}

/// The data of a certificate's KV record (status 200 asserted).
async fn record_data(env: &BTreeMap<String, String>, tenant: &str, ns: &str, name: &str) -> Value {
    let (code, body) = record(env, tenant, ns, name).await;
    assert_eq!(code, 200, "{body}");
    body["data"]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_certificate_is_issued_renewed_and_removed() {
    let (env, client, sel, _operator, tenant) = setup().await;

    // Bound to Pebble's external account; the HMAC key is read from a Secret.
    let hmac = format!("pebble-eab-{sel}");
    let secrets_there: Api<Secret> = Api::namespaced(client.clone(), ACME_NAMESPACE);
    let eab: Secret = serde_json::from_value(json!({
        "metadata": {"name": hmac},
        "stringData": {"hmac": PEBBLE_EAB_HMAC_KEY},
    }))
    .unwrap();
    secrets_there
        .create(&PostParams::default(), &eab)
        .await
        .unwrap();
    let issuer_name = format!("pebble-{sel}");
    let ready = ready_issuer(
        &client,
        &issuer(
            &env,
            &issuer_name,
            &sel,
            json!({
                "profile": PEBBLE_SHORTLIVED_PROFILE,
                "externalAccountBinding": {"keyID": PEBBLE_EAB_KEY_ID,
                    "hmacKeySecretRef": {"name": hmac, "key": "hmac"}},
            }),
        ),
    )
    .await;
    let account = ready.status.unwrap().account_url.unwrap();
    assert!(account.starts_with("https://"), "{account}");
    let credentials = format!("acme-account-{issuer_name}");
    assert!(secrets_there.get_opt(&credentials).await.unwrap().is_some());

    let ns = format!("tn-{tenant}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let host = format!("{tenant}.{ROOT}");
    let www = format!("www.{tenant}.{ROOT}");
    let started = std::time::Instant::now();
    create(
        &certificates,
        "web",
        json!({"dnsNames": [host, www], "secretName": "web-tls", "issuer": acme(&issuer_name)}),
    )
    .await;
    let issued = ready_certificate(&certificates, "web").await;
    eprintln!("ACME_ISSUED_MS {}", started.elapsed().as_millis());
    let status = issued.status.unwrap();
    assert_eq!(
        status.issuer.as_deref(),
        Some(format!("acme/{issuer_name}").as_str())
    );
    assert_eq!(status.ca_generation, None);
    let first_serial = status.serial_number.clone().unwrap();
    let not_before: k8s_openapi::jiff::Timestamp = status.not_before.unwrap().parse().unwrap();
    let not_after: k8s_openapi::jiff::Timestamp = status.not_after.unwrap().parse().unwrap();
    let renews: k8s_openapi::jiff::Timestamp = status.renewal_time.unwrap().parse().unwrap();
    let lifetime = not_after.duration_since(not_before).as_secs();
    assert!((299..=300).contains(&lifetime), "short-lived: {lifetime}s");
    assert!(not_before < renews && renews < not_after, "{renews}");

    let tls = secrets.get("web-tls").await.unwrap();
    let chain = text(&tls, "tls.crt");
    let root = issuing_root(&env).await;
    for name in [&host, &www] {
        assert!(verifies(&chain, &root, name), "verifies for {name}");
    }
    assert!(!verifies(&chain, &root, &format!("other.{ROOT}")));
    assert_eq!(
        leaf_public_key(&chain),
        key_public_key(&text(&tls, "tls.key"))
    );
    let kept = record_data(&env, &tenant, &ns, "web").await;
    assert_eq!(kept["issuer"], format!("acme/{issuer_name}"));
    assert_eq!(kept["order"], "", "no order left in progress");

    // Renewed within the CA's renewal window, before the first expires.
    let renewed = wait_for("renewal", Duration::from_secs(300), || {
        let certificates = certificates.clone();
        let first_serial = first_serial.clone();
        async move {
            let s = certificates.get("web").await.ok()?.status?;
            let serial = s.serial_number.clone()?;
            (serial != first_serial).then_some(s)
        }
    })
    .await;
    eprintln!("ACME_RENEWED_AFTER_S {}", started.elapsed().as_secs());
    let at = |t: &Option<String>| -> k8s_openapi::jiff::Timestamp {
        t.as_deref().unwrap().parse().unwrap()
    };
    assert!(
        at(&renewed.not_before) < not_after,
        "renewed before the first expired: {renewed:?}"
    );
    assert!(at(&renewed.not_after) > not_after);
    assert_eq!(
        renewed.issuer.as_deref(),
        Some(format!("acme/{issuer_name}").as_str())
    );
    wait_for("the Secret renewed", Duration::from_secs(15), || {
        let secrets = secrets.clone();
        let (chain, root, host) = (chain.clone(), root.clone(), host.clone());
        async move {
            let s = secrets.get("web-tls").await.ok()?;
            let new = text(&s, "tls.crt");
            (new != chain && verifies(&new, &root, &host)).then_some(())
        }
    })
    .await;

    // Deleted: its Secret and its record go with it.
    delete_certificate(&certificates, "web").await;
    assert!(secrets.get_opt("web-tls").await.unwrap().is_none());
    assert_eq!(record(&env, &tenant, &ns, "web").await.0, 404);
    delete_issuer(&client, &issuer_name).await;
    assert!(
        secrets_there.get_opt(&credentials).await.unwrap().is_none(),
        "the account's credentials go with the issuer"
    );
    secrets_there
        .delete(&hmac, &DeleteParams::default())
        .await
        .unwrap();
    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_recorded_before_a_crash_is_completed_after_the_restart() {
    let (env, client, sel, operator, tenant) = setup().await;
    let issuer_name = format!("pebble-{sel}");
    ready_issuer(&client, &issuer(&env, &issuer_name, &sel, json!({}))).await;
    drop(operator);

    let mut crashing = env.clone();
    crashing.insert("OSSATURE_FAILPOINT".into(), "acme-order-recorded".into());
    let mut operator = start_operator(&crashing, &sel);
    let ns = format!("tn-{tenant}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    create(
        &certificates,
        "api",
        json!({"dnsNames": [format!("api.{tenant}.{ROOT}")], "issuer": acme(&issuer_name)}),
    )
    .await;
    let exit = operator.wait_exit(Duration::from_secs(90));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the operator died at the failpoint"
    );
    let pending = record_data(&env, &tenant, &ns, "api").await;
    let order: Value = serde_json::from_str(pending["order"].as_str().unwrap()).unwrap();
    let order_url = order["url"].as_str().unwrap().to_string();
    let key = pending["orderKey"].as_str().unwrap().to_string();
    assert!(order_url.starts_with("https://"), "{order}");
    assert!(key.contains("PRIVATE KEY"));
    assert_eq!(pending["certificate"], "", "nothing issued yet");
    drop(operator);

    let _operator = start_operator(&env, &sel);
    ready_certificate(&certificates, "api").await;
    let done = record_data(&env, &tenant, &ns, "api").await;
    assert_eq!(
        done["issuedByOrder"].as_str(),
        Some(order_url.as_str()),
        "the recorded order was completed, no second one placed"
    );
    assert_eq!(done["key"].as_str(), Some(key.as_str()), "the recorded key");
    assert_eq!(done["order"], "");
    let chain = done["certificate"].as_str().unwrap();
    assert_eq!(leaf_public_key(chain), key_public_key(&key));
    assert!(verifies(
        chain,
        &issuing_root(&env).await,
        &format!("api.{tenant}.{ROOT}")
    ));

    delete_certificate(&certificates, "api").await;
    delete_issuer(&client, &issuer_name).await;
    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_issuers_budget_a_certificate_waits_without_ordering() {
    let (env, client, sel, _operator, tenant) = setup().await;
    let issuer_name = format!("tight-{sel}");
    ready_issuer(
        &client,
        &issuer(
            &env,
            &issuer_name,
            &sel,
            json!({"rateLimits": {"newOrders": {"count": 1, "period": "1h"}}}),
        ),
    )
    .await;
    let ns = format!("tn-{tenant}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    create(
        &certificates,
        "first",
        json!({"dnsNames": [format!("{tenant}.{ROOT}")], "issuer": acme(&issuer_name)}),
    )
    .await;
    ready_certificate(&certificates, "first").await;

    create(
        &certificates,
        "second",
        json!({"dnsNames": [format!("www.{tenant}.{ROOT}")], "issuer": acme(&issuer_name)}),
    )
    .await;
    let held = wait_for("second RateLimited", Duration::from_secs(30), || {
        let certificates = certificates.clone();
        async move {
            let s = certificates.get("second").await.ok()?.status?;
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "CertificateReady" && c.reason == "RateLimited")?
                .clone();
            Some((s, c))
        }
    })
    .await;
    let (status, limited) = held;
    eprintln!("{}", limited.message);
    let retry: k8s_openapi::jiff::Timestamp = status.retry_time.clone().unwrap().parse().unwrap();
    let wait = retry.duration_since(k8s_openapi::jiff::Timestamp::now());
    assert!(
        wait.as_secs() > 3000 && wait.as_secs() <= 3600,
        "tried again when the hour is up: {retry}"
    );
    assert!(
        limited.message.contains(&retry.to_string()),
        "{}",
        limited.message
    );
    assert!(
        limited.message.contains("new orders"),
        "{}",
        limited.message
    );
    assert_eq!(
        condition(&status.conditions, "Ready").unwrap().1,
        "RateLimited"
    );
    assert_eq!(
        condition(&status.conditions, "Issuing").unwrap().1,
        "RateLimited"
    );
    assert_eq!(status.failed_attempts, 0, "waiting is no failure");
    assert_eq!(status.order_url, None);
    // Nothing was ordered: an order is always recorded as soon as it is placed.
    assert_eq!(record(&env, &tenant, &ns, "second").await.0, 404);

    // The issuer cannot go while Certificates name it.
    let issuers: Api<AcmeIssuer> = Api::all(client.clone());
    issuers
        .delete(&issuer_name, &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(issuers.get_opt(&issuer_name).await.unwrap().is_some());

    delete_certificate(&certificates, "second").await;
    delete_certificate(&certificates, "first").await;
    // Then it goes, its deletion asked for above.
    wait_for("issuer gone", Duration::from_secs(30), || {
        let issuers = issuers.clone();
        let name = issuer_name.clone();
        async move { issuers.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
}

/// Creating `body` through `api` must fail with a message containing `expected`.
async fn refused(api: &Api<DynamicObject>, body: Value, expected: &str) {
    let object: DynamicObject = serde_json::from_value(body.clone()).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => {
            assert!(e.message.contains(expected), "{body}: {}", e.message)
        }
        other => panic!("{body} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_acme_ca_cannot_issue_is_refused_at_admission() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let tenant = format!("adm{}", suffix());
    let ns = format!("tn-{tenant}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    let certificates = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<Certificate>(&()),
    );
    let certificate = |spec: Value| {
        json!({"apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
               "metadata": {"name": "bad", "namespace": ns}, "spec": spec})
    };
    let host = format!("{tenant}.{ROOT}");
    for (spec, expected) in [
        (
            json!({"dnsNames": [host], "keyAlgorithm": "Ed25519", "issuer": acme("x")}),
            "Ed25519 is for the tenant CA only",
        ),
        (
            json!({"dnsNames": [host], "usages": ["Server", "Client"], "issuer": acme("x")}),
            "Client is for the tenant CA only",
        ),
        (
            json!({"dnsNames": [host], "lifetime": "24h", "issuer": acme("x")}),
            "lifetime is the ACME CA's to decide",
        ),
        (
            json!({"dnsNames": [host], "issuer": {"tenantCA": {}, "acme": {"name": "x"}}}),
            "exactly one of tenantCA or acme",
        ),
        (
            json!({"dnsNames": [host], "issuer": {}}),
            "exactly one of tenantCA or acme",
        ),
    ] {
        refused(&certificates, certificate(spec), expected).await;
    }

    let issuers =
        Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<AcmeIssuer>(&()));
    let good = json!({"directory": "https://ca.example/dir",
                      "solver": {"challTestSrv": {"url": "http://127.0.0.1:8055"}}});
    let with = |field: &str, value: Value| {
        let mut spec = good.clone();
        spec[field] = value;
        json!({"apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
               "metadata": {"name": format!("bad-{tenant}")}, "spec": spec})
    };
    for (field, value, expected) in [
        (
            "directory",
            json!("ftp://ca.example/dir"),
            "http or https URL",
        ),
        ("directory", json!("not a url"), "http or https URL"),
        ("emails", json!(["not-an-address"]), "emails"),
        ("challenge", json!("TLSALPN01"), "challenge"),
        ("solver", json!({}), "exactly one responder"),
        ("caBundle", json!("hello"), "PEM certificates"),
        (
            "rateLimits",
            json!({"newOrders": {"count": 0, "period": "1h"}}),
            "count",
        ),
        (
            "rateLimits",
            json!({"newOrders": {"count": 1, "period": "0s"}}),
            "at least 1s",
        ),
        (
            "externalAccountBinding",
            json!({"keyID": "kid"}),
            "hmacKeySecretRef",
        ),
    ] {
        refused(&issuers, with(field, value), expected).await;
    }

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
