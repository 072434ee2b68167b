//! People of a tenant log in, in both isolation modes: a real user placed in
//! a scope gets a token from Keycloak's token endpoint (with a computed TOTP
//! code where MFA is required), and the token is checked as a service would:
//! EdDSA signature against the published keys, audience and a claim naming
//! the tenant, the user's scope paths, the tenant's lifetime. A user of one
//! tenant gets no token another tenant would accept. A tenant provisioned
//! before isolation existed keeps its realm. Dedicated realms are capped.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use ossature_crds::{Scope, Tenant};
use serde_json::{Value, json};

const OTP_SECRET: &str = "ossature-test-otp-secret-0123456789";
const PASSWORD: &str = "Correct-Horse-Battery-9";

struct Admin {
    url: String,
    token: String,
}

impl Admin {
    async fn new(env: &BTreeMap<String, String>) -> Self {
        Admin {
            url: env["OSSATURE_KEYCLOAK_URL"].clone(),
            token: keycloak_token(env).await,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let mut request = http()
            .request(method, format!("{}/admin/realms/{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            location,
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body, _) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A user with a password and, for MFA, a TOTP credential; returns its id.
    async fn user(&self, realm: &str, username: &str) -> String {
        let otp_data = json!({"subType": "totp", "digits": 6, "counter": 0, "period": 30, "algorithm": "HmacSHA1"});
        let (status, body, location) = self
            .send(
                reqwest::Method::POST,
                &format!("{realm}/users"),
                Some(json!({
                    "username": username, "email": format!("{username}@example.test"),
                    "emailVerified": true, "enabled": true,
                    "firstName": "Test", "lastName": "Person",
                    "credentials": [
                        {"type": "password", "value": PASSWORD, "temporary": false},
                        {"type": "otp", "secretData": json!({"value": OTP_SECRET}).to_string(),
                         "credentialData": otp_data.to_string()},
                    ],
                })),
            )
            .await;
        assert_eq!(status, 201, "create user {username} in {realm}: {body}");
        let id = location.unwrap().rsplit('/').next().unwrap().to_string();
        // Set up already: no required action stands between it and a token.
        let (status, body, _) = self
            .send(
                reqwest::Method::PUT,
                &format!("{realm}/users/{id}"),
                Some(json!({"requiredActions": []})),
            )
            .await;
        assert_eq!(status, 204, "{body}");
        id
    }
}

/// The current code of a TOTP credential with `secret`.
fn totp(secret: &str) -> String {
    totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        secret.as_bytes().to_vec(),
    )
    .generate_current()
    .unwrap()
}

/// A token from the tenant's client by the password grant; the status and body.
async fn login(
    env: &BTreeMap<String, String>,
    realm: &str,
    client: &str,
    username: &str,
    otp: bool,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "password".to_string()),
        ("client_id", client.to_string()),
        ("username", username.to_string()),
        ("password", PASSWORD.to_string()),
        ("scope", "openid".to_string()),
    ];
    if otp {
        form.push(("otp", totp(OTP_SECRET)));
    }
    let response = http()
        .post(format!(
            "{}/realms/{realm}/protocol/openid-connect/token",
            env["OSSATURE_KEYCLOAK_URL"]
        ))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The token's claims, once its EdDSA signature verifies against the
/// realm's published keys.
async fn verified_claims(env: &BTreeMap<String, String>, realm: &str, token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(
        header["alg"], "EdDSA",
        "tokens are signed with EdDSA: {header}"
    );
    let (_, keys) = get(
        format!(
            "{}/realms/{realm}/protocol/openid-connect/certs",
            env["OSSATURE_KEYCLOAK_URL"]
        ),
        None,
    )
    .await;
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published");
    assert_eq!(key["crv"], "Ed25519");
    let public = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the signature verifies against the published key");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// Whether a service of `tenant` (which knows its realm) accepts the token
/// as one of its own people's: issued by its realm, for its client, to a
/// member of it.
fn accepted_by(claims: &Value, tenant: &str, realm: &str) -> bool {
    let issuer = claims["iss"].as_str().unwrap_or_default();
    let audience = match &claims["aud"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let member = claims["organization"].get(tenant).is_some() || claims["tenant"] == tenant;
    issuer.ends_with(&format!("/realms/{realm}")) && audience.contains(&tenant) && member
}

fn scope(name: &str, parent: Option<&str>) -> Scope {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name},
        "spec": {"displayName": name, "parent": parent},
    }))
    .unwrap()
}

fn business(name: &str, sel: &str, identity: Value) -> Tenant {
    labelled(
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"type": "Business", "displayName": name, "residency": "eu", "identity": identity},
        }))
        .unwrap(),
        sel,
    )
}

async fn ready_scopes(client: &kube::Client, tenant: &str) {
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    for s in [scope("global", None), scope("eu", Some("global"))] {
        scopes.create(&PostParams::default(), &s).await.unwrap();
    }
    wait_for(
        &format!("scopes of {tenant} Ready"),
        Duration::from_secs(60),
        || {
            let scopes = scopes.clone();
            async move {
                let s = scopes.get("eu").await.ok()?.status?;
                (condition(&s.conditions, "Ready")?.0 == "True").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_log_in_to_their_tenant_only_in_both_modes() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let acme = format!("id{}", suffix());
    let acme_eu = format!("{acme}-eu");
    let own = format!("{acme}-own");
    for tenant in [
        business(&acme, &sel, json!({"accessTokenLifetimeSeconds": 600})),
        business(&acme_eu, &sel, json!({})),
        business(
            &own,
            &sel,
            json!({"isolation": "Realm", "accessTokenLifetimeSeconds": 900}),
        ),
    ] {
        tenants
            .create(&PostParams::default(), &tenant)
            .await
            .unwrap();
    }
    let mut status = BTreeMap::new();
    for name in [&acme, &acme_eu, &own] {
        let t = wait_tenant_ready(&tenants, name, Duration::from_secs(90)).await;
        status.insert(name.clone(), t.status.unwrap());
        ready_scopes(&client, name).await;
    }
    let shared = "ossature-business-eu";
    assert_eq!(status[&acme].realm.as_deref(), Some(shared));
    assert_eq!(status[&acme_eu].realm.as_deref(), Some(shared));
    assert_eq!(status[&own].realm.as_deref(), Some(own.as_str()));
    assert_eq!(
        realm(&env, &acme).await.0,
        404,
        "no realm per Organization tenant"
    );

    let admin = Admin::new(&env).await;
    // A person of acme, in its scope eu.
    let org = status[&acme].organization_id.clone().unwrap();
    let alice = format!("alice-{acme}");
    let alice_id = admin.user(shared, &alice).await;
    let (code, body, _) = admin
        .send(
            reqwest::Method::POST,
            &format!("{shared}/organizations/{org}/members"),
            Some(json!(alice_id)),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let eu = admin
        .get(&format!(
            "{shared}/organizations/{org}/groups/group-by-path/global/eu"
        ))
        .await;
    let (code, body, _) = admin
        .send(
            reqwest::Method::PUT,
            &format!(
                "{shared}/organizations/{org}/groups/{}/members/{alice_id}",
                eu["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(code, 204, "{body}");

    // MFA is required for a Business tenant: no code, no token.
    let (code, _) = login(&env, shared, &acme, &alice, false).await;
    assert!(
        code == 401 || code == 400,
        "a login without the second factor is refused ({code})"
    );
    let (code, body) = login(&env, shared, &acme, &alice, true).await;
    assert_eq!(code, 200, "{body}");
    let claims = verified_claims(&env, shared, body["access_token"].as_str().unwrap()).await;
    assert!(accepted_by(&claims, &acme, shared), "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    let groups = &claims["organization"][&acme]["groups"];
    assert!(
        groups.as_array().is_some_and(|g| g
            .iter()
            .any(|p| p.as_str().unwrap_or_default().ends_with("/global/eu"))),
        "the token carries the scope path: {claims}"
    );
    assert!(
        !accepted_by(&claims, &acme_eu, shared),
        "acme's token is not acme-eu's"
    );
    assert!(!accepted_by(&claims, &own, &own));
    // Through acme-eu's client, alice is still no member of acme-eu.
    let (code, body) = login(&env, shared, &acme_eu, &alice, true).await;
    if code == 200 {
        let claims = verified_claims(&env, shared, body["access_token"].as_str().unwrap()).await;
        assert!(!accepted_by(&claims, &acme_eu, shared), "{claims}");
    }

    // A person of the tenant with a realm of its own.
    let bob = format!("bob-{own}");
    let bob_id = admin.user(&own, &bob).await;
    let eu = admin.get(&format!("{own}/group-by-path/global/eu")).await;
    let (code, body, _) = admin
        .send(
            reqwest::Method::PUT,
            &format!("{own}/users/{bob_id}/groups/{}", eu["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = login(&env, &own, &own, &bob, true).await;
    assert_eq!(code, 200, "{body}");
    let claims = verified_claims(&env, &own, body["access_token"].as_str().unwrap()).await;
    assert!(accepted_by(&claims, &own, &own), "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["scopes"], json!(["/global/eu"]), "{claims}");
    assert!(!accepted_by(&claims, &acme, shared));
    // alice does not exist in that realm.
    let (code, _) = login(&env, &own, &own, &alice, true).await;
    assert!(code == 400 || code == 401, "{code}");

    for name in [&acme, &acme_eu, &own] {
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&acme, &acme_eu, &own] {
        wait_tenant_gone(&tenants, name, Duration::from_secs(120)).await;
    }
    // Gone from Keycloak; the shared realm stays for the others.
    assert_eq!(realm(&env, &own).await.0, 404);
    for name in [&acme, &acme_eu] {
        assert!(
            organization(&env, shared, name).await.is_none(),
            "organization {name} left behind"
        );
    }
    assert_eq!(realm(&env, shared).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_from_before_isolation_keeps_its_realm() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("old{}", suffix());
    // What the previous release left: the realm of the tenant's name, with
    // what its people put there, and a Tenant whose status names that realm.
    let admin = Admin::new(&env).await;
    let (code, body, _) = admin
        .send(
            reqwest::Method::POST,
            "",
            Some(json!({"realm": name, "enabled": true})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let person = admin.user(&name, "somebody").await;
    let before = admin.get(&name).await;
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&name), &sel))
        .await
        .unwrap();
    tenants
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"realm": name, "namespace": format!("tn-{name}")}})),
        )
        .await
        .unwrap();

    // The upgraded operator: the tenant stays in its realm, nothing is lost.
    let _operator = start_operator(&env, &sel);
    let tenant = wait_tenant_ready(&tenants, &name, Duration::from_secs(90)).await;
    let status = tenant.status.unwrap();
    assert_eq!(status.isolation, Some(ossature_crds::Isolation::Realm));
    assert_eq!(status.realm.as_deref(), Some(name.as_str()));
    let after = admin.get(&name).await;
    assert_eq!(after["id"], before["id"], "the same realm, not a new one");
    let (code, _, _) = admin
        .send(
            reqwest::Method::GET,
            &format!("{name}/users/{person}"),
            None,
        )
        .await;
    assert_eq!(code, 200, "its people are still there");
    assert!(
        organization(&env, "ossature-consumer-us", &name)
            .await
            .is_none(),
        "no organization was made for it"
    );

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    assert_eq!(realm(&env, &name).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_realms_are_capped() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator_with(&env, &sel, &["--max-dedicated-realms=1"]);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let first = format!("cap{}", suffix());
    let second = format!("{first}-2");
    tenants
        .create(
            &PostParams::default(),
            &business(&first, &sel, json!({"isolation": "Realm"})),
        )
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &first, Duration::from_secs(90)).await;
    tenants
        .create(
            &PostParams::default(),
            &business(&second, &sel, json!({"isolation": "Realm"})),
        )
        .await
        .unwrap();
    let status = wait_for("RealmCapacityReached", Duration::from_secs(30), || {
        let tenants = tenants.clone();
        let second = second.clone();
        async move {
            let status = tenants.get(&second).await.ok()?.status?;
            (condition(&status.conditions, "Stalled")?
                == ("True".into(), "RealmCapacityReached".into()))
                .then_some(status)
        }
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("isolation: Organization"),
        "{}",
        ready.message
    );
    assert_eq!(realm(&env, &second).await.0, 404, "no realm past the cap");
    // The first goes: the second gets its realm, without anyone touching it.
    tenants
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &second, Duration::from_secs(90)).await;
    assert_eq!(realm(&env, &second).await.0, 200);
    tenants
        .delete(&second, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &second, Duration::from_secs(120)).await;
}

/// Follows a browser's redirects with its cookies; returns the last answer's
/// status, its body, and the Location it points to (not followed when it
/// leaves Keycloak).
async fn browse(
    browser: &reqwest::Client,
    mut request: reqwest::RequestBuilder,
    keycloak: &str,
) -> (u16, String, Option<String>) {
    for _ in 0..20 {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body = response.text().await.unwrap();
        match location {
            Some(next) if (300..400).contains(&status) && next.starts_with(keycloak) => {
                request = browser.get(next);
            }
            location => return (status, body, location),
        }
    }
    panic!("too many redirects");
}

/// The action of form `id` on a Keycloak page (wherever the attribute sits
/// in the tag).
fn form_action(page: &str, id: &str) -> String {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no form {id}: {page}"));
    let open = page[..at].rfind("<form").unwrap();
    let tag = &page[open..open + page[open..].find('>').unwrap()];
    let start = tag
        .find("action=\"")
        .unwrap_or_else(|| panic!("form {id} has no action: {tag}"))
        + "action=\"".len();
    let end = start + tag[start..].find('"').unwrap();
    tag[start..end].replace("&amp;", "&")
}

/// The customer's own OIDC identity provider: another realm of the same
/// Keycloak, with a client for the tenant's broker and a person, `carol-…`,
/// in its group eu-admins. Returns the realm, the client secret and her name.
async fn customer_realm(admin: &Admin) -> (String, String, String) {
    let customer = format!("cust{}", suffix());
    let secret = format!("s{}", suffix());
    let (code, body, _) = admin
        .send(
            reqwest::Method::POST,
            "",
            Some(json!({"realm": customer, "enabled": true})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body, _) = admin
        .send(
            reqwest::Method::POST,
            &format!("{customer}/clients"),
            Some(json!({
                "clientId": "ossature", "secret": secret, "publicClient": false,
                "standardFlowEnabled": true, "redirectUris": ["*"],
                "protocolMappers": [{
                    "name": "groups", "protocol": "openid-connect",
                    "protocolMapper": "oidc-group-membership-mapper",
                    "config": {"claim.name": "groups", "full.path": "false",
                               "access.token.claim": "true", "id.token.claim": "true",
                               "userinfo.token.claim": "true"},
                }],
            })),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, _, group) = admin
        .send(
            reqwest::Method::POST,
            &format!("{customer}/groups"),
            Some(json!({"name": "eu-admins"})),
        )
        .await;
    assert_eq!(code, 201);
    // Unique: a shared realm holds the people of every Organization tenant.
    let carol = format!("carol-{customer}");
    let carol_id = admin.user(&customer, &carol).await;
    let (code, _, _) = admin
        .send(
            reqwest::Method::PUT,
            &format!(
                "{customer}/users/{carol_id}/groups/{}",
                group.unwrap().rsplit('/').next().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(code, 204);
    (customer, secret, carol)
}

/// The tenant's namespace with the Secret holding the broker's client secret.
async fn namespace_with_secret(client: &kube::Client, tenant: &str, secret: &str) {
    let ns = format!("tn-{tenant}");
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"ossature.dev/tenant": tenant}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "corp-idp", "labels": {"ossature.dev/tenant": tenant}},
                "stringData": {"client-secret": secret},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// The customer's provider as the tenant declares it, its group eu-admins
/// mapped to scope eu.
fn corp_provider(kc: &str, customer: &str) -> Value {
    let issuer = format!("{kc}/realms/{customer}");
    json!({"alias": "corp", "displayName": "Corp SSO", "oidc": {
        "issuer": issuer,
        "authorizationUrl": format!("{issuer}/protocol/openid-connect/auth"),
        "tokenUrl": format!("{issuer}/protocol/openid-connect/token"),
        "jwksUrl": format!("{issuer}/protocol/openid-connect/certs"),
        "clientId": "ossature",
        "clientSecret": {"name": "corp-idp", "key": "client-secret"}},
     "scopes": [{"claim": "groups", "value": "eu-admins", "scope": "eu"}]})
}

/// The value of the input `name` on a Keycloak page.
fn input_value(page: &str, name: &str) -> String {
    let input = &page[page
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no input {name}: {page}"))..];
    let start = input.find("value=\"").unwrap() + "value=\"".len();
    let end = start + input[start..].find('"').unwrap();
    input[start..end].to_string()
}

/// `person` of the customer logs in to `client` of `realm` through the
/// provider `alias`, as a browser would: the customer's login page, then,
/// where the tenant's realm requires MFA, enrolling a TOTP credential on
/// Keycloak's page with a computed code. Returns the tenant's tokens.
async fn log_in_through_the_broker(
    kc: &str,
    realm: &str,
    client: &str,
    alias: &str,
    person: &str,
    back: &str,
) -> Value {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = browser
        .get(format!("{kc}/realms/{realm}/protocol/openid-connect/auth"))
        .query(&[
            ("client_id", client),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", back),
            ("kc_idp_hint", alias),
        ]);
    let (code, page, _) = browse(&browser, start, kc).await;
    assert_eq!(code, 200, "the customer's login page");
    let login = browser.post(form_action(&page, "kc-form-login")).form(&[
        ("username", person),
        ("password", PASSWORD),
        ("credentialId", ""),
    ]);
    let (mut code, mut page, mut location) = browse(&browser, login, kc).await;
    if code == 200 && page.contains("kc-otp-login-form") {
        // The customer's own second factor.
        let otp = browser
            .post(form_action(&page, "kc-otp-login-form"))
            .form(&[("otp", totp(OTP_SECRET)), ("login", "Sign In".into())]);
        (code, page, location) = browse(&browser, otp, kc).await;
    }
    let mut enrolled = false;
    if code == 200 && page.contains("kc-totp-settings-form") {
        // First login to a tenant that requires MFA: Keycloak asks for a
        // second factor, and the secret it offers is on the page.
        let secret = input_value(&page, "totpSecret");
        let setup = browser
            .post(form_action(&page, "kc-totp-settings-form"))
            .form(&[
                ("totp", totp(&secret)),
                ("totpSecret", secret.clone()),
                ("userLabel", "phone".into()),
                ("mode", "manual".into()),
            ]);
        (code, page, location) = browse(&browser, setup, kc).await;
        enrolled = true;
    }
    let location = location.unwrap_or_else(|| panic!("no way back ({code}): {page}"));
    assert!(location.starts_with(back), "{location}");
    let authorization = location
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let mut tokens: Value = http()
        .post(format!("{kc}/realms/{realm}/protocol/openid-connect/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", authorization),
            ("redirect_uri", back),
            ("client_id", client),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["enrolled_totp"] = json!(enrolled);
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_of_a_customer_identity_provider_log_in_through_the_broker() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let kc = env["OSSATURE_KEYCLOAK_URL"].clone();
    let admin = Admin::new(&env).await;
    let (customer, secret, carol) = customer_realm(&admin).await;

    // The tenant, with its own realm, the customer's OIDC provider and a SAML one.
    let name = format!("fed{}", suffix());
    namespace_with_secret(&client, &name, &secret).await;
    let back = "http://127.0.0.1:1/callback";
    let issuer = format!("{kc}/realms/{customer}");
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &business(
                &name,
                &sel,
                json!({
                    "isolation": "Realm", "mfaRequired": false,
                    "identityProviderFederation": true, "redirectUris": [back],
                    "identityProviders": [
                        corp_provider(&kc, &customer),
                        {"alias": "partner", "saml": {"metadataUrl": format!("{issuer}/protocol/saml/descriptor")}},
                    ],
                }),
            ),
        )
        .await
        .unwrap();
    ready_scopes(&client, &name).await;
    let status = wait_for("both identity providers", Duration::from_secs(60), || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let t = tenants.get(&name).await.ok().filter(ready)?;
            // Ready with its scope mapping in place once scope eu is known.
            (t.status.as_ref()?.identity_providers.len() == 2).then(|| t.status.unwrap())
        }
    })
    .await;
    assert_eq!(
        status.identity_providers[0].endpoint,
        format!("{kc}/realms/{name}/broker/corp/endpoint")
    );

    // SAML: configured from the customer's metadata; ours is published for it.
    let partner = admin
        .get(&format!("{name}/identity-provider/instances/partner"))
        .await;
    assert!(
        partner["config"]["singleSignOnServiceUrl"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{issuer}/protocol/saml"))),
        "{partner}"
    );
    assert!(
        partner["config"]["signingCertificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    let descriptor = http()
        .get(format!(
            "{}/descriptor",
            status.identity_providers[1].endpoint
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        descriptor.contains("EntityDescriptor") && descriptor.contains("AssertionConsumerService"),
        "{descriptor}"
    );

    // Carol logs in to the tenant through the broker, as a browser would.
    let tokens = log_in_through_the_broker(&kc, &name, &name, "corp", &carol, back).await;
    let claims = verified_claims(&env, &name, tokens["access_token"].as_str().unwrap()).await;
    assert!(accepted_by(&claims, &name, &name), "{claims}");
    assert_eq!(claims["email"], format!("{carol}@example.test"), "{claims}");
    assert_eq!(
        claims["scopes"],
        json!(["/global/eu"]),
        "the customer's group became a scope: {claims}"
    );

    // A provider that leaves the spec leaves Keycloak.
    let mut tenant = tenants.get(&name).await.unwrap();
    tenant.spec.identity.identity_providers.truncate(1);
    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"identity": {"identityProviders": tenant.spec.identity.identity_providers}}})),
        )
        .await
        .unwrap();
    wait_for("SAML provider removed", Duration::from_secs(30), || {
        let admin = &admin;
        let name = name.clone();
        async move {
            let (code, _, _) = admin
                .send(
                    reqwest::Method::GET,
                    &format!("{name}/identity-provider/instances/partner"),
                    None,
                )
                .await;
            (code == 404).then_some(())
        }
    })
    .await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    admin.send(reqwest::Method::DELETE, &customer, None).await;
}

/// The same in a shared realm: the provider is linked to the tenant's
/// organization, carol becomes a member on her first login, her group maps
/// to the organization's scope group, and, the Business realm requiring
/// MFA, she enrols a TOTP credential on Keycloak's page before her token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_of_a_customer_identity_provider_join_an_organization_tenant_through_the_broker() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let kc = env["OSSATURE_KEYCLOAK_URL"].clone();
    let admin = Admin::new(&env).await;
    let (customer, secret, carol) = customer_realm(&admin).await;

    let name = format!("ofed{}", suffix());
    namespace_with_secret(&client, &name, &secret).await;
    let back = "http://127.0.0.1:1/callback";
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &business(
                &name,
                &sel,
                json!({
                    "identityProviderFederation": true, "redirectUris": [back],
                    "identityProviders": [corp_provider(&kc, &customer)],
                }),
            ),
        )
        .await
        .unwrap();
    ready_scopes(&client, &name).await;
    let status = wait_for("the identity provider", Duration::from_secs(60), || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let t = tenants.get(&name).await.ok().filter(ready)?;
            (t.status.as_ref()?.identity_providers.len() == 1).then(|| t.status.unwrap())
        }
    })
    .await;
    let shared = "ossature-business-eu";
    let alias = format!("{name}-corp");
    assert_eq!(status.realm.as_deref(), Some(shared));
    assert_eq!(
        status.identity_providers[0].endpoint,
        format!("{kc}/realms/{shared}/broker/{alias}/endpoint")
    );
    let org = status.organization_id.clone().unwrap();
    let linked = admin
        .get(&format!("{shared}/organizations/{org}/identity-providers"))
        .await;
    assert!(
        linked
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p["alias"] == alias.as_str())),
        "the provider is the organization's: {linked}"
    );

    let tokens = log_in_through_the_broker(&kc, shared, &name, &alias, &carol, back).await;
    assert_eq!(
        tokens["enrolled_totp"], true,
        "the Business realm asked for a second factor on the first login"
    );
    let claims = verified_claims(&env, shared, tokens["access_token"].as_str().unwrap()).await;
    assert!(
        accepted_by(&claims, &name, shared),
        "carol is a member of the organization: {claims}"
    );
    assert_eq!(claims["email"], format!("{carol}@example.test"), "{claims}");
    let groups = &claims["organization"][&name]["groups"];
    assert!(
        groups.as_array().is_some_and(|g| g
            .iter()
            .any(|p| p.as_str().unwrap_or_default().ends_with("/global/eu"))),
        "the customer's group became the tenant's scope: {claims}"
    );

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    let (code, _, _) = admin
        .send(
            reqwest::Method::GET,
            &format!("{shared}/identity-provider/instances/{alias}"),
            None,
        )
        .await;
    assert_eq!(code, 404, "the tenant's provider left the shared realm");
    let left = admin
        .get(&format!("{shared}/users?username={carol}&exact=true"))
        .await;
    assert_eq!(
        left,
        json!([]),
        "the person the tenant's provider brought in left with the tenant"
    );
    admin.send(reqwest::Method::DELETE, &customer, None).await;
}
