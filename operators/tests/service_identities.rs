//! ServiceIdentities through the operator binary against the real stack,
//! read back through each backend's own API: the ServiceAccount and its
//! OpenBao role (a real TokenRequest token logs in and reads only its own
//! path), the Keycloak client (client credentials give an EdDSA token for
//! the tenant), the Pulsar token, the Certificate with the SPIFFE ID, the
//! grants per topic and subscription (revoking one touches no other), a
//! rotation with the previous secret still valid, a topic deleted by hand
//! coming back with its grants, and deletion removing everything. Also
//! what admission refuses.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use ossature_crds::{Scope, ServiceIdentity, Topic};
use serde_json::{Value, json};

const ORDER: &str = r#"{"type": "record", "name": "Order", "namespace": "acme",
  "fields": [{"name": "id", "type": "string"}]}"#;

fn service(name: &str, grants: Value) -> ServiceIdentity {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
        "metadata": {"name": name},
        "spec": {
            "id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
            "owner": "global",
            "description": format!("the {name} service"),
            "grants": grants,
        },
    }))
    .unwrap()
}

async fn wait_service(
    services: &Api<ServiceIdentity>,
    name: &str,
    what: &str,
    ok: impl Fn(&ServiceIdentity) -> bool,
) -> ServiceIdentity {
    wait_for(
        &format!("service {name}: {what}"),
        Duration::from_secs(120),
        || async { services.get(name).await.ok().filter(|s| ok(s)) },
    )
    .await
}

async fn secret_data(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// A token from the client credentials grant, or the error Keycloak gives.
async fn client_token(
    env: &BTreeMap<String, String>,
    realm: &str,
    id: &str,
    secret: &str,
) -> Result<String, String> {
    let url = format!(
        "{}/realms/{realm}/protocol/openid-connect/token",
        env["OSSATURE_KEYCLOAK_URL"]
    );
    let answer: Value = http()
        .post(url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| answer.to_string())
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Role -> actions on a topic, as Pulsar has them.
async fn permissions(env: &BTreeMap<String, String>, tenant: &str, topic: &str) -> Value {
    let path = format!("/admin/v2/persistent/{tenant}/prod/{topic}/permissions");
    let (code, body) = pulsar_get(env, &path).await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn subscription_roles(env: &BTreeMap<String, String>, tenant: &str) -> Value {
    let path = format!("/admin/v2/namespaces/{tenant}/prod/permissions/subscription");
    pulsar_get(env, &path).await.1
}

async fn openbao(env: &BTreeMap<String, String>, token: &str, path: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}/v1/{path}", env["OSSATURE_OPENBAO_ADDR"]))
        .header("X-Vault-Token", token)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

async fn openbao_login(
    env: &BTreeMap<String, String>,
    role: &str,
    jwt: &str,
) -> Result<String, u16> {
    let path = env["OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH"].clone();
    let response = http()
        .post(format!(
            "{}/v1/auth/{path}/login",
            env["OSSATURE_OPENBAO_ADDR"]
        ))
        .json(&json!({"role": role, "jwt": jwt}))
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => {
            let answer: Value = response.json().await.unwrap();
            Ok(answer["auth"]["client_token"].as_str().unwrap().to_string())
        }
        code => Err(code),
    }
}

/// The producer's token publishes and cannot consume; the consumer's
/// token reads the message on its subscription and cannot produce.
async fn use_tokens(env: &BTreeMap<String, String>, topic: &str, producer: &str, consumer: &str) {
    use ossature_e2e::pulsar_client::{
        avro_schema, connect, expect_refused, new_producer, send, subscribe, within,
    };
    let url = &env["OSSATURE_PULSAR_SERVICE_URL"];
    let schema = || avro_schema("Order", ORDER);
    let reader = Box::pin(connect(url, consumer)).await.unwrap();
    let mut subscribed = Box::pin(subscribe(&reader, topic, "billing", "billing-1", schema()))
        .await
        .unwrap()
        .expect("billing consumes on its subscription");
    let writer = Box::pin(connect(url, producer)).await.unwrap();
    let mut producing = Box::pin(new_producer(&writer, topic, "orders-1", Some(schema())))
        .await
        .unwrap()
        .expect("orders produces with the registered schema");
    // `{"id": "o-1"}` as one Avro datum: the string's zigzag length, then its bytes.
    let payload = [&[6u8][..], b"o-1"].concat();
    let message = pulsar::producer::Message {
        payload: payload.clone(),
        ..Default::default()
    };
    Box::pin(send(&mut producing, message)).await.unwrap();
    let received = Box::pin(within(
        "receiving",
        futures::StreamExt::next(&mut subscribed),
    ))
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(received.payload.data, payload);
    Box::pin(within("acknowledging", subscribed.ack(&received)))
        .await
        .unwrap()
        .unwrap();
    expect_refused(
        Box::pin(subscribe(
            &writer,
            topic,
            "orders-sub",
            "orders-2",
            schema(),
        ))
        .await
        .unwrap(),
        "AuthorizationError",
        "orders consuming",
    )
    .unwrap();
    expect_refused(
        Box::pin(new_producer(&reader, topic, "billing-2", Some(schema())))
            .await
            .unwrap(),
        "AuthorizationError",
        "billing producing",
    )
    .unwrap();
    let _ = Box::pin(within("closing", producing.close())).await;
    let _ = Box::pin(within("closing", subscribed.close())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_credentials_certificate_and_exactly_its_grants() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator_with(&env, &sel, &["--resync-seconds", "10"]);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "si").await;
    let root = format!("tn-{tenant}");
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &root);
    let global: Scope = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": "global"}, "spec": {"displayName": "Global"},
    }))
    .unwrap();
    scopes
        .create(&PostParams::default(), &global)
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let orders_topic: Topic = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {"schema": {"type": "AVRO", "definition": ORDER}},
    }))
    .unwrap();
    topics
        .create(&PostParams::default(), &orders_topic)
        .await
        .unwrap();

    let services: Api<ServiceIdentity> = Api::namespaced(client.clone(), &namespace);
    services
        .create(
            &PostParams::default(),
            &service(
                "orders",
                json!([{"topic": "orders", "actions": ["Produce"]}]),
            ),
        )
        .await
        .unwrap();
    services
        .create(
            &PostParams::default(),
            &service(
                "billing",
                json!([{"topic": "orders", "actions": ["Consume"], "subscriptions": ["billing"]}]),
            ),
        )
        .await
        .unwrap();
    let orders = wait_service(&services, "orders", "Ready", object_ready).await;
    let billing = wait_service(&services, "billing", "Ready", object_ready).await;

    // Status names it in every backend.
    let status = orders.status.clone().unwrap();
    let role = format!("{tenant}.prod.orders");
    assert_eq!(status.pulsar_role.as_deref(), Some(role.as_str()));
    assert_eq!(status.keycloak_client_id.as_deref(), Some(role.as_str()));
    let bao_role = format!("tenant-{role}");
    assert_eq!(status.openbao_role.as_deref(), Some(bao_role.as_str()));
    assert_eq!(
        status.spiffe_id.as_deref(),
        Some(format!("spiffe://{tenant}.ossature.test/ns/{namespace}/sa/orders").as_str())
    );
    assert!(status.last_rotated.is_some() && status.next_rotation.is_some());
    let expires = status.pulsar_token_expires.as_ref().unwrap().0;
    let left = expires.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(
        left > 3600 && left <= 24 * 3600,
        "a token lives a day at most: {left}"
    );

    // The ServiceAccount, and the Secret its Workloads mount.
    Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .get("orders")
        .await
        .unwrap();
    let data = secret_data(&client, &namespace, "orders-secrets").await;
    assert_eq!(data["client-id"], role);
    let token = &data["pulsar-token"];
    let claims = jwt_part(token, 1);
    assert_eq!(claims["sub"], role.as_str());
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 24 * 3600);
    assert_eq!(jwt_part(token, 0)["alg"], "ES256");

    // Keycloak takes the client secret and hands out an EdDSA token that
    // names the tenant.
    let tenants: Api<ossature_crds::Tenant> = Api::all(client.clone());
    let realm = tenants
        .get(&tenant)
        .await
        .unwrap()
        .status
        .unwrap()
        .realm
        .unwrap();
    let access = client_token(&env, &realm, &role, &data["client-secret"])
        .await
        .unwrap();
    assert_eq!(jwt_part(&access, 0)["alg"], "EdDSA");
    let body = jwt_part(&access, 1);
    assert_eq!(body["azp"], role.as_str());
    let audience = body["aud"].to_string();
    assert!(audience.contains(&format!("\"{tenant}\"")), "{body}");
    assert_eq!(body["organization"], json!([tenant]), "{body}");

    // Pulsar holds exactly the declared grants.
    let billing_role = format!("{tenant}.prod.billing");
    assert_eq!(
        permissions(&env, &tenant, "orders").await,
        json!({&role: ["produce"], &billing_role: ["consume"]})
    );
    assert_eq!(
        subscription_roles(&env, &tenant).await,
        json!({"billing": [&billing_role]})
    );
    let topic = topics.get("orders").await.unwrap();
    let users: Vec<String> = topic
        .status
        .unwrap()
        .granted_to
        .iter()
        .map(|u| u.service.clone())
        .collect();
    assert_eq!(users, ["billing", "orders"]);

    // The tokens in the Secrets work on the broker as granted: orders
    // produces, billing consumes on its subscription, neither more.
    let billing_data = secret_data(&client, &namespace, "billing-secrets").await;
    use_tokens(
        &env,
        &format!("persistent://{tenant}/prod/orders"),
        &data["pulsar-token"],
        &billing_data["pulsar-token"],
    )
    .await;

    // A real ServiceAccount token logs in to OpenBao through its role and
    // reads its own path only.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let jwt = account_token(&accounts, "orders").await;
    let bao = openbao_login(&env, &bao_role, &jwt).await.unwrap();
    let kv = format!("tenants/{tenant}/kv/data/prod/services");
    let (code, own) = openbao(&env, &bao, &format!("{kv}/orders/credentials")).await;
    assert_eq!(code, 200, "{own}");
    assert_eq!(own["data"]["data"]["client-id"], role.as_str());
    let (code, _) = openbao(&env, &bao, &format!("{kv}/billing/credentials")).await;
    assert_eq!(code, 403, "another service's path is refused");
    let billing_jwt = account_token(&accounts, "billing").await;
    assert_eq!(openbao_login(&env, &bao_role, &billing_jwt).await, Err(403));

    // The certificate of its SPIFFE ID, from the tenant CA.
    let tls = secret_data(&client, &namespace, "orders-tls").await;
    assert!(tls["tls.crt"].contains("BEGIN CERTIFICATE"));
    let (_, cert) = x509_parser::pem::parse_x509_pem(tls["tls.crt"].as_bytes()).unwrap();
    let cert = cert.parse_x509().unwrap();
    let uris: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [status.spiffe_id.clone().unwrap()]);

    // A rotation on request: the new secret works, and so does the old one
    // (no moment without a valid secret in the Secret).
    let old = data["client-secret"].clone();
    services
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"credentials": {"rotationRequest": "now"}}})),
        )
        .await
        .unwrap();
    wait_service(&services, "orders", "rotated", |s| {
        object_ready(s)
            && s.status.as_ref().unwrap().last_rotation_request.as_deref() == Some("now")
    })
    .await;
    let rotated = wait_for(
        "the new secret in the Secret",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let namespace = namespace.clone();
            let old = old.clone();
            async move {
                let data = secret_data(&client, &namespace, "orders-secrets").await;
                (data["client-secret"] != old).then_some(data)
            }
        },
    )
    .await;
    client_token(&env, &realm, &role, &rotated["client-secret"])
        .await
        .unwrap();
    client_token(&env, &realm, &role, &old)
        .await
        .expect("the previous secret stays valid for a while");
    let hash_before = orders.status.as_ref().unwrap().secrets_hash.clone();
    let after = services.get("orders").await.unwrap();
    assert_ne!(after.status.unwrap().secrets_hash, hash_before);

    // Drift: the client deleted in Keycloak, the role in OpenBao and the
    // credentials in KV come back, and the Secret follows the new client.
    let admin = keycloak_token(&env).await;
    let kc = &env["OSSATURE_KEYCLOAK_URL"];
    let (_, found) = get(
        format!("{kc}/admin/realms/{realm}/clients?clientId={role}"),
        Some(("Authorization", &format!("Bearer {admin}"))),
    )
    .await;
    let uuid = found[0]["id"].as_str().unwrap().to_string();
    let gone = http()
        .delete(format!("{kc}/admin/realms/{realm}/clients/{uuid}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status();
    assert!(gone.is_success(), "{gone}");
    let root_token = env["OSSATURE_OPENBAO_ROOT_TOKEN"].clone();
    let auth = env["OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH"].clone();
    let bao_role_path = format!(
        "{}/v1/auth/{auth}/role/{bao_role}",
        env["OSSATURE_OPENBAO_ADDR"]
    );
    let metadata = format!("tenants/{tenant}/kv/metadata/prod/services/orders/credentials");
    for path in [
        bao_role_path,
        format!("{}/v1/{metadata}", env["OSSATURE_OPENBAO_ADDR"]),
    ] {
        let code = http()
            .delete(path)
            .header("X-Vault-Token", &root_token)
            .send()
            .await
            .unwrap()
            .status();
        assert!(code.is_success(), "{code}");
    }
    let restored = wait_for(
        "the client, role and credentials back",
        Duration::from_secs(90),
        || {
            let (client, namespace, env, realm, role) = (
                client.clone(),
                namespace.clone(),
                env.clone(),
                realm.clone(),
                role.clone(),
            );
            let rotated = rotated["client-secret"].clone();
            async move {
                let data = secret_data(&client, &namespace, "orders-secrets").await;
                if data["client-secret"] == rotated {
                    return None;
                }
                client_token(&env, &realm, &role, &data["client-secret"])
                    .await
                    .ok()?;
                Some(data)
            }
        },
    )
    .await;
    let jwt = account_token(&accounts, "orders").await;
    openbao_login(&env, &bao_role, &jwt)
        .await
        .expect("the OpenBao role is back");
    assert_ne!(restored["pulsar-token"], "", "a token was minted again");
    let rotated = restored;

    // Revoking billing's grant leaves orders' as it was.
    services
        .patch(
            "billing",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grants": null}})),
        )
        .await
        .unwrap();
    wait_for(
        "billing's grant revoked",
        Duration::from_secs(60),
        || async {
            let live = permissions(&env, &tenant, "orders").await;
            (live == json!({&role: ["produce"]})).then_some(())
        },
    )
    .await;
    wait_for(
        "billing's subscription revoked",
        Duration::from_secs(60),
        || async {
            let live = subscription_roles(&env, &tenant).await;
            let empty = live
                .as_object()
                .is_none_or(|m| m.values().all(|r| r.as_array().is_none_or(Vec::is_empty)));
            empty.then_some(())
        },
    )
    .await;
    drop(billing);

    // A topic deleted by hand comes back with its grants.
    let admin = pulsar_auth(&env);
    let url = format!(
        "{}/admin/v2/persistent/{tenant}/prod/orders?force=true",
        env["OSSATURE_PULSAR_ADMIN_URL"]
    );
    let code = http()
        .delete(url)
        .header("Authorization", admin)
        .send()
        .await
        .unwrap()
        .status();
    assert!(code.is_success(), "{code}");
    wait_for(
        "the topic back with its grant",
        Duration::from_secs(60),
        || async {
            let path = format!("/admin/v2/persistent/{tenant}/prod/orders/permissions");
            let (code, live) = pulsar_get(&env, &path).await;
            (code == 200 && live == json!({&role: ["produce"]})).then_some(())
        },
    )
    .await;

    // Deleting a service removes it from every backend.
    delete_and_wait(&services, "orders", Duration::from_secs(60)).await;
    wait_for("orders' grant gone", Duration::from_secs(30), || async {
        let live = permissions(&env, &tenant, "orders").await;
        (live == json!({})).then_some(())
    })
    .await;
    let (code, _) = openbao(&env, &root_token, &format!("auth/{auth}/role/{bao_role}")).await;
    assert_eq!(code, 404, "the OpenBao role is gone");
    let (code, _) = openbao(&env, &root_token, &format!("sys/policies/acl/{bao_role}")).await;
    assert_eq!(code, 404, "its policy is gone");
    assert_eq!(openbao(&env, &root_token, &metadata).await.0, 404);
    let refused = client_token(&env, &realm, &role, &rotated["client-secret"])
        .await
        .unwrap_err();
    assert!(refused.contains("invalid_client"), "{refused}");
    wait_for(
        "its Kubernetes objects collected",
        Duration::from_secs(60),
        || async {
            let gone = Api::<Secret>::namespaced(client.clone(), &namespace)
                .get_opt("orders-secrets")
                .await
                .unwrap()
                .is_none()
                && accounts.get_opt("orders").await.unwrap().is_none();
            gone.then_some(())
        },
    )
    .await;

    // The tenant's deletion takes its last service with it, even from the
    // shared realm that outlives the tenant.
    delete_tenants(&tenants, &[&tenant]).await;
    let admin = keycloak_token(&env).await;
    let (code, clients) = get(
        format!(
            "{}/admin/realms/{realm}/clients?clientId={billing_role}",
            env["OSSATURE_KEYCLOAK_URL"]
        ),
        Some(("Authorization", &format!("Bearer {admin}"))),
    )
    .await;
    assert_eq!((code, clients), (200, json!([])));
    let role = format!("auth/{auth}/role/tenant-{billing_role}");
    assert_eq!(openbao(&env, &root_token, &role).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_a_bad_service_identity() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let services: Api<ServiceIdentity> = Api::namespaced(client.clone(), "default");
    let refused = |spec_patch: Value| {
        let services = services.clone();
        async move {
            let mut object = serde_json::to_value(service("svc", json!([]))).unwrap();
            for (k, v) in spec_patch.as_object().unwrap() {
                object["spec"][k] = v.clone();
            }
            let object: ServiceIdentity = serde_json::from_value(object).unwrap();
            let dry = PostParams {
                dry_run: true,
                ..Default::default()
            };
            match services.create(&dry, &object).await {
                Err(kube::Error::Api(status)) => status.message,
                Ok(_) => panic!("admitted: {spec_patch}"),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let message = refused(json!({"id": "not-a-ulid"})).await;
    assert!(message.contains("spec.id"), "{message}");
    let message = refused(json!({"id": "81JQ3X5T0RYB9Q8K1W7ZC4M2NP"})).await;
    assert!(
        message.contains("spec.id"),
        "a ULID starts at most with 7: {message}"
    );
    let message = refused(
        json!({"grants": [{"topic": "persistent://other/prod/orders", "actions": ["Consume"]}]}),
    )
    .await;
    assert!(message.contains("another tenant's"), "{message}");
    let message = refused(
        json!({"grants": [{"topic": "orders", "actions": ["Produce"], "subscriptions": ["s"]}]}),
    )
    .await;
    assert!(
        message.contains("subscriptions are for consumers"),
        "{message}"
    );
    let message = refused(json!({"credentials": {"rotateEvery": "1h"}})).await;
    assert!(message.contains("24h to 2160h"), "{message}");
    let message = refused(json!({"repository": "ftp://example.com/x"})).await;
    assert!(message.contains("spec.repository"), "{message}");
}
