//! Standard Webhooks 1.0 signatures.
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, where the
//! key is the base64 part of a `whsec_…` secret. During rotation several secrets are active
//! and their signatures are joined with spaces; a receiver accepts any one that verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";

/// A webhook signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(****)")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>`; the key must be 24 to 64 bytes.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let b64 = secret
            .strip_prefix(PREFIX)
            .ok_or("a webhook secret starts with `whsec_`")?;
        let key = B64
            .decode(b64)
            .map_err(|_| "the part after `whsec_` must be base64".to_string())?;
        if !(24..=64).contains(&key.len()) {
            return Err("a webhook secret must decode to 24–64 bytes".into());
        }
        Ok(SigningKey(key))
    }

    /// A new random secret, `whsec_` + base64 of 32 random bytes.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        format!("{PREFIX}{}", B64.encode(key))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    fn signed_mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` for one message attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .signed_mac(msg_id, timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", B64.encode(tag))
    }

    /// Legacy receivers: `sha256=<hex HMAC-SHA256(key, body)>`.
    pub fn sign_legacy_hex(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether any `v1,` entry of a (space-separated) signature header verifies; the
    /// comparison is constant-time.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|sig| match B64.decode(sig) {
                Ok(raw) => self
                    .signed_mac(msg_id, timestamp, body)
                    .verify_slice(&raw)
                    .is_ok(),
                Err(_) => false,
            })
    }
}

/// The `webhook-signature` header value for every active key.
pub fn signature_header(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_spec_test_vector() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(key.sign(MSG_ID, TS, BODY), EXPECTED);
        assert!(key.verify(MSG_ID, TS, BODY, EXPECTED));
        assert!(!key.verify(MSG_ID, TS + 1, BODY, EXPECTED));
    }

    #[test]
    fn verifies_with_the_reference_crate() {
        let secret = SigningKey::generate();
        let key = SigningKey::parse(&secret).unwrap();
        let header = key.sign("msg_1", 1_700_000_000, b"{}");
        let wh = standardwebhooks::Webhook::new(&secret).unwrap();
        let sig = wh.sign("msg_1", 1_700_000_000, b"{}").unwrap();
        assert_eq!(sig, header);
    }

    #[test]
    fn rotation_header_lists_every_key() {
        let a = SigningKey::parse(&SigningKey::generate()).unwrap();
        let b = SigningKey::parse(&SigningKey::generate()).unwrap();
        let header = signature_header(&[a.clone(), b.clone()], "msg_1", 1, b"x");
        assert_eq!(header.split(' ').count(), 2);
        assert!(a.verify("msg_1", 1, b"x", &header));
        assert!(b.verify("msg_1", 1, b"x", &header));
    }

    #[test]
    fn rejects_bad_secrets() {
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningKey::parse("whsec_!!!").is_err());
        assert!(SigningKey::parse("whsec_AAAA").is_err());
    }
}
