//! The master key that seals secrets at rest: `HERALD_MASTER_KEY`, or a key file created
//! with mode 0600 on first start. A database remembers a value sealed with its key, and a
//! node whose key cannot open it refuses to start.

use herald_core::audit::CheckpointSigner;
use herald_core::crypto::SecretBox;
use herald_store::Store;
use std::path::Path;

const KEY_FILE: &str = "master.key";
const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAIN: &[u8] = b"herald key check v1";

/// Loads the master key from configuration or the key file, creating the file if needed.
pub fn load_master_key(configured: Option<&str>, data_dir: &Path) -> Result<SecretBox, String> {
    if let Some(k) = configured {
        return SecretBox::from_base64(k).map_err(|e| format!("HERALD_MASTER_KEY: {e}"));
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => SecretBox::from_base64(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretBox::generate_key();
            write_private(&path, &key)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            SecretBox::from_base64(&key).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// Makes sure the store was sealed with this key (recording it on first use).
pub async fn verify_key(store: &dyn Store, secrets: &SecretBox) -> Result<(), String> {
    let stored = store
        .init_meta(KEY_CHECK, &secrets.seal(KEY_CHECK_PLAIN))
        .await
        .map_err(|e| e.to_string())?;
    match secrets.open(&stored) {
        Ok(plain) if plain == KEY_CHECK_PLAIN => Ok(()),
        _ => Err("the master key does not match the one this database was created with (check HERALD_MASTER_KEY or the master.key file; \
                  if a key rotation was interrupted, master.key.new holds the new key)"
            .into()),
    }
}

/// The `meta` key under which the sealed audit signing key is kept.
pub const SIGNING_KEY: &str = "audit_signing_key";

/// The master key if one is configured or its file exists; never creates one (for
/// commands that must not change anything, such as `herald doctor`).
pub fn read_master_key(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<Option<SecretBox>, String> {
    let exists = data_dir.join(KEY_FILE).exists();
    if configured.is_none() && !exists {
        return Ok(None);
    }
    load_master_key(configured, data_dir).map(Some)
}

/// The public key of a sealed signing key (as stored under [`SIGNING_KEY`]).
pub fn public_key_of(secrets: &SecretBox, sealed: &str) -> Result<String, String> {
    let secret = secrets.open(sealed).map_err(|e| {
        format!("the audit signing key cannot be unsealed with this master key: {e}")
    })?;
    CheckpointSigner::from_bytes(&secret)
        .map(|s| s.public_key())
        .ok_or_else(|| "audit signing key: stored key is malformed".to_string())
}

/// The ed25519 key that signs audit checkpoints: created on first start, kept sealed in the
/// store so every node of a cluster signs with the same key.
pub async fn load_signer(
    store: &dyn Store,
    secrets: &SecretBox,
) -> Result<CheckpointSigner, String> {
    let (_, fresh) = CheckpointSigner::generate();
    let stored = store
        .init_meta(SIGNING_KEY, &secrets.seal(&fresh))
        .await
        .map_err(|e| e.to_string())?;
    let secret = secrets
        .open(&stored)
        .map_err(|e| format!("audit signing key: {e}"))?;
    CheckpointSigner::from_bytes(&secret)
        .ok_or_else(|| "audit signing key: stored key is malformed".to_string())
}

/// Re-seals every secret of the store under a new master key, in one transaction. With a
/// key file, the new key is written next to it first and moved into place after the
/// commit, so an interruption leaves a clear way back. Returns the new key (base64).
pub async fn rotate(
    store: &dyn Store,
    old: &SecretBox,
    new_key: Option<String>,
    key_file: Option<&Path>,
    actor: &str,
) -> Result<String, String> {
    verify_key(store, old).await?;
    let new_key = new_key.unwrap_or_else(SecretBox::generate_key);
    let new = SecretBox::from_base64(&new_key).map_err(|e| format!("new key: {e}"))?;
    let mut destinations = Vec::new();
    for row in store.list_destinations().await.map_err(|e| e.to_string())? {
        let plain = old
            .open(&row.sealed_spec)
            .map_err(|e| format!("destination {}: {e}", row.name))?;
        destinations.push((row.name, new.seal(&plain)));
    }
    let mut meta = vec![(KEY_CHECK.to_string(), new.seal(KEY_CHECK_PLAIN))];
    if let Some(sealed) = store
        .get_meta(SIGNING_KEY)
        .await
        .map_err(|e| e.to_string())?
    {
        let plain = old
            .open(&sealed)
            .map_err(|e| format!("audit signing key: {e}"))?;
        meta.push((SIGNING_KEY.to_string(), new.seal(&plain)));
    }
    let pending = key_file.map(|f| f.with_extension("key.new"));
    if let Some(p) = &pending {
        let _ = std::fs::remove_file(p);
        write_private(p, &new_key).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    store
        .reseal(destinations, meta, actor, herald_core::clock::now_ms())
        .await
        .map_err(|e| e.to_string())?;
    if let (Some(p), Some(f)) = (&pending, key_file) {
        std::fs::rename(p, f).map_err(|e| {
            format!(
                "the store uses the new key, but moving {} to {} failed: {e}; move it by hand",
                p.display(),
                f.display()
            )
        })?;
    }
    Ok(new_key)
}

/// The key file of a data directory (used when `HERALD_MASTER_KEY` is not set).
pub fn key_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(KEY_FILE)
}
