//! Resolving `${env:NAME}` and `${file:PATH}` references at send time, in the fields that
//! carry secrets only, and only from what the [`SecretPolicy`] allows.

use herald_core::destination::{KindSpec, SecretPolicy, Segment, has_reference, parse_references};
use std::path::{Path, PathBuf};

/// Checks every reference in one string field against `policy` without reading anything
/// (for a `PUT`); `Err` names the reference and the rule.
pub fn check_str(s: &str, policy: &SecretPolicy) -> Result<(), String> {
    if !has_reference(s) {
        return Ok(());
    }
    for seg in parse_references(s)? {
        match seg {
            Segment::Literal(_) => {}
            Segment::Env(name) => policy.check_env(name)?,
            Segment::File(path) => {
                allowed_file(path, policy)?;
            }
        }
    }
    Ok(())
}

/// Reads every reference in one string field. Errors name the reference, never a value.
pub fn resolve_str(s: &str, policy: &SecretPolicy) -> Result<String, String> {
    if !has_reference(s) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    for seg in parse_references(s)? {
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Env(name) => {
                policy.check_env(name)?;
                out.push_str(
                    &std::env::var(name)
                        .map_err(|_| format!("environment variable {name} is not set"))?,
                )
            }
            Segment::File(path) => {
                let real = allowed_file(path, policy)?;
                let text = std::fs::read_to_string(&real)
                    .map_err(|e| format!("cannot read {path}: {}", e.kind()))?;
                out.push_str(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
    Ok(out)
}

/// The file a `${file:…}` reference names, resolved through every symlink, if it lies in
/// one of the allowed directories and outside Herald's own files.
fn allowed_file(path: &str, policy: &SecretPolicy) -> Result<PathBuf, String> {
    if policy.file_dirs.is_empty() {
        return Err(format!(
            "`${{file:{path}}}`: no directory is allowed for file references; list one in [secrets] file_dirs (e.g. /run/secrets)"
        ));
    }
    let real = std::fs::canonicalize(path)
        .map_err(|e| format!("`${{file:{path}}}`: cannot resolve the path: {}", e.kind()))?;
    let under = |dir: &Path| {
        std::fs::canonicalize(dir)
            .map(|d| real.starts_with(d))
            .unwrap_or(false)
    };
    if policy.forbidden.iter().any(|f| under(f)) {
        return Err(format!(
            "`${{file:{path}}}`: Herald's own files (its data directory, key and database) cannot be referenced"
        ));
    }
    if !policy.file_dirs.iter().any(|d| under(d)) {
        return Err(format!(
            "`${{file:{path}}}`: the file (after following links) is outside [secrets] file_dirs"
        ));
    }
    Ok(real)
}

/// Checks the references of every secret-bearing field of `kind` (see [`check_str`]).
pub fn check_kind(kind: &KindSpec, policy: &SecretPolicy) -> Result<(), (String, String)> {
    let mut k = kind.clone();
    k.visit_secret_fields(&mut |field, v| {
        check_str(v, policy).map_err(|e| format!("{field}\u{0}{e}"))
    })
    .map_err(|e| match e.split_once('\u{0}') {
        Some((field, why)) => (field.to_string(), why.to_string()),
        None => (String::new(), e),
    })
}

/// A copy of the kind settings with the references of its secret-bearing fields replaced
/// by their current values.
pub fn resolve_kind(kind: &KindSpec, policy: &SecretPolicy) -> Result<KindSpec, String> {
    let mut k = kind.clone();
    k.visit_secret_fields(&mut |field, v| {
        if has_reference(v) {
            *v = resolve_str(v, policy).map_err(|e| format!("{field}: {e}"))?;
        }
        Ok(())
    })?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dirs: &[&Path], forbidden: &[&Path]) -> SecretPolicy {
        SecretPolicy {
            file_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            forbidden: forbidden.iter().map(|d| d.to_path_buf()).collect(),
            ..SecretPolicy::default()
        }
    }

    #[test]
    fn resolves_allowed_env_and_file_inside_longer_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        // SAFETY: this test is the only one touching this variable.
        unsafe { std::env::set_var("HERALD_SECRET_TEST_TOKEN_A", "tok") };
        let p = policy(&[dir.path()], &[]);
        let s = format!(
            "Bearer ${{env:HERALD_SECRET_TEST_TOKEN_A}} ${{file:{}}}",
            file.display()
        );
        assert_eq!(resolve_str(&s, &p).unwrap(), "Bearer tok s3cr3t");
        assert!(
            resolve_str("${env:HERALD_SECRET_SURELY_UNSET}", &p)
                .unwrap_err()
                .contains("not set")
        );
    }

    #[test]
    fn nothing_outside_the_allowlist_is_read() {
        let allowed = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let key = data.path().join("master.key");
        std::fs::write(&key, "THE-MASTER-KEY").unwrap();
        let p = policy(&[allowed.path()], &[data.path()]);
        // SAFETY: this test is the only one touching these variables.
        unsafe { std::env::set_var("HERALD_ADMIN_TOKEN_FOR_THIS_TEST", "adm") };
        let e = resolve_str("${env:HERALD_ADMIN_TOKEN_FOR_THIS_TEST}", &p).unwrap_err();
        assert!(e.contains("HERALD_SECRET_") && !e.contains("adm"), "{e}");
        // Outside the allowed directory, directly or through a link inside it.
        let e = resolve_str(&format!("${{file:{}}}", key.display()), &p).unwrap_err();
        assert!(!e.contains("THE-MASTER-KEY"), "{e}");
        #[cfg(unix)]
        {
            let link = allowed.path().join("innocent");
            std::os::unix::fs::symlink(&key, &link).unwrap();
            let e = resolve_str(&format!("${{file:{}}}", link.display()), &p).unwrap_err();
            assert!(
                e.contains("Herald's own files") && !e.contains("THE-MASTER-KEY"),
                "{e}"
            );
            let wide = policy(&[Path::new("/")], &[data.path()]);
            let e = resolve_str(&format!("${{file:{}}}", key.display()), &wide).unwrap_err();
            assert!(e.contains("Herald's own files"), "{e}");
        }
        let none = SecretPolicy::default();
        assert!(
            resolve_str("${file:/etc/hostname}", &none)
                .unwrap_err()
                .contains("file_dirs")
        );
    }
}
