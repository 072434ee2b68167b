//! Any body, decoded and checked as each command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossature_control_plane::commands::NAMES;

fuzz_target!(|data: &[u8]| {
    if let Some(body) = ossature_control_plane_fuzz::parse(data) {
        for name in NAMES {
            ossature_control_plane_fuzz::command(name, &body);
        }
    }
});
