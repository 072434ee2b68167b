//! Readiness of each component, asked through its own API, and the one-time
//! steps some need before they serve (OpenBao init, unseal and Kubernetes
//! auth, KEDA's CRDs in the apiserver, kwok's node).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use crate::components::*;
use crate::files::write_private;
use crate::kubernetes_auth;
use crate::layout::Layout;
use crate::pki::Identity;
use crate::pulsar_auth;

/// Clients that trust the local CA; the apiserver one presents the admin identity.
#[derive(Clone)]
pub struct Probes {
    layout: Layout,
    http: reqwest::Client,
}

fn root_certificate(layout: &Layout) -> Result<reqwest::Certificate> {
    let pem = std::fs::read(layout.pki().ca_cert())?;
    Ok(reqwest::Certificate::from_pem(&pem)?)
}

impl Probes {
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn new(layout: &Layout) -> Result<Self> {
        let pki = layout.pki();
        let mut identity = std::fs::read(pki.client_cert(Identity::Admin))?;
        identity.extend(std::fs::read(pki.client_key(Identity::Admin))?);
        let http = reqwest::Client::builder()
            .tls_certs_only([root_certificate(layout)?])
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(5))
            // Pebble refuses requests without one.
            .user_agent(concat!("ossature-dev/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()?;
        Ok(Self {
            layout: layout.clone(),
            http,
        })
    }

    async fn get_ok(&self, url: &str) -> Result<String, String> {
        self.get_ok_as(url, None).await
    }

    /// A GET with a bearer token.
    async fn get_ok_as(&self, url: &str, token: Option<&str>) -> Result<String, String> {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| short(&e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{url} answered {status}"))
        }
    }

    /// `Ok` when the component serves; otherwise why not.
    pub async fn probe(&self, component: Component) -> Result<(), String> {
        match component {
            Component::Etcd => {
                let body = self
                    .get_ok(&format!("{}/health", http_url(ETCD_CLIENT_PORT)))
                    .await?;
                if body.contains("\"health\":\"true\"") {
                    Ok(())
                } else {
                    Err(format!("etcd reports {body}"))
                }
            }
            Component::KubeApiserver => {
                self.get_ok(&format!("{}/readyz", https_url(APISERVER_PORT)))
                    .await?;
                self.keda_crds_ready().await
            }
            Component::KubeControllerManager => self
                .get_ok(&format!("{}/healthz", https_url(CONTROLLER_MANAGER_PORT)))
                .await
                .map(drop),
            Component::KubeScheduler => self
                .get_ok(&format!("{}/healthz", https_url(SCHEDULER_PORT)))
                .await
                .map(drop),
            Component::Kwok => {
                self.get_ok(&format!("{}/healthz", http_url(KWOK_PORT)))
                    .await?;
                self.node_ready().await
            }
            Component::Keycloak => self
                .get_ok(&format!("{}/realms/master", http_url(KEYCLOAK_PORT)))
                .await
                .map(drop),
            Component::Pulsar => {
                let base = http_url(PULSAR_WEB_PORT);
                let token = pulsar_auth::admin_token(&self.layout).map_err(|e| format!("{e:#}"))?;
                // The broker's own check writes and reads a message through the bookie.
                self.get_ok_as(&format!("{base}/admin/v2/brokers/health"), Some(&token))
                    .await?;
                let namespaces = self
                    .get_ok_as(&format!("{base}/admin/v2/namespaces/public"), Some(&token))
                    .await?;
                if !namespaces.contains("public/default") {
                    return Err("Pulsar has not created its default namespace yet".into());
                }
                // A broker started by an older stack lets anyone in.
                match self.get_ok(&format!("{base}/admin/v2/clusters")).await {
                    Err(refused) if refused.ends_with("401 Unauthorized") => Ok(()),
                    _ => Err("Pulsar accepts anonymous admin calls; restart it with \
                              authentication on: `ossature-dev down` then `ossature-dev up`"
                        .into()),
                }
            }
            Component::Openbao => match self.openbao_health().await? {
                OpenbaoState::Active => {
                    self.operator_access_ready().await?;
                    self.kubernetes_auth_ready().await
                }
                OpenbaoState::Other(code) => Err(format!("OpenBao sys/health answered {code}")),
                other => Err(format!("OpenBao is {other:?}")),
            },
            Component::Challtestsrv => {
                let url = format!(
                    "{}/set-default-ipv4",
                    http_url(CHALLTESTSRV_MANAGEMENT_PORT)
                );
                let response = self
                    .http
                    .post(url)
                    .json(&serde_json::json!({"ip": LOOPBACK}))
                    .send()
                    .await
                    .map_err(|e| short(&e))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("challtestsrv answered {}", response.status()))
                }
            }
            Component::Pebble => self
                .get_ok(&format!("{}/dir", https_url(PEBBLE_PORT)))
                .await
                .map(drop),
            Component::Caddy => self
                .get_ok(&format!("{}/config/", http_url(CADDY_ADMIN_PORT)))
                .await
                .map(drop),
            Component::Prometheus => self
                .get_ok(&format!("{}/-/ready", http_url(PROMETHEUS_PORT)))
                .await
                .map(drop),
        }
    }

    /// One step towards serving, for components that need more than a start.
    pub async fn settle(&self, component: Component) -> Result<()> {
        match component {
            Component::Openbao => match self.openbao_health().await {
                Ok(OpenbaoState::Uninitialised) => self.openbao_init().await,
                Ok(OpenbaoState::Sealed) => self.openbao_unseal().await,
                Ok(OpenbaoState::Active) => {
                    self.ensure_operator_access().await?;
                    self.ensure_kubernetes_auth().await
                }
                _ => Ok(()),
            },
            Component::KubeApiserver => self.ensure_keda_crds().await,
            Component::Kwok => self.ensure_node().await,
            _ => Ok(()),
        }
    }

    /// Work before a component's process starts.
    pub async fn prepare(&self, component: Component) -> Result<()> {
        match component {
            Component::Pulsar => {
                self.release_pulsar_sessions().await?;
                self.ensure_pulsar_tokens().await
            }
            _ => Ok(()),
        }
    }

    /// Revokes the etcd leases of a Pulsar that is not running. A crashed
    /// Pulsar leaves its bookie and broker registrations behind until their
    /// lease expires; a new one would find them taken and fail to start.
    async fn release_pulsar_sessions(&self) -> Result<()> {
        let etcd = http_url(ETCD_CLIENT_PORT);
        let leases: serde_json::Value = self
            .http
            .post(format!("{etcd}/v3/lease/leases"))
            .json(&serde_json::json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for lease in leases["leases"].as_array().into_iter().flatten() {
            let Some(id) = lease["ID"].as_str() else {
                continue;
            };
            let live: serde_json::Value = self
                .http
                .post(format!("{etcd}/v3/lease/timetolive"))
                .json(&serde_json::json!({"ID": id, "keys": true}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let pulsar = live["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str())
                .filter_map(|k| BASE64.decode(k).ok())
                .any(|k| is_pulsar_key(&k));
            if pulsar {
                self.http
                    .post(format!("{etcd}/v3/lease/revoke"))
                    .json(&serde_json::json!({"ID": id}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
        Ok(())
    }

    pub(crate) async fn kube(&self) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(self.layout.pki().kubeconfig(Identity::Admin))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Registers the fake node kwok manages (once; kwok fills in its status).
    async fn ensure_node(&self) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.kube().await?);
        if nodes.get_opt(KWOK_NODE).await?.is_some() {
            return Ok(());
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": KWOK_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": KWOK_NODE,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn node_ready(&self) -> Result<(), String> {
        let client = self.kube().await.map_err(|e| e.to_string())?;
        let nodes: Api<Node> = Api::all(client);
        let node = nodes
            .get_opt(KWOK_NODE)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {KWOK_NODE} is not registered"))?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            Ok(())
        } else {
            Err(format!("node {KWOK_NODE} is not Ready yet"))
        }
    }

    async fn openbao_health(&self) -> Result<OpenbaoState, String> {
        let url = format!("{}/v1/sys/health", http_url(OPENBAO_PORT));
        let response = self.http.get(url).send().await.map_err(|e| short(&e))?;
        // sys/health encodes the state in the status code.
        Ok(match response.status().as_u16() {
            200 => OpenbaoState::Active,
            429 | 472 | 473 => OpenbaoState::Standby,
            501 => OpenbaoState::Uninitialised,
            503 => OpenbaoState::Sealed,
            code => OpenbaoState::Other(code),
        })
    }

    async fn openbao_init(&self) -> Result<()> {
        let url = format!("{}/v1/sys/init", http_url(OPENBAO_PORT));
        let response = self
            .http
            .put(url)
            .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
            // Initialising raft storage takes a while; losing this answer loses the keys.
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("OpenBao init answered {}", response.status());
        }
        let body = response.bytes().await?;
        let keys: OpenbaoKeys =
            serde_json::from_slice(&body).context("reading OpenBao init answer")?;
        // Kept verbatim: the unseal key and root token exist nowhere else.
        write_private(&self.layout.secret("openbao-init.json"), &body)?;
        if keys.keys.is_empty() {
            bail!("OpenBao init returned no unseal key");
        }
        Ok(())
    }

    async fn openbao_unseal(&self) -> Result<()> {
        let keys = openbao_keys(&self.layout)?;
        let url = format!("{}/v1/sys/unseal", http_url(OPENBAO_PORT));
        for key in keys.keys {
            let response = self
                .http
                .put(&url)
                .json(&serde_json::json!({"key": key}))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("OpenBao unseal answered {}", response.status());
            }
        }
        Ok(())
    }

    /// One OpenBao call with `token`; the status and the JSON answer (`Null` when empty).
    pub(crate) async fn openbao_call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let url = format!("{}/v1/{path}", http_url(OPENBAO_PORT));
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("reading OpenBao {path}"))?
        };
        Ok((status, value))
    }

    /// `Ok` once the operator's policy is current and its stored token holds it.
    async fn operator_access_ready(&self) -> Result<(), String> {
        let root = openbao_keys(&self.layout)
            .map_err(|e| format!("{e:#}"))?
            .root_token;
        if !self
            .operator_policy_current(&root)
            .await
            .map_err(|e| format!("{e:#}"))?
        {
            return Err(format!("the {OPERATOR_POLICY} policy is not in place"));
        }
        let token = operator_token(&self.layout).map_err(|e| format!("{e:#}"))?;
        match self.operator_token_ttl(&token).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("the operator's OpenBao token is no longer valid".into()),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Whether the stored operator policy is exactly `OPERATOR_POLICY_HCL`.
    async fn operator_policy_current(&self, root: &str) -> Result<bool> {
        let (status, stored) = self
            .openbao_call(root, reqwest::Method::GET, &policy_path(), None)
            .await?;
        Ok(status == 200 && stored["data"]["policy"].as_str() == Some(OPERATOR_POLICY_HCL))
    }

    /// The remaining seconds of `token` if it is valid and holds the operator policy.
    async fn operator_token_ttl(&self, token: &str) -> Result<Option<u64>> {
        let (status, found) = self
            .openbao_call(token, reqwest::Method::GET, "auth/token/lookup-self", None)
            .await?;
        // An unknown or expired token is refused with 403.
        if status == 403 {
            return Ok(None);
        }
        if status != 200 {
            bail!("OpenBao token lookup answered {status}: {found}");
        }
        let holds = found["data"]["policies"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == OPERATOR_POLICY));
        Ok(holds.then(|| found["data"]["ttl"].as_u64().unwrap_or(0)))
    }

    /// Writes the operator's policy if it differs, and gives the operator a
    /// periodic orphan token holding only it: created when the stored one is
    /// missing or no longer valid, renewed when half its period has passed.
    async fn ensure_operator_access(&self) -> Result<()> {
        use reqwest::Method;
        let root = openbao_keys(&self.layout)?.root_token;
        if !self.operator_policy_current(&root).await? {
            let body = serde_json::json!({"policy": OPERATOR_POLICY_HCL});
            let (status, answer) = self
                .openbao_call(&root, Method::PUT, &policy_path(), Some(body))
                .await?;
            if !(200..300).contains(&status) {
                bail!("writing the {OPERATOR_POLICY} policy answered {status}: {answer}");
            }
        }
        let current = match operator_token(&self.layout) {
            Ok(token) => self
                .operator_token_ttl(&token)
                .await?
                .map(|ttl| (token, ttl)),
            Err(_) => None,
        };
        match current {
            Some((_, ttl)) if ttl > OPERATOR_TOKEN_PERIOD_SECS / 2 => Ok(()),
            Some((token, _)) => {
                let (status, answer) = self
                    .openbao_call(&token, Method::POST, "auth/token/renew-self", None)
                    .await?;
                if status != 200 {
                    bail!("renewing the operator's OpenBao token answered {status}: {answer}");
                }
                Ok(())
            }
            None => {
                let body = serde_json::json!({
                    "policies": [OPERATOR_POLICY],
                    "no_default_policy": true,
                    "period": format!("{OPERATOR_TOKEN_PERIOD_SECS}s"),
                    "renewable": true,
                    "display_name": OPERATOR_POLICY,
                });
                let (status, created) = self
                    .openbao_call(&root, Method::POST, "auth/token/create-orphan", Some(body))
                    .await?;
                let Some(token) = created["auth"]["client_token"].as_str() else {
                    bail!("creating the operator's OpenBao token answered {status}: {created}");
                };
                write_private(&self.layout.secret(OPERATOR_TOKEN_FILE), token.as_bytes())
            }
        }
    }
}

#[derive(Debug)]
enum OpenbaoState {
    Active,
    Standby,
    Uninitialised,
    Sealed,
    Other(u16),
}

/// The policy of the operator's own OpenBao token.
pub const OPERATOR_POLICY: &str = "ossature-operator";
/// A periodic token lives as long as it is renewed within this period.
const OPERATOR_TOKEN_PERIOD_SECS: u64 = 768 * 3600;
const OPERATOR_TOKEN_FILE: &str = "openbao-operator-token";

/// What the operator manages and nothing else: engines mounted under
/// `tenants/` and what is in them, the ACL policies and Kubernetes auth
/// roles of tenants (named `tenant-<name>...`), and its own token.
/// `sys/policy/` is the older route to the same ACL policies, which the
/// Vault client library uses.
pub const OPERATOR_POLICY_HCL: &str = r#"# Managed by ossature-dev; edits are overwritten.
path "sys/mounts/tenants/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policy/tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "auth/kubernetes/role/tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "tenants/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}
path "pulsar-tokens/sign/pulsar" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
"#;

fn policy_path() -> String {
    format!("sys/policies/acl/{OPERATOR_POLICY}")
}

/// The operator's token, written by `ensure_operator_access`.
fn operator_token(layout: &Layout) -> Result<String> {
    let path = layout.secret(OPERATOR_TOKEN_FILE);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("the operator's OpenBao token is not in {}", path.display()))?;
    Ok(token.trim().to_string())
}

#[derive(Deserialize)]
pub(crate) struct OpenbaoKeys {
    keys: Vec<String>,
    pub(crate) root_token: String,
}

pub(crate) fn openbao_keys(layout: &Layout) -> Result<OpenbaoKeys> {
    let path = layout.secret("openbao-init.json");
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "OpenBao is initialised but its keys are not in {}; `ossature-dev reset` starts over",
            path.display()
        )
    })?;
    Ok(serde_json::from_slice(&text)?)
}

/// Kubernetes keeps everything under `/registry/`; Pulsar's metadata sits beside it.
fn is_pulsar_key(key: &[u8]) -> bool {
    const PULSAR_ROOTS: &[&str] = &["/ledgers/", "/loadbalance/", "/namespace/"];
    PULSAR_ROOTS
        .iter()
        .any(|root| key.starts_with(root.as_bytes()))
}

/// Connection errors without the URL noise reqwest adds.
fn short(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "not accepting connections".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else {
        error.to_string()
    }
}

/// The `env` contract: what clients and tests need to reach the stack.
pub fn environment(layout: &Layout) -> Result<BTreeMap<&'static str, String>> {
    let pki = layout.pki();
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    let root = openbao_keys(layout)
        .context("the stack has not been brought up yet; run `ossature-dev up`")?
        .root_token;
    let operator = operator_token(layout).context("run `ossature-dev up` to create it")?;
    Ok(BTreeMap::from([
        ("KUBECONFIG", path(pki.kubeconfig(Identity::Admin))),
        ("OSSATURE_KEYCLOAK_URL", http_url(KEYCLOAK_PORT)),
        (
            "OSSATURE_KEYCLOAK_ADMIN_USER",
            KEYCLOAK_ADMIN_USER.to_string(),
        ),
        (
            "OSSATURE_KEYCLOAK_ADMIN_PASSWORD",
            keycloak_admin_password(layout)?,
        ),
        ("OSSATURE_PULSAR_ADMIN_URL", http_url(PULSAR_WEB_PORT)),
        // A superuser's token, as a file: read it, never print it.
        (
            "OSSATURE_PULSAR_TOKEN_FILE",
            path(pulsar_auth::admin_token_file(layout)),
        ),
        (
            "OSSATURE_PULSAR_SERVICE_URL",
            format!("pulsar://{LOOPBACK}:{PULSAR_BROKER_PORT}"),
        ),
        ("OSSATURE_OPENBAO_ADDR", http_url(OPENBAO_PORT)),
        // The operator's token holds only its policy; the root token is for admin and tests.
        ("OSSATURE_OPENBAO_TOKEN", operator),
        ("OSSATURE_OPENBAO_ROOT_TOKEN", root),
        // Where ServiceAccounts log in: `auth/<path>/login`, roles at `auth/<path>/role/`.
        (
            "OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH",
            kubernetes_auth::AUTH_PATH.to_string(),
        ),
        (
            "OSSATURE_ACME_DIRECTORY",
            format!("{}/dir", https_url(PEBBLE_PORT)),
        ),
        ("OSSATURE_ACME_CA_BUNDLE", path(pki.ca_cert())),
        (
            "OSSATURE_ACME_ROOTS_URL",
            format!("{}/roots/0", https_url(PEBBLE_MANAGEMENT_PORT)),
        ),
        (
            "OSSATURE_ACME_CHALLENGE_ADMIN_URL",
            http_url(CHALLTESTSRV_MANAGEMENT_PORT),
        ),
        // Answers the TXT records that prove tenants' custom domains.
        (
            "OSSATURE_DNS_SERVER",
            format!("{LOOPBACK}:{CHALLTESTSRV_DNS_PORT}"),
        ),
        ("OSSATURE_EDGE_ADMIN_URL", http_url(CADDY_ADMIN_PORT)),
        ("OSSATURE_PROMETHEUS_URL", http_url(PROMETHEUS_PORT)),
        (
            "OSSATURE_PROMETHEUS_OPERATOR_TARGETS",
            path(crate::prometheus::targets_dir(
                layout,
                crate::prometheus::Job::Operator,
            )),
        ),
        (
            "OSSATURE_PROMETHEUS_CONTROL_PLANE_TARGETS",
            path(crate::prometheus::targets_dir(
                layout,
                crate::prometheus::Job::ControlPlane,
            )),
        ),
        (
            "OSSATURE_EDGE_HTTPS_ADDR",
            format!("{LOOPBACK}:{EDGE_HTTPS_PORT}"),
        ),
        // Where the edge's key files go: read by Caddy, by nobody else.
        (
            "OSSATURE_EDGE_CERT_DIR",
            path(layout.state.join("edge-certs")),
        ),
    ]))
}

/// Quotes a value for POSIX shells.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@%+=,".contains(c))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pulsar_sessions_are_released() {
        assert!(is_pulsar_key(b"/ledgers/available/127.0.0.1:40375"));
        assert!(is_pulsar_key(b"/loadbalance/brokers/127.0.0.1:18080"));
        assert!(is_pulsar_key(
            b"/namespace/public/default/0x00000000_0xffffffff"
        ));
        assert!(!is_pulsar_key(
            b"/registry/leases/kube-node-lease/kwok-node-0"
        ));
        assert!(!is_pulsar_key(b"/registry/masterleases/127.0.0.1"));
    }

    #[test]
    fn the_operator_policy_reaches_only_tenant_paths_token_signing_and_its_own_token() {
        let paths: Vec<&str> = OPERATOR_POLICY_HCL
            .lines()
            .filter_map(|l| l.strip_prefix("path \"")?.split('"').next())
            .collect();
        assert_eq!(
            paths,
            [
                "sys/mounts/tenants/*",
                "sys/policies/acl/tenant-*",
                "sys/policy/tenant-*",
                "auth/kubernetes/role/tenant-*",
                "tenants/*",
                "pulsar-tokens/sign/pulsar",
                "auth/token/lookup-self",
                "auth/token/renew-self",
            ]
        );
        assert!(!OPERATOR_POLICY_HCL.contains("sudo"));
    }

    #[test]
    fn shell_quoting_keeps_plain_values_and_protects_the_rest() {
        assert_eq!(
            shell_quote("http://127.0.0.1:8180"),
            "http://127.0.0.1:8180"
        );
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
