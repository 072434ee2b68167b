//! Any body, decoded and checked as each query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossature_control_plane::queries::NAMES;

fuzz_target!(|data: &[u8]| {
    if let Some(body) = ossature_control_plane_fuzz::parse(data) {
        for name in NAMES {
            ossature_control_plane_fuzz::query(name, &body);
        }
    }
});
