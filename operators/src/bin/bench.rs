//! Onboards N tenants at once on the local stack and prints time to Ready,
//! backend writes per tenant, writes during a steady-state period, and the
//! operator's memory.
//!
//! Build both binaries first: `cargo build --release -p ossature-operator`,
//! then `target/release/ossature-bench --tenants 50`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use ossature_crds::Tenant;
use serde_json::json;

/// Onboards N tenants at once against the local stack and prints figures.
#[derive(Parser, Debug)]
#[command(name = "ossature-bench")]
struct Args {
    /// Tenants created at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    tenants: u32,
    /// Length of the steady-state period, in seconds, during which an unchanged
    /// fleet must cause no writes.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Resync interval given to the operator, so the steady period holds several reconciles of each tenant.
    #[arg(long, default_value_t = 15)]
    resync_seconds: u64,
    /// Tenants reconciled at once by the operator.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Longest wait for every tenant to become Ready.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Backend calls from the operator's `/metrics`: (backend, verb) -> count.
async fn calls(url: &str) -> Result<BTreeMap<(String, String), u64>> {
    let text = reqwest::get(url).await?.text().await?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("ossature_backend_calls_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let value: u64 = line.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0);
        out.insert((label("backend"), label("verb")), value);
    }
    Ok(out)
}

fn writes(calls: &BTreeMap<(String, String), u64>) -> BTreeMap<String, u64> {
    calls
        .iter()
        .filter(|((_, verb), _)| verb == "write")
        .map(|((backend, _), n)| (backend.clone(), *n))
        .collect()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let env = ossature_bootstrap::ensure_up().await?;
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"])?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?,
    )?;
    ossature_operator::crds::install(&client).await?;

    let operator_bin = std::env::current_exe()?
        .parent()
        .context("the benchmark binary has a directory")?
        .join("ossature-operator");
    if !operator_bin.exists() {
        bail!(
            "{} is missing; build it with `cargo build --release -p ossature-operator`",
            operator_bin.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let log = std::fs::File::create(std::env::temp_dir().join("ossature-bench-operator.log"))?;
    let operator = Operator(
        Command::new(&operator_bin)
            .args(["--local-stack", "--log-format", "json"])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!("--resync-seconds={}", args.resync_seconds))
            .arg(format!("--concurrency={}", args.concurrency))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let pid = operator.0.id();
    let started = Instant::now();
    while calls(&metrics).await.is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the operator did not start; see its log in the temp directory");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = calls(&metrics).await?;

    let tenants: Api<Tenant> = Api::all(client.clone());
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            % 0xfffff
    );
    let names: Vec<String> = (0..args.tenants)
        .map(|i| format!("bench-{run}-{i}"))
        .collect();
    let began = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let kind = if i % 2 == 0 { "Business" } else { "Consumer" };
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "labels": {"ossature.dev/bench": run}},
            "spec": {"type": kind, "displayName": name, "residency": if i % 3 == 0 { "us" } else { "eu" }},
        }))?;
        tenants.create(&PostParams::default(), &tenant).await?;
    }
    let created = began.elapsed();

    let selector = ListParams::default().labels(&format!("ossature.dev/bench={run}"));
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    while ready_at.len() < names.len() {
        if began.elapsed() > Duration::from_secs(args.timeout_seconds) {
            bail!(
                "{} of {} tenants Ready after {}s",
                ready_at.len(),
                names.len(),
                args.timeout_seconds
            );
        }
        for t in tenants.list(&selector).await?.items {
            let ready = t.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if ready {
                ready_at
                    .entry(t.metadata.name.clone().unwrap_or_default())
                    .or_insert_with(|| began.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut times: Vec<Duration> = ready_at.values().copied().collect();
    times.sort();
    let after_ready = calls(&metrics).await?;

    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_start = calls(&metrics).await?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_end = calls(&metrics).await?;
    let rss = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");

    let n = names.len() as f64;
    println!("tenants                     {}", names.len());
    println!("created in                  {:.1}s", created.as_secs_f64());
    println!(
        "time to Ready               p50 {:.1}s  p95 {:.1}s  max {:.1}s",
        percentile(&times, 0.50).as_secs_f64(),
        percentile(&times, 0.95).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64()
    );
    let (w_before, w_ready) = (writes(&before), writes(&after_ready));
    let per_tenant: Vec<String> = w_ready
        .iter()
        .map(|(backend, total)| {
            let n_before = w_before.get(backend).copied().unwrap_or(0);
            format!("{backend} {:.1}", (total - n_before) as f64 / n)
        })
        .collect();
    println!("writes per tenant           {}", per_tenant.join("  "));
    let (s0, s1) = (writes(&steady_start), writes(&steady_end));
    let steady_by_backend: Vec<String> = s1
        .iter()
        .map(|(b, v)| (b, v - s0.get(b).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .map(|(b, v)| format!("{b} {v}"))
        .collect();
    let steady: u64 = s1
        .iter()
        .map(|(b, v)| v - s0.get(b).copied().unwrap_or(0))
        .sum();
    let reads: u64 = steady_end
        .iter()
        .filter(|((_, verb), _)| verb == "read")
        .map(|(k, v)| v - steady_start.get(k).copied().unwrap_or(0))
        .sum();
    println!(
        "steady state ({}s)          {steady} writes {steady_by_backend:?}, {reads} reads (resync every {}s)",
        args.steady_seconds, args.resync_seconds
    );
    println!(
        "operator RSS                {:.0} MiB now, {:.0} MiB peak",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // Offboard everything this run created.
    let deleting = Instant::now();
    for name in &names {
        tenants.delete(name, &DeleteParams::default()).await?;
    }
    while !tenants.list(&selector).await?.items.is_empty() {
        if deleting.elapsed() > Duration::from_secs(args.timeout_seconds) {
            bail!("tenants still present after {}s", args.timeout_seconds);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all deleted in              {:.1}s",
        deleting.elapsed().as_secs_f64()
    );
    drop(operator);
    if steady > 0 {
        bail!("an unchanged fleet caused {steady} writes");
    }
    Ok(())
}
