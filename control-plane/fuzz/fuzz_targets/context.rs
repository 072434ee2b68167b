//! Any text as the invocation context header (and as `traceparent` and
//! `User-Agent`): the server always forks a whole context, refuses a bad
//! header field by field, and what it answers a caller can send back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossature_control_plane::api::validate;
use ossature_control_plane::context::{InvocationContext, Seen, fork};
use ossature_control_plane::problem::ProblemKind;

fn assert_whole(context: &InvocationContext) {
    assert!(validate::ulid(&context.action_id).is_ok(), "{context:?}");
    assert!(
        validate::ulid(&context.invocation_id).is_ok(),
        "{context:?}"
    );
    if let Some(parent) = &context.parent_invocation_id {
        assert!(validate::ulid(parent).is_ok(), "{context:?}");
    }
    let trace = context.trace_id.as_bytes();
    assert!(
        trace.len() == 32
            && trace.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && trace.iter().any(|b| *b != b'0'),
        "{context:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (context, problem) = fork(Seen {
        header: Some(text),
        traceparent: Some(text),
        client_address: None,
        user_agent: Some(text),
    });
    assert_whole(&context);
    if let Some(problem) = problem {
        assert_eq!(problem.kind, ProblemKind::InvalidInvocationContext);
        assert!(!problem.errors.is_empty(), "{problem:?}");
        assert!(
            context.toggles.is_empty(),
            "a refused header's toggles apply"
        );
    }
    let answered = context.header_value();
    let (next, problem) = fork(Seen {
        header: Some(&answered),
        traceparent: None,
        client_address: None,
        user_agent: None,
    });
    assert!(
        problem.is_none(),
        "the header answered is refused when sent back: {problem:?}"
    );
    assert_eq!(next.action_id, context.action_id);
    assert_eq!(next.trace_id, context.trace_id);
    assert_eq!(next.parent_invocation_id, Some(context.invocation_id));
    assert_eq!(next.toggles, context.toggles);
});
