//! `${env:NAME}` and `${file:PATH}` references inside string fields, and masking of the
//! secrets that are written inline instead.

const MASK: &str = "****";

/// Where references may read from: only variables whose names start with `env_prefix`,
/// only files inside `file_dirs`, and never Herald's own files (`forbidden`: the data
/// directory, the key file, the database). Anything else the process can read stays out
/// of reach of whoever may edit a destination.
#[derive(Debug, Clone)]
pub struct SecretPolicy {
    pub env_prefix: String,
    pub file_dirs: Vec<std::path::PathBuf>,
    pub forbidden: Vec<std::path::PathBuf>,
}

/// The prefix a variable's name needs by default (`[secrets] env_prefix`).
pub const DEFAULT_ENV_PREFIX: &str = "HERALD_SECRET_";

impl Default for SecretPolicy {
    fn default() -> Self {
        SecretPolicy {
            env_prefix: DEFAULT_ENV_PREFIX.to_string(),
            file_dirs: Vec::new(),
            forbidden: Vec::new(),
        }
    }
}

impl SecretPolicy {
    /// Refuses a variable outside the allowed prefix.
    pub fn check_env(&self, name: &str) -> Result<(), String> {
        if self.env_prefix.is_empty() || name.starts_with(&self.env_prefix) {
            return Ok(());
        }
        Err(format!(
            "`${{env:{name}}}`: only variables whose names start with {} can be referenced ([secrets] env_prefix)",
            self.env_prefix
        ))
    }
}

/// Whether `s` contains a `${env:…}` or `${file:…}` reference.
pub fn has_reference(s: &str) -> bool {
    s.contains("${env:") || s.contains("${file:")
}

/// A piece of a string field: literal text or a reference to resolve at send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'a> {
    Literal(&'a str),
    Env(&'a str),
    File(&'a str),
}

/// Splits a string field into literals and references; an unterminated or unknown
/// `${…}` is an error.
pub fn parse_references(s: &str) -> Result<Vec<Segment<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Segment::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` reference".to_string())?;
        let inner = &after[..end];
        let seg = if let Some(name) = inner.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "`${{env:{name}}}`: variable names are [A-Za-z0-9_]+"
                ));
            }
            Segment::Env(name)
        } else if let Some(path) = inner.strip_prefix("file:") {
            if !path.starts_with('/') {
                return Err(format!("`${{file:{path}}}`: the path must be absolute"));
            }
            Segment::File(path)
        } else {
            return Err(format!(
                "`${{{inner}}}`: references are ${{env:NAME}} or ${{file:/path}}"
            ));
        };
        out.push(seg);
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    Ok(out)
}

/// Whether a header (by name) typically carries a credential.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "secret",
        "key",
        "cookie",
        "password",
        "signature",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Whether a value looks like one [`mask`] produced: sending it back would overwrite the
/// real secret with the mask.
pub fn looks_masked(value: &str) -> bool {
    value.contains(MASK)
}

/// A URL whose path and query are the secret (Slack, Discord, Teams webhooks), as shown
/// on read: the origin stays readable, the rest is masked like [`mask`].
pub fn mask_url(value: &str) -> String {
    if has_reference(value) {
        return value.to_string();
    }
    match url::Url::parse(value) {
        Ok(u) if u.host_str().is_some() => {
            let origin = u.origin().ascii_serialization();
            let rest = &value[value.find(&origin).map_or(0, |i| i + origin.len())..];
            format!("{origin}/{}", mask(rest))
        }
        _ => mask(value),
    }
}

/// A URL with an inline password (`smtp://user:pass@host`), as shown on read: only the
/// password is masked.
pub fn mask_url_password(value: &str) -> String {
    if has_reference(value) {
        return value.to_string();
    }
    match url::Url::parse(value) {
        Ok(mut u) if u.password().is_some() => {
            if u.set_password(Some(MASK)).is_err() {
                return mask(value);
            }
            u.to_string()
        }
        Ok(_) => value.to_string(),
        Err(_) => mask(value),
    }
}

/// A secret value as shown on read: references stay visible (they are not secrets),
/// inline values are masked but for a short tail that helps tell them apart.
pub fn mask(value: &str) -> String {
    if has_reference(value) {
        return value.to_string();
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 20 {
        format!(
            "{MASK}{}",
            chars[chars.len() - 4..].iter().collect::<String>()
        )
    } else {
        MASK.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_origin_and_lose_their_secret() {
        let hook = "https://hooks.slack.com/services/T000/B000/abcdefghijklmnopqrstuvwx";
        let m = mask_url(hook);
        assert_eq!(m, "https://hooks.slack.com/****uvwx");
        assert!(looks_masked(&m));
        assert_eq!(mask_url("${env:SLACK_HOOK}"), "${env:SLACK_HOOK}");
        assert_eq!(mask_url("not a url"), "****");
    }

    #[test]
    fn only_the_smtp_password_is_masked() {
        assert_eq!(
            mask_url_password("smtps://herald:hunter2@mail.example.com:465"),
            "smtps://herald:****@mail.example.com:465"
        );
        assert_eq!(
            mask_url_password("smtp://mail.example.com?tls=none"),
            "smtp://mail.example.com?tls=none"
        );
        assert_eq!(
            mask_url_password("smtp://u:${env:SMTP_PASSWORD}@mail.example.com"),
            "smtp://u:${env:SMTP_PASSWORD}@mail.example.com"
        );
    }
}
