//! The operator binary against the real stack: a Tenant becomes Ready, each
//! backend shows its objects through its own API, an unchanged tenant causes
//! no writes, drift is restored, and deleting one tenant removes everything
//! of it and nothing of a tenant whose name extends it.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use ossature_crds::Tenant;
use serde_json::json;

// Each test runs its own operator, and every operator manages every Tenant:
// one at a time, or a deliberately broken one would fight the others.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifecycle_across_every_backend() {
    let _serial = SERIAL.lock().await;
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let operator = start_operator(&env);
    let tenants: Api<Tenant> = Api::all(client.clone());

    // `first-eu` extends `first`'s name: deleting `first` must leave it alone.
    let first = format!("op{}", suffix());
    let second = format!("{first}-eu");
    tenants
        .create(&PostParams::default(), &tenant(&first))
        .await
        .unwrap();
    // One tenant that leaves every optional field out: its defaults must settle too.
    tenants
        .create(&PostParams::default(), &bare_tenant(&second))
        .await
        .unwrap();
    for name in [&first, &second] {
        wait_tenant_ready(&tenants, name, Duration::from_secs(180)).await;
    }

    // Each backend, through its own API.
    let namespace = format!("tn-{first}");
    let ns = Api::<Namespace>::all(client.clone())
        .get(&namespace)
        .await
        .unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["ossature.dev/tenant"], first);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    assert_eq!(
        policies
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let (status, realm_body) = realm(&env, &first).await;
    assert_eq!(status, 200);
    assert_eq!(realm_body["defaultSignatureAlgorithm"], "EdDSA");
    assert_eq!(realm_body["bruteForceProtected"], true);
    let (status, pulsar_body) = pulsar_tenant(&env, &first).await;
    assert_eq!(status, 200);
    assert_eq!(pulsar_body["allowedClusters"], json!(["standalone"]));
    let mounts = openbao_mounts(&env).await;
    assert_eq!(mounts["data"][format!("tenants/{first}/kv/")]["type"], "kv");
    assert_eq!(
        mounts["data"][format!("tenants/{first}/transit/")]["type"],
        "transit"
    );

    // Steady state: three resync periods of an unchanged tenant write nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = writes(&operator).await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(
        writes(&operator).await,
        before,
        "an unchanged tenant caused writes"
    );

    // Drift: a deleted NetworkPolicy and a changed realm come back.
    policies
        .delete("ossature-default-deny", &DeleteParams::default())
        .await
        .unwrap();
    let token = keycloak_token(&env).await;
    let mut drifted = realm_body.clone();
    drifted["accessTokenLifespan"] = json!(3599);
    let response = http()
        .put(format!(
            "{}/admin/realms/{first}",
            env["OSSATURE_KEYCLOAK_URL"]
        ))
        .bearer_auth(&token)
        .json(&drifted)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    wait_for("NetworkPolicy restored", Duration::from_secs(60), || {
        let policies = policies.clone();
        async move {
            policies
                .get_opt("ossature-default-deny")
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    wait_for("realm restored", Duration::from_secs(60), || {
        let env = env.clone();
        let first = first.clone();
        async move { (realm(&env, &first).await.1["accessTokenLifespan"] == json!(300)).then_some(()) }
    })
    .await;

    // Delete the first: everything of it goes, nothing of the second.
    tenants
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &first, Duration::from_secs(120)).await;
    assert_eq!(realm(&env, &first).await.0, 404);
    assert_eq!(pulsar_tenant(&env, &first).await.0, 404);
    let mounts = openbao_mounts(&env).await;
    assert!(mounts["data"].get(format!("tenants/{first}/kv/")).is_none());
    assert_eq!(realm(&env, &second).await.0, 200);
    assert_eq!(pulsar_tenant(&env, &second).await.0, 200);
    assert_eq!(
        mounts["data"][format!("tenants/{second}/kv/")]["type"],
        "kv"
    );
    assert!(ready(&tenants.get(&second).await.unwrap()));

    tenants
        .delete(&second, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &second, Duration::from_secs(120)).await;
    assert_eq!(realm(&env, &second).await.0, 404);
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_named_and_the_rest_proceeds() {
    let _serial = SERIAL.lock().await;
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("down{}", suffix());
    {
        // Pulsar "down": nothing listens on port 1.
        let _broken = start_operator_with(&env, &["--pulsar-admin-url=http://127.0.0.1:1"]);
        tenants
            .create(&PostParams::default(), &tenant(&name))
            .await
            .unwrap();
        let status = wait_for("MessagingReady False", Duration::from_secs(120), || {
            let tenants = tenants.clone();
            let name = name.clone();
            async move {
                let status = tenants.get(&name).await.ok()?.status?;
                let messaging = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "MessagingReady")?;
                (messaging.status == "False"
                    && status.conditions.iter().any(|c| c.type_ == "SecretsReady"))
                .then_some(status)
            }
        })
        .await;
        let find = |t: &str| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .clone()
        };
        assert_eq!(find("MessagingReady").reason, "BackendUnreachable");
        assert!(
            find("MessagingReady")
                .message
                .contains("Pulsar could not be reached")
        );
        assert_eq!(find("Ready").status, "False");
        assert_eq!(find("Ready").reason, "MessagingNotReady");
        for other in ["NamespaceReady", "RealmReady", "SecretsReady"] {
            assert_eq!(
                find(other).status,
                "True",
                "{other} proceeds while Pulsar is down"
            );
        }
    }
    // Pulsar "back": the same tenant becomes Ready without anyone touching it.
    let _operator = start_operator(&env);
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_backend_objects_after_delete() {
    let _serial = SERIAL.lock().await;
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let _operator = start_operator(&env);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("keep{}", suffix());
    let mut retained = bare_tenant(&name);
    retained.spec.deletion_policy = ossature_crds::DeletionPolicy::Retain;
    tenants
        .create(&PostParams::default(), &retained)
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    assert_eq!(realm(&env, &name).await.0, 200, "Retain keeps the realm");
    assert_eq!(
        pulsar_tenant(&env, &name).await.0,
        200,
        "Retain keeps the Pulsar tenant"
    );
    let mounts = openbao_mounts(&env).await;
    assert_eq!(
        mounts["data"][format!("tenants/{name}/kv/")]["type"],
        "kv",
        "Retain keeps the KV mount"
    );

    // Clean up by hand what Retain kept.
    let token = keycloak_token(&env).await;
    let http = http();
    http.delete(format!(
        "{}/admin/realms/{name}",
        env["OSSATURE_KEYCLOAK_URL"]
    ))
    .bearer_auth(&token)
    .send()
    .await
    .unwrap();
    http.delete(format!(
        "{}/admin/v2/tenants/{name}",
        env["OSSATURE_PULSAR_ADMIN_URL"]
    ))
    .send()
    .await
    .unwrap();
    for path in [
        format!("sys/mounts/tenants/{name}/kv"),
        format!("sys/mounts/tenants/{name}/transit"),
        format!("sys/policies/acl/tenant-{name}"),
    ] {
        http.delete(format!("{}/v1/{path}", env["OSSATURE_OPENBAO_ADDR"]))
            .header("X-Vault-Token", &env["OSSATURE_OPENBAO_TOKEN"])
            .send()
            .await
            .unwrap();
    }
}
