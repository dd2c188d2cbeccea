#![no_main]
//! Secrets and signature headers: parsing and verifying never panic, and a signature made
//! for a body verifies only for that body.
use herald_core::signature::SigningKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid test secret");
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = SigningKey::parse(s);
        assert!(!key.verify("msg_1", 1, b"body", s) || s.contains(&key.sign("msg_1", 1, b"body")[3..]));
    }
    let sig = key.sign("msg_1", 1, data);
    assert!(key.verify("msg_1", 1, data, &sig));
});
