//! What the control plane's tests share: the stack, the control plane
//! served in the test's process, a realm of platform operators in the
//! stack's Keycloak, and calls to the API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use ossature_control_plane::start::Running;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const TEST_LABEL: &str = "ossature.dev/test";

pub async fn stack() -> BTreeMap<String, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ossature_bootstrap::ensure_up()
        .await
        .expect("the local stack is up")
}

pub async fn kube_client(env: &BTreeMap<String, String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(400))
        .tls_certs_only([])
        .build()
        .unwrap()
}

/// A realm of platform operators: a group, and a service account in it
/// whose tokens name the control plane as audience.
pub struct OperatorsRealm {
    pub realm: String,
    pub client_id: String,
    secret: String,
    keycloak: String,
    admin: (String, String),
}

pub async fn admin_token(keycloak: &str, user: &str, password: &str) -> String {
    let answer: Value = http()
        .post(format!(
            "{keycloak}/realms/master/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

impl OperatorsRealm {
    pub async fn create(env: &BTreeMap<String, String>, group: &str) -> OperatorsRealm {
        let keycloak = env["OSSATURE_KEYCLOAK_URL"]
            .trim_end_matches('/')
            .to_string();
        let admin = (
            env["OSSATURE_KEYCLOAK_ADMIN_USER"].clone(),
            env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"].clone(),
        );
        let realm = ossature_e2e::unique("cp-ops");
        let client_id = "ops-cli".to_string();
        let secret = ossature_e2e::unique("s");
        let representation = ossature_control_plane::local_stack::operators_realm_representation(
            &realm,
            &client_id,
            &secret,
            group,
            "ossature-control-plane",
        );
        let token = admin_token(&keycloak, &admin.0, &admin.1).await;
        let response = http()
            .post(format!("{keycloak}/admin/realms"))
            .bearer_auth(token)
            .json(&representation)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "creating realm {realm}: {}",
            response.text().await.unwrap()
        );
        OperatorsRealm {
            realm,
            client_id,
            secret,
            keycloak,
            admin,
        }
    }

    /// A client-credentials token of the operators' service account.
    pub async fn token(&self) -> String {
        client_token(&self.keycloak, &self.realm, &self.client_id, &self.secret)
            .await
            .unwrap()
    }
}

/// Removes a realm of the stack's Keycloak.
async fn delete_realm(keycloak: &str, admin: &(String, String), realm: &str) {
    let token = admin_token(keycloak, &admin.0, &admin.1).await;
    let _ = http()
        .delete(format!("{keycloak}/admin/realms/{realm}"))
        .bearer_auth(token)
        .send()
        .await;
}

impl Drop for OperatorsRealm {
    /// A test that fails leaves no realm behind either.
    fn drop(&mut self) {
        let (keycloak, admin, realm) = (
            self.keycloak.clone(),
            self.admin.clone(),
            self.realm.clone(),
        );
        run_to_end(async move { delete_realm(&keycloak, &admin, &realm).await });
    }
}

/// Runs `work` to its end from a drop, on a thread and runtime of its own,
/// since the test's runtime may be gone.
pub fn run_to_end(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let done = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work);
    });
    let _ = done.join();
}

/// A token from the client credentials grant, or Keycloak's answer.
pub async fn client_token(
    keycloak: &str,
    realm: &str,
    id: &str,
    secret: &str,
) -> Result<String, String> {
    let answer: Value = http()
        .post(format!(
            "{keycloak}/realms/{realm}/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    answer["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| answer.to_string())
}

/// An answer: status, headers, body.
pub type Answer = (StatusCode, HeaderMap, Value);

/// The control plane served in this process, its audit log in a file.
pub struct ControlPlane {
    pub running: Running,
    pub base: String,
    pub audit: PathBuf,
}

impl ControlPlane {
    pub async fn start(
        env: &BTreeMap<String, String>,
        client: &Client,
        operators_realm: &str,
    ) -> ControlPlane {
        let unlimited = [
            "--rate-limit-per-second",
            "1000",
            "--rate-limit-burst",
            "1000",
        ];
        Self::start_with(env, client, operators_realm, &unlimited, "http").await
    }

    /// With `extra` flags, reached by `scheme`.
    pub async fn start_with(
        env: &BTreeMap<String, String>,
        client: &Client,
        operators_realm: &str,
        extra: &[&str],
        scheme: &str,
    ) -> ControlPlane {
        let audit =
            std::env::temp_dir().join(format!("{}.audit.jsonl", ossature_e2e::unique("cp")));
        let defaults = [
            "ossature-control-plane",
            "--listen",
            "127.0.0.1:0",
            "--keycloak-url",
            &env["OSSATURE_KEYCLOAK_URL"],
            "--operators-realm",
            operators_realm,
            "--audit-log",
            audit.to_str().unwrap(),
            "--max-body-bytes",
            "65536",
        ];
        let args = ossature_control_plane::cli::Args::try_parse_from(
            defaults.iter().chain(extra).copied(),
        )
        .unwrap();
        let running =
            ossature_control_plane::start::spawn(args, client.clone(), std::future::pending())
                .await
                .unwrap();
        let base = format!("{scheme}://localhost:{}", running.addr.port());
        ControlPlane {
            running,
            base,
            audit,
        }
    }

    /// POSTs `body` to `path` with a bearer `token` and an Idempotency-Key.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: &Value,
    ) -> Answer {
        let mut request = http().post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// A query sent with an invocation context header (JSON, encoded here).
    pub async fn query_in_context(
        &self,
        name: &str,
        token: &str,
        context: &Value,
        body: &Value,
    ) -> reqwest::Response {
        use base64::Engine;
        let header = base64::engine::general_purpose::STANDARD.encode(context.to_string());
        http()
            .post(format!("{}/v1/queries/{name}", self.base))
            .bearer_auth(token)
            .header("ossature-invocation", header)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A command with a token and an Idempotency-Key.
    pub async fn command(&self, name: &str, token: &str, key: &str, body: &Value) -> Answer {
        self.post(
            &format!("/v1/commands/{name}"),
            Some(token),
            Some(key),
            body,
        )
        .await
    }

    /// A query with a token.
    pub async fn query(&self, name: &str, token: &str, body: &Value) -> Answer {
        self.post(&format!("/v1/queries/{name}"), Some(token), None, body)
            .await
    }

    /// Offboards `tenant`, waiting until it is gone from every backend.
    pub async fn offboard(&self, token: &str, tenant: &str) {
        let (status, _, answer) = self
            .command(
                "offboardTenant",
                token,
                &format!("offboard-{tenant}"),
                &json!({"tenant": tenant, "wait": {"timeoutSeconds": 240}}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outcome"]["state"], "Deleted", "{answer}");
    }

    /// The audit lines written so far.
    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Every audit line validates against the published schema.
pub fn assert_audit_lines_valid(lines: &[Value]) {
    assert_lines_valid("audit-record.schema.json", lines);
}

/// Every line validates against published schema `file`.
pub fn assert_lines_valid(file: &str, lines: &[Value]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!lines.is_empty());
    for line in lines {
        let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "line {line} does not validate against {file}: {errors:?}"
        );
    }
}

/// Asserts an answer is a problem of `slug` with an invocation id.
pub fn assert_problem(answer: &Answer, status: u16, slug: &str) {
    let (code, headers, body) = answer;
    assert_eq!(code.as_u16(), status, "{body}");
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{body}"
    );
    assert_eq!(
        body["type"],
        format!("https://ossature.dev/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["invocationId"].as_str().is_some_and(|i| i.len() == 26),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    assert!(headers.contains_key("ossature-invocation"), "{headers:?}");
}

/// The onboarding of a tenant labelled for the test's operator.
pub fn onboarding(tenant: &str, selector: &str) -> Value {
    json!({
        "tenant": tenant, "type": "Business", "displayName": format!("Tenant {tenant}"),
        "residency": "eu",
        "labels": {TEST_LABEL: selector},
        "quotas": {"cpu": "4", "memory": "8Gi", "pods": 50},
        "scopes": [
            {"name": "global", "displayName": "Global",
             "grants": [{"role": "Admin", "groups": [format!("{tenant}-admins")]}]},
            {"name": "eu", "displayName": "Europe", "parent": "global"},
        ],
        "environments": [{"name": "prod", "kind": "Production"}],
    })
}

/// Removes the idempotency keys a test's commands on `tenant` left.
pub async fn remove_keys(client: &Client, tenant: &str) {
    use kube::api::{Api, DeleteParams, ListParams};
    let keys: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "ossature-system");
    let _ = keys
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!(
                "control-plane.ossature.dev/idempotency-key=true,ossature.dev/tenant={tenant}"
            )),
        )
        .await;
}

/// Removes what a test left of a tenant, without an operator (no finalizers
/// were added, or they are removed).
pub async fn remove_tenant(client: &Client, tenant: &str) {
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    let tenants: Api<ossature_crds::Tenant> = Api::all(client.clone());
    if tenants.get_opt(tenant).await.ok().flatten().is_some() {
        let _ = tenants
            .patch(
                tenant,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = tenants.delete(tenant, &DeleteParams::default()).await;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(
            &ossature_model::tenant_namespace(tenant),
            &DeleteParams::default(),
        )
        .await;
    remove_keys(client, tenant).await;
}

/// The operator in this process, managing only tenants labelled for `selector`.
pub fn start_operator(
    env: &std::collections::BTreeMap<String, String>,
    selector: &str,
) -> tokio::task::JoinHandle<()> {
    let args = [
        "ossature-operator",
        // The stack's kubeconfig (this process has none of its own); its
        // CRDs are this branch's, unchanged.
        "--local-stack",
        "--keycloak-url",
        &env["OSSATURE_KEYCLOAK_URL"],
        "--keycloak-admin-user",
        &env["OSSATURE_KEYCLOAK_ADMIN_USER"],
        "--keycloak-admin-password",
        &env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"],
        "--pulsar-admin-url",
        &env["OSSATURE_PULSAR_ADMIN_URL"],
        "--pulsar-token-file",
        &env["OSSATURE_PULSAR_TOKEN_FILE"],
        "--openbao-addr",
        &env["OSSATURE_OPENBAO_ADDR"],
        "--openbao-token",
        &env["OSSATURE_OPENBAO_TOKEN"],
    ]
    .into_iter()
    .map(String::from)
    .chain(ossature_e2e::operator_flags(selector));
    let args = ossature_operator::cli::Args::try_parse_from(args).unwrap();
    tokio::spawn(async move {
        if let Err(e) = ossature_operator::start::run(args).await {
            panic!("the operator stopped: {e:#}");
        }
    })
}

/// Waits until `token` POSTing `body` to `path` (a query, or a dry-run
/// command) is answered with `status` (the grants follow a watch); the answer.
pub async fn wait_status(
    cp: &ControlPlane,
    token: &str,
    path: &str,
    body: &Value,
    status: u16,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (code, _, answer) = cp.post(path, Some(token), Some("probe"), body).await;
        if code == status {
            return answer;
        }
        last = answer;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} {body} was not answered {status} within 10 s: {last}");
}

/// A ServiceIdentity `name` in `environment` of `tenant` (its namespace
/// comes with the Environment), and a client-credentials token of the
/// Keycloak client the operator makes for it: its client id and token.
pub async fn service_token(
    env: &BTreeMap<String, String>,
    client: &Client,
    tenant: &str,
    environment: &str,
    name: &str,
) -> (String, String) {
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    use kube::api::PostParams;
    use ossature_crds::{ServiceIdentity, Tenant};
    let namespace = format!("tn-{tenant}--{environment}");
    let services: Api<ServiceIdentity> = Api::namespaced(client.clone(), &namespace);
    let service: ServiceIdentity = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
        "metadata": {"name": name},
        "spec": {"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global",
                 "description": "a service of the tenant that calls the control plane"},
    }))
    .unwrap();
    let mut created = None;
    for _ in 0..120 {
        match services.create(&PostParams::default(), &service).await {
            Ok(s) => {
                created = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    assert!(
        created.is_some(),
        "the ServiceIdentity could not be created in {namespace}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut credentials = None;
    for _ in 0..180 {
        if let Some(secret) = secrets.get_opt(&format!("{name}-secrets")).await.unwrap()
            && let Some(data) = secret.data
            && data.contains_key("client-secret")
        {
            credentials = Some(data);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let credentials = credentials.expect("the service's credentials");
    let text = |k: &str| String::from_utf8(credentials[k].0.clone()).unwrap();
    let tenant_object = Api::<Tenant>::all(client.clone())
        .get(tenant)
        .await
        .unwrap();
    let realm = tenant_object
        .status
        .and_then(|s| s.realm)
        .expect("the tenant's realm");
    let token = client_token(
        &env["OSSATURE_KEYCLOAK_URL"],
        &realm,
        &text("client-id"),
        &text("client-secret"),
    )
    .await
    .unwrap();
    (text("client-id"), token)
}

/// The stack, the operator in this process under a selector of its own, a
/// realm of platform operators, the control plane (with `flags`, unlimited
/// rates) and a platform operator's token.
pub struct WithOperator {
    pub env: BTreeMap<String, String>,
    pub client: Client,
    pub selector: String,
    pub operator: tokio::task::JoinHandle<()>,
    pub ops: OperatorsRealm,
    pub cp: ControlPlane,
    pub token: String,
}

impl WithOperator {
    pub async fn start(flags: &[&str]) -> WithOperator {
        let env = stack().await;
        let client = kube_client(&env).await;
        let selector = ossature_e2e::unique("cp");
        let operator = start_operator(&env, &selector);
        let ops = OperatorsRealm::create(&env, "platform-operators").await;
        let unlimited = [
            "--rate-limit-per-second",
            "1000",
            "--rate-limit-burst",
            "1000",
        ];
        let all: Vec<&str> = unlimited.iter().chain(flags).copied().collect();
        let cp = ControlPlane::start_with(&env, &client, &ops.realm, &all, "http").await;
        let token = ops.token().await;
        WithOperator {
            env,
            client,
            selector,
            operator,
            ops,
            cp,
            token,
        }
    }
}

/// One server-sent event: its id, name and JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A tenant's event stream, read event by event.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl ControlPlane {
    /// Opens `tenant`'s event stream; the status and, on 200, the stream.
    pub async fn events(
        &self,
        tenant: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> (StatusCode, Option<EventStream>, Value) {
        let mut request = http()
            .get(format!("{}/v1/streams/tenants/{tenant}", self.base))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        if status != 200 {
            return (status, None, response.json().await.unwrap_or(Value::Null));
        }
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a stream's content type"
        );
        let stream = EventStream {
            response,
            buffer: String::new(),
        };
        (status, Some(stream), Value::Null)
    }
}

impl EventStream {
    /// The next event within `timeout`; `None` when the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                // Comments (keep-alives) carry no event.
                if event.is_empty() && data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("an event's data is JSON");
                return Some(Sse { id, event, data });
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within the timeout")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// Every event until the stream ends, the last being `end`.
    pub async fn until_end(&mut self, timeout: Duration) -> Vec<Sse> {
        let mut events = Vec::new();
        while let Some(event) = self.next(timeout).await {
            events.push(event);
        }
        assert_eq!(
            events.last().map(|e| e.event.as_str()),
            Some("end"),
            "a stream ends with `end`: {events:?}"
        );
        events
    }
}

/// `cp` answers `body` with key `key` as the replay of `first`, writing
/// nothing (the Tenant is as `written`), and the same key with another
/// body as a 422.
pub async fn assert_replayed(
    cp: &ControlPlane,
    token: &str,
    key: &str,
    body: &Value,
    first: &Value,
    written: &ossature_crds::Tenant,
) {
    let tenant = written.metadata.name.as_deref().unwrap();
    let (status, headers, again) = cp.command("onboardTenant", token, key, body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["replay"], true);
    assert_eq!(again["invocationId"], first["invocationId"]);
    let tenants: kube::Api<ossature_crds::Tenant> = kube::Api::all(cp.running.app.client.clone());
    assert_eq!(
        control_planes_part(&tenants.get(tenant).await.unwrap()),
        control_planes_part(written),
        "a replay wrote the Tenant again"
    );
    let mut other = body.clone();
    other["displayName"] = json!("Another name");
    let answer = cp.command("onboardTenant", token, key, &other).await;
    assert_problem(&answer, 422, "idempotency-key-reused");
}

/// What the control plane wrote of `tenant`: its annotations (the
/// invocation) and its field manager's entry (fields and time). Not the
/// resourceVersion: the operator writes the same object (its finalizer,
/// its status) at any moment.
fn control_planes_part(
    tenant: &ossature_crds::Tenant,
) -> (
    Vec<(String, String)>,
    Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>,
) {
    use ossature_control_plane::commands::write::FIELD_MANAGER;
    let annotations = tenant
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("control-plane.ossature.dev/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let managed = tenant
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .cloned()
        .collect();
    (annotations, managed)
}

/// What `cp` says of invocation `id`, which must have completed.
pub async fn completed_invocation(cp: &ControlPlane, token: &str, id: &Value) -> Value {
    let query = json!({"invocationId": id});
    let (status, _, record) = cp.query("invocationStatus", token, &query).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"], "Completed");
    record
}
