//! Scopes and Environments of a tenant through the operator binary: nested
//! Keycloak groups, RBAC that cascades down the scope tree (checked the way
//! `kubectl auth can-i --as-group` does), faults admission cannot see, a
//! namespace and a Pulsar namespace per environment, and deletion of the
//! tenant taking its scopes and environments first.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
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

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
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
    let _operator = start_operator(&env);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("sc{}", suffix());
    let ns = format!("tn-{name}");
    tenants
        .create(&PostParams::default(), &tenant(&name))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(180)).await;

    let scopes: Api<Scope> = Api::namespaced(client.clone(), &ns);
    let eu_team = format!("{name}-eu-team");
    for s in [
        scope("global", None, json!([])),
        scope(
            "eu",
            Some("global"),
            json!([{"role": "Editor", "groups": [eu_team]}]),
        ),
        scope("france", Some("eu"), json!([])),
        scope("us", Some("global"), json!([])),
        // Faults only the controller can see.
        scope("loop-a", Some("loop-b"), json!([])),
        scope("loop-b", Some("loop-a"), json!([])),
        scope("orphan", Some("nowhere"), json!([])),
    ] {
        scopes.create(&PostParams::default(), &s).await.unwrap();
    }
    let france = wait_for("scope france Ready", Duration::from_secs(120), || {
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
        format!(
            "{}/admin/realms/{name}/group-by-path/global/eu/france",
            env["OSSATURE_KEYCLOAK_URL"]
        ),
        Some(("Authorization", &auth)),
    )
    .await;
    assert_eq!(status, 200, "{group}");
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

    // An environment: its namespace and its Pulsar namespace with the rules.
    let environments: Api<Environment> = Api::namespaced(client.clone(), &ns);
    let prod: Environment = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "prod"}, "spec": {"kind": "Production"},
    }))
    .unwrap();
    environments
        .create(&PostParams::default(), &prod)
        .await
        .unwrap();
    wait_for("environment Ready", Duration::from_secs(120), || {
        let environments = environments.clone();
        async move {
            let status = environments.get("prod").await.ok()?.status?;
            (condition(&status.conditions, "Ready")?.0 == "True").then_some(())
        }
    })
    .await;
    let env_ns = Api::<Namespace>::all(client.clone())
        .get(&format!("{ns}--prod"))
        .await
        .unwrap();
    assert_eq!(
        env_ns.metadata.labels.unwrap()["ossature.dev/environment"],
        "prod"
    );
    let pulsar = &env["OSSATURE_PULSAR_ADMIN_URL"];
    let (status, retention) = get(
        format!("{pulsar}/admin/v2/namespaces/{name}/prod/retention"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(retention["retentionTimeInMinutes"], 10080);
    let (_, enforced) = get(
        format!("{pulsar}/admin/v2/namespaces/{name}/prod/schemaValidationEnforced"),
        None,
    )
    .await;
    assert_eq!(enforced, json!(true));

    // Deleting the tenant removes its scopes and environments first, then the rest.
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(180)).await;
    assert_eq!(
        get(
            format!("{pulsar}/admin/v2/namespaces/{name}/prod/retention"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(pulsar_tenant(&env, &name).await.0, 404);
    assert_eq!(realm(&env, &name).await.0, 404);
}
