//! What every fuzz target asserts of the control plane's decoders: any
//! input is answered with a value or with a problem that names what is
//! wrong, and nothing panics on the way.

use ossature_control_plane::api::validate;
use ossature_control_plane::commands::{self, Command};
use ossature_control_plane::problem::{Problem, ProblemKind};
use ossature_control_plane::queries::{self, Query};

/// A refusal of bad input: each wrong field with a message saying why,
/// and a document the API can answer with.
pub fn assert_invalid(problem: &Problem) {
    assert_eq!(problem.kind, ProblemKind::InvalidInput, "{problem}");
    assert!(!problem.errors.is_empty(), "{problem:?} names no field");
    for error in &problem.errors {
        assert!(
            !error.message.trim().is_empty(),
            "{problem:?}: field {:?} has no message",
            error.field
        );
    }
    assert!(!problem.detail.trim().is_empty(), "{problem:?}");
    serde_json::to_vec(&problem.document()).expect("a problem's document encodes");
}

/// A body the server parses, or the refusal it answers with.
pub fn parse(data: &[u8]) -> Option<serde_json::Value> {
    match ossature_control_plane::server::parse_body(data) {
        Ok(body) => Some(body),
        Err(problem) => {
            assert_eq!(problem.kind, ProblemKind::InvalidInput, "{problem}");
            None
        }
    }
}

/// The command `name` decoded from `body` and checked, as its path does it.
pub fn command(name: &str, body: &serde_json::Value) {
    let Some(decoded) = Command::decode(name, body) else {
        assert!(
            !commands::NAMES.contains(&name),
            "command {name} is listed but not decoded"
        );
        return;
    };
    let checked = decoded.and_then(|command| {
        assert_eq!(command.name(), name);
        command.check().map(|()| command)
    });
    match checked {
        // The tenant a checked command names is safe to derive names from.
        Ok(command) => assert!(
            validate::tenant_name(command.input().tenant()).is_ok(),
            "{command:?} passed its checks with a bad tenant"
        ),
        Err(problem) => {
            assert_invalid(&problem);
            assert_fields_in(&problem, body);
        }
    }
}

/// Each wrong member of a list is named by its path in the body, such as
/// `scopes[1].grants[0].groups[2]`, so a caller finds it.
pub fn assert_fields_in(problem: &Problem, body: &serde_json::Value) {
    // Labels' keys are any text: their paths are not looked up. A field
    // ending in `]` that is no `[<index>]` is a key the caller sent as it
    // is (an unknown field named `tenan]`).
    let indexed = |field: &str| {
        field
            .strip_suffix(']')
            .and_then(|f| f.rsplit_once('['))
            .is_some_and(|(_, index)| {
                !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
            })
    };
    let listed = |field: &str| indexed(field) && !field.starts_with("labels.");
    for error in problem.errors.iter().filter(|e| listed(&e.field)) {
        let mut at = Some(body);
        for part in error.field.split(['.', '[']).filter(|p| !p.is_empty()) {
            at = match part.strip_suffix(']') {
                Some(index) => index.parse::<usize>().ok().and_then(|i| at?.get(i)),
                None => at.and_then(|v| v.get(part)),
            };
        }
        assert!(
            at.is_some(),
            "{problem:?}: {} is not a path in {body}",
            error.field
        );
    }
}

/// The query `name` decoded from `body` and checked.
pub fn query(name: &str, body: &serde_json::Value) {
    let Some(decoded) = Query::decode(name, body) else {
        assert!(
            !queries::NAMES.contains(&name),
            "query {name} is listed but not decoded"
        );
        return;
    };
    if let Err(problem) = decoded.and_then(|query| query.check()) {
        assert_invalid(&problem);
        assert_fields_in(&problem, body);
    }
}
