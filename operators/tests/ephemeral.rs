//! An Ephemeral environment's `ttl`: status shows when it expires, raising
//! the ttl extends it, and when its time is up it is deleted with its
//! namespace and Pulsar namespace.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use ossature_crds::{Environment, Tenant};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_environment_expires_and_can_be_extended() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("ep{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&name), &sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(60)).await;

    let ns = format!("tn-{name}");
    let environments: Api<Environment> = Api::namespaced(client.clone(), &ns);
    let pr: Environment = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "pr-1"}, "spec": {"kind": "Ephemeral", "ttl": "25s"},
    }))
    .unwrap();
    let created = environments
        .create(&PostParams::default(), &pr)
        .await
        .unwrap();
    let born = created.metadata.creation_timestamp.unwrap().0;
    let status = wait_for("environment Ready", Duration::from_secs(30), || {
        let environments = environments.clone();
        async move {
            let status = environments.get("pr-1").await.ok()?.status?;
            (condition(&status.conditions, "Ready")?.0 == "True").then_some(status)
        }
    })
    .await;
    assert_eq!(
        status.expires_at.unwrap().0.duration_since(born).as_secs(),
        25,
        "expires 25 s after creation"
    );

    // Extended before it runs out: it outlives its first ttl.
    environments
        .patch(
            "pr-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttl": "1h"}})),
        )
        .await
        .unwrap();
    wait_for("expiry extended", Duration::from_secs(15), || {
        let environments = environments.clone();
        async move {
            let status = environments.get("pr-1").await.ok()?.status?;
            (status.expires_at?.0.duration_since(born).as_secs() == 3600).then_some(())
        }
    })
    .await;
    let pulsar_namespace = format!("/admin/v2/namespaces/{name}/pr-1/retention");
    assert_eq!(pulsar_get(&env, &pulsar_namespace).await.0, 200);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deadline = born.checked_add(jiff_seconds(35)).unwrap();
    while k8s_openapi::jiff::Timestamp::now() < deadline {
        assert!(
            environments.get_opt("pr-1").await.unwrap().is_some(),
            "an extended environment outlives its first ttl"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Shortened below its age: it goes at once, with everything it provisioned.
    let shortened = Instant::now();
    environments
        .patch(
            "pr-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttl": "30s"}})),
        )
        .await
        .unwrap();
    wait_for("expired environment gone", Duration::from_secs(30), || {
        let environments = environments.clone();
        async move {
            environments
                .get_opt("pr-1")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(shortened.elapsed() < Duration::from_secs(30));
    assert_eq!(pulsar_get(&env, &pulsar_namespace).await.0, 404);
    wait_for(
        "environment namespace gone",
        Duration::from_secs(60),
        || {
            let namespaces = namespaces.clone();
            let ns = format!("{ns}--pr-1");
            async move { namespaces.get_opt(&ns).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
}

fn jiff_seconds(seconds: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(seconds)
}
