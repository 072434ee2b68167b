//! Pulsar tokens: JWTs signed by an OpenBao transit key, so the signing key
//! never leaves OpenBao and the broker, holding only its public half, takes
//! a new role's token without a restart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ossature_model::services::{TokenClaims, token_from_signature, token_signing_input};
use rustify::enums::RequestMethod;
use serde_json::json;

use super::{OpenBao, Raw, Verb};
use crate::adapters::{Backend, BackendError};

/// The transit key that signs Pulsar tokens: `<mount>/keys/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey {
    pub mount: String,
    pub name: String,
}

impl Default for TokenKey {
    /// The local stack's.
    fn default() -> Self {
        TokenKey {
            mount: "pulsar-tokens".into(),
            name: "pulsar".into(),
        }
    }
}

impl OpenBao {
    /// A token for `claims.sub`, signed (ES256, JWS form) with `key`.
    pub async fn sign_token(
        &self,
        key: &TokenKey,
        claims: &TokenClaims,
    ) -> Result<String, BackendError> {
        let action = format!("sign a Pulsar token for {}", claims.sub);
        let input = token_signing_input(claims);
        let sign = Raw::new(
            RequestMethod::POST,
            format!("{}/sign/{}", key.mount, key.name),
            json!({
                "input": STANDARD.encode(&input),
                "hash_algorithm": "sha2-256",
                "marshaling_algorithm": "jws",
            }),
        );
        let signed = self.raw(Verb::Write, &action, sign).await?;
        signed["signature"]
            .as_str()
            .and_then(|signature| token_from_signature(&input, signature))
            .ok_or_else(|| Backend::OpenBao.unreadable(&action, "the answer has no JWS signature"))
    }
}
