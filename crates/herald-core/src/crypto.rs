//! Secrets at rest: XChaCha20-Poly1305 with a 32-byte master key. A sealed value is
//! `base64(nonce ‖ ciphertext)`, so it fits in a text column of either store. The same key
//! also keys fingerprints ([`SecretBox::mac`]) of values that must not be stored in a form
//! a copy of the database could test guesses against.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be base64 of exactly 32 bytes")]
    BadKey,
    #[error("sealed value is malformed or was sealed with another master key")]
    Open,
}

/// Seals and opens secrets with the master key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// Keys [`SecretBox::mac`]: derived from the master key, never the key itself.
    mac_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(****)")
    }
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.into()),
            mac_key: hmac_sha256(key, &[b"herald mac key v1"]),
        }
    }

    /// A keyed fingerprint of `data` for `purpose` (HMAC-SHA256 under a key derived from
    /// the master key): equal data gives an equal fingerprint under the same master key,
    /// and without the key no guess of `data` can be checked against it.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.mac_key, &[purpose.as_bytes(), b"\0", data])
    }

    /// Parses `HERALD_MASTER_KEY` (base64 of 32 bytes).
    pub fn from_base64(key: &str) -> Result<Self, CryptoError> {
        let raw = B64.decode(key.trim()).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = raw.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self::new(&key))
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_key() -> String {
        B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, plaintext)
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = B64.decode(sealed).map_err(|_| CryptoError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| CryptoError::Open)
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_wrong_key() {
        let a = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let b = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let sealed = a.seal("xoxb-토큰".as_bytes());
        assert_eq!(a.open(&sealed).unwrap(), "xoxb-토큰".as_bytes());
        assert!(b.open(&sealed).is_err());
        assert!(a.open("not base64!").is_err());
        assert!(SecretBox::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn fingerprints_depend_on_the_key_the_purpose_and_the_data() {
        let key = SecretBox::generate_key();
        let a = SecretBox::from_base64(&key).unwrap();
        let b = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        let same = SecretBox::from_base64(&key).unwrap();
        assert_eq!(a.mac("p", b"token"), same.mac("p", b"token"));
        assert_ne!(a.mac("p", b"token"), b.mac("p", b"token"));
        assert_ne!(a.mac("p", b"token"), a.mac("q", b"token"));
        assert_ne!(a.mac("p", b"token"), a.mac("p", b"token2"));
    }
}
