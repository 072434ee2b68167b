//! Errors as `application/problem+json` (RFC 9457): a stable `type` per
//! error, the invocation id, and for bad input one message per field.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every problem type is this plus its slug; the slugs never change.
pub const PROBLEM_BASE: &str = "https://ossature.dev/problems/";
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, one per stable problem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    InvalidInput,
    InvalidInvocationContext,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    UnsupportedMediaType,
    Unauthenticated,
    Forbidden,
    RateLimited,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    TenantNotFound,
    ObjectNotFound,
    Conflict,
    RefusedByApiserver,
    NotRun,
    Unavailable,
    Internal,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 19] = [
        ProblemKind::InvalidInput,
        ProblemKind::InvalidInvocationContext,
        ProblemKind::NotFound,
        ProblemKind::MethodNotAllowed,
        ProblemKind::BodyTooLarge,
        ProblemKind::UnsupportedMediaType,
        ProblemKind::Unauthenticated,
        ProblemKind::Forbidden,
        ProblemKind::RateLimited,
        ProblemKind::IdempotencyKeyRequired,
        ProblemKind::IdempotencyKeyReused,
        ProblemKind::IdempotencyKeyInFlight,
        ProblemKind::TenantNotFound,
        ProblemKind::ObjectNotFound,
        ProblemKind::Conflict,
        ProblemKind::RefusedByApiserver,
        ProblemKind::NotRun,
        ProblemKind::Unavailable,
        ProblemKind::Internal,
    ];

    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "invalid-input",
            ProblemKind::InvalidInvocationContext => "invalid-invocation-context",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::BodyTooLarge => "body-too-large",
            ProblemKind::UnsupportedMediaType => "unsupported-media-type",
            ProblemKind::Unauthenticated => "unauthenticated",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::RateLimited => "rate-limited",
            ProblemKind::IdempotencyKeyRequired => "idempotency-key-required",
            ProblemKind::IdempotencyKeyReused => "idempotency-key-reused",
            ProblemKind::IdempotencyKeyInFlight => "idempotency-key-in-flight",
            ProblemKind::TenantNotFound => "tenant-not-found",
            ProblemKind::ObjectNotFound => "object-not-found",
            ProblemKind::Conflict => "conflict",
            ProblemKind::RefusedByApiserver => "refused-by-apiserver",
            ProblemKind::NotRun => "not-run",
            ProblemKind::Unavailable => "unavailable",
            ProblemKind::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::InvalidInput | ProblemKind::InvalidInvocationContext => {
                StatusCode::BAD_REQUEST
            }
            ProblemKind::IdempotencyKeyRequired => StatusCode::BAD_REQUEST,
            ProblemKind::NotFound | ProblemKind::TenantNotFound | ProblemKind::ObjectNotFound => {
                StatusCode::NOT_FOUND
            }
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::IdempotencyKeyReused | ProblemKind::RefusedByApiserver => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ProblemKind::IdempotencyKeyInFlight | ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::NotRun => StatusCode::FAILED_DEPENDENCY,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::InvalidInput => "The request is not valid",
            ProblemKind::InvalidInvocationContext => "The invocation context header is not valid",
            ProblemKind::NotFound => "No such command, query or path",
            ProblemKind::MethodNotAllowed => "Only POST is served here",
            ProblemKind::BodyTooLarge => "The request body is too large",
            ProblemKind::UnsupportedMediaType => "The request body must be JSON",
            ProblemKind::Unauthenticated => "A valid bearer token is required",
            ProblemKind::Forbidden => "The caller may not do this",
            ProblemKind::RateLimited => "Too many requests from this caller",
            ProblemKind::IdempotencyKeyRequired => "Commands need an Idempotency-Key header",
            ProblemKind::IdempotencyKeyReused => "The idempotency key was used for another request",
            ProblemKind::IdempotencyKeyInFlight => "A request with this idempotency key is running",
            ProblemKind::TenantNotFound => "No such tenant",
            ProblemKind::ObjectNotFound => "No such object",
            ProblemKind::Conflict => "The object changed meanwhile",
            ProblemKind::RefusedByApiserver => "The Kubernetes API refused the change",
            ProblemKind::NotRun => "Not run: another item of the bulk request was refused",
            ProblemKind::Unavailable => "A service the control plane needs is unavailable",
            ProblemKind::Internal => "The control plane failed",
        }
    }

    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// One field that is wrong, and how to put it right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// Where, as a JSON path from the body's root: `scopes[1].parent`.
    pub field: String,
    pub message: String,
}

/// An error as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub invocation_id: Option<String>,
    pub instance: Option<String>,
    pub retry_after_seconds: Option<u64>,
}

/// The body of a `application/problem+json` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProblemDocument {
    /// Stable URI of the kind of error, `https://ossature.dev/problems/<slug>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// What happened in this request, and what to do.
    pub detail: String,
    /// The path asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The invocation this error belongs to; ask `invocationStatus` or the
    /// audit log about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// For bad input: every field that is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            invocation_id: None,
            instance: None,
            retry_after_seconds: None,
        }
    }

    /// Bad input: the fields and their messages.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are not valid; see errors for each", many.len()),
        };
        Problem {
            errors,
            ..Problem::new(ProblemKind::InvalidInput, detail)
        }
    }

    pub fn with_invocation(mut self, id: &str) -> Self {
        self.invocation_id.get_or_insert_with(|| id.to_string());
        self
    }

    pub fn with_instance(mut self, path: &str) -> Self {
        self.instance.get_or_insert_with(|| path.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn document(&self) -> ProblemDocument {
        ProblemDocument {
            type_: self.kind.type_uri(),
            title: self.kind.title().to_string(),
            status: self.status().as_u16(),
            detail: self.detail.clone(),
            instance: self.instance.clone(),
            invocation_id: self.invocation_id.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.document()).unwrap_or_default();
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.kind == ProblemKind::Unauthenticated {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_has_its_own_slug_and_an_error_status() {
        let slugs: std::collections::BTreeSet<_> =
            ProblemKind::ALL.iter().map(|k| k.slug()).collect();
        assert_eq!(slugs.len(), ProblemKind::ALL.len());
        for kind in ProblemKind::ALL {
            assert!(kind.status().is_client_error() || kind.status().is_server_error());
            assert!(kind.type_uri().starts_with(PROBLEM_BASE));
        }
    }

    #[test]
    fn one_bad_field_is_named_in_the_detail() {
        let problem = Problem::invalid(vec![FieldError {
            field: "tenant".into(),
            message: "must be a DNS label".into(),
        }])
        .with_invocation("01J");
        let doc = serde_json::to_value(problem.document()).unwrap();
        assert_eq!(doc["type"], "https://ossature.dev/problems/invalid-input");
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["detail"], "tenant: must be a DNS label");
        assert_eq!(doc["invocationId"], "01J");
        assert_eq!(doc["errors"][0]["field"], "tenant");
    }
}
