//! The audit log: one JSON line per invocation, refused, replayed and dry
//! runs included, following `schemas/audit-record.schema.json`.

use std::io::Write;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::context::{InvocationContext, Provenance};

/// One invocation, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Ossature control plane audit record")]
pub struct AuditRecord {
    /// When the invocation ended (RFC 3339, UTC).
    pub time: String,
    /// Always `audit`: tells these lines from log lines.
    pub record: RecordKind,
    /// The invocation context (ids, trace, provenance, toggles).
    pub invocation: InvocationContext,
    /// The path asked for, such as `/v1/commands/onboardTenant`.
    pub route: String,
    /// The command or query, such as `onboardTenant`; the path's last
    /// segment for anything else.
    pub action: String,
    /// Who called; absent when the token was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Where the call came from.
    pub provenance: Provenance,
    /// The tenant acted on, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The authorization decision, made once at the start; absent when
    /// the invocation ended before it (bad token, bad input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<AuditDecision>,
    /// The HTTP status answered.
    pub status: u16,
    /// For an error: its problem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    pub dry_run: bool,
    /// The answer was the stored answer of an earlier invocation (same
    /// Idempotency-Key and body); nothing was done again.
    pub replay: bool,
    /// Objects written (none in a dry run or a replay).
    pub objects_written: Vec<WrittenObject>,
    /// From the request's arrival to the answer, in milliseconds.
    pub latency_ms: f64,
}

/// A line the control plane or the operator writes: an audit record or a
/// log line, told apart by `record`. Log lines carry the same invocation
/// context, when they serve an invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(title = "Ossature record")]
pub enum Record {
    Audit(Box<AuditRecord>),
    Log(Box<ossature_records::LogRecord<InvocationContext>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Audit,
}

/// The caller, as audited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    /// `tenant/<tenant>/<subject>` or `operator/<subject>`.
    pub id: String,
    /// `PlatformOperator`, `TenantUser` or `TenantService`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl From<&Caller> for Actor {
    fn from(caller: &Caller) -> Self {
        Actor {
            id: caller.actor(),
            kind: format!("{:?}", caller.kind),
            tenant: caller.tenant.clone(),
            username: caller.username.clone(),
            client_id: caller.client_id.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditDecision {
    pub allowed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WrittenObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// `Apply` or `Delete`.
    pub operation: String,
}

/// Where the lines go.
pub struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    /// `-` for standard output, else a file appended to.
    pub fn open(target: &str) -> anyhow::Result<Audit> {
        let sink: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)
                    .map_err(|e| anyhow::anyhow!("opening the audit log {target}: {e}"))?,
            )
        };
        Ok(Audit {
            sink: Mutex::new(sink),
        })
    }

    /// Writes one line; a failure is logged, never answered to the caller.
    pub fn record(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("an audit record does not serialise: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = sink.write_all(&line).and_then(|()| sink.flush()) {
            tracing::error!("writing the audit log failed: {e}");
        }
    }
}
