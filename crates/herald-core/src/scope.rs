//! What an API token may do. `admin` implies the others.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Submit messages and error reports.
    Send,
    /// Read messages, deliveries, destinations, the DLQ and the audit log.
    Read,
    /// Everything, including destinations, DLQ changes and tokens.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Send, Scope::Read, Scope::Admin];

    /// Scopes as stored: words separated by spaces. A word this version does not know is
    /// left out (it grants nothing).
    pub fn parse_list(s: &str) -> Vec<Scope> {
        s.split_whitespace().filter_map(Scope::parse).collect()
    }

    /// The stored form of `scopes`.
    pub fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_stored_form() {
        let all = Scope::ALL.to_vec();
        assert_eq!(Scope::join(&all), "send read admin");
        assert_eq!(Scope::parse_list("send read admin"), all);
        assert_eq!(Scope::parse_list(" admin  future "), vec![Scope::Admin]);
        assert_eq!(
            serde_json::to_string(&all).unwrap(),
            r#"["send","read","admin"]"#
        );
    }
}
