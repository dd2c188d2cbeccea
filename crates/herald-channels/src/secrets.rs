//! Resolving `${env:NAME}` and `${file:PATH}` references at send time.

use herald_core::destination::{KindSpec, Segment, has_reference, parse_references};
use serde_json::Value;

/// Reads every reference in one string field.
pub fn resolve_str(s: &str) -> Result<String, String> {
    if !has_reference(s) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    for seg in parse_references(s)? {
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Env(name) => out.push_str(
                &std::env::var(name)
                    .map_err(|_| format!("environment variable {name} is not set"))?,
            ),
            Segment::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                out.push_str(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
    Ok(out)
}

fn resolve_value(v: &mut Value) -> Result<(), String> {
    match v {
        Value::String(s) if has_reference(s) => *s = resolve_str(s)?,
        Value::Array(items) => items.iter_mut().try_for_each(resolve_value)?,
        Value::Object(map) => map.values_mut().try_for_each(resolve_value)?,
        _ => {}
    }
    Ok(())
}

/// A copy of the kind settings with every reference replaced by its current value.
pub fn resolve_kind(kind: &KindSpec) -> Result<KindSpec, String> {
    let mut v = serde_json::to_value(kind).map_err(|e| e.to_string())?;
    resolve_value(&mut v)?;
    serde_json::from_value(v).map_err(|e| format!("resolved settings are invalid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_env_and_file_inside_longer_values() {
        let dir = std::env::temp_dir().join(format!("herald-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cr3t\n").unwrap();
        // SAFETY: this test is the only one touching this variable.
        unsafe { std::env::set_var("HERALD_TEST_TOKEN_A", "tok") };
        let s = format!(
            "Bearer ${{env:HERALD_TEST_TOKEN_A}} ${{file:{}}}",
            dir.display()
        );
        assert_eq!(resolve_str(&s).unwrap(), "Bearer tok s3cr3t");
        assert!(
            resolve_str("${env:HERALD_TEST_SURELY_UNSET}")
                .unwrap_err()
                .contains("not set")
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
