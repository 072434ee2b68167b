//! The published JSON schemas (`control-plane/schemas/`), generated from
//! the types the server reads and writes; a test keeps the files current
//! (`UPDATE_SCHEMAS=1 cargo test -p ossature-control-plane schemas` writes them).

use serde_json::Value;

use crate::audit::{AuditRecord, Record};
use crate::context::{IncomingContext, InvocationContext};

/// Each file name and its schema.
pub fn all() -> Vec<(&'static str, Value)> {
    let value = |schema: schemars::Schema| serde_json::to_value(schema).unwrap_or(Value::Null);
    vec![
        (
            "invocation-context.schema.json",
            value(schemars::schema_for!(InvocationContext)),
        ),
        (
            "invocation-context-request.schema.json",
            value(schemars::schema_for!(IncomingContext)),
        ),
        (
            "audit-record.schema.json",
            value(schemars::schema_for!(AuditRecord)),
        ),
        ("record.schema.json", value(schemars::schema_for!(Record))),
    ]
}

/// The text of a schema file.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (name, schema) in all() {
            let path = dir.join(name);
            let wanted = render(&schema);
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::write(&path, &wanted).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == wanted,
                "{name} differs from the types; run UPDATE_SCHEMAS=1 cargo test -p ossature-control-plane schemas"
            );
        }
    }
}
