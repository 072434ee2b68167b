//! The HTTP client instant-acme speaks through: reqwest, so the directory's
//! trust bundle can hold several certificates, every request has a timeout
//! and is counted, and the `Retry-After` of a rate-limited answer (which
//! instant-acme's problem type drops) is kept for the error.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use crate::adapters::{Backend, CALL_TIMEOUT, Calls, Verb};

#[derive(Clone)]
pub(super) struct AcmeHttp {
    client: reqwest::Client,
    calls: Calls,
    /// Until when the CA last said to wait after refusing for a rate limit.
    rate_limited_until: Arc<Mutex<Option<SystemTime>>>,
}

impl AcmeHttp {
    /// `trust_pem`: the certificates trusted for the directory's HTTPS;
    /// `None` trusts the platform's roots.
    pub(super) fn new(trust_pem: Option<&str>, calls: Calls) -> Result<Self, String> {
        let client = client(trust_pem)?;
        Ok(Self {
            client,
            calls,
            rate_limited_until: Arc::default(),
        })
    }

    /// The last `Retry-After` of a rate-limited answer, consumed. Shared by
    /// the adapter's concurrent calls, so it may belong to a sibling request
    /// refused at about the same time: close enough for scheduling a retry.
    pub(super) fn take_retry_after(&self) -> Option<SystemTime> {
        self.rate_limited_until
            .lock()
            .expect("lock is never poisoned")
            .take()
    }
}

/// A client of a directory trusting `trust_pem` (the platform's roots when
/// `None`), every request ending within `CALL_TIMEOUT`.
pub fn client(trust_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(CALL_TIMEOUT);
    if let Some(pem) = trust_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("the directory's trust bundle is not PEM: {e}"))?;
        if roots.is_empty() {
            return Err("the directory's trust bundle holds no certificate".into());
        }
        builder = builder.tls_certs_only(roots);
    }
    builder
        .build()
        .map_err(|e| format!("building the ACME HTTP client: {e}"))
}

/// ACME reads are POST-as-GET: a JWS whose payload is empty.
fn verb(method: &http::Method, body: &[u8]) -> Verb {
    if method != http::Method::POST {
        return Verb::Read;
    }
    let payload = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|jws| jws["payload"].as_str().map(str::is_empty));
    match payload {
        Some(true) => Verb::Read,
        _ => Verb::Write,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<SystemTime> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(SystemTime::now() + Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Other(Box::new(e))
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let verb = verb(&parts.method, &body);
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(other)?;
            let response = this
                .calls
                .timed(Backend::Acme, verb, this.client.execute(request))
                .await
                .map_err(other)?;
            if response.status() == StatusCode::TOO_MANY_REQUESTS
                && let Some(until) = retry_after(response.headers())
            {
                *this
                    .rate_limited_until
                    .lock()
                    .expect("lock is never poisoned") = Some(until);
            }
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(
                response,
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_as_get_is_a_read() {
        let post = http::Method::POST;
        assert_eq!(
            verb(
                &post,
                br#"{"protected":"e30","payload":"","signature":"x"}"#
            ),
            Verb::Read
        );
        assert_eq!(
            verb(
                &post,
                br#"{"protected":"e30","payload":"e30","signature":"x"}"#
            ),
            Verb::Write
        );
        assert_eq!(verb(&http::Method::HEAD, b""), Verb::Read);
        assert_eq!(verb(&http::Method::GET, b""), Verb::Read);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(RETRY_AFTER, "120".parse().unwrap());
        let until = retry_after(&headers).unwrap();
        let wait = until.duration_since(SystemTime::now()).unwrap();
        assert!(wait > Duration::from_secs(110) && wait <= Duration::from_secs(120));
        headers.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 2044 08:49:37 GMT".parse().unwrap(),
        );
        let until = retry_after(&headers).unwrap();
        assert_eq!(
            until
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            2_362_034_977
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
