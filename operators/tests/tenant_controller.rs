//! The operator binary against the real stack: a Tenant becomes Ready, each
//! backend shows its objects through its own API, an unchanged tenant causes
//! no writes, drift is restored, and deleting one tenant removes everything
//! of it and nothing of a tenant whose name extends it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use ossature_crds::Tenant;
use serde_json::{Value, json};

struct Operator {
    child: Child,
    metrics: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(env: &BTreeMap<String, String>) -> Operator {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("ossature-operator-test-{port}.log")),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ossature-operator"))
        .envs(env)
        .args([
            "--log-format",
            "text",
            "--resync-seconds",
            "5",
            "--max-backoff-seconds",
            "5",
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Operator {
        child,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
    }
}

async fn kube_client(env: &BTreeMap<String, String>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn install_crds(client: &Client) {
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

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn keycloak_token(env: &BTreeMap<String, String>) -> String {
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
async fn get(url: String, header: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = http().get(url);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn realm(env: &BTreeMap<String, String>, name: &str) -> (u16, Value) {
    let token = keycloak_token(env).await;
    let auth = format!("Bearer {token}");
    get(
        format!("{}/admin/realms/{name}", env["OSSATURE_KEYCLOAK_URL"]),
        Some(("Authorization", &auth)),
    )
    .await
}

async fn pulsar_tenant(env: &BTreeMap<String, String>, name: &str) -> (u16, Value) {
    get(
        format!(
            "{}/admin/v2/tenants/{name}",
            env["OSSATURE_PULSAR_ADMIN_URL"]
        ),
        None,
    )
    .await
}

async fn openbao_mounts(env: &BTreeMap<String, String>) -> Value {
    let (_, body) = get(
        format!("{}/v1/sys/mounts", env["OSSATURE_OPENBAO_ADDR"]),
        Some(("X-Vault-Token", &env["OSSATURE_OPENBAO_TOKEN"])),
    )
    .await;
    body
}

async fn writes(operator: &Operator) -> u64 {
    let text = http()
        .get(&operator.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("ossature_backend_calls_total{") && l.contains("verb=\"write\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn ready(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| {
        s.observed_generation == tenant.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn tenant(name: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"type": "Business", "displayName": "Controller test", "residency": "eu",
                 "quotas": {"cpu": "2", "pods": 10}},
    }))
    .unwrap()
}

fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}", nanos ^ std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifecycle_across_every_backend() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let operator = start_operator(&env);
    let tenants: Api<Tenant> = Api::all(client.clone());

    // `first-eu` extends `first`'s name: deleting `first` must leave it alone.
    let first = format!("op{}", suffix());
    let second = format!("{first}-eu");
    for name in [&first, &second] {
        tenants
            .create(&PostParams::default(), &tenant(name))
            .await
            .unwrap();
    }
    for name in [&first, &second] {
        wait_for(
            &format!("tenant {name} Ready"),
            Duration::from_secs(180),
            || {
                let tenants = tenants.clone();
                async move { tenants.get(name).await.ok().filter(ready) }
            },
        )
        .await;
    }

    // Each backend, through its own API.
    let namespace = format!("tn-{first}");
    let ns = Api::<Namespace>::all(client.clone())
        .get(&namespace)
        .await
        .unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["ossature.dev/tenant"], first);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    assert_eq!(
        policies
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let (status, realm_body) = realm(&env, &first).await;
    assert_eq!(status, 200);
    assert_eq!(realm_body["defaultSignatureAlgorithm"], "EdDSA");
    assert_eq!(realm_body["bruteForceProtected"], true);
    let (status, pulsar_body) = pulsar_tenant(&env, &first).await;
    assert_eq!(status, 200);
    assert_eq!(pulsar_body["allowedClusters"], json!(["standalone"]));
    let mounts = openbao_mounts(&env).await;
    assert_eq!(mounts["data"][format!("tenants/{first}/kv/")]["type"], "kv");
    assert_eq!(
        mounts["data"][format!("tenants/{first}/transit/")]["type"],
        "transit"
    );

    // Steady state: three resync periods of an unchanged tenant write nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = writes(&operator).await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(
        writes(&operator).await,
        before,
        "an unchanged tenant caused writes"
    );

    // Drift: a deleted NetworkPolicy and a changed realm come back.
    policies
        .delete("ossature-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    let token = keycloak_token(&env).await;
    let mut drifted = realm_body.clone();
    drifted["accessTokenLifespan"] = json!(3599);
    let response = http()
        .put(format!(
            "{}/admin/realms/{first}",
            env["OSSATURE_KEYCLOAK_URL"]
        ))
        .bearer_auth(&token)
        .json(&drifted)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    wait_for("NetworkPolicy restored", Duration::from_secs(60), || {
        let policies = policies.clone();
        async move {
            policies
                .get_opt("ossature-default-deny")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    wait_for("realm restored", Duration::from_secs(60), || {
        let env = env.clone();
        let first = first.clone();
        async move { (realm(&env, &first).await.1["accessTokenLifespan"] == json!(300)).then_some(()) }
    })
    .await;

    // Delete the first: everything of it goes, nothing of the second.
    tenants
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("tenant deleted", Duration::from_secs(120), || {
        let tenants = tenants.clone();
        let first = first.clone();
        async move {
            tenants
                .get_opt(&first)
                .await
                .ok()
                .filter(Option::is_none)
                .map(drop)
        }
    })
    .await;
    assert_eq!(realm(&env, &first).await.0, 404);
    assert_eq!(pulsar_tenant(&env, &first).await.0, 404);
    let mounts = openbao_mounts(&env).await;
    assert!(mounts["data"].get(format!("tenants/{first}/kv/")).is_none());
    assert_eq!(realm(&env, &second).await.0, 200);
    assert_eq!(pulsar_tenant(&env, &second).await.0, 200);
    assert_eq!(
        mounts["data"][format!("tenants/{second}/kv/")]["type"],
        "kv"
    );
    assert!(ready(&tenants.get(&second).await.unwrap()));

    tenants
        .delete(&second, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("second tenant deleted", Duration::from_secs(120), || {
        let tenants = tenants.clone();
        let second = second.clone();
        async move {
            tenants
                .get_opt(&second)
                .await
                .ok()
                .filter(Option::is_none)
                .map(drop)
        }
    })
    .await;
    assert_eq!(realm(&env, &second).await.0, 404);
    drop(operator);
}
