//! Where a store lives: an embedded SQLite file or a shared Postgres database.

use std::path::PathBuf;

/// A database location, parsed from `sqlite://PATH` or `postgres://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One embedded SQLite file (one node).
    Sqlite(PathBuf),
    /// A Postgres database shared by every node of a cluster.
    Postgres(String),
}

impl Location {
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(p) = url.strip_prefix("sqlite://") {
            let p = p.split('?').next().unwrap_or_default();
            if p.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://herald-data/herald.db".into(),
                );
            }
            Ok(Location::Sqlite(PathBuf::from(p)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Location::Postgres(url.to_string()))
        } else {
            Err(format!(
                "expected sqlite://PATH or postgres://USER@HOST/DB, got {:?}",
                redact_url(url)
            ))
        }
    }

    /// The location as a URL without any password, for messages and logs.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("sqlite://{}", p.display()),
            Location::Postgres(url) => redact_url(url),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts() {
        assert_eq!(
            Location::parse("sqlite://data/h.db").unwrap(),
            Location::Sqlite("data/h.db".into())
        );
        assert!(Location::parse("sqlite://").is_err());
        let pg = Location::parse("postgres://u:pw@127.0.0.1:5432/test").unwrap();
        assert_eq!(pg.describe(), "postgres://u:***@127.0.0.1:5432/test");
        let err = Location::parse("mysql://u:pw@h/db").unwrap_err();
        assert!(err.contains("u:***@h/db") && !err.contains("pw"), "{err}");
    }
}
