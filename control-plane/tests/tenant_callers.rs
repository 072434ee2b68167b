//! A tenant's own callers, with real Keycloak tokens, against the operator
//! running in this process under its own selector: the plan of a dry-run
//! onboarding is what the operator then provisions; the tenant's tree; the
//! grants of its Scopes decide what a service account may do (Viewer reads
//! but does not change, Editor changes environments but does not grant, a
//! grant applies below its scope and not beside it); a role of the tenant's
//! own, defined, granted, mapped and removed; a decision made at an
//! invocation's start holds while a grant changes under it; and a person
//! (a user of the tenant's realm, with a password-grant token of its own
//! client) acts through a grant by name and a group mapping of the scope
//! group her token carries.

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};
use ossature_crds::{Environment, Tenant, TenantRole};
use ossature_model::names::TenantNames;
use ossature_model::tree::{Settings, TenantObjects, desired};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Everything of the tenant the apiserver holds, with status.
async fn provisioned(client: &Client, tenant: &str) -> TenantObjects {
    async fn list<K>(client: &Client, namespaces: &[&str]) -> Vec<K>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
        K::DynamicType: Default,
    {
        ossature_e2e::list_in(client, namespaces).await.unwrap()
    }
    let names = TenantNames::new(tenant);
    let prod = names.environment("prod").namespace;
    let all = [names.namespace.as_str(), prod.as_str()];
    TenantObjects {
        tenant: Api::<Tenant>::all(client.clone())
            .get(tenant)
            .await
            .unwrap(),
        scopes: list(client, &all[..1]).await,
        environments: list(client, &all[..1]).await,
        certificates: list(client, &all).await,
        topics: list(client, &all).await,
        service_identities: list(client, &all).await,
        workloads: list(client, &all).await,
        role_rules: Default::default(),
    }
}

/// Backend, kind and name of each object a plan or a desired list names.
fn keys<'a>(objects: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    objects
        .into_iter()
        .map(|o| format!("{} {} {}", o["backend"], o["kind"], o["name"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_in_scopes_decide_what_a_tenants_service_may_do() {
    let WithOperator {
        env,
        client,
        selector,
        operator,
        ops: _ops,
        cp,
        token,
    } = WithOperator::start(&["--no-edge"]).await;
    let tenant = ossature_e2e::unique("cpg");

    // The plan of a dry-run onboarding, then the onboarding itself.
    let mut onboard = onboarding(&tenant, &selector);
    onboard["scopes"] = json!([
        {"name": "global", "displayName": "Global"},
        {"name": "eu", "displayName": "Europe", "parent": "global"},
        {"name": "france", "displayName": "France", "parent": "eu"},
        {"name": "us", "displayName": "United States", "parent": "global"},
    ]);
    onboard["environments"] = json!([{"name": "prod", "kind": "Production", "scope": "global"}]);
    let mut dry = onboard.clone();
    dry["dryRun"] = json!(true);
    let (status, _, planned) = cp.command("onboardTenant", &token, "plan-1", &dry).await;
    assert_eq!(status, 200, "{planned}");
    assert_eq!(planned["plan"]["computed"], true, "{planned}");
    let planned = planned["plan"]["changes"].as_array().unwrap().clone();
    assert!(planned.iter().all(|c| c["action"] == "create"));
    onboard["wait"] = json!({"timeoutSeconds": 300});
    let (status, _, answer) = cp
        .command("onboardTenant", &token, "onboard-1", &onboard)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"]["state"], "Ready", "{answer}");
    // Object for object, what the operator made of the Ready tenant.
    let platform = ossature_model::Platform::default();
    let settings = Settings {
        platform: &platform,
        edge: false,
        autoscaler: ossature_model::workloads::Autoscaler::Hpa,
        pulsar_admin_url: "",
    };
    let made: Vec<Value> = desired(&provisioned(&client, &tenant).await, &settings)
        .iter()
        .map(|o| serde_json::to_value(&o.key).unwrap())
        .collect();
    assert!(made.len() > 20, "{made:?}");
    assert_eq!(
        keys(&planned),
        keys(&made),
        "the plan is what was provisioned"
    );
    assert_eq!(planned.len(), made.len(), "each object once");

    // The tree, whole and of one scope.
    let (status, _, tree) = cp
        .query("tenantTree", &token, &json!({"tenant": tenant}))
        .await;
    assert_eq!(status, 200, "{tree}");
    assert_eq!(tree["root"]["kind"], "Tenant");
    assert_eq!(tree["root"]["state"]["ready"], true, "{tree}");
    let text = tree.to_string();
    assert!(!text.contains("client-secret") && !text.contains("\"data\""));
    let eu = json!({"tenant": tenant, "scope": "eu"});
    let (status, _, subtree) = cp.query("tenantTree", &token, &eu).await;
    assert_eq!(status, 200, "{subtree}");
    assert_eq!(subtree["root"]["name"], format!("tn-{tenant}/eu"));
    assert!(subtree.to_string().contains(&format!("tn-{tenant}/france")));
    assert!(!subtree.to_string().contains(&format!("tn-{tenant}/us")));

    // A service of the tenant, with a token from Keycloak: no grant, nothing.
    let (client_id, service) = service_token(&env, &client, &tenant, "prod", "console").await;
    let tree_of = |scope: &str| json!({"tenant": tenant, "scope": scope});
    let answer = cp.query("tenantTree", &service, &tree_of("eu")).await;
    assert_problem(&answer, 403, "forbidden");
    let (status, _, nothing) = cp
        .query("callerPermissions", &service, &tree_of("eu"))
        .await;
    assert_eq!(status, 200, "{nothing}");
    assert_eq!(nothing["permissions"], json!([]), "{nothing}");
    let account = format!("service-account-{client_id}");
    let grant = |role: &str| json!({"tenant": tenant, "scope": "eu", "role": role, "users": [account.clone()]});

    // Viewer in eu: reads eu and below, not beside or above; changes nothing.
    let (status, _, answer) = cp
        .command("grantRole", &token, "grant-viewer", &grant("Viewer"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let tree_path = "/v1/queries/tenantTree";
    wait_status(&cp, &service, tree_path, &tree_of("eu"), 200).await;
    let (status, _, france) = cp.query("tenantTree", &service, &tree_of("france")).await;
    assert_eq!(status, 200, "{france}");
    for refused in ["us", "global"] {
        let answer = cp.query("tenantTree", &service, &tree_of(refused)).await;
        assert_problem(&answer, 403, "forbidden");
    }
    let answer = cp
        .query("tenantStatus", &service, &json!({"tenant": tenant}))
        .await;
    assert_problem(&answer, 403, "forbidden");
    let environment = |name: &str, scope: &str, dry_run: bool| {
        json!({"tenant": tenant, "dryRun": dry_run,
               "environment": {"name": name, "kind": "Development", "scope": scope}})
    };
    let answer = cp
        .command(
            "createEnvironment",
            &service,
            "env-1",
            &environment("dev", "eu", true),
        )
        .await;
    assert_problem(&answer, 403, "forbidden");
    let detail = answer.2["detail"].as_str().unwrap();
    assert!(
        detail.contains("permits create on environment") && detail.contains("Viewer in scope eu"),
        "{detail}"
    );
    let (_, _, permissions) = cp
        .query("callerPermissions", &service, &tree_of("france"))
        .await;
    let held: Vec<String> = permissions["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["action"], p["resource"]))
        .collect();
    assert!(held.contains(&r#""read" "scope""#.to_string()), "{held:?}");
    assert!(
        !held.iter().any(|p| p.starts_with("\"create\"")),
        "{held:?}"
    );
    let debug = json!({"toggles": {"logLevel": "debug"}});
    let response = cp
        .query_in_context("tenantTree", &service, &debug, &tree_of("eu"))
        .await;
    assert_eq!(response.status(), 403);

    // Editor in eu: changes environments there and below, never grants.
    let (status, _, answer) = cp
        .command("revokeRole", &token, "revoke-viewer", &grant("Viewer"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = cp
        .command("grantRole", &token, "grant-editor", &grant("Editor"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let create_path = "/v1/commands/createEnvironment";
    let allowed = wait_status(
        &cp,
        &service,
        create_path,
        &environment("dev", "france", true),
        200,
    )
    .await;
    assert!(
        allowed["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "service account {client_id} holds role Editor in scope eu"
            )),
        "{allowed}"
    );
    let answer = cp
        .command(
            "createEnvironment",
            &service,
            "env-2",
            &environment("dev", "us", true),
        )
        .await;
    assert_problem(&answer, 403, "forbidden");
    let mut own_grant = grant("Viewer");
    own_grant["users"] = json!(["bob"]);
    let answer = cp
        .command("grantRole", &service, "grant-2", &own_grant)
        .await;
    assert_problem(&answer, 403, "forbidden");

    // Decided once, at the start: items decided first keep their decision
    // while the Editor grant is revoked under them. The operator is stopped
    // so the first item waits its whole timeout.
    operator.abort();
    let bulk = json!({"validateFirst": true, "items": [
        {"command": "createEnvironment", "idempotencyKey": "bulk-1",
         "input": {"tenant": tenant, "wait": {"timeoutSeconds": 8},
                   "environment": {"name": "dev", "kind": "Development", "scope": "eu"}}},
        {"command": "createEnvironment", "idempotencyKey": "bulk-2",
         "input": {"tenant": tenant,
                   "environment": {"name": "qa", "kind": "Development", "scope": "france"}}},
    ]});
    let running = {
        let (base, service, bulk) = (cp.base.clone(), service.clone(), bulk.clone());
        tokio::spawn(async move {
            let response = http()
                .post(format!("{base}/v1/commands"))
                .bearer_auth(service)
                .json(&bulk)
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (status, _, answer) = cp
        .command("revokeRole", &token, "revoke-editor", &grant("Editor"))
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_status(
        &cp,
        &service,
        create_path,
        &environment("dev", "france", true),
        403,
    )
    .await;
    assert!(
        !running.is_finished(),
        "the bulk request ended before the grant was revoked"
    );
    let result = running.await.unwrap();
    assert_eq!(result["executed"], true, "{result}");
    for item in result["items"].as_array().unwrap() {
        assert_eq!(item["status"], 200, "{result}");
        assert_eq!(item["result"]["decision"]["allowed"], true, "{result}");
    }
    let environments: Api<Environment> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    let qa = environments.get("qa").await.unwrap();
    assert_eq!(
        qa.metadata.labels.unwrap()["control-plane.ossature.dev/scope"],
        "france"
    );

    // With an operator again: a role of the tenant's own, checked against
    // the catalog when defined, granted like a standard one.
    let operator = start_operator(&env, &selector);
    for (role, mention) in [
        (
            json!({"name": "deployer", "policies": ["nothing-reader"]}),
            "nothing-reader",
        ),
        (
            json!({"name": "deployer", "permissions": [{"resource": "environment", "actions": ["fly"]}]}),
            "fly",
        ),
        (
            json!({"name": "admin", "policies": ["scope-reader"]}),
            "standard role Admin",
        ),
    ] {
        let answer = cp
            .command(
                "defineRole",
                &token,
                &format!("role-bad-{}", mention.len()),
                &json!({"tenant": tenant, "role": role}),
            )
            .await;
        assert_problem(&answer, 400, "invalid-input");
        assert!(answer.2.to_string().contains(mention), "{}", answer.2);
    }
    let deployer = json!({"tenant": tenant, "role": {
        "name": "deployer", "description": "makes environments",
        "policies": ["environment-reader"],
        "permissions": [{"resource": "environment", "actions": ["create"]}]}});
    let (status, _, answer) = cp.command("defineRole", &token, "role-1", &deployer).await;
    assert_eq!(status, 200, "{answer}");
    let roles: Api<TenantRole> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    let ready = |r: &TenantRole| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    wait_for_object(&roles, "deployer", Some(&ready)).await;
    let answer = cp
        .command("grantRole", &token, "grant-ghost", &grant("ghost"))
        .await;
    assert_problem(&answer, 400, "invalid-input");
    let (status, _, answer) = cp
        .command("grantRole", &token, "grant-deployer", &grant("deployer"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let allowed = wait_status(
        &cp,
        &service,
        create_path,
        &environment("stage", "france", true),
        200,
    )
    .await;
    assert!(
        allowed["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("holds role deployer in scope eu"),
        "{allowed}"
    );
    let answer = cp
        .command(
            "addScope",
            &service,
            "scope-by-deployer",
            &json!({"tenant": tenant, "dryRun": true,
                    "scope": {"name": "berlin", "displayName": "Berlin", "parent": "eu"}}),
        )
        .await;
    assert_problem(&answer, 403, "forbidden");
    // Still granted: not removed.
    let remove = json!({"tenant": tenant, "role": "deployer"});
    let answer = cp
        .command("removeRole", &token, "remove-role-1", &remove)
        .await;
    assert_problem(&answer, 409, "conflict");
    // An identity provider's group mapped to it in a scope, and unmapped.
    let mapping =
        json!({"tenant": tenant, "scope": "france", "group": "idp-ops", "role": "deployer"});
    let (status, _, answer) = cp.command("mapGroup", &token, "map-1", &mapping).await;
    assert_eq!(status, 200, "{answer}");
    let scopes: Api<ossature_crds::Scope> =
        Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    let france = scopes.get("france").await.unwrap();
    assert_eq!(france.spec.group_mappings.len(), 1);
    assert_eq!(france.spec.group_mappings[0].group, "idp-ops");
    let answer = cp
        .command("removeRole", &token, "remove-role-2", &remove)
        .await;
    assert_problem(&answer, 409, "conflict");
    let (status, _, answer) = cp.command("unmapGroup", &token, "unmap-1", &mapping).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        scopes
            .get("france")
            .await
            .unwrap()
            .spec
            .group_mappings
            .is_empty()
    );
    let (status, _, answer) = cp
        .command("revokeRole", &token, "revoke-deployer", &grant("deployer"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = cp
        .command("removeRole", &token, "remove-role-3", &remove)
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_for_object::<TenantRole>(&roles, "deployer", None).await;

    // Offboarded.
    cp.offboard(&token, &tenant).await;
    let lines = cp.audit_lines();
    assert_audit_lines_valid(&lines);
    assert!(lines.iter().any(|l| {
        l["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("holds role Viewer in scope eu"))
    }));
    remove_keys(&client, &tenant).await;
    cp.running.stop();
    operator.abort();
}

/// Waits until `name` is as `ok` says; `None` waits until it is gone.
async fn wait_for_object<K>(api: &Api<K>, name: &str, ok: Option<&dyn Fn(&K) -> bool>)
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned,
{
    for _ in 0..600 {
        match (api.get_opt(name).await.unwrap(), ok) {
            (Some(object), Some(ok)) if ok(&object) => return,
            (None, None) => return,
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("{name} did not become as awaited within 60 s");
}

/// A person of the tenant (a user of its own realm, member of a scope's
/// group), with a password-grant token of the tenant's own client.
async fn person_token(
    env: &std::collections::BTreeMap<String, String>,
    realm: &str,
    tenant: &str,
    username: &str,
    group_path: &str,
) -> String {
    let keycloak = &env["OSSATURE_KEYCLOAK_URL"];
    let admin = admin_token(
        keycloak,
        &env["OSSATURE_KEYCLOAK_ADMIN_USER"],
        &env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"],
    )
    .await;
    let api = format!("{keycloak}/admin/realms/{realm}");
    let password = "Correct-Horse-Battery-9";
    let created = http()
        .post(format!("{api}/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": username, "enabled": true, "emailVerified": true,
                      "email": format!("{username}@example.test"),
                      "firstName": "Dana", "lastName": "Person",
                      "credentials": [{"type": "password", "value": password, "temporary": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let user: Value = http()
        .get(format!("{api}/users?username={username}&exact=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_id = user[0]["id"].as_str().unwrap().to_string();
    // The scope's group, once the operator has made it.
    let mut group = Value::Null;
    for _ in 0..120 {
        group = http()
            .get(format!("{api}/group-by-path{group_path}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if group["id"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let joined = http()
        .put(format!(
            "{api}/users/{user_id}/groups/{}",
            group["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(joined.status().is_success());
    // The tenant's client takes logins through its pages; a test has none,
    // so it lets this one password grant through (the operator puts the
    // client's settings back at its next reconcile).
    let clients: Value = http()
        .get(format!("{api}/clients?clientId={tenant}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut client = clients[0].clone();
    client["directAccessGrantsEnabled"] = json!(true);
    let updated = http()
        .put(format!("{api}/clients/{}", client["id"].as_str().unwrap()))
        .bearer_auth(&admin)
        .json(&client)
        .send()
        .await
        .unwrap();
    assert!(updated.status().is_success());
    let answer: Value = http()
        .post(format!(
            "{keycloak}/realms/{realm}/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", tenant),
            ("username", username),
            ("password", password),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a person's token: {answer}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_persons_token_acts_through_grants_and_group_mappings_of_its_scopes() {
    let WithOperator {
        env,
        client,
        selector,
        operator,
        ops: _ops,
        cp,
        token,
    } = WithOperator::start(&["--no-edge"]).await;
    let tenant = ossature_e2e::unique("cpp");
    let mut onboard = onboarding(&tenant, &selector);
    onboard["identity"] = json!({"isolation": "Realm", "mfaRequired": false});
    onboard["wait"] = json!({"timeoutSeconds": 240});
    let (status, _, answer) = cp
        .command("onboardTenant", &token, "onboard-person", &onboard)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"]["state"], "Ready", "{answer}");
    let realm = Api::<Tenant>::all(client.clone())
        .get(&tenant)
        .await
        .unwrap()
        .status
        .and_then(|s| s.realm)
        .unwrap();
    // Dana reads in eu by name.
    let (status, _, answer) = cp
        .command(
            "grantRole",
            &token,
            "grant-dana",
            &json!({"tenant": tenant, "scope": "eu", "role": "Viewer", "users": ["dana"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let person = person_token(&env, &realm, &tenant, "dana", "/global/eu").await;

    let eu = json!({"tenant": tenant, "scope": "eu"});
    let tree = wait_status(&cp, &person, "/v1/queries/tenantTree", &eu, 200).await;
    assert_eq!(tree["root"]["name"], format!("tn-{tenant}/eu"));
    let global = json!({"tenant": tenant, "scope": "global"});
    let answer = cp.query("tenantTree", &person, &global).await;
    assert_problem(&answer, 403, "forbidden");
    let create = json!({"tenant": tenant, "dryRun": true,
        "environment": {"name": "dev", "kind": "Development", "scope": "eu"}});
    let answer = cp
        .command("createEnvironment", &person, "person-env-1", &create)
        .await;
    assert_problem(&answer, 403, "forbidden");

    // The group her token carries (the scope's path in the tenant's realm),
    // mapped to Editor in eu: she changes environments there now.
    let (status, _, answer) = cp
        .command(
            "mapGroup",
            &token,
            "map-eu",
            &json!({"tenant": tenant, "scope": "eu", "group": "/global/eu", "role": "Editor"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let allowed = wait_status(&cp, &person, "/v1/commands/createEnvironment", &create, 200).await;
    let reason = allowed["decision"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("dana") && reason.contains("/global/eu") && reason.contains("Editor"),
        "{reason}"
    );
    let (status, _, mine) = cp.query("callerPermissions", &person, &eu).await;
    assert_eq!(status, 200, "{mine}");
    assert!(
        mine["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["resource"] == "environment" && p["action"] == "create"),
        "{mine}"
    );
    // Never another tenant, whatever her grants.
    let answer = cp
        .query("tenantStatus", &person, &json!({"tenant": "globex"}))
        .await;
    assert_problem(&answer, 403, "forbidden");

    cp.offboard(&token, &tenant).await;
    remove_keys(&client, &tenant).await;
    cp.running.stop();
    operator.abort();
}
