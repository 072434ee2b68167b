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
use std::time::Duration;

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

    // Its topics, services and workloads through the API as well, each
    // with the spec kubectl would apply, waited for until Ready.
    let definition =
        r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}"#;
    let topic = json!({"tenant": a, "environment": "prod", "name": "orders",
        "spec": {"partitions": 2, "schema": {"type": "AVRO", "definition": definition}},
        "wait": {"timeoutSeconds": 120}});
    let (status, _, answer) = cp.command("applyTopic", &token, "topic-1", &topic).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"]["state"], "Ready", "{answer}");
    let mut wrong = topic.clone();
    wrong["spec"]["partitions"] = json!("many");
    let answer = cp.command("applyTopic", &token, "topic-2", &wrong).await;
    assert_problem(&answer, 400, "invalid-input");
    assert_eq!(
        answer.2["errors"][0]["field"], "spec.partitions",
        "{}",
        answer.2
    );
    let mut unknown = topic.clone();
    unknown["spec"]["colour"] = json!("red");
    let answer = cp.command("applyTopic", &token, "topic-3", &unknown).await;
    assert_problem(&answer, 400, "invalid-input");
    assert_eq!(
        answer.2["errors"][0]["field"], "spec.colour",
        "{}",
        answer.2
    );
    let workload = json!({"tenant": a, "environment": "prod", "name": "console-api",
        "spec": {"template": "CommandEndpoint", "serviceIdentity": "console",
                 "image": "registry.example/acme/console:1.0.0", "replicas": 1},
        "wait": {"timeoutSeconds": 120}});
    let (status, _, answer) = cp
        .command("applyWorkload", &token, "workload-1", &workload)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"]["state"], "Ready", "{answer}");
    let console = json!({"tenant": a, "environment": "prod", "name": "console"});
    let (status, _, answer) = cp
        .command("rotateCredentials", &token, "rotate-1", &console)
        .await;
    assert_eq!(status, 200, "{answer}");
    let services: Api<ossature_crds::ServiceIdentity> =
        Api::namespaced(client.clone(), &format!("tn-{a}--prod"));
    let rotated = services.get("console").await.unwrap();
    assert!(rotated.spec.credentials.rotation_request.is_some());
    for (command, name) in [("removeWorkload", "console-api"), ("removeTopic", "orders")] {
        let input = json!({"tenant": a, "environment": "prod", "name": name});
        let (status, _, answer) = cp.command(command, &token, command, &input).await;
        assert_eq!(status, 200, "{answer}");
    }
    let answer = cp
        .command(
            "removeTopic",
            &token,
            "remove-again",
            &json!({"tenant": a, "environment": "prod", "name": "orders-none"}),
        )
        .await;
    assert_problem(&answer, 404, "object-not-found");
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
        (
            "applyTopic",
            json!({"tenant": b, "environment": "prod", "name": "t", "spec": {}}),
        ),
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
    // Event streams likewise: B's refused, A's own served (it is Ready:
    // a snapshot, then the end).
    let (status, stream, problem) = cp.events(&b, &tenant_token, None).await;
    assert_eq!(status, 403, "{problem}");
    assert!(stream.is_none());
    let (status, stream, _) = cp.events(&a, &tenant_token, None).await;
    assert_eq!(status, 200);
    let events = stream.unwrap().until_end(Duration::from_secs(30)).await;
    assert_eq!(events[0].event, "snapshot");
    assert_eq!(events[0].data["status"]["tenant"], a.as_str());
    assert_eq!(events[1].data["state"], "Ready", "{events:?}");
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

/// The sequence number of an event id (`<server run>.<number>`).
fn seq(id: &Option<String>) -> u64 {
    let id = id.as_deref().expect("an id");
    id.rsplit_once('.').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_progress_is_pushed_until_ready_and_resumes_after_a_reconnect() {
    let WithOperator {
        client,
        selector,
        operator,
        ops: _ops,
        cp,
        token,
        ..
    } = WithOperator::start(&[]).await;
    let tenant = ossature_e2e::unique("cps");
    let (status, _, answer) = cp
        .command(
            "onboardTenant",
            &token,
            "onboard-streamed",
            &onboarding(&tenant, &selector),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

    // Two streams of the tenant, opened right after the command (the watch
    // may not hold the tenant yet), share one journal.
    let (status, first, problem) = cp.events(&tenant, &token, None).await;
    assert_eq!(status, 200, "{problem}");
    let mut first = first.unwrap();
    let (_, second, _) = cp.events(&tenant, &token, None).await;
    let mut second = second.unwrap();
    assert_eq!(cp.running.app.streams.journaled(), 1);
    let snapshot = second.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["status"]["ready"], json!(null));
    // The second client goes away after its snapshot.
    drop(second);

    // The first follows every change until Ready: a snapshot, then
    // conditions turning True one backend after another, in order.
    let events = first.until_end(Duration::from_secs(240)).await;
    assert_eq!(events[0].event, "snapshot", "{events:?}");
    let end = events.last().unwrap();
    assert_eq!(end.data["state"], "Ready", "{events:?}");
    let changes = &events[1..events.len() - 1];
    for backend in [
        "NamespaceReady",
        "RealmReady",
        "MessagingReady",
        "SecretsReady",
    ] {
        assert!(
            changes.iter().any(|e| e.event == "condition"
                && e.data["kind"] == "Tenant"
                && e.data["condition"]["type"] == backend
                && e.data["condition"]["status"] == "True"),
            "{backend} turning True in {changes:?}"
        );
    }
    assert!(
        changes
            .iter()
            .any(|e| e.data["kind"] == "Environment" && e.data["name"] == "prod"),
        "the environment's conditions in {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|e| e.event == "progress" && e.data["ready"] == true),
        "{changes:?}"
    );
    let ids: Vec<u64> = events[..events.len() - 1]
        .iter()
        .map(|e| seq(&e.id))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");

    // The second client comes back with the id of its snapshot: it gets
    // exactly what the first got after that point, not a new snapshot.
    let (_, resumed, _) = cp.events(&tenant, &token, snapshot.id.as_deref()).await;
    let resumed = resumed.unwrap().until_end(Duration::from_secs(30)).await;
    let missed: Vec<&Sse> = events
        .iter()
        .filter(|e| e.id.is_some() && seq(&e.id) > seq(&snapshot.id))
        .collect();
    assert!(!missed.is_empty());
    let replayed: Vec<&Sse> = resumed.iter().filter(|e| e.event != "end").collect();
    assert_eq!(replayed, missed);
    assert_eq!(resumed.last().unwrap().data["state"], "Ready");

    // An id this server never gave: a snapshot, Ready, and the end.
    let (_, fresh, _) = cp
        .events(&tenant, &token, Some("01J0000000000000000000000.3"))
        .await;
    let fresh = fresh.unwrap().until_end(Duration::from_secs(30)).await;
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    assert_eq!(fresh[0].event, "snapshot");
    assert_eq!(fresh[0].data["status"]["ready"], true);

    // A tenant that does not exist, and no token.
    let (status, _, problem) = cp.events("nosuchtenant", &token, None).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(
        problem["type"]
            .as_str()
            .map(|t| t.ends_with("/tenant-not-found")),
        Some(true),
        "{problem}"
    );
    let response = http()
        .get(format!("{}/v1/streams/tenants/{tenant}", cp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Offboarding is followed to its end too (a stream of a Ready tenant
    // ends at once, so it is opened once the offboarding is under way).
    let (status, _, answer) = cp
        .command(
            "offboardTenant",
            &token,
            "offboard-streamed",
            &json!({"tenant": tenant}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, leaving, problem) = cp.events(&tenant, &token, None).await;
    assert_eq!(status, 200, "{problem}");
    let rest = leaving.unwrap().until_end(Duration::from_secs(240)).await;
    assert_eq!(rest[0].event, "snapshot");
    assert_eq!(rest[0].data["status"]["deleting"], true, "{rest:?}");
    assert!(
        rest.iter()
            .any(|e| e.event == "removed" && e.data["kind"] == "Tenant"),
        "{rest:?}"
    );
    assert_eq!(rest.last().unwrap().data["state"], "Deleted", "{rest:?}");

    let lines = cp.audit_lines();
    assert_audit_lines_valid(&lines);
    assert!(
        lines
            .iter()
            .filter(|l| l["action"] == "tenantEvents" && l["status"] == 200)
            .count()
            >= 5
    );
    remove_keys(&client, &tenant).await;
    cp.running.stop();
    operator.abort();
}
