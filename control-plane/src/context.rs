//! The invocation context: who asked for what, carried across calls in the
//! `Ossature-Invocation` header (base64 of JSON, schema in
//! `schemas/invocation-context.schema.json`). The server forks what the
//! caller sends (a new invocation id whose parent is the caller's), answers
//! with it in the same header, puts it in every log line of the invocation,
//! and records it on every object it writes.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::problem::{FieldError, Problem, ProblemKind};

/// The header, in requests and answers.
pub const HEADER: &str = "ossature-invocation";
/// A header value is small: ids, an address, a user agent.
const MAX_HEADER_BYTES: usize = 4096;
const MAX_USER_AGENT: usize = 256;

/// Annotations recorded on every object written.
pub use ossature_records::ANNOTATION_PREFIX;
use ossature_records::annotation;

/// One invocation of the API, as the server hands it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Ossature invocation context")]
pub struct InvocationContext {
    /// The user-level action this invocation serves (a ULID); kept across
    /// every call the action makes.
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub action_id: String,
    /// This invocation (a ULID), new at each call.
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub invocation_id: String,
    /// The invocation that made this call, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub parent_invocation_id: Option<String>,
    /// W3C trace id: 32 lowercase hex digits, not all zero.
    #[schemars(regex(pattern = r"^[0-9a-f]{32}$"))]
    pub trace_id: String,
    /// Where the call came from, as the server saw it (what a caller sends
    /// here is replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Switches for this invocation only.
    #[serde(default, skip_serializing_if = "Toggles::is_empty")]
    pub toggles: Toggles,
}

/// Where a call came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provenance {
    /// The peer's address, as the server saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// The `User-Agent` header, cut to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub user_agent: Option<String>,
}

/// Per-invocation switches; each needs a permission.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toggles {
    /// Log this invocation at debug level, whatever the server's level.
    /// Allowed only to callers with the permission (platform operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
}

impl Toggles {
    pub fn is_empty(&self) -> bool {
        self.log_level.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
}

/// What a caller may send: any of the fields, each optional.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Ossature invocation context, as a caller sends it")]
pub struct IncomingContext {
    /// The action this call is part of; a new one when left out.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub action_id: Option<String>,
    /// The caller's own invocation: it becomes the parent of this one.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub invocation_id: Option<String>,
    /// Ignored: the server's parent is the caller's invocation id.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
    pub parent_invocation_id: Option<String>,
    /// The trace this call belongs to; else the `traceparent` header's,
    /// else a new one.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9a-f]{32}$"))]
    pub trace_id: Option<String>,
    /// Ignored: the server records what it sees.
    #[serde(default)]
    pub provenance: Option<Provenance>,
    #[serde(default)]
    pub toggles: Toggles,
}

fn ulid_field(value: &Option<String>, field: &str, errors: &mut Vec<FieldError>) -> Option<Ulid> {
    let value = value.as_deref()?;
    match Ulid::from_string(value) {
        Ok(id) if id.to_string() == value => Some(id),
        _ => {
            errors.push(FieldError {
                field: format!("{HEADER}.{field}"),
                message: format!(
                    "{value:?} is not a ULID: 26 characters of Crockford base32 in upper case, such as 01JQ3X5T0RYB9Q8K1W7ZC4M2NP"
                ),
            });
            None
        }
    }
}

fn valid_trace_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0')
}

/// The trace id of a W3C `traceparent` header (`00-<trace>-<span>-<flags>`).
fn trace_of_traceparent(value: &str) -> Option<String> {
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    valid_trace_id(trace).then(|| trace.to_string())
}

/// A random trace id, as W3C Trace Context asks.
fn new_trace_id() -> String {
    let mut bytes = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        bytes = Ulid::generate().to_bytes();
    }
    ossature_model::names::hex(&bytes)
}

/// What the server knows of the call besides the header.
pub struct Seen<'a> {
    pub header: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub client_address: Option<String>,
    pub user_agent: Option<&'a str>,
}

/// The context of this invocation, forked from what the caller sent; on
/// a bad header, a fresh context and the problem (answered with it).
pub fn fork(seen: Seen<'_>) -> (InvocationContext, Option<Problem>) {
    let mut errors = Vec::new();
    let incoming = match seen.header.map(decode_header) {
        None => IncomingContext::default(),
        Some(Ok(incoming)) => incoming,
        Some(Err(message)) => {
            errors.push(FieldError {
                field: HEADER.into(),
                message,
            });
            IncomingContext::default()
        }
    };
    let action = ulid_field(&incoming.action_id, "actionId", &mut errors);
    let parent = ulid_field(&incoming.invocation_id, "invocationId", &mut errors);
    let _ = ulid_field(
        &incoming.parent_invocation_id,
        "parentInvocationId",
        &mut errors,
    );
    let trace = match incoming.trace_id.as_deref() {
        Some(trace) if valid_trace_id(trace) => Some(trace.to_string()),
        Some(trace) => {
            errors.push(FieldError {
                field: format!("{HEADER}.traceId"),
                message: format!(
                    "{trace:?} is not a W3C trace id: 32 lowercase hex digits, not all zero"
                ),
            });
            None
        }
        None => seen.traceparent.and_then(trace_of_traceparent),
    };
    let context = InvocationContext {
        action_id: action.unwrap_or_else(Ulid::generate).to_string(),
        invocation_id: Ulid::generate().to_string(),
        parent_invocation_id: parent.map(|p| p.to_string()),
        trace_id: trace.unwrap_or_else(new_trace_id),
        provenance: Some(Provenance {
            client_address: seen.client_address,
            user_agent: seen
                .user_agent
                .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
        }),
        toggles: if errors.is_empty() {
            incoming.toggles
        } else {
            Toggles::default()
        },
    };
    let problem = (!errors.is_empty()).then(|| Problem {
        errors,
        ..Problem::new(
            ProblemKind::InvalidInvocationContext,
            format!(
                "the {HEADER} header must be base64 of a JSON object with the fields of schemas/invocation-context.schema.json; leave it out to start a new action"
            ),
        )
    });
    (context, problem)
}

fn decode_header(value: &str) -> Result<IncomingContext, String> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(format!("is longer than {MAX_HEADER_BYTES} bytes"));
    }
    let value = value.trim();
    let bytes = STANDARD
        .decode(value)
        .or_else(|_| URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')))
        .map_err(|_| "is not base64".to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("is not a valid context: {e}"))
}

impl InvocationContext {
    /// A child of this invocation: the same action and trace, a new id.
    pub fn child(&self) -> InvocationContext {
        InvocationContext {
            invocation_id: Ulid::generate().to_string(),
            parent_invocation_id: Some(self.invocation_id.clone()),
            ..self.clone()
        }
    }

    /// The header value: base64 of its JSON.
    pub fn header_value(&self) -> String {
        STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn debug_logging(&self) -> bool {
        self.toggles.log_level == Some(LogLevel::Debug)
    }

    /// The annotations recorded on an object this invocation writes, with
    /// the actor and the authorization decision's reason.
    pub fn annotations(&self, actor: &str, reason: &str) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::from([
            (annotation("action-id"), self.action_id.clone()),
            (annotation("invocation-id"), self.invocation_id.clone()),
            (annotation("trace-id"), self.trace_id.clone()),
            (annotation("actor"), actor.to_string()),
            (annotation("decision"), reason.to_string()),
        ]);
        if let Some(parent) = &self.parent_invocation_id {
            annotations.insert(annotation("parent-invocation-id"), parent.clone());
        }
        annotations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(header: Option<&str>) -> Seen<'_> {
        Seen {
            header,
            traceparent: None,
            client_address: Some("192.0.2.1:5000".into()),
            user_agent: Some("curl/8"),
        }
    }

    #[test]
    fn the_server_forks_the_callers_context() {
        let caller = InvocationContext {
            action_id: Ulid::generate().to_string(),
            invocation_id: Ulid::generate().to_string(),
            parent_invocation_id: None,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            provenance: Some(Provenance {
                client_address: Some("198.51.100.9:1".into()),
                user_agent: None,
            }),
            toggles: Toggles::default(),
        };
        let header = caller.header_value();
        let (forked, problem) = fork(seen(Some(&header)));
        assert!(problem.is_none());
        assert_eq!(forked.action_id, caller.action_id);
        assert_eq!(forked.trace_id, caller.trace_id);
        assert_eq!(
            forked.parent_invocation_id,
            Some(caller.invocation_id.clone())
        );
        assert_ne!(forked.invocation_id, caller.invocation_id);
        let provenance = forked.provenance.unwrap();
        assert_eq!(provenance.client_address.as_deref(), Some("192.0.2.1:5000"));
        assert_eq!(provenance.user_agent.as_deref(), Some("curl/8"));
    }

    #[test]
    fn without_a_header_an_action_starts_and_traceparent_is_followed() {
        let (context, problem) = fork(Seen {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ..seen(None)
        });
        assert!(problem.is_none());
        assert!(context.parent_invocation_id.is_none());
        assert_eq!(context.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(Ulid::from_string(&context.action_id).is_ok());
        let (context, _) = fork(seen(None));
        assert!(valid_trace_id(&context.trace_id));
    }

    #[test]
    fn a_bad_header_is_refused_field_by_field() {
        let (_, problem) = fork(seen(Some("%%%")));
        assert_eq!(problem.unwrap().errors[0].message, "is not base64");
        let body = STANDARD.encode(r#"{"actionId": "nope", "traceId": "XYZ"}"#);
        let (context, problem) = fork(seen(Some(&body)));
        let problem = problem.unwrap();
        assert_eq!(problem.kind, ProblemKind::InvalidInvocationContext);
        let fields: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ossature-invocation.actionId",
                "ossature-invocation.traceId"
            ]
        );
        assert!(Ulid::from_string(&context.invocation_id).is_ok());
        let unknown = STANDARD.encode(r#"{"user": "root"}"#);
        let (_, problem) = fork(seen(Some(&unknown)));
        assert!(problem.unwrap().errors[0].message.contains("unknown field"));
    }

    #[test]
    fn toggles_travel_and_children_keep_the_action() {
        let header = STANDARD.encode(r#"{"toggles": {"logLevel": "debug"}}"#);
        let (context, problem) = fork(seen(Some(&header)));
        assert!(problem.is_none());
        assert!(context.debug_logging());
        let child = context.child();
        assert_eq!(child.action_id, context.action_id);
        assert_eq!(
            child.parent_invocation_id.as_ref(),
            Some(&context.invocation_id)
        );
        let annotations = context.annotations("tenant:acme:alice", "own tenant");
        assert_eq!(
            annotations["control-plane.ossature.dev/invocation-id"],
            context.invocation_id
        );
    }
}
