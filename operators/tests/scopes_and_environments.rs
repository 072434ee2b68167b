//! Scopes and Environments of a tenant through the operator binary at its
//! default resync (so only watches can make it converge quickly): nested
//! Keycloak groups, RBAC that cascades down the scope tree (checked the way
//! `kubectl auth can-i --as-group` does), faults admission cannot see, a
//! namespace and a Pulsar namespace per environment that keep their policies
//! beyond garbage collection, removal of what leaves the spec, and deletion
//! of the tenant taking its scopes and environments first.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use ossature_crds::{Environment, Scope, Tenant};
use serde_json::{Value, json};

fn scope(name: &str, parent: Option<&str>, grants: Value) -> Scope {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name},
        "spec": {"displayName": name, "parent": parent, "grants": grants},
    }))
    .unwrap()
}

/// What `kubectl auth can-i <verb> scopes/<name> -n <ns> --as-group=<group>` answers.
async fn can(client: &Client, group: &str, verb: &str, namespace: &str, name: &str) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": "someone", "groups": [group, "system:authenticated"],
            "resourceAttributes": {"group": "ossature.dev", "resource": "scopes", "verb": verb,
                                   "namespace": namespace, "name": name},
        },
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_tree_and_environments_of_a_tenant() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("sc{}", suffix());
    let ns = format!("tn-{name}");

    // As a tenant's file is applied: its namespace, then children before
    // parents, and the Tenant last. Only watches can make this converge at
    // the default resync.
    labelled_namespace(&client, &name).await;
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &ns);
    let eu_team = format!("{name}-eu-team");
    let us_team = format!("{name}-us-team");
    for s in [
        scope("france", Some("eu"), json!([])),
        scope(
            "eu",
            Some("global"),
            json!([{"role": "Editor", "groups": [eu_team]}, {"role": "Viewer", "groups": ["auditors"]}]),
        ),
        scope(
            "us",
            Some("global"),
            json!([{"role": "Editor", "groups": [us_team]}]),
        ),
        scope("global", None, json!([])),
        // Faults only the controller can see.
        scope("loop-a", Some("loop-b"), json!([])),
        scope("loop-b", Some("loop-a"), json!([])),
        scope("orphan", Some("nowhere"), json!([])),
    ] {
        scopes.create(&PostParams::default(), &s).await.unwrap();
    }
    let environments: Api<Environment> = Api::namespaced(client.clone(), &ns);
    let prod: Environment = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "prod"},
        "spec": {"kind": "Production", "quotas": {"cpu": "2", "pods": 20, "publishRate": 200},
                 "messageRetentionMinutes": 60},
    }))
    .unwrap();
    environments
        .create(&PostParams::default(), &prod)
        .await
        .unwrap();
    tenants
        .create(&PostParams::default(), &{
            // Messaging limits every environment takes unless it sets its own.
            let mut t = labelled(tenant(&name), &sel);
            t.spec.quotas.topics = Some(30);
            t.spec.quotas.backlog = Some(Quantity("64Mi".into()));
            t.spec.quotas.publish_rate = Some(1000);
            t
        })
        .await
        .unwrap();
    let org = wait_tenant_ready(&tenants, &name, Duration::from_secs(60))
        .await
        .status
        .unwrap()
        .organization_id
        .unwrap();
    // The tenant is an organization of the shared realm; its scopes are the
    // organization's groups.
    let by_id = format!(
        "{}/admin/realms/ossature-business-eu/organizations/{org}/groups",
        env["OSSATURE_KEYCLOAK_URL"]
    );
    let groups = format!("{by_id}/group-by-path");

    let france = wait_for("scope france Ready", Duration::from_secs(30), || {
        let scopes = scopes.clone();
        async move {
            let s = scopes.get("france").await.ok()?;
            let status = s.status.clone()?;
            (condition(&status.conditions, "Ready")?.0 == "True").then_some(s)
        }
    })
    .await;
    assert_eq!(
        france.status.unwrap().path.as_deref(),
        Some("/global/eu/france")
    );
    for (faulty, reason) in [("loop-a", "ParentCycle"), ("orphan", "ParentNotFound")] {
        wait_for(
            &format!("scope {faulty} Stalled"),
            Duration::from_secs(60),
            || {
                let scopes = scopes.clone();
                async move {
                    let status = scopes.get(faulty).await.ok()?.status?;
                    (condition(&status.conditions, "Stalled")? == ("True".into(), reason.into()))
                        .then_some(())
                }
            },
        )
        .await;
    }

    // The group, nested like the tree, carrying its path, in Keycloak itself.
    let token = keycloak_token(&env).await;
    let auth = format!("Bearer {token}");
    let (status, group) = get(
        format!("{groups}/global/eu/france"),
        Some(("Authorization", &auth)),
    )
    .await;
    assert_eq!(status, 200, "{group}");
    // A lookup by path is brief: the group itself carries the attributes.
    let (_, group) = get(
        format!("{by_id}/{}", group["id"].as_str().unwrap()),
        Some(("Authorization", &auth)),
    )
    .await;
    assert_eq!(
        group["attributes"]["scopePath"],
        json!(["/global/eu/france"])
    );

    // A grant on `eu` applies to `eu` and `france`, not to `global` or `us`.
    let eu_team = format!("{name}-eu-team");
    wait_for("grant cascades to france", Duration::from_secs(60), || {
        let client = client.clone();
        let (ns, eu_team) = (ns.clone(), eu_team.clone());
        async move {
            can(&client, &eu_team, "patch", &ns, "france")
                .await
                .then_some(())
        }
    })
    .await;
    assert!(can(&client, &eu_team, "patch", &ns, "eu").await);
    assert!(!can(&client, &eu_team, "patch", &ns, "global").await);
    assert!(!can(&client, &eu_team, "patch", &ns, "us").await);
    assert!(
        !can(&client, &eu_team, "delete", &ns, "france").await,
        "Editor cannot delete"
    );

    // The environment: its namespace and its Pulsar namespace with the rules.
    wait_for("environment Ready", Duration::from_secs(30), || {
        let environments = environments.clone();
        async move {
            let status = environments.get("prod").await.ok()?.status?;
            (condition(&status.conditions, "Ready")?.0 == "True").then_some(())
        }
    })
    .await;
    let env_ns_name = format!("{ns}--prod");
    let env_ns = Api::<Namespace>::all(client.clone())
        .get(&env_ns_name)
        .await
        .unwrap();
    assert_eq!(
        env_ns.metadata.labels.unwrap()["ossature.dev/environment"],
        "prod"
    );
    let retention_url = format!("/admin/v2/namespaces/{name}/prod/retention");
    let (status, retention) = pulsar_get(&env, &retention_url).await;
    assert_eq!(status, 200);
    assert_eq!(retention["retentionTimeInMinutes"], 60);
    let (_, enforced) = pulsar_get(
        &env,
        &format!("/admin/v2/namespaces/{name}/prod/schemaValidationEnforced"),
    )
    .await;
    assert_eq!(enforced, json!(true));
    let limits = format!("/admin/v2/namespaces/{name}/prod");
    assert_eq!(
        pulsar_get(&env, &format!("{limits}/maxTopicsPerNamespace")).await,
        (200, json!(30))
    );
    let (_, backlog) = pulsar_get(&env, &format!("{limits}/backlogQuotaMap")).await;
    assert_eq!(backlog["destination_storage"]["limitSize"], 64 << 20);
    let (_, rate) = pulsar_get(&env, &format!("{limits}/publishRate")).await;
    assert_eq!(
        rate["publishThrottlingRateInMsg"], 200,
        "the environment's own"
    );

    // The tenant's limit changes: its environments follow, by watch.
    Api::<Tenant>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quotas": {"topics": 40}}})),
        )
        .await
        .unwrap();
    let stack = &env;
    wait_for(
        "the environment's topic limit follows",
        Duration::from_secs(30),
        || {
            let path = format!("{limits}/maxTopicsPerNamespace");
            async move { (pulsar_get(stack, &path).await.1 == json!(40)).then_some(()) }
        },
    )
    .await;

    // The environment namespace keeps its quota, limits and both policies well
    // beyond a garbage-collector pass: the same objects, never recreated, and
    // none of them owned across namespaces.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &env_ns_name);
    let limits: Api<LimitRange> = Api::namespaced(client.clone(), &env_ns_name);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &env_ns_name);
    let uids = || async {
        let mut uids = vec![
            quotas.get("ossature-quota").await.ok()?.metadata.uid?,
            limits.get("ossature-limits").await.ok()?.metadata.uid?,
        ];
        for p in policies.list(&Default::default()).await.ok()?.items {
            assert!(p.metadata.owner_references.unwrap_or_default().is_empty());
            uids.push(p.metadata.uid?);
        }
        Some(uids)
    };
    let first = uids()
        .await
        .expect("every object of the environment namespace");
    assert_eq!(first.len(), 4);
    for _ in 0..45 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            uids().await.as_ref(),
            Some(&first),
            "an object was deleted or recreated"
        );
    }

    // What leaves the spec leaves the backends.
    // A grant no longer given: its Role and RoleBinding go.
    scopes
        .patch(
            "eu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grants": [{"role": "Editor", "groups": [eu_team]}]}})),
        )
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    wait_for("viewer role removed", Duration::from_secs(30), || {
        let roles = roles.clone();
        async move {
            roles
                .get_opt("ossature-scope-eu-viewer")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(
        roles
            .get_opt("ossature-scope-eu-editor")
            .await
            .unwrap()
            .is_some()
    );
    // A scope that moves: its group moves (same group), its RBAC follows.
    let (_, france_group) = get(
        format!("{groups}/global/eu/france"),
        Some(("Authorization", &auth)),
    )
    .await;
    scopes
        .patch(
            "france",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parent": "us"}})),
        )
        .await
        .unwrap();
    wait_for("france under us", Duration::from_secs(30), || {
        let scopes = scopes.clone();
        async move {
            let s = scopes.get("france").await.ok()?.status?;
            (s.path.as_deref() == Some("/global/us/france")
                && condition(&s.conditions, "Ready")?.0 == "True")
                .then_some(())
        }
    })
    .await;
    let token = keycloak_token(&env).await;
    let auth = format!("Bearer {token}");
    let (status, moved) = get(
        format!("{groups}/global/us/france"),
        Some(("Authorization", &auth)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        moved["id"], france_group["id"],
        "the group moved, not recreated"
    );
    let (_, moved) = get(
        format!("{by_id}/{}", moved["id"].as_str().unwrap()),
        Some(("Authorization", &auth)),
    )
    .await;
    assert_eq!(
        moved["attributes"]["scopePath"],
        json!(["/global/us/france"])
    );
    assert_eq!(
        get(
            format!("{groups}/global/eu/france"),
            Some(("Authorization", &auth)),
        )
        .await
        .0,
        404
    );
    wait_for("us grant covers france", Duration::from_secs(30), || {
        let client = client.clone();
        let (ns, us_team) = (ns.clone(), us_team.clone());
        async move {
            can(&client, &us_team, "patch", &ns, "france")
                .await
                .then_some(())
        }
    })
    .await;
    wait_for(
        "eu grant no longer covers france",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let (ns, eu_team) = (ns.clone(), eu_team.clone());
            async move { (!can(&client, &eu_team, "patch", &ns, "france").await).then_some(()) }
        },
    )
    .await;
    // An environment's cpu quota and retention leave its spec.
    environments
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"quotas": {"cpu": null}, "messageRetentionMinutes": null}}),
            ),
        )
        .await
        .unwrap();
    let stack = &env;
    wait_for(
        "environment quota and retention back to defaults",
        Duration::from_secs(30),
        || {
            let quotas = quotas.clone();
            let retention_url = retention_url.clone();
            async move {
                let hard = quotas.get("ossature-quota").await.ok()?.spec?.hard?;
                let (_, retention) = pulsar_get(stack, &retention_url).await;
                (!hard.contains_key("requests.cpu")
                    && hard.contains_key("pods")
                    && retention["retentionTimeInMinutes"] == 10080)
                    .then_some(())
            }
        },
    )
    .await;

    // Deleting the tenant removes its scopes and environments first, then the rest.
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(180)).await;
    assert_eq!(pulsar_get(&env, &retention_url).await.0, 404);
    wait_for("namespaces gone", Duration::from_secs(60), || {
        let namespaces = Api::<Namespace>::all(client.clone());
        let (ns, env_ns_name) = (ns.clone(), env_ns_name.clone());
        async move {
            (namespaces.get_opt(&ns).await.ok()?.is_none()
                && namespaces.get_opt(&env_ns_name).await.ok()?.is_none())
            .then_some(())
        }
    })
    .await;
    assert_eq!(pulsar_tenant(&env, &name).await.0, 404);
    assert!(
        organization(&env, "ossature-business-eu", &name)
            .await
            .is_none()
    );
}
