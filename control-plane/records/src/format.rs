//! Log lines as JSON records: a `tracing-subscriber` event format.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::invocation::InvocationIds;

// `I` is the invocation context's type: the control plane's full context in
// the published schema, the ids alone when written.
/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Ossature log line")]
pub struct LogRecord<I> {
    /// When it was logged (RFC 3339, UTC).
    pub time: String,
    /// Always `log`: tells these lines from audit records.
    pub record: LogKind,
    pub level: Level,
    /// The module that logged it, such as `ossature_operator::reconcile`.
    pub target: String,
    pub message: String,
    /// The line's own fields.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// The spans it was logged in, outermost first, with their fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<LoggedSpan>,
    /// The invocation the line serves, when it serves one: the control
    /// plane's request, or in the operator the control plane's invocation
    /// that last wrote the object reconciled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation: Option<I>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<&tracing::Level> for Level {
    fn from(level: &tracing::Level) -> Self {
        match *level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            _ => Level::Trace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggedSpan {
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

/// Writes each event as one [`LogRecord`] line. Span fields are read as
/// `JsonFields` formats them, so the subscriber must use that field format.
pub struct RecordFormat;

impl<S, N> FormatEvent<S, N> for RecordFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut fields = FieldValues::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = match fields.remove("message") {
            Some(Value::String(message)) => message,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let mut spans = Vec::new();
        let mut invocation = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let fields: Map<String, Value> = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|f| serde_json::from_str(f).ok())
                    .unwrap_or_default();
                // The innermost invocation is the one served.
                if let Some(ids) = InvocationIds::from_fields(&fields) {
                    invocation = Some(ids);
                }
                spans.push(LoggedSpan {
                    name: span.name().to_string(),
                    fields,
                });
            }
        }
        let record = LogRecord {
            time,
            record: LogKind::Log,
            level: event.metadata().level().into(),
            target: event.metadata().target().to_string(),
            message,
            fields,
            spans,
            invocation,
        };
        let line = serde_json::to_string(&record).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// An event's fields as JSON values.
#[derive(Default)]
struct FieldValues(Map<String, Value>);

impl Visit for FieldValues {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn logged(run: impl FnOnce()) -> Vec<LogRecord<InvocationIds>> {
        let lines = Lines::default();
        let filter = tracing_subscriber::EnvFilter::new("debug");
        let subscriber = crate::json_subscriber(filter, lines.clone());
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    #[test]
    fn a_line_has_its_fields_spans_and_invocation() {
        let annotations = std::collections::BTreeMap::from([
            (crate::annotation("action-id"), "01JA".to_string()),
            (crate::annotation("invocation-id"), "01JB".to_string()),
            (crate::annotation("trace-id"), "4bf9".to_string()),
        ]);
        let lines = logged(|| {
            tracing::info!("before");
            let reconcile = tracing::info_span!("reconcile", object = "acme");
            let _outer = reconcile.enter();
            let invocation = crate::invocation_span(&annotations);
            let _inner = invocation.enter();
            tracing::warn!(attempt = 2, ready = false, "backend {} down", "pulsar");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "before");
        assert_eq!(lines[0].invocation, None);
        assert!(lines[0].spans.is_empty());
        let line = &lines[1];
        assert_eq!(line.record, LogKind::Log);
        assert_eq!(line.level, Level::Warn);
        assert_eq!(line.message, "backend pulsar down");
        assert_eq!(line.fields["attempt"], 2);
        assert_eq!(line.fields["ready"], false);
        assert_eq!(line.target, module_path!());
        let names: Vec<&str> = line.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["reconcile", "invocation"]);
        assert_eq!(line.spans[0].fields["object"], "acme");
        let ids = line.invocation.as_ref().unwrap();
        assert_eq!(ids.invocation_id, "01JB");
        assert_eq!(ids.parent_invocation_id, None);
        assert!(line.time.ends_with('Z') && line.time.contains('T'));
    }
}
