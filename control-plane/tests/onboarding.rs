//! Onboarding through the API with the operator running (in this process,
//! limited to this test's tenants by its own selector): the tenant becomes
//! Ready in every backend and the command waits for it; a service of the
//! tenant gets a real Keycloak token (client credentials), which acts on
//! its own tenant and never on another; offboarding removes everything.

mod common;

use common::*;
use kube::Api;
use ossature_crds::Tenant;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn onboarded_tenants_become_ready_and_a_tenants_token_acts_only_on_its_own() {
    let WithOperator {
        env,
        client,
        selector,
        operator,
        ops: _ops,
        cp,
        token,
    } = WithOperator::start(&[]).await;
    let (a, b) = (ossature_e2e::unique("cpa"), ossature_e2e::unique("cpb"));

    // Onboarded through the API, waiting for the outcome: Ready.
    let mut onboard_a = onboarding(&a, &selector);
    onboard_a["wait"] = json!({"timeoutSeconds": 300});
    let (status, _, answer) = cp
        .command("onboardTenant", &token, "onboard-a", &onboard_a)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"]["state"], "Ready", "{answer}");
    let conditions = answer["outcome"]["conditions"].as_array().unwrap();
    for backend in [
        "NamespaceReady",
        "RealmReady",
        "MessagingReady",
        "SecretsReady",
    ] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == backend && c["status"] == "True"),
            "{backend} in {conditions:?}"
        );
    }
    let (status, _, answer) = cp
        .post(
            "/v1/commands/onboardTenant",
            Some(&token),
            Some("onboard-b"),
            &onboarding(&b, &selector),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // A service of tenant A, and its client-credentials token from Keycloak.
    let environment = cp
        .query("tenantStatus", &token, &json!({"tenant": a}))
        .await;
    assert_eq!(environment.0, 200, "{}", environment.2);
    let (client_id, tenant_token) = service_token(&env, &client, &a, "prod", "console").await;

    // Its own tenant: read and changed, once it holds Admin there.
    let (status, _, answer) = cp
        .command(
            "grantRole",
            &token,
            "grant-console",
            &json!({"tenant": a, "scope": "global", "role": "Admin",
                    "users": [format!("service-account-{client_id}")]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_status(
        &cp,
        &tenant_token,
        "/v1/queries/tenantStatus",
        &json!({"tenant": a}),
        200,
    )
    .await;
    let (status, _, own) = cp
        .query("tenantStatus", &tenant_token, &json!({"tenant": a}))
        .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["ready"], true, "{own}");
    assert_eq!(own["environments"][0]["name"], "prod");
    let (status, _, granted) = cp
        .command(
            "grantRole",
            &tenant_token,
            "grant-1",
            &json!({"tenant": a, "scope": "eu", "role": "Viewer", "users": ["alice"]}),
        )
        .await;
    assert_eq!(status, 200, "{granted}");
    let reason = granted["decision"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "service account {client_id} holds role Admin in scope global"
        )),
        "{reason}"
    );
    let (status, _, page) = cp.query("listTenants", &tenant_token, &json!({})).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [a.as_str()], "a tenant lists only itself");

    // Tenant B: neither read nor changed with A's token.
    let answer = cp
        .query("tenantStatus", &tenant_token, &json!({"tenant": b}))
        .await;
    assert_problem(&answer, 403, "forbidden");
    assert!(
        answer.2["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("never acts on tenant {b}"))
    );
    for (command, input) in [
        ("changeTenant", json!({"tenant": b, "quotas": {"pods": 1}})),
        (
            "addScope",
            json!({"tenant": b, "scope": {"name": "x", "displayName": "X"}}),
        ),
        ("offboardTenant", json!({"tenant": b})),
    ] {
        let answer = cp
            .post(
                &format!("/v1/commands/{command}"),
                Some(&tenant_token),
                Some("cross-1"),
                &input,
            )
            .await;
        assert_problem(&answer, 403, "forbidden");
    }
    let bulk = json!({"items": [{"query": "tenantStatus", "input": {"tenant": b}}]});
    let (_, _, result) = cp
        .post("/v1/queries", Some(&tenant_token), None, &bulk)
        .await;
    assert_eq!(result["items"][0]["status"], 403);
    let tenant_b: Tenant = Api::all(client.clone()).get(&b).await.unwrap();
    assert_ne!(tenant_b.spec.quotas.pods, Some(1));
    // Raising the log level needs its permission, which Admin carries.
    let debug = json!({"toggles": {"logLevel": "debug"}});
    let response = cp
        .query_in_context("tenantStatus", &tenant_token, &debug, &json!({"tenant": a}))
        .await;
    assert_eq!(response.status(), 200);
    let response = cp
        .query_in_context("tenantStatus", &tenant_token, &debug, &json!({"tenant": b}))
        .await;
    assert_eq!(response.status(), 403);

    // Offboarded through the API: gone from every backend.
    for tenant in [&a, &b] {
        cp.offboard(&token, tenant).await;
    }

    let lines = cp.audit_lines();
    assert_audit_lines_valid(&lines);
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["status"] == 403 && l["decision"]["allowed"] == false)
        .collect();
    assert!(refused.len() >= 5, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|l| l["actor"]["kind"] == "TenantService")
    );

    for tenant in [&a, &b] {
        remove_keys(&client, tenant).await;
    }
    cp.running.stop();
    operator.abort();
}
