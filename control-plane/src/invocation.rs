//! One invocation from its arrival to its answer: its context, caller,
//! decision and what it wrote, gathered for the audit record, the response
//! header and the log span.

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use tracing::Span;

use crate::api::{ObjectChange, Operation};
use crate::audit::{Actor, AuditDecision, AuditRecord, RecordKind, WrittenObject};
use crate::auth::Caller;
use crate::authorize::Decision;
use crate::context::{self, InvocationContext, Seen};
use crate::problem::Problem;

pub struct Invocation {
    pub context: InvocationContext,
    pub route: String,
    pub action: String,
    pub started: Instant,
    pub caller: Option<Caller>,
    pub tenant: Option<String>,
    pub decision: Option<Decision>,
    pub dry_run: bool,
    pub replay: bool,
    pub written: Vec<WrittenObject>,
    pub span: Span,
}

impl Invocation {
    /// The invocation of a request with these headers from `client`; the
    /// problem of a bad context header, which it is answered with.
    pub fn begin(
        headers: &HeaderMap,
        client: Option<String>,
        route: &str,
        action: &str,
    ) -> (Invocation, Option<Problem>) {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (context, problem) = context::fork(Seen {
            header: text(context::HEADER),
            traceparent: text("traceparent"),
            client_address: client,
            user_agent: text("user-agent"),
        });
        (Invocation::with_context(context, route, action), problem)
    }

    pub fn with_context(context: InvocationContext, route: &str, action: &str) -> Invocation {
        let span = tracing::info_span!(
            "invocation",
            invocation_id = %context.invocation_id,
            action_id = %context.action_id,
            parent_invocation_id = context.parent_invocation_id.as_deref().unwrap_or(""),
            trace_id = %context.trace_id,
            action,
            debug = false,
        );
        Invocation {
            context,
            route: route.to_string(),
            action: action.to_string(),
            started: Instant::now(),
            caller: None,
            tenant: None,
            decision: None,
            dry_run: false,
            replay: false,
            written: Vec::new(),
            span,
        }
    }

    /// A child for one item of a bulk request: same caller, its own id.
    pub fn child(&self, route: &str, action: &str) -> Invocation {
        let mut child = Invocation::with_context(self.context.child(), route, action);
        child.caller = self.caller.clone();
        child
    }

    /// Raises this invocation's log level, once allowed; from the span's
    /// next entry (the next poll of the work it instruments).
    pub fn enable_debug_logging(&self) {
        self.span.record("debug", true);
    }

    pub fn record_written(&mut self, changes: &[ObjectChange]) {
        self.written.extend(changes.iter().map(|c| WrittenObject {
            api_version: c.api_version.clone(),
            kind: c.kind.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            operation: match c.operation {
                Operation::Apply => "Apply".into(),
                Operation::Delete => "Delete".into(),
            },
        }));
    }

    /// The audit record of this invocation ending with `status`.
    pub fn audit_record(&self, status: u16, problem: Option<&Problem>) -> AuditRecord {
        AuditRecord {
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
            record: RecordKind::Audit,
            invocation: self.context.clone(),
            route: self.route.clone(),
            action: self.action.clone(),
            actor: self.caller.as_ref().map(Actor::from),
            provenance: self.context.provenance.clone().unwrap_or_default(),
            tenant: self.tenant.clone(),
            decision: self.decision.as_ref().map(|d| AuditDecision {
                allowed: d.allowed,
                reason: d.reason.clone(),
            }),
            status,
            problem_type: problem.map(|p| p.kind.type_uri()),
            dry_run: self.dry_run,
            replay: self.replay,
            objects_written: self.written.clone(),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// Adds the invocation context header to an answer.
    pub fn stamp(&self, response: &mut Response) {
        if let Ok(value) = HeaderValue::from_str(&self.context.header_value()) {
            response.headers_mut().insert(context::HEADER, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn invocation() -> Invocation {
        let (invocation, problem) =
            Invocation::begin(&HeaderMap::new(), None, "/v1/queries/x", "x");
        assert!(problem.is_none());
        invocation
    }

    #[test]
    fn an_invocation_allowed_to_logs_at_debug_and_every_line_names_it() {
        let captured = Captured::default();
        let writer = captured.clone();
        // As the binary logs (`--log-format json`).
        let subscriber =
            ossature_records::json_subscriber(crate::cli::log_filter(), move || writer.clone());
        let (quiet, loud) = tracing::subscriber::with_default(subscriber, || {
            let quiet = invocation();
            quiet.span.in_scope(|| {
                tracing::debug!("a detail of the quiet invocation");
                tracing::info!("a line of the quiet invocation");
            });
            let loud = invocation();
            loud.enable_debug_logging();
            loud.span
                .in_scope(|| tracing::debug!("a detail of the loud invocation"));
            (quiet, loud)
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("a detail of the quiet invocation"), "{text}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0]["invocation"]["invocationId"],
            quiet.context.invocation_id
        );
        assert_eq!(lines[1]["message"], "a detail of the loud invocation");
        assert_eq!(
            lines[1]["invocation"]["invocationId"],
            loud.context.invocation_id
        );
        assert_eq!(lines[1]["invocation"]["traceId"], loud.context.trace_id);
    }
}
