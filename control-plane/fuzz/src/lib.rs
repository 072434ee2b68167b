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
        Err(problem) => assert_invalid(&problem),
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
    }
}
