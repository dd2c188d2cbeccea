//! Every command-line flag, in one place (help text included).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// `herald --version`: the release, the commit it was built from, and when.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HERALD_COMMIT"),
    ", built ",
    env!("HERALD_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "herald",
    version = LONG_VERSION,
    about = "Durable outbound messages: webhooks, chat, email, SMS."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a running Herald.
#[derive(Args, Clone)]
pub struct Remote {
    /// Herald's base URL.
    #[arg(
        long,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An API token.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run Herald (embedded SQLite by default).
    Serve(ServeArgs),
    /// Send a message.
    Send {
        #[command(flatten)]
        remote: Remote,
        /// The message text.
        text: Option<String>,
        /// Destination names (comma-separated); routed by event type when absent.
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
        #[arg(long, default_value = "message")]
        event_type: String,
        #[arg(long)]
        title: Option<String>,
        /// info, warning, error or critical.
        #[arg(long, default_value = "info")]
        severity: String,
        /// A JSON object.
        #[arg(long)]
        payload: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Attach a file (repeatable); its type is guessed from the extension.
        #[arg(long = "attach", value_name = "PATH")]
        attach: Vec<std::path::PathBuf>,
        /// Attach a picture shown inside the email's HTML (repeatable).
        #[arg(long = "attach-inline", value_name = "PATH")]
        attach_inline: Vec<std::path::PathBuf>,
    },
    /// Manage destinations.
    Destinations {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: DestinationAction,
    },
    /// List deliveries, or show one with its attempts.
    Deliveries {
        #[command(flatten)]
        remote: Remote,
        /// Show this delivery with its attempts.
        id: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        message_id: Option<String>,
        /// Deliveries of the message accepted with this idempotency key.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// API tokens.
    Tokens {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Re-seal every stored secret under a new master key (run with the server stopped).
    RotateMasterKey {
        #[command(flatten)]
        server: ServeArgs,
        /// The new key (base64 of 32 bytes); generated when absent.
        #[arg(long, env = "HERALD_NEW_MASTER_KEY", hide_env_values = true)]
        new_key: Option<String>,
    },
    /// Check a store for damage without changing it: integrity, schema, the audit chain,
    /// orphan rows. Exits 1 when something is wrong.
    Doctor {
        #[command(flatten)]
        server: ServeArgs,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the database schema of this Herald (nodes also do it on start).
    Migrate {
        #[command(flatten)]
        server: ServeArgs,
    },
    /// Copy a whole store into a new, empty database, e.g. from SQLite to Postgres (run with
    /// every node stopped).
    MigrateStore {
        /// The database to copy: sqlite://PATH or postgres://…
        #[arg(long)]
        from: String,
        /// The empty database to fill: postgres://… or sqlite://PATH
        #[arg(long)]
        to: String,
    },
    /// Print a shell completion script: `herald completions bash > /etc/bash_completion.d/herald`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (herald.1, herald-serve.1, …) into a directory (packaging).
    #[command(hide = true)]
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Ask a Herald whether it is ready (`GET /readyz` answers 200): exit 0 if so, 1 if not.
    /// The address comes from --url, else from the configuration's `listen` (0.0.0.0 and
    /// [::] are asked on loopback), so a container's HEALTHCHECK or a unit's ExecStartPost
    /// needs no curl.
    Healthcheck {
        #[command(flatten)]
        server: ServeArgs,
        /// Herald's base URL, e.g. http://127.0.0.1:8080 [default: from `listen`].
        #[arg(long)]
        url: Option<String>,
        /// Keep asking (every 250 ms) for up to this long, e.g. `60s`; once when absent.
        #[arg(long, value_parser = herald_core::duration::parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// The audit log.
    Audit {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN")]
    pub listen: Option<String>,
    /// Data directory [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://<data-dir>/herald.db].
    #[arg(long, env = "HERALD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "HERALD_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The store to open directly instead of calling a server. No environment variables here:
/// a shell that exports HERALD_DATA_DIR must not turn an online command into an offline one.
#[derive(Args)]
pub struct OfflineStore {
    /// Open the SQLite store in this data directory (stop its Herald first).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Open this database: sqlite://PATH, or postgres://… (nodes may keep running).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Open the store that this server configuration file names.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl OfflineStore {
    /// The configuration of the store to open, or `None` to call a server instead.
    pub fn into_serve_args(self) -> Option<ServeArgs> {
        let given = self.data_dir.is_some() || self.database_url.is_some() || self.config.is_some();
        given.then_some(ServeArgs {
            listen: None,
            data_dir: self.data_dir,
            database_url: self.database_url,
            config: self.config,
            log_format: None,
        })
    }
}

#[derive(Subcommand)]
pub enum DestinationAction {
    /// List destinations.
    List,
    /// Show one destination (secrets masked).
    Get { name: String },
    /// Create or replace a destination from a JSON file (`-` for standard input).
    Put {
        name: String,
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Delete a destination.
    Delete { name: String },
    /// Send a test message now and show the attempt.
    Test { name: String },
}

#[derive(Subcommand)]
pub enum DlqAction {
    /// List dead deliveries.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Replay one dead delivery (QUEUE ID), every one in a queue (QUEUE --all), or every
    /// one in every queue (--all), with a progress bar on a terminal.
    Replay {
        queue: Option<String>,
        id: Option<String>,
        #[arg(long)]
        all: bool,
        /// With --all: only this event type.
        #[arg(long)]
        event_type: Option<String>,
        /// With --all: only deliveries dead since this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Discard one dead delivery.
    Discard { queue: String, id: String },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Create a token (shown once). With --data-dir, --database-url or --config it is
    /// written straight into the store, without a server (recovery: a lost admin token).
    Create {
        name: String,
        /// send, read, admin (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "send")]
        scopes: Vec<String>,
        #[command(flatten)]
        offline: OfflineStore,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Verify the chain of a server, or of an exported file (offline) with --file.
    Verify {
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: check checkpoint signatures against this ed25519 public key (base64,
        /// from `GET /api/v1/audit/public-key`).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write the chain as JSON Lines.
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}
