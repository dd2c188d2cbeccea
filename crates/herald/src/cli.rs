//! Every command-line flag, in one place (help text and examples included).

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use herald_core::delivery::DeliveryStatus;
use herald_core::error_report::GroupStatus;
use herald_core::scope::Scope;
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
    about = "Durable outbound messages: webhooks, chat, email, SMS.",
    after_help = "Examples:
  herald serve
  herald send \"disk full on db-1\" --to ops-slack --severity error
  herald deliveries --status pending

Commands other than serve talk to a running Herald: --url/HERALD_URL and --token/HERALD_TOKEN,
or `url` and `token_file` in ~/.config/herald/cli.toml (see `herald help deliveries`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach a running Herald. Flags win over the environment, which wins over the
/// CLI configuration file (`$XDG_CONFIG_HOME/herald/cli.toml`, else
/// `~/.config/herald/cli.toml`).
#[derive(Args, Clone)]
pub struct Remote {
    /// Herald's base URL; `127.0.0.1:8080` means http://127.0.0.1:8080 [default: `url` of
    /// the CLI configuration file, else http://127.0.0.1:8080].
    #[arg(long, env = "HERALD_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// An API token [default: `token` or `token_file` of the CLI configuration file].
    #[arg(
        long,
        env = "HERALD_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Use this profile (`[profiles.NAME]`) of the CLI configuration file.
    #[arg(long, env = "HERALD_PROFILE", global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A message's severity, as the API takes it.
#[derive(Clone, Copy, ValueEnum)]
pub enum SeverityArg {
    Info,
    Warning,
    Error,
    Critical,
}

impl SeverityArg {
    pub fn as_str(self) -> &'static str {
        use herald_core::message::Severity;
        match self {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Error => Severity::Error,
            SeverityArg::Critical => Severity::Critical,
        }
        .as_str()
    }
}

/// Every delivery status, so `--status bogus` lists them.
fn delivery_statuses() -> PossibleValuesParser {
    PossibleValuesParser::new(DeliveryStatus::ALL.map(DeliveryStatus::as_str))
}

fn scopes() -> PossibleValuesParser {
    PossibleValuesParser::new(Scope::ALL.map(Scope::as_str))
}

fn group_statuses() -> PossibleValuesParser {
    PossibleValuesParser::new([GroupStatus::Unresolved, GroupStatus::Resolved].map(|s| s.as_str()))
}

#[derive(Subcommand)]
pub enum Command {
    /// Run Herald (embedded SQLite by default).
    #[command(after_help = "Examples:
  herald serve
  herald serve --listen 0.0.0.0:8080 --data-dir /var/lib/herald
  herald serve --config /etc/herald/herald.toml --log-format json")]
    Serve(ServeArgs),
    /// Send a message.
    #[command(after_help = "Examples:
  herald send \"backup finished\" --to ops-slack
  herald send \"disk full\" --event-type host.disk --severity critical --payload '{\"host\": \"db-1\"}'
  herald send \"Daily sales\" --to reports --attach report.csv --attach-inline chart.png")]
    Send {
        #[command(flatten)]
        remote: Remote,
        /// The message text.
        text: Option<String>,
        /// Destination names (comma-separated); routed by event type when absent.
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        to: Vec<String>,
        /// The event type that routes the message (`events` of each destination).
        #[arg(long, default_value = "message")]
        event_type: String,
        /// A title (a subject line, a card heading).
        #[arg(long)]
        title: Option<String>,
        /// How bad it is.
        #[arg(long, value_enum, default_value = "info")]
        severity: SeverityArg,
        /// A JSON object, for templates and webhooks.
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        /// A retry with the same key is accepted once (the first answer is returned).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Attach a file (repeatable); its type is guessed from the extension.
        #[arg(long = "attach", value_name = "PATH")]
        attach: Vec<std::path::PathBuf>,
        /// Attach a picture shown inside the email's HTML (repeatable).
        #[arg(long = "attach-inline", value_name = "PATH")]
        attach_inline: Vec<std::path::PathBuf>,
    },
    /// Manage destinations.
    #[command(after_help = "Examples:
  herald destinations list
  herald destinations get ops-slack
  herald destinations health ops-slack")]
    Destinations {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: DestinationAction,
    },
    /// List deliveries, or show one with its attempts; a pending one says why it waits.
    #[command(after_help = "Examples:
  herald deliveries --status pending
  herald deliveries --destination ops-slack --limit 10
  herald deliveries dlv_0123456789abcdef

A pending delivery that waits says why in the WAITING column, e.g. `circuit open until …`,
`paused by Retry-After until …`, `rate limited`, `destination disabled: …`.

The CLI configuration file ($XDG_CONFIG_HOME/herald/cli.toml, else ~/.config/herald/cli.toml):
  url = \"http://127.0.0.1:8080\"
  token_file = \"~/.config/herald/token\"     # chmod 600; or token = \"hrld_…\"
  [profiles.prod]
  url = \"https://herald.example.com\"
  token_file = \"~/.config/herald/prod.token\"
Select a profile with --profile prod or HERALD_PROFILE=prod.")]
    Deliveries {
        #[command(flatten)]
        remote: Remote,
        /// Show this delivery with its attempts.
        id: Option<String>,
        /// Only deliveries to this destination.
        #[arg(long, value_name = "NAME")]
        destination: Option<String>,
        /// Only deliveries in this state.
        #[arg(long, value_parser = delivery_statuses())]
        status: Option<String>,
        /// Only the deliveries of this message.
        #[arg(long, value_name = "ID")]
        message_id: Option<String>,
        /// Deliveries of the message accepted with this idempotency key.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// How many to list (1–1000), newest first.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Messages.
    #[command(after_help = "Examples:
  herald messages get msg_0123456789abcdef")]
    Messages {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: MessageAction,
    },
    /// Error groups (reports sent to POST /api/v1/errors or by a Sentry SDK).
    #[command(after_help = "Examples:
  herald errors list --status unresolved
  herald errors get grp_0123456789abcdef
  herald errors resolve grp_0123456789abcdef")]
    Errors {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: ErrorAction,
    },
    /// The dead-letter queue.
    #[command(after_help = "Examples:
  herald dlq list --queue ops-slack
  herald dlq replay ops-slack dlv_0123456789abcdef
  herald dlq replay --all")]
    Dlq {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// API tokens.
    #[command(after_help = "Examples:
  herald tokens create airflow --scopes send,read
  herald tokens list
  herald tokens revoke tok_0123456789abcdef")]
    Tokens {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Re-seal every stored secret under a new master key (run with the server stopped).
    #[command(after_help = "Examples:
  herald rotate-master-key --data-dir /var/lib/herald
  HERALD_MASTER_KEY=… herald rotate-master-key --database-url postgres://herald@db/herald")]
    RotateMasterKey {
        #[command(flatten)]
        server: ServeArgs,
        /// The new key (base64 of 32 bytes); generated when absent.
        #[arg(long, env = "HERALD_NEW_MASTER_KEY", hide_env_values = true)]
        new_key: Option<String>,
    },
    /// Check a store for damage without changing it: integrity, schema, the audit chain,
    /// orphan rows. Exits 1 when something is wrong.
    #[command(after_help = "Examples:
  herald doctor --data-dir /var/lib/herald
  herald doctor --database-url postgres://herald@db/herald --json")]
    Doctor {
        #[command(flatten)]
        server: ServeArgs,
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the database schema of this Herald (nodes also do it on start).
    #[command(after_help = "Examples:
  herald migrate --database-url postgres://herald@db/herald")]
    Migrate {
        #[command(flatten)]
        server: ServeArgs,
    },
    /// Copy a whole store into a new, empty database, e.g. from SQLite to Postgres (run with
    /// every node stopped).
    #[command(after_help = "Examples:
  herald migrate-store --from sqlite:///var/lib/herald/herald.db --to postgres://herald@db/herald")]
    MigrateStore {
        /// The database to copy: sqlite://PATH or postgres://…
        #[arg(long)]
        from: String,
        /// The empty database to fill: postgres://… or sqlite://PATH
        #[arg(long)]
        to: String,
    },
    /// Print a shell completion script: `herald completions bash > /etc/bash_completion.d/herald`.
    #[command(after_help = "Examples:
  herald completions bash > /etc/bash_completion.d/herald
  herald completions zsh > \"${fpath[1]}/_herald\"
  herald completions fish > ~/.config/fish/completions/herald.fish")]
    Completions {
        /// The shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (herald.1, herald-serve.1, …) into a directory (packaging).
    #[command(
        hide = true,
        after_help = "Examples:
  herald man --out-dir target/man"
    )]
    Man {
        /// The directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Ask a Herald whether it is ready (`GET /readyz` answers 200): exit 0 if so, 1 if not.
    /// The address comes from --url, else from the configuration's `listen` (0.0.0.0 and
    /// [::] are asked on loopback), so a container's HEALTHCHECK or a unit's ExecStartPost
    /// needs no curl.
    #[command(after_help = "Examples:
  herald healthcheck --url 127.0.0.1:8080
  herald healthcheck --config /etc/herald/herald.toml --wait 60s")]
    Healthcheck {
        #[command(flatten)]
        server: ServeArgs,
        /// Herald's base URL, e.g. http://127.0.0.1:8080 (no scheme means http://)
        /// [default: from `listen`].
        #[arg(long)]
        url: Option<String>,
        /// Keep asking (every 250 ms) for up to this long, e.g. `60s`; once when absent.
        #[arg(long, value_parser = herald_core::duration::parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// The audit log.
    #[command(after_help = "Examples:
  herald audit verify
  herald audit export --out chain.jsonl
  herald audit verify --file chain.jsonl --public-key \"$(curl -s $HERALD_URL/api/v1/audit/public-key | jq -r .public_key)\"")]
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
    #[command(after_help = "Examples:
  herald destinations list
  herald destinations list --json")]
    List,
    /// Show one destination: its state and settings (secrets masked).
    #[command(after_help = "Examples:
  herald destinations get ops-slack
  herald destinations get ops-slack --json")]
    Get {
        /// The destination's name.
        name: String,
    },
    /// Create or replace a destination from a JSON file (`-` for standard input).
    #[command(after_help = "Examples:
  herald destinations put ops-slack --file slack.json
  echo '{\"kind\": \"webhook\", \"url\": \"https://example.com/hook\"}' | herald destinations put hook -f -")]
    Put {
        /// The destination's name.
        name: String,
        /// The settings as JSON (docs/destinations.md); `-` reads standard input.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Delete a destination (its unfinished deliveries are discarded).
    #[command(after_help = "Examples:
  herald destinations delete old-hook")]
    Delete {
        /// The destination's name.
        name: String,
    },
    /// Send a test message now and show the attempt.
    #[command(after_help = "Examples:
  herald destinations test ops-slack")]
    Test {
        /// The destination's name.
        name: String,
    },
    /// Show whether a destination is enabled, its circuit, pause, queue and success rate.
    #[command(after_help = "Examples:
  herald destinations health ops-slack")]
    Health {
        /// The destination's name.
        name: String,
    },
    /// Enable a disabled destination again (clears its pause, breaker and failure streak).
    #[command(after_help = "Examples:
  herald destinations enable ops-slack")]
    Enable {
        /// The destination's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum MessageAction {
    /// Show one message: its text, payload, attachments and deliveries.
    #[command(after_help = "Examples:
  herald messages get msg_0123456789abcdef
  herald messages get msg_0123456789abcdef --json")]
    Get {
        /// The message id (`id` of `herald send --json`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ErrorAction {
    /// List error groups, newest first.
    #[command(after_help = "Examples:
  herald errors list
  herald errors list --status unresolved --service billing")]
    List {
        /// Only groups in this state.
        #[arg(long, value_parser = group_statuses())]
        status: Option<String>,
        /// Only groups of this service.
        #[arg(long)]
        service: Option<String>,
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one error group with its latest report.
    #[command(after_help = "Examples:
  herald errors get grp_0123456789abcdef")]
    Get {
        /// The group id.
        id: String,
    },
    /// Mark a group resolved: its next report is a regression and alerts.
    #[command(after_help = "Examples:
  herald errors resolve grp_0123456789abcdef")]
    Resolve {
        /// The group id.
        id: String,
    },
    /// Open a resolved group again (without an alert).
    #[command(after_help = "Examples:
  herald errors unresolve grp_0123456789abcdef")]
    Unresolve {
        /// The group id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum DlqAction {
    /// List dead deliveries.
    #[command(after_help = "Examples:
  herald dlq list
  herald dlq list --queue ops-slack --limit 200")]
    List {
        /// Only this queue (a destination's name).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
        /// How many to list (1–1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Replay one dead delivery (QUEUE ID), every one in a queue (QUEUE --all), or every
    /// one in every queue (--all), with a progress bar on a terminal.
    #[command(after_help = "Examples:
  herald dlq replay ops-slack dlv_0123456789abcdef
  herald dlq replay ops-slack --all --since 2026-01-01T00:00:00Z
  herald dlq replay --all --event-type pipeline.failed")]
    Replay {
        /// The queue (a destination's name).
        queue: Option<String>,
        /// The dead delivery to replay.
        id: Option<String>,
        /// Replay every dead delivery of QUEUE, or of every queue.
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
    #[command(after_help = "Examples:
  herald dlq discard ops-slack dlv_0123456789abcdef")]
    Discard {
        /// The queue (a destination's name).
        queue: String,
        /// The dead delivery to discard.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Create a token (shown once). With --data-dir, --database-url or --config it is
    /// written straight into the store, without a server (recovery: a lost admin token).
    #[command(after_help = "Examples:
  herald tokens create airflow --scopes send,read
  herald tokens create recovery --scopes admin --data-dir /var/lib/herald   # offline")]
    Create {
        /// A name for the token (who uses it).
        name: String,
        /// What the token may do (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "send", value_parser = scopes())]
        scopes: Vec<String>,
        #[command(flatten)]
        offline: OfflineStore,
    },
    /// List tokens (no secrets).
    #[command(after_help = "Examples:
  herald tokens list")]
    List,
    /// Revoke a token: it stops working at once.
    #[command(after_help = "Examples:
  herald tokens revoke tok_0123456789abcdef")]
    Revoke {
        /// The token's id (from `herald tokens list`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Verify the chain of a server, or of an exported file (offline) with --file.
    #[command(after_help = "Examples:
  herald audit verify
  herald audit verify --file chain.jsonl --public-key BASE64")]
    Verify {
        /// An exported chain (JSON Lines) to check offline.
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: check checkpoint signatures against this ed25519 public key (base64,
        /// from `GET /api/v1/audit/public-key`).
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write the chain as JSON Lines.
    #[command(after_help = "Examples:
  herald audit export --out chain.jsonl
  herald audit export | gzip > chain.jsonl.gz")]
    Export {
        /// The file to write [default: standard output].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn every_command(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            out.push((p.clone(), sub.clone()));
            every_command(sub, &p, out);
        }
    }

    #[test]
    fn every_flag_has_a_description_and_every_command_an_example() {
        let mut cli = Cli::command();
        cli.build();
        let mut commands = Vec::new();
        every_command(&cli, "herald", &mut commands);
        assert!(commands.len() > 30, "{}", commands.len());
        for (path, cmd) in &commands {
            if path.ends_with(" help") || path.contains(" help ") {
                continue; // clap's own `help` subcommand
            }
            let example = cmd.get_after_help().map(|h| h.to_string());
            assert!(
                example.is_some_and(|h| h.contains("Examples:\n  herald ")),
                "{path} has no example"
            );
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path}: {id} has no description");
            }
        }
    }

    #[test]
    fn the_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
