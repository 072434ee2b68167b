//! The Keycloak adapter against the real dev-stack Keycloak: every realm is
//! uniquely named and deleted, even when an assertion fails.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use ossature_operator::adapters::keycloak::{
    ClientSettings, GroupHome, Keycloak, OrganizationSettings, RealmSettings,
};
use ossature_operator::adapters::{Backend, BackendError, Calls, Change, Verb};
use serde_json::{Value, json};

/// A real admin session, independent of the adapter, to check and tamper.
#[derive(Clone)]
struct Admin {
    http: reqwest::Client,
    url: String,
    user: String,
    password: String,
}

impl Admin {
    async fn token(&self) -> String {
        let answer: Value = self
            .http
            .post(format!(
                "{}/realms/master/protocol/openid-connect/token",
                self.url
            ))
            .form(&[
                ("client_id", "admin-cli"),
                ("grant_type", "password"),
                ("username", self.user.as_str()),
                ("password", self.password.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// GET under /admin/realms; the status and the body (Null if empty).
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/admin/realms/{path}", self.url))
            .bearer_auth(self.token().await)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn put(&self, path: &str, body: &Value) {
        self.http
            .put(format!("{}/admin/realms/{path}", self.url))
            .bearer_auth(self.token().await)
            .json(body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// POST under /admin/realms (to it, for an empty path); the Location
    /// header, if any.
    async fn post(&self, path: &str, body: &Value) -> Option<String> {
        let url = format!("{}/admin/realms/{path}", self.url);
        let response = self
            .http
            .post(url.trim_end_matches('/'))
            .bearer_auth(self.token().await)
            .json(body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
    }

    /// The realm's `ossature-scopes` client scope.
    async fn scope_claim(&self, realm: &str) -> Value {
        let scopes = self.get_ok(&format!("{realm}/client-scopes")).await;
        let found = scopes
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == json!("ossature-scopes"));
        found.expect("client scope ossature-scopes").clone()
    }

    /// DELETE under /admin/realms, whatever the answer.
    async fn delete(&self, path: &str) {
        let _ = self
            .http
            .delete(format!("{}/admin/realms/{path}", self.url))
            .bearer_auth(self.token().await)
            .send()
            .await;
    }

    async fn delete_realm(&self, realm: &str) {
        self.delete(realm).await;
    }
}

struct Live {
    keycloak: Keycloak,
    calls: Calls,
    admin: Admin,
}

async fn live() -> Live {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let admin = Admin {
        http: reqwest::Client::new(),
        url: env["OSSATURE_KEYCLOAK_URL"].clone(),
        user: env["OSSATURE_KEYCLOAK_ADMIN_USER"].clone(),
        password: env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"].clone(),
    };
    let calls = Calls::default();
    let keycloak = Keycloak::new(&admin.url, &admin.user, &admin.password, calls.clone()).unwrap();
    Live {
        keycloak,
        calls,
        admin,
    }
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("kc-adapter-{tag}-{}-{nanos}", std::process::id())
}

/// Runs `body` as its own task so a failed assertion still lets the realm
/// be deleted before the panic is passed on.
async fn with_realm<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(Live, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let live = live().await;
    let admin = live.admin.clone();
    let realm = unique(tag);
    let outcome = tokio::spawn(body(live, realm.clone())).await;
    admin.delete_realm(&realm).await;
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure.into_panic());
    }
}

fn settings(name: &str) -> RealmSettings {
    RealmSettings {
        organizations: false,
        name: name.into(),
        display_name: "Adapter test".into(),
        registration_allowed: true,
        verify_email: true,
        mfa_required: true,
        password_policy: "length(12) and digits(1) and upperCase(1) and lowerCase(1) and specialChars(1) and passwordHistory(3)".into(),
        access_token_lifespan_seconds: 300,
    }
}

fn writes(calls: &Calls) -> u64 {
    calls.count(Backend::Keycloak, Verb::Write)
}

/// Top-level realm fields whose values differ between two reads.
fn changed_fields(before: &Value, after: &Value) -> BTreeSet<String> {
    let (before, after) = (before.as_object().unwrap(), after.as_object().unwrap());
    before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

#[tokio::test]
async fn realm_is_created_kept_updated_repaired_and_deleted() {
    with_realm("realm", |live, realm| async move {
        let Live {
            keycloak,
            calls,
            admin,
        } = live;
        let mut desired = settings(&realm);

        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Created
        );
        let written = writes(&calls);
        assert_eq!(
            written, 1,
            "a new realm is one write, keys and TOTP included"
        );
        let read = calls.count(Backend::Keycloak, Verb::Read);
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&calls),
            written,
            "an unchanged realm costs no writes"
        );
        // Realm, keys and TOTP action; the cached token costs nothing.
        assert_eq!(calls.count(Backend::Keycloak, Verb::Read), read + 3);

        let current = admin.get_ok(&realm).await;
        assert_eq!(current["enabled"], json!(true));
        assert_eq!(current["displayName"], json!("Adapter test"));
        assert_eq!(current["registrationAllowed"], json!(true));
        assert_eq!(current["verifyEmail"], json!(true));
        assert_eq!(current["bruteForceProtected"], json!(true));
        assert_eq!(current["eventsEnabled"], json!(true));
        assert_eq!(current["defaultSignatureAlgorithm"], json!("EdDSA"));
        assert_eq!(current["accessTokenLifespan"], json!(300));
        assert_eq!(
            current["passwordPolicy"],
            json!(desired.password_policy),
            "policy kept as written"
        );
        let events: BTreeSet<&str> = current["enabledEventTypes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(events.is_superset(&BTreeSet::from(["LOGIN", "LOGIN_ERROR", "LOGOUT"])));

        let keys = admin.get_ok(&format!("{realm}/keys")).await;
        assert!(
            keys["active"]["EdDSA"].is_string(),
            "active EdDSA key: {keys}"
        );
        assert!(
            keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| { k["algorithm"] == json!("EdDSA") && k["status"] == json!("ACTIVE") })
        );
        let totp_path = format!("{realm}/authentication/required-actions/CONFIGURE_TOTP");
        let totp = admin.get_ok(&totp_path).await;
        assert_eq!(totp["enabled"], json!(true));
        assert_eq!(totp["defaultAction"], json!(true));

        // One changed setting: one write, one changed field.
        desired.registration_allowed = false;
        let written = writes(&calls);
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Updated
        );
        assert_eq!(writes(&calls), written + 1);
        let after = admin.get_ok(&realm).await;
        assert_eq!(
            changed_fields(&current, &after),
            BTreeSet::from(["registrationAllowed".to_string()])
        );

        // Drift made behind the adapter's back is repaired.
        admin
            .put(&realm, &json!({ "accessTokenLifespan": 42 }))
            .await;
        assert_eq!(admin.get_ok(&realm).await["accessTokenLifespan"], json!(42));
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Updated
        );
        let repaired = admin.get_ok(&realm).await;
        assert_eq!(repaired["accessTokenLifespan"], json!(300));
        assert!(changed_fields(&after, &repaired).is_empty());

        // MFA off: TOTP stays available but is no longer a default action.
        desired.mfa_required = false;
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Updated
        );
        let totp = admin.get_ok(&totp_path).await;
        assert_eq!(totp["enabled"], json!(true));
        assert_eq!(totp["defaultAction"], json!(false));
        let written = writes(&calls);
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(&calls), written);

        assert_eq!(
            keycloak.delete_realm(&realm).await.unwrap(),
            Change::Deleted
        );
        assert_eq!(keycloak.delete_realm(&realm).await.unwrap(), Change::Absent);
        assert_eq!(admin.get(&realm).await.0, 404);
    })
    .await;
}

fn path(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| (*s).to_owned()).collect()
}

fn scope_path(segments: &[&str]) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "scopePath".to_string(),
        vec![segments.iter().map(|s| format!("/{s}")).collect()],
    )])
}

#[tokio::test]
async fn groups_nest_and_the_scope_claim_maps_their_paths() {
    with_realm("groups", |live, realm| async move {
        let Live {
            keycloak,
            calls,
            admin,
        } = live;
        keycloak.ensure_realm(&settings(&realm)).await.unwrap();
        let tree: [&[&str]; 3] = [&["global"], &["global", "eu"], &["global", "eu", "france"]];

        for segments in tree {
            let change = keycloak
                .ensure_group(
                    GroupHome::Realm(&realm),
                    &path(segments),
                    &scope_path(segments),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(change, Change::Created, "{segments:?}");
        }
        let written = writes(&calls);
        for segments in tree {
            let change = keycloak
                .ensure_group(
                    GroupHome::Realm(&realm),
                    &path(segments),
                    &scope_path(segments),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(change, Change::Unchanged, "{segments:?}");
        }
        assert_eq!(writes(&calls), written, "unchanged groups cost no writes");
        let france = admin
            .get_ok(&format!("{realm}/group-by-path/global/eu/france"))
            .await;
        assert_eq!(france["path"], json!("/global/eu/france"));
        assert_eq!(
            france["attributes"],
            json!({ "scopePath": ["/global/eu/france"] })
        );

        let orphan = path(&["global", "nowhere", "paris"]);
        let err = keycloak
            .ensure_group(GroupHome::Realm(&realm), &orphan, &BTreeMap::new(), None)
            .await
            .unwrap_err();
        match &err {
            BackendError::Refused { status, body, .. } => {
                assert_eq!(*status, 404);
                assert!(body.contains("/global/nowhere"), "{body}");
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(err.category(), "BackendRefused");
        assert_eq!(writes(&calls), written, "a missing parent writes nothing");

        let mut attributes = scope_path(&["global", "eu", "france"]);
        attributes.insert("region".into(), vec!["eu-west".into()]);
        let france_path = path(&["global", "eu", "france"]);
        assert_eq!(
            keycloak
                .ensure_group(GroupHome::Realm(&realm), &france_path, &attributes, None)
                .await
                .unwrap(),
            Change::Updated
        );
        let france = admin
            .get_ok(&format!("{realm}/group-by-path/global/eu/france"))
            .await;
        assert_eq!(
            france["attributes"],
            json!({ "region": ["eu-west"], "scopePath": ["/global/eu/france"] })
        );

        // France moves from EU to US: the same group, members and all.
        let before = admin
            .get_ok(&format!("{realm}/group-by-path/global/eu/france"))
            .await;
        let user = admin
            .post(
                &format!("{realm}/users"),
                &json!({"username": "member", "enabled": true}),
            )
            .await
            .unwrap();
        let user_id = user.rsplit('/').next().unwrap().to_string();
        admin
            .put(
                &format!(
                    "{realm}/users/{user_id}/groups/{}",
                    before["id"].as_str().unwrap()
                ),
                &json!({}),
            )
            .await;
        keycloak
            .ensure_group(
                GroupHome::Realm(&realm),
                &path(&["global", "us"]),
                &scope_path(&["global", "us"]),
                None,
            )
            .await
            .unwrap();
        let moved_path = path(&["global", "us", "france"]);
        assert_eq!(
            keycloak
                .ensure_group(
                    GroupHome::Realm(&realm),
                    &moved_path,
                    &scope_path(&["global", "us", "france"]),
                    Some(&france_path),
                )
                .await
                .unwrap(),
            Change::Updated
        );
        let after = admin
            .get_ok(&format!("{realm}/group-by-path/global/us/france"))
            .await;
        assert_eq!(after["id"], before["id"], "moved, not created anew");
        assert_eq!(
            after["attributes"],
            json!({ "scopePath": ["/global/us/france"] })
        );
        assert_eq!(
            admin
                .get(&format!("{realm}/group-by-path/global/eu/france"))
                .await
                .0,
            404,
            "nothing is left at the old path"
        );
        let members = admin
            .get_ok(&format!(
                "{realm}/groups/{}/members",
                after["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            members[0]["username"],
            json!("member"),
            "members move along"
        );
        // And back, so the rest of the test finds it where it was.
        keycloak
            .ensure_group(
                GroupHome::Realm(&realm),
                &france_path,
                &attributes,
                Some(&moved_path),
            )
            .await
            .unwrap();

        assert_eq!(
            keycloak
                .delete_group(GroupHome::Realm(&realm), &france_path)
                .await
                .unwrap(),
            Change::Deleted
        );
        assert_eq!(
            keycloak
                .delete_group(GroupHome::Realm(&realm), &france_path)
                .await
                .unwrap(),
            Change::Absent
        );
        let (status, _) = admin
            .get(&format!("{realm}/group-by-path/global/eu/france"))
            .await;
        assert_eq!(status, 404);
        assert_eq!(
            admin
                .get(&format!("{realm}/group-by-path/global/eu"))
                .await
                .0,
            200,
            "the parent stays"
        );

        // The realm was made with the scope claim.
        let written = writes(&calls);
        assert_eq!(
            keycloak.ensure_scope_claim(&realm).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&calls),
            written,
            "an unchanged scope costs no writes"
        );
        // Removed behind the adapter's back, it is made again.
        let made = admin.scope_claim(&realm).await;
        admin
            .delete(&format!(
                "{realm}/client-scopes/{}",
                made["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            keycloak.ensure_scope_claim(&realm).await.unwrap(),
            Change::Created
        );
        assert_eq!(
            keycloak.ensure_scope_claim(&realm).await.unwrap(),
            Change::Unchanged
        );

        let scope = &admin.scope_claim(&realm).await;
        assert_eq!(scope["protocol"], json!("openid-connect"));
        let mappers = scope["protocolMappers"].as_array().unwrap();
        assert_eq!(mappers.len(), 1);
        let mapper = &mappers[0];
        assert_eq!(
            mapper["protocolMapper"],
            json!("oidc-group-membership-mapper")
        );
        assert_eq!(mapper["config"]["claim.name"], json!("scopes"));
        assert_eq!(mapper["config"]["full.path"], json!("true"));
        assert_eq!(mapper["config"]["access.token.claim"], json!("true"));
        let defaults = admin
            .get_ok(&format!("{realm}/default-default-client-scopes"))
            .await;
        assert!(
            defaults
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == scope["id"]),
            "ossature-scopes is a default client scope: {defaults}"
        );

        // A mapper edited behind the adapter's back is put right.
        let mapper_path = format!(
            "{realm}/client-scopes/{}/protocol-mappers/models/{}",
            scope["id"].as_str().unwrap(),
            mapper["id"].as_str().unwrap()
        );
        let mut drifted = mapper.clone();
        drifted["config"]["full.path"] = json!("false");
        admin.put(&mapper_path, &drifted).await;
        assert_eq!(
            keycloak.ensure_scope_claim(&realm).await.unwrap(),
            Change::Updated
        );
        assert_eq!(
            admin.get_ok(&mapper_path).await["config"]["full.path"],
            json!("true")
        );

        assert_eq!(
            keycloak.delete_realm(&realm).await.unwrap(),
            Change::Deleted
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_such() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let calls = Calls::default();
    let keycloak = Keycloak::new("http://127.0.0.1:1", "admin", "secret", calls.clone()).unwrap();
    let err = keycloak
        .ensure_realm(&settings("kc-adapter-unreachable"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Unreachable {
                backend: Backend::Keycloak,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.category(), "BackendUnreachable");
    assert_eq!(calls.count(Backend::Keycloak, Verb::Write), 0);
}

#[tokio::test]
async fn a_wrong_admin_password_is_unauthorized() {
    let live = live().await;
    let keycloak = Keycloak::new(
        &live.admin.url,
        &live.admin.user,
        "not-the-password",
        Calls::default(),
    )
    .unwrap();
    let err = keycloak.delete_realm("kc-adapter-none").await.unwrap_err();
    assert_eq!(err.category(), "BackendUnauthorized", "{err}");
}

#[tokio::test]
async fn organizations_their_clients_and_groups() {
    with_realm("orgs", |live, realm| async move {
        let Live {
            keycloak,
            calls,
            admin,
        } = live;
        let mut shared = settings(&realm);
        shared.organizations = true;
        keycloak.ensure_realm(&shared).await.unwrap();
        assert_eq!(
            admin.get_ok(&realm).await["organizationsEnabled"],
            json!(true)
        );
        assert_eq!(
            keycloak.ensure_organization_claims(&realm).await.unwrap(),
            Change::Updated
        );
        assert_eq!(
            keycloak.ensure_organization_claims(&realm).await.unwrap(),
            Change::Unchanged
        );

        let org = OrganizationSettings {
            alias: "acme".into(),
            description: "Acme".into(),
        };
        let (change, id) = keycloak.ensure_organization(&realm, &org).await.unwrap();
        assert_eq!(change, Change::Created);
        let written = writes(&calls);
        let (change, again) = keycloak.ensure_organization(&realm, &org).await.unwrap();
        assert_eq!((change, &again), (Change::Unchanged, &id));
        assert_eq!(
            writes(&calls),
            written,
            "an unchanged organization costs no writes"
        );
        let renamed = OrganizationSettings {
            description: "Acme Corporation".into(),
            ..org.clone()
        };
        assert_eq!(
            keycloak
                .ensure_organization(&realm, &renamed)
                .await
                .unwrap()
                .0,
            Change::Updated
        );
        assert_eq!(
            admin.get_ok(&format!("{realm}/organizations/{id}")).await["description"],
            json!("Acme Corporation")
        );

        let client = ClientSettings {
            client_id: "acme".into(),
            name: "Acme".into(),
            access_token_lifespan_seconds: 600,
            mappers: vec![json!({
                "name": "audience", "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": "acme", "access.token.claim": "true"},
            })],
            default_scopes: vec!["organization".into()],
            redirect_uris: vec!["http://127.0.0.1/*".into()],
        };
        assert_eq!(
            keycloak.ensure_client(&realm, &client).await.unwrap(),
            Change::Created
        );
        let written = writes(&calls);
        assert_eq!(
            keycloak.ensure_client(&realm, &client).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&calls),
            written,
            "an unchanged client costs no writes"
        );
        let longer = ClientSettings {
            access_token_lifespan_seconds: 900,
            ..client.clone()
        };
        assert_eq!(
            keycloak.ensure_client(&realm, &longer).await.unwrap(),
            Change::Updated
        );
        let clients = admin
            .get_ok(&format!("{realm}/clients?clientId=acme"))
            .await;
        assert_eq!(
            clients[0]["attributes"]["access.token.lifespan"],
            json!("900")
        );
        assert!(
            clients[0]["defaultClientScopes"]
                .as_array()
                .unwrap()
                .contains(&json!("organization"))
        );

        // The organization's own groups, nested and moved like realm groups.
        let home = GroupHome::Organization {
            realm: &realm,
            id: &id,
        };
        for segments in [
            &["global"][..],
            &["global", "eu"],
            &["global", "us"],
            &["global", "eu", "france"],
        ] {
            assert_eq!(
                keycloak
                    .ensure_group(home, &path(segments), &scope_path(segments), None)
                    .await
                    .unwrap(),
                Change::Created
            );
        }
        let before = admin
            .get_ok(&format!(
                "{realm}/organizations/{id}/groups/group-by-path/global/eu/france"
            ))
            .await;
        // A new child group keeps its attributes (read from the group itself).
        let france = admin
            .get_ok(&format!(
                "{realm}/organizations/{id}/groups/{}",
                before["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            france["attributes"],
            json!({"scopePath": ["/global/eu/france"]})
        );
        assert_eq!(
            keycloak
                .ensure_group(
                    home,
                    &path(&["global", "us", "france"]),
                    &scope_path(&["global", "us", "france"]),
                    Some(&path(&["global", "eu", "france"])),
                )
                .await
                .unwrap(),
            Change::Updated
        );
        let after = admin
            .get_ok(&format!(
                "{realm}/organizations/{id}/groups/group-by-path/global/us/france"
            ))
            .await;
        assert_eq!(after["id"], before["id"]);
        // A lookup by path is brief: the group itself carries the attributes.
        let group = admin
            .get_ok(&format!(
                "{realm}/organizations/{id}/groups/{}",
                after["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(
            group["attributes"],
            json!({"scopePath": ["/global/us/france"]})
        );
        let written = writes(&calls);
        assert_eq!(
            keycloak
                .ensure_group(
                    home,
                    &path(&["global", "us", "france"]),
                    &scope_path(&["global", "us", "france"]),
                    None,
                )
                .await
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&calls),
            written,
            "an unchanged group costs no writes"
        );
        assert_eq!(
            keycloak
                .delete_group(home, &path(&["global", "us", "france"]))
                .await
                .unwrap(),
            Change::Deleted
        );

        assert_eq!(
            keycloak.delete_client(&realm, "acme").await.unwrap(),
            Change::Deleted
        );
        assert_eq!(
            keycloak.delete_client(&realm, "acme").await.unwrap(),
            Change::Absent
        );
        assert_eq!(
            keycloak.delete_organization(&realm, "acme").await.unwrap(),
            Change::Deleted
        );
        assert_eq!(
            keycloak.delete_organization(&realm, "acme").await.unwrap(),
            Change::Absent
        );
        assert!(
            keycloak
                .organization(&realm, "acme")
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

/// The client a tenant of its own realm gets (as `desired` makes it).
fn tenant_client(tenant: &str) -> ClientSettings {
    ClientSettings {
        client_id: tenant.into(),
        name: "Tenant".into(),
        access_token_lifespan_seconds: 300,
        mappers: vec![
            json!({
                "name": "audience", "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {"included.client.audience": tenant, "access.token.claim": "true"},
            }),
            json!({
                "name": "tenant", "protocol": "openid-connect",
                "protocolMapper": "oidc-hardcoded-claim-mapper",
                "config": {"claim.name": "tenant", "claim.value": tenant, "jsonType.label": "String",
                    "access.token.claim": "true"},
            }),
        ],
        default_scopes: [
            "basic",
            "profile",
            "email",
            "roles",
            "web-origins",
            "acr",
            "ossature-scopes",
        ]
        .map(String::from)
        .to_vec(),
        redirect_uris: vec!["http://127.0.0.1/*".into()],
    }
}

/// Names, sorted, of what an admin list answers.
fn names(list: &Value, key: &str) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_fresh_dedicated_realm_is_one_write_and_then_unchanged() {
    with_realm("fresh", |live, realm| async move {
        let (keycloak, calls, admin) = (&live.keycloak, &live.calls, &live.admin);
        let (desired, client) = (settings(&realm), tenant_client("acme"));
        let reads = || calls.count(Backend::Keycloak, Verb::Read);

        assert_eq!(
            keycloak
                .create_realm(&desired, Some(&client))
                .await
                .unwrap(),
            Some(Change::Created)
        );
        assert_eq!(
            writes(calls),
            1,
            "realm, keys, TOTP, scope claim and client"
        );
        assert_eq!(reads(), 1, "the admin token only");

        // What the next reconcile does finds everything in place.
        let (written, read) = (writes(calls), reads());
        assert_eq!(
            keycloak.ensure_realm(&desired).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            keycloak.ensure_scope_claim(&realm).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            keycloak.ensure_client(&realm, &client).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(calls), written, "nothing to write");
        // Realm, keys, TOTP; client scopes, default scopes; client.
        assert_eq!(reads(), read + 6);
        assert_eq!(
            keycloak
                .create_realm(&desired, Some(&client))
                .await
                .unwrap(),
            None,
            "it exists"
        );

        let created = admin
            .get_ok(&format!("{realm}/clients?clientId=acme"))
            .await;
        let scopes = &created[0]["defaultClientScopes"];
        for scope in ["basic", "ossature-scopes"] {
            assert!(
                scopes.as_array().unwrap().contains(&json!(scope)),
                "{scopes}"
            );
        }

        // Besides what Ossature sets, the realm is as Keycloak makes one.
        let plain = format!("{realm}-plain");
        admin
            .post("", &json!({ "realm": plain, "enabled": true }))
            .await;
        let mut compared = Vec::new();
        for list in [
            "authentication/required-actions",
            "components?type=org.keycloak.keys.KeyProvider",
            "client-scopes",
            "default-default-client-scopes",
            "default-optional-client-scopes",
        ] {
            let ours = admin.get_ok(&format!("{realm}/{list}")).await;
            let theirs = admin.get_ok(&format!("{plain}/{list}")).await;
            compared.push((list, ours, theirs));
        }
        admin.delete_realm(&plain).await;
        for (list, ours, theirs) in compared {
            let (key, added) = match list {
                "authentication/required-actions" => ("alias", None),
                "components?type=org.keycloak.keys.KeyProvider" => {
                    ("name", Some("eddsa-generated"))
                }
                "default-optional-client-scopes" => ("name", None),
                _ => ("name", Some("ossature-scopes")),
            };
            let mut expected = names(&theirs, key);
            expected.extend(added.map(String::from));
            expected.sort();
            assert_eq!(names(&ours, key), expected, "{list}");
            if key == "alias" {
                for (ours, theirs) in ours
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(theirs.as_array().unwrap())
                {
                    assert_eq!(ours["enabled"], theirs["enabled"], "{ours}");
                    assert_eq!(ours["priority"], theirs["priority"], "{ours}");
                    let default = ours["alias"] == json!("CONFIGURE_TOTP");
                    assert_eq!(ours["defaultAction"], json!(default), "{ours}");
                }
            }
        }
    })
    .await;
}
