//! `ossature-bench messaging`: the product's messaging on the platform at
//! scale. Tenants are made Ready first (each with the Scope its services
//! name as owner and an Environment); then Topics with Avro schemas and
//! ServiceIdentities with grants on them are applied into the Ready
//! environments at once, and from that moment on the bench measures: the
//! time until every one is Ready (per kind, p50/p99, and in all), the same
//! backend calls made directly as a baseline (see [`direct`]) and the
//! ratio, the operator's backend writes per object, the writes of a steady
//! period after everything is Ready (which must be none; each one is named),
//! and the operator's memory. Then the Topics and ServiceIdentities are
//! deleted: the time until all are gone, and what is left of them in any
//! backend (which must be nothing, see [`left`]).
//!
//! Every topic of a tenant has a producer and a consumer among its
//! services (see [`grant_plan`]), so its grants come from two
//! ServiceIdentities and each service holds grants on several topics.

mod direct;
mod left;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Event, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use ossature_crds::{Certificate, Environment, Scope, ServiceIdentity, Tenant, Topic};
use ossature_model::names::{TenantNames, tenant_namespace};
use serde_json::{Value, json};

use super::certificates::{Changes, Watched};
use super::{
    Backends, Isolation, Operator, OperatorFlags, PROGRESS_EVERY, RUN_LABEL, Usage, by_backend,
    calls, create_tenants, delete_all, delta, latencies, leftovers, line, mib, object_key,
    percentile, reconciles, run_id, samples_f64, secs, tenants_ready, usage, wait_ready,
};

/// The Scope every service names as its owner.
const OWNER: &str = "global";
/// The environment the operator's Topics and services live in, and the
/// one the baseline makes its own in (so neither touches the other's).
const ENVIRONMENT: &str = "prod";
const BASELINE_ENVIRONMENT: &str = "base";
/// Objects created at once by the bench.
const CREATE_CONCURRENCY: usize = 32;
/// After the last Ready, before the steady period: trailing status writes.
const SETTLE: Duration = Duration::from_secs(5);
/// The CRD's bound on a service's grants.
const MAX_GRANTS: usize = 100;

#[derive(clap::Args, Debug)]
pub struct MessagingArgs {
    /// Tenants the topics and services are spread over, 1 to 100. Each is
    /// made Ready, with its Scope and Environment, before the clock starts.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    tenants: u32,
    /// Topics in all, each with an Avro schema, spread evenly over the
    /// tenants.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20000))]
    topics: u32,
    /// ServiceIdentities in all, spread evenly over the tenants. Topic i of
    /// a tenant is produced by its service i mod S and consumed (with a
    /// subscription named after the consumer) by service i+1 mod S, so each
    /// service holds about 2 x topics / services grants (at most 100).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=5000))]
    services: u32,
    /// The operator's --concurrency (objects of one kind reconciled at
    /// once); the baseline provisions as many topics, and as many
    /// services, at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Resync interval given to the operator, so the steady period holds
    /// reconciles of every object.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Length of the steady period after all are Ready, during which the
    /// operator must write nothing.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Longest wait for the tenants, for the Topics and services to be
    /// Ready, and for them to be deleted.
    #[arg(long, default_value_t = 2400)]
    timeout_seconds: u64,
    /// Leave out the baseline (and so the ratio).
    #[arg(long)]
    no_baseline: bool,
}

impl MessagingArgs {
    fn concurrency(&self) -> usize {
        usize::from(self.concurrency)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }
}

// ---------------------------------------------------------------------------
// What is created

/// How a service uses one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Uses {
    produce: bool,
    consume: bool,
}

/// The grants of a tenant's `services`, each a map from topic index to
/// use: topic `i` is produced by service `i % services` and consumed by
/// service `(i + 1) % services`, so every topic has a producer and a
/// consumer and the grants spread evenly (with one service, it does both).
fn grant_plan(topics: usize, services: usize) -> Vec<BTreeMap<usize, Uses>> {
    let mut plan = vec![BTreeMap::<usize, Uses>::new(); services];
    if services == 0 {
        return plan;
    }
    for topic in 0..topics {
        plan[topic % services].entry(topic).or_default().produce = true;
        plan[(topic + 1) % services]
            .entry(topic)
            .or_default()
            .consume = true;
    }
    plan
}

/// `total` spread over `parts`: the first `total % parts` get one more.
fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

fn topic_name(index: usize) -> String {
    format!("t-{index}")
}

fn service_name(index: usize) -> String {
    format!("s-{index}")
}

/// A ULID of the registry, distinct per service of a run.
fn service_id(index: usize) -> String {
    format!("01JB{index:022}")
}

/// The Avro record of topic `index`: a few fields, defaults included, as
/// a product's event has them.
fn schema_of(index: usize) -> String {
    json!({
        "type": "record", "name": format!("Event{index}"), "namespace": "ossature.bench",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "amount", "type": "long", "default": 0},
            {"name": "note", "type": ["null", "string"], "default": null},
        ],
    })
    .to_string()
}

/// One tenant's share: its name, and its topics and services.
#[derive(Debug, Clone)]
struct Share {
    tenant: String,
    topics: usize,
    services: usize,
    /// The index of its first service in the run, for distinct ids.
    first_service: usize,
}

impl Share {
    /// Its Topics and ServiceIdentities in `environment`, as JSON.
    fn objects(&self, environment: &str, run: &str) -> (Vec<Value>, Vec<Value>) {
        let namespace = TenantNames::new(&self.tenant)
            .environment(environment)
            .namespace;
        let metadata = |name: String| json!({"name": name, "namespace": namespace, "labels": {RUN_LABEL: run}});
        let topics = (0..self.topics)
            .map(|i| {
                json!({
                    "apiVersion": "ossature.dev/v1alpha1", "kind": "Topic",
                    "metadata": metadata(topic_name(i)),
                    "spec": {"schema": {"type": "AVRO", "definition": schema_of(i)}},
                })
            })
            .collect();
        let services = grant_plan(self.topics, self.services)
            .into_iter()
            .enumerate()
            .map(|(j, uses)| {
                let grants: Vec<Value> = uses
                    .iter()
                    .map(|(topic, uses)| {
                        let mut actions = Vec::new();
                        if uses.produce {
                            actions.push("Produce");
                        }
                        if uses.consume {
                            actions.push("Consume");
                        }
                        let mut grant = json!({"topic": topic_name(*topic), "actions": actions});
                        if uses.consume {
                            grant["subscriptions"] = json!([service_name(j)]);
                        }
                        grant
                    })
                    .collect();
                json!({
                    "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
                    "metadata": metadata(service_name(j)),
                    "spec": {
                        "id": service_id(self.first_service + j),
                        "owner": OWNER,
                        "description": format!("service {j} of the messaging benchmark"),
                        "grants": grants,
                    },
                })
            })
            .collect();
        (topics, services)
    }

    fn topic_names(&self) -> Vec<String> {
        (0..self.topics).map(topic_name).collect()
    }

    fn service_names(&self) -> Vec<String> {
        (0..self.services).map(service_name).collect()
    }
}

/// The run's tenants and their shares; refused when a service would need
/// more grants than a ServiceIdentity holds.
fn shares(args: &MessagingArgs, run: &str) -> Result<Vec<Share>> {
    let tenants = args.tenants as usize;
    let topics = spread(args.topics as usize, tenants);
    let services = spread(args.services as usize, tenants);
    let mut first_service = 0;
    let mut out = Vec::new();
    for (i, (topics, services)) in topics.into_iter().zip(services).enumerate() {
        let most = grant_plan(topics, services)
            .iter()
            .map(BTreeMap::len)
            .max()
            .unwrap_or(0);
        if most > MAX_GRANTS {
            bail!(
                "{topics} topics over {services} services of a tenant give a service {most} grants; \
                 a ServiceIdentity holds at most {MAX_GRANTS}: raise --services or lower --topics"
            );
        }
        out.push(Share {
            tenant: format!("bm-{run}-{i}"),
            topics,
            services,
            first_service,
        });
        first_service += services;
    }
    Ok(out)
}

fn typed<T: serde::de::DeserializeOwned>(values: &[Value]) -> Result<Vec<T>> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).context("building an object"))
        .collect()
}

/// Objects of kind `K` to create, with their kind's resource.
fn dynamic<K: kube::Resource<DynamicType = ()>>(
    values: Vec<Value>,
) -> Result<Vec<(ApiResource, DynamicObject)>> {
    values
        .into_iter()
        .map(|v| {
            let object = serde_json::from_value(v).context("building an object")?;
            Ok((ApiResource::erase::<K>(&()), object))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The run

pub async fn run(
    args: MessagingArgs,
    env: BTreeMap<String, String>,
    client: kube::Client,
) -> Result<()> {
    let run = run_id()?;
    let shares = shares(&args, &run)?;
    let grants: usize = shares
        .iter()
        .map(|s| {
            grant_plan(s.topics, s.services)
                .iter()
                .map(BTreeMap::len)
                .sum::<usize>()
        })
        .sum();
    line(
        "messaging",
        format!(
            "{} topics with Avro schemas, {} services with {grants} grants, {} tenants \
             (concurrency {}, resync {}s, run {run})",
            args.topics, args.services, args.tenants, args.concurrency, args.resync_seconds
        ),
    );
    let backends = Backends::from_env(&env)?;
    let flags = OperatorFlags {
        resync_seconds: args.resync_seconds,
        concurrency: args.concurrency,
        // The edge would add a host and its certificate per tenant: not measured here.
        edge: false,
        ..OperatorFlags::default()
    };
    let mut operator = Operator::start(&flags, &run)?;
    operator.wait_serving().await?;

    let names: Vec<String> = shares.iter().map(|s| s.tenant.clone()).collect();
    let measured = measure(&args, &env, &client, &backends, &operator, &run, &shares).await;
    if measured.is_err() {
        // Their own deletion first, so none is reconciled while its
        // environment goes.
        if let Err(e) = delete_objects(&client, &run, args.timeout()).await {
            eprintln!("warning: deleting the Topics and services: {e:#}");
        }
    }
    // Deleted even when measuring failed: only this operator can release their finalizers.
    let deleted = delete_all(&client, &run, &names, args.concurrency(), args.timeout()).await;
    drop(operator);
    let figures = measured?;
    deleted.context("deleting the tenants")?;
    let tenants_left = leftovers(
        &client,
        &backends,
        (Isolation::Organization, args.concurrency()),
        &names,
    )
    .await?;
    line("tenants left behind", &tenants_left);
    println!("{}", figures.summary(&args));

    let mut failures = Vec::new();
    let steady = figures.operator.steady_writes();
    if steady > 0 {
        failures.push(format!(
            "Topics and services all Ready caused {steady} writes"
        ));
    }
    if figures.deletion.remaining > 0 {
        failures.push(format!(
            "{} Topics and services were not deleted within {}s",
            figures.deletion.remaining, args.timeout_seconds
        ));
    }
    if figures.left.total() > 0 {
        failures.push(format!("deletion left objects behind: {}", figures.left));
    }
    if tenants_left.total() > 0 {
        failures.push(format!("the tenants left objects behind: {tenants_left}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Tenants Ready, the baseline, the operator's run, the steady period and
/// the deletion.
async fn measure(
    args: &MessagingArgs,
    env: &BTreeMap<String, String>,
    client: &kube::Client,
    backends: &Backends,
    operator: &Operator,
    run: &str,
    shares: &[Share],
) -> Result<Figures> {
    let began = Instant::now();
    let mut environments = vec![ENVIRONMENT];
    if !args.no_baseline {
        environments.push(BASELINE_ENVIRONMENT);
    }
    let tenants = tenants_with_environments(args, client, run, shares, &environments).await?;
    let tenants_ready_in = began.elapsed();
    line(
        "tenants Ready in",
        format!(
            "{} ({} tenants with scope {OWNER} and environments {})",
            secs(tenants_ready_in),
            tenants.len(),
            environments.join(", ")
        ),
    );

    let baseline = match args.no_baseline {
        true => None,
        false => {
            let objects = shares
                .iter()
                .map(|s| {
                    let (topics, services) = s.objects(BASELINE_ENVIRONMENT, run);
                    Ok((
                        typed::<Topic>(&topics)?,
                        typed::<ServiceIdentity>(&services)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let figures = direct::run(env, client, &tenants, &objects, args.concurrency()).await?;
            let placed = placed(shares, &tenants, BASELINE_ENVIRONMENT);
            let left = left::left(client, backends, &placed, args.concurrency()).await?;
            figures.print(&left);
            if left.total() > 0 {
                bail!("the baseline left objects behind: {left}");
            }
            Some(figures)
        }
    };

    let operator_figures = run_operator(args, client, operator, run, shares).await?;
    let objects = shares.iter().map(|s| s.topics + s.services).sum();
    operator_figures.print(args, objects, baseline.as_ref());

    let deletion = delete_objects(client, run, args.timeout()).await?;
    let peak_kib = usage(operator.pid())?.peak_kib;
    let placed = placed(shares, &tenants, ENVIRONMENT);
    let left = left::left(client, backends, &placed, args.concurrency()).await?;
    let figures = Figures {
        objects,
        tenants_ready_in,
        baseline,
        operator: operator_figures,
        deletion,
        peak_kib,
        left,
    };
    figures.print_deletion();
    Ok(figures)
}

/// The tenants, Ready, each with its Scope and environments Ready; returns
/// them as they are then (their realm is in their status).
async fn tenants_with_environments(
    args: &MessagingArgs,
    client: &kube::Client,
    run: &str,
    shares: &[Share],
    environments: &[&str],
) -> Result<Vec<Tenant>> {
    let began = Instant::now();
    let names: Vec<String> = shares.iter().map(|s| s.tenant.clone()).collect();
    create_tenants(
        client,
        &names,
        run,
        Isolation::Organization,
        args.concurrency(),
    )
    .await?;
    tenants_ready(client, run, names.len(), began, args.timeout()).await?;

    let (mut scopes, mut envs) = (Vec::new(), Vec::new());
    for tenant in &names {
        let metadata = |name: &str| json!({"name": name, "namespace": tenant_namespace(tenant), "labels": {RUN_LABEL: run}});
        scopes.push(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": metadata(OWNER), "spec": {"displayName": "Global"},
        }));
        for environment in environments {
            envs.push(json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
                "metadata": metadata(environment), "spec": {"kind": "Production"},
            }));
        }
    }
    let mut objects = dynamic::<Scope>(scopes)?;
    objects.extend(dynamic::<Environment>(envs)?);
    let by_run = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let scopes = Api::all_with(client.clone(), &ApiResource::erase::<Scope>(&()));
    let envs = Api::all_with(client.clone(), &ApiResource::erase::<Environment>(&()));
    tokio::try_join!(
        create(client, objects),
        wait_ready(
            &scopes,
            by_run.clone(),
            names.len(),
            began,
            args.timeout(),
            "scopes"
        ),
        wait_ready(
            &envs,
            by_run,
            names.len() * environments.len(),
            began,
            args.timeout(),
            "environments"
        ),
    )?;
    let api: Api<Tenant> = Api::all(client.clone());
    let mut tenants = Vec::new();
    for name in &names {
        tenants.push(
            api.get(name)
                .await
                .with_context(|| format!("reading tenant {name}"))?,
        );
    }
    Ok(tenants)
}

/// Creates `objects`, [`CREATE_CONCURRENCY`] at a time; returns how long it took.
async fn create(
    client: &kube::Client,
    objects: Vec<(ApiResource, DynamicObject)>,
) -> Result<Duration> {
    let began = Instant::now();
    stream::iter(objects)
        .map(|(resource, object)| async move {
            let namespace = object.namespace().unwrap_or_default();
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("creating {} {}", resource.kind, object_key(&object)))?;
            anyhow::Ok(())
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(began.elapsed())
}

/// Where one tenant's objects of an environment are, for [`left::left`].
fn placed(shares: &[Share], tenants: &[Tenant], environment: &str) -> Vec<left::Placed> {
    shares
        .iter()
        .zip(tenants)
        .map(|(share, tenant)| left::Placed {
            tenant: share.tenant.clone(),
            environment: environment.to_string(),
            realm: tenant.status.as_ref().and_then(|s| s.realm.clone()),
            topics: share.topic_names(),
            services: share.service_names(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The operator's run

/// What the operator did from the first creation until all were Ready,
/// then in the steady period.
struct OperatorFigures {
    created_in: Duration,
    /// Each Topic's and each service's time from the first creation to
    /// Ready, sorted.
    topics: Vec<Duration>,
    services: Vec<Duration>,
    writes: BTreeMap<String, u64>,
    reads: BTreeMap<String, u64>,
    reconciles: BTreeMap<String, u64>,
    /// Mean time and count of each controller's steps, by condition.
    steps: Vec<(String, f64, u64)>,
    /// Failed steps by controller, condition and category.
    failures: BTreeMap<String, u64>,
    at_ready: Usage,
    steady_writes: BTreeMap<String, u64>,
    steady_reads: BTreeMap<String, u64>,
    steady_reconciles: BTreeMap<String, u64>,
    /// What changed in the apiserver during the steady period, by object.
    steady_changes: BTreeMap<String, u64>,
    after_steady: Usage,
}

impl OperatorFigures {
    fn all_ready(&self) -> Duration {
        let last = |times: &[Duration]| times.last().copied().unwrap_or_default();
        last(&self.topics).max(last(&self.services))
    }

    fn steady_writes(&self) -> u64 {
        self.steady_writes.values().sum()
    }
}

async fn run_operator(
    args: &MessagingArgs,
    client: &kube::Client,
    operator: &Operator,
    run: &str,
    shares: &[Share],
) -> Result<OperatorFigures> {
    let mut objects = Vec::new();
    let (mut topic_count, mut service_count) = (0, 0);
    for share in shares {
        let (topics, services) = share.objects(ENVIRONMENT, run);
        topic_count += topics.len();
        service_count += services.len();
        objects.extend(dynamic::<Topic>(topics)?);
        objects.extend(dynamic::<ServiceIdentity>(services)?);
    }
    let by_run = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let topics = Api::all_with(client.clone(), &ApiResource::erase::<Topic>(&()));
    let services = Api::all_with(client.clone(), &ApiResource::erase::<ServiceIdentity>(&()));

    let metrics = &operator.metrics;
    let before = calls(metrics).await?;
    let runs_before = reconciles(metrics).await?;
    let steps_before = step_times(metrics).await?;
    let failures_before = step_failures(metrics).await?;
    let began = Instant::now();
    let (created_in, topics_ready, services_ready) = tokio::try_join!(
        create(client, objects),
        wait_ready(
            &topics,
            by_run.clone(),
            topic_count,
            began,
            args.timeout(),
            "topics"
        ),
        wait_ready(
            &services,
            by_run,
            service_count,
            began,
            args.timeout(),
            "services"
        ),
    )?;
    let after_ready = calls(metrics).await?;
    let at_ready = usage(operator.pid())?;
    let runs_after = reconciles(metrics).await?;
    let steps = mean_steps(&steps_before, &step_times(metrics).await?);
    let failures = counter_delta(&failures_before, &step_failures(metrics).await?);
    let times = |ready: BTreeMap<String, Instant>| {
        let mut times: Vec<Duration> = ready.into_values().map(|t| t - began).collect();
        times.sort();
        times
    };

    tokio::time::sleep(SETTLE).await;
    let watching = Changes::start_kept(steady_watches(client, run), keep_run(run)).await?;
    let steady_start = calls(metrics).await?;
    let steady_runs = reconciles(metrics).await?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_end = calls(metrics).await?;
    let steady_runs_end = reconciles(metrics).await?;
    let (_, steady_changes) = watching.stop_by_object();
    Ok(OperatorFigures {
        created_in,
        topics: times(topics_ready),
        services: times(services_ready),
        writes: delta(&before, &after_ready, "write"),
        reads: delta(&before, &after_ready, "read"),
        reconciles: counter_delta(&runs_before, &runs_after),
        steps,
        failures,
        at_ready,
        steady_writes: delta(&steady_start, &steady_end, "write"),
        steady_reads: delta(&steady_start, &steady_end, "read"),
        steady_reconciles: counter_delta(&steady_runs, &steady_runs_end),
        steady_changes,
        after_steady: usage(operator.pid())?,
    })
}

/// The kinds whose changes during the steady period are named: what the
/// operator writes in the apiserver for Topics and services (statuses,
/// their ServiceAccounts, Certificates and Secrets, Events) and for their
/// tenants.
fn steady_watches(client: &kube::Client, run: &str) -> Vec<Watched> {
    let everywhere = |resource: ApiResource| {
        let label = match resource.group.as_str() {
            "" => resource.plural.clone(),
            group => format!("{}.{group}", resource.plural),
        };
        (
            label,
            Api::all_with(client.clone(), &resource),
            watcher::Config::default(),
        )
    };
    let mut watched = vec![
        everywhere(ApiResource::erase::<Topic>(&())),
        everywhere(ApiResource::erase::<ServiceIdentity>(&())),
        everywhere(ApiResource::erase::<Certificate>(&())),
        everywhere(ApiResource::erase::<Environment>(&())),
        everywhere(ApiResource::erase::<Scope>(&())),
        everywhere(ApiResource::erase::<ServiceAccount>(&())),
        everywhere(ApiResource::erase::<Secret>(&())),
        everywhere(ApiResource::erase::<Event>(&())),
    ];
    let (label, api, _) = everywhere(ApiResource::erase::<Tenant>(&()));
    watched.push((
        label,
        api,
        watcher::Config::default().labels(&format!("{RUN_LABEL}={run}")),
    ));
    watched
}

/// Keeps the run's objects: in its tenants' namespaces, or its Tenants.
fn keep_run(run: &str) -> super::certificates::Keep {
    let tenant = format!("bm-{run}-");
    let namespace = tenant_namespace(&tenant);
    Arc::new(move |object: &DynamicObject| match object.namespace() {
        Some(ns) => ns.starts_with(&namespace),
        None => object.name_any().starts_with(&tenant),
    })
}

/// How the deletion of the Topics and services went.
struct Deletion {
    /// From the first deletion until all were gone, or until the bench
    /// stopped waiting.
    took: Duration,
    /// How many were still there then.
    remaining: usize,
}

/// Deletes the run's Topics and ServiceIdentities at once and waits until
/// the operator has let every one go, or `timeout` has passed.
async fn delete_objects(client: &kube::Client, run: &str, timeout: Duration) -> Result<Deletion> {
    let by_run = ListParams::default().labels(&format!("{RUN_LABEL}={run}"));
    let kinds = [
        ApiResource::erase::<Topic>(&()),
        ApiResource::erase::<ServiceIdentity>(&()),
    ]
    .map(|resource| {
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        (resource, api)
    });
    let remaining = || async {
        let mut present = Vec::new();
        for (resource, api) in &kinds {
            for object in api.list_metadata(&by_run).await?.items {
                let namespace = object.metadata.namespace.clone().unwrap_or_default();
                present.push((resource.clone(), namespace, object.name_any()));
            }
        }
        anyhow::Ok(present)
    };
    let began = Instant::now();
    let targets = remaining().await?;
    let total = targets.len();
    stream::iter(targets)
        .map(|(resource, namespace, name)| async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &namespace, &resource);
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("deleting {namespace}/{name}")),
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let mut next_progress = PROGRESS_EVERY;
    loop {
        let left = remaining().await?.len();
        if left == 0 || began.elapsed() > timeout {
            return Ok(Deletion {
                took: began.elapsed(),
                remaining: left,
            });
        }
        if began.elapsed() > next_progress {
            eprintln!(
                "{left} of {total} Topics and services still present after {:.0}s",
                began.elapsed().as_secs_f64()
            );
            next_progress += PROGRESS_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// The operator's metrics

/// Step times by `controller/condition`: (sum of seconds, count).
type StepTimes = BTreeMap<String, (f64, f64)>;

async fn step_times(url: &str) -> Result<StepTimes> {
    let mut out = StepTimes::new();
    for (suffix, sum) in [("sum", true), ("count", false)] {
        let family = format!("ossature_step_duration_seconds_{suffix}");
        for (sample, value) in samples_f64(url, &family).await? {
            let key = format!(
                "{}/{}",
                super::label(&sample, "controller"),
                super::label(&sample, "condition")
            );
            let entry = out.entry(key).or_default();
            if sum {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
    }
    Ok(out)
}

/// The mean time and the count of each step run between two readings,
/// longest first.
fn mean_steps(before: &StepTimes, after: &StepTimes) -> Vec<(String, f64, u64)> {
    let mut steps: Vec<(String, f64, u64)> = after
        .iter()
        .filter_map(|(key, (sum, count))| {
            let (sum0, count0) = before.get(key).copied().unwrap_or_default();
            let runs = count - count0;
            (runs >= 1.0).then(|| (key.clone(), (sum - sum0) / runs, runs as u64))
        })
        .collect();
    steps.sort_by(|a, b| b.1.total_cmp(&a.1));
    steps
}

/// Failed steps by `controller/condition/category`.
async fn step_failures(url: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (sample, value) in samples_f64(url, "ossature_step_failures_total").await? {
        let key = format!(
            "{}/{}/{}",
            super::label(&sample, "controller"),
            super::label(&sample, "condition"),
            super::label(&sample, "category")
        );
        *out.entry(key).or_default() += value as u64;
    }
    Ok(out)
}

/// What each counter gained between two readings; those that gained nothing left out.
fn counter_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(key, n)| {
            let gained = n.saturating_sub(before.get(key).copied().unwrap_or(0));
            (key.clone(), gained)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

// ---------------------------------------------------------------------------
// Report

struct Figures {
    /// Topics and services of the operator's run.
    objects: usize,
    tenants_ready_in: Duration,
    baseline: Option<direct::Baseline>,
    operator: OperatorFigures,
    deletion: Deletion,
    /// The operator's peak memory, read once the deletion was done.
    peak_kib: u64,
    left: left::Left,
}

/// Counts by key, a number per object beside each.
fn per_object(counts: &BTreeMap<String, u64>, n: usize) -> String {
    let values: BTreeMap<String, String> = counts
        .iter()
        .map(|(k, v)| (k.clone(), format!("{:.1}", *v as f64 / n.max(1) as f64)))
        .collect();
    by_backend(&values)
}

impl OperatorFigures {
    /// The operator's pace as a share of the baseline's: the baseline's
    /// time over the operator's, for the same objects.
    fn ratio(&self, baseline: Option<&direct::Baseline>) -> Option<f64> {
        let baseline = baseline?;
        Some(baseline.elapsed.as_secs_f64() / self.all_ready().as_secs_f64().max(1e-3))
    }

    /// What the operator did until all were Ready, then in the steady period.
    fn print(&self, args: &MessagingArgs, objects: usize, baseline: Option<&direct::Baseline>) {
        line("created in", secs(self.created_in));
        line("topics Ready", latencies(&self.topics));
        line("services Ready", latencies(&self.services));
        let all = self.all_ready();
        let pace = objects as f64 / all.as_secs_f64().max(1e-3);
        line(
            "all Ready in",
            format!("{} ({objects} objects, {pace:.1}/s)", secs(all)),
        );
        if let (Some(ratio), Some(baseline)) = (self.ratio(baseline), baseline) {
            line(
                "operator / baseline",
                format!(
                    "{ratio:.2} of the baseline's pace (all Ready in {} against {})",
                    secs(all),
                    secs(baseline.elapsed)
                ),
            );
        }
        line("writes per object", per_object(&self.writes, objects));
        if let Some(baseline) = baseline {
            line(
                "baseline writes per object",
                per_object(&baseline.writes(), objects),
            );
        }
        line("reads per object", per_object(&self.reads, objects));
        line("reconciles", by_backend(&self.reconciles));
        let slowest: Vec<String> = self
            .steps
            .iter()
            .take(6)
            .map(|(step, mean, n)| format!("{step} {mean:.2}s x{n}"))
            .collect();
        line("mean step time", slowest.join("  "));
        if !self.failures.is_empty() {
            line("failed steps", by_backend(&self.failures));
        }
        let steady = format!("steady ({}s)", args.steady_seconds);
        line(
            &format!("{steady} writes"),
            format!(
                "{}  ({})",
                self.steady_writes(),
                by_backend(&self.steady_writes)
            ),
        );
        line(
            &format!("{steady} reads"),
            format!(
                "{}  (resync every {}s; reconciles {})",
                by_backend(&self.steady_reads),
                args.resync_seconds,
                by_backend(&self.steady_reconciles)
            ),
        );
        if self.steady_writes() > 0 || !self.steady_changes.is_empty() {
            line(
                &format!("{steady} changes"),
                format!(
                    "{} objects changed in the apiserver:",
                    self.steady_changes.len()
                ),
            );
            for (what, n) in self.steady_changes.iter().take(20) {
                line("", format!("{n} x {what}"));
            }
        }
        line(
            "operator RSS",
            format!(
                "steady {}, {} when all were Ready (peak so far {})",
                mib(self.after_steady.rss_kib),
                mib(self.at_ready.rss_kib),
                mib(self.after_steady.peak_kib)
            ),
        );
        line(
            "operator CPU",
            format!(
                "{} until all Ready, {} in the steady period",
                secs(self.at_ready.cpu),
                secs(self.after_steady.cpu.saturating_sub(self.at_ready.cpu))
            ),
        );
    }
}

impl Figures {
    fn print_deletion(&self) {
        let deletion = &self.deletion;
        match deletion.remaining {
            0 => line("all deleted in", secs(deletion.took)),
            n => line(
                "not all deleted",
                format!(
                    "{n} Topics and services still there after {}",
                    secs(deletion.took)
                ),
            ),
        }
        line("operator peak RSS", mib(self.peak_kib));
        line("left behind", &self.left);
    }

    fn summary(&self, args: &MessagingArgs) -> String {
        let op = &self.operator;
        let ratio = op
            .ratio(self.baseline.as_ref())
            .map_or("n/a".to_string(), |r| format!("{r:.2}"));
        let baseline = self
            .baseline
            .as_ref()
            .map_or("n/a".to_string(), |b| secs(b.elapsed));
        let writes: u64 = op.writes.values().sum();
        let deleted = match self.deletion.remaining {
            0 => secs(self.deletion.took),
            n => format!("incomplete({n}_left)"),
        };
        format!(
            "summary: tenants={} topics={} services={} tenants_ready={} topics_p50={} topics_p99={} \
             services_p50={} services_p99={} all_ready={} baseline={baseline} ratio={ratio} \
             writes_per_object={:.1} steady_writes={} rss_peak={} rss_steady={} deleted_in={deleted} left={}",
            args.tenants,
            op.topics.len(),
            op.services.len(),
            secs(self.tenants_ready_in),
            secs(percentile(&op.topics, 0.50)),
            secs(percentile(&op.topics, 0.99)),
            secs(percentile(&op.services, 0.50)),
            secs(percentile(&op.services, 0.99)),
            secs(op.all_ready()),
            writes as f64 / self.objects.max(1) as f64,
            op.steady_writes(),
            mib(self.peak_kib).replace(' ', ""),
            mib(op.after_steady.rss_kib).replace(' ', ""),
            self.left.total(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_producer_and_a_consumer() {
        let plan = grant_plan(100, 20);
        assert_eq!(plan.len(), 20);
        for topic in 0..100 {
            let users: Vec<Uses> = plan.iter().filter_map(|s| s.get(&topic)).copied().collect();
            assert_eq!(users.iter().filter(|u| u.produce).count(), 1, "{topic}");
            assert_eq!(users.iter().filter(|u| u.consume).count(), 1, "{topic}");
        }
        // Five topics produced and five consumed each.
        assert!(plan.iter().all(|s| s.len() == 10));
        assert_eq!(
            plan[0][&0],
            Uses {
                produce: true,
                consume: false
            }
        );
        assert_eq!(
            plan[1][&0],
            Uses {
                produce: false,
                consume: true
            }
        );
        assert_eq!(
            plan[0][&19],
            Uses {
                produce: false,
                consume: true
            }
        );
    }

    #[test]
    fn a_lone_service_produces_and_consumes_and_none_grants_nothing() {
        let plan = grant_plan(3, 1);
        let both = Uses {
            produce: true,
            consume: true,
        };
        assert_eq!(plan[0].values().copied().collect::<Vec<_>>(), vec![both; 3]);
        assert!(grant_plan(5, 0).is_empty());
        assert!(grant_plan(0, 2).iter().all(BTreeMap::is_empty));
    }

    #[test]
    fn totals_are_spread_evenly() {
        assert_eq!(spread(1000, 10), vec![100; 10]);
        assert_eq!(spread(7, 3), vec![3, 2, 2]);
        assert_eq!(spread(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(spread(1003, 10).iter().sum::<usize>(), 1003);
    }

    fn args(tenants: u32, topics: u32, services: u32) -> MessagingArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: MessagingArgs,
        }
        Cli::parse_from([
            "x".to_string(),
            format!("--tenants={tenants}"),
            format!("--topics={topics}"),
            format!("--services={services}"),
        ])
        .args
    }

    #[test]
    fn the_default_fleet_is_ten_tenants_of_100_topics_and_20_services() {
        let fleet = shares(&args(10, 1000, 200), "r1").unwrap();
        assert_eq!(fleet.len(), 10);
        assert!(fleet.iter().all(|s| s.topics == 100 && s.services == 20));
        assert_eq!(fleet[3].tenant, "bm-r1-3");
        assert_eq!(fleet[3].first_service, 60);
        // One service would need a grant on each of 101 topics.
        assert!(shares(&args(1, 100, 1), "r1").is_ok());
        let refused = shares(&args(1, 101, 1), "r1").unwrap_err().to_string();
        assert!(refused.contains("at most 100"), "{refused}");
    }

    #[test]
    fn objects_are_valid_topics_and_services_of_the_environment() {
        let share = Share {
            tenant: "bm-r1-0".into(),
            topics: 4,
            services: 2,
            first_service: 7,
        };
        let (topics, services) = share.objects("prod", "r1");
        let topics: Vec<Topic> = typed(&topics).unwrap();
        let services: Vec<ServiceIdentity> = typed(&services).unwrap();
        assert_eq!(topics.len(), 4);
        assert_eq!(topics[2].namespace().as_deref(), Some("tn-bm-r1-0--prod"));
        assert_eq!(topics[2].labels()[RUN_LABEL], "r1");
        let schema =
            ossature_model::topics::desired_schema(topics[2].spec.schema.as_ref().unwrap());
        assert!(schema.is_ok(), "{schema:?}");
        assert_eq!(services[1].spec.id, "01JB0000000000000000000008");
        assert_eq!(services[1].spec.id.len(), 26);
        assert_eq!(services[1].spec.owner, OWNER);
        let grants = &services[1].spec.grants;
        // Produces t-1 and t-3; consumes t-0 and t-2 under its own name.
        assert_eq!(grants.len(), 4);
        let consumed: Vec<&str> = grants
            .iter()
            .filter(|g| !g.subscriptions.is_empty())
            .map(|g| g.topic.as_str())
            .collect();
        assert_eq!(consumed, ["t-0", "t-2"]);
        assert!(
            grants
                .iter()
                .all(|g| g.subscriptions.iter().all(|s| s == "s-1"))
        );
    }

    #[test]
    fn step_times_become_means_of_the_runs_between_readings() {
        let before = StepTimes::from([("topic/SchemaReady".to_string(), (2.0, 4.0))]);
        let after = StepTimes::from([
            ("topic/SchemaReady".to_string(), (12.0, 14.0)),
            ("topic/GrantsReady".to_string(), (3.0, 1.0)),
            ("certificate/CertificateReady".to_string(), (0.0, 0.0)),
        ]);
        assert_eq!(
            mean_steps(&before, &after),
            vec![
                ("topic/GrantsReady".to_string(), 3.0, 1),
                ("topic/SchemaReady".to_string(), 1.0, 10),
            ]
        );
        let counted = counter_delta(
            &BTreeMap::from([("topic".to_string(), 3)]),
            &BTreeMap::from([("topic".to_string(), 5), ("scope".to_string(), 0)]),
        );
        assert_eq!(counted, BTreeMap::from([("topic".to_string(), 2)]));
        assert_eq!(
            per_object(&BTreeMap::from([("pulsar".to_string(), 15)]), 10),
            "pulsar 1.5"
        );
    }

    #[test]
    fn only_the_runs_objects_are_kept() {
        let keep = keep_run("r1");
        let object = |namespace: Option<&str>, name: &str| {
            let mut o = DynamicObject::new(name, &ApiResource::erase::<Secret>(&()));
            o.metadata.namespace = namespace.map(String::from);
            o
        };
        assert!(keep(&object(Some("tn-bm-r1-0--prod"), "s-1-secrets")));
        assert!(keep(&object(Some("tn-bm-r1-12"), "x")));
        assert!(!keep(&object(Some("tn-bm-r2-0--prod"), "x")));
        assert!(!keep(&object(Some("default"), "x")));
        assert!(keep(&object(None, "bm-r1-3")));
        assert!(!keep(&object(None, "bm-r10-3")));
    }
}
