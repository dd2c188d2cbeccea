#![no_main]
//! Durations in configuration: parsing never panics, and formatting round-trips.
use herald_core::duration::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(d) = parse_duration(s)
    {
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
});
