#![no_main]
//! Destination settings from the API or a config file: parsing, validation and masking
//! never panic.
use herald_core::destination::DestinationSpec;
use herald_core::template::TemplateEngine;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static ENGINE: OnceLock<TemplateEngine> = OnceLock::new();
    if let Ok(mut spec) = serde_json::from_slice::<DestinationSpec>(data) {
        let _ = spec.validate("fuzz", ENGINE.get_or_init(TemplateEngine::new));
        let _ = spec.masked();
        let _ = spec.complete();
        let _ = (spec.rate_limit(), spec.breaker(), spec.retry_policy());
    }
});
