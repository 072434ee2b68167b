//! Realm lifecycle through Keycloak's real admin REST API.

use anyhow::{Context, Result, bail};
use ossature_e2e::{Keycloak, Stack, expect_success, http_client, unique, with_cleanup};
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
}

async fn admin_token(http: &Client, kc: &Keycloak) -> Result<String> {
    let response = http
        .post(format!(
            "{}/realms/master/protocol/openid-connect/token",
            kc.url
        ))
        .form(&[
            ("client_id", "admin-cli"),
            ("grant_type", "password"),
            ("username", kc.admin_user.as_str()),
            ("password", kc.admin_password.as_str()),
        ])
        .send()
        .await?;
    let token: TokenResponse = expect_success(response, "admin token")
        .await?
        .json()
        .await?;
    Ok(token.access_token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realm_create_read_delete() -> Result<()> {
    let stack = Stack::get().await?;
    let kc = &stack.keycloak;
    let http = http_client()?;
    let token = admin_token(&http, kc).await?;
    let realm = unique("e2e");
    let realm_url = format!("{}/admin/realms/{realm}", kc.url);

    let response = http
        .post(format!("{}/admin/realms", kc.url))
        .bearer_auth(&token)
        .json(&json!({
            "realm": realm,
            "enabled": true,
            "displayName": "Ossature e2e",
            "accessTokenLifespan": 421,
        }))
        .send()
        .await?;
    let status = response.status();
    expect_success(response, "create realm").await?;
    assert_eq!(status, StatusCode::CREATED);

    let body = read_back(&http, &token, &realm_url, &realm).await;
    let cleanup = delete(&http, &token, &realm_url).await;
    with_cleanup(body, cleanup)
}

async fn read_back(http: &Client, token: &str, realm_url: &str, realm: &str) -> Result<()> {
    let response = http.get(realm_url).bearer_auth(token).send().await?;
    let got: Value = expect_success(response, "read realm").await?.json().await?;
    assert_eq!(got["realm"], realm, "{got}");
    assert_eq!(got["enabled"], true, "{got}");
    assert_eq!(got["displayName"], "Ossature e2e", "{got}");
    assert_eq!(got["accessTokenLifespan"], 421, "{got}");
    // The server assigns the id; its presence shows this came from storage.
    let id = got["id"].as_str().context("realm has no id")?;
    assert!(!id.is_empty());
    Ok(())
}

async fn delete(http: &Client, token: &str, realm_url: &str) -> Result<()> {
    let response = http.delete(realm_url).bearer_auth(token).send().await?;
    let status = response.status();
    expect_success(response, "delete realm").await?;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let status = http
        .get(realm_url)
        .bearer_auth(token)
        .send()
        .await?
        .status();
    if status != StatusCode::NOT_FOUND {
        bail!("deleted realm still answers {status}");
    }
    Ok(())
}
