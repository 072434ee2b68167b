//! `ossature-bench api`: the control plane's API under load, served in this
//! process against the shared stack, with no operator (the tenants stay
//! unreconciled, which these figures do not need).
//!
//! Fills the control plane's watch cache with `--tenants` Tenant objects
//! (created at once, each with the conditions an operator would have
//! reported), then times `--onboards` onboardTenant commands (until the
//! custom resources are written: no wait) and `--queries` tenantStatus
//! queries over HTTP with a platform operator's Keycloak token, printing
//! p50/p90/p99/max, throughput and the process's memory. Everything it
//! made carries the label `ossature.dev/bench=api-<run>` (Tenants) or the
//! run's name prefix (namespaces, idempotency keys) and is removed at the
//! end, after a failure and on Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ossature_control_plane::start::Running;
use ossature_crds::Tenant;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Backends, RUN_LABEL, line, percentile, run_id, send};

/// The goals of the control plane's issue, on this machine.
const ONBOARD_P99_GOAL: Duration = Duration::from_millis(50);
const STATUS_P99_GOAL: Duration = Duration::from_millis(5);
/// Group and audience of the platform operators' realm the bench makes.
const OPERATORS_GROUP: &str = "platform-operators";
const OPERATORS_AUDIENCE: &str = "ossature-control-plane";
const OPERATORS_CLIENT: &str = "bench-cli";
/// Longest wait for the watch cache to hold every tenant.
const CACHE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Tenant objects in the control plane's watch cache while measuring.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    tenants: u32,
    /// Tenants created (and their status written) at once while filling the cache.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    create_concurrency: u32,
    /// onboardTenant commands timed (each a new tenant with 2 scopes and
    /// an environment), after --warmup untimed ones.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    onboards: u32,
    /// onboardTenant commands in flight at once. The goal is a latency,
    /// so one at a time: on 2 cores the apiserver admits about 50
    /// onboardings a second, and more in flight only queue for it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    onboard_concurrency: u32,
    /// tenantStatus queries timed, each of one of the --tenants, after
    /// --warmup untimed ones.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queries: u32,
    /// tenantStatus queries in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    query_concurrency: u32,
    /// Untimed requests before each timed phase (connections, caches).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    warmup: u32,
}

/// What the run made, by name: removed by [`Made::remove`].
struct Made {
    client: kube::Client,
    backends: Backends,
    /// The Tenants' label value, `api-<run>`.
    label: String,
    /// Prefix of every tenant's name, `bapi-<run>-`.
    prefix: String,
    onboarded: Vec<String>,
    realm: String,
    audit: std::path::PathBuf,
}

impl Made {
    fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.label)
    }

    /// Removes everything the run made; what could not be removed is named.
    async fn remove(&self) -> Result<()> {
        let mut failures = Vec::new();
        let tenants: Api<Tenant> = Api::all(self.client.clone());
        let selector = ListParams::default().labels(&self.selector());
        if let Err(e) = tenants
            .delete_collection(&DeleteParams::default(), &selector)
            .await
        {
            failures.push(format!(
                "deleting the Tenants labelled {}: {e}",
                self.selector()
            ));
        }
        // Onboarding made a namespace per tenant (Scopes and Environments
        // in it go with it).
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let deleted: Vec<Result<(), String>> = stream::iter(&self.onboarded)
            .map(|tenant| {
                let namespaces = &namespaces;
                async move {
                    let name = ossature_model::tenant_namespace(tenant);
                    match namespaces.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => Err(format!("deleting namespace {name}: {e}")),
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        failures.extend(deleted.into_iter().filter_map(Result::err).take(3));
        if let Err(e) = self.remove_keys().await {
            failures.push(format!("deleting the idempotency keys: {e:#}"));
        }
        // The floor's ConfigMaps, if it stopped half-way.
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), "default");
        if let Err(e) = maps
            .delete_collection(&DeleteParams::default(), &selector)
            .await
        {
            failures.push(format!("deleting the floor's ConfigMaps: {e}"));
        }
        let request = self
            .backends
            .keycloak(Method::DELETE, &format!("/{}", self.realm))
            .await;
        if let Err(e) = match request {
            Ok(request) => send(
                request,
                "delete the operators' realm",
                &[StatusCode::NOT_FOUND],
            )
            .await
            .map(drop),
            Err(e) => Err(e),
        } {
            failures.push(format!("{e:#}"));
        }
        let _ = std::fs::remove_file(&self.audit);
        // Without an operator no finalizer holds a Tenant: gone at once.
        let left = tenants.list_metadata(&selector).await?.items.len();
        if left > 0 {
            failures.push(format!(
                "{left} Tenants labelled {} remain",
                self.selector()
            ));
        }
        if !failures.is_empty() {
            bail!("cleaning up: {}", failures.join("; "));
        }
        Ok(())
    }

    /// The idempotency keys of the run's onboardings.
    async fn remove_keys(&self) -> Result<()> {
        use ossature_control_plane::idempotency::KEY_LABEL;
        let keys: Api<ConfigMap> = Api::namespaced(self.client.clone(), "ossature-system");
        let all = keys
            .list_metadata(&ListParams::default().labels(&format!("{KEY_LABEL}=true")))
            .await?;
        let ours = all.items.into_iter().filter(|key| {
            key.labels()
                .get(ossature_model::names::TENANT_LABEL)
                .is_some_and(|tenant| tenant.starts_with(&self.prefix))
        });
        stream::iter(ours)
            .map(|key| {
                let keys = &keys;
                async move {
                    match keys.delete(&key.name_any(), &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Latencies of one timed phase.
struct Phase {
    times: Vec<Duration>,
    wall: Duration,
}

impl Phase {
    fn print(&self, name: &str, goal: Duration) {
        let p99 = percentile(&self.times, 0.99);
        line(
            name,
            format!(
                "p50 {}  p90 {}  p99 {}  max {}",
                ms(percentile(&self.times, 0.50)),
                ms(percentile(&self.times, 0.90)),
                ms(p99),
                ms(self.times.last().copied().unwrap_or_default())
            ),
        );
        line(
            "",
            format!(
                "{} requests in {:.1}s: {:.0}/s; goal p99 <= {}: {}",
                self.times.len(),
                self.wall.as_secs_f64(),
                self.times.len() as f64 / self.wall.as_secs_f64(),
                ms(goal),
                if p99 <= goal { "met" } else { "MISSED" }
            ),
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

/// This process's resident memory now and at its peak, in MiB.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "{:.0} MiB now, {:.0} MiB peak",
        kib("VmRSS:") as f64 / 1024.0,
        kib("VmHWM:") as f64 / 1024.0
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A Tenant as the cache holds one an operator has reported on.
fn tenant_object(name: &str, label: &str, i: usize) -> Result<Tenant> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {RUN_LABEL: label}},
        "spec": {
            "type": super::tenant_type(i), "displayName": format!("Bench tenant {i}"),
            "residency": super::residency(i),
            "quotas": {"cpu": "4", "memory": "8Gi", "pods": 50},
        },
    }))?)
}

/// The conditions an operator reports on a Ready tenant, one per backend.
fn reported_status() -> Value {
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
    };
    json!({"status": {
        "observedGeneration": 1,
        "conditions": [
            condition("Ready", "Ready", "every backend is provisioned"),
            condition("NamespaceReady", "Applied", "namespace, quota, network policies and RBAC applied"),
            condition("RealmReady", "Provisioned", "organization provisioned in the shared realm"),
            condition("MessagingReady", "Provisioned", "Pulsar tenant provisioned"),
            condition("SecretsReady", "Provisioned", "KV, transit and PKI mounts provisioned"),
            condition("CertificateReady", "Issued", "certificate issued, renewed before expiry"),
            condition("EdgeReady", "Routed", "route served at the edge"),
        ],
    }})
}

/// Creates the tenants and writes their status, `concurrency` at once.
async fn create_tenants(
    client: &kube::Client,
    names: &[String],
    label: &str,
    concurrency: usize,
) -> Result<()> {
    let tenants: Api<Tenant> = Api::all(client.clone());
    let status = reported_status();
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (tenants, status, done) = (&tenants, &status, &done);
            async move {
                let object = tenant_object(name, label, i)?;
                tenants
                    .create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating tenant {name}"))?;
                tenants
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .with_context(|| format!("writing the status of tenant {name}"))?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 2000 == 0 {
                    eprintln!(
                        "  {n} tenants created in {:.0}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until the control plane's cache holds every tenant, reported on.
async fn wait_cached(running: &Running, names: &[String]) -> Result<()> {
    let deadline = Instant::now() + CACHE_TIMEOUT;
    loop {
        let missing = names
            .iter()
            .filter(|name| {
                running
                    .app
                    .watches
                    .tenant(name)
                    .is_none_or(|t| t.status.as_ref().is_none_or(|s| s.conditions.is_empty()))
            })
            .count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the control plane's cache lacks {missing} of {} tenants after {}s",
                names.len(),
                CACHE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A platform operators' realm in the stack's Keycloak; the client's secret.
async fn create_realm(backends: &Backends, realm: &str) -> Result<String> {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the realm's client secret"))?;
    let secret = ossature_model::names::hex(&bytes);
    let representation = ossature_control_plane::local_stack::operators_realm_representation(
        realm,
        OPERATORS_CLIENT,
        &secret,
        OPERATORS_GROUP,
        OPERATORS_AUDIENCE,
    );
    let request = backends
        .keycloak(Method::POST, "")
        .await?
        .json(&representation);
    send(request, "create the platform operators' realm", &[]).await?;
    Ok(secret)
}

async fn operator_token(backends: &Backends, realm: &str, secret: &str) -> Result<String> {
    let request = backends
        .http
        .post(format!(
            "{}/realms/{realm}/protocol/openid-connect/token",
            backends.keycloak
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", OPERATORS_CLIENT),
            ("client_secret", secret),
        ]);
    let answer: Value = send(request, "get a platform operator's token", &[])
        .await?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(String::from)
        .context("Keycloak's token answer has no access_token")
}

/// Sends `requests` POSTs, `concurrency` at once, timing each; the first
/// `warmup` are not timed. Every answer must be 200.
async fn timed(
    http: &reqwest::Client,
    requests: Vec<(String, Option<String>, Value)>,
    token: &str,
    concurrency: usize,
    warmup: usize,
) -> Result<Phase> {
    let send_one = |(url, key, body): (String, Option<String>, Value)| async move {
        let mut request = http.post(&url).bearer_auth(token).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let started = Instant::now();
        let response = request
            .send()
            .await
            .with_context(|| format!("{url}: no answer"))?;
        let status = response.status();
        let answer = response.bytes().await?;
        let took = started.elapsed();
        if status != StatusCode::OK {
            bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&answer)
                    .chars()
                    .take(400)
                    .collect::<String>()
            );
        }
        Ok(took)
    };
    let mut requests = requests.into_iter();
    let warm: Vec<_> = requests.by_ref().take(warmup).collect();
    stream::iter(warm)
        .map(&send_one)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let started = Instant::now();
    let mut times: Vec<Duration> = stream::iter(requests)
        .map(&send_one)
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let wall = started.elapsed();
    times.sort();
    Ok(Phase { times, wall })
}

/// What the apiserver and etcd alone take for the two durable rounds an
/// onboarding makes, `count` times, `concurrency` at once: the floor under
/// onboardTenant's latency on this machine. Its ConfigMaps go at once.
async fn floor(
    client: &kube::Client,
    label: &str,
    count: usize,
    concurrency: usize,
) -> Result<Vec<Duration>> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (key, value) = (RUN_LABEL, label);
    let mut times: Vec<Duration> = stream::iter(0..count)
        .map(|i| {
            let maps = maps.clone();
            async move {
                let name = format!("ossature-bench-floor-{value}-{i}");
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {key: value}},
                    "data": {"round": "1"},
                }))?;
                let started = Instant::now();
                maps.create(&PostParams::default(), &map).await?;
                let second = json!({"data": {"round": "2"}});
                maps.patch(&name, &PatchParams::default(), &Patch::Merge(&second))
                    .await?;
                let took = started.elapsed();
                maps.delete(&name, &DeleteParams::default()).await?;
                Ok::<_, anyhow::Error>(took)
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    times.sort();
    Ok(times)
}

/// A tenant's onboarding: its Tenant, namespace, two scopes (one granting
/// Admin to a group) and an environment.
fn onboarding(tenant: &str, label: &str) -> Result<Value> {
    use ossature_control_plane::api::{
        EnvironmentDefinition, EnvironmentKind, Grant, OnboardTenant, Quotas, ScopeDefinition,
        TenantType,
    };
    let scope = |name: &str, display_name: &str, parent: Option<&str>| ScopeDefinition {
        name: name.into(),
        display_name: display_name.into(),
        parent: parent.map(String::from),
        grants: Vec::new(),
    };
    let mut global = scope("global", "Global", None);
    global.grants.push(Grant {
        role: "Admin".to_string(),
        groups: vec![format!("{tenant}-admins")],
        users: Vec::new(),
    });
    let input = OnboardTenant {
        tenant: tenant.into(),
        tenant_type: TenantType::Business,
        display_name: format!("Bench {tenant}"),
        residency: "eu".into(),
        labels: [(RUN_LABEL.to_string(), label.to_string())].into(),
        identity: Default::default(),
        quotas: Quotas {
            cpu: Some("4".into()),
            memory: Some("8Gi".into()),
            pods: Some(50),
            ..Default::default()
        },
        edge: Default::default(),
        domains: Vec::new(),
        deletion_policy: None,
        scopes: vec![global, scope("eu", "Europe", Some("global"))],
        environments: vec![EnvironmentDefinition {
            name: "prod".into(),
            kind: EnvironmentKind::Production,
            ttl: None,
            quotas: Default::default(),
            message_retention_minutes: None,
            deletion_policy: None,
            scope: None,
        }],
        dry_run: false,
        wait: None,
    };
    Ok(serde_json::to_value(input)?)
}

/// Longest wait for the namespaces of earlier runs to be deleted.
const EARLIER_RUNS_TIMEOUT: Duration = Duration::from_secs(600);

/// Waits until no namespace of an earlier run is terminating: a run's
/// cleanup keeps the apiserver and the namespace controller busy for
/// minutes, and the next run would time that instead of its own requests.
async fn earlier_runs_gone(client: &kube::Client) -> Result<Duration> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ours = ossature_model::tenant_namespace("bapi-");
    let started = Instant::now();
    loop {
        let left = namespaces
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|n| n.name_any().starts_with(&ours) && n.metadata.deletion_timestamp.is_some())
            .count();
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > EARLIER_RUNS_TIMEOUT {
            bail!(
                "{left} namespaces of earlier runs ({ours}*) are still there after {EARLIER_RUNS_TIMEOUT:?}"
            );
        }
        eprintln!("waiting for {left} namespaces of earlier runs ({ours}*) to be deleted");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

pub async fn run(args: ApiArgs, env: BTreeMap<String, String>, client: kube::Client) -> Result<()> {
    let run = run_id()?;
    let label = format!("api-{run}");
    let prefix = format!("bapi-{run}-");
    let onboard_count = (args.warmup + args.onboards) as usize;
    let made = Made {
        client: client.clone(),
        backends: Backends::from_env(&env)?,
        label: label.clone(),
        prefix: prefix.clone(),
        onboarded: (0..onboard_count)
            .map(|i| format!("{prefix}o{i}"))
            .collect(),
        realm: format!("bench-api-ops-{run}"),
        audit: std::env::temp_dir().join(format!("ossature-bench-api-{run}.audit.jsonl")),
    };
    let waited = earlier_runs_gone(&client).await?;
    line(
        "earlier runs' namespaces",
        format!("gone ({:.1}s waited)", waited.as_secs_f64()),
    );
    line("load average", format!("{} (1, 5, 15 min)", load_average()));
    line("memory before", memory());
    let measured = tokio::select! {
        measured = measure(&args, &env, &made) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("removing what the run made");
    let removed = made.remove().await;
    measured?;
    removed?;
    line(
        "cleaned up",
        format!(
            "every object labelled {}, namespaces, keys, realm",
            made.selector()
        ),
    );
    Ok(())
}

async fn measure(args: &ApiArgs, env: &BTreeMap<String, String>, made: &Made) -> Result<()> {
    let secret = create_realm(&made.backends, &made.realm).await?;
    let keycloak = &env["OSSATURE_KEYCLOAK_URL"];
    let cli = [
        "ossature-control-plane",
        "--listen",
        "127.0.0.1:0",
        "--keycloak-url",
        keycloak,
        "--operators-realm",
        &made.realm,
        "--audit-log",
        made.audit
            .to_str()
            .context("a temporary path that is text")?,
        "--rate-limit-per-second",
        "100000",
        "--rate-limit-burst",
        "100000",
    ];
    let cp_args = ossature_control_plane::cli::Args::try_parse_from(cli)?;
    let started = Instant::now();
    let running =
        ossature_control_plane::start::spawn(cp_args, made.client.clone(), std::future::pending())
            .await?;
    line(
        "control plane started",
        format!("{:.1}s, {}", started.elapsed().as_secs_f64(), memory()),
    );

    let names: Vec<String> = (0..args.tenants as usize)
        .map(|i| format!("{}t{i}", made.prefix))
        .collect();
    let started = Instant::now();
    create_tenants(
        &made.client,
        &names,
        &made.label,
        args.create_concurrency as usize,
    )
    .await?;
    let created = started.elapsed();
    wait_cached(&running, &names).await?;
    line(
        "tenants in the cache",
        format!(
            "{} (created with status in {:.1}s, all cached {:.1}s after the start; {} in the cache in all)",
            names.len(),
            created.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            running.app.watches.tenants.state().len()
        ),
    );
    line("memory with the cache full", memory());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    let base = format!("http://127.0.0.1:{}", running.addr.port());

    let token = operator_token(&made.backends, &made.realm, &secret).await?;
    let onboards = made
        .onboarded
        .iter()
        .map(|tenant| {
            Ok((
                format!("{base}/v1/commands/onboardTenant"),
                Some(format!("bench-onboard-{tenant}")),
                onboarding(tenant, &made.label)?,
            ))
        })
        .collect::<Result<_>>()?;
    let phase = timed(
        &http,
        onboards,
        &token,
        args.onboard_concurrency as usize,
        args.warmup as usize,
    )
    .await
    .context("onboarding")?;
    line(
        "onboardTenant",
        format!(
            "concurrency {}, until the custom resources are written",
            args.onboard_concurrency
        ),
    );
    phase.print("  latency", ONBOARD_P99_GOAL);
    let floor = floor(
        &made.client,
        &made.label,
        args.onboards as usize,
        args.onboard_concurrency as usize,
    )
    .await
    .context("timing the apiserver's floor")?;
    line(
        "  floor",
        format!(
            "two durable apiserver writes one after the other (a ConfigMap created, then patched), as an onboarding makes: p50 {}  p90 {}  p99 {}",
            ms(percentile(&floor, 0.50)),
            ms(percentile(&floor, 0.90)),
            ms(percentile(&floor, 0.99)),
        ),
    );

    let token = operator_token(&made.backends, &made.realm, &secret).await?;
    let total = (args.warmup + args.queries) as usize;
    let queries = (0..total)
        .map(|i| {
            // Spread over every tenant, in no order the cache keeps.
            let tenant = &names[(i * 7919) % names.len()];
            (
                format!("{base}/v1/queries/tenantStatus"),
                None,
                json!({"tenant": tenant}),
            )
        })
        .collect();
    let phase = timed(
        &http,
        queries,
        &token,
        args.query_concurrency as usize,
        args.warmup as usize,
    )
    .await
    .context("asking tenantStatus")?;
    line(
        "tenantStatus",
        format!(
            "concurrency {}, {} tenants in the cache",
            args.query_concurrency,
            names.len()
        ),
    );
    phase.print("  latency", STATUS_P99_GOAL);
    line("memory after", memory());
    line("load average", format!("{} (1, 5, 15 min)", load_average()));
    running.stop();
    Ok(())
}
