//! Feeds arbitrary bytes to the RFB client-message parser, message after message, as a
//! client's socket would. Run with `cargo +nightly fuzz run client_messages` from
//! `display/fuzz`. The parser must never panic and never allocate more than its limits.
#![no_main]

use display::rfb::protocol::{Limits, read_client_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_cut_text: 4096,
        max_encodings: 64,
    };
    let mut r = data;
    while !r.is_empty() {
        if read_client_message(&mut r, &limits).is_err() {
            break;
        }
    }
});
