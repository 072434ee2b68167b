//! The operator binary against the real stack: a Tenant becomes Ready, each
//! backend shows its objects through its own API, an unchanged tenant causes
//! no writes, drift is restored, what leaves the spec leaves the cluster,
//! Retain keeps namespaces, and deleting one tenant removes everything of it
//! and nothing of a tenant whose name extends it.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use ossature_crds::Tenant;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_lifecycle_across_every_backend() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    // A short resync: Keycloak cannot be watched, its drift is found by resync.
    let operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    let tenants: Api<Tenant> = Api::all(client.clone());

    // `first-eu` extends `first`'s name: deleting `first` must leave it alone.
    let first = format!("op{}", suffix());
    let second = format!("{first}-eu");
    // The first with a realm of its own, the second an organization.
    let mut own = labelled(tenant(&first), &sel);
    own.spec.identity.isolation = Some(ossature_crds::Isolation::Realm);
    tenants.create(&PostParams::default(), &own).await.unwrap();
    // One tenant that leaves every optional field out: its defaults must settle too.
    tenants
        .create(
            &PostParams::default(),
            &labelled(bare_tenant(&second), &sel),
        )
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

    // What leaves the spec leaves the cluster: the cpu quota goes, pods stay.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    let hard = |q: ResourceQuota| q.spec.unwrap().hard.unwrap_or_default();
    assert!(hard(quotas.get("ossature-quota").await.unwrap()).contains_key("requests.cpu"));
    tenants
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quotas": {"cpu": null}}})),
        )
        .await
        .unwrap();
    wait_for("cpu quota removed", Duration::from_secs(30), || {
        let quotas = quotas.clone();
        async move {
            let hard = hard(quotas.get("ossature-quota").await.ok()?);
            (!hard.contains_key("requests.cpu") && hard.contains_key("pods")).then_some(())
        }
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
    assert!(
        organization(&env, "ossature-consumer-us", &second)
            .await
            .is_some()
    );
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
    assert!(
        organization(&env, "ossature-consumer-us", &second)
            .await
            .is_none()
    );
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_named_and_the_rest_proceeds() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let sel = suffix();
    let name = format!("down{}", suffix());
    {
        // Pulsar "down": nothing listens on port 1.
        let _broken = start_operator_with(&env, &sel, &["--pulsar-admin-url=http://127.0.0.1:1"]);
        tenants
            .create(&PostParams::default(), &labelled(tenant(&name), &sel))
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
    let _operator = start_operator(&env, &sel);
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_keeps_backend_objects_and_namespaces_after_delete() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("keep{}", suffix());
    let mut retained = labelled(bare_tenant(&name), &sel);
    retained.spec.deletion_policy = ossature_crds::DeletionPolicy::Retain;
    tenants
        .create(&PostParams::default(), &retained)
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    // Something the tenant ran and stored in its namespace.
    let namespace = format!("tn-{name}");
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &namespace);
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "data"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    assert!(
        organization(&env, "ossature-consumer-us", &name)
            .await
            .is_some(),
        "Retain keeps the organization"
    );
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
    // The namespace stays, with what was in it, labelled as retained and no
    // longer managed; it stays so beyond a garbage-collector pass.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for _ in 0..10 {
        let ns = namespaces.get(&namespace).await.unwrap();
        assert!(ns.metadata.deletion_timestamp.is_none(), "namespace kept");
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(labels["ossature.dev/retained"], "true");
        assert!(!labels.contains_key("app.kubernetes.io/managed-by"));
        assert_eq!(
            configmaps.get("data").await.unwrap().data.unwrap()["k"],
            "v"
        );
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
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let events = kubectl(
        &env,
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ],
    );
    assert!(
        events.contains("Retained") && events.contains(&format!("namespace {namespace}")),
        "the Event says the namespace is kept: {events}"
    );

    // The tenant created again takes back what was kept (creating meets
    // what exists, and adopts it), and this time deleting removes it all.
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&name), &sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    let ns = namespaces.get(&namespace).await.unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "ossature");
    assert!(
        !labels.contains_key("ossature.dev/retained"),
        "managed again"
    );
    assert_eq!(
        configmaps.get("data").await.unwrap().data.unwrap()["k"],
        "v"
    );
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    assert!(
        organization(&env, "ossature-consumer-us", &name)
            .await
            .is_none()
    );
    assert_eq!(pulsar_tenant(&env, &name).await.0, 404);
    let mounts = openbao_mounts(&env).await;
    assert!(mounts["data"].get(format!("tenants/{name}/kv/")).is_none());
}

/// At the default resync, a hand change in a tenant's namespace is put back
/// within seconds, by its watch; what the apiserver itself adds (a quota's
/// usage) and the operator's own writes start no reconcile: a Ready tenant
/// left alone is not reconciled at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_changes_in_a_tenant_namespace_are_put_back_in_seconds() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    // Without the edge: its probe reads every few seconds, for all tenants.
    let operator = start_operator_with(&env, &sel, &["--no-edge"]);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("hand{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(tenant(&name), &sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(90)).await;
    let namespace = format!("tn-{name}");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    // The quota controller has filled in its usage.
    wait_for("quota usage", Duration::from_secs(30), || {
        let quotas = quotas.clone();
        async move {
            let q = quotas.get("ossature-quota").await.ok()?;
            q.status?.used.map(|_| ())
        }
    })
    .await;
    // Reconciles, not reads: the instance may take over the shared realms
    // from another test's operator meanwhile, and read them.
    let quiet = (reconciles(&operator).await, writes(&operator).await);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        (reconciles(&operator).await, writes(&operator).await),
        quiet,
        "a Ready tenant left alone was reconciled or caused writes"
    );

    // A quota raised by hand, a limit range deleted: back in seconds.
    let pods = |q: &ResourceQuota| q.spec.as_ref()?.hard.as_ref()?.get("pods").cloned();
    let wanted = pods(&quotas.get("ossature-quota").await.unwrap()).unwrap();
    quotas
        .patch(
            "ossature-quota",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "999"}}})),
        )
        .await
        .unwrap();
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &namespace);
    limits
        .delete("ossature-limits", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("quota put back", Duration::from_secs(15), || {
        let quotas = quotas.clone();
        let wanted = wanted.clone();
        async move {
            let q = quotas.get("ossature-quota").await.ok()?;
            (pods(&q) == Some(wanted)).then_some(())
        }
    })
    .await;
    wait_for("limit range put back", Duration::from_secs(15), || {
        let limits = limits.clone();
        async move { limits.get_opt("ossature-limits").await.ok().flatten() }
    })
    .await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
}

/// Every kind follows Tenants through one shared watch: more Tenant changes
/// than its buffer holds must not hold it back (a subscription nobody read
/// once stopped every controller after about a thousand changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenant_changes_never_stall_the_shared_watch() {
    use futures::StreamExt;
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator_with(&env, &sel, &["--no-edge"]);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let busy = format!("busy{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&busy), &sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &busy, Duration::from_secs(90)).await;
    // 1,500 changes (labels: no new generation), 8 at a time.
    futures::stream::iter(0..1500)
        .for_each_concurrent(8, |i| {
            let tenants = tenants.clone();
            let busy = busy.clone();
            async move {
                tenants
                    .patch(
                        &busy,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {"churn": i.to_string()}}})),
                    )
                    .await
                    .unwrap();
            }
        })
        .await;
    let late = format!("late{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&late), &sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &late, Duration::from_secs(60)).await;
    delete_tenants(&tenants, &[&busy, &late]).await;
}

/// With the edge on and its host signed by the tenant's CA, a new tenant is
/// Ready in the first status the operator writes: namespace, identity,
/// messaging, secrets, CA, host certificate and edge route in one reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_is_ready_in_the_first_status_written() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{ListParams, WatchEvent, WatchParams};

    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("one{}", suffix());
    // Watched from before it exists, so every write of it is seen.
    let since = tenants
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut writes = tenants
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &since,
        )
        .await
        .unwrap()
        .boxed();
    tenants
        .create(&PostParams::default(), &labelled(tenant(&name), &sel))
        .await
        .unwrap();

    let first_status = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(event) = writes.try_next().await.unwrap() {
            if let WatchEvent::Added(t) | WatchEvent::Modified(t) = event
                && let Some(status) = t.status
                && !status.conditions.is_empty()
            {
                return status;
            }
        }
        panic!("the watch of {name} ended");
    })
    .await
    .expect("a status within 90 s");
    for wanted in [
        "Ready",
        "CertificateAuthorityReady",
        "CertificateReady",
        "EdgeReady",
    ] {
        assert_eq!(
            condition(&first_status.conditions, wanted).map(|c| c.0),
            Some("True".into()),
            "{wanted} in the first status written: {:?}",
            first_status.conditions
        );
    }

    delete_tenants(&tenants, &[&name]).await;
}
