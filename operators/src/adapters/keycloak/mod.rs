//! Keycloak adapter: realms, organizations, clients, nested groups,
//! identity providers and the group-path token claim, through the typed
//! admin client of the `keycloak` crate. Every method reads first and writes
//! only the fields that differ, so an unchanged object costs no writes; every
//! call is counted.
//!
//! One module per resource family, each adding methods to [`Keycloak`];
//! this one holds the client, its admin token, the counted call and the
//! helpers they share.

mod claims;
mod clients;
mod groups;
mod identity_providers;
mod organizations;
mod realms;
mod service_clients;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use keycloak::{
    DefaultResponse, KeycloakAdmin, KeycloakAdminToken, KeycloakError, KeycloakTokenSupplier,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use super::http::absent_as_none;
use super::{Backend, BackendError, Calls, Change, Verb};
pub use claims::{MAPPER_NAME, mapper_patch};
pub use clients::client_patch;
pub use groups::group_attributes_equal;
pub use ossature_model::identity::{
    ClientSettings, GroupHome, IdentityProviderSettings, MANAGED_CONFIG, ORGANIZATION_SCOPE,
    OrganizationSettings, RealmSettings, SCOPE_CLAIM, SCOPE_NAME,
};
pub use realms::{LOGIN_EVENTS, has_active_eddsa_key, realm_patch, totp_patch};
pub use service_clients::LiveServiceClient;

const PROTOCOL: &str = "openid-connect";
/// Refresh the admin token this long before it expires, so a call never
/// races its expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Client for one Keycloak server, authenticated as a master-realm admin.
pub struct Keycloak {
    admin: KeycloakAdmin<AdminToken>,
    base: Url,
    http: reqwest::Client,
    calls: Calls,
}

/// The master-realm admin token, cached and fetched again shortly before
/// it expires; the crate asks for it on every call.
struct AdminToken {
    http: reqwest::Client,
    user: String,
    password: String,
    calls: Calls,
    cached: Mutex<Option<Token>>,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

#[async_trait::async_trait]
impl KeycloakTokenSupplier for AdminToken {
    async fn get(&self, url: &str) -> Result<String, KeycloakError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let fetched_at = Instant::now();
        let acquire = KeycloakAdminToken::acquire(url, &self.user, &self.password, &self.http);
        let issued = self
            .calls
            .timed(Backend::Keycloak, Verb::Read, acquire)
            .await
            .map_err(token_refused)?;
        let lifetime = Duration::from_secs(issued.expires_in() as u64);
        let value = issued.access_token().to_owned();
        *cached = Some(Token {
            value: value.clone(),
            refresh_at: fetched_at + lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2)),
        });
        Ok(value)
    }
}

/// Wrong admin credentials are 401 from older releases, 400 invalid_grant
/// from newer ones: either way, unauthorized.
fn token_refused(error: KeycloakError) -> KeycloakError {
    match error {
        KeycloakError::HttpFailure { status, body, text } => KeycloakError::HttpFailure {
            status: if text.contains("invalid_grant") {
                StatusCode::UNAUTHORIZED.as_u16()
            } else {
                status
            },
            body,
            text: format!("issuing an admin token: {text}"),
        },
        other => other,
    }
}

impl Keycloak {
    pub fn new(
        base_url: &str,
        admin_user: &str,
        admin_password: &str,
        calls: Calls,
    ) -> Result<Self, BackendError> {
        let base = Backend::Keycloak.base_url(base_url, "parse the base URL")?;
        let http = Backend::Keycloak.client(reqwest::Client::builder())?;
        let token = AdminToken {
            http: http.clone(),
            user: admin_user.into(),
            password: admin_password.into(),
            calls: calls.clone(),
            cached: Mutex::new(None),
        };
        // The crate appends "/admin/..." to the URL as text.
        let admin = KeycloakAdmin::new(base.as_str().trim_end_matches('/'), token, http.clone());
        Ok(Self {
            admin,
            base,
            http,
            calls,
        })
    }

    /// Whether Keycloak answers: the master realm's public page, no token.
    pub async fn probe(&self) -> Result<(), BackendError> {
        let url = self
            .base
            .join("realms/master")
            .map_err(|e| Backend::Keycloak.unreadable("build the probe URL", e.to_string()))?;
        super::http::answers(Backend::Keycloak, self.http.get(url)).await
    }

    /// A counted read that treats 404 as absence.
    fn read<'a, T: 'a>(
        &'a self,
        action: &'a str,
        call: impl Future<Output = Result<T, KeycloakError>> + Send + 'a,
    ) -> impl Future<Output = Result<Option<T>, BackendError>> + 'a {
        let read = self.counted(Verb::Read, action, call);
        async move { absent_as_none(read.await) }
    }

    /// A counted write that must succeed.
    fn write<'a, T: 'a>(
        &'a self,
        action: &'a str,
        call: impl Future<Output = Result<T, KeycloakError>> + Send + 'a,
    ) -> impl Future<Output = Result<T, BackendError>> + 'a {
        self.counted(Verb::Write, action, call)
    }

    /// `call`, counted, boxed before anything awaits it: the generated
    /// client's futures carry whole representations (a realm's is tens of
    /// KiB), and unboxed every level above would hold them again.
    fn counted<'a, T: 'a>(
        &'a self,
        verb: Verb,
        action: &'a str,
        call: impl Future<Output = Result<T, KeycloakError>> + Send + 'a,
    ) -> impl Future<Output = Result<T, BackendError>> + 'a {
        let call = Box::pin(call);
        self.calls
            .counted(Backend::Keycloak, verb, action, call, backend_error)
    }

    /// A create: `None` when the object exists already (409).
    async fn create(
        &self,
        action: &str,
        call: impl Future<Output = Result<DefaultResponse, KeycloakError>> + Send,
    ) -> Result<Option<DefaultResponse>, BackendError> {
        match self.write(action, call).await {
            Ok(created) => Ok(Some(created)),
            Err(BackendError::Refused { status: 409, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A delete: `Absent` when there was nothing to delete (404).
    async fn delete(
        &self,
        action: &str,
        call: impl Future<Output = Result<DefaultResponse, KeycloakError>> + Send,
    ) -> Result<Change, BackendError> {
        Ok(match absent_as_none(self.write(action, call).await)? {
            Some(_) => Change::Deleted,
            None => Change::Absent,
        })
    }
}

/// Owned string pairs, for configs and attributes.
fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Whether `current` holds every wanted key with the wanted value.
fn has_config<'a>(
    current: Option<&HashMap<String, String>>,
    wanted: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> bool {
    wanted
        .into_iter()
        .all(|(k, v)| current.and_then(|c| c.get(k)) == Some(v))
}

/// Created by someone else between our read and our create: the next
/// reconcile finds it.
fn raced(action: &str) -> BackendError {
    BackendError::Refused {
        backend: Backend::Keycloak,
        action: action.into(),
        status: StatusCode::CONFLICT.as_u16(),
        body: "it appeared after it was looked up; it is read again on retry".into(),
    }
}

/// Desired mappers, given as JSON by the caller, as the crate's type.
fn typed<T: DeserializeOwned>(values: &[Value], action: &str) -> Result<Vec<T>, BackendError> {
    values
        .iter()
        .map(|v| {
            serde_json::from_value(v.clone())
                .map_err(|e| Backend::Keycloak.unreadable(action, e.to_string()))
        })
        .collect()
}

fn changed(wrote: bool) -> Change {
    if wrote {
        Change::Updated
    } else {
        Change::Unchanged
    }
}

/// The id Keycloak gave a new object, from its Location header.
fn new_id(created: &DefaultResponse, action: &str) -> Result<String, BackendError> {
    created
        .to_id()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Backend::Keycloak.unreadable(action, "no Location header with the new id"))
}

fn id_of<'a>(id: &'a Option<String>, action: &str) -> Result<&'a str, BackendError> {
    id.as_deref()
        .ok_or_else(|| Backend::Keycloak.unreadable(action, "no \"id\" field"))
}

/// What a lookup found; a realm that is gone took it along.
fn gone_with_realm<T>(found: Result<Option<T>, BackendError>) -> Result<Option<T>, BackendError> {
    absent_as_none(found).map(Option::flatten)
}

/// The crate's error as ours: the status (404 absent, 409 conflict, 5xx
/// failing) and a short body.
fn backend_error(action: &str, error: KeycloakError) -> BackendError {
    match error {
        KeycloakError::ReqwestFailure(e) if e.is_decode() => {
            Backend::Keycloak.unreadable(action, e.to_string())
        }
        KeycloakError::ReqwestFailure(source) => Backend::Keycloak.unreachable(source),
        KeycloakError::HttpFailure { status, text, .. } => {
            Backend::Keycloak.refused(action, status, &text)
        }
    }
}

fn not_found(action: &str, body: &str) -> BackendError {
    BackendError::Refused {
        backend: Backend::Keycloak,
        action: action.into(),
        status: StatusCode::NOT_FOUND.as_u16(),
        body: body.into(),
    }
}

fn realm_missing(action: &str, realm: &str) -> BackendError {
    not_found(action, &format!("realm {realm} does not exist"))
}

/// What the family modules' tests share.
#[cfg(test)]
mod fixtures {
    use super::*;

    /// A representation written as Keycloak's JSON.
    pub(super) fn from<T: DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    pub(super) fn settings() -> RealmSettings {
        RealmSettings {
            organizations: false,
            name: "acme".into(),
            display_name: "Acme".into(),
            registration_allowed: false,
            verify_email: true,
            mfa_required: true,
            password_policy: "length(12) and digits(1)".into(),
            access_token_lifespan_seconds: 300,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::http::BODY_LIMIT;
    use keycloak::types::ProtocolMapperRepresentation;
    use serde_json::json;

    #[test]
    fn desired_mappers_are_checked_when_typed() {
        let good = vec![json!({ "name": "a", "protocolMapper": "m", "config": { "k": "v" } })];
        let mappers: Vec<ProtocolMapperRepresentation> = typed(&good, "x").unwrap();
        assert_eq!(mappers[0].config.as_ref().unwrap()["k"], "v");
        let bad = vec![json!({ "name": "a", "config": { "k": true } })];
        let err = typed::<ProtocolMapperRepresentation>(&bad, "x").unwrap_err();
        assert_eq!(err.category(), "BackendUnreadable");
    }

    #[test]
    fn http_failures_keep_their_status_and_a_short_body() {
        let failure = |status| KeycloakError::HttpFailure {
            status,
            body: None,
            text: "x".repeat(BODY_LIMIT * 2),
        };
        let err = backend_error("read realm acme", failure(404));
        assert!(absent_as_none::<()>(Err(err)).unwrap().is_none());
        match backend_error("create realm acme", failure(409)) {
            BackendError::Refused {
                status,
                body,
                action,
                ..
            } => {
                assert_eq!((status, action.as_str()), (409, "create realm acme"));
                assert_eq!(body.chars().count(), BODY_LIMIT + 1);
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(
            backend_error("x", failure(503)).category(),
            "BackendFailing"
        );
        let wrong_password = token_refused(KeycloakError::HttpFailure {
            status: 400,
            body: None,
            text: r#"{"error":"invalid_grant"}"#.into(),
        });
        assert_eq!(
            backend_error("x", wrong_password).category(),
            "BackendUnauthorized"
        );
    }

    #[test]
    fn helpers() {
        assert!(
            gone_with_realm::<()>(Err(not_found("x", "realm r does not exist")))
                .unwrap()
                .is_none()
        );
        assert!(gone_with_realm::<()>(Err(raced("x"))).is_err());
    }
}
