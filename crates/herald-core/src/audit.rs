//! The audit log's hash chain.
//!
//! Entry `n` stores `prev_hash` (the hash of entry `n-1`, or 64 zeros for the first) and
//! `hash = SHA-256(prev_hash ‖ "\n" ‖ canonical(entry))`, where the canonical encoding is a
//! JSON array `[seq, at, actor, action, resource, detail]` with object keys sorted. Changing,
//! removing or reordering any entry breaks every hash after it, and [`verify_chain`] names the
//! first entry that no longer fits.
//!
//! **Checkpoints** prove where a chain comes from: at intervals Herald appends an
//! `audit.checkpoint` entry whose detail carries the previous entry's `seq` and `hash` and an
//! ed25519 signature over them. Anyone holding the Herald's public key
//! (`GET /api/v1/audit/public-key`) can check an exported chain offline; a forger who rewrites
//! the chain cannot produce the signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry given its predecessor's hash.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    resource: &str,
    detail: &Value,
) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    if maps_are_sorted() {
        // The same bytes as `canonical_json` of the array, written straight into the hash
        // (no sorted copy of the detail, no intermediate string).
        let entry = (seq, at, actor, action, resource, detail);
        if serde_json::to_writer(HashWriter(&mut h), &entry).is_ok() {
            return hex::encode(h.finalize());
        }
        h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
    }
    let canonical = Value::Array(vec![
        Value::from(seq),
        Value::from(at),
        Value::from(actor),
        Value::from(action),
        Value::from(resource),
        detail.clone(),
    ]);
    h.update(sorted(&canonical).to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Feeds serialized bytes into a hash.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether serde_json's maps keep their keys sorted (its default, a `BTreeMap`; not so if
/// some crate turns on its `preserve_order` feature). Then a value's plain encoding is
/// already canonical.
fn maps_are_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), Value::Null);
        m.insert("a".into(), Value::Null);
        m.keys().map(String::as_str).eq(["a", "b"])
    })
}

/// A copy of `v` whose object keys are in sorted order at every depth, so the encoding does
/// not depend on how a map happened to be built.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

fn checkpoint_message(seq: i64, hash: &str) -> String {
    format!("herald-audit-checkpoint:v1:{seq}:{hash}")
}

/// Signs checkpoints with the Herald's ed25519 key.
pub struct CheckpointSigner(ed25519_dalek::SigningKey);

impl CheckpointSigner {
    /// A new key; returns the signer and its 32 secret bytes (to be sealed and stored).
    pub fn generate() -> (Self, [u8; 32]) {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
        (
            CheckpointSigner(ed25519_dalek::SigningKey::from_bytes(&secret)),
            secret,
        )
    }

    pub fn from_bytes(secret: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = secret.try_into().ok()?;
        Some(CheckpointSigner(ed25519_dalek::SigningKey::from_bytes(
            &bytes,
        )))
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        B64.encode(self.0.verifying_key().to_bytes())
    }

    /// The detail of a checkpoint entry attesting the entry `(seq, hash)`.
    pub fn checkpoint_detail(&self, seq: i64, hash: &str) -> Value {
        let sig = self.0.sign(checkpoint_message(seq, hash).as_bytes());
        json!({"seq": seq, "hash": hash, "signature": B64.encode(sig.to_bytes()), "public_key": self.public_key(), "algorithm": "ed25519"})
    }
}

/// Whether a checkpoint detail's signature verifies with `public_key` (base64).
pub fn verify_checkpoint(public_key: &str, detail: &Value) -> bool {
    let key = B64
        .decode(public_key.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok());
    let sig = detail["signature"]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .map(|s| ed25519_dalek::Signature::from_bytes(&s));
    match (key, sig, detail["seq"].as_i64(), detail["hash"].as_str()) {
        (Some(k), Some(sig), Some(seq), Some(hash)) => k
            .verify(checkpoint_message(seq, hash).as_bytes(), &sig)
            .is_ok(),
        _ => false,
    }
}

/// The outcome of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Verification {
    pub ok: bool,
    pub entries: u64,
    /// Hash of the last entry that verified (the head when `ok`).
    pub head: String,
    /// Checkpoints found (and, with a public key, whose signatures verified).
    #[serde(default)]
    pub checkpoints: u64,
    /// `seq` of the last checkpoint; entries after it are not yet covered by a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<i64>,
    /// Whether checkpoint signatures were checked against a public key.
    #[serde(default)]
    pub signatures_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Incremental verifier, so a chain can be checked page by page or line by line.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev_hash: String,
    prev_seq: Option<i64>,
    entries: u64,
    public_key: Option<String>,
    checkpoints: u64,
    last_checkpoint: Option<i64>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier {
            prev_hash: GENESIS.to_string(),
            prev_seq: None,
            entries: 0,
            public_key: None,
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    /// Also checks every checkpoint's signature against this public key (base64).
    pub fn with_public_key(key: &str) -> Self {
        ChainVerifier {
            public_key: Some(key.trim().to_string()),
            ..Self::new()
        }
    }

    /// Checks the next entry; `Err(reason)` at the first that does not fit.
    pub fn push(&mut self, e: &AuditEntry) -> Result<(), String> {
        if let Some(prev) = self.prev_seq
            && e.seq != prev + 1
        {
            return Err(format!("sequence jumps from {prev} to {}", e.seq));
        }
        if e.prev_hash != self.prev_hash {
            return Err("prev_hash does not match the previous entry's hash".into());
        }
        let expect = entry_hash(
            &e.prev_hash,
            e.seq,
            &e.at,
            &e.actor,
            &e.action,
            &e.resource,
            &e.detail,
        );
        if expect != e.hash {
            return Err("hash does not match the entry's content".into());
        }
        if e.action == CHECKPOINT_ACTION {
            if e.detail["seq"].as_i64() != self.prev_seq
                || e.detail["hash"].as_str() != Some(self.prev_hash.as_str())
            {
                return Err("the checkpoint does not attest the entry before it".into());
            }
            if let Some(key) = &self.public_key
                && !verify_checkpoint(key, &e.detail)
            {
                return Err(
                    "the checkpoint signature does not verify with the given public key".into(),
                );
            }
            self.checkpoints += 1;
            self.last_checkpoint = Some(e.seq);
        }
        self.prev_hash = e.hash.clone();
        self.prev_seq = Some(e.seq);
        self.entries += 1;
        Ok(())
    }

    pub fn finish(&self) -> Verification {
        Verification {
            ok: true,
            entries: self.entries,
            head: self.prev_hash.clone(),
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint,
            signatures_checked: self.public_key.is_some(),
            broken_at: None,
            reason: None,
        }
    }

    pub fn broken(&self, seq: i64, reason: String) -> Verification {
        Verification {
            ok: false,
            broken_at: Some(seq),
            reason: Some(reason),
            ..self.finish()
        }
    }
}

/// Verifies a whole chain held in memory.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Verification {
    let mut v = ChainVerifier::new();
    for e in entries {
        if let Err(reason) = v.push(e) {
            return v.broken(e.seq, reason);
        }
    }
    v.finish()
}

/// Canonical JSON text of a value (object keys sorted at every depth), for hashing.
pub fn canonical_json(v: &Value) -> String {
    if maps_are_sorted() {
        v.to_string()
    } else {
        sorted(v).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_is_over_the_sorted_canonical_array() {
        let detail = json!({"z": [{"y": 1, "x": "é\"\n"}], "a": null, "m": 1.5, "n": -3});
        let canonical = json!([
            7,
            "2026-01-01T00:00:00Z",
            "ann",
            "message.accepted",
            "msg_1",
            detail
        ]);
        let mut h = Sha256::new();
        h.update(b"prev\n");
        h.update(sorted(&canonical).to_string().as_bytes());
        let expected = hex::encode(h.finalize());
        let got = entry_hash(
            "prev",
            7,
            "2026-01-01T00:00:00Z",
            "ann",
            "message.accepted",
            "msg_1",
            &detail,
        );
        assert_eq!(got, expected);
        assert_eq!(canonical_json(&canonical), sorted(&canonical).to_string());
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let detail = json!({"b": seq, "a": "x"});
                let at = "2026-01-01T00:00:00Z".to_string();
                let hash = entry_hash(
                    &prev,
                    seq,
                    &at,
                    "system",
                    "message.accepted",
                    "msg_1",
                    &detail,
                );
                let e = AuditEntry {
                    seq,
                    at,
                    actor: "system".into(),
                    action: "message.accepted".into(),
                    resource: "msg_1".into(),
                    detail,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let v = verify_chain(&c);
        assert!(v.ok);
        assert_eq!(v.entries, 5);
        assert_eq!(v.head, c[4].hash);
    }

    #[test]
    fn tampering_is_found_at_the_entry() {
        let mut c = chain(5);
        c[2].detail = json!({"a": "y", "b": 3});
        let v = verify_chain(&c);
        assert!(!v.ok);
        assert_eq!(v.broken_at, Some(3));

        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify_chain(&c).broken_at, Some(3));
    }

    #[test]
    fn checkpoints_are_signed_and_checked() {
        let (signer, secret) = CheckpointSigner::generate();
        let mut c = chain(3);
        let detail = signer.checkpoint_detail(3, &c[2].hash);
        let at = "2026-01-01T00:00:00Z".to_string();
        let hash = entry_hash(
            &c[2].hash,
            4,
            &at,
            "system",
            CHECKPOINT_ACTION,
            "audit",
            &detail,
        );
        c.push(AuditEntry {
            seq: 4,
            at,
            actor: "system".into(),
            action: CHECKPOINT_ACTION.into(),
            resource: "audit".into(),
            detail,
            prev_hash: c[2].hash.clone(),
            hash,
        });
        let mut v = ChainVerifier::with_public_key(&signer.public_key());
        for e in &c {
            v.push(e).unwrap();
        }
        let r = v.finish();
        assert_eq!(
            (r.checkpoints, r.last_checkpoint, r.signatures_checked),
            (1, Some(4), true)
        );
        assert_eq!(
            CheckpointSigner::from_bytes(&secret).unwrap().public_key(),
            signer.public_key()
        );

        let (other, _) = CheckpointSigner::generate();
        let mut v = ChainVerifier::with_public_key(&other.public_key());
        let err = c.iter().try_for_each(|e| v.push(e)).unwrap_err();
        assert!(err.contains("signature"), "{err}");
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = entry_hash(
            GENESIS,
            1,
            "t",
            "a",
            "b",
            "c",
            &json!({"x": 1, "y": {"q": 1, "p": 2}}),
        );
        let b = entry_hash(
            GENESIS,
            1,
            "t",
            "a",
            "b",
            "c",
            &serde_json::from_str(r#"{"y": {"p": 2, "q": 1}, "x": 1}"#).unwrap(),
        );
        assert_eq!(a, b);
    }
}
