#![no_main]
//! Message submissions: parsing and validation never panic.
use herald_core::message::{DEFAULT_MAX_ATTACHMENT_BYTES, MessageInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = serde_json::from_slice::<MessageInput>(data) {
        let _ = input.validate(Some("key"), DEFAULT_MAX_ATTACHMENT_BYTES);
    }
});
