#![no_main]
//! Exported audit chains are untrusted files: verifying one never panics.
use herald_core::audit::{AuditEntry, ChainVerifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut v = ChainVerifier::with_public_key("MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=");
    for line in text.lines() {
        if let Ok(e) = serde_json::from_str::<AuditEntry>(line)
            && v.push(&e).is_err()
        {
            return;
        }
    }
    let _ = v.finish();
});
