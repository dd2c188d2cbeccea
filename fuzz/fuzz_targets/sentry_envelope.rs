#![no_main]
//! The Sentry envelope parser and the event → error report mapping never panic, and what
//! they accept groups and serializes: any bytes a client may send to
//! `/api/{project}/envelope/`.

use herald_core::error_report::group;
use herald_core::sentry::{event_to_report, parse_envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = parse_envelope(data) else { return };
    let mut consumed = 0usize;
    for item in &env.items {
        consumed += item.payload.len();
    }
    assert!(consumed <= data.len());
    for payload in env.events() {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else { continue };
        let Some(report) = event_to_report(&v, "fuzz") else { continue };
        if let Ok(r) = report.validate() {
            let g = group(&r);
            assert_eq!(g.key.len(), 64);
            let _ = serde_json::to_string(&r).expect("a report serializes");
        }
    }
});
