//! Benchmarks of the operator on the local stack, each printing figures.
//!
//! Without a subcommand: onboards N tenants at once and prints how close the
//! operator comes to the backends' own limit: time to Ready and throughput,
//! optionally beside a baseline of the same backend calls made directly;
//! backend writes per tenant, writes during a steady period, the operator's
//! memory and CPU, Keycloak's memory, time to delete all and what deletion
//! left behind in each backend.
//!
//! `certificates`: N Certificates of one tenant, from its CA or an ACME
//! issuer, optionally beside cert-manager issuing the same from a CA
//! (see [`certificates`]). `edge`: N tenant hosts at the edge, and how long
//! one tenant's change takes to reach Caddy (see [`edge`]). `messaging`:
//! Topics with schemas and services with grants across tenants, against a
//! baseline of the same calls made directly (see [`messaging`]).
//! `decisions`: the control plane's authorization decisions, in process,
//! with 10,000 role bindings (see [`decisions`]); it needs no stack.
//! `api`: the control plane's API under load, with 10,000 tenants in its
//! watch cache (see [`api`]).
//!
//! Build both binaries first: `cargo build --release -p ossature-operator -p ossature-bench`,
//! then `target/release/ossature-bench --tenants 50 --baseline`.

mod api;
mod certificates;
mod decisions;
mod edge;
mod messaging;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Display};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use ossature_bootstrap::components::Component;
use ossature_bootstrap::{Layout, stack};
use ossature_crds::{Quotas, Tenant};
use ossature_model::TenantNames;
use ossature_model::certificates::host::HOST;
use ossature_model::certificates::{lifetime, new_key, record_path, request_for};
use ossature_model::objects::namespace_objects;
use ossature_model::platform::DEFAULT_ROOT_DOMAIN;
use ossature_model::secrets::tenant_policy;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Label carrying the run id on every Tenant the bench creates; the
/// operator it starts manages only those.
const RUN_LABEL: &str = "ossature.dev/bench";
/// Field manager of the baseline's server-side applies.
const FIELD_MANAGER: &str = "ossature-bench";
/// Realm holding the baseline's organizations and clients.
const BASELINE_REALM: &str = "ossature-bench-baseline";
/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;
/// Per-call ceiling of the bench's own backend calls; generous, since the
/// backends are loaded on purpose.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleted namespaces get to finish terminating before they count
/// as left behind.
const NAMESPACE_GRACE: Duration = Duration::from_secs(300);
const OPERATOR_START_TIMEOUT: Duration = Duration::from_secs(120);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Benchmarks of the operator on the local stack (brought up if needed).
///
/// Without a subcommand: onboards N tenants at once and prints time to
/// Ready, throughput (against a direct baseline with --baseline), writes
/// per tenant, steady-state calls, operator and Keycloak resources, deletion
/// time and what deletion left behind. Exits non-zero when an unchanged
/// fleet caused writes or anything was left behind.
#[derive(Parser, Debug)]
#[command(name = "ossature-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Bench>,
    #[command(flatten)]
    tenancy: Args,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// N Certificates of one tenant until all are Ready: time, p50/p99,
    /// the operator's peak memory and apiserver writes per certificate;
    /// with --compare-cert-manager, cert-manager issuing as many from a CA
    /// in the same run.
    Certificates(certificates::CertificateArgs),
    /// N tenants served at the edge (Caddy): how long one tenant's change
    /// takes to reach Caddy, and Caddy's memory.
    Edge(edge::EdgeArgs),
    /// Topics with Avro schemas and ServiceIdentities with grants, across
    /// tenants made Ready first: time until all are Ready (p50/p99 per
    /// kind, and in all) against the same backend calls made directly,
    /// writes per object, writes in a steady period (0, each one named),
    /// the operator's memory; then the time to delete them all and what is
    /// left of them in any backend (nothing).
    Messaging(messaging::MessagingArgs),
    /// The control plane's authorization decisions, in process and without
    /// the stack: role bindings across tenants and scope trees, the data
    /// load time, then p50/p99/max per decision (wall and CPU time) on one
    /// thread and on several at once.
    Decisions(decisions::DecisionArgs),
    /// The control plane's API under load, in process on the stack with
    /// no operator: 10,000 tenants in its watch cache, then onboardTenant
    /// commands and tenantStatus queries with a platform operator's token,
    /// p50/p90/p99/max and throughput against the goals, and the
    /// process's memory. Removes all it made, also on failure and Ctrl-C.
    Api(api::ApiArgs),
}

/// The tenancy benchmark (no subcommand).
#[derive(clap::Args, Debug)]
struct Args {
    /// Tenants created at once, 1 to 2000.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=2000))]
    tenants: u32,
    /// Length of the steady-state period, in seconds, during which an unchanged
    /// fleet must cause no writes.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Resync interval given to the operator, so the steady period holds several reconciles of each tenant.
    #[arg(long, default_value_t = 15)]
    resync_seconds: u64,
    /// Tenants provisioned at once, by the operator (its --concurrency) and by the baseline.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Longest wait for every tenant to become Ready, and for every tenant to be deleted.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// How each tenant is isolated in Keycloak (sets spec.identity.isolation):
    /// an organization in a shared realm, or a realm of its own.
    #[arg(long, value_enum, default_value_t = Isolation::Organization)]
    isolation: Isolation,
    /// Before the operator run, make the backend calls that provisioning the
    /// tenants takes directly, at the same concurrency, and print the
    /// operator's throughput as a ratio of that baseline.
    #[arg(long)]
    baseline: bool,
    /// Passed to the operator: most dedicated realms it gives out (raise it
    /// above --tenants for a `--isolation realm` run).
    #[arg(long, default_value_t = 100)]
    max_dedicated_realms: u64,
    /// Run the operator without the edge (`--no-edge`): no host, host
    /// certificate or route per tenant, as the tenancy part alone.
    #[arg(long)]
    without_edge: bool,
}

impl Args {
    fn concurrency(&self) -> usize {
        usize::from(self.concurrency)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Isolation {
    /// An organization per tenant in a realm shared by type and residency.
    Organization,
    /// A realm per tenant.
    Realm,
}

impl Isolation {
    fn spec_value(self) -> &'static str {
        match self {
            Isolation::Organization => "Organization",
            Isolation::Realm => "Realm",
        }
    }
}

impl Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Organization => "organization",
            Isolation::Realm => "realm",
        })
    }
}

/// The i-th tenant's type and residency, as the bench assigns them.
fn tenant_type(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "Business"
    } else {
        "Consumer"
    }
}

fn residency(i: usize) -> &'static str {
    if i.is_multiple_of(3) { "us" } else { "eu" }
}

// ---------------------------------------------------------------------------
// Direct backend access (baseline and left-behind checks)

/// Admin clients of Keycloak, Pulsar and OpenBao, from the stack's `env` contract.
struct Backends {
    http: reqwest::Client,
    keycloak: String,
    admin_user: String,
    admin_password: String,
    /// Admin token and when to renew it.
    token: Mutex<Option<(String, Instant)>>,
    pulsar: String,
    /// The stack's Pulsar superuser token.
    pulsar_token: String,
    openbao: String,
    openbao_token: String,
}

impl Backends {
    fn from_env(env: &BTreeMap<String, String>) -> Result<Self> {
        let var = |name: &str| {
            env.get(name)
                .map(|v| v.trim_end_matches('/').to_string())
                .with_context(|| format!("the stack's environment has no {name}"))
        };
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .context("building the HTTP client")?,
            keycloak: var("OSSATURE_KEYCLOAK_URL")?,
            admin_user: var("OSSATURE_KEYCLOAK_ADMIN_USER")?,
            admin_password: var("OSSATURE_KEYCLOAK_ADMIN_PASSWORD")?,
            token: Mutex::new(None),
            pulsar: var("OSSATURE_PULSAR_ADMIN_URL")?,
            pulsar_token: std::fs::read_to_string(var("OSSATURE_PULSAR_TOKEN_FILE")?)
                .context("reading the stack's Pulsar token")?
                .trim()
                .to_string(),
            openbao: var("OSSATURE_OPENBAO_ADDR")?,
            // Root: the baseline writes and the left-behind check lists every mount.
            openbao_token: var("OSSATURE_OPENBAO_ROOT_TOKEN")?,
        })
    }

    /// A master-realm admin token, reused until half its lifetime has passed.
    async fn keycloak_token(&self) -> Result<String> {
        let mut cached = self.token.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let request = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.keycloak
            ))
            .form(&[
                ("client_id", "admin-cli"),
                ("grant_type", "password"),
                ("username", self.admin_user.as_str()),
                ("password", self.admin_password.as_str()),
            ]);
        let answer: Value = send(request, "issue a Keycloak admin token", &[])
            .await?
            .json()
            .await
            .context("reading Keycloak's token answer")?;
        let token = answer["access_token"]
            .as_str()
            .context("Keycloak's token answer has no access_token")?
            .to_string();
        let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(60));
        *cached = Some((token.clone(), Instant::now() + lifetime / 2));
        Ok(token)
    }

    /// A request to `/admin/realms{path}`, authenticated.
    async fn keycloak(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        let url = format!("{}/admin/realms{path}", self.keycloak);
        Ok(self
            .http
            .request(method, url)
            .bearer_auth(self.keycloak_token().await?))
    }

    fn pulsar_tenant(&self, method: Method, tenant: &str) -> RequestBuilder {
        self.pulsar(method, &format!("tenants/{tenant}"))
    }

    /// A request to Pulsar's `/admin/v2/{path}`, as its superuser.
    fn pulsar(&self, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/admin/v2/{path}", self.pulsar);
        self.http
            .request(method, url)
            .bearer_auth(&self.pulsar_token)
    }

    /// A request to `/v1/{path}`, authenticated.
    fn openbao(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/v1/{path}", self.openbao))
            .header("X-Vault-Token", &self.openbao_token)
    }
}

/// Sends a request; a 2xx answer or one of `also` is returned, anything else
/// is an error naming `action`.
async fn send(request: RequestBuilder, action: &str, also: &[StatusCode]) -> Result<Response> {
    let response = request
        .send()
        .await
        .with_context(|| format!("{action}: no answer"))?;
    let status = response.status();
    if status.is_success() || also.contains(&status) {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!(
        "{action}: HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    );
}

/// The JSON answer of a GET, or `None` when it finds nothing (404).
async fn found_json<T: serde::de::DeserializeOwned>(
    request: RequestBuilder,
    action: &str,
) -> Result<Option<T>> {
    let response = send(request, action, &[StatusCode::NOT_FOUND]).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let answer = response
        .json()
        .await
        .with_context(|| format!("{action}: unreadable answer"))?;
    Ok(Some(answer))
}

/// Whether a GET finds its object: 2xx yes, 404 no, anything else an error.
async fn found(request: RequestBuilder, action: &str) -> Result<bool> {
    let response = send(request, action, &[StatusCode::NOT_FOUND]).await?;
    Ok(response.status().is_success())
}

// ---------------------------------------------------------------------------
// Baseline: the same backend calls, made directly

struct BaselineFigures {
    tenants: usize,
    elapsed: Duration,
    /// Time each tenant took, sorted.
    times: Vec<Duration>,
    removed_in: Duration,
}

impl BaselineFigures {
    fn throughput(&self) -> f64 {
        self.tenants as f64 / self.elapsed.as_secs_f64()
    }
}

/// Provisions `--tenants` tenants directly, `--concurrency` at a time, then
/// removes all of it, whether provisioning succeeded or not.
async fn run_baseline(
    client: &kube::Client,
    backends: &Backends,
    args: &Args,
    run: &str,
) -> Result<BaselineFigures> {
    let names: Vec<String> = (0..args.tenants)
        .map(|i| format!("base-{run}-{i}"))
        .collect();
    if args.isolation == Isolation::Organization {
        create_baseline_realm(backends).await?;
    }
    let began = Instant::now();
    let provisioned: Vec<Result<Duration>> = stream::iter(&names)
        .map(|name| provision(client, backends, args, name))
        .buffer_unordered(args.concurrency())
        .collect()
        .await;
    let elapsed = began.elapsed();

    let removing = Instant::now();
    let removed = remove_baseline(client, backends, args, &names).await;
    let removed_in = removing.elapsed();
    // The namespace controller finishes before the operator run starts, so
    // the two do not share the apiserver; not counted in `removed_in`.
    let namespaces = names
        .iter()
        .map(|n| TenantNames::new(n).namespace)
        .collect();
    let (remaining, _) = namespaces_remaining(client, &namespaces, NAMESPACE_GRACE).await?;
    if remaining > 0 {
        eprintln!("warning: {remaining} baseline namespaces still terminating");
    }
    let mut times = provisioned.into_iter().collect::<Result<Vec<_>>>()?;
    removed?;
    times.sort();
    Ok(BaselineFigures {
        tenants: names.len(),
        elapsed,
        times,
        removed_in,
    })
}

async fn create_baseline_realm(backends: &Backends) -> Result<()> {
    let body = json!({"realm": BASELINE_REALM, "enabled": true, "organizationsEnabled": true});
    // One left by an interrupted run is reused: this run's names are new.
    send(
        backends.keycloak(Method::POST, "").await?.json(&body),
        &format!("create realm {BASELINE_REALM}"),
        &[StatusCode::CONFLICT],
    )
    .await?;
    Ok(())
}

/// Everything one tenant takes, the backends at once (its host
/// certificate once its CA and KV mount are there, as the operator signs
/// it with the edge on); returns how long it took.
async fn provision(
    client: &kube::Client,
    backends: &Backends,
    args: &Args,
    name: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let names = TenantNames::new(name);
    let secrets = async {
        tokio::try_join!(
            create_openbao_paths(backends, name),
            create_tenant_ca(backends, &names)
        )?;
        if !args.without_edge {
            sign_host(backends, &names).await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::try_join!(
        apply_namespace_objects(client, name),
        create_identity(backends, args.isolation, name),
        create_pulsar_tenant(backends, name),
        secrets,
    )
    .with_context(|| format!("baseline tenant {name}"))?;
    Ok(started.elapsed())
}

/// The tenant's own CA, as the operator makes it: a PKI mount, a root
/// generated inside OpenBao for the tenant's names only, and the role that
/// signs its leaves.
async fn create_tenant_ca(backends: &Backends, names: &TenantNames) -> Result<()> {
    let mount = &names.pki_mount;
    let body = json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}});
    let request = backends.openbao(Method::POST, &format!("sys/mounts/{mount}"));
    send(request.json(&body), &format!("mount {mount}"), &[]).await?;
    let host = names.host(DEFAULT_ROOT_DOMAIN);
    let root = json!({
        "common_name": format!("{} CA gen-1", names.tenant), "issuer_name": "gen-1",
        "key_name": "gen-1", "key_type": "ec", "key_bits": 256, "ttl": "87600h",
        "permitted_dns_domains": [host], "exclude_cn_from_sans": true,
    });
    let path = format!("{mount}/issuers/generate/root/internal");
    send(
        backends.openbao(Method::POST, &path).json(&root),
        &path,
        &[],
    )
    .await?;
    let role = json!({
        "issuer_ref": "default", "allowed_domains": [host], "allow_bare_domains": true,
        "allow_subdomains": true, "server_flag": true, "client_flag": true, "key_type": "any",
        "use_csr_common_name": false, "use_csr_sans": false, "max_ttl": "2160h",
    });
    let path = format!("{mount}/roles/leaf");
    send(
        backends.openbao(Method::POST, &path).json(&role),
        &path,
        &[],
    )
    .await?;
    Ok(())
}

/// The host certificate, as the operator issues it: the key recorded
/// first, signed by the tenant's CA, then recorded with its certificate.
async fn sign_host(backends: &Backends, names: &TenantNames) -> Result<()> {
    let host = names.host(DEFAULT_ROOT_DOMAIN);
    let spec = ossature_crds::CertificateSpec {
        dns_names: vec![host.clone()],
        uris: Vec::new(),
        usages: vec![ossature_crds::Usage::Server],
        lifetime: None,
        renew_before: None,
        key_algorithm: ossature_crds::KeyAlgorithm::EcdsaP256,
        secret_name: None,
        deletion_policy: Default::default(),
        issuer: ossature_crds::IssuerRef {
            tenant_ca: Some(ossature_crds::TenantCaRef {}),
            acme: None,
        },
    };
    let key = new_key(&spec)?;
    let record = format!(
        "{}/data/{}",
        names.kv_mount,
        record_path(&names.namespace, HOST)
    );
    // A fresh KV v2 mount sets itself up for a moment: asked again, as
    // the operator does.
    let put = |data: Value| {
        let record = record.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let request = backends
                    .openbao(Method::POST, &record)
                    .json(&json!({"data": data}));
                match send(request, &record, &[]).await {
                    Err(e) if format!("{e}").contains("Upgrading") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        }
    };
    put(json!({"key": key})).await?;
    let sign = json!({
        "csr": request_for(&spec, &key)?, "common_name": host,
        "ttl": format!("{}s", lifetime(&spec).as_secs()), "format": "pem",
    });
    let path = format!("{}/issuer/gen-1/sign/leaf", names.pki_mount);
    let signed: Value = send(
        backends.openbao(Method::POST, &path).json(&sign),
        &path,
        &[],
    )
    .await?
    .json()
    .await
    .with_context(|| format!("{path}: unreadable answer"))?;
    put(json!({"key": key, "certificate": signed["data"]["certificate"]})).await?;
    Ok(())
}

async fn apply_namespace_objects(client: &kube::Client, tenant: &str) -> Result<()> {
    let names = TenantNames::new(tenant);
    let objects = namespace_objects(&names.namespace, tenant, None, &Quotas::default());
    apply(&Api::all(client.clone()), &objects.namespace).await?;
    // The rest lives in the namespace, so only it comes first.
    let quotas = Api::namespaced(client.clone(), &names.namespace);
    let limits = Api::namespaced(client.clone(), &names.namespace);
    let policies = Api::namespaced(client.clone(), &names.namespace);
    tokio::try_join!(
        apply(&quotas, &objects.quota),
        apply(&limits, &objects.limits),
        futures::future::try_join_all(objects.policies.iter().map(|p| apply(&policies, p))),
    )?;
    Ok(())
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Debug,
{
    let name = object
        .meta()
        .name
        .as_deref()
        .context("a desired object has a name")?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("server-side apply of {} {name}", K::kind(&())))?;
    Ok(())
}

async fn create_identity(backends: &Backends, isolation: Isolation, name: &str) -> Result<()> {
    match isolation {
        Isolation::Realm => {
            let body = json!({"realm": name, "enabled": true});
            let request = backends.keycloak(Method::POST, "").await?.json(&body);
            send(request, &format!("create realm {name}"), &[]).await?;
        }
        Isolation::Organization => {
            let organization =
                json!({"name": name, "alias": name, "enabled": true, "description": name});
            let path = format!("/{BASELINE_REALM}/organizations");
            let request = backends.keycloak(Method::POST, &path).await?;
            send(
                request.json(&organization),
                &format!("create organization {name}"),
                &[],
            )
            .await?;
            let client = json!({
                "clientId": name, "publicClient": true, "directAccessGrantsEnabled": true,
                "attributes": {"access.token.lifespan": "300"},
            });
            let path = format!("/{BASELINE_REALM}/clients");
            let request = backends.keycloak(Method::POST, &path).await?;
            send(request.json(&client), &format!("create client {name}"), &[]).await?;
        }
    }
    Ok(())
}

async fn create_pulsar_tenant(backends: &Backends, name: &str) -> Result<()> {
    let body = json!({"adminRoles": [], "allowedClusters": ["standalone"]});
    let request = backends.pulsar_tenant(Method::PUT, name).json(&body);
    send(request, &format!("create Pulsar tenant {name}"), &[]).await?;
    Ok(())
}

async fn create_openbao_paths(backends: &Backends, name: &str) -> Result<()> {
    let names = TenantNames::new(name);
    let kv = async {
        let body = json!({"type": "kv", "options": {"version": "2"}});
        let request = backends.openbao(Method::POST, &format!("sys/mounts/{}", names.kv_mount));
        send(
            request.json(&body),
            &format!("mount {}", names.kv_mount),
            &[],
        )
        .await
    };
    // The key needs its mount.
    let transit = async {
        let request = backends
            .openbao(Method::POST, &format!("sys/mounts/{}", names.transit_mount))
            .json(&json!({"type": "transit"}));
        send(request, &format!("mount {}", names.transit_mount), &[]).await?;
        let path = format!("{}/keys/{}", names.transit_mount, names.transit_key);
        let request = backends
            .openbao(Method::POST, &path)
            .json(&json!({"type": "aes256-gcm96"}));
        send(request, &format!("create transit key {path}"), &[]).await
    };
    tokio::try_join!(kv, transit)?;
    let policy = tenant_policy(&names.kv_mount, &names.transit_mount, &names.transit_key);
    let request = backends
        .openbao(Method::PUT, &format!("sys/policies/acl/{}", names.policy))
        .json(&json!({"policy": policy}));
    send(request, &format!("write policy {}", names.policy), &[]).await?;
    Ok(())
}

/// Removes what the baseline created; objects already gone are fine.
async fn remove_baseline(
    client: &kube::Client,
    backends: &Backends,
    args: &Args,
    names: &[String],
) -> Result<()> {
    let removed: Vec<Result<()>> = stream::iter(names)
        .map(|name| remove_one(client, backends, args.isolation, name))
        .buffer_unordered(args.concurrency())
        .collect()
        .await;
    if args.isolation == Isolation::Organization {
        // Its organizations and clients go with it.
        let request = backends
            .keycloak(Method::DELETE, &format!("/{BASELINE_REALM}"))
            .await?;
        send(
            request,
            &format!("delete realm {BASELINE_REALM}"),
            &[StatusCode::NOT_FOUND],
        )
        .await?;
    }
    removed.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

async fn remove_one(
    client: &kube::Client,
    backends: &Backends,
    isolation: Isolation,
    name: &str,
) -> Result<()> {
    let names = TenantNames::new(name);
    let gone = [StatusCode::NOT_FOUND];
    let namespace = async {
        let api: Api<Namespace> = Api::all(client.clone());
        match api
            .delete(&names.namespace, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("delete namespace {}", names.namespace)),
        }
    };
    let realm = async {
        if isolation == Isolation::Realm {
            let request = backends
                .keycloak(Method::DELETE, &format!("/{name}"))
                .await?;
            send(request, &format!("delete realm {name}"), &gone).await?;
        }
        Ok(())
    };
    let pulsar = async {
        let request = backends.pulsar_tenant(Method::DELETE, name);
        send(request, &format!("delete Pulsar tenant {name}"), &gone).await
    };
    let openbao = async {
        let policy = format!("sys/policies/acl/{}", names.policy);
        send(backends.openbao(Method::DELETE, &policy), &policy, &gone).await?;
        for mount in [&names.pki_mount, &names.transit_mount, &names.kv_mount] {
            let path = format!("sys/mounts/{mount}");
            send(backends.openbao(Method::DELETE, &path), &path, &gone).await?;
        }
        Ok(())
    };
    tokio::try_join!(namespace, realm, pulsar, openbao)
        .with_context(|| format!("removing baseline tenant {name}"))?;
    Ok(())
}

/// Waits up to `limit` for the named namespaces to be gone (terminating ones
/// are emptied first) and returns how many remain.
/// Namespaces of `names` still present after up to `limit`: (left behind,
/// terminating). A terminating one was deleted and Kubernetes' namespace
/// controller is still emptying it; one not terminating was left behind.
async fn namespaces_remaining(
    client: &kube::Client,
    names: &BTreeSet<String>,
    limit: Duration,
) -> Result<(usize, usize)> {
    let api: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    loop {
        let present: Vec<bool> = api
            .list_metadata(&ListParams::default())
            .await
            .context("listing namespaces")?
            .items
            .iter()
            .filter(|ns| ns.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .map(|ns| ns.metadata.deletion_timestamp.is_some())
            .collect();
        if present.is_empty() || started.elapsed() >= limit {
            let terminating = present.iter().filter(|t| **t).count();
            return Ok((present.len() - terminating, terminating));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------------------
// The operator process

/// The operator binary, limited to this run's tenants; killed when dropped.
struct Operator {
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a child process: SIGTERM first (the operator hands over the
/// shared-realms Lease), SIGKILL after 5 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A free local port, for a child's metrics.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free local port")
}

/// What the bench's operator is started with.
struct OperatorFlags {
    resync_seconds: u64,
    concurrency: u16,
    max_dedicated_realms: u64,
    edge: bool,
}

impl Default for OperatorFlags {
    /// The operator's own defaults, with the edge.
    fn default() -> Self {
        Self {
            resync_seconds: 300,
            concurrency: 16,
            max_dedicated_realms: 100,
            edge: true,
        }
    }
}

impl Args {
    fn operator_flags(&self) -> OperatorFlags {
        OperatorFlags {
            resync_seconds: self.resync_seconds,
            concurrency: self.concurrency,
            max_dedicated_realms: self.max_dedicated_realms,
            edge: !self.without_edge,
        }
    }
}

impl Operator {
    fn start(flags: &OperatorFlags, run: &str) -> Result<Self> {
        let binary = std::env::current_exe()
            .context("locating the benchmark binary")?
            .parent()
            .context("the benchmark binary has a directory")?
            .join("ossature-operator");
        if !binary.exists() {
            bail!(
                "{} is missing; build it with `cargo build --release -p ossature-operator`",
                binary.display()
            );
        }
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("ossature-bench-operator-{run}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&binary)
            .args(["--local-stack", "--log-format", "json"])
            .arg(format!("--selector={RUN_LABEL}={run}"))
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--resync-seconds={}", flags.resync_seconds))
            .arg(format!("--concurrency={}", flags.concurrency))
            .arg(format!(
                "--max-dedicated-realms={}",
                flags.max_dedicated_realms
            ))
            .args((!flags.edge).then_some("--no-edge"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("sharing the operator's log")?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/metrics` answers; fails early if the operator exits.
    async fn wait_serving(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().context("polling the operator")? {
                bail!("the operator exited ({status}); see {}", self.log.display());
            }
            if calls(&self.metrics).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > OPERATOR_START_TIMEOUT {
                bail!("the operator did not start; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Backend calls from the operator's `/metrics`: (backend, verb) -> count.
type Calls = BTreeMap<(String, String), u64>;

async fn calls(url: &str) -> Result<Calls> {
    Ok(samples(url, "ossature_backend_calls_total")
        .await?
        .into_iter()
        .map(|(line, value)| ((label(&line, "backend"), label(&line, "verb")), value))
        .collect())
}

/// Reconciles run, by controller, from the operator's `/metrics`.
async fn reconciles(url: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (line, value) in samples(url, "controller_runtime_reconcile_total").await? {
        *out.entry(label(&line, "controller")).or_default() += value;
    }
    Ok(out)
}

/// The samples of one metric family at `url`: each line with its value.
async fn samples(url: &str, family: &str) -> Result<Vec<(String, u64)>> {
    Ok(samples_f64(url, family)
        .await?
        .into_iter()
        .map(|(line, value)| (line, value as u64))
        .collect())
}

/// Like [`samples`], for values that are not whole (a histogram's sum).
async fn samples_f64(url: &str, family: &str) -> Result<Vec<(String, f64)>> {
    let text = reqwest::get(url)
        .await
        .and_then(Response::error_for_status)
        .with_context(|| format!("reading {url}"))?
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    Ok(family_samples(&text, family))
}

/// The samples of one metric family in an exposition text.
fn family_samples(text: &str, family: &str) -> Vec<(String, f64)> {
    let prefix = format!("{family}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|line| {
            let value = line
                .rsplit(' ')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0.0);
            (line.to_string(), value)
        })
        .collect()
}

/// The value of label `name` in a sample line.
fn label(line: &str, name: &str) -> String {
    line.split(&format!("{name}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string()
}

/// Calls by backend, divided among `n` tenants.
fn per_tenant(calls: BTreeMap<String, u64>, n: f64) -> BTreeMap<String, f64> {
    calls
        .into_iter()
        .map(|(backend, c)| (backend, c as f64 / n))
        .collect()
}

/// Calls of one verb made between two readings, by backend.
fn delta(before: &Calls, after: &Calls, verb: &str) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|((_, v), _)| v == verb)
        .map(|(key, n)| {
            let earlier = before.get(key).copied().unwrap_or(0);
            (key.0.clone(), n.saturating_sub(earlier))
        })
        .collect()
}

/// Memory and CPU of a process, from /proc.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    peak_kib: u64,
    cpu: Duration,
}

fn usage(pid: u32) -> Result<Usage> {
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("no {field} in {status_path}"))
    };
    let stat_path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
    // The command name (field 2) may hold spaces; after it, field 3 is at
    // index 0, so utime (14) and stime (15) are at 11 and 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("unreadable {stat_path}"))?
        .1
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("unreadable {stat_path}"))
    };
    Ok(Usage {
        rss_kib: kib("VmRSS:")?,
        peak_kib: kib("VmHWM:")?,
        cpu: Duration::from_secs_f64((ticks(11)? + ticks(12)?) as f64 / CLOCK_TICKS),
    })
}

/// Keycloak's resident memory, as `ossature-dev status` reports it.
async fn keycloak_rss_kib() -> Result<u64> {
    Ok(component(Component::Keycloak).await?.rss_kib)
}

/// A component's row of `ossature-dev status`: its process and memory.
async fn component(which: Component) -> Result<stack::Row> {
    let layout = Layout::from_env()?;
    stack::status(&layout)
        .await
        .into_iter()
        .find(|row| row.component == which)
        .with_context(|| format!("the stack's status has no {which:?} row"))
}

// ---------------------------------------------------------------------------
// The operator run

struct FleetFigures {
    created: Duration,
    /// Time from the first creation to each tenant's Ready, sorted.
    times: Vec<Duration>,
    writes_per_tenant: BTreeMap<String, f64>,
    /// Reads until all were Ready: a reconcile that finds nothing to do still reads.
    reads_per_tenant: BTreeMap<String, f64>,
    steady_writes: BTreeMap<String, u64>,
    steady_reads: BTreeMap<String, u64>,
    at_ready: Usage,
    after_steady: Usage,
    keycloak_kib: u64,
}

impl FleetFigures {
    fn throughput(&self) -> f64 {
        let last = self.times.last().copied().unwrap_or_default();
        self.times.len() as f64 / last.as_secs_f64().max(f64::EPSILON)
    }

    fn steady_writes(&self) -> u64 {
        self.steady_writes.values().sum()
    }
}

fn tenant_object(name: &str, i: usize, run: &str, isolation: Isolation) -> Result<DynamicObject> {
    // Raw JSON, so fields the compiled Tenant type may not know yet still reach the apiserver.
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "type": tenant_type(i), "displayName": name, "residency": residency(i),
            "identity": {"isolation": isolation.spec_value()},
        },
    }))
    .context("building a Tenant")
}

/// Creates the tenants, waits until all are Ready, then watches a steady period.
async fn measure(
    client: &kube::Client,
    operator: &Operator,
    args: &Args,
    run: &str,
    names: &[String],
) -> Result<FleetFigures> {
    let before = calls(&operator.metrics).await?;
    let began = Instant::now();
    create_tenants(client, names, run, args.isolation, args.concurrency()).await?;
    let created = began.elapsed();

    let times = tenants_ready(client, run, names.len(), began, args.timeout()).await?;
    let after_ready = calls(&operator.metrics).await?;
    let at_ready = usage(operator.pid())?;

    // A short pause so reconciles triggered by the last status writes settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_start = calls(&operator.metrics).await?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_end = calls(&operator.metrics).await?;
    let after_steady = usage(operator.pid())?;

    let n = names.len() as f64;
    Ok(FleetFigures {
        created,
        times,
        writes_per_tenant: per_tenant(delta(&before, &after_ready, "write"), n),
        reads_per_tenant: per_tenant(delta(&before, &after_ready, "read"), n),
        steady_writes: delta(&steady_start, &steady_end, "write"),
        steady_reads: delta(&steady_start, &steady_end, "read"),
        at_ready,
        after_steady,
        keycloak_kib: keycloak_rss_kib().await?,
    })
}

/// Creates the tenants (`tenant_object`), `concurrency` at a time.
async fn create_tenants(
    client: &kube::Client,
    names: &[String],
    run: &str,
    isolation: Isolation,
    concurrency: usize,
) -> Result<()> {
    let dynamic: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<Tenant>(&()));
    stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let dynamic = &dynamic;
            async move {
                let tenant = tenant_object(name, i, run, isolation)?;
                dynamic
                    .create(&PostParams::default(), &tenant)
                    .await
                    .with_context(|| format!("creating tenant {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Whether an object's `status.conditions` hold `Ready=True` (Ossature's
/// kinds and cert-manager's alike).
fn is_ready(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// An object's key in the bench's maps: `namespace/name`, or the name of
/// a cluster-scoped one.
fn object_key(object: &DynamicObject) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Time from `began` until each of the run's `expected` tenants was Ready,
/// shortest first.
async fn tenants_ready(
    client: &kube::Client,
    run: &str,
    expected: usize,
    began: Instant,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let tenants: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<Tenant>(&()));
    let ready = wait_ready(
        &tenants,
        watcher::Config::default().labels(&format!("{RUN_LABEL}={run}")),
        expected,
        began,
        timeout,
        "tenants",
    )
    .await?;
    let mut times: Vec<Duration> = ready.into_values().map(|t| t - began).collect();
    times.sort();
    Ok(times)
}

/// Watches the objects of `api` that `config` selects until `expected` of
/// them are Ready; returns when each first was, by [`object_key`].
async fn wait_ready(
    api: &Api<DynamicObject>,
    config: watcher::Config,
    expected: usize,
    began: Instant,
    timeout: Duration,
    what: &str,
) -> Result<BTreeMap<String, Instant>> {
    use kube::runtime::WatchStreamExt;
    // A watch, not a poll: listing a thousand objects four times a second
    // would load the apiserver whose pace is being measured.
    let mut changes = std::pin::pin!(
        watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
    );
    let mut ready_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut next_progress = PROGRESS_EVERY;
    while ready_at.len() < expected {
        let left = timeout.saturating_sub(began.elapsed());
        let next = tokio::time::timeout(left.min(PROGRESS_EVERY), changes.next()).await;
        if began.elapsed() > next_progress {
            eprintln!(
                "{} of {expected} {what} Ready after {:.0}s",
                ready_at.len(),
                began.elapsed().as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        let object = match next {
            Err(_) if began.elapsed() >= timeout => bail!(
                "{} of {expected} {what} Ready after {}s",
                ready_at.len(),
                timeout.as_secs()
            ),
            Err(_) => continue,
            Ok(None) => bail!("the watch of {what} ended"),
            // The watcher lists again after an error (e.g. 410 Gone) and backs off.
            Ok(Some(Err(e))) => {
                eprintln!("warning: watching {what}: {e}");
                continue;
            }
            Ok(Some(Ok(o))) => o,
        };
        if is_ready(&object) {
            ready_at
                .entry(object_key(&object))
                .or_insert_with(Instant::now);
        }
    }
    Ok(ready_at)
}

/// Deletes the run's tenants and waits until the operator has let them go.
async fn delete_all(
    client: &kube::Client,
    run: &str,
    names: &[String],
    concurrency: usize,
    timeout: Duration,
) -> Result<Duration> {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let deleting = Instant::now();
    stream::iter(names)
        .map(|name| {
            let tenants = &tenants;
            async move {
                match tenants.delete(name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("deleting tenant {name}")),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let selector = ListParams::default().labels(&format!("{RUN_LABEL}={run}"));
    while !tenants
        .list_metadata(&selector)
        .await
        .context("listing tenants")?
        .items
        .is_empty()
    {
        if deleting.elapsed() > timeout {
            bail!("tenants still present after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(deleting.elapsed())
}

// ---------------------------------------------------------------------------
// What deletion left behind

#[derive(Default)]
struct Leftovers {
    namespaces: usize,
    /// Deleted, still being emptied by Kubernetes: not counted as left.
    terminating: usize,
    keycloak: usize,
    pulsar: usize,
    openbao: usize,
}

impl Leftovers {
    fn total(&self) -> usize {
        self.namespaces + self.keycloak + self.pulsar + self.openbao
    }
}

impl Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kubernetes {}  keycloak {}  pulsar {}  openbao {}  (namespaces still terminating: {})",
            self.namespaces, self.keycloak, self.pulsar, self.openbao, self.terminating
        )
    }
}

/// What is left of the tenants `names` (created by [`create_tenants`] in
/// this order, with `isolation`) in every backend, `concurrency` tenants
/// looked at at once.
async fn leftovers(
    client: &kube::Client,
    backends: &Backends,
    (isolation, concurrency): (Isolation, usize),
    names: &[String],
) -> Result<Leftovers> {
    let namespaces = names
        .iter()
        .map(|n| TenantNames::new(n).namespace)
        .collect();
    let mounts = openbao_mounts(backends).await?;
    let openbao = names
        .iter()
        .map(|n| TenantNames::new(n))
        .flat_map(|t| [t.kv_mount, t.transit_mount, t.pki_mount])
        .filter(|mount| mounts.contains(&format!("{mount}/")))
        .count();
    let per_tenant: Vec<(usize, bool)> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            let action = format!("read Pulsar tenant {name}");
            tokio::try_join!(
                identity_left(backends, isolation, i, name),
                found(backends.pulsar_tenant(Method::GET, name), &action),
            )
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let (left, terminating) = namespaces_remaining(client, &namespaces, NAMESPACE_GRACE).await?;
    Ok(Leftovers {
        namespaces: left,
        terminating,
        keycloak: per_tenant.iter().map(|(k, _)| k).sum(),
        pulsar: per_tenant.iter().filter(|(_, p)| *p).count(),
        openbao,
    })
}

/// The tenant's realm, or its organizations in the shared realm of its type and residency.
async fn identity_left(
    backends: &Backends,
    isolation: Isolation,
    i: usize,
    name: &str,
) -> Result<usize> {
    match isolation {
        Isolation::Realm => {
            let request = backends.keycloak(Method::GET, &format!("/{name}")).await?;
            Ok(usize::from(
                found(request, &format!("read realm {name}")).await?,
            ))
        }
        Isolation::Organization => {
            let realm = format!(
                "ossature-{}-{}",
                tenant_type(i).to_lowercase(),
                residency(i)
            );
            // Tenant names are DNS labels: nothing in the query needs escaping.
            let path = format!("/{realm}/organizations?q=alias:{name}&exact=true");
            let request = backends.keycloak(Method::GET, &path).await?;
            let action = format!("search organization {name} in realm {realm}");
            // No realm, no organization.
            let found: Vec<Value> = found_json(request, &action).await?.unwrap_or_default();
            Ok(found.iter().filter(|o| o["alias"] == name).count())
        }
    }
}

/// Paths of every OpenBao secrets engine, each ending in `/`.
async fn openbao_mounts(backends: &Backends) -> Result<BTreeSet<String>> {
    let answer: Value = send(
        backends.openbao(Method::GET, "sys/mounts"),
        "list OpenBao mounts",
        &[],
    )
    .await?
    .json()
    .await
    .context("reading OpenBao's mounts")?;
    let mounts = answer["data"]
        .as_object()
        .context("OpenBao's mounts answer has no data")?;
    Ok(mounts.keys().cloned().collect())
}

// ---------------------------------------------------------------------------
// Report

fn line(label: &str, value: impl Display) {
    println!("{label:<28}{value}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn by_backend<V: Display>(values: &BTreeMap<String, V>) -> String {
    let parts: Vec<String> = values.iter().map(|(b, v)| format!("{b} {v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("  ")
    }
}

fn latencies(sorted: &[Duration]) -> String {
    format!(
        "p50 {}  p95 {}  p99 {}  max {}",
        secs(percentile(sorted, 0.50)),
        secs(percentile(sorted, 0.95)),
        secs(percentile(sorted, 0.99)),
        secs(sorted.last().copied().unwrap_or_default())
    )
}

fn print_baseline(b: &BaselineFigures) {
    line(
        "baseline",
        format!(
            "{} tenants in {}: {:.2} tenants/s",
            b.tenants,
            secs(b.elapsed),
            b.throughput()
        ),
    );
    line("baseline per tenant", latencies(&b.times));
    line("baseline removed in", secs(b.removed_in));
}

struct Report<'a> {
    args: &'a Args,
    keycloak_before_kib: u64,
    baseline: Option<&'a BaselineFigures>,
    fleet: &'a FleetFigures,
    deleted_in: Duration,
    left: &'a Leftovers,
}

impl Report<'_> {
    fn ratio(&self) -> Option<f64> {
        self.baseline
            .map(|b| self.fleet.throughput() / b.throughput())
    }

    fn print(&self) {
        let (args, fleet) = (self.args, self.fleet);
        line("created in", secs(fleet.created));
        line("time to Ready", latencies(&fleet.times));
        line("throughput", format!("{:.2} tenants/s", fleet.throughput()));
        if let Some(ratio) = self.ratio() {
            line("operator / baseline", format!("{ratio:.2}"));
        }
        let one_decimal = |calls: &BTreeMap<String, f64>| {
            calls
                .iter()
                .map(|(b, c)| (b.clone(), format!("{c:.1}")))
                .collect()
        };
        line(
            "writes per tenant",
            by_backend(&one_decimal(&fleet.writes_per_tenant)),
        );
        line(
            "reads per tenant",
            by_backend(&one_decimal(&fleet.reads_per_tenant)),
        );
        let steady = format!("steady ({}s)", args.steady_seconds);
        line(
            &format!("{steady} writes"),
            format!(
                "{}  ({})",
                fleet.steady_writes(),
                by_backend(&fleet.steady_writes)
            ),
        );
        line(
            &format!("{steady} reads"),
            format!(
                "{}  (resync every {}s)",
                by_backend(&fleet.steady_reads),
                args.resync_seconds
            ),
        );
        let usage = fleet.after_steady;
        line(
            "operator RSS",
            format!("{} now, {} peak", mib(usage.rss_kib), mib(usage.peak_kib)),
        );
        line(
            "operator CPU",
            format!(
                "{} until all Ready, {} in the steady period",
                secs(fleet.at_ready.cpu),
                secs(usage.cpu.saturating_sub(fleet.at_ready.cpu))
            ),
        );
        line(
            "Keycloak RSS",
            format!(
                "{} ({} before the run)",
                mib(fleet.keycloak_kib),
                mib(self.keycloak_before_kib)
            ),
        );
        line("all deleted in", secs(self.deleted_in));
        line("left behind", self.left);
    }

    fn summary(&self) -> String {
        let fleet = self.fleet;
        let baseline = self
            .baseline
            .map_or("n/a".to_string(), |b| format!("{:.2}/s", b.throughput()));
        let ratio = self
            .ratio()
            .map_or("n/a".to_string(), |r| format!("{r:.2}"));
        let writes: u64 = fleet.steady_writes();
        format!(
            "summary: tenants={} isolation={} concurrency={} edge={} ready_p50={} ready_p95={} ready_max={} \
             throughput={:.2}/s baseline={baseline} ratio={ratio} steady_writes={writes} \
             operator_rss_peak={} operator_cpu={} keycloak_rss={} deleted_in={} left={}",
            fleet.times.len(),
            self.args.isolation,
            self.args.concurrency,
            if self.args.without_edge { "off" } else { "on" },
            secs(percentile(&fleet.times, 0.50)),
            secs(percentile(&fleet.times, 0.95)),
            secs(fleet.times.last().copied().unwrap_or_default()),
            fleet.throughput(),
            mib(fleet.after_steady.peak_kib).replace(' ', ""),
            secs(fleet.after_steady.cpu),
            mib(fleet.keycloak_kib).replace(' ', ""),
            secs(self.deleted_in),
            self.left.total(),
        )
    }
}

// ---------------------------------------------------------------------------

async fn kube_client(env: &BTreeMap<String, String>) -> Result<kube::Client> {
    let path = env
        .get("KUBECONFIG")
        .context("the stack's environment has no KUBECONFIG")?;
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {path}"))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// A short id that keeps this run's names apart from earlier runs'.
fn run_id() -> Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(format!("{:x}", now.as_secs() % 0xfffff))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // Pure computation: no stack to bring up.
        Some(Bench::Decisions(args)) => decisions::run(args),
        None => {
            let (env, client) = stack().await?;
            tenancy(cli.tenancy, env, client).await
        }
        Some(Bench::Certificates(args)) => {
            let (env, client) = stack().await?;
            certificates::run(args, env, client).await
        }
        Some(Bench::Edge(args)) => {
            let (env, client) = stack().await?;
            edge::run(args, env, client).await
        }
        Some(Bench::Messaging(args)) => {
            let (env, client) = stack().await?;
            messaging::run(args, env, client).await
        }
        // The shared stack as it is: its CRDs are never installed from here.
        Some(Bench::Api(args)) => {
            let env = ossature_bootstrap::ensure_up().await?;
            let client = kube_client(&env).await?;
            api::run(args, env, client).await
        }
    }
}

/// The local stack, up, with the CRDs installed: what every benchmark of
/// the operator runs on.
async fn stack() -> Result<(BTreeMap<String, String>, kube::Client)> {
    let env = ossature_bootstrap::ensure_up().await?;
    let client = kube_client(&env).await?;
    ossature_operator::crds::install(&client).await?;
    Ok((env, client))
}

/// The tenancy benchmark.
async fn tenancy(args: Args, env: BTreeMap<String, String>, client: kube::Client) -> Result<()> {
    let backends = Backends::from_env(&env)?;
    let run = run_id()?;
    let keycloak_before_kib = keycloak_rss_kib().await?;

    line(
        "tenants",
        format!(
            "{} (isolation {}, concurrency {}, edge {}, run {run})",
            args.tenants,
            args.isolation,
            args.concurrency,
            if args.without_edge { "off" } else { "on" }
        ),
    );
    let baseline = match args.baseline {
        true => Some(run_baseline(&client, &backends, &args, &run).await?),
        false => None,
    };
    if let Some(b) = &baseline {
        print_baseline(b);
    }

    let mut operator = Operator::start(&args.operator_flags(), &run)?;
    operator.wait_serving().await?;
    let names: Vec<String> = (0..args.tenants)
        .map(|i| format!("bench-{run}-{i}"))
        .collect();
    let measured = measure(&client, &operator, &args, &run, &names).await;
    // Deleted even when measuring failed: only this operator can release their finalizers.
    let deleted = delete_all(&client, &run, &names, args.concurrency(), args.timeout()).await;
    drop(operator);
    let fleet = measured?;
    let deleted_in = deleted?;
    let left = leftovers(
        &client,
        &backends,
        (args.isolation, args.concurrency()),
        &names,
    )
    .await?;

    let report = Report {
        args: &args,
        keycloak_before_kib,
        baseline: baseline.as_ref(),
        fleet: &fleet,
        deleted_in,
        left: &left,
    };
    report.print();
    println!("{}", report.summary());

    let mut failures = Vec::new();
    if fleet.steady_writes() > 0 {
        failures.push(format!(
            "an unchanged fleet caused {} writes",
            fleet.steady_writes()
        ));
    }
    if left.total() > 0 {
        failures.push(format!("deletion left objects behind: {left}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}
