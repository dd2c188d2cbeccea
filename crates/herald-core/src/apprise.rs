//! The Apprise API's notify vocabulary, for `POST /notify/{key}`: notification types,
//! body formats and tag expressions.
//!
//! Tags follow Apprise: in a string, a comma means OR and a space AND (`"devops, ops
//! prod"` = devops OR (ops AND prod)); a list is an OR of its entries (each entry may
//! itself hold spaces).
//!
//! ```
//! use herald_core::apprise::TagExpr;
//! let e = TagExpr::parse_str("devops, ops prod").unwrap();
//! assert!(e.matches(&["ops".into(), "prod".into()]));
//! assert!(!e.matches(&["ops".into()]));
//! ```

use crate::message::Severity;

/// Apprise's notification types and the severity each becomes.
pub fn severity_of(kind: &str) -> Option<Severity> {
    match kind {
        "info" | "success" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "failure" => Some(Severity::Error),
        _ => None,
    }
}

/// Apprise's body formats.
pub fn is_format(f: &str) -> bool {
    matches!(f, "text" | "markdown" | "html")
}

/// OR of ANDs of tags (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagExpr(pub Vec<Vec<String>>);

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

impl TagExpr {
    /// `"a, b c"` → a OR (b AND c). `None` when a tag has characters Apprise rejects.
    pub fn parse_str(s: &str) -> Option<TagExpr> {
        Self::parse_list(&[s])
    }

    /// A list of entries, ORed; each entry parsed as a string.
    pub fn parse_list<S: AsRef<str>>(entries: &[S]) -> Option<TagExpr> {
        let mut any = Vec::new();
        for entry in entries {
            for alt in entry.as_ref().split(',') {
                let all: Vec<String> = alt
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
                if all.iter().any(|t| !valid_tag(t)) {
                    return None;
                }
                if !all.is_empty() {
                    any.push(all);
                }
            }
        }
        Some(TagExpr(any))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a destination with these tags is selected (an empty expression selects all).
    pub fn matches(&self, tags: &[String]) -> bool {
        self.is_empty()
            || self.0.iter().any(|all| {
                all.iter()
                    .all(|t| tags.iter().any(|have| have.eq_ignore_ascii_case(t)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn comma_is_or_space_is_and() {
        let e = TagExpr::parse_str("TagA TagC, TagB").unwrap();
        assert_eq!(
            e.0,
            vec![vec!["taga".to_string(), "tagc".into()], vec!["tagb".into()]]
        );
        assert!(e.matches(&tags(&["tagb"])));
        assert!(e.matches(&tags(&["taga", "tagc", "x"])));
        assert!(!e.matches(&tags(&["taga"])));
        let l = TagExpr::parse_list(&["a", "b c"]).unwrap();
        assert!(
            l.matches(&tags(&["a"])) && l.matches(&tags(&["b", "c"])) && !l.matches(&tags(&["c"]))
        );
        assert!(TagExpr::parse_str(" , ").unwrap().is_empty());
        assert!(TagExpr::parse_str("").unwrap().matches(&[]));
        assert_eq!(TagExpr::parse_str("bad/tag"), None);
    }

    #[test]
    fn types_and_formats() {
        assert_eq!(severity_of("failure"), Some(Severity::Error));
        assert_eq!(severity_of("success"), Some(Severity::Info));
        assert_eq!(severity_of("loud"), None);
        assert!(is_format("markdown") && !is_format("rtf"));
    }
}
