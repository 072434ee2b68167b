//! The OpenBao adapter against the real local OpenBao. Every test works under
//! its own random mount prefix and removes what it made, even when it fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use ossature_operator::adapters::openbao::{OpenBao, tenant_policy};
use ossature_operator::adapters::{Backend, BackendError, Calls, Change, Verb};
use reqwest::Method;
use serde_json::{Value, json};

/// "hello tenant", base64-encoded as transit expects.
const PLAINTEXT: &str = "aGVsbG8gdGVuYW50";

/// Raw HTTP to OpenBao: sets up and checks state without the adapter.
struct Raw {
    http: reqwest::Client,
    addr: String,
    root: String,
}

impl Raw {
    async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("OpenBao answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON")
        };
        (status, value)
    }

    async fn root(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(&self.root, method, path, body).await
    }

    async fn mount_entry(&self, path: &str) -> Value {
        let (status, listing) = self.root(Method::GET, "sys/mounts", None).await;
        assert_eq!(status, 200, "{listing}");
        listing["data"][format!("{path}/")].clone()
    }
}

struct Setup {
    raw: Raw,
    bao: OpenBao,
    calls: Calls,
    prefix: String,
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let addr = env["OSSATURE_OPENBAO_ADDR"].clone();
    let root = env["OSSATURE_OPENBAO_TOKEN"].clone();
    let calls = Calls::default();
    Setup {
        bao: OpenBao::new(&addr, &root, calls.clone()).unwrap(),
        raw: Raw {
            http: reqwest::Client::new(),
            addr,
            root,
        },
        calls,
        prefix: unique_prefix(),
    }
}

fn unique_prefix() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("adapter-test-{}-{nanos:x}-{seq}", std::process::id())
}

/// Runs `body`, then removes the given mounts and policies whatever happened.
async fn cleaned(raw: &Raw, mounts: &[&str], policies: &[&str], body: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    for mount in mounts {
        raw.root(Method::DELETE, &format!("sys/mounts/{mount}"), None)
            .await;
    }
    for policy in policies {
        raw.root(Method::DELETE, &format!("sys/policies/acl/{policy}"), None)
            .await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn writes(calls: &Calls) -> u64 {
    calls.count(Backend::OpenBao, Verb::Write)
}

#[tokio::test]
async fn kv_mount_is_created_once_and_kv_v1_is_refused() {
    let s = setup().await;
    let kv = format!("{}/kv", s.prefix);
    let v1 = format!("{}/v1", s.prefix);
    cleaned(&s.raw, &[&kv, &v1], &[], async {
        assert_eq!(
            s.bao.ensure_kv_mount(&kv, "secrets of acme").await.unwrap(),
            Change::Created
        );
        let before = writes(&s.calls);
        assert_eq!(
            s.bao.ensure_kv_mount(&kv, "secrets of acme").await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&s.calls),
            before,
            "an unchanged mount costs no writes"
        );

        let entry = s.raw.mount_entry(&kv).await;
        assert_eq!(entry["type"], "kv", "{entry}");
        assert_eq!(entry["options"]["version"], "2", "{entry}");
        assert_eq!(entry["description"], "secrets of acme", "{entry}");

        // A drifted description is tuned in place, then stays put.
        assert_eq!(
            s.bao
                .ensure_kv_mount(&kv, "secrets of acme corp")
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(
            s.raw.mount_entry(&kv).await["description"],
            "secrets of acme corp"
        );
        assert_eq!(
            s.bao
                .ensure_kv_mount(&kv, "secrets of acme corp")
                .await
                .unwrap(),
            Change::Unchanged
        );

        let (status, body) = s
            .raw
            .root(
                Method::POST,
                &format!("sys/mounts/{v1}"),
                Some(json!({"type": "kv", "options": {"version": "1"}})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = s
            .raw
            .root(
                Method::POST,
                &format!("{v1}/app"),
                Some(json!({"password": "old"})),
            )
            .await;
        assert_eq!(status, 204, "{body}");

        let before = writes(&s.calls);
        let err = s.bao.ensure_kv_mount(&v1, "secrets").await.unwrap_err();
        assert!(
            matches!(
                &err,
                BackendError::Refused {
                    backend: Backend::OpenBao,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.category(), "BackendRefused");
        assert!(err.to_string().contains("kv version 1"), "{err}");
        assert_eq!(writes(&s.calls), before, "a refusal writes nothing");

        let entry = s.raw.mount_entry(&v1).await;
        assert_eq!(entry["options"]["version"], "1", "{entry}");
        let (status, secret) = s.raw.root(Method::GET, &format!("{v1}/app"), None).await;
        assert_eq!(status, 200, "{secret}");
        assert_eq!(secret["data"]["password"], "old");
    })
    .await;
}

#[tokio::test]
async fn transit_key_is_created_once_usable_and_restored_after_drift() {
    let s = setup().await;
    let transit = format!("{}/transit", s.prefix);
    let kv = format!("{}/kv", s.prefix);
    cleaned(&s.raw, &[&transit, &kv], &[], async {
        assert_eq!(
            s.bao.ensure_transit_key(&transit, "acme").await.unwrap(),
            Change::Created
        );
        let before = writes(&s.calls);
        assert_eq!(
            s.bao.ensure_transit_key(&transit, "acme").await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(&s.calls), before, "an unchanged key costs no writes");

        let (status, key) = s
            .raw
            .root(Method::GET, &format!("{transit}/keys/acme"), None)
            .await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(key["data"]["type"], "aes256-gcm96");
        assert_eq!(key["data"]["deletion_allowed"], true);

        let (status, sealed) = s
            .raw
            .root(
                Method::POST,
                &format!("{transit}/encrypt/acme"),
                Some(json!({"plaintext": PLAINTEXT})),
            )
            .await;
        assert_eq!(status, 200, "{sealed}");
        let ciphertext = sealed["data"]["ciphertext"].as_str().unwrap().to_string();
        assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");
        let (status, opened) = s
            .raw
            .root(
                Method::POST,
                &format!("{transit}/decrypt/acme"),
                Some(json!({"ciphertext": ciphertext})),
            )
            .await;
        assert_eq!(status, 200, "{opened}");
        assert_eq!(opened["data"]["plaintext"], PLAINTEXT);

        // Drift: deletion disallowed by hand is allowed again.
        let (status, body) = s
            .raw
            .root(
                Method::POST,
                &format!("{transit}/keys/acme/config"),
                Some(json!({"deletion_allowed": false})),
            )
            .await;
        assert!(status == 200 || status == 204, "{status} {body}");
        assert_eq!(
            s.bao.ensure_transit_key(&transit, "acme").await.unwrap(),
            Change::Updated
        );

        // Drift: the whole mount removed by hand comes back.
        let (status, body) = s
            .raw
            .root(Method::DELETE, &format!("sys/mounts/{transit}"), None)
            .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            s.bao.ensure_transit_key(&transit, "acme").await.unwrap(),
            Change::Created
        );
        assert_eq!(
            s.bao.ensure_transit_key(&transit, "acme").await.unwrap(),
            Change::Unchanged
        );

        // A transit key is never put into a mount of another type.
        s.bao.ensure_kv_mount(&kv, "secrets").await.unwrap();
        let err = s.bao.ensure_transit_key(&kv, "acme").await.unwrap_err();
        assert_eq!(err.category(), "BackendRefused", "{err}");
        assert!(is_kv_v2(&s.raw.mount_entry(&kv).await));
    })
    .await;
}

fn is_kv_v2(entry: &Value) -> bool {
    entry["type"] == "kv" && entry["options"]["version"] == "2"
}

#[tokio::test]
async fn tenant_policy_grants_exactly_its_tenant_paths() {
    let s = setup().await;
    let kv = format!("{}/kv", s.prefix);
    let transit = format!("{}/transit", s.prefix);
    let other = format!("{}/other/kv", s.prefix);
    let policy = s.prefix.clone();
    cleaned(&s.raw, &[&kv, &transit, &other], &[&policy], async {
        s.bao.ensure_kv_mount(&kv, "acme").await.unwrap();
        s.bao.ensure_transit_key(&transit, "acme").await.unwrap();
        s.bao
            .ensure_kv_mount(&other, "another tenant")
            .await
            .unwrap();

        let hcl = tenant_policy(&kv, &transit, "acme");
        assert_eq!(
            s.bao.ensure_policy(&policy, &hcl).await.unwrap(),
            Change::Created
        );
        let before = writes(&s.calls);
        assert_eq!(
            s.bao.ensure_policy(&policy, &hcl).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&s.calls),
            before,
            "an unchanged policy costs no writes"
        );

        let (status, created) = s
            .raw
            .root(
                Method::POST,
                "auth/token/create",
                Some(json!({"policies": [policy], "no_default_policy": true, "ttl": "5m"})),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        let token = created["auth"]["client_token"]
            .as_str()
            .unwrap()
            .to_string();
        let tenant = |method: Method, path: String, body: Option<Value>| {
            let token = token.clone();
            let raw = &s.raw;
            async move { raw.call(&token, method, &path, body).await }
        };

        let secret = json!({"data": {"password": "s3cret"}});
        let (status, body) = tenant(
            Method::POST,
            format!("{kv}/data/app/db"),
            Some(secret.clone()),
        )
        .await;
        assert_eq!(status, 200, "write own secret: {body}");
        let (status, body) = tenant(Method::GET, format!("{kv}/data/app/db"), None).await;
        assert_eq!(status, 200, "read own secret: {body}");
        assert_eq!(body["data"]["data"]["password"], "s3cret");

        let (status, sealed) = tenant(
            Method::POST,
            format!("{transit}/encrypt/acme"),
            Some(json!({"plaintext": PLAINTEXT})),
        )
        .await;
        assert_eq!(status, 200, "encrypt: {sealed}");
        let (status, opened) = tenant(
            Method::POST,
            format!("{transit}/decrypt/acme"),
            Some(json!({"ciphertext": sealed["data"]["ciphertext"]})),
        )
        .await;
        assert_eq!(status, 200, "decrypt: {opened}");
        assert_eq!(opened["data"]["plaintext"], PLAINTEXT);

        let denied = [
            (
                Method::POST,
                format!("{other}/data/app/db"),
                Some(secret.clone()),
            ),
            (Method::GET, format!("{other}/data/app/db"), None),
            (Method::GET, "sys/mounts".to_string(), None),
            (
                Method::POST,
                format!("{kv}/config"),
                Some(json!({"max_versions": 1})),
            ),
            (Method::POST, format!("{transit}/keys/acme/rotate"), None),
            (Method::DELETE, format!("{transit}/keys/acme"), None),
        ];
        for (method, path, body) in denied {
            let (status, answer) = tenant(method.clone(), path.clone(), body).await;
            assert_eq!(status, 403, "{method} {path} must be denied: {answer}");
        }

        let revised = format!("{hcl}# revised\n");
        assert_eq!(
            s.bao.ensure_policy(&policy, &revised).await.unwrap(),
            Change::Updated
        );
        let (status, stored) = s
            .raw
            .root(Method::GET, &format!("sys/policies/acl/{policy}"), None)
            .await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(stored["data"]["policy"], revised.as_str());

        assert_eq!(s.bao.delete_policy(&policy).await.unwrap(), Change::Deleted);
        assert_eq!(s.bao.delete_policy(&policy).await.unwrap(), Change::Absent);
        for mount in [&kv, &transit, &other] {
            assert_eq!(s.bao.delete_mount(mount).await.unwrap(), Change::Deleted);
            assert_eq!(s.bao.delete_mount(mount).await.unwrap(), Change::Absent);
            assert_eq!(s.raw.mount_entry(mount).await, Value::Null);
        }
    })
    .await;
}

#[tokio::test]
async fn unreachable_openbao_is_reported_as_such() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let calls = Calls::default();
    let bao = OpenBao::new("http://127.0.0.1:1", "not-a-real-token", calls.clone()).unwrap();
    let err = bao.ensure_policy("tenant-acme", "").await.unwrap_err();
    assert!(
        matches!(
            &err,
            BackendError::Unreachable {
                backend: Backend::OpenBao,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.category(), "BackendUnreachable");
    assert_eq!(err.backend(), Backend::OpenBao);
    assert!(!format!("{err} {err:?}").contains("not-a-real-token"));
    assert_eq!(calls.count(Backend::OpenBao, Verb::Read), 1);
    assert_eq!(calls.count(Backend::OpenBao, Verb::Write), 0);
    assert!(format!("{bao:?}").contains("127.0.0.1:1"));
    assert!(!format!("{bao:?}").contains("not-a-real-token"));
}
