//! `ossature-bench certificates`: N Certificates of one tenant, created at
//! once, until all are Ready; optionally cert-manager issuing N from a CA in
//! the same run, after Ossature, against the same apiserver.
//!
//! Both sides are measured the same way: each certificate's time from its
//! creation to `Ready=True` (seen by a watch), the controller's peak RSS
//! (VmHWM), and the writes seen in the apiserver: every change of a
//! certificate, certificate request, Secret or Event in the side's namespace
//! (and of the Tenant, whose status counts its certificates), from watches,
//! less the bench's own creations. Writes that change nothing (no new
//! resourceVersion) are not seen there; `apiserver_request_total` of the
//! same resources is printed beside, cluster-wide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::{
    FIELD_MANAGER, Isolation, Operator, OperatorFlags, RUN_LABEL, calls, delete_all, delta,
    free_port, line, mib, object_key, per_tenant, percentile, reconciles, run_id, secs, stop,
    usage, wait_ready,
};
use ossature_crds::{AcmeIssuer, Certificate, Tenant};

/// Certificates created at once by the bench, for either side.
const CREATE_CONCURRENCY: usize = 32;
/// After the last Ready, how long writes still count (trailing status writes).
const SETTLE: Duration = Duration::from_secs(3);
const CERT_MANAGER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Name of cert-manager's CA Secret and Issuer.
const CERT_MANAGER_ISSUER: &str = "bench-ca";

#[derive(clap::Args, Debug)]
pub struct CertificateArgs {
    /// Certificates created at once, 1 to 2000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=2000))]
    count: u32,
    /// Who signs Ossature's certificates: the tenant's CA, or an AcmeIssuer
    /// of the stack's Pebble the bench creates (its rate limits raised, so
    /// the issuance is measured, not the budget).
    #[arg(long, value_enum, default_value_t = IssuerKind::TenantCa)]
    issuer: IssuerKind,
    /// cert-manager's controller binary: after Ossature, it issues as many
    /// certificates from a CA (ECDSA P-256, the same lifetime, a Secret
    /// each) in a namespace of its own. With --issuer tenant-ca only.
    #[arg(long, value_name = "PATH", requires = "cert_manager_crds")]
    compare_cert_manager: Option<PathBuf>,
    /// cert-manager's CRDs (its `deploy/crds` directory): applied for the
    /// comparison and removed again at the end, also when it fails, since
    /// they share the plural `certificates` with Ossature's.
    #[arg(long, value_name = "DIR", requires = "compare_cert_manager")]
    cert_manager_crds: Option<PathBuf>,
    /// A flag passed on to cert-manager's controller, e.g.
    /// `--cert-manager-arg=--concurrent-workers=16` (repeat for more).
    /// Without any it runs with its own defaults (5 workers, 20 requests/s
    /// to the apiserver, bursts of 50).
    #[arg(
        long = "cert-manager-arg",
        value_name = "FLAG",
        allow_hyphen_values = true,
        requires = "compare_cert_manager"
    )]
    cert_manager_args: Vec<String>,
    /// The operator's --concurrency: certificates reconciled at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Longest wait for all certificates of a side to be Ready.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IssuerKind {
    /// The tenant's CA in OpenBao.
    TenantCa,
    /// An AcmeIssuer of the stack's Pebble (HTTP-01 through challtestsrv).
    Acme,
}

impl CertificateArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

/// What one side measured.
struct Side {
    controller: &'static str,
    /// From the first creation to the last Ready.
    all_ready: Duration,
    /// Each certificate's creation to its Ready, sorted.
    times: Vec<Duration>,
    peak_kib: u64,
    cpu: Duration,
    /// Changes seen by watch, by kind, the bench's creations left out.
    changes: BTreeMap<String, u64>,
    /// `apiserver_request_total` write requests of the same resources,
    /// cluster-wide, by resource and verb, the bench's creations left out.
    requests: BTreeMap<String, u64>,
}

impl Side {
    fn writes(&self) -> u64 {
        self.changes.values().sum()
    }
}

/// The sides as columns, then what their writes were.
fn print_sides(sides: &[&Side], n: usize) {
    let per = |v: u64| format!("{:.2}", v as f64 / n as f64);
    let row = |label: &str, cell: &dyn Fn(&Side) -> String| {
        let cells: Vec<String> = sides.iter().map(|s| format!("{:<16}", cell(s))).collect();
        println!("{label:<28}{}", cells.join("").trim_end());
    };
    row("", &|s| s.controller.to_string());
    row("all Ready in", &|s| secs(s.all_ready));
    row("p50 per certificate", &|s| secs(percentile(&s.times, 0.50)));
    row("p99 per certificate", &|s| secs(percentile(&s.times, 0.99)));
    row("peak RSS", &|s| mib(s.peak_kib));
    row("CPU", &|s| secs(s.cpu));
    row("writes per certificate", &|s| per(s.writes()));
    row("requests per certificate", &|s| {
        per(s.requests.values().sum())
    });
    for side in sides {
        let kinds = |counts: &BTreeMap<String, u64>| {
            counts
                .iter()
                // Under 0.01 per certificate: others' writes (cluster-wide counts).
                .filter(|(_, v)| **v as f64 / n as f64 >= 0.01)
                .map(|(k, v)| format!("{k} {}", per(*v)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        line(&format!("{} writes", side.controller), kinds(&side.changes));
        line(
            &format!("{} requests", side.controller),
            kinds(&side.requests),
        );
    }
    line(
        "",
        "writes: changes seen by watches in the side's namespace (and of the tenant); \
         requests: apiserver_request_total write verbs of the same resources, cluster-wide",
    );
}

pub async fn run(
    args: CertificateArgs,
    env: BTreeMap<String, String>,
    client: kube::Client,
) -> Result<()> {
    if args.compare_cert_manager.is_some() && args.issuer != IssuerKind::TenantCa {
        bail!("--compare-cert-manager compares CA issuance: use it with --issuer tenant-ca");
    }
    let run = run_id()?;
    let tenant = format!("bc-{run}");
    let n = args.count as usize;
    line(
        "certificates",
        format!(
            "{n} of tenant {tenant} (issuer {}, operator concurrency {}, run {run})",
            args.issuer
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string()),
            args.concurrency
        ),
    );
    let flags = OperatorFlags {
        concurrency: args.concurrency,
        // The edge would add a host certificate per tenant: not what is measured.
        edge: false,
        ..OperatorFlags::default()
    };
    let mut operator = Operator::start(&flags, &run)?;
    operator.wait_serving().await?;

    let issuer = format!("bc-{run}");
    let measured = ossature_side(&args, &env, &client, &operator, &run, &tenant, &issuer).await;
    // Deleted even when measuring failed: only this operator can release their finalizers.
    let deleted = delete_all(
        &client,
        &run,
        std::slice::from_ref(&tenant),
        1,
        args.timeout(),
    )
    .await;
    if args.issuer == IssuerKind::Acme {
        delete_issuer(&client, &issuer).await;
    }
    drop(operator);
    let (ours, calls_per_certificate) = measured?;
    deleted?;

    let theirs = match (&args.compare_cert_manager, &args.cert_manager_crds) {
        (Some(binary), Some(crds)) => {
            Some(cert_manager_side(&args, &env, &client, &run, binary, crds).await?)
        }
        _ => None,
    };

    let mut sides = vec![&ours];
    sides.extend(&theirs);
    print_sides(&sides, n);
    line(
        "ossature backend calls",
        format!(
            "per certificate: writes {}  reads {}",
            super::by_backend(&calls_per_certificate.0),
            super::by_backend(&calls_per_certificate.1)
        ),
    );
    line(
        "ossature reconciles",
        super::by_backend(&calls_per_certificate.2),
    );
    if let Some(theirs) = &theirs {
        let time = ours.all_ready.as_secs_f64() / theirs.all_ready.as_secs_f64();
        let memory = ours.peak_kib as f64 / theirs.peak_kib as f64;
        let verdict = |ratio: f64, goal: f64| if ratio <= goal { "met" } else { "missed" };
        line(
            "ossature / cert-manager",
            format!(
                "time {time:.2} (goal <= 0.50: {}), memory {memory:.2} (goal <= 0.25: {}), writes {:.2}",
                verdict(time, 0.5),
                verdict(memory, 0.25),
                ours.writes() as f64 / theirs.writes().max(1) as f64
            ),
        );
    }
    let summary = |side: &Side| {
        format!(
            "{}_all_ready={} {0}_p50={} {0}_p99={} {0}_rss_peak={} {0}_writes_per_cert={:.2}",
            side.controller.replace('-', "_"),
            secs(side.all_ready),
            secs(percentile(&side.times, 0.50)),
            secs(percentile(&side.times, 0.99)),
            mib(side.peak_kib).replace(' ', ""),
            side.writes() as f64 / n as f64,
        )
    };
    println!(
        "summary: certificates={n} issuer={} {}{}",
        args.issuer
            .to_possible_value()
            .map_or("?".into(), |v| v.get_name().to_string()),
        summary(&ours),
        theirs
            .as_ref()
            .map(|t| format!(" {}", summary(t)))
            .unwrap_or_default()
    );
    Ok(())
}

/// The operator's backend writes and reads per certificate, and its
/// reconciles by controller, while the certificates were issued.
type CallsPerCertificate = (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

/// The tenant (Ready), the AcmeIssuer if asked for (Ready), then the
/// certificates; returns the figures and the operator's backend calls per
/// certificate.
async fn ossature_side(
    args: &CertificateArgs,
    env: &BTreeMap<String, String>,
    client: &kube::Client,
    operator: &Operator,
    run: &str,
    tenant: &str,
    issuer_name: &str,
) -> Result<(Side, CallsPerCertificate)> {
    let began = Instant::now();
    super::create_tenants(
        client,
        &[tenant.to_string()],
        run,
        Isolation::Organization,
        1,
    )
    .await?;
    let tenants: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<Tenant>(&()));
    let by_name = watcher::Config::default().fields(&format!("metadata.name={tenant}"));
    wait_ready(
        &tenants,
        by_name.clone(),
        1,
        began,
        args.timeout(),
        "tenants",
    )
    .await?;
    let issuer = match args.issuer {
        IssuerKind::TenantCa => json!({"tenantCA": {}}),
        IssuerKind::Acme => {
            create_acme_issuer(client, env, run, issuer_name).await?;
            json!({"acme": {"name": issuer_name}})
        }
    };

    let namespace = ossature_model::tenant_namespace(tenant);
    let root = std::env::var("OSSATURE_ROOT_DOMAIN").unwrap_or_else(|_| "ossature.test".into());
    let objects = (0..args.count)
        .map(|i| {
            let name = format!("c-{i}");
            serde_json::from_value(json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "dnsNames": [format!("c{i}.{tenant}.{root}")],
                    "keyAlgorithm": "ECDSAP256",
                    "secretName": name,
                    "issuer": issuer,
                },
            }))
            .context("building a Certificate")
        })
        .collect::<Result<Vec<DynamicObject>>>()?;
    let certificates = ApiResource::erase::<Certificate>(&());
    let watched = vec![
        in_namespace(client, &certificates, &namespace),
        in_namespace(client, &ApiResource::erase::<Secret>(&()), &namespace),
        in_namespace(client, &ApiResource::erase::<Event>(&()), &namespace),
        ("tenants".to_string(), tenants, by_name),
    ];
    let resources = [
        ("ossature.dev", "certificates"),
        ("", "secrets"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("ossature.dev", "tenants"),
    ];
    let before = calls(&operator.metrics).await?;
    let reconciles_before = reconciles(&operator.metrics).await?;
    let side = measure(
        client,
        "ossature",
        Api::namespaced_with(client.clone(), &namespace, &certificates),
        objects,
        watched,
        &resources,
        operator.pid(),
        args.timeout(),
    )
    .await?;
    let after = calls(&operator.metrics).await?;
    let runs: BTreeMap<String, String> = reconciles(&operator.metrics)
        .await?
        .into_iter()
        .map(|(controller, count)| {
            let earlier = reconciles_before.get(&controller).copied().unwrap_or(0);
            (controller, count.saturating_sub(earlier).to_string())
        })
        .filter(|(_, count)| count != "0")
        .collect();
    let n = args.count as f64;
    let one_decimal = |m: BTreeMap<String, f64>| {
        m.into_iter()
            .map(|(b, v)| (b, format!("{v:.1}")))
            .collect::<BTreeMap<_, _>>()
    };
    let writes = one_decimal(per_tenant(delta(&before, &after, "write"), n));
    let reads = one_decimal(per_tenant(delta(&before, &after, "read"), n));
    Ok((side, (writes, reads, runs)))
}

/// An AcmeIssuer of the stack's Pebble, waited on until Ready.
async fn create_acme_issuer(
    client: &kube::Client,
    env: &BTreeMap<String, String>,
    run: &str,
    name: &str,
) -> Result<()> {
    let var = |name: &str| {
        env.get(name)
            .cloned()
            .with_context(|| format!("the stack's environment has no {name}"))
    };
    let bundle_path = var("OSSATURE_ACME_CA_BUNDLE")?;
    let bundle =
        std::fs::read_to_string(&bundle_path).with_context(|| format!("reading {bundle_path}"))?;
    let unlimited = json!({"count": 1_000_000, "period": "1s"});
    let issuer: AcmeIssuer = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "directory": var("OSSATURE_ACME_DIRECTORY")?,
            "emails": ["bench@ossature.test"],
            "caBundle": bundle,
            "solver": {"challTestSrv": {"url": var("OSSATURE_ACME_CHALLENGE_ADMIN_URL")?}},
            "rateLimits": {
                "newOrders": unlimited, "certificatesPerDomain": unlimited,
                "duplicateCertificates": unlimited, "failedValidations": unlimited,
            },
        },
    }))
    .context("building the AcmeIssuer")?;
    Api::<AcmeIssuer>::all(client.clone())
        .create(&PostParams::default(), &issuer)
        .await
        .with_context(|| format!("creating AcmeIssuer {name}"))?;
    let issuers: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::erase::<AcmeIssuer>(&()));
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    wait_ready(
        &issuers,
        by_name,
        1,
        Instant::now(),
        Duration::from_secs(120),
        "AcmeIssuers",
    )
    .await?;
    Ok(())
}

/// Deletes the bench's AcmeIssuer and waits (a while) for it to go.
async fn delete_issuer(client: &kube::Client, name: &str) {
    let issuers: Api<AcmeIssuer> = Api::all(client.clone());
    if let Err(e) = issuers.delete(name, &DeleteParams::default()).await {
        eprintln!("warning: deleting AcmeIssuer {name}: {e}");
        return;
    }
    for _ in 0..120 {
        if matches!(issuers.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("warning: AcmeIssuer {name} still present after 60s");
}

/// A watched kind: its label, its namespaced API and the watch's selection.
pub(super) type Watched = (String, Api<DynamicObject>, watcher::Config);

pub(super) fn in_namespace(
    client: &kube::Client,
    resource: &ApiResource,
    namespace: &str,
) -> Watched {
    let label = match resource.group.as_str() {
        "" => resource.plural.clone(),
        group => format!("{}.{group}", resource.plural),
    };
    (
        label,
        Api::namespaced_with(client.clone(), namespace, resource),
        watcher::Config::default(),
    )
}

/// Creates `objects` with the counters of `watched` and of the apiserver's
/// write requests to `resources` running, waits until all are Ready and a
/// little longer for trailing writes, and reads the controller's memory.
#[allow(clippy::too_many_arguments)]
async fn measure(
    client: &kube::Client,
    controller: &'static str,
    api: Api<DynamicObject>,
    objects: Vec<DynamicObject>,
    watched: Vec<Watched>,
    resources: &[(&str, &str)],
    pid: u32,
    timeout: Duration,
) -> Result<Side> {
    let n = objects.len();
    let counter = Changes::start(watched).await?;
    let requests_before = write_requests(client, resources).await?;
    let began = Instant::now();
    let created: BTreeMap<String, Instant> = stream::iter(objects)
        .map(|object| {
            let api = &api;
            async move {
                let key = object_key(&object);
                let at = Instant::now();
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating {key}"))?;
                anyhow::Ok((key, at))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect()
        .await?;
    let ready = wait_ready(
        &api,
        watcher::Config::default(),
        n,
        began,
        timeout,
        "certificates",
    )
    .await?;
    let last = ready.values().max().copied().unwrap_or(began);
    tokio::time::sleep(SETTLE).await;
    let requests_after = write_requests(client, resources).await?;
    let mut changes = counter.stop();
    let usage = usage(pid)?;

    let mut times: Vec<Duration> = ready
        .iter()
        .filter_map(|(key, at)| Some(at.saturating_duration_since(*created.get(key)?)))
        .collect();
    times.sort();
    // The bench's own creations are not the controller's writes.
    let created_label = changes
        .keys()
        .find(|k| k.starts_with("certificates."))
        .cloned();
    if let Some(label) = created_label {
        let count = changes.entry(label).or_default();
        *count = count.saturating_sub(n as u64);
    }
    let mut requests: BTreeMap<String, u64> = requests_after
        .into_iter()
        .map(|(key, count)| {
            let earlier = requests_before.get(&key).copied().unwrap_or(0);
            (key, count.saturating_sub(earlier))
        })
        .filter(|(_, count)| *count > 0)
        .collect();
    for (key, count) in requests.iter_mut() {
        if key.starts_with("certificates.") && key.ends_with(" POST") {
            *count = count.saturating_sub(n as u64);
        }
    }
    Ok(Side {
        controller,
        all_ready: last.saturating_duration_since(began),
        times,
        peak_kib: usage.peak_kib,
        cpu: usage.cpu,
        changes,
        requests,
    })
}

/// Which watched objects count: all, or those a filter keeps (a watch of
/// every namespace, narrowed to the run's).
pub(super) type Keep = Arc<dyn Fn(&DynamicObject) -> bool + Send + Sync>;

/// What the watches saw change: by label, and by object (an Event by its
/// reason, object and words), each with how often.
#[derive(Default)]
struct Seen {
    counts: BTreeMap<String, u64>,
    objects: BTreeMap<String, u64>,
}

/// Counts the changes (added, modified, deleted) that watches of some kinds see.
pub(super) struct Changes {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Changes {
    /// Starts a watch per kind and returns once each has listed what exists,
    /// so only later changes count.
    pub(super) async fn start(watched: Vec<Watched>) -> Result<Self> {
        Self::start_kept(watched, Arc::new(|_| true)).await
    }

    /// Like [`Changes::start`], counting only the objects `keep` keeps.
    pub(super) async fn start_kept(watched: Vec<Watched>, keep: Keep) -> Result<Self> {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut tasks = Vec::new();
        let mut listed = Vec::new();
        for (label, api, config) in watched {
            seen.lock()
                .expect("never poisoned")
                .counts
                .insert(label.clone(), 0);
            let (done, synced) = tokio::sync::oneshot::channel();
            listed.push(synced);
            let seen = seen.clone();
            let keep = keep.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Some(done);
                let mut initial = true;
                let mut events = std::pin::pin!(watcher(api, config));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Init) => initial = true,
                        Ok(watcher::Event::InitDone) => {
                            initial = false;
                            if let Some(done) = done.take() {
                                let _ = done.send(());
                            }
                        }
                        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))
                            if !initial && keep(&o) =>
                        {
                            let mut seen = seen.lock().expect("never poisoned");
                            *seen.counts.entry(label.clone()).or_default() += 1;
                            *seen.objects.entry(describe(&label, &o)).or_default() += 1;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("warning: watch of {label}: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }));
        }
        for synced in listed {
            tokio::time::timeout(Duration::from_secs(60), synced)
                .await
                .context("a watch that counts writes did not start")?
                .context("a watch that counts writes ended")?;
        }
        Ok(Self { seen, tasks })
    }

    /// The changes by label.
    pub(super) fn stop(self) -> BTreeMap<String, u64> {
        self.stop_by_object().0
    }

    /// The changes by label, and by object.
    pub(super) fn stop_by_object(self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        for task in &self.tasks {
            task.abort();
        }
        let seen = std::mem::take(&mut *self.seen.lock().expect("never poisoned"));
        (seen.counts, seen.objects)
    }
}

/// One changed object in words: an Event by its reason, the object it is
/// about and (the start of) its message; anything else by kind and name.
fn describe(label: &str, object: &DynamicObject) -> String {
    let data = &object.data;
    let involved = &data["involvedObject"];
    match data["reason"].as_str() {
        Some(reason) if involved.is_object() => {
            let message: String = data["message"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            format!(
                "Event {reason} of {} {}/{}: {message}",
                involved["kind"].as_str().unwrap_or("?"),
                involved["namespace"].as_str().unwrap_or_default(),
                involved["name"].as_str().unwrap_or("?"),
            )
        }
        _ => format!(
            "{label} {}/{}",
            object.namespace().unwrap_or_default(),
            object.name_any()
        ),
    }
}

/// `apiserver_request_total` of the write verbs for `resources` (group,
/// plural), summed over codes and scopes, keyed `plural.group VERB`.
async fn write_requests(
    client: &kube::Client,
    resources: &[(&str, &str)],
) -> Result<BTreeMap<String, u64>> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building a request of /metrics")?;
    let text = client
        .request_text(request)
        .await
        .context("reading the apiserver's /metrics")?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!(",{name}=\""))
                .nth(1)
                .or_else(|| line.split(&format!("{{{name}=\"")).nth(1))
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
        };
        let (group, resource, verb) = (label("group"), label("resource"), label("verb"));
        if !["POST", "PUT", "PATCH", "APPLY", "DELETE"].contains(&verb)
            || !label("subresource").is_empty() && label("subresource") != "status"
            || !resources.contains(&(group, resource))
        {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        let key = match group {
            "" => format!("{resource} {verb}"),
            group => format!("{resource}.{group} {verb}"),
        };
        *out.entry(key).or_default() += value as u64;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// cert-manager

/// The cert-manager controller, out of cluster, limited to one namespace;
/// stopped when dropped.
struct CertManager {
    child: Child,
    log: PathBuf,
}

impl Drop for CertManager {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// cert-manager's group and kinds.
fn cert_manager_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// cert-manager's CRDs applied, its side measured, then (also on failure)
/// the controller stopped, its namespace deleted and its CRDs removed.
async fn cert_manager_side(
    args: &CertificateArgs,
    env: &BTreeMap<String, String>,
    client: &kube::Client,
    run: &str,
    binary: &Path,
    crds_dir: &Path,
) -> Result<Side> {
    let namespace = format!("bc-cm-{run}");
    let crds = read_crds(crds_dir)?;
    let measured = async {
        apply_crds(client, &crds).await?;
        cert_manager_measure(args, env, client, binary, &namespace).await
    }
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        eprintln!("warning: deleting namespace {namespace}: {e}");
    }
    let removed = remove_crds(client, &crds).await;
    let side = measured?;
    removed?;
    Ok(side)
}

async fn cert_manager_measure(
    args: &CertificateArgs,
    env: &BTreeMap<String, String>,
    client: &kube::Client,
    binary: &Path,
    namespace: &str,
) -> Result<Side> {
    let mut namespace_object = Namespace::default();
    namespace_object.metadata.name = Some(namespace.to_string());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace_object)
        .await
        .with_context(|| format!("creating namespace {namespace}"))?;

    // The CA: ECDSA P-256, like the tenant CAs OpenBao makes.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ossature-bench cert-manager CA");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&key)?;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": CERT_MANAGER_ISSUER, "namespace": namespace},
        "stringData": {"tls.crt": ca.pem(), "tls.key": key.serialize_pem()},
    }))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating cert-manager's CA Secret")?;
    let issuers = Api::namespaced_with(
        client.clone(),
        namespace,
        &cert_manager_resource("Issuer", "issuers"),
    );
    let issuer: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": CERT_MANAGER_ISSUER, "namespace": namespace},
        "spec": {"ca": {"secretName": CERT_MANAGER_ISSUER}},
    }))?;
    create_retrying(&issuers, &issuer).await?;

    let kubeconfig = env
        .get("KUBECONFIG")
        .context("the stack's environment has no KUBECONFIG")?;
    let log = std::env::temp_dir().join(format!("ossature-bench-cert-manager-{namespace}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(binary)
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg("--leader-elect=false")
        .arg(format!("--namespace={namespace}"))
        .arg(format!("--cluster-resource-namespace={namespace}"))
        .arg(format!(
            "--metrics-listen-address=127.0.0.1:{}",
            free_port()?
        ))
        .arg(format!(
            "--internal-healthz-listen-address=127.0.0.1:{}",
            free_port()?
        ))
        .args(&args.cert_manager_args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("sharing cert-manager's log")?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut controller = CertManager { child, log };
    // Warm, as the operator is: its Issuer Ready before any certificate.
    let ready = wait_ready(
        &issuers,
        watcher::Config::default(),
        1,
        Instant::now(),
        CERT_MANAGER_START_TIMEOUT,
        "cert-manager Issuers",
    )
    .await;
    if let Some(status) = controller.child.try_wait()? {
        bail!(
            "cert-manager exited ({status}); see {}",
            controller.log.display()
        );
    }
    ready.with_context(|| format!("see {}", controller.log.display()))?;

    let root = std::env::var("OSSATURE_ROOT_DOMAIN").unwrap_or_else(|_| "ossature.test".into());
    let lifetime = "720h"; // the Ossature default
    let objects = (0..args.count)
        .map(|i| {
            let name = format!("c-{i}");
            serde_json::from_value(json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "dnsNames": [format!("c{i}.{namespace}.{root}")],
                    "secretName": name,
                    "duration": lifetime,
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {"name": CERT_MANAGER_ISSUER, "kind": "Issuer"},
                },
            }))
            .context("building a cert-manager Certificate")
        })
        .collect::<Result<Vec<DynamicObject>>>()?;
    let certificates = cert_manager_resource("Certificate", "certificates");
    let watched = vec![
        in_namespace(client, &certificates, namespace),
        in_namespace(
            client,
            &cert_manager_resource("CertificateRequest", "certificaterequests"),
            namespace,
        ),
        in_namespace(client, &ApiResource::erase::<Secret>(&()), namespace),
        in_namespace(client, &ApiResource::erase::<Event>(&()), namespace),
    ];
    let resources = [
        ("cert-manager.io", "certificates"),
        ("cert-manager.io", "certificaterequests"),
        ("", "secrets"),
        ("", "events"),
        ("events.k8s.io", "events"),
    ];
    measure(
        client,
        "cert-manager",
        Api::namespaced_with(client.clone(), namespace, &certificates),
        objects,
        watched,
        &resources,
        controller.child.id(),
        args.timeout(),
    )
    .await
    .with_context(|| format!("cert-manager's log: {}", controller.log.display()))
}

/// Creates an object of a kind just established, retrying while the
/// apiserver does not serve it yet.
async fn create_retrying(api: &Api<DynamicObject>, object: &DynamicObject) -> Result<()> {
    let mut attempts = 0;
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("creating cert-manager's Issuer"),
        }
    }
}

/// The CRDs of a directory of YAML files.
fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>> {
    use serde::Deserialize;
    let mut crds = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document)
                .with_context(|| format!("parsing {}", path.display()))?;
            if value["kind"] == "CustomResourceDefinition" {
                crds.push(
                    serde_json::from_value(value)
                        .with_context(|| format!("reading a CRD of {}", path.display()))?,
                );
            }
        }
    }
    if crds.is_empty() {
        bail!("no CustomResourceDefinition in {}", dir.display());
    }
    Ok(crds)
}

async fn apply_crds(client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    ossature_operator::crds::apply(client, crds, FIELD_MANAGER).await
}

async fn remove_crds(client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = crds
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    for name in &names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting CRD {name}")),
        }
    }
    let started = Instant::now();
    for name in &names {
        while api.get_opt(name).await?.is_some() {
            if started.elapsed() > Duration::from_secs(300) {
                bail!("CRD {name} still present after 300s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}
