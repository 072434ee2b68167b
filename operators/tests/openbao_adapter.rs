//! The OpenBao adapter against the real local OpenBao. Every test works under
//! its own random mount prefix and removes what it made, even when it fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use std::collections::BTreeMap;

use ossature_model::secrets::tenant_policy;
use ossature_operator::adapters::openbao::{
    Issuer, KUBERNETES_AUTH_PATH, OpenBao, SignRequest, SignedCertificate, TenantCa,
};
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
    /// The adapter with the operator's own token, as the operator runs it.
    bao: OpenBao,
    calls: Calls,
    /// Operator token, for checking what it may and may not do.
    operator: String,
    /// A unique name; mounts go under `tenants/<id>` and policies are `tenant-<id>`.
    id: String,
    prefix: String,
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let addr = env["OSSATURE_OPENBAO_ADDR"].clone();
    let operator = env["OSSATURE_OPENBAO_TOKEN"].clone();
    let root = env["OSSATURE_OPENBAO_ROOT_TOKEN"].clone();
    let calls = Calls::default();
    let id = unique_id();
    Setup {
        bao: OpenBao::new(&addr, &operator, calls.clone()).unwrap(),
        raw: Raw {
            http: reqwest::Client::new(),
            addr,
            root,
        },
        calls,
        operator,
        prefix: format!("tenants/{id}"),
        id,
    }
}

fn unique_id() -> String {
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

fn reads(calls: &Calls) -> u64 {
    calls.count(Backend::OpenBao, Verb::Read)
}

fn status_of(err: &BackendError) -> u16 {
    match err {
        BackendError::Refused { status, .. } => *status,
        other => panic!("expected a refusal, got {other:?}"),
    }
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
    let policy = format!("tenant-{}", s.id);
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

#[tokio::test]
async fn operator_token_is_refused_outside_its_policy() {
    let s = setup().await;
    let kv = format!("{}/kv", s.prefix);
    let outside = format!("elsewhere-{}/kv", s.id);
    let policy = format!("tenant-{}", s.id);
    let foreign = format!("not-a-tenant-{}", s.id);
    cleaned(&s.raw, &[&kv, &outside], &[&policy, &foreign], async {
        // Inside: tenants' mounts and tenant-* policies.
        assert_eq!(
            s.bao.ensure_kv_mount(&kv, "inside").await.unwrap(),
            Change::Created
        );
        assert_eq!(
            s.bao
                .ensure_policy(&policy, "# a tenant's\n")
                .await
                .unwrap(),
            Change::Created
        );

        // Outside, through the adapter: refused before anything is written.
        let before = writes(&s.calls);
        let err = s
            .bao
            .ensure_kv_mount(&outside, "outside")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), 403, "{err}");
        assert_eq!(err.category(), "BackendUnauthorized");
        let err = s
            .bao
            .ensure_policy(&foreign, "# not a tenant's\n")
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), 403, "{err}");
        assert_eq!(writes(&s.calls), before);
        assert_eq!(
            s.raw.mount_entry(&outside).await,
            Value::Null,
            "nothing was mounted outside tenants/"
        );

        // Outside, directly: what only an administrator may do.
        let own = |method: Method, path: &str, body: Option<Value>| {
            let path = path.to_string();
            let (raw, token) = (&s.raw, s.operator.clone());
            async move { raw.call(&token, method, &path, body).await }
        };
        let denied = [
            (
                Method::POST,
                format!("sys/mounts/{outside}"),
                Some(json!({"type": "kv"})),
            ),
            (Method::GET, "sys/mounts".to_string(), None),
            (Method::GET, "sys/policies/acl/root".to_string(), None),
            (
                Method::PUT,
                "sys/policies/acl/ossature-operator".to_string(),
                Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
            ),
            (
                Method::POST,
                "auth/token/create".to_string(),
                Some(json!({"policies": ["root"]})),
            ),
            (Method::GET, "sys/audit".to_string(), None),
            (Method::GET, "auth/kubernetes/config".to_string(), None),
            (Method::GET, "secret/data/anything".to_string(), None),
        ];
        for (method, path, body) in denied {
            let (status, answer) = own(method.clone(), &path, body).await;
            assert_eq!(status, 403, "{method} {path} must be denied: {answer}");
        }

        // Its identity: exactly the operator policy, renewable, not root.
        let (status, me) = own(Method::GET, "auth/token/lookup-self", None).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["data"]["policies"], json!(["ossature-operator"]), "{me}");
        assert_eq!(me["data"]["renewable"], true, "{me}");
        assert_eq!(me["data"]["orphan"], true, "{me}");
    })
    .await;
}

#[tokio::test]
async fn kubernetes_role_is_written_once_repaired_and_deleted() {
    let s = setup().await;
    let bao = &s.bao;
    let name = format!("tenant-{}", s.id);
    let path = format!("auth/{KUBERNETES_AUTH_PATH}/role/{name}");
    let policies = [format!("tenant-{}", s.id)];
    let hour = Duration::from_secs(3600);
    let outcome = AssertUnwindSafe(async {
        let ensure = |ttl| bao.ensure_kubernetes_role(&name, "svc", "tn-ns", &policies, ttl);
        let (r, w) = (reads(&s.calls), writes(&s.calls));
        assert_eq!(ensure(hour).await.unwrap(), Change::Created);
        assert_eq!((reads(&s.calls) - r, writes(&s.calls) - w), (1, 1));
        let (status, role) = s.raw.root(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{role}");
        assert_eq!(role["data"]["bound_service_account_names"], json!(["svc"]));
        assert_eq!(
            role["data"]["bound_service_account_namespaces"],
            json!(["tn-ns"])
        );
        assert_eq!(role["data"]["token_policies"], json!(policies));
        assert_eq!(role["data"]["token_ttl"], 3600);

        let (r, w) = (reads(&s.calls), writes(&s.calls));
        assert_eq!(ensure(hour).await.unwrap(), Change::Unchanged);
        assert_eq!((reads(&s.calls) - r, writes(&s.calls) - w), (1, 0));
        assert_eq!(ensure(hour * 2).await.unwrap(), Change::Updated);

        // Widened by hand to every namespace: narrowed again.
        let drift = json!({"bound_service_account_namespaces": ["*"]});
        let (status, answer) = s.raw.root(Method::POST, &path, Some(drift)).await;
        assert!((200..300).contains(&status), "{answer}");
        assert_eq!(ensure(hour * 2).await.unwrap(), Change::Updated);
        let (_, role) = s.raw.root(Method::GET, &path, None).await;
        assert_eq!(
            role["data"]["bound_service_account_namespaces"],
            json!(["tn-ns"])
        );

        assert_eq!(
            bao.delete_kubernetes_role(&name).await.unwrap(),
            Change::Deleted
        );
        let (r, w) = (reads(&s.calls), writes(&s.calls));
        assert_eq!(
            bao.delete_kubernetes_role(&name).await.unwrap(),
            Change::Absent
        );
        assert_eq!((reads(&s.calls) - r, writes(&s.calls) - w), (1, 0));
        assert_eq!(s.raw.root(Method::GET, &path, None).await.0, 404);

        // Roles of anything but a tenant are beyond the operator.
        let foreign = format!("not-a-tenant-{}", s.id);
        let err = bao
            .ensure_kubernetes_role(&foreign, "svc", "tn-ns", &policies, hour)
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), 403, "{err}");
        let err = bao.delete_kubernetes_role(&foreign).await.unwrap_err();
        assert_eq!(status_of(&err), 403, "{err}");
    })
    .catch_unwind()
    .await;
    s.raw.root(Method::DELETE, &path, None).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A CSR for `names` (the first is the common name) with a fresh key.
fn csr(alg: &'static rcgen::SignatureAlgorithm, names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Verifies `leaf` as a TLS server certificate for `name` chaining to `ca`,
/// the CA's name constraints included.
fn verify(leaf: &str, ca: &str, name: &str) -> Result<(), webpki::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let ca = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(&ca).unwrap();
    let leaf = webpki::EndEntityCert::try_from(&leaf).unwrap();
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )?;
    leaf.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_string()).unwrap())
}

/// Signs a fresh CSR for `name` (and `alt_names`) with generation `issuer`.
async fn sign(
    bao: &OpenBao,
    mount: &str,
    issuer: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    name: &str,
    alt_names: &[String],
    ttl: &str,
) -> Result<SignedCertificate, BackendError> {
    let mut names = vec![name];
    names.extend(alt_names.iter().map(String::as_str));
    let request = SignRequest {
        issuer,
        csr: &csr(alg, &names),
        common_name: name,
        alt_names,
        uri_sans: &[],
        ttl,
    };
    bao.sign(mount, &request).await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn tenant_ca_signs_for_its_domains_only_and_rotates() {
    let s = setup().await;
    let pki = format!("{}/pki", s.prefix);
    let domain = format!("{}.example.test", s.id);
    let domains = vec![domain.clone()];
    let common_name = format!("tenant {} CA", s.id);
    let ca = TenantCa {
        mount: &pki,
        common_name: &common_name,
        domains: &domains,
    };
    cleaned(&s.raw, &[&pki], &[], async {
        assert_eq!(s.bao.ensure_tenant_ca(&ca).await.unwrap(), Change::Created);
        let (read_before, write_before) = (reads(&s.calls), writes(&s.calls));
        assert_eq!(
            s.bao.ensure_tenant_ca(&ca).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&s.calls),
            write_before,
            "an unchanged CA costs no writes"
        );
        assert_eq!(
            reads(&s.calls) - read_before,
            2,
            "issuers (the default checked before is still the default) and role"
        );
        // A restarted operator checks everything once.
        let restarted = OpenBao::new(&s.raw.addr, &s.operator, s.calls.clone()).unwrap();
        let read_before = reads(&s.calls);
        assert_eq!(
            restarted.ensure_tenant_ca(&ca).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            reads(&s.calls) - read_before,
            4,
            "mount, issuers, default issuer and role"
        );

        let bundle = s.bao.ca_bundle(&pki).await.unwrap();
        assert_eq!(bundle.len(), 1);
        let gen1 = &bundle[0];
        assert_eq!((gen1.name.as_str(), gen1.generation), ("gen-1", 1));
        assert!(gen1.is_default);

        // The key was made inside OpenBao and stays there.
        let (status, key) = s
            .raw
            .root(Method::GET, &format!("{pki}/key/gen-1"), None)
            .await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(key["data"]["key_type"], "ec", "{key}");
        assert!(!key.to_string().contains("PRIVATE KEY"), "{key}");

        // A P-256 leaf for names of the tenant.
        let web = format!("web.{domain}");
        let api = format!("api.{domain}");
        let leaf = sign(
            &s.bao,
            &pki,
            "gen-1",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &web,
            std::slice::from_ref(&api),
            "24h",
        )
        .await
        .unwrap();
        for name in [&web, &api] {
            verify(&leaf.certificate, &gen1.certificate, name).unwrap();
        }
        assert_eq!(leaf.issuing_ca.trim(), gen1.certificate.trim());
        assert_eq!(leaf.issuer, "gen-1");
        assert!(!leaf.serial.is_empty());
        let lifetime = leaf.not_after.saturating_sub(now());
        assert!((23 * 3600..=25 * 3600).contains(&lifetime), "{lifetime}");

        // An Ed25519 leaf for the bare domain.
        let bare = sign(
            &s.bao,
            &pki,
            "gen-1",
            &rcgen::PKCS_ED25519,
            &domain,
            &[],
            "1h",
        )
        .await
        .unwrap();
        verify(&bare.certificate, &gen1.certificate, &domain).unwrap();

        // Another tenant's name is refused by OpenBao.
        let foreign = format!("x.{}-eu.example.test", s.id);
        let err = sign(
            &s.bao,
            &pki,
            "gen-1",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &foreign,
            &[],
            "1h",
        )
        .await
        .unwrap_err();
        assert_eq!(status_of(&err), 400, "{err}");

        // Rotation: gen-2 joins the bundle, then signs, then gen-1 retires.
        let gen2 = s.bao.rotate_ca(&ca).await.unwrap();
        assert_eq!((gen2.name.as_str(), gen2.generation), ("gen-2", 2));
        let bundle = s.bao.ca_bundle(&pki).await.unwrap();
        let names: Vec<&str> = bundle.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["gen-1", "gen-2"]);
        assert!(bundle[0].is_default && !bundle[1].is_default);
        assert_eq!(
            s.bao.set_default_issuer(&pki, "gen-2").await.unwrap(),
            Change::Updated
        );
        assert_eq!(
            s.bao.set_default_issuer(&pki, &gen2.id).await.unwrap(),
            Change::Unchanged
        );
        let renewed = sign(
            &s.bao,
            &pki,
            "gen-2",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &web,
            &[],
            "24h",
        )
        .await
        .unwrap();
        verify(&renewed.certificate, &gen2.certificate, &web).unwrap();
        assert!(verify(&renewed.certificate, &gen1.certificate, &web).is_err());
        // Same domains, default gen-2: nothing to do.
        assert_eq!(
            s.bao.ensure_tenant_ca(&ca).await.unwrap(),
            Change::Unchanged
        );

        let err = s.bao.retire_issuer(&pki, "gen-2").await.unwrap_err();
        assert_eq!(status_of(&err), 409, "the default is never retired: {err}");
        assert_eq!(
            s.bao.retire_issuer(&pki, "gen-1").await.unwrap(),
            Change::Deleted
        );
        assert_eq!(
            s.bao.retire_issuer(&pki, "gen-1").await.unwrap(),
            Change::Absent
        );
        let bundle = s.bao.ca_bundle(&pki).await.unwrap();
        assert_eq!(
            bundle,
            [gen2.clone()].map(|g| Issuer {
                is_default: true,
                ..g
            })
        );
        let (status, keys) = s
            .raw
            .root(Method::GET, &format!("{pki}/key/gen-1"), None)
            .await;
        assert_ne!(status, 200, "gen-1's key went with it: {keys}");

        // New domains cannot be added to a certificate: they make gen-3.
        let shop = format!("shop-{}.example.test", s.id);
        let more = vec![domain.clone(), shop.clone()];
        let wider = TenantCa {
            domains: &more,
            ..ca.clone()
        };
        assert_eq!(
            s.bao.ensure_tenant_ca(&wider).await.unwrap(),
            Change::Updated
        );
        assert_eq!(
            s.bao.ensure_tenant_ca(&wider).await.unwrap(),
            Change::Unchanged
        );
        let bundle = s.bao.ca_bundle(&pki).await.unwrap();
        let names: Vec<(&str, bool)> = bundle
            .iter()
            .map(|i| (i.name.as_str(), i.is_default))
            .collect();
        assert_eq!(names, [("gen-2", false), ("gen-3", true)]);
        let www = format!("www.{shop}");
        let leaf = sign(
            &s.bao,
            &pki,
            "gen-3",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &www,
            &[],
            "1h",
        )
        .await
        .unwrap();
        verify(&leaf.certificate, &bundle[1].certificate, &www).unwrap();

        // Unmounted by hand: the adapter that checked it sees it gone.
        let (status, body) = s
            .raw
            .root(Method::DELETE, &format!("sys/mounts/{pki}"), None)
            .await;
        assert!(status < 300, "{status} {body}");
        assert_eq!(
            s.bao.ensure_tenant_ca(&wider).await.unwrap(),
            Change::Created
        );

        assert_eq!(s.bao.delete_tenant_ca(&pki).await.unwrap(), Change::Deleted);
        assert_eq!(s.bao.delete_tenant_ca(&pki).await.unwrap(), Change::Absent);
        assert_eq!(s.raw.mount_entry(&pki).await, Value::Null);
    })
    .await;
}

#[tokio::test]
async fn secrets_are_written_only_when_they_differ_and_kv_v1_is_refused() {
    let s = setup().await;
    let kv = format!("{}/kv", s.prefix);
    let v1 = format!("{}/v1", s.prefix);
    cleaned(&s.raw, &[&kv, &v1], &[], async {
        s.bao.ensure_kv_mount(&kv, "secrets").await.unwrap();
        // A fresh KV v2 mount sets itself up for a moment, which is transient.
        let mut attempts = 0;
        while let Err(err) = s.bao.get_secret(&kv, "leaf/web").await {
            assert_eq!(err.category(), "BackendFailing", "{err}");
            attempts += 1;
            assert!(attempts < 50, "the mount never settled: {err}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let record = BTreeMap::from([
            ("certificate".to_string(), "PEM".to_string()),
            ("key".to_string(), "secret key".to_string()),
        ]);
        assert_eq!(s.bao.get_secret(&kv, "leaf/web").await.unwrap(), None);
        assert_eq!(
            s.bao.put_secret(&kv, "leaf/web", &record).await.unwrap(),
            Change::Created
        );
        let before = writes(&s.calls);
        assert_eq!(
            s.bao.put_secret(&kv, "leaf/web", &record).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&s.calls),
            before,
            "an unchanged secret costs no writes"
        );
        assert_eq!(
            s.bao.get_secret(&kv, "leaf/web").await.unwrap(),
            Some(record.clone())
        );

        let mut renewed = record.clone();
        renewed.insert("certificate".into(), "NEW PEM".into());
        assert_eq!(
            s.bao.put_secret(&kv, "leaf/web", &renewed).await.unwrap(),
            Change::Updated
        );
        assert_eq!(
            s.bao.get_secret(&kv, "leaf/web").await.unwrap(),
            Some(renewed)
        );
        let (status, metadata) = s
            .raw
            .root(Method::GET, &format!("{kv}/metadata/leaf/web"), None)
            .await;
        assert_eq!(status, 200, "{metadata}");
        assert_eq!(metadata["data"]["current_version"], 2, "{metadata}");

        assert_eq!(
            s.bao.delete_secret(&kv, "leaf/web").await.unwrap(),
            Change::Deleted
        );
        assert_eq!(s.bao.get_secret(&kv, "leaf/web").await.unwrap(), None);
        let (status, _) = s
            .raw
            .root(Method::GET, &format!("{kv}/metadata/leaf/web"), None)
            .await;
        assert_eq!(status, 404, "every version and the metadata are gone");
        assert_eq!(
            s.bao.delete_secret(&kv, "leaf/web").await.unwrap(),
            Change::Absent
        );

        // A KV v1 mount would take the v2 path as a plain key: refused.
        let (status, body) = s
            .raw
            .root(
                Method::POST,
                &format!("sys/mounts/{v1}"),
                Some(json!({"type": "kv", "options": {"version": "1"}})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        let before = writes(&s.calls);
        let err = s
            .bao
            .put_secret(&v1, "leaf/web", &record)
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), 409, "{err}");
        assert!(err.to_string().contains("kv version 1"), "{err}");
        assert_eq!(writes(&s.calls), before);
        let (status, _) = s
            .raw
            .root(Method::GET, &format!("{v1}/data/leaf/web"), None)
            .await;
        assert_eq!(status, 404);
    })
    .await;
}
