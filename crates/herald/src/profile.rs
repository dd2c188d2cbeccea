//! Where the CLI finds its Herald: flags, then the environment (`HERALD_URL`,
//! `HERALD_TOKEN`, `HERALD_PROFILE`, which clap reads), then the CLI configuration file
//! (`$XDG_CONFIG_HOME/herald/cli.toml`, else `~/.config/herald/cli.toml`):
//!
//! ```toml
//! url = "http://127.0.0.1:8080"
//! token_file = "~/.config/herald/token"   # or token = "hrld_…"
//!
//! [profiles.prod]
//! url = "https://herald.example.com"
//! token_file = "~/.config/herald/prod.token"
//! ```
//!
//! A profile's keys replace the top-level ones. A file a token is read from must not be
//! readable by group or others (as ssh refuses a private key that is).

use crate::cli::Remote;
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The Herald to call and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub token: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    profiles: BTreeMap<String, Settings>,
}

/// The CLI configuration file's path: under `XDG_CONFIG_HOME` when it is set (and
/// absolute), else `~/.config`.
pub fn config_path() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".config"))
    })?;
    Some(base.join("herald").join("cli.toml"))
}

/// The target for a command: flags and environment first, then the file. A flag or
/// variable set to nothing (`HERALD_PROFILE=`) counts as not given.
pub fn resolve(remote: &Remote) -> Result<Target, String> {
    let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let remote = Remote {
        url: given(&remote.url),
        token: given(&remote.token),
        profile: given(&remote.profile),
        json: remote.json,
    };
    resolve_with(&remote, config_path().as_deref())
}

fn resolve_with(remote: &Remote, file: Option<&Path>) -> Result<Target, String> {
    let needed = remote.url.is_none() || remote.token.is_none() || remote.profile.is_some();
    let (settings, file) = match file.filter(|_| needed) {
        Some(path) => match load(path, remote.profile.as_deref())? {
            Some(s) => (s, Some(path)),
            None => (Settings::default(), None),
        },
        None if remote.profile.is_some() => {
            return Err(
                "--profile/HERALD_PROFILE: there is no CLI configuration file (set HOME or XDG_CONFIG_HOME)"
                    .into(),
            );
        }
        None => (Settings::default(), None),
    };
    let url = match (&remote.url, &settings.url, file) {
        (Some(u), _, _) => normalize_url(u).map_err(|e| format!("--url/HERALD_URL: {e}"))?,
        (None, Some(u), Some(f)) => {
            normalize_url(u).map_err(|e| format!("{}: url: {e}", f.display()))?
        }
        _ => DEFAULT_URL.to_string(),
    };
    let token = match (&remote.token, file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => file_token(&settings, f)?,
        (None, None) => None,
    };
    Ok(Target { url, token })
}

/// Reads the file and picks the settings of `profile` (the top level when `None`);
/// `Ok(None)` when there is no file and no profile was asked for.
fn load(path: &Path, profile: Option<&str>) -> Result<Option<Settings>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match profile {
                None => Ok(None),
                Some(p) => Err(format!(
                    "profile {p:?}: there is no CLI configuration file {}",
                    path.display()
                )),
            };
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let config: FileConfig = Figment::from(Toml::string(&text))
        .extract()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let top = Settings {
        url: config.url,
        token: config.token,
        token_file: config.token_file,
    };
    let Some(name) = profile else {
        return Ok(Some(top));
    };
    let Some(p) = config.profiles.get(name).cloned() else {
        let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
        return Err(format!(
            "{}: no profile {name:?} (profiles: {})",
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    // A profile that names its own token replaces both ways of giving one.
    let own_token = p.token.is_some() || p.token_file.is_some();
    Ok(Some(Settings {
        url: p.url.or(top.url),
        token: if own_token { p.token } else { top.token },
        token_file: if own_token {
            p.token_file
        } else {
            top.token_file
        },
    }))
}

/// The token the file gives: inline (the file itself must then be private) or from
/// `token_file` (that file must be private).
fn file_token(s: &Settings, config: &Path) -> Result<Option<String>, String> {
    match (&s.token, &s.token_file) {
        (Some(_), Some(_)) => Err(format!(
            "{}: give `token` or `token_file`, not both",
            config.display()
        )),
        (Some(t), None) => {
            private(config)?;
            Ok(Some(t.trim().to_string()))
        }
        (None, Some(f)) => {
            let path = expand(f, config);
            private(&path)?;
            let t = std::fs::read_to_string(&path)
                .map_err(|e| format!("token_file {}: {e}", path.display()))?;
            let t = t.trim();
            if t.is_empty() {
                return Err(format!("token_file {}: the file is empty", path.display()));
            }
            Ok(Some(t.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// `~/…` under HOME; a relative path beside the configuration file.
fn expand(p: &Path, config: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if p.is_relative() {
        return config.parent().unwrap_or(Path::new(".")).join(p);
    }
    p.to_path_buf()
}

/// Refuses a file holding a token that group or others may read, as ssh does.
#[cfg(unix)]
fn private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} holds a token but its permissions {mode:04o} let group or others read it; \
             it is not used. Make it private: chmod 600 {}",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_: &Path) -> Result<(), String> {
    Ok(())
}

/// A base URL as typed, made whole: `127.0.0.1:8080` is `http://127.0.0.1:8080`; only
/// http and https; no trailing slash.
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("the URL is empty".into());
    }
    let whole = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let parsed = reqwest::Url::parse(&whole).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{s:?}: the scheme must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} names no host"));
    }
    Ok(whole.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: Option<&str>, token: Option<&str>, profile: Option<&str>) -> Remote {
        Remote {
            url: url.map(str::to_string),
            token: token.map(str::to_string),
            profile: profile.map(str::to_string),
            json: false,
        }
    }

    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    #[test]
    fn a_bare_host_and_port_is_http() {
        assert_eq!(
            normalize_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url("https://h.example/herald/").unwrap(),
            "https://h.example/herald"
        );
        assert_eq!(normalize_url("localhost:9").unwrap(), "http://localhost:9");
        assert!(
            normalize_url("ftp://h")
                .unwrap_err()
                .contains("http or https")
        );
        assert!(normalize_url("").is_err());
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn flags_and_environment_win_over_the_file_and_a_profile_over_the_top_level() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cli.toml");
        write_private(&dir.path().join("prod.token"), "hrld_prod\n");
        write_private(
            &cfg,
            "url = \"127.0.0.1:7000\"\ntoken = \"hrld_top\"\n\n[profiles.prod]\nurl = \"https://prod.example\"\ntoken_file = \"prod.token\"\n\n[profiles.local]\nurl = \"127.0.0.1:7001\"\n",
        );
        let t = resolve_with(&remote(None, None, None), Some(&cfg)).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("http://127.0.0.1:7000", Some("hrld_top"))
        );
        let t = resolve_with(&remote(None, None, Some("prod")), Some(&cfg)).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("https://prod.example", Some("hrld_prod"))
        );
        let t = resolve_with(&remote(None, None, Some("local")), Some(&cfg)).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("http://127.0.0.1:7001", Some("hrld_top")),
            "a profile without a token keeps the top-level one"
        );
        let t = resolve_with(
            &remote(Some("127.0.0.1:1"), Some("hrld_flag"), Some("prod")),
            Some(&cfg),
        )
        .unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("http://127.0.0.1:1", Some("hrld_flag"))
        );
        let err = resolve_with(&remote(None, None, Some("staging")), Some(&cfg)).unwrap_err();
        assert!(
            err.contains("no profile \"staging\" (profiles: local, prod)"),
            "{err}"
        );
    }

    #[test]
    fn no_file_means_the_defaults_unless_a_profile_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("cli.toml");
        let t = resolve_with(&remote(None, None, None), Some(&missing)).unwrap();
        assert_eq!(
            t,
            Target {
                url: DEFAULT_URL.into(),
                token: None
            }
        );
        let err = resolve_with(&remote(None, None, Some("prod")), Some(&missing)).unwrap_err();
        assert!(err.contains("no CLI configuration file"), "{err}");
    }

    #[test]
    fn a_broken_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cli.toml");
        write_private(&cfg, "urll = \"x\"\n");
        let err = resolve_with(&remote(None, None, None), Some(&cfg)).unwrap_err();
        assert!(err.contains("cli.toml") && err.contains("urll"), "{err}");
        write_private(&cfg, "token = \"a\"\ntoken_file = \"b\"\n");
        let err = resolve_with(&remote(None, None, None), Some(&cfg)).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cli.toml");
        let token = dir.path().join("token");
        write_private(&cfg, "token_file = \"token\"\n");
        std::fs::write(&token, "hrld_x").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve_with(&remote(None, None, None), Some(&cfg)).unwrap_err();
        assert!(
            err.contains("permissions 0644") && err.contains("chmod 600"),
            "{err}"
        );
        // A token given on the command line does not read the file at all.
        assert!(resolve_with(&remote(None, Some("hrld_flag"), None), Some(&cfg)).is_ok());
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = resolve_with(&remote(None, None, None), Some(&cfg)).unwrap();
        assert_eq!(t.token.as_deref(), Some("hrld_x"));
    }
}
