//! The API against the real apiserver and Keycloak, without an operator:
//! problem+json answers, bad input refused field by field, tokens refused,
//! dry runs that write nothing, idempotency (replay, 422, 409), bulk
//! requests, paging, invocation status, and audit lines that follow their
//! schema.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use kube::Api;
use ossature_crds::{Scope, Tenant};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_checked_answered_as_problems_and_audited() {
    let env = stack().await;
    let client = kube_client(&env).await;
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let cp = ControlPlane::start(&env, &client, &ops.realm).await;
    let token = ops.token().await;
    let selector = ossature_e2e::unique("cp");
    let tenant = ossature_e2e::unique("cpr");
    let tenants: Api<Tenant> = Api::all(client.clone());
    let absent = ossature_e2e::unique("cpx");

    // No token, a token of the wrong algorithm, a bad context header.
    let answer = cp
        .post("/v1/queries/listTenants", None, None, &json!({}))
        .await;
    assert_problem(&answer, 401, "unauthenticated");
    let forged = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"iss":"x","organization":["acme"]}"#)
    );
    let answer = cp.query("listTenants", &forged, &json!({})).await;
    assert_problem(&answer, 401, "unauthenticated");
    assert!(answer.2["detail"].as_str().unwrap().contains("EdDSA"));
    let response = http()
        .post(format!("{}/v1/queries/listTenants", cp.base))
        .bearer_auth(&token)
        .header("ossature-invocation", "not base64!")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://ossature.dev/problems/invalid-invocation-context"
    );

    // The context is forked: the answer names the caller's as its parent.
    let caller_context = json!({"actionId": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
        "invocationId": "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ", "toggles": {"logLevel": "debug"}});
    let response = cp
        .query_in_context("listTenants", &token, &caller_context, &json!({"limit": 1}))
        .await;
    assert_eq!(response.status(), 200);
    let forked: Value = serde_json::from_slice(
        &STANDARD
            .decode(response.headers()["ossature-invocation"].to_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(forked["actionId"], "01JQ3X5T0RYB9Q8K1W7ZC4M2NP");
    assert_eq!(forked["parentInvocationId"], "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ");
    assert_ne!(forked["invocationId"], "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ");
    let page: Value = response.json().await.unwrap();
    let first_page = page["items"].as_array().unwrap().clone();
    assert!(first_page.len() <= 1);
    if let Some(next) = page["continue"].as_str() {
        let (status, _, second) = cp
            .query(
                "listTenants",
                &token,
                &json!({"limit": 1, "continue": next}),
            )
            .await;
        assert_eq!(status, 200, "{second}");
        let after = second["items"][0]["name"].as_str().unwrap();
        assert!(
            after > first_page[0]["name"].as_str().unwrap(),
            "pages follow names"
        );
    }

    // Bad input: unknown fields, every bad field named, wrong media type,
    // too large, unknown command, wrong method.
    let mut unknown = onboarding(&tenant, &selector);
    unknown["scopes"][0]["owner"] = json!("x");
    let answer = cp
        .command("onboardTenant", &token, "k-unknown", &unknown)
        .await;
    assert_problem(&answer, 400, "invalid-input");
    assert_eq!(answer.2["errors"][0]["field"], "scopes[0].owner");
    assert!(
        answer.2["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `owner`")
    );
    let mut bad = onboarding("Bad--Name", &selector);
    bad["residency"] = json!("EU");
    bad["quotas"]["cpu"] = json!("lots");
    bad["environments"][0]["ttl"] = json!("1h");
    let answer = cp.command("onboardTenant", &token, "k-bad", &bad).await;
    assert_problem(&answer, 400, "invalid-input");
    let fields: Vec<&str> = answer.2["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["tenant", "residency", "quotas.cpu", "environments[0].ttl"]
    );
    let response = http()
        .post(format!("{}/v1/commands/onboardTenant", cp.base))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("tenant=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let huge = json!({"tenant": "x".repeat(70_000)});
    let answer = cp.command("offboardTenant", &token, "k", &huge).await;
    assert_problem(&answer, 413, "body-too-large");
    let answer = cp.command("dropEverything", &token, "k", &json!({})).await;
    assert_eq!(answer.0, 404);
    assert_eq!(answer.2["type"], "https://ossature.dev/problems/not-found");
    let response = http()
        .get(format!("{}/v1/commands/onboardTenant", cp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let answer = cp
        .post(
            "/v1/commands/onboardTenant",
            Some(&token),
            None,
            &onboarding(&tenant, &selector),
        )
        .await;
    assert_problem(&answer, 400, "idempotency-key-required");

    // A dry run answers with the apiserver's own dry run and writes nothing.
    let mut dry = onboarding(&tenant, &selector);
    dry["dryRun"] = json!(true);
    let (status, _, body) = cp.command("onboardTenant", &token, "k-dry", &dry).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dryRun"], true);
    let objects = body["objects"].as_array().unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Namespace", "Tenant", "Scope", "Scope", "Environment"]
    );
    let tenant_object = &objects[1]["object"];
    assert_eq!(tenant_object["spec"]["quotas"]["memory"], "8Gi");
    assert_eq!(
        tenant_object["spec"]["deletionPolicy"], "Delete",
        "defaults filled in by the apiserver"
    );
    assert!(
        objects[2]["note"]
            .as_str()
            .unwrap()
            .contains("created by this command")
    );
    // The plan: what the operators would create, computed by the model.
    assert_eq!(body["plan"]["computed"], true);
    let planned = body["plan"]["changes"].as_array().unwrap();
    assert!(
        planned.iter().all(|c| c["action"] == "create"),
        "{planned:?}"
    );
    assert!(
        planned
            .iter()
            .any(|c| c["kind"] == "PulsarNamespace" && c["name"] == format!("{tenant}/prod")),
        "{planned:?}"
    );
    assert!(
        tenants.get_opt(&tenant).await.unwrap().is_none(),
        "a dry run wrote the Tenant"
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("tn-{tenant}"))
            .await
            .unwrap()
            .is_none()
    );
    // A command, then the same again: the first answer, marked a replay,
    // and nothing written again.
    let body = onboarding(&tenant, &selector);
    let (status, headers, first) = cp.command("onboardTenant", &token, "k-1", &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["replay"], false);
    let written = tenants.get(&tenant).await.unwrap();
    let annotations = written.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["control-plane.ossature.dev/invocation-id"],
        first["invocationId"].as_str().unwrap()
    );
    assert!(annotations["control-plane.ossature.dev/actor"].starts_with("operator/"));
    assert!(annotations["control-plane.ossature.dev/decision"].contains("platform operator"));
    // Its namespace, created while the key was claimed, carries it too.
    let namespace = namespaces.get(&format!("tn-{tenant}")).await.unwrap();
    assert_eq!(
        namespace.metadata.annotations.unwrap()["control-plane.ossature.dev/invocation-id"],
        first["invocationId"].as_str().unwrap()
    );
    let context: Value = serde_json::from_slice(
        &STANDARD
            .decode(headers["ossature-invocation"].to_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(context["invocationId"], first["invocationId"]);
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    assert_eq!(
        scopes.list(&Default::default()).await.unwrap().items.len(),
        2
    );
    assert_replayed(&cp, &token, "k-1", &body, &first, &written).await;

    // Asked by invocation id.
    let record = completed_invocation(&cp, &token, &first["invocationId"]).await;
    assert_eq!(record["command"], "onboardTenant");
    assert_eq!(record["result"]["invocationId"], first["invocationId"]);

    // Expired keys are swept; the key then starts afresh.
    let actor = &annotations["control-plane.ossature.dev/actor"];
    let name = ossature_control_plane::idempotency::object_name(&tenant, actor, "k-1");
    let keys: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "ossature-system");
    let stored = keys.get(&name).await.unwrap();
    assert_eq!(stored.data.as_ref().unwrap()["state"], "Completed");
    let expired = json!({"metadata": {"annotations": {"control-plane.ossature.dev/expires-at": "2020-01-01T00:00:00Z"}}});
    keys.patch(
        &name,
        &Default::default(),
        &kube::api::Patch::Merge(&expired),
    )
    .await
    .unwrap();
    assert!(cp.running.app.idempotency.sweep().await.unwrap() >= 1);
    assert!(
        keys.get_opt(&name).await.unwrap().is_none(),
        "the expired key is still there"
    );
    let (status, _, fresh) = cp.command("onboardTenant", &token, "k-1", &body).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["replay"], false);
    assert_ne!(fresh["invocationId"], first["invocationId"]);
    // Sent again the moment the answer arrives (the answer is stored just
    // after it is sent): the replay, never a 409.
    let (status, headers, at_once) = cp.command("onboardTenant", &token, "k-1", &body).await;
    assert_eq!(status, 200, "{at_once}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(at_once["invocationId"], fresh["invocationId"]);

    // A repeat while the first is running: 409. The first waits (no
    // operator makes the tenant Ready) and times out.
    let change = json!({"tenant": tenant, "quotas": {"pods": 60}, "wait": {"timeoutSeconds": 4}});
    let slow = cp.command("changeTenant", &token, "k-2", &change);
    let repeat = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cp.command("changeTenant", &token, "k-2", &change).await
    };
    let ((status, _, slow), repeat) = tokio::join!(slow, repeat);
    assert_eq!(status, 200, "{slow}");
    assert_eq!(slow["outcome"]["state"], "TimedOut");
    assert_problem(&repeat, 409, "idempotency-key-in-flight");
    assert_eq!(repeat.1["retry-after"], "2");
    assert_eq!(
        tenants.get(&tenant).await.unwrap().spec.quotas.pods,
        Some(60)
    );
    assert_eq!(
        tenants.get(&tenant).await.unwrap().spec.display_name,
        format!("Tenant {tenant}"),
        "a change keeps what it does not name"
    );

    // Bulk: validateFirst runs nothing when one item is refused; without
    // it each item has its own result, in order.
    let bulk = json!({"validateFirst": true, "items": [
        {"command": "grantRole", "idempotencyKey": "b-1",
         "input": {"tenant": tenant, "scope": "eu", "role": "Viewer", "groups": ["auditors"]}},
        {"command": "addScope", "idempotencyKey": "b-2",
         "input": {"tenant": tenant, "scope": {"name": "Bad", "displayName": "x"}}},
    ]});
    let (status, _, result) = cp.post("/v1/commands", Some(&token), None, &bulk).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["executed"], false);
    assert_eq!(result["items"][0]["status"], 424);
    assert_eq!(result["items"][1]["status"], 400);
    assert!(
        scopes.get("eu").await.unwrap().spec.grants.is_empty(),
        "validateFirst ran an item"
    );
    let bulk = json!({"items": [
        {"command": "grantRole", "idempotencyKey": "b-3",
         "input": {"tenant": tenant, "scope": "eu", "role": "Viewer", "groups": ["auditors"]}},
        {"command": "moveScope", "idempotencyKey": "b-4",
         "input": {"tenant": tenant, "scope": "global", "parent": "eu"}},
        {"command": "addScope", "idempotencyKey": "b-5",
         "input": {"tenant": tenant, "scope": {"name": "france", "displayName": "France", "parent": "eu"}}},
    ]});
    let (status, _, result) = cp.post("/v1/commands", Some(&token), None, &bulk).await;
    assert_eq!(status, 200, "{result}");
    let statuses: Vec<u64> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 400, 200], "{result}");
    assert!(
        result["items"][1]["problem"]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cycle"),
        "{result}"
    );
    assert_eq!(
        scopes.get("eu").await.unwrap().spec.grants[0].groups,
        ["auditors"]
    );
    assert_eq!(
        scopes.get("france").await.unwrap().spec.parent.as_deref(),
        Some("eu")
    );
    let queries = json!({"items": [
        {"query": "tenantStatus", "input": {"tenant": tenant}},
        {"query": "tenantStatus", "input": {"tenant": absent}},
    ]});
    let (status, _, result) = cp.post("/v1/queries", Some(&token), None, &queries).await;
    assert_eq!(status, 200);
    assert_eq!(result["items"][0]["status"], 200);
    assert_eq!(
        result["items"][0]["result"]["scopes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        result["items"][1]["problem"]["type"],
        "https://ossature.dev/problems/tenant-not-found"
    );

    // Grants changed at once are both kept: each write is conditional on
    // what it read, and read again when that changed.
    let grant = |user: &str, key: &'static str| {
        let input = json!({"tenant": tenant, "scope": "global", "role": "Editor", "users": [user]});
        let cp = &cp;
        let token = &token;
        async move { cp.command("grantRole", token, key, &input).await }
    };
    let (one, two) = tokio::join!(grant("alice", "g-1"), grant("bob", "g-2"));
    assert_eq!(
        (one.0.as_u16(), two.0.as_u16()),
        (200, 200),
        "{} {}",
        one.2,
        two.2
    );
    let editors = scopes.get("global").await.unwrap().spec.grants;
    let editors = &editors
        .iter()
        .find(|g| g.role.as_str() == "Editor")
        .unwrap()
        .users;
    assert!(
        editors.contains(&"alice".to_string()) && editors.contains(&"bob".to_string()),
        "{editors:?}"
    );

    // Offboarding of a tenant that is not there.
    let answer = cp
        .command("offboardTenant", &token, "k-3", &json!({"tenant": absent}))
        .await;
    assert_problem(&answer, 404, "tenant-not-found");

    // Every invocation is audited, refused ones too, each line valid.
    let lines = cp.audit_lines();
    assert_audit_lines_valid(&lines);
    let replayed = lines.iter().filter(|l| l["replay"] == true).count();
    assert_eq!(replayed, 2);
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 401 && l["actor"].is_null())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["dryRun"] == true && l["status"] == 200)
    );
    let onboarded = lines
        .iter()
        .find(|l| l["invocation"]["invocationId"] == first["invocationId"])
        .unwrap();
    // What it wrote is what the dry run showed.
    let written_kinds: Vec<&str> = onboarded["objectsWritten"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(written_kinds, kinds);
    assert_eq!(onboarded["decision"]["allowed"], true);
    assert!(onboarded["latencyMs"].as_f64().unwrap() > 0.0);
    // Bulk items are invocations of their own, children of the bulk one.
    let children = lines
        .iter()
        .filter(|l| l["route"] == "/v1/commands" && l["action"] == "moveScope")
        .count();
    assert_eq!(children, 1);

    // A namespace made by hand first (as examples/ do): adopted, annotated,
    // and filled in the same round as the Tenant.
    let adopted = ossature_e2e::unique("cpn");
    let labelled = json!({"metadata": {"name": format!("tn-{adopted}"), "labels": {"ossature.dev/tenant": adopted}}});
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(labelled).unwrap(),
        )
        .await
        .unwrap();
    let (status, _, answer) = cp
        .command(
            "onboardTenant",
            &token,
            "k-adopt",
            &onboarding(&adopted, &selector),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let namespace = namespaces.get(&format!("tn-{adopted}")).await.unwrap();
    assert_eq!(
        namespace.metadata.annotations.unwrap()["control-plane.ossature.dev/invocation-id"],
        answer["invocationId"].as_str().unwrap()
    );
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &format!("tn-{adopted}"));
    assert_eq!(
        scopes.list(&Default::default()).await.unwrap().items.len(),
        2
    );
    remove_tenant(&client, &adopted).await;
    remove_keys(&client, &adopted).await;

    remove_tenant(&client, &tenant).await;
    remove_keys(&client, &absent).await;
    cp.running.stop();
}
