//! Pulsar with authentication and authorization on. A token is a JWT whose
//! `sub` is the role; it is signed by an OpenBao transit key that never
//! leaves OpenBao, and the broker reads only the key's public half. The
//! stack mints two superuser tokens: the broker's own (for its internal
//! clients) and the admin token the operator and tests use.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::Method;
use serde_json::{Value, json};

use crate::files::write_private;
use crate::health::{Probes, openbao_keys};
use crate::layout::Layout;

/// The transit mount and key that sign every Pulsar token.
pub const TOKEN_MOUNT: &str = "pulsar-tokens";
pub const TOKEN_KEY: &str = "pulsar";
/// Superuser roles: the broker's own clients, and the platform's admin.
pub const BROKER_ROLE: &str = "ossature-broker";
pub const ADMIN_ROLE: &str = "ossature-admin";

const PUBLIC_KEY_FILE: &str = "pulsar-token-public.der";
const BROKER_TOKEN_FILE: &str = "pulsar-broker.token";
const ADMIN_TOKEN_FILE: &str = "pulsar-admin.token";
/// The stack's own tokens live long, and `up` mints them again well before
/// they expire; services' tokens (a day) are the operator's.
const STACK_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
const REMINT_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn public_key_file(layout: &Layout) -> PathBuf {
    layout.secret(PUBLIC_KEY_FILE)
}

pub fn broker_token_file(layout: &Layout) -> PathBuf {
    layout.secret(BROKER_TOKEN_FILE)
}

/// The admin token's file, named by `OSSATURE_PULSAR_TOKEN_FILE`.
pub fn admin_token_file(layout: &Layout) -> PathBuf {
    layout.secret(ADMIN_TOKEN_FILE)
}

/// The admin token, for the stack's own probes.
pub fn admin_token(layout: &Layout) -> Result<String> {
    let path = admin_token_file(layout);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("Pulsar's admin token is not in {}", path.display()))?;
    Ok(token.trim().to_string())
}

/// The broker's settings for token authentication, and what fights a
/// registry of topics turned off.
pub fn broker_settings(layout: &Layout) -> Vec<(&'static str, String)> {
    let url = |path: PathBuf| format!("file://{}", path.display());
    vec![
        ("authenticationEnabled", "true".into()),
        ("authorizationEnabled", "true".into()),
        (
            "authenticationProviders",
            "org.apache.pulsar.broker.authentication.AuthenticationProviderToken".into(),
        ),
        ("tokenPublicKey", url(public_key_file(layout))),
        ("tokenPublicAlg", "ES256".into()),
        ("superUserRoles", format!("{BROKER_ROLE},{ADMIN_ROLE}")),
        (
            "brokerClientAuthenticationPlugin",
            "org.apache.pulsar.client.impl.auth.AuthenticationToken".into(),
        ),
        (
            "brokerClientAuthenticationParameters",
            url(broker_token_file(layout)),
        ),
        // Topics exist because an object says so, and keep their schema.
        ("allowAutoTopicCreation", "false".into()),
        ("isAllowAutoUpdateSchemaEnabled", "false".into()),
        ("isSchemaValidationEnforced", "true".into()),
        // Otherwise a topic without subscribers is deleted after a minute.
        ("brokerDeleteInactiveTopicsEnabled", "false".into()),
    ]
}

impl Probes {
    /// The transit key, its public half for the broker, and the stack's two
    /// tokens, minted when missing or close to expiry. Needs OpenBao.
    pub(crate) async fn ensure_pulsar_tokens(&self) -> Result<()> {
        let layout = self.layout();
        let root = openbao_keys(layout)?.root_token;
        let mount = format!("sys/mounts/{TOKEN_MOUNT}");
        if self.openbao_call(&root, Method::GET, &mount, None).await?.0 != 200 {
            let body = json!({"type": "transit", "description": "signs Pulsar tokens"});
            let (status, answer) = self
                .openbao_call(&root, Method::POST, &mount, Some(body))
                .await?;
            if !(200..300).contains(&status) {
                bail!("mounting {TOKEN_MOUNT} answered {status}: {answer}");
            }
        }
        let key = format!("{TOKEN_MOUNT}/keys/{TOKEN_KEY}");
        let (mut status, mut found) = self.openbao_call(&root, Method::GET, &key, None).await?;
        if status == 404 {
            let body = json!({"type": "ecdsa-p256"});
            let (created, answer) = self
                .openbao_call(&root, Method::POST, &key, Some(body))
                .await?;
            if !(200..300).contains(&created) {
                bail!("creating the Pulsar token key answered {created}: {answer}");
            }
            (status, found) = self.openbao_call(&root, Method::GET, &key, None).await?;
        }
        if status != 200 {
            bail!("reading the Pulsar token key answered {status}: {found}");
        }
        let latest = found["data"]["latest_version"].as_u64().unwrap_or(1);
        let pem = found["data"]["keys"][latest.to_string()]["public_key"]
            .as_str()
            .context("the Pulsar token key has no public key")?;
        // The broker reads DER (X.509 SubjectPublicKeyInfo).
        write_private(&public_key_file(layout), &pem_body(pem)?)?;

        for (role, file) in [
            (BROKER_ROLE, broker_token_file(layout)),
            (ADMIN_ROLE, admin_token_file(layout)),
        ] {
            let current = std::fs::read_to_string(&file).ok();
            if current.as_deref().is_some_and(|t| !expiring(t)) {
                continue;
            }
            let token = self.sign_token(&root, role).await?;
            write_private(&file, token.as_bytes())?;
        }
        Ok(())
    }

    async fn sign_token(&self, root: &str, role: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let claims = ossature_model::services::TokenClaims {
            sub: role.to_string(),
            iat: now,
            exp: now + STACK_TOKEN_LIFETIME.as_secs() as i64,
        };
        let input = ossature_model::services::token_signing_input(&claims);
        let body = json!({
            "input": STANDARD.encode(&input),
            "hash_algorithm": "sha2-256",
            "marshaling_algorithm": "jws",
        });
        let path = format!("{TOKEN_MOUNT}/sign/{TOKEN_KEY}");
        let (status, signed) = self
            .openbao_call(root, Method::POST, &path, Some(body))
            .await?;
        signed["data"]["signature"]
            .as_str()
            .and_then(|s| ossature_model::services::token_from_signature(&input, s))
            .with_context(|| format!("signing a Pulsar token answered {status}: {signed}"))
    }
}

/// The bytes of a PEM block.
fn pem_body(pem: &str) -> Result<Vec<u8>> {
    let base64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    Ok(STANDARD.decode(base64.trim())?)
}

/// Whether a token is unreadable or expires within `REMINT_WITHIN`.
fn expiring(token: &str) -> bool {
    let exp = token
        .trim()
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims).ok())
        .and_then(|claims| serde_json::from_slice::<Value>(&claims).ok())
        .and_then(|claims| claims["exp"].as_i64());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    exp.is_none_or(|exp| exp - now < REMINT_WITHIN.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: i64) -> String {
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"x","exp":{exp}}}"#));
        format!("e30.{claims}.c2ln")
    }

    #[test]
    fn a_token_is_minted_again_a_month_before_it_expires() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(!expiring(&token(now + 60 * 24 * 3600)));
        assert!(expiring(&token(now + 29 * 24 * 3600)));
        assert!(expiring("not a token"));
    }

    #[test]
    fn the_public_key_reaches_the_broker_as_der() {
        let pem = "-----BEGIN PUBLIC KEY-----\nAAEC\nAw==\n-----END PUBLIC KEY-----\n";
        assert_eq!(pem_body(pem).unwrap(), vec![0, 1, 2, 3]);
    }
}
