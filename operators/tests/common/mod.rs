//! What the operator's end-to-end tests share: the stack, the operator
//! process, and reads of each backend through its own API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use ossature_crds::{Environment, Tenant};
use serde_json::{Value, json};

pub struct Operator {
    child: Child,
    pub metrics: String,
    /// Its standard output and error.
    pub log: std::path::PathBuf,
}

impl Drop for Operator {
    /// Stops it as a platform would (SIGTERM), so it hands over what it
    /// holds; kills it if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Label that limits an operator to one test's objects (`--selector`), so
/// tests run side by side without managing each other's tenants.
pub const TEST_LABEL: &str = "ossature.dev/test";

/// The operator at its default settings, managing only tenants labelled
/// `TEST_LABEL=<selector>`.
impl Operator {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

pub fn start_operator(env: &BTreeMap<String, String>, selector: &str) -> Operator {
    start_operator_with(env, selector, &[])
}

/// The operator with extra flags, which win over the stack's environment.
pub fn start_operator_with(
    env: &BTreeMap<String, String>,
    selector: &str,
    extra: &[&str],
) -> Operator {
    start_binary(
        std::path::Path::new(env!("CARGO_BIN_EXE_ossature-operator")),
        env,
        selector,
        extra,
    )
}

/// An operator `binary` (this release's, or another's), as above.
pub fn start_binary(
    binary: &std::path::Path,
    env: &BTreeMap<String, String>,
    selector: &str,
    extra: &[&str],
) -> Operator {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = std::env::temp_dir().join(format!("ossature-operator-test-{selector}-{port}.log"));
    let log = std::fs::File::create(&path).unwrap();
    // Text for people reading a failed test's log, unless asked otherwise.
    let format: &[&str] = if extra.contains(&"--log-format") {
        &[]
    } else {
        &["--log-format", "text"]
    };
    let backoff: &[&str] = if extra.contains(&"--max-backoff-seconds") {
        &[]
    } else {
        &["--max-backoff-seconds", "5"]
    };
    let child = Command::new(binary)
        .envs(env)
        .args(format)
        .args(backoff)
        .arg(format!("--selector={TEST_LABEL}={selector}"))
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .args(extra)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Operator {
        child,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
        log: path,
    }
}

/// A tenant labelled for the operator of test `selector`.
pub fn labelled(mut tenant: Tenant, selector: &str) -> Tenant {
    tenant
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(TEST_LABEL.into(), selector.into());
    tenant
}

/// Condition `type_` of a status, as (status, reason).
pub fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Runs kubectl against the stack; panics with its output unless it succeeds.
pub fn kubectl(env: &BTreeMap<String, String>, args: &[&str]) -> String {
    let output = Command::new("kubectl")
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .args(args)
        .output()
        .expect("kubectl is on PATH");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub async fn kube_client(env: &BTreeMap<String, String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ossature_crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("ossature-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(60),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Events about object `name` of `namespace`.
pub async fn events_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    Api::namespaced(client.clone(), namespace)
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

/// An object of kind `kind` of Ossature's API group.
pub fn ossature<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Waits until the object `name` of `api` is as `ok` says, and returns it.
pub async fn wait_object<K>(api: &Api<K>, name: &str, what: &str, ok: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&()).to_lowercase();
    wait_for(
        &format!("{kind} {name}: {what}"),
        Duration::from_secs(90),
        || async { api.get(name).await.ok().filter(|o| ok(o)) },
    )
    .await
}

/// Merges `spec` into the object's spec.
pub async fn patch_spec<K>(api: &Api<K>, name: &str, spec: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
    .unwrap();
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

pub async fn keycloak_token(env: &BTreeMap<String, String>) -> String {
    let response: Value = http()
        .post(format!(
            "{}/realms/master/protocol/openid-connect/token",
            env["OSSATURE_KEYCLOAK_URL"]
        ))
        .form(&[
            ("client_id", "admin-cli"),
            ("grant_type", "password"),
            ("username", env["OSSATURE_KEYCLOAK_ADMIN_USER"].as_str()),
            ("password", env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"].as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"].as_str().unwrap().to_string()
}

/// Status code and body of a GET on a backend.
pub async fn get(url: String, header: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = http().get(url);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn realm(env: &BTreeMap<String, String>, name: &str) -> (u16, Value) {
    let token = keycloak_token(env).await;
    let auth = format!("Bearer {token}");
    get(
        format!("{}/admin/realms/{name}", env["OSSATURE_KEYCLOAK_URL"]),
        Some(("Authorization", &auth)),
    )
    .await
}

/// The organization with this alias in a shared realm, if any.
pub async fn organization(
    env: &BTreeMap<String, String>,
    realm: &str,
    alias: &str,
) -> Option<Value> {
    let token = keycloak_token(env).await;
    let auth = format!("Bearer {token}");
    let (_, found) = get(
        format!(
            "{}/admin/realms/{realm}/organizations?q=alias:{alias}&exact=true",
            env["OSSATURE_KEYCLOAK_URL"]
        ),
        Some(("Authorization", &auth)),
    )
    .await;
    found
        .as_array()?
        .iter()
        .find(|o| o["alias"] == alias)
        .cloned()
}

pub async fn pulsar_tenant(env: &BTreeMap<String, String>, name: &str) -> (u16, Value) {
    pulsar_get(env, &format!("/admin/v2/tenants/{name}")).await
}

/// The `Authorization` value of the stack's Pulsar superuser.
pub fn pulsar_auth(env: &BTreeMap<String, String>) -> String {
    let token = std::fs::read_to_string(&env["OSSATURE_PULSAR_TOKEN_FILE"]).unwrap();
    format!("Bearer {}", token.trim())
}

/// A GET of Pulsar's admin API (`path` from `/admin/`) as its superuser.
pub async fn pulsar_get(env: &BTreeMap<String, String>, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", env["OSSATURE_PULSAR_ADMIN_URL"]);
    get(url, Some(("Authorization", &pulsar_auth(env)))).await
}

pub async fn openbao_mounts(env: &BTreeMap<String, String>) -> Value {
    let (_, body) = get(
        format!("{}/v1/sys/mounts", env["OSSATURE_OPENBAO_ADDR"]),
        Some(("X-Vault-Token", &env["OSSATURE_OPENBAO_ROOT_TOKEN"])),
    )
    .await;
    body
}

pub async fn writes(operator: &Operator) -> u64 {
    calls(operator, "write").await
}

/// Waits until the operator has run `more` reconciles, and checks that it
/// wrote nothing anywhere meanwhile: what `what` names is steady.
pub async fn assert_steady(operator: &Operator, more: u64, what: &str) {
    let (written, runs) = (writes(operator).await, reconciles(operator).await);
    wait_for("more reconciles", Duration::from_secs(60), || async {
        (reconciles(operator).await >= runs + more).then_some(())
    })
    .await;
    assert_eq!(writes(operator).await, written, "{what} writes nothing");
}

/// Reconciles the operator has run, of every kind.
pub async fn reconciles(operator: &Operator) -> u64 {
    metric_sum(operator, "controller_runtime_reconcile_total{", "").await
}

/// Backend calls of one verb ("read", "write") the operator has made.
pub async fn calls(operator: &Operator, verb: &str) -> u64 {
    metric_sum(
        operator,
        "ossature_backend_calls_total{",
        &format!("verb=\"{verb}\""),
    )
    .await
}

/// The sum of the operator's metric lines starting with `prefix` and
/// containing `label`.
async fn metric_sum(operator: &Operator, prefix: &str, label: &str) -> u64 {
    let text = http()
        .get(&operator.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Any of Ossature's objects Ready for its current generation.
pub fn object_ready<S: serde::Serialize>(object: &S) -> bool {
    let value = serde_json::to_value(object).unwrap();
    value["status"]["observedGeneration"] == value["metadata"]["generation"]
        && value["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

pub fn ready(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.observed_generation == tenant.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

pub fn tenant(name: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"type": "Business", "displayName": "Controller test", "residency": "eu",
                 "quotas": {"cpu": "2", "pods": 10}},
    }))
    .unwrap()
}

/// A Consumer tenant that sets nothing optional (no quotas, no identity settings).
pub fn bare_tenant(name: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"type": "Consumer", "displayName": "Bare", "residency": "us"},
    }))
    .unwrap()
}

pub fn suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:x}",
        (nanos ^ std::process::id()).wrapping_add(n.wrapping_mul(7919))
    )
}

/// Waits until the tenant is Ready for its current generation.
pub async fn wait_tenant_ready(tenants: &Api<Tenant>, name: &str, timeout: Duration) -> Tenant {
    wait_for(&format!("tenant {name} Ready"), timeout, || async move {
        tenants.get(name).await.ok().filter(ready)
    })
    .await
}

/// Deletes the tenants and waits until every one is gone.
pub async fn delete_tenants(tenants: &Api<Tenant>, names: &[&str]) {
    for name in names {
        tenants
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }
    for name in names {
        wait_tenant_gone(tenants, name, Duration::from_secs(120)).await;
    }
}

/// Waits until the tenant is gone, its finalizer done.
pub async fn wait_tenant_gone(tenants: &Api<Tenant>, name: &str, timeout: Duration) {
    wait_for(&format!("tenant {name} gone"), timeout, || async move {
        tenants
            .get_opt(name)
            .await
            .ok()
            .filter(Option::is_none)
            .map(drop)
    })
    .await
}

// Certificates: shared by the tests of both issuers.

use kube::api::PostParams;
use ossature_crds::Certificate;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Whether `chain_pem` verifies for `name` against the roots in `ca_pem`.
pub fn verifies(chain_pem: &str, ca_pem: &str, name: &str) -> bool {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let verifier = WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

pub fn openbao_token(env: &BTreeMap<String, String>) -> String {
    env.get("OSSATURE_OPENBAO_ROOT_TOKEN")
        .unwrap_or(&env["OSSATURE_OPENBAO_TOKEN"])
        .clone()
}

/// The record of a certificate in its tenant's KV mount: status and data.
pub async fn record(
    env: &BTreeMap<String, String>,
    tenant: &str,
    namespace: &str,
    name: &str,
) -> (u16, Value) {
    get(
        format!(
            "{}/v1/tenants/{tenant}/kv/data/certificates/{namespace}/{name}",
            env["OSSATURE_OPENBAO_ADDR"]
        ),
        Some(("X-Vault-Token", &openbao_token(env))),
    )
    .await
}

pub async fn ready_tenant(client: &kube::Client, sel: &str) -> String {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("ct{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(tenant(&name), sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(90)).await;
    name
}

/// Creates Certificate `name` in the namespace of `api`.
pub async fn create(api: &Api<Certificate>, name: &str, spec: Value) {
    let unplaced: Certificate = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &unplaced).await.unwrap();
}

pub async fn ready_certificate(certificates: &Api<Certificate>, name: &str) -> Certificate {
    wait_for(
        &format!("certificate {name} Ready"),
        Duration::from_secs(90),
        || async move {
            let c = certificates.get(name).await.ok()?;
            let s = c.status.as_ref()?;
            (s.observed_generation == c.metadata.generation
                && condition(&s.conditions, "Ready")?.0 == "True")
                .then_some(c)
        },
    )
    .await
}

/// The public key (SubjectPublicKeyInfo) of a chain's leaf.
pub fn leaf_public_key(chain_pem: &str) -> Vec<u8> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    parsed.public_key().raw.to_vec()
}

/// The public key (SubjectPublicKeyInfo) of a PEM private key.
pub fn key_public_key(key_pem: &str) -> Vec<u8> {
    use rcgen::PublicKeyData;
    rcgen::KeyPair::from_pem(key_pem)
        .unwrap()
        .subject_public_key_info()
}

/// Deletes object `name` and waits until it is gone (its finalizer done).
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait_for(&format!("{name} gone"), timeout, || async move {
        api.get_opt(name)
            .await
            .ok()
            .filter(Option::is_none)
            .map(drop)
    })
    .await;
}

/// An AcmeIssuer of the stack's Pebble for the operator of test `sel`.
pub fn issuer(
    env: &BTreeMap<String, String>,
    name: &str,
    sel: &str,
    extra: Value,
) -> ossature_crds::AcmeIssuer {
    let bundle = std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"]).unwrap();
    let mut spec = json!({
        "directory": env["OSSATURE_ACME_DIRECTORY"],
        "emails": ["certificates@ossature.test"],
        "caBundle": bundle,
        "solver": {"challTestSrv": {"url": env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"]}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
        "metadata": {"name": name, "labels": {TEST_LABEL: sel}},
        "spec": spec,
    }))
    .unwrap()
}

/// Creates the issuer and waits until its account is registered.
pub async fn ready_issuer(
    client: &kube::Client,
    issuer: &ossature_crds::AcmeIssuer,
) -> ossature_crds::AcmeIssuer {
    let issuers: Api<ossature_crds::AcmeIssuer> = Api::all(client.clone());
    issuers
        .create(&PostParams::default(), issuer)
        .await
        .unwrap();
    let name = issuer.metadata.name.clone().unwrap();
    wait_for(
        &format!("AcmeIssuer {name} Ready"),
        Duration::from_secs(60),
        || {
            let issuers = issuers.clone();
            let name = name.clone();
            async move {
                let i = issuers.get(&name).await.ok()?;
                let s = i.status.as_ref()?;
                (s.observed_generation == i.metadata.generation
                    && condition(&s.conditions, "Ready")?.0 == "True")
                    .then_some(i)
            }
        },
    )
    .await
}

/// Pebble's issuing root, fetched now: Pebble makes a new one at each start.
pub async fn issuing_root(env: &BTreeMap<String, String>) -> String {
    let bundle = std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"]).unwrap();
    let trust = reqwest::Certificate::from_pem_bundle(bundle.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(trust)
        .build()
        .unwrap();
    let response = client
        .get(&env["OSSATURE_ACME_ROOTS_URL"])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.unwrap()
}

/// A request to `host` through the edge: whom it trusts, its client
/// certificate and key (PEM), the address it comes from.
pub async fn fetch(
    env: &BTreeMap<String, String>,
    host: &str,
    trust: &str,
    identity: Option<&str>,
    from: &str,
) -> Result<(u16, String), String> {
    let addr: std::net::SocketAddr = env["OSSATURE_EDGE_HTTPS_ADDR"].parse().unwrap();
    let roots = reqwest::Certificate::from_pem_bundle(trust.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only(roots)
        .resolve(host, addr)
        .local_address(Some(from.parse().unwrap()));
    if let Some(identity) = identity {
        let identity = reqwest::Identity::from_pem(identity.as_bytes())
            .unwrap_or_else(|e| panic!("{e}: {identity}"));
        builder = builder.identity(identity);
    }
    let response = builder
        .build()
        .unwrap()
        .get(format!("https://{host}:{}/", addr.port()))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// A test's stack and selector, and the AcmeIssuer of the stack's Pebble
/// that signs its operator's tenant hosts.
pub struct Platform {
    pub env: BTreeMap<String, String>,
    pub client: Client,
    pub sel: String,
    pub issuer: String,
}

impl Platform {
    /// An operator of this test whose tenant hosts the issuer signs.
    pub fn start_operator(&self) -> Operator {
        start_operator_with(&self.env, &self.sel, &["--host-issuer", &self.issuer])
    }
}

/// The platform of a new test, its operator running and its issuer
/// `<prefix>-<selector>` (with `extra` spec fields) Ready.
pub async fn platform(prefix: &str, extra: Value) -> (Platform, Operator) {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let platform = Platform {
        issuer: format!("{prefix}-{sel}"),
        env,
        client,
        sel,
    };
    let operator = platform.start_operator();
    ready_issuer(
        &platform.client,
        &issuer(&platform.env, &platform.issuer, &platform.sel, extra),
    )
    .await;
    (platform, operator)
}

/// A tenant of this test with Environment `prod` Ready; its namespace.
pub async fn tenant_with_environment(client: &Client, sel: &str, prefix: &str) -> (String, String) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("{prefix}{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&name), sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    let environments: Api<Environment> = Api::namespaced(client.clone(), &format!("tn-{name}"));
    let prod: Environment = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "prod"},
        "spec": {"kind": "Production"},
    }))
    .unwrap();
    environments
        .create(&PostParams::default(), &prod)
        .await
        .unwrap();
    wait_for("environment prod Ready", Duration::from_secs(90), || {
        let environments = environments.clone();
        async move {
            let e = environments.get("prod").await.ok()?;
            let conditions = &e.status.as_ref()?.conditions;
            (condition(conditions, "Ready")?.0 == "True").then_some(())
        }
    })
    .await;
    let namespace = format!("tn-{name}--prod");
    (name, namespace)
}

/// A ServiceAccount's own token, as a pod would have it mounted.
pub async fn account_token(accounts: &Api<ServiceAccount>, name: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // The shortest the apiserver grants.
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("the apiserver issues a token")
        .status
        .and_then(|status| status.token)
        .expect("a TokenRequest answers with a token")
}

/// The tenant's namespace, labelled for it as a tenant's file makes it
/// (before its Tenant exists); its name.
pub async fn labelled_namespace(client: &Client, tenant: &str) -> String {
    let name = format!("tn-{tenant}");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"ossature.dev/tenant": tenant}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    name
}

/// Whether an object of any kind says Ready=True.
pub fn dynamic_ready(object: &kube::api::DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Waits until `object`, read through `api`, says Ready=True.
pub async fn wait_dynamic_ready(
    api: &kube::Api<kube::api::DynamicObject>,
    object: &kube::api::DynamicObject,
    timeout: Duration,
) {
    let name = object.metadata.name.clone().unwrap();
    let kind = object
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    wait_for(&format!("{kind} {name} Ready"), timeout, || {
        let (api, name) = (api.clone(), name.clone());
        async move { api.get(&name).await.ok().filter(dynamic_ready).map(drop) }
    })
    .await;
}
