//! The lines Ossature's binaries write. The control plane writes audit
//! records; both it and the operator write log lines. Both kinds follow one
//! JSON schema (`control-plane/schemas/record.schema.json`), told apart by
//! `record`, and a log line carries the invocation context it serves:
//! in the control plane the request's, in the operator the one the control
//! plane recorded on the object being reconciled.

mod format;
mod invocation;

pub use format::{Level, LogKind, LogRecord, LoggedSpan, RecordFormat};
pub use invocation::{ANNOTATION_PREFIX, InvocationIds, annotation, invocation_span};

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, as `record.schema.json` describes.
    Json,
    /// For a person at a terminal.
    Text,
}

/// Log lines passing `filter`, as records, to `writer`.
pub fn json_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(RecordFormat)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}

/// Installs the process's log subscriber: lines passing `filter`, in `format`.
pub fn init_logs(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    match format {
        LogFormat::Json => {
            use tracing_subscriber::util::SubscriberInitExt;
            json_subscriber(filter, std::io::stdout).init()
        }
        LogFormat::Text => {
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_ansi(std::io::stdout().is_terminal())
                .with_env_filter(filter)
                .init()
        }
    }
}
