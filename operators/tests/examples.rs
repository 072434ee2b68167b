//! `examples/` applied to the real stack with the operator running, each
//! document once and in file order (as `kubectl apply -f` does): every
//! object becomes Ready, each backend shows the result through its own API,
//! and deleting the tenants leaves nothing behind in any backend.

mod common;

use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use ossature_crds::{Environment, Scope, ServiceIdentity, Tenant, Topic, Workload};
use serde::Deserialize;

fn documents() -> Vec<DynamicObject> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_norway::Deserializer::from_str(&text)
                .map(|d| DynamicObject::deserialize(d).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn kind(object: &DynamicObject) -> &str {
    object
        .types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_default()
}

fn api(client: &kube::Client, object: &DynamicObject) -> Api<DynamicObject> {
    let resource = match kind(object) {
        "Namespace" => ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        "Tenant" => ApiResource::erase::<Tenant>(&()),
        "Scope" => ApiResource::erase::<Scope>(&()),
        "Environment" => ApiResource::erase::<Environment>(&()),
        "Topic" => ApiResource::erase::<Topic>(&()),
        "ServiceIdentity" => ApiResource::erase::<ServiceIdentity>(&()),
        "Workload" => ApiResource::erase::<Workload>(&()),
        other => panic!("unexpected kind {other} in examples"),
    };
    match &object.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_become_ready_and_leave_nothing_behind() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let objects: Vec<DynamicObject> = documents()
        .into_iter()
        .map(|mut o| {
            if kind(&o) == "Tenant" {
                o.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(TEST_LABEL.into(), sel.clone());
            }
            o
        })
        .collect();
    let tenants: Vec<&DynamicObject> = objects.iter().filter(|o| kind(o) == "Tenant").collect();

    // Once each, in file order: no second apply.
    for object in &objects {
        api(&client, object)
            .create(&PostParams::default(), object)
            .await
            .unwrap();
    }
    for object in objects.iter().filter(|o| kind(o) != "Namespace") {
        wait_dynamic_ready(&api(&client, object), object, Duration::from_secs(120)).await;
    }

    let token = keycloak_token(&env).await;
    let auth = format!("Bearer {token}");
    let mounts = openbao_mounts(&env).await;
    let kc = &env["OSSATURE_KEYCLOAK_URL"];
    let tenant_api: Api<Tenant> = Api::all(client.clone());
    for tenant in &tenants {
        let name = tenant.metadata.name.clone().unwrap();
        let status = tenant_api.get(&name).await.unwrap().status.unwrap();
        let home = status.realm.clone().unwrap();
        let business = tenant.data["spec"]["type"] == "Business";
        let groups = match status.isolation.unwrap() {
            ossature_crds::Isolation::Realm => {
                let (code, realm) = realm(&env, &name).await;
                assert_eq!(code, 200, "realm {name}");
                assert_eq!(home, name);
                assert_eq!(
                    realm["registrationAllowed"], !business,
                    "realm {name} registration by type"
                );
                format!("{kc}/admin/realms/{name}/group-by-path")
            }
            ossature_crds::Isolation::Organization => {
                let kind = if business { "business" } else { "consumer" };
                assert_eq!(
                    home,
                    format!(
                        "ossature-{kind}-{}",
                        tenant.data["spec"]["residency"].as_str().unwrap()
                    )
                );
                assert_eq!(realm(&env, &name).await.0, 404, "no realm of its own");
                let org = status.organization_id.clone().unwrap();
                let (code, found) = get(
                    format!("{kc}/admin/realms/{home}/organizations/{org}"),
                    Some(("Authorization", &auth)),
                )
                .await;
                assert_eq!(code, 200, "organization of {name}");
                assert_eq!(found["alias"], name.as_str());
                format!("{kc}/admin/realms/{home}/organizations/{org}/groups/group-by-path")
            }
        };
        let (code, group) = get(
            format!("{groups}/global/eu/france"),
            Some(("Authorization", &auth)),
        )
        .await;
        assert_eq!(code, 200, "group of {name}: {group}");
        let (status, info) = pulsar_tenant(&env, &name).await;
        assert_eq!(status, 200);
        assert_eq!(info["allowedClusters"], serde_json::json!(["standalone"]));
        for environment in ["prod", "staging"] {
            let (status, _) = pulsar_get(
                &env,
                &format!("/admin/v2/namespaces/{name}/{environment}/retention"),
            )
            .await;
            assert_eq!(status, 200, "Pulsar namespace {name}/{environment}");
        }
        assert_eq!(mounts["data"][format!("tenants/{name}/kv/")]["type"], "kv");
    }
    // Each topic's schema is registered, as Pulsar itself says.
    for topic in objects.iter().filter(|o| kind(o) == "Topic") {
        let namespace = topic.metadata.namespace.as_deref().unwrap();
        let (tenant, environment) = namespace
            .strip_prefix("tn-")
            .and_then(|n| n.split_once("--"))
            .unwrap();
        let name = topic.metadata.name.as_deref().unwrap();
        let path = format!("/admin/v2/schemas/{tenant}/{environment}/{name}/schema");
        let (status, schema) = pulsar_get(&env, &path).await;
        assert_eq!(status, 200, "schema of topic {namespace}/{name}: {schema}");
        assert_eq!(schema["type"], topic.data["spec"]["schema"]["type"]);
    }

    // Each service holds exactly its grants on each topic it names.
    for service in objects.iter().filter(|o| kind(o) == "ServiceIdentity") {
        let namespace = service.metadata.namespace.as_deref().unwrap();
        let (tenant, environment) = namespace
            .strip_prefix("tn-")
            .and_then(|n| n.split_once("--"))
            .unwrap();
        let name = service.metadata.name.as_deref().unwrap();
        let role = format!("{tenant}.{environment}.{name}");
        for grant in service.data["spec"]["grants"].as_array().unwrap() {
            let topic = grant["topic"].as_str().unwrap();
            let path = format!("/admin/v2/persistent/{tenant}/{environment}/{topic}/permissions");
            let (_, granted) = pulsar_get(&env, &path).await;
            let mut actions: Vec<String> = grant["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_lowercase())
                .collect();
            let mut live: Vec<String> = serde_json::from_value(granted[&role].clone())
                .unwrap_or_else(|_| panic!("{role} has no grant on {topic}: {granted}"));
            actions.sort();
            live.sort();
            assert_eq!(live, actions, "{role} on {topic}");
        }
    }

    for tenant in &tenants {
        tenant_api
            .delete(
                tenant.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    for tenant in &tenants {
        let name = tenant.metadata.name.clone().unwrap();
        wait_tenant_gone(&tenant_api, &name, Duration::from_secs(240)).await;
        assert_eq!(realm(&env, &name).await.0, 404, "realm {name} left behind");
        let token = keycloak_token(&env).await;
        for shared in ["ossature-business-eu", "ossature-consumer-eu"] {
            let (_, orgs) = get(
                format!("{kc}/admin/realms/{shared}/organizations?q=alias:{name}&exact=true"),
                Some(("Authorization", &format!("Bearer {token}"))),
            )
            .await;
            assert_eq!(
                orgs,
                serde_json::json!([]),
                "organization {name} left behind"
            );
        }
        assert_eq!(
            pulsar_tenant(&env, &name).await.0,
            404,
            "Pulsar tenant {name} left behind"
        );
        // Its services' clients go even from the shared realm.
        let home = if tenant.data["spec"]["identity"]["isolation"] == "Realm" {
            continue;
        } else {
            let kind = tenant.data["spec"]["type"].as_str().unwrap().to_lowercase();
            format!(
                "ossature-{kind}-{}",
                tenant.data["spec"]["residency"].as_str().unwrap()
            )
        };
        let (_, clients) = get(
            format!("{kc}/admin/realms/{home}/clients?clientId={name}.&search=true"),
            Some(("Authorization", &format!("Bearer {token}"))),
        )
        .await;
        assert_eq!(
            clients,
            serde_json::json!([]),
            "service clients of {name} left behind"
        );
    }
    let mounts = openbao_mounts(&env).await;
    for tenant in &tenants {
        let name = tenant.metadata.name.as_deref().unwrap();
        assert!(
            mounts["data"].get(format!("tenants/{name}/kv/")).is_none(),
            "mount of {name} left behind"
        );
    }
}
