#![no_main]
//! `Retry-After` values come from any receiver on the internet.
use herald_core::retry_after::parse_retry_after;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let _ = parse_retry_after(s, now);
    }
});
