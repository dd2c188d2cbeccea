//! Keeping secrets out of what an attempt records.
//!
//! A receiver may echo what it was sent — a debugging endpoint reflecting the request's
//! headers puts `Authorization: Bearer …` and the webhook signature into its answer — and an
//! error may quote the URL it failed on. Before an attempt's response excerpt and error are
//! stored (where `read` tokens and the dashboard see them), [`redact`] replaces every value
//! Herald itself sent in that attempt, and [`scrub_credentials`] anything shaped like a
//! credential, with `****`.
//!
//! ```
//! use herald_core::redact::redact;
//! let sent = vec!["s3cr3t-token-value".to_string()];
//! let echoed = r#"{"headers":{"authorization":"Bearer s3cr3t-token-value"}}"#;
//! assert_eq!(redact(echoed, &sent), r#"{"headers":{"authorization":"Bearer ****"}}"#);
//! ```

/// What a redacted value is replaced with.
pub const MASK: &str = "****";
/// Values shorter than this are not treated as secrets (they would mask ordinary words).
pub const MIN_SECRET_LEN: usize = 6;

/// `text` with every occurrence of each of `secrets` masked, a secret cut off at the end
/// of `text` (an excerpt's limit) included, then [`scrub_credentials`].
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(|s| s.trim())
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in &secrets {
        if out.contains(s) {
            out = out.replace(s, MASK);
        }
    }
    for s in &secrets {
        // The tail of an excerpt may hold the start of a secret.
        let longest_prefix = (MIN_SECRET_LEN.min(s.len())..s.len())
            .rev()
            .find(|&n| s.is_char_boundary(n) && out.ends_with(&s[..n]));
        if let Some(n) = longest_prefix {
            out.truncate(out.len() - n);
            out.push_str(MASK);
        }
    }
    scrub_credentials(&out)
}

/// Masks what looks like a credential whatever sent it: the token after `Bearer ` /
/// `Basic `, Standard Webhooks signatures (`v1,<base64>`), `sha256=<hex>` signatures, and
/// tokens with a well-known prefix (`whsec_`, `hrld_`, Slack's `xox?-`).
pub fn scrub_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (marker, case_insensitive) in MARKERS {
            let Some(head) = rest.get(..marker.len()) else {
                continue;
            };
            let hit = if *case_insensitive {
                head.eq_ignore_ascii_case(marker)
            } else {
                head == *marker
            };
            // A marker starts a word: `Bearer` inside `xBearer` is not one.
            let at_word_start = out
                .chars()
                .last()
                .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            if hit && at_word_start {
                let after = &rest[marker.len()..];
                let value_len = after
                    .find(|c: char| !is_token_char(c))
                    .unwrap_or(after.len());
                if value_len >= 4 {
                    out.push_str(&rest[..marker.len()]);
                    out.push_str(MASK);
                    rest = &after[value_len..];
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Markers after which a credential follows (and whether case is ignored).
const MARKERS: &[(&str, bool)] = &[
    ("bearer ", true),
    ("basic ", true),
    ("v1,", false),
    ("sha256=", false),
    ("whsec_", false),
    ("hrld_", false),
    ("xoxb-", false),
    ("xoxp-", false),
    ("xoxa-", false),
];

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=' | ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_sent_is_masked_even_cut_off_at_the_end() {
        let sent = vec!["abcdef123456".to_string(), "qwerty98765".to_string()];
        assert_eq!(
            redact("x-access: abcdef123456, url ?t=qwerty98765", &sent),
            "x-access: ****, url ?t=****"
        );
        assert_eq!(redact("…x-access: abcdef12", &sent), "…x-access: ****");
        assert_eq!(redact("short ab", &["ab".to_string()]), "short ab");
    }

    #[test]
    fn credential_shapes_are_masked_whoever_sent_them() {
        let s = scrub_credentials(
            "Authorization: Bearer eyJ0eXAi.abc-def; webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= sig sha256=9f86d081884c7d65 whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw hrld_abc_def0123",
        );
        assert_eq!(
            s,
            "Authorization: Bearer ****; webhook-signature: v1,**** sig sha256=**** whsec_**** hrld_****"
        );
        assert_eq!(scrub_credentials("xBearer abcdef"), "xBearer abcdef");
        assert_eq!(
            scrub_credentials("the bearer of bad news"),
            "the bearer of bad news"
        );
        assert_eq!(
            scrub_credentials("日本語 bearer トークン"),
            "日本語 bearer トークン"
        );
    }
}
