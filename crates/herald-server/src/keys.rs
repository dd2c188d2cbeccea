//! The master key that seals secrets at rest: `HERALD_MASTER_KEY`, or a key file created
//! with mode 0600 on first start. A database remembers a value sealed with its key, and a
//! node whose key cannot open it refuses to start.

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
        _ => Err("the master key does not match the one this database was created with (check HERALD_MASTER_KEY or the master.key file)".into()),
    }
}
