//! The operator watched as production watches it: the stack's real
//! Prometheus scrapes a test's operator (a target file of its own, see
//! `ossature_bootstrap::prometheus`), every query of the chart's Grafana
//! dashboard returns data, and cutting a backend off fires
//! OssatureBackendDown, which resolves when the backend is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::Api;
use ossature_bootstrap::Layout;
use ossature_bootstrap::prometheus::{Job, ScrapeTarget};
use ossature_crds::Certificate;
use serde_json::{Value, json};

const DASHBOARD: &str = include_str!("../../charts/ossature/files/dashboard.json");

/// What Grafana puts for `$__rate_interval`: wide enough that a reconcile a
/// few minutes old still shows in rates and quantiles.
const RATE_INTERVAL: &str = "5m";

/// A test's operator, scraped by the stack's Prometheus as a job of its own.
/// Dropped in field order: the target goes before the operator stops.
struct Watched {
    target: ScrapeTarget,
    _operator: Operator,
    prometheus: String,
}

fn metrics_address(operator: &Operator) -> String {
    operator
        .metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string()
}

impl Watched {
    fn start(env: &std::collections::BTreeMap<String, String>, sel: &str, extra: &[&str]) -> Self {
        let operator = start_operator_with(env, sel, extra);
        let layout = Layout::from_env().unwrap();
        let name = format!("monitoring-{sel}");
        let target =
            ScrapeTarget::add(&layout, Job::Operator, &name, &metrics_address(&operator)).unwrap();
        Watched {
            target,
            _operator: operator,
            prometheus: env["OSSATURE_PROMETHEUS_URL"].clone(),
        }
    }

    fn job(&self) -> &str {
        self.target.job()
    }

    /// The `data` of a successful answer of Prometheus' API.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        ossature_e2e::prometheus::api(&self.prometheus, path, params)
            .await
            .unwrap()
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        ossature_e2e::prometheus::query(&self.prometheus, expr)
            .await
            .unwrap()
    }

    /// This operator's alerts named `name`, with their state.
    async fn alerts(&self, name: &str) -> Vec<Value> {
        self.api("/api/v1/alerts", &[]).await["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["labels"]["job"] == self.job())
            .collect()
    }
}

/// Every `expr` in the dashboard, wherever it sits.
fn exprs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, found)),
        _ => {}
    }
}

/// What Grafana sends for `expr` with this job picked in the `job` variable.
fn with_variables(expr: &str, job: &str) -> String {
    let sent = expr
        .replace("${job}", job)
        .replace("$job", job)
        .replace("$__rate_interval", RATE_INTERVAL);
    assert!(
        !sent.contains('$'),
        "{expr} uses a variable the test does not know"
    );
    sent
}

/// A series with a number (not NaN): what a panel draws.
fn has_data(result: &[Value]) -> bool {
    result.iter().any(|series| {
        series["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_running_operator() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let watched = Watched::start(&env, &sel, &[]);
    // Scraped before anything happens: what happens then shows in rates.
    let up = format!("up{{job=\"{}\"}} == 1", watched.job());
    wait_for(
        "Prometheus to scrape the operator",
        Duration::from_secs(60),
        || async { (!watched.query(&up).await.is_empty()).then_some(()) },
    )
    .await;

    // A tenant and a certificate of its CA: objects, backend calls and an
    // expiry to show.
    let tenant = ready_tenant(&client, &sel).await;
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    create(
        &certificates,
        "dashboard",
        json!({"dnsNames": [format!("dashboard.{tenant}.ossature.test")], "issuer": {"tenantCA": {}}}),
    )
    .await;
    ready_certificate(&certificates, "dashboard").await;

    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    assert!(found.len() >= 10, "{found:?}");
    let queries: Vec<String> = found
        .iter()
        .map(|e| with_variables(e, watched.job()))
        .collect();
    let began = Instant::now();
    let mut empty: Vec<&String> = queries.iter().collect();
    while !empty.is_empty() && began.elapsed() < Duration::from_secs(120) {
        let mut still = Vec::new();
        for query in empty {
            if !has_data(&watched.query(query).await) {
                still.push(query);
            }
        }
        empty = still;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The `job` variable lists this operator's job.
    let jobs = watched
        .api(
            "/api/v1/label/job/values",
            &[("match[]", "ossature_backend_up")],
        )
        .await;
    let listed = jobs
        .as_array()
        .is_some_and(|j| j.contains(&json!(watched.job())));

    let tenants: Api<ossature_crds::Tenant> = Api::all(client.clone());
    delete_tenants(&tenants, &[&tenant]).await;
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    assert!(
        listed,
        "the job variable does not list {}: {jobs}",
        watched.job()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_backend_down_when_openbao_is_cut_off_and_resolves_it() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    // Only this test's operator loses OpenBao, not the other tests.
    let openbao = &env["OSSATURE_OPENBAO_ADDR"];
    let proxy = ossature_e2e::TcpProxy::in_front_of(openbao).await.unwrap();
    let through_proxy = proxy.url(openbao).unwrap();
    let watched = Watched::start(&env, &sel, &["--openbao-addr", &through_proxy]);
    let up = format!(
        "ossature_backend_up{{job=\"{}\",backend=\"openbao\"}}",
        watched.job()
    );
    let value = |result: &[Value]| result.first().map(|s| s["value"][1].clone());

    wait_for(
        "Prometheus to see OpenBao up",
        Duration::from_secs(60),
        || async { (value(&watched.query(&up).await) == Some(json!("1"))).then_some(()) },
    )
    .await;

    proxy.cut().await;
    let cut = Instant::now();
    wait_for("OpenBao seen down", Duration::from_secs(30), || async {
        (value(&watched.query(&up).await) == Some(json!("0"))).then_some(())
    })
    .await;
    let seen_down = cut.elapsed();
    // `for: 1m` on the rule, evaluated every 2 s on the stack.
    let fired = wait_for(
        "OssatureBackendDown firing",
        Duration::from_secs(150),
        || async {
            let alerts = watched.alerts("OssatureBackendDown").await;
            alerts
                .into_iter()
                .find(|a| a["state"] == "firing" && a["labels"]["backend"] == "openbao")
        },
    )
    .await;
    let firing_after = cut.elapsed();
    assert_eq!(fired["labels"]["severity"], "critical");
    let summary = fired["annotations"]["summary"].as_str().unwrap();
    assert!(summary.ends_with("cannot reach openbao"), "{summary}");
    assert!(
        firing_after >= Duration::from_secs(60),
        "fired before its for: {firing_after:?}"
    );

    proxy.restore().await;
    let restored = Instant::now();
    wait_for(
        "OssatureBackendDown resolved",
        Duration::from_secs(60),
        || async {
            watched
                .alerts("OssatureBackendDown")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "OpenBao seen down {seen_down:?} after the cut, alert firing after {firing_after:?}, resolved {:?} after the restore",
        restored.elapsed()
    );
    drop(watched);
}
