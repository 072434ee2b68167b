//! The invocation a log line serves: the ids the control plane hands on,
//! as span fields in a process and as annotations on the objects it writes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotations the control plane records on every object it writes.
pub const ANNOTATION_PREFIX: &str = "control-plane.ossature.dev/";

/// The annotation holding `field` (`invocation-id`, `action-id`, ...).
pub fn annotation(field: &str) -> String {
    format!("{ANNOTATION_PREFIX}{field}")
}

/// The ids of an invocation context, as a log line carries them; a valid
/// invocation context in the published schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvocationIds {
    pub action_id: String,
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_invocation_id: Option<String>,
    pub trace_id: String,
}

/// Span fields holding the ids (empty means absent).
pub(crate) const ACTION_ID: &str = "action_id";
pub(crate) const INVOCATION_ID: &str = "invocation_id";
pub(crate) const PARENT_INVOCATION_ID: &str = "parent_invocation_id";
pub(crate) const TRACE_ID: &str = "trace_id";

impl InvocationIds {
    /// The ids the control plane recorded on an object, when it wrote it.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<InvocationIds> {
        let field = |name: &str| {
            annotations
                .get(&annotation(name))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Some(InvocationIds {
            action_id: field("action-id")?,
            invocation_id: field("invocation-id")?,
            parent_invocation_id: field("parent-invocation-id"),
            trace_id: field("trace-id")?,
        })
    }

    /// The ids among a span's fields, when it is an invocation's.
    pub(crate) fn from_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        let field = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Some(InvocationIds {
            action_id: field(ACTION_ID)?,
            invocation_id: field(INVOCATION_ID)?,
            parent_invocation_id: field(PARENT_INVOCATION_ID),
            trace_id: field(TRACE_ID)?,
        })
    }
}

/// The span of work done for the invocation that last wrote an object (from
/// its annotations); a disabled span for an object no invocation wrote.
pub fn invocation_span(annotations: &BTreeMap<String, String>) -> tracing::Span {
    match InvocationIds::from_annotations(annotations) {
        Some(ids) => tracing::info_span!(
            "invocation",
            invocation_id = %ids.invocation_id,
            action_id = %ids.action_id,
            parent_invocation_id = ids.parent_invocation_id.as_deref().unwrap_or(""),
            trace_id = %ids.trace_id,
        ),
        None => tracing::Span::none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_annotations_the_control_plane_writes() {
        let mut annotations = BTreeMap::from([
            (annotation("action-id"), "01JA".to_string()),
            (annotation("invocation-id"), "01JB".to_string()),
            (annotation("trace-id"), "4bf9".to_string()),
            ("other.example/invocation-id".to_string(), "x".to_string()),
        ]);
        let ids = InvocationIds::from_annotations(&annotations).unwrap();
        assert_eq!(
            (ids.action_id.as_str(), ids.invocation_id.as_str()),
            ("01JA", "01JB")
        );
        assert_eq!(ids.parent_invocation_id, None);
        annotations.insert(annotation("parent-invocation-id"), "01JC".into());
        let ids = InvocationIds::from_annotations(&annotations).unwrap();
        assert_eq!(ids.parent_invocation_id.as_deref(), Some("01JC"));
        // An object written without one has none.
        annotations.remove(&annotation("trace-id"));
        assert_eq!(InvocationIds::from_annotations(&annotations), None);
    }
}
