//! Challenge responders: whatever makes a challenge's answer visible to the
//! CA (a path on the host for HTTP-01, a TXT record for DNS-01), and takes it
//! away after validation. challtestsrv implements it for the local stack; a
//! DNS provider's API or the edge would implement it elsewhere.

use async_trait::async_trait;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AcmeError;
use crate::adapters::CALL_TIMEOUT;

/// Which challenge an issuer answers. DNS-01 is the only one for wildcards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeKind {
    #[default]
    Http01,
    Dns01,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
        }
    }
}

/// One answer to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeResponse {
    pub kind: ChallengeKind,
    /// The name validated, without a wildcard's `*.`.
    pub name: String,
    pub token: String,
    /// HTTP-01: the key authorization, served at
    /// `/.well-known/acme-challenge/<token>`; DNS-01: the base64url SHA-256
    /// digest of it, as a TXT record at [`Self::dns_record`].
    pub value: String,
}

impl ChallengeResponse {
    /// The TXT record name of a DNS-01 answer, fully qualified.
    pub fn dns_record(&self) -> String {
        format!("_acme-challenge.{}.", self.name)
    }
}

#[async_trait]
pub trait Responder: Send + Sync {
    /// Makes the answer visible; publishing the same answer again is harmless.
    async fn publish(&self, response: &ChallengeResponse) -> Result<(), AcmeError>;
    /// Takes it away; nothing to take away is success.
    async fn unpublish(&self, response: &ChallengeResponse) -> Result<(), AcmeError>;
}

/// pebble-challtestsrv's management API. DNS-01: `clear-txt` drops every TXT
/// value of the record, so a wildcard and its base name (same record, two
/// values) are unpublished together, which is fine once both are validated.
#[derive(Debug, Clone)]
pub struct ChallTestSrv {
    http: reqwest::Client,
    admin: Url,
}

impl ChallTestSrv {
    pub fn new(admin_url: &str) -> Result<Self, AcmeError> {
        let admin = Url::parse(admin_url).map_err(|e| {
            AcmeError::Invalid(format!(
                "challenge responder address {admin_url:?} is no URL: {e}"
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| AcmeError::Responder(format!("building its HTTP client: {e}")))?;
        Ok(Self { http, admin })
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> Result<(), AcmeError> {
        let failed =
            |detail: String| AcmeError::Responder(format!("challtestsrv {path}: {detail}"));
        let url = self.admin.join(path).map_err(|e| failed(e.to_string()))?;
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(failed(format!("HTTP {status}: {text}")))
    }
}

#[async_trait]
impl Responder for ChallTestSrv {
    async fn publish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        match response.kind {
            ChallengeKind::Http01 => {
                self.call(
                    "add-http01",
                    json!({"token": response.token, "content": response.value}),
                )
                .await
            }
            ChallengeKind::Dns01 => {
                self.call(
                    "set-txt",
                    json!({"host": response.dns_record(), "value": response.value}),
                )
                .await
            }
        }
    }

    async fn unpublish(&self, response: &ChallengeResponse) -> Result<(), AcmeError> {
        match response.kind {
            ChallengeKind::Http01 => {
                self.call("del-http01", json!({"token": response.token}))
                    .await
            }
            ChallengeKind::Dns01 => {
                self.call("clear-txt", json!({"host": response.dns_record()}))
                    .await
            }
        }
    }
}
