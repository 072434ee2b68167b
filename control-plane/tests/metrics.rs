//! The control plane's `/metrics`, unauthenticated like the operator's:
//! each call counts under its operation and status code, with its
//! duration, and each authorization decision under allow or deny; the
//! stack's Prometheus scrapes it.

mod common;

use common::*;
use serde_json::json;

/// The value of the sample line starting with `series`, if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(cp: &ControlPlane) -> String {
    let response = http()
        .get(format!("{}/metrics", cp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "no token is asked for");
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_call_is_counted_under_its_operation_and_status() {
    let env = stack().await;
    let client = kube_client(&env).await;
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let cp = ControlPlane::start(&env, &client, &ops.realm).await;
    let token = ops.token().await;

    let listed = r#"ossature_api_requests_total{operation="listTenants",code="200"}"#;
    let refused = r#"ossature_api_requests_total{operation="listTenants",code="401"}"#;
    let allowed = r#"ossature_authorization_decisions_total{decision="allow"}"#;
    let before = scrape(&cp).await;
    assert_eq!(sample(&before, listed), None, "nothing listed yet");
    assert_eq!(sample(&before, allowed), Some(0.0));

    let (status, _, _) = cp.query("listTenants", &token, &json!({})).await;
    assert_eq!(status, 200);
    let (status, _, _) = cp
        .post("/v1/queries/listTenants", None, None, &json!({}))
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = cp.post("/v1/queries/nope", None, None, &json!({})).await;
    assert_eq!(status, 404);

    let after = scrape(&cp).await;
    assert_eq!(sample(&after, listed), Some(1.0), "{after}");
    assert_eq!(sample(&after, refused), Some(1.0), "{after}");
    let unknown = r#"ossature_api_requests_total{operation="unknown",code="404"}"#;
    assert_eq!(sample(&after, unknown), Some(1.0), "{after}");
    let took = r#"ossature_api_request_duration_seconds_count{operation="listTenants"}"#;
    assert_eq!(sample(&after, took), Some(2.0), "{after}");
    assert_eq!(sample(&after, allowed), Some(1.0), "{after}");
    assert!(!after.contains("nope"), "a path never becomes a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stacks_prometheus_scrapes_the_control_plane() {
    use ossature_bootstrap::prometheus::{Job, ScrapeTarget};
    let env = stack().await;
    let client = kube_client(&env).await;
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let cp = ControlPlane::start(&env, &client, &ops.realm).await;
    let layout = ossature_bootstrap::Layout::from_env().unwrap();
    let name = ossature_e2e::unique("cpm");
    let address = cp.running.addr.to_string();
    let target = ScrapeTarget::add(&layout, Job::ControlPlane, &name, &address).unwrap();
    let token = ops.token().await;
    let (status, _, _) = cp.query("listTenants", &token, &json!({})).await;
    assert_eq!(status, 200);

    // What an on-call engineer asks of it: the requests by operation.
    let query = format!(
        r#"sum by (operation) (ossature_api_requests_total{{job="{}"}})"#,
        target.job()
    );
    let prometheus = &env["OSSATURE_PROMETHEUS_URL"];
    let mut last = Vec::new();
    for _ in 0..60 {
        let answer = ossature_e2e::prometheus::query(prometheus, &query)
            .await
            .unwrap();
        let listed = answer
            .iter()
            .find(|s| s["metric"]["operation"] == "listTenants");
        if let Some(series) = listed {
            assert_eq!(series["value"][1], "1", "{answer:?}");
            return;
        }
        last = answer;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("Prometheus never scraped the control plane: {last:?}");
}
