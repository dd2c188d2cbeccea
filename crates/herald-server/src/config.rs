//! Server configuration: one struct, defaults written once, read from (later wins) the
//! built-in defaults, the TOML file (`--config`/`HERALD_CONFIG`), `HERALD_*` environment
//! variables and command-line flags. Documented in `docs/configuration.md`.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use herald_core::destination::DestinationSpec;
use herald_core::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables read into [`Config`] (as `HERALD_<NAME>`).
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "admin_token",
    "allow_networks",
    "master_key",
    "log_format",
    "concurrency",
    "sqlite_synchronous",
    "metrics_token",
    "database_read_connections",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Where the SQLite database and the master key file live.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `<data_dir>/herald.db`) or `postgres://…` (a cluster).
    pub database_url: Option<String>,
    /// Read connections per node (the writer and, on Postgres, the LISTEN connection come
    /// on top).
    pub database_read_connections: u32,
    /// A fixed admin token (otherwise one is created and printed on first start).
    pub admin_token: Option<String>,
    /// CIDRs exempt from the SSRF guard, e.g. `127.0.0.0/8` for local testing.
    pub allow_networks: String,
    /// Base64 of 32 bytes; otherwise `<data_dir>/master.key` (created 0600 on first start).
    pub master_key: Option<String>,
    /// `full` (default: an accepted message survives power loss) or `normal`.
    pub sqlite_synchronous: String,
    /// `text` (default) or `json`.
    pub log_format: String,
    /// Attempts running at once, across all destinations.
    pub concurrency: u32,
    /// Default cap on one destination's attempts running at once.
    pub destination_concurrency: u32,
    /// How long a claimed delivery stays leased (at least the destination's timeout + 10 s).
    pub lease: HumanDuration,
    /// Longest wait a provider's Retry-After may impose.
    pub max_retry_after: HumanDuration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: HumanDuration,
    /// Message bodies and attempts are pruned after this long.
    pub retention: HumanDuration,
    /// Request body cap, except `POST /messages`.
    pub max_body_bytes: usize,
    /// Request body cap of `POST /messages` and `/messages/batch` (attachments).
    pub max_message_bytes: usize,
    /// Cap on the decoded attachments of one message.
    pub max_attachment_bytes: usize,
    /// Cap on one decoded attachment (given as `data` or fetched from its `url`).
    pub max_attachment_file_bytes: usize,
    /// How long fetching one `url` attachment at acceptance may take.
    pub attachment_fetch_timeout: HumanDuration,
    /// How long a graceful shutdown waits for attempts in flight.
    pub shutdown_grace: HumanDuration,
    /// When set, `GET /metrics` requires `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// Error alerts (`POST /api/v1/errors`, the Sentry ingest).
    pub errors: ErrorAlerts,
    /// Body cap of the Sentry ingest after decompression (the compressed body is capped by
    /// `max_body_bytes`).
    pub max_decompressed_bytes: usize,
    /// `[store]`: how the node reaches and checks its database.
    pub store: StoreSettings,
    /// `[portal]`: embedding, access links.
    pub portal: PortalSettings,
    /// `[http]`: the listener's limits against slow and idle clients.
    pub http: HttpSettings,
    /// `[secrets]`: what `${env:…}`/`${file:…}` references may read.
    pub secrets: SecretSettings,
    /// Destinations declared as code; applied on start.
    pub destinations: BTreeMap<String, DestinationSpec>,
}

/// `[store]`: connecting to the database and checking it at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// How long start-up waits for the database to answer (retrying with backoff) before
    /// exiting with the reason.
    pub connect_timeout: HumanDuration,
    /// SQLite databases up to this size get a `PRAGMA quick_check` at start-up; a damaged
    /// one is refused with a message that says what to run. `0` turns the check off.
    pub quick_check_max_bytes: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            connect_timeout: HumanDuration(Duration::from_secs(60)),
            quick_check_max_bytes: 1 << 30,
        }
    }
}

/// `[secrets]`: where references in destinations may read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretSettings {
    /// Only variables whose names start with this can be referenced (`""`: any).
    pub env_prefix: String,
    /// Directories whose files can be referenced (none by default), e.g. `/run/secrets`.
    pub file_dirs: Vec<PathBuf>,
}

impl Default for SecretSettings {
    fn default() -> Self {
        SecretSettings {
            env_prefix: herald_core::destination::DEFAULT_ENV_PREFIX.into(),
            file_dirs: Vec::new(),
        }
    }
}

impl Config {
    /// The policy references resolve under: the `[secrets]` allowlist, and never Herald's
    /// own data directory, key file or database.
    pub fn secret_policy(&self) -> herald_core::destination::SecretPolicy {
        let mut forbidden = vec![self.data_dir.clone()];
        if let Ok(Database::Sqlite(path)) = self.database() {
            forbidden.push(path);
        }
        herald_core::destination::SecretPolicy {
            env_prefix: self.secrets.env_prefix.clone(),
            file_dirs: self.secrets.file_dirs.clone(),
            forbidden,
        }
    }
}

/// `[portal]`: the customer portal (`/portal`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSettings {
    /// Who may embed the portal in a frame (CSP `frame-ancestors`), e.g.
    /// `["https://app.example.com"]`; empty: nobody.
    pub frame_ancestors: Vec<String>,
    /// How long a portal access link opens the portal (and how long at most its session
    /// lasts).
    pub access_ttl: HumanDuration,
    /// The base URL portal links start with (`https://herald.example.com`); otherwise the
    /// address the access request was made to.
    pub public_url: Option<String>,
}

impl Default for PortalSettings {
    fn default() -> Self {
        PortalSettings {
            frame_ancestors: Vec::new(),
            access_ttl: HumanDuration(Duration::from_secs(3600)),
            public_url: None,
        }
    }
}

/// `[http]`: what the listener tolerates from clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request's headers must arrive within this long, or the connection is closed.
    pub header_timeout: HumanDuration,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout: HumanDuration,
    /// Open connections at most; beyond it new ones are closed at once (and counted).
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            max_connections: 4096,
        }
    }
}

/// `[errors]`: when error groups alert (see `herald_core::error_report`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorAlerts {
    /// At most one alert per group per window; also the span spikes are counted over.
    pub window: HumanDuration,
    /// A spike: this many times the previous window's count…
    pub spike_factor: u32,
    /// …and at least this many reports in the current window.
    pub spike_threshold: u32,
}

impl Default for ErrorAlerts {
    fn default() -> Self {
        ErrorAlerts {
            window: HumanDuration(Duration::from_secs(600)),
            spike_factor: 5,
            spike_threshold: 10,
        }
    }
}

impl ErrorAlerts {
    pub fn policy(&self) -> herald_core::error_report::AlertPolicy {
        herald_core::error_report::AlertPolicy {
            window_ms: self.window.0.as_millis().max(1) as i64,
            spike_factor: i64::from(self.spike_factor),
            spike_threshold: i64::from(self.spike_threshold),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("herald-data"),
            database_url: None,
            database_read_connections: 4,
            admin_token: None,
            allow_networks: String::new(),
            master_key: None,
            sqlite_synchronous: "full".into(),
            log_format: "text".into(),
            concurrency: 256,
            destination_concurrency: 16,
            lease: HumanDuration(Duration::from_secs(30)),
            max_retry_after: HumanDuration(Duration::from_secs(3600)),
            idempotency_ttl: HumanDuration(Duration::from_secs(24 * 3600)),
            retention: HumanDuration(Duration::from_secs(30 * 86400)),
            max_body_bytes: 1 << 20,
            max_message_bytes: 16 << 20,
            max_attachment_bytes: herald_core::message::DEFAULT_MAX_ATTACHMENT_BYTES,
            max_attachment_file_bytes: herald_core::message::DEFAULT_MAX_ATTACHMENT_BYTES,
            attachment_fetch_timeout: HumanDuration(Duration::from_secs(30)),
            shutdown_grace: HumanDuration(Duration::from_secs(15)),
            metrics_token: None,
            errors: ErrorAlerts::default(),
            max_decompressed_bytes: 8 << 20,
            store: StoreSettings::default(),
            http: HttpSettings::default(),
            portal: PortalSettings::default(),
            secrets: SecretSettings::default(),
            destinations: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if given), then `HERALD_*` variables.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        f.merge(Env::prefixed("HERALD_").only(ENV_KEYS))
    }

    /// Loads the configuration, with a message naming the bad key on error.
    pub fn load(file: Option<&Path>) -> Result<Config, String> {
        let cfg: Config = Self::figment(file)
            .extract()
            .map_err(|e| format!("configuration: {e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks values whose type alone does not guarantee validity.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.sqlite_synchronous.as_str(), "full" | "normal") {
            return Err("configuration: sqlite_synchronous must be \"full\" or \"normal\"".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err("configuration: log_format must be \"text\" or \"json\"".into());
        }
        if self.concurrency == 0 || self.destination_concurrency == 0 {
            return Err(
                "configuration: concurrency and destination_concurrency must be at least 1".into(),
            );
        }
        if self.errors.window.0.is_zero()
            || self.errors.spike_factor == 0
            || self.errors.spike_threshold == 0
        {
            return Err("configuration: errors.window, errors.spike_factor and errors.spike_threshold must be above zero".into());
        }
        herald_core::netpolicy::NetPolicy::with_allowed(&self.allow_networks)
            .map_err(|e| format!("configuration: allow_networks: {e}"))?;
        if self.database_read_connections == 0 || self.database_read_connections > 256 {
            return Err(
                "configuration: database_read_connections must be between 1 and 256".into(),
            );
        }
        if let Some(t) = &self.admin_token {
            check_admin_token(t)?;
        }
        if self
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err("configuration: metrics_token is empty; unset it (HERALD_METRICS_TOKEN) or give a token".into());
        }
        if self.http.header_timeout.0.is_zero()
            || self.http.idle_timeout.0.is_zero()
            || self.http.max_connections == 0
        {
            return Err("configuration: http.header_timeout, http.idle_timeout and http.max_connections must be above zero".into());
        }
        for a in &self.portal.frame_ancestors {
            let ok = a == "'self'"
                || ((a.starts_with("https://") || a.starts_with("http://"))
                    && !a.contains([' ', ';', ',', '\'', '"']));
            if !ok {
                return Err(format!(
                    "configuration: portal.frame_ancestors: {a:?} is not an origin (https://app.example.com) or 'self'"
                ));
            }
        }
        if self.portal.access_ttl.0.as_secs() < 60
            || self.portal.access_ttl.0.as_secs() > 7 * 86_400
        {
            return Err("configuration: portal.access_ttl must be between 1m and 7d".into());
        }
        if let Some(u) = &self.portal.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(
                "configuration: portal.public_url must start with https:// or http://".into(),
            );
        }
        self.database().map_err(|e| format!("configuration: {e}"))?;
        Ok(())
    }

    /// The database this configuration points at.
    pub fn database(&self) -> Result<Database, String> {
        match &self.database_url {
            None => Ok(Database::Sqlite(self.data_dir.join("herald.db"))),
            Some(url) => Database::parse(url).map_err(|e| format!("database_url: {e}")),
        }
    }
}

/// The shortest fixed admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;
/// The fewest distinct characters a fixed admin token must have (a repeated pattern
/// is long but guessable).
pub const MIN_ADMIN_TOKEN_DISTINCT: usize = 10;

/// A fixed admin token opens everything: refuse an empty, short or low-entropy one rather
/// than start a server that anyone (or no one) can administer. Low entropy, simply put:
/// fewer than [`MIN_ADMIN_TOKEN_DISTINCT`] different characters, or one chunk of at most
/// half the token repeated (`password1234password1234…`). Random tokens, such as the
/// `hrld_…` ones Herald makes, pass.
fn check_admin_token(token: &str) -> Result<(), String> {
    if token.trim().is_empty() {
        return Err("configuration: admin_token (HERALD_ADMIN_TOKEN) is empty; unset it to have Herald create an admin token, or give one of at least 32 random characters".into());
    }
    let chars: Vec<char> = token.chars().collect();
    let distinct = chars.iter().collect::<std::collections::HashSet<_>>().len();
    if chars.len() < MIN_ADMIN_TOKEN_LEN
        || distinct < MIN_ADMIN_TOKEN_DISTINCT
        || shortest_period(&chars) * 2 <= chars.len()
    {
        return Err(format!(
            "configuration: admin_token (HERALD_ADMIN_TOKEN) is too weak: it needs at least {MIN_ADMIN_TOKEN_LEN} characters, at least {MIN_ADMIN_TOKEN_DISTINCT} different ones and no short chunk repeated (e.g. `hrld_` and 32 random letters and digits: openssl rand -hex 24)"
        ));
    }
    Ok(())
}

/// The least `p` with `c[i] == c[i - p]` for every `i >= p`: the length less the longest
/// border (a proper prefix that is also a suffix; KMP's prefix function, linear time).
fn shortest_period(c: &[char]) -> usize {
    let mut border = vec![0usize; c.len()];
    for i in 1..c.len() {
        let mut k = border[i - 1];
        while k > 0 && c[i] != c[k] {
            k = border[k - 1];
        }
        if c[i] == c[k] {
            k += 1;
        }
        border[i] = k;
    }
    c.len() - border.last().copied().unwrap_or(0)
}

/// Where Herald keeps its state.
pub use herald_store::Location as Database;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokens_herald_makes_pass_the_admin_token_check() {
        for _ in 0..1000 {
            let t = crate::auth::new_token("admin", &[crate::auth::Scope::Admin], None, 0).token;
            check_admin_token(&t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }

    #[test]
    fn the_shortest_period_is_found() {
        let p = |s: &str| shortest_period(&s.chars().collect::<Vec<_>>());
        assert_eq!(p("abcabcab"), 3);
        assert_eq!(p("aaaa"), 1);
        assert_eq!(p("abcd"), 4);
        assert_eq!(p("abacaba"), 4);
    }
}
