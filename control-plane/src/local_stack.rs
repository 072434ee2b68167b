//! `--local-stack`: the embedded local stack brought up, the apiserver and
//! Keycloak taken from it, and a realm of platform operators made in its
//! Keycloak so that a developer can get a token. Behind the `local-stack`
//! feature (on by default); an image for a cluster is built without it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::cli::Args;

/// The local platform operators' realm, client and the file of its secret.
pub const OPERATORS_REALM: &str = "ossature-platform";
pub const OPERATORS_CLIENT: &str = "ossature-cli";
const SECRET_FILE: &str = "control-plane-cli.secret";

/// Brings the stack up and fills what the flags leave out from it; the
/// client of its apiserver.
pub async fn bring_up(args: &mut Args) -> Result<Client> {
    let env = ossature_bootstrap::ensure_up()
        .await
        .context("bringing up the local stack")?;
    if args.keycloak_url.is_none() {
        args.keycloak_url = env.get("OSSATURE_KEYCLOAK_URL").cloned();
    }
    if args.operators_realm.is_none() {
        let secret = operators_realm(&env, &args.operators_group, &args.operators_audience)
            .await
            .context("making the local platform operators' realm in Keycloak")?;
        args.operators_realm = Some(OPERATORS_REALM.into());
        tracing::info!(
            realm = OPERATORS_REALM,
            client = OPERATORS_CLIENT,
            secret_file = %secret.display(),
            "platform operators' tokens: curl -d grant_type=client_credentials -d client_id={OPERATORS_CLIENT} --data-urlencode client_secret@{} {}/realms/{OPERATORS_REALM}/protocol/openid-connect/token",
            secret.display(),
            env["OSSATURE_KEYCLOAK_URL"],
        );
    }
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"])?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    tracing::info!(kubeconfig = %env["KUBECONFIG"], "local stack is up");
    Ok(Client::try_from(config)?)
}

/// The realm of the local platform operators: a group, and a client for
/// client credentials whose service account is in it, signing with EdDSA.
/// Made once; its secret kept in the stack's secrets directory. The path
/// of the secret's file.
async fn operators_realm(
    env: &BTreeMap<String, String>,
    group: &str,
    audience: &str,
) -> Result<PathBuf> {
    let keycloak = env["OSSATURE_KEYCLOAK_URL"].trim_end_matches('/');
    let path = ossature_bootstrap::Layout::from_env()?.secret(SECRET_FILE);
    let secret = match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => secret.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 24];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| anyhow::anyhow!("no randomness for the client secret"))?;
            let secret = ossature_model::names::hex(&bytes);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private(&path, &secret)?;
            secret
        }
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .tls_certs_only([])
        .build()?;
    let login: Value = http
        .post(format!(
            "{keycloak}/realms/master/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", env["OSSATURE_KEYCLOAK_ADMIN_USER"].as_str()),
            ("password", env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"].as_str()),
        ])
        .send()
        .await?
        .json()
        .await?;
    let admin = login["access_token"]
        .as_str()
        .context("Keycloak gave no admin token")?;
    let exists = http
        .get(format!("{keycloak}/admin/realms/{OPERATORS_REALM}"))
        .bearer_auth(admin)
        .send()
        .await?
        .status()
        .is_success();
    if exists {
        // The secret on file is the one that holds, even if the file was
        // made again.
        let clients: Value = http
            .get(format!("{keycloak}/admin/realms/{OPERATORS_REALM}/clients"))
            .query(&[("clientId", OPERATORS_CLIENT)])
            .bearer_auth(admin)
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = clients[0]["id"].as_str() {
            http.put(format!(
                "{keycloak}/admin/realms/{OPERATORS_REALM}/clients/{id}"
            ))
            .bearer_auth(admin)
            .json(&json!({"clientId": OPERATORS_CLIENT, "secret": secret}))
            .send()
            .await?
            .error_for_status()?;
        }
        return Ok(path);
    }
    let realm =
        operators_realm_representation(OPERATORS_REALM, OPERATORS_CLIENT, &secret, group, audience);
    let created = http
        .post(format!("{keycloak}/admin/realms"))
        .bearer_auth(admin)
        .json(&realm)
        .send()
        .await?;
    if !created.status().is_success() && created.status() != reqwest::StatusCode::CONFLICT {
        bail!("Keycloak refused the realm: {}", created.status());
    }
    Ok(path)
}

/// A realm of platform operators as Keycloak imports it: `group`, and a
/// client `client` for client credentials whose service account is in the
/// group and whose tokens (EdDSA) name `audience` and carry `groups`.
pub fn operators_realm_representation(
    realm: &str,
    client: &str,
    secret: &str,
    group: &str,
    audience: &str,
) -> Value {
    json!({
        "realm": realm, "enabled": true,
        "displayName": "Ossature platform operators",
        "defaultSignatureAlgorithm": "EdDSA",
        "accessTokenLifespan": 900,
        "groups": [{"name": group}],
        "clients": [{
            "clientId": client, "enabled": true, "publicClient": false,
            "secret": secret, "serviceAccountsEnabled": true,
            "standardFlowEnabled": false, "directAccessGrantsEnabled": false,
            "protocolMappers": [
                {"name": "audience", "protocol": "openid-connect",
                 "protocolMapper": "oidc-audience-mapper",
                 "config": {"included.custom.audience": audience, "access.token.claim": "true"}},
                {"name": "groups", "protocol": "openid-connect",
                 "protocolMapper": "oidc-group-membership-mapper",
                 "config": {"claim.name": "groups", "full.path": "false", "access.token.claim": "true"}},
            ],
        }],
        "users": [{
            "username": format!("service-account-{client}"), "enabled": true,
            "serviceAccountClientId": client, "groups": [format!("/{group}")],
        }],
        "components": {"org.keycloak.keys.KeyProvider": [{
            "name": "eddsa-generated", "providerId": "eddsa-generated",
            "config": {"priority": ["200"], "eddsaEllipticCurveKey": ["Ed25519"]},
        }]},
    })
}

fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
