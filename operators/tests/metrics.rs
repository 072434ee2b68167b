//! The operator's `/metrics` as Prometheus scrapes it, from a running
//! binary: every metric on-call engineers and the alert rules query is
//! there with sane values once a tenant is Ready. And a backend that comes
//! back (Pulsar, cut off from one operator by a proxy the test controls)
//! is noticed by its probe, and the tenants waiting on it are retried at
//! once rather than at their next backoff.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kube::Api;
use kube::api::PostParams;
use ossature_crds::{Certificate, Tenant};
use ossature_e2e::TcpProxy;
use serde_json::json;

/// One sample line: its name, its labels, its value.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The operator's samples; none while it does not listen yet.
async fn scrape(operator: &Operator) -> Vec<Sample> {
    let Ok(response) = http().get(&operator.metrics).send().await else {
        return Vec::new();
    };
    parse(&response.text().await.unwrap())
}

/// The value of the series `name` with (at least) `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn expect(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
}

const BACKENDS: [&str; 5] = ["keycloak", "pulsar", "openbao", "acme", "edge"];

#[tokio::test]
async fn a_running_operator_serves_every_metric_on_call_queries() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    let sel = suffix();
    let operator = start_operator(&env, &sel);
    let issuer_name = format!("mx-{sel}");
    ready_issuer(&client, &issuer(&env, &issuer_name, &sel, json!({}))).await;
    let tenant = ready_tenant(&client, &sel).await;
    let namespace = format!("tn-{tenant}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &namespace);
    let certificate: Certificate = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": "api"},
        "spec": {"dnsNames": [format!("api.{tenant}.ossature.test")], "issuer": {"tenantCA": {}}},
    }))
    .unwrap();
    certificates
        .create(&PostParams::default(), &certificate)
        .await
        .unwrap();
    ready_certificate(&certificates, "api").await;

    // Gauges come from the stores and the probes: wait until both caught up.
    let samples = wait_for("every backend up", Duration::from_secs(30), || async {
        let samples = scrape(&operator).await;
        BACKENDS
            .iter()
            .all(|b| value(&samples, "ossature_backend_up", &[("backend", b)]) == Some(1.0))
            .then_some(samples)
    })
    .await;

    let tenant_ = [("controller", "tenant")];
    let success = [("controller", "tenant"), ("result", "success")];
    assert!(expect(&samples, "controller_runtime_reconcile_total", &success) >= 1.0);
    for result in ["error", "requeue", "requeue_after"] {
        let labels = [("controller", "tenant"), ("result", result)];
        expect(&samples, "controller_runtime_reconcile_total", &labels);
    }
    expect(
        &samples,
        "controller_runtime_reconcile_errors_total",
        &tenant_,
    );
    let count = "controller_runtime_reconcile_time_seconds_count";
    assert!(expect(&samples, count, &tenant_) >= 1.0);
    let queue = [("name", "tenant")];
    assert!(expect(&samples, "workqueue_depth", &queue) >= 0.0);
    let longest = expect(
        &samples,
        "workqueue_longest_running_processor_seconds",
        &queue,
    );
    assert!((0.0..600.0).contains(&longest), "{longest}");
    let pulsar_writes = [("backend", "pulsar"), ("verb", "write")];
    assert!(expect(&samples, "ossature_backend_calls_total", &pulsar_writes) >= 1.0);
    let keycloak = [("backend", "keycloak"), ("verb", "read")];
    let took = "ossature_backend_call_duration_seconds_count";
    assert!(expect(&samples, took, &keycloak) >= 1.0);
    let ready = [("kind", "Tenant"), ("state", "ready")];
    assert!(expect(&samples, "ossature_objects", &ready) >= 1.0);
    let ready = [("kind", "AcmeIssuer"), ("state", "ready")];
    assert!(expect(&samples, "ossature_objects", &ready) >= 1.0);
    let ready = [("kind", "Certificate"), ("state", "ready")];
    assert!(expect(&samples, "ossature_objects", &ready) >= 1.0);
    let stalled = [("kind", "Tenant"), ("state", "stalled")];
    assert_eq!(expect(&samples, "ossature_objects", &stalled), 0.0);
    let oldest = expect(
        &samples,
        "ossature_oldest_not_ready_seconds",
        &[("kind", "Tenant")],
    );
    assert_eq!(oldest, 0.0, "the only tenant is Ready");
    let expiry = expect(
        &samples,
        "ossature_certificate_expiry_timestamp_seconds",
        &[("namespace", &namespace), ("certificate", "api")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now && expiry < now + 400.0 * 86_400.0,
        "expires at {expiry}"
    );
    assert!(expect(&samples, "ossature_edge_routes", &[("state", "ready")]) >= 1.0);
    assert_eq!(
        expect(&samples, "ossature_domains", &[("state", "claimed")]),
        0.0
    );
    let lease = ossature_operator::leader::lease_name(Some(&format!("{TEST_LABEL}={sel}")));
    assert_eq!(
        expect(&samples, "ossature_leader", &[("lease", &lease)]),
        1.0
    );
    let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("ossature_reconcile_")),
        "the old names are gone"
    );

    certificates
        .delete("api", &Default::default())
        .await
        .unwrap();
    let tenants: Api<Tenant> = Api::all(client.clone());
    delete_tenants(&tenants, &[tenant.as_str()]).await;
    let issuers: Api<ossature_crds::AcmeIssuer> = Api::all(client.clone());
    issuers
        .delete(&issuer_name, &Default::default())
        .await
        .unwrap();
}

/// What a tenant's MessagingReady condition says: (status, reason).
async fn messaging(tenants: &Api<Tenant>, name: &str) -> Option<(String, String)> {
    let tenant = tenants.get(name).await.ok()?;
    condition(&tenant.status?.conditions, "MessagingReady")
}

#[tokio::test]
async fn tenants_waiting_on_a_backend_are_retried_as_soon_as_it_answers() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    let sel = suffix();
    let admin = &env["OSSATURE_PULSAR_ADMIN_URL"];
    let proxy = TcpProxy::in_front_of(admin).await.unwrap();
    let through = proxy.url(admin).unwrap();
    // A backoff cap far above the probe's interval: a retry at the next
    // backoff would come tens of seconds late.
    let operator = start_operator_with(
        &env,
        &sel,
        &[
            "--pulsar-admin-url",
            &through,
            "--max-backoff-seconds",
            "120",
        ],
    );
    let pulsar_up = async |operator: &Operator| {
        value(
            &scrape(operator).await,
            "ossature_backend_up",
            &[("backend", "pulsar")],
        )
    };
    wait_for("Pulsar up", Duration::from_secs(30), || async {
        (pulsar_up(&operator).await == Some(1.0)).then_some(())
    })
    .await;

    proxy.cut().await;
    wait_for("Pulsar seen down", Duration::from_secs(15), || async {
        (pulsar_up(&operator).await == Some(0.0)).then_some(())
    })
    .await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let prefix = format!("rc{}", suffix());
    let names: Vec<String> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        tenants
            .create(&PostParams::default(), &labelled(bare_tenant(name), &sel))
            .await
            .unwrap();
    }
    for name in &names {
        wait_for(
            &format!("{name} waiting on Pulsar"),
            Duration::from_secs(60),
            || async {
                let (status, reason) = messaging(&tenants, name).await?;
                (status == "False" && reason == "BackendUnreachable").then_some(())
            },
        )
        .await;
    }
    // Retries came at 0, 1, 3, 7, 15, 31 and 63 s of failing; the next is
    // due at 127 s. Back at about 70 s, a tenant retried only at its next
    // backoff would wait about a minute more.
    tokio::time::sleep(Duration::from_secs(65)).await;
    for name in &names {
        let tenant = tenants.get(name).await.unwrap();
        assert!(!ready(&tenant), "{name} is Ready without Pulsar");
    }

    proxy.restore().await;
    let restored = Instant::now();
    wait_for("Pulsar seen up", Duration::from_secs(10), || async {
        (pulsar_up(&operator).await == Some(1.0)).then_some(())
    })
    .await;
    let seen = restored.elapsed();
    for name in &names {
        wait_tenant_ready(&tenants, name, Duration::from_secs(60)).await;
    }
    let all_ready = restored.elapsed();
    eprintln!("RECOVERY probe saw Pulsar after {seen:?}; 5 tenants Ready after {all_ready:?}");
    assert!(
        all_ready < Duration::from_secs(15),
        "the waiting tenants took {all_ready:?} to be Ready once Pulsar answered"
    );
    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(log.contains("retrying what waited on Pulsar"), "{log}");
    assert_eq!(
        log.matches("Pulsar does not answer").count(),
        1,
        "one line for the outage, not one per probe"
    );

    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_tenants(&tenants, &names).await;
}
