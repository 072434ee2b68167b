//! Shared plumbing for Ossature's end-to-end tests.
//!
//! Every test talks to the real local stack that `ossature-bootstrap` brings up;
//! this crate only turns its `env` contract into typed values and offers the
//! small helpers (unique names, bounded polling, HTTP clients) the tests share.

pub mod chart;
pub mod prometheus;
pub mod proxy;
pub mod pulsar_client;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::OnceCell;

pub use proxy::TcpProxy;

/// Keycloak master-realm admin access.
#[derive(Debug, Clone)]
pub struct Keycloak {
    pub url: String,
    pub admin_user: String,
    pub admin_password: String,
}

/// Pulsar standalone endpoints.
#[derive(Debug, Clone)]
pub struct Pulsar {
    pub admin_url: String,
    pub service_url: String,
    /// A superuser's token (the broker lets no one in without one).
    pub token: String,
}

impl Pulsar {
    /// `Authorization` with the superuser's token, marked sensitive.
    pub fn authorization(&self) -> reqwest::header::HeaderValue {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token))
            .expect("a token is ASCII");
        value.set_sensitive(true);
        value
    }

    /// A client of the admin API that sends the superuser's token.
    pub fn admin_client(&self) -> Result<reqwest::Client> {
        install_crypto_provider();
        reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .tls_certs_only([])
            .default_headers(reqwest::header::HeaderMap::from_iter([(
                reqwest::header::AUTHORIZATION,
                self.authorization(),
            )]))
            .build()
            .context("building the Pulsar admin client")
    }
}

/// An initialised and unsealed OpenBao server with its root token.
#[derive(Debug, Clone)]
pub struct OpenBao {
    pub addr: String,
    /// The root token: these tests mount engines outside the operator's `tenants/`.
    pub token: String,
}

/// Pebble (ACME CA) and pebble-challtestsrv endpoints.
#[derive(Debug, Clone)]
pub struct Acme {
    pub directory: String,
    /// PEM of the CA behind Pebble's own HTTPS endpoints (not the issuing root).
    pub ca_bundle: PathBuf,
    pub roots_url: String,
    pub challenge_admin_url: String,
}

/// Caddy, the edge proxy.
#[derive(Debug, Clone)]
pub struct Edge {
    pub admin_url: String,
    pub https_addr: SocketAddr,
}

/// The running stack, as described by `ossature-dev env`.
#[derive(Debug, Clone)]
pub struct Stack {
    pub kubeconfig: PathBuf,
    pub keycloak: Keycloak,
    pub pulsar: Pulsar,
    pub openbao: OpenBao,
    pub acme: Acme,
    pub edge: Edge,
}

// The error is kept as text so a broken stack fails every test fast instead of
// each test re-running a minutes-long bring-up.
static STACK: OnceCell<Result<Stack, String>> = OnceCell::const_new();

impl Stack {
    /// Brings the stack up once per test binary and returns its endpoints.
    pub async fn get() -> Result<&'static Stack> {
        install_crypto_provider();
        let stack = STACK
            .get_or_init(|| async {
                let env = ossature_bootstrap::ensure_up()
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                Stack::from_env(&env).map_err(|e| format!("{e:#}"))
            })
            .await;
        stack
            .as_ref()
            .map_err(|e| anyhow!("bringing the stack up failed: {e}"))
    }

    /// Parses the env contract, rejecting anything missing.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Stack> {
        let var = |name: &str| -> Result<String> {
            env.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .with_context(|| format!("stack env lacks {name}"))
        };
        let https_addr = var("OSSATURE_EDGE_HTTPS_ADDR")?;
        Ok(Stack {
            kubeconfig: var("KUBECONFIG")?.into(),
            keycloak: Keycloak {
                url: trim_slash(var("OSSATURE_KEYCLOAK_URL")?),
                admin_user: var("OSSATURE_KEYCLOAK_ADMIN_USER")?,
                admin_password: var("OSSATURE_KEYCLOAK_ADMIN_PASSWORD")?,
            },
            pulsar: Pulsar {
                admin_url: trim_slash(var("OSSATURE_PULSAR_ADMIN_URL")?),
                service_url: var("OSSATURE_PULSAR_SERVICE_URL")?,
                token: std::fs::read_to_string(var("OSSATURE_PULSAR_TOKEN_FILE")?)
                    .context("reading the stack's Pulsar token")?
                    .trim()
                    .to_string(),
            },
            openbao: OpenBao {
                addr: trim_slash(var("OSSATURE_OPENBAO_ADDR")?),
                token: var("OSSATURE_OPENBAO_ROOT_TOKEN")?,
            },
            acme: Acme {
                directory: var("OSSATURE_ACME_DIRECTORY")?,
                ca_bundle: var("OSSATURE_ACME_CA_BUNDLE")?.into(),
                roots_url: var("OSSATURE_ACME_ROOTS_URL")?,
                challenge_admin_url: trim_slash(var("OSSATURE_ACME_CHALLENGE_ADMIN_URL")?),
            },
            edge: Edge {
                admin_url: trim_slash(var("OSSATURE_EDGE_ADMIN_URL")?),
                https_addr: https_addr
                    .parse()
                    .with_context(|| format!("OSSATURE_EDGE_HTTPS_ADDR {https_addr:?}"))?,
            },
        })
    }
}

impl Stack {
    /// A Kubernetes client with the admin identity of `KUBECONFIG`.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }
}

fn trim_slash(url: String) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Every object of kind `K` in these namespaces.
pub async fn list_in<K>(client: &kube::Client, namespaces: &[&str]) -> kube::Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let mut all = Vec::new();
    for namespace in namespaces {
        let api: kube::Api<K> = kube::Api::namespaced(client.clone(), namespace);
        all.extend(api.list(&Default::default()).await?.items);
    }
    Ok(all)
}

/// Installs ring as rustls' process-wide provider; reqwest is built without one.
pub fn install_crypto_provider() {
    // Losing the race to another test is fine: the provider is the same.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A name unique across parallel and repeated runs: `prefix-` plus 12 base-36
/// characters, lowercase so it is valid for DNS, Kubernetes and every backend.
pub fn unique(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n: u128 = rand::random();
    let mut suffix = String::with_capacity(12);
    for _ in 0..12 {
        suffix.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

/// Label that limits an operator to one test's objects (`--selector`), so
/// tests run side by side without managing each other's tenants.
pub const TEST_LABEL: &str = "ossature.dev/test";

/// Flags of an operator a test runs on the local stack: no edge, retries
/// within 5 s, metrics on a free port, and only the objects labelled
/// `TEST_LABEL=<selector>`.
pub fn operator_flags(selector: &str) -> Vec<String> {
    let flags = ["--no-edge", "--max-backoff-seconds", "5"];
    let metrics = ["--metrics-addr", "127.0.0.1:0"];
    flags
        .into_iter()
        .chain(metrics)
        .map(String::from)
        .chain([format!("--selector={TEST_LABEL}={selector}")])
        .collect()
}

/// One observation of a condition being polled.
pub enum Check<T> {
    Done(T),
    /// Not there yet; the text says what was seen, for the timeout message.
    Pending(String),
}

/// Polls `probe` every `interval` until it is done, fails, or `timeout` passes.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        // A single hung probe must not outlive the deadline either.
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match tokio::time::timeout(left, probe()).await {
            Ok(result) => match result.with_context(|| format!("while waiting for {what}"))? {
                Check::Done(value) => return Ok(value),
                Check::Pending(seen) => seen,
            },
            Err(_) => "probe did not answer".to_owned(),
        };
        if Instant::now() + interval > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Returns the test body's outcome, but never hides a failed cleanup.
pub fn with_cleanup(body: Result<()>, cleanup: Result<()>) -> Result<()> {
    match (body, cleanup) {
        (Ok(()), cleanup) => cleanup.context("cleanup failed"),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(c)) => Err(e.context(format!("cleanup failed too: {c:#}"))),
    }
}

/// Per-request ceiling so a wedged server fails a test instead of hanging it.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Client for the stack's plain-HTTP endpoints.
pub fn http_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    // No trust roots at all: these endpoints are plain HTTP, so any HTTPS
    // redirect would be a misconfiguration we want to see fail.
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .tls_certs_only([])
        .build()
        .context("building HTTP client")
}

/// Client that trusts only the given PEM certificates.
pub fn https_client_trusting(pem: &[u8]) -> Result<reqwest::ClientBuilder> {
    install_crypto_provider();
    let roots = reqwest::Certificate::from_pem_bundle(pem).context("parsing trust PEM")?;
    if roots.is_empty() {
        bail!("trust PEM holds no certificate");
    }
    Ok(reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .tls_certs_only(roots))
}

/// Fails with the response body when the status is not a success.
pub async fn expect_success(response: reqwest::Response, what: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("{what}: HTTP {status}: {body}")
}
