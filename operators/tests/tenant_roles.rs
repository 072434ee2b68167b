//! A tenant's own roles (TenantRole) through the operator binary: checked
//! against the policy catalog, granted in Scopes and mapped to identity
//! provider groups, turned into RBAC that cascades down the tree like the
//! standard roles' (checked the way `kubectl auth can-i` does), following
//! the role as it is defined, changed and removed; and a Scope's grants
//! changed through kubectl only by someone who may grant there.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use ossature_crds::{Scope, Tenant, TenantRole};
use serde_json::json;

/// What `kubectl auth can-i <verb> scopes[/<subresource>]/<name> --as-group=<group>` answers.
async fn can(
    client: &Client,
    group: &str,
    verb: &str,
    (namespace, name): (&str, &str),
    subresource: &str,
) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": "someone", "groups": [group, "system:authenticated"],
            "resourceAttributes": {"group": "ossature.dev", "resource": "scopes",
                                   "subresource": subresource, "verb": verb,
                                   "namespace": namespace, "name": name},
        },
    }))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.unwrap();
    answer.status.unwrap().allowed
}

/// A client acting as a user of `group`, as `kubectl --as --as-group` does.
async fn as_group(env: &std::collections::BTreeMap<String, String>, group: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(format!("member-of-{group}"));
    config.auth_info.impersonate_groups =
        Some(vec![group.to_string(), "system:authenticated".to_string()]);
    Client::try_from(config).unwrap()
}

fn role_ready(role: &TenantRole) -> bool {
    object_ready(role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_roles_become_rbac_and_only_granters_change_grants() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let name = format!("tr{}", suffix());
    let ns = format!("tn-{name}");
    labelled_namespace(&client, &name).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(&PostParams::default(), &labelled(tenant(&name), &sel))
        .await
        .unwrap();

    let roles: Api<TenantRole> = Api::namespaced(client.clone(), &ns);
    // A role of standard policies and a permission of its own.
    let granter: TenantRole = ossature(
        "TenantRole",
        "granter",
        json!({"description": "grants in scopes, reads them",
               "policies": ["scope-reader", "grant-manager"],
               "permissions": [{"resource": "workload", "actions": ["read", "update"]}]}),
    );
    roles
        .create(&PostParams::default(), &granter)
        .await
        .unwrap();
    // One naming what the catalog does not have.
    let bad: TenantRole = ossature(
        "TenantRole",
        "bad",
        json!({"policies": ["nothing-reader"],
               "permissions": [{"resource": "workload", "actions": ["fly"]}]}),
    );
    roles.create(&PostParams::default(), &bad).await.unwrap();
    // Admission refuses a standard role's name and a role that gives nothing.
    for (role, spec) in [
        ("admin", json!({"policies": ["scope-reader"]})),
        ("empty", json!({"description": "nothing"})),
    ] {
        let refused = roles
            .create(&PostParams::default(), &ossature("TenantRole", role, spec))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, kube::Error::Api(s) if s.code == 422),
            "{refused}"
        );
    }

    let granter = wait_object(&roles, "granter", "Ready", role_ready).await;
    let permissions = serde_json::to_value(&granter.status.unwrap().permissions).unwrap();
    assert!(
        permissions
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["resource"] == "workload" && p["actions"] == json!(["read", "update"])),
        "{permissions}"
    );
    let bad = wait_object(&roles, "bad", "Stalled", |r| {
        r.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Stalled"))
            .is_some_and(|(status, reason)| status == "True" && reason == "InvalidRole")
    })
    .await;
    let message = condition_message(&bad.status.unwrap().conditions, "Stalled");
    assert!(
        message.contains("nothing-reader") && message.contains("fly"),
        "{message}"
    );

    // Scopes granting it, a standard role and a mapped group, and a role
    // that does not exist yet.
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &ns);
    let (granters, editors, idp_admins, later) = (
        format!("{name}-granters"),
        format!("{name}-editors"),
        format!("{name}-idp-admins"),
        format!("{name}-later"),
    );
    for (scope, parent, grants, mappings) in [
        ("global", None, json!([]), json!([])),
        (
            "eu",
            Some("global"),
            json!([{"role": "granter", "groups": [granters]},
                   {"role": "Editor", "groups": [editors]},
                   {"role": "auditor", "groups": [later]}]),
            json!([{"group": idp_admins, "role": "Admin"}]),
        ),
        ("france", Some("eu"), json!([]), json!([])),
    ] {
        let object: Scope = ossature(
            "Scope",
            scope,
            json!({"displayName": scope, "parent": parent, "grants": grants,
                   "groupMappings": mappings}),
        );
        scopes
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    wait_tenant_ready(&tenants, &name, Duration::from_secs(90)).await;

    // The missing role is reported; the scope's other grants hold.
    wait_object(&scopes, "eu", "RbacReady False: RoleNotFound", |s| {
        s.status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "RbacReady"))
            .is_some_and(|c| c == ("False".into(), "RoleNotFound".into()))
    })
    .await;
    let france = (ns.as_str(), "france");
    wait_for(
        "granter's RBAC in france",
        Duration::from_secs(60),
        || async {
            can(&client, &granters, "update", france, "grants")
                .await
                .then_some(())
        },
    )
    .await;
    assert!(can(&client, &granters, "get", france, "").await);
    assert!(!can(&client, &granters, "patch", france, "").await);
    assert!(can(&client, &editors, "patch", france, "").await);
    assert!(!can(&client, &editors, "update", france, "grants").await);
    assert!(can(&client, &idp_admins, "update", france, "groupmappings").await);
    assert!(can(&client, &idp_admins, "delete", france, "").await);
    assert!(!can(&client, &granters, "get", (ns.as_str(), "global"), "").await);

    // The role defined: the scope's RBAC follows without a change to it.
    let auditor: TenantRole = ossature(
        "TenantRole",
        "auditor",
        json!({"policies": ["scope-reader"]}),
    );
    roles
        .create(&PostParams::default(), &auditor)
        .await
        .unwrap();
    wait_for(
        "auditor's RBAC in france",
        Duration::from_secs(60),
        || async { can(&client, &later, "get", france, "").await.then_some(()) },
    )
    .await;
    wait_object(&scopes, "eu", "Ready", object_ready).await;

    // An Editor may rename a scope through kubectl, but not change its
    // grants or mappings: granting itself Admin is refused by admission.
    let as_editor: Api<Scope> = Api::namespaced(as_group(&env, &editors).await, &ns);
    as_editor
        .patch(
            "france",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"displayName": "La France"}})),
        )
        .await
        .unwrap();
    for change in [
        json!({"spec": {"grants": [{"role": "Admin", "groups": [editors]}]}}),
        json!({"spec": {"groupMappings": [{"group": editors, "role": "Admin"}]}}),
    ] {
        let refused = as_editor
            .patch("france", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = &refused else {
            panic!("{refused}")
        };
        assert_eq!(status.code, 403, "{status:?}");
        assert!(status.message.contains("takes the right to"), "{status:?}");
    }
    // An Admin there (through the mapped group of its identity provider)
    // does: updating a Scope takes `patch` on it, changing its grants the
    // right to grant besides.
    let as_admin: Api<Scope> = Api::namespaced(as_group(&env, &idp_admins).await, &ns);
    as_admin
        .patch(
            "france",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grants": [{"role": "Viewer", "users": ["carol"]}]}})),
        )
        .await
        .unwrap();

    // The role removed: its grants give nothing any more.
    roles
        .delete("granter", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("granter's RBAC gone", Duration::from_secs(60), || async {
        (!can(&client, &granters, "get", france, "").await).then_some(())
    })
    .await;

    delete_tenants(&tenants, &[&name]).await;
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
}

fn condition_message(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}
