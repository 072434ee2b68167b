//! `ossature-bench edge`: N tenants served at the edge (Caddy), then one
//! tenant's `spec.edge.allowedSourceRanges` changed at a time: how long
//! each change takes from the Tenant's update to the tenant's route in
//! Caddy's running configuration (read through its admin API), and Caddy's
//! memory with N hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::api::{Api, Patch, PatchParams};
use ossature_bootstrap::components::Component;
use ossature_crds::Tenant;
use serde_json::{Value, json};

use super::{
    Isolation, Operator, OperatorFlags, component, create_tenants, delete_all, latencies, line,
    mib, percentile, run_id, secs, tenants_ready, usage,
};

/// How often Caddy's route is read while a change travels.
const POLL: Duration = Duration::from_millis(10);

#[derive(clap::Args, Debug)]
pub struct EdgeArgs {
    /// Tenants, each with a host at the edge, 1 to 2000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=2000))]
    hosts: u32,
    /// Changes measured, one after another, each to another tenant.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    changes: u32,
    /// Tenants created at once, and the operator's --concurrency.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Longest wait for every tenant to be Ready, for a change to reach
    /// Caddy, and for every tenant to be deleted.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
}

impl EdgeArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

pub async fn run(
    args: EdgeArgs,
    env: BTreeMap<String, String>,
    client: kube::Client,
) -> Result<()> {
    let admin = env
        .get("OSSATURE_EDGE_ADMIN_URL")
        .context("the stack's environment has no OSSATURE_EDGE_ADMIN_URL: no edge")?
        .trim_end_matches('/')
        .to_string();
    let run = run_id()?;
    let names: Vec<String> = (0..args.hosts).map(|i| format!("bc-{run}-{i}")).collect();
    line(
        "edge hosts",
        format!(
            "{} tenants (concurrency {}, run {run})",
            names.len(),
            args.concurrency
        ),
    );
    let caddy_before = component(Component::Caddy).await?;
    let flags = OperatorFlags {
        concurrency: args.concurrency,
        ..OperatorFlags::default()
    };
    let mut operator = Operator::start(&flags, &run)?;
    operator.wait_serving().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let edge = Edge { http, admin };

    let measured = measure(&client, &edge, &operator, &args, &run, &names).await;
    // Deleted even when measuring failed: only this operator can release their finalizers.
    let deleting = delete_all(
        &client,
        &run,
        &names,
        usize::from(args.concurrency),
        args.timeout(),
    )
    .await;
    let left = match &measured {
        Ok(figures) => Some(edge.routes_present(&figures.route_ids).await?),
        Err(_) => None,
    };
    drop(operator);
    let figures = measured?;
    let deleted_in = deleting?;

    line("time to Ready", latencies(&figures.ready));
    line(
        "all Ready in",
        secs(figures.ready.last().copied().unwrap_or_default()),
    );
    let each: Vec<String> = figures.changes.iter().map(|d| secs_ms(*d)).collect();
    let mut sorted = figures.changes.clone();
    sorted.sort();
    line(
        "change reaches Caddy",
        format!(
            "p50 {}  max {}  (each: {})",
            secs_ms(percentile(&sorted, 0.5)),
            secs_ms(sorted.last().copied().unwrap_or_default()),
            each.join(", ")
        ),
    );
    line(
        "Caddy RSS",
        format!(
            "{} with {} hosts ({} before the run; config {} KiB)",
            mib(figures.caddy_kib),
            names.len(),
            mib(caddy_before.rss_kib),
            figures.config_bytes / 1024
        ),
    );
    line(
        "operator RSS",
        format!("{} peak", mib(figures.operator_peak_kib)),
    );
    line("all deleted in", secs(deleted_in));
    let left = left.unwrap_or_default();
    line(
        "routes left at the edge",
        format!("{left} of the {} measured", figures.route_ids.len()),
    );
    println!(
        "summary: hosts={} ready_p50={} ready_max={} change_p50={} change_max={} caddy_rss={} caddy_rss_before={} operator_rss_peak={} left={left}",
        names.len(),
        secs(percentile(&figures.ready, 0.5)),
        secs(figures.ready.last().copied().unwrap_or_default()),
        secs_ms(percentile(&sorted, 0.5)).replace(' ', ""),
        secs_ms(sorted.last().copied().unwrap_or_default()).replace(' ', ""),
        mib(figures.caddy_kib).replace(' ', ""),
        mib(caddy_before.rss_kib).replace(' ', ""),
        mib(figures.operator_peak_kib).replace(' ', ""),
    );
    if left > 0 {
        bail!("{left} tenant routes still at the edge after their tenants were deleted");
    }
    Ok(())
}

fn secs_ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

struct Figures {
    /// Each tenant's time to Ready from the first creation, sorted.
    ready: Vec<Duration>,
    /// Each change's time to reach Caddy, in order.
    changes: Vec<Duration>,
    /// Ids of the changed tenants' routes in Caddy.
    route_ids: Vec<String>,
    caddy_kib: u64,
    config_bytes: usize,
    operator_peak_kib: u64,
}

async fn measure(
    client: &kube::Client,
    edge: &Edge,
    operator: &Operator,
    args: &EdgeArgs,
    run: &str,
    names: &[String],
) -> Result<Figures> {
    let began = Instant::now();
    create_tenants(
        client,
        names,
        run,
        Isolation::Organization,
        usize::from(args.concurrency),
    )
    .await?;
    let ready = tenants_ready(client, run, names.len(), began, args.timeout()).await?;
    let caddy_kib = component(Component::Caddy).await?.rss_kib;

    // Spread over the fleet: a host early in Caddy's routes and late ones.
    let step = (names.len() / args.changes as usize).max(1);
    let changed: Vec<&String> = names
        .iter()
        .step_by(step)
        .take(args.changes as usize)
        .collect();
    let (config, config_bytes) = edge.config().await?;
    let route_ids: Vec<String> = changed
        .iter()
        .map(|tenant| {
            let host = host_of(tenant);
            route_id(&config, &host)
                .with_context(|| format!("no route of {host} in Caddy's configuration"))
        })
        .collect::<Result<_>>()?;

    let typed: Api<Tenant> = Api::all(client.clone());
    let mut changes = Vec::new();
    for (k, (tenant, id)) in changed.iter().zip(&route_ids).enumerate() {
        let range = format!("10.{k}.0.0/16");
        let patch = json!({"spec": {"edge": {"allowedSourceRanges": [range]}}});
        let sent = Instant::now();
        typed
            .patch(tenant, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("changing tenant {tenant}"))?;
        loop {
            let route = edge.get(&format!("/id/{id}")).await?;
            if route.to_string().contains(&range) {
                changes.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > args.timeout() {
                bail!("tenant {tenant}'s change did not reach Caddy");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(Figures {
        ready,
        changes,
        route_ids,
        caddy_kib,
        config_bytes,
        operator_peak_kib: usage(operator.pid())?.peak_kib,
    })
}

/// A tenant's host at the edge.
fn host_of(tenant: &str) -> String {
    let root = std::env::var("OSSATURE_ROOT_DOMAIN").unwrap_or_else(|_| "ossature.test".into());
    format!("{tenant}.{root}")
}

/// The `@id` of the route serving `host`, found anywhere in the config.
fn route_id(config: &Value, host: &str) -> Option<String> {
    let suffix = format!(".host.{host}");
    let mut ids = BTreeSet::new();
    collect_ids(config, &mut ids);
    ids.into_iter().find(|id| id.ends_with(&suffix))
}

fn collect_ids(value: &Value, ids: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(id)) = map.get("@id") {
                ids.insert(id.clone());
            }
            map.values().for_each(|v| collect_ids(v, ids));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_ids(v, ids)),
        _ => {}
    }
}

/// Caddy's admin API.
struct Edge {
    http: reqwest::Client,
    admin: String,
}

impl Edge {
    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.admin);
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("reading {url}"))?
            .json()
            .await
            .with_context(|| format!("reading {url}"))
    }

    /// The whole running configuration, and its size.
    async fn config(&self) -> Result<(Value, usize)> {
        let url = format!("{}/config/", self.admin);
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("reading {url}"))?
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        let value = serde_json::from_str(&text).context("reading Caddy's configuration")?;
        Ok((value, text.len()))
    }

    /// How many of the routes `ids` Caddy still has.
    async fn routes_present(&self, ids: &[String]) -> Result<usize> {
        let (config, _) = self.config().await?;
        let mut present = BTreeSet::new();
        collect_ids(&config, &mut present);
        Ok(ids.iter().filter(|id| present.contains(*id)).count())
    }
}
