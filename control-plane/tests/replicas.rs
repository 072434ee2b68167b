//! Two control planes on one apiserver, as the chart runs them behind one
//! Service: a request may reach either. Idempotency holds across them (a
//! repeat sent to the other replica the moment the first answers is the
//! replay; another body is a 422; the same new key sent to both at once
//! runs once), each answers for invocations the other ran, and each sees
//! the tenants the other onboarded.

mod common;

use common::*;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use ossature_crds::Tenant;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_serve_one_api() {
    let WithOperator {
        env,
        client,
        selector,
        operator: _operator,
        ops,
        cp: a,
        token,
    } = WithOperator::start(&[]).await;
    let unlimited = [
        "--rate-limit-per-second",
        "1000",
        "--rate-limit-burst",
        "1000",
    ];
    let b = ControlPlane::start_with(&env, &client, &ops.realm, &unlimited, "http").await;
    let tenant = ossature_e2e::unique("cpr");
    let tenants: Api<Tenant> = Api::all(client.clone());

    // Onboarded through one; the same request sent to the other the moment
    // the first answers (its answer is still being stored): the replay.
    let body = onboarding(&tenant, &selector);
    let (status, _, first) = a.command("onboardTenant", &token, "k-1", &body).await;
    assert_eq!(status, 200, "{first}");
    let written = tenants.get(&tenant).await.unwrap();
    assert_replayed(&b, &token, "k-1", &body, &first, &written).await;

    // Each answers for what the other ran, and sees its tenants.
    let record = completed_invocation(&b, &token, &first["invocationId"]).await;
    assert_eq!(record["command"], "onboardTenant");
    let ready = wait_ready(&b, &token, &tenant).await;
    assert_eq!(ready["tenant"], tenant.as_str());

    // The same new key at both at once: one runs it, the other gets its
    // answer (or, while it runs, a 409); the change is made once.
    let change = json!({"tenant": tenant, "quotas": {"pods": 70}});
    let (at_a, at_b) = tokio::join!(
        a.command("changeTenant", &token, "k-2", &change),
        b.command("changeTenant", &token, "k-2", &change),
    );
    let answers = [&at_a, &at_b];
    let ran: Vec<&&Answer> = answers
        .iter()
        .filter(|(status, headers, _)| {
            *status == 200 && !headers.contains_key("idempotent-replayed")
        })
        .collect();
    assert_eq!(ran.len(), 1, "{at_a:?} {at_b:?}");
    for (status, headers, answer) in answers {
        if headers.contains_key("idempotent-replayed") {
            assert_eq!(answer["invocationId"], ran[0].2["invocationId"]);
        } else if *status != 200 {
            assert_problem(
                &(*status, headers.clone(), answer.clone()),
                409,
                "idempotency-key-in-flight",
            );
        }
    }
    let audited: Vec<Value> = a
        .audit_lines()
        .into_iter()
        .chain(b.audit_lines())
        .filter(|l| {
            l["action"] == "changeTenant" && !l["objectsWritten"].as_array().unwrap().is_empty()
        })
        .collect();
    assert_eq!(
        audited.len(),
        1,
        "the change was made more than once: {audited:?}"
    );
    assert_audit_lines_valid(&b.audit_lines());

    // A key another replica has answered but not yet stored: the request
    // waits for the answer instead of a 409, and gets a 409 only if it does
    // not come within the grace.
    let (status, _, stored) = a.command("changeTenant", &token, "k-3", &change).await;
    assert_eq!(status, 200, "{stored}");
    let actor = &written.metadata.annotations.as_ref().unwrap()["control-plane.ossature.dev/actor"];
    let name = ossature_control_plane::idempotency::object_name(&tenant, actor, "k-3");
    let keys: Api<ConfigMap> = Api::namespaced(client.clone(), "ossature-system");
    let state = |state: &str| json!({"data": {"state": state}});
    let set_state = |state: Value| {
        let (keys, name) = (keys.clone(), name.clone());
        async move {
            keys.patch(&name, &PatchParams::default(), &Patch::Merge(&state))
                .await
                .unwrap();
        }
    };
    set_state(state("InFlight")).await;
    let started = Instant::now();
    let (retried, ()) = tokio::join!(b.command("changeTenant", &token, "k-3", &change), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_state(state("Completed")).await;
    });
    assert_eq!(retried.0, 200, "{retried:?}");
    assert_eq!(retried.1["idempotent-replayed"], "true");
    assert_eq!(retried.2["invocationId"], stored["invocationId"]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    set_state(state("InFlight")).await;
    let started = Instant::now();
    let refused = b.command("changeTenant", &token, "k-3", &change).await;
    assert_problem(&refused, 409, "idempotency-key-in-flight");
    assert!(started.elapsed() >= ossature_control_plane::idempotency::ANSWER_GRACE);

    b.offboard(&token, &tenant).await;
    remove_keys(&client, &tenant).await;
}

/// `tenant`'s status from `cp`, once Ready.
async fn wait_ready(cp: &ControlPlane, token: &str, tenant: &str) -> Value {
    let query = json!({"tenant": tenant});
    for _ in 0..240 {
        let (status, _, answer) = cp.query("tenantStatus", token, &query).await;
        if status == 200 && answer["ready"] == true {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("tenant {tenant} was not Ready within 120 s");
}
