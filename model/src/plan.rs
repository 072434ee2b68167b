//! What a change to a tenant's objects will do in the backends, before it
//! is made: the desired objects of the current objects against those of
//! the new ones ([`crate::tree::desired`], what the operators make), each
//! created, updated (naming the fields that change) or deleted. Backends
//! are not read: an object changed by hand since is not seen here (the
//! operators put it back on their next reconcile anyway).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tree::{Key, Object, Settings, TenantObjects, desired};

/// What happens to one object.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Create,
    /// `fields`: the dotted paths whose desired value changes.
    Update {
        fields: Vec<String>,
    },
    Delete,
}

/// One object a change creates, updates or deletes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    #[serde(flatten)]
    pub key: Key,
    #[serde(flatten)]
    pub action: Action,
}

/// The plan from `current` to `new` (either `None`: nothing, as before an
/// onboarding or after an offboarding).
pub fn plan_of(
    current: Option<&TenantObjects>,
    new: Option<&TenantObjects>,
    settings: &Settings,
) -> Vec<Change> {
    let of =
        |objects: Option<&TenantObjects>| objects.map(|o| desired(o, settings)).unwrap_or_default();
    plan(&of(current), &of(new))
}

/// The changes that turn the `current` desired objects into the `new`
/// ones: creations and updates in the order the new objects are made,
/// then deletions in the reverse of the order the current ones were made
/// (what sits in another goes first).
pub fn plan(current: &[Object], new: &[Object]) -> Vec<Change> {
    let before: BTreeMap<&Key, &Object> = current.iter().map(|o| (&o.key, o)).collect();
    let after: BTreeMap<&Key, &Object> = new.iter().map(|o| (&o.key, o)).collect();
    let mut changes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for object in new {
        if !seen.insert(&object.key) {
            continue;
        }
        let action = match before.get(&object.key) {
            None => Action::Create,
            Some(old) => {
                let fields = changed_fields(&old.fields, &object.fields);
                if fields.is_empty() {
                    continue;
                }
                Action::Update { fields }
            }
        };
        changes.push(Change {
            key: object.key.clone(),
            action,
        });
    }
    let mut gone = std::collections::BTreeSet::new();
    for object in current.iter().rev() {
        if !after.contains_key(&object.key) && gone.insert(&object.key) {
            changes.push(Change {
                key: object.key.clone(),
                action: Action::Delete,
            });
        }
    }
    changes
}

/// The dotted paths (`spec.hard.pods`) at which two values differ; lists
/// and scalars compare whole.
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let mut fields = Vec::new();
    differences("", old, new, &mut fields);
    fields
}

fn differences(at: &str, old: &Value, new: &Value, fields: &mut Vec<String>) {
    let path = |key: &str| match at {
        "" => key.to_string(),
        _ => format!("{at}.{key}"),
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                differences(&path(key), x, y, fields);
            }
        }
        _ if old == new => {}
        _ => fields.push(if at.is_empty() { ".".into() } else { at.into() }),
    }
}
