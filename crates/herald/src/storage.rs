//! Commands that work on a database directly: `herald doctor` checks one without changing
//! it (a server may be running); with the servers stopped, `herald migrate` applies the
//! schema and `herald migrate-store` copies a whole store to another database; `herald
//! tokens create --data-dir …` makes a token without a server (a lost admin token).

use crate::cli::ServeArgs;
use herald_core::audit::ChainVerifier;
use herald_store::Location;
use std::process::ExitCode;

/// `herald doctor`: every check of [`herald_store::doctor::examine`], one line each (or
/// JSON); exit 1 when one failed.
pub async fn doctor(args: ServeArgs, json: bool) -> Result<ExitCode, String> {
    use herald_store::doctor::{self, Check};
    let config = crate::commands::server_config(args)?;
    let location = config.database()?;
    let (mut report, session) = doctor::open(&location).await;
    if let Some(session) = session {
        // With the master key, checkpoint signatures are checked too.
        let verifier = match signing_key(&config, &session).await {
            Ok(Some(public)) => ChainVerifier::with_public_key(&public),
            Ok(None) => ChainVerifier::new(),
            Err(why) => {
                report.push(Check::failed("signing key", why));
                ChainVerifier::new()
            }
        };
        report.push(session.audit_chain(verifier).await);
        report.extend(session.orphans().await);
        session.close().await;
    }
    let healthy = report.iter().all(|c| c.ok);
    if json {
        let hint = (!healthy).then_some(DAMAGED_HINT);
        let doc = serde_json::json!({
            "ok": healthy,
            "database": location.describe(),
            "checks": report,
            "hint": hint,
        });
        println!("{doc:#}");
    } else {
        for c in &report {
            let mark = if c.ok { "ok    " } else { "FAILED" };
            println!("{mark} {:<12} {}", c.name, c.detail);
        }
        if healthy {
            println!("{}: no problems found", location.describe());
        } else {
            eprintln!("{}: {DAMAGED_HINT}", location.describe());
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What to do when `herald doctor` found something wrong.
const DAMAGED_HINT: &str = "something is wrong. Stop Herald, keep a copy of the damaged files (with \
     their -wal and -shm), and restore the latest backup (docs/operations.md#backup-and-restore); \
     an audit chain broken at a seq means that entry was changed or destroyed after it was written";

/// The audit signing key's public half, read without changing anything: `None` when no
/// master key is at hand or the store has no signing key yet.
async fn signing_key(
    config: &herald_server::config::Config,
    session: &herald_store::doctor::Session,
) -> Result<Option<String>, String> {
    let Some(secrets) =
        herald_server::keys::read_master_key(config.master_key.as_deref(), &config.data_dir)?
    else {
        return Ok(None);
    };
    let sealed = session
        .meta(herald_server::keys::SIGNING_KEY)
        .await
        .map_err(|e| e.to_string())?;
    sealed
        .map(|s| herald_server::keys::public_key_of(&secrets, &s))
        .transpose()
}

/// `herald migrate`: brings the configured database to this Herald's schema.
pub async fn migrate(args: ServeArgs) -> Result<ExitCode, String> {
    let config = crate::commands::server_config(args)?;
    let location = config.database()?;
    let (mut conn, _) = herald_store::sql::connect(&location)
        .await
        .map_err(|e| format!("cannot open {}: {e}", location.describe()))?;
    let version = herald_store::sql::migrate_to_latest(&mut conn)
        .await
        .map_err(|e| format!("{}: {e}", location.describe()))?;
    println!("{}: schema at version {version}", location.describe());
    Ok(ExitCode::SUCCESS)
}

/// `herald migrate-store --from … --to …`: copies everything, then checks the copy.
pub async fn migrate_store(from: &str, to: &str) -> Result<ExitCode, String> {
    let from = Location::parse(from).map_err(|e| format!("--from: {e}"))?;
    let to = Location::parse(to).map_err(|e| format!("--to: {e}"))?;
    println!("copying {} → {}", from.describe(), to.describe());
    let report = herald_store::copy::copy_store(&from, &to, |table, rows| {
        println!("  {table:<20} {rows:>10} rows");
    })
    .await
    .map_err(|e| format!("the copy failed, nothing was written to the target: {e}"))?;
    let total: u64 = report.iter().map(|(_, n)| n).sum();
    // The copied audit chain must verify exactly as the original did.
    let store = herald_server::open_database(&to, &Default::default()).await?;
    let verification = herald_store::verify_audit(store.as_ref(), ChainVerifier::new()).await;
    store.close().await;
    let verification = verification.map_err(|e| e.to_string())?;
    if !verification.ok {
        return Err(format!(
            "copied {total} rows, but the copied audit chain does not verify: {verification:?}"
        ));
    }
    println!(
        "copied {total} rows; audit chain verified ({} entries). Start every node with \
         --database-url {} and the same master key as before (HERALD_MASTER_KEY, or the \
         master.key of the old data directory).",
        verification.entries,
        to.describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// How the audit log names a token created offline (as `herald rotate-master-key` does).
const OFFLINE_ACTOR: &str = "cli";

/// `herald tokens create NAME --scopes … --data-dir DIR` (or `--database-url`, `--config`):
/// the token is written into the store through the same store call as the API's, so it is
/// audited as `token.created` in the same chain; it is printed once.
pub async fn create_token(
    args: ServeArgs,
    name: &str,
    scopes: &[String],
    json: bool,
) -> Result<ExitCode, String> {
    use herald_server::auth::{Scope, TokenRequestError, make_token};
    let parsed = scopes
        .iter()
        .map(|s| {
            Scope::parse(s.trim()).ok_or_else(|| {
                format!("--scopes: unknown scope {s:?}; the scopes are send, read, admin")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The API's rules for a token, checked before the store is opened.
    let t = make_token(name, parsed, None, herald_core::clock::now_ms()).map_err(|e| match e {
        TokenRequestError::Name => format!("the token name must be {e}"),
        TokenRequestError::NoScope => format!("--scopes: {e}"),
    })?;

    let config = crate::commands::server_config(args)?;
    let location = config.database()?;
    if let Location::Sqlite(path) = &location {
        if !path.is_file() {
            return Err(format!(
                "no Herald store at {} (herald.db is missing): give the data directory \
                 Herald serves (--data-dir), its --database-url or its --config",
                path.display()
            ));
        }
        refuse_while_serving(&config).await?;
    }
    let store = herald_server::open_database(&location, &config).await?;
    let created = store.create_token(t.record.clone(), OFFLINE_ACTOR).await;
    store.close().await;
    created.map_err(|e| format!("{}: {e}", location.describe()))?;
    let scopes: Vec<&str> = t.record.scopes.iter().map(|s| s.as_str()).collect();
    crate::commands::print_created_token(
        &serde_json::json!({
            "id": t.record.id,
            "name": t.record.name,
            "scopes": scopes,
            "token": t.token,
        }),
        json,
    );
    Ok(ExitCode::SUCCESS)
}

/// One process writes a SQLite store (it holds the audit chain's head and owns the leases),
/// so an offline write waits until its Herald is stopped: refused while a Herald answers
/// `/healthz` at the configured `listen` address.
async fn refuse_while_serving(config: &herald_server::config::Config) -> Result<(), String> {
    let base = format!(
        "http://{}",
        crate::healthcheck::local_address(&config.listen)
    );
    herald_server::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let Ok(resp) = http.get(format!("{base}/healthz")).send().await else {
        return Ok(()); // nothing answers: stopped
    };
    let herald = resp.status() == reqwest::StatusCode::OK
        && resp
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v["status"] == "ok");
    if herald {
        return Err(format!(
            "a Herald answers at {base}: stop it first (SIGTERM; one process writes a SQLite \
             store), then run this again. Or, with an admin token, create the token through \
             it: herald tokens create NAME --scopes admin --url {base}"
        ));
    }
    Ok(())
}
