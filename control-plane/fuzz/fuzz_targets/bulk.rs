//! Any body, decoded as bulk commands and as bulk queries, then each item
//! by its own name, as the bulk paths do before authorizing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossature_control_plane::api::validate;
use ossature_control_plane::server::{MAX_BULK_ITEMS, decode_bulk_commands, decode_bulk_queries};
use ossature_control_plane_fuzz::{assert_invalid, command, parse, query};

fuzz_target!(|data: &[u8]| {
    let Some(body) = parse(data) else { return };
    match decode_bulk_commands(&body) {
        Ok(bulk) => {
            assert!((1..=MAX_BULK_ITEMS).contains(&bulk.items.len()));
            for item in &bulk.items {
                command(&item.command, &item.input);
                if let Err(message) = validate::idempotency_key(&item.idempotency_key) {
                    assert!(!message.is_empty());
                }
            }
        }
        Err(problem) => assert_invalid(&problem),
    }
    match decode_bulk_queries(&body) {
        Ok(bulk) => {
            assert!((1..=MAX_BULK_ITEMS).contains(&bulk.items.len()));
            for item in &bulk.items {
                query(&item.query, &item.input);
            }
        }
        Err(problem) => assert_invalid(&problem),
    }
});
