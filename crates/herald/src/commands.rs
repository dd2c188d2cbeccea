//! What each command does.

use crate::cli::{
    AuditAction, Cli, Command, DestinationAction, DlqAction, ErrorAction, MessageAction, Remote,
    ServeArgs, TokenAction,
};
use crate::client::Api;
use crate::table::{cell, fields, print, waiting, words};
use herald_core::audit::{AuditEntry, ChainVerifier};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::process::ExitCode;

pub async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Send {
            remote,
            text,
            to,
            event_type,
            title,
            severity,
            payload,
            idempotency_key,
            attach,
            attach_inline,
        } => {
            let api = Api::new(&remote)?;
            let mut body = json!({"event_type": event_type, "severity": severity.as_str()});
            if let Some(t) = text {
                body["text"] = json!(t);
            }
            if let Some(t) = title {
                body["title"] = json!(t);
            }
            if !to.is_empty() {
                body["to"] = json!(to);
            }
            if let Some(p) = payload {
                body["payload"] =
                    serde_json::from_str(&p).map_err(|e| format!("--payload is not JSON: {e}"))?;
            }
            if let Some(k) = idempotency_key {
                body["idempotency_key"] = json!(k);
            }
            let files: Vec<Value> = attach
                .iter()
                .map(|p| (p, false))
                .chain(attach_inline.iter().map(|p| (p, true)))
                .map(|(p, inline)| attachment(p, inline))
                .collect::<Result<_, _>>()?;
            if !files.is_empty() {
                body["attachments"] = Value::Array(files);
            }
            let (_, v) = api
                .call(Method::POST, "/api/v1/messages", Some(&body))
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                println!("accepted {}", cell(&v, "id"));
                let rows = v["deliveries"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|d| vec![cell(d, "id"), cell(d, "destination"), cell(d, "status")])
                    .collect();
                print(&["delivery", "destination", "status"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Destinations { remote, action } => destinations(&remote, action).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "herald", &mut script);
            let mut out = std::io::stdout().lock();
            match out.write_all(&script).and_then(|_| out.flush()) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(format!("cannot write the completion script: {e}")),
            }
        }
        Command::Man { out_dir } => {
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(cmd, &out_dir)
                .map_err(|e| format!("cannot write the manual pages: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { server, url, wait } => {
            crate::healthcheck::run(server, url, wait).await
        }
        Command::Deliveries {
            remote,
            id,
            destination,
            status,
            message_id,
            idempotency_key,
            limit,
        } => {
            let api = Api::new(&remote)?;
            if let Some(id) = id {
                let (_, v) = api
                    .call(Method::GET, &format!("/api/v1/deliveries/{id}"), None)
                    .await?;
                if remote.json {
                    println!("{v}");
                } else {
                    let mut rows: Vec<(String, String)> = [
                        "id",
                        "message_id",
                        "destination",
                        "status",
                        "attempt_count",
                        "next_attempt_at",
                        "last_status_code",
                        "last_error",
                    ]
                    .iter()
                    .map(|k| (k.to_string(), cell(&v, k)))
                    .collect();
                    if v["waiting"].is_object() {
                        rows.insert(4, ("waiting".into(), waiting(&v)));
                    }
                    fields(&rows);
                    println!();
                    let rows = v["attempts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|a| {
                            vec![
                                cell(a, "number"),
                                cell(a, "started_at"),
                                cell(a, "duration_ms"),
                                cell(a, "outcome"),
                                cell(a, "status_code"),
                                cell(a, "error"),
                            ]
                        })
                        .collect();
                    print(&["#", "started", "ms", "outcome", "status", "error"], rows);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [
                ("destination", destination),
                ("status", status),
                ("message_id", message_id),
                ("idempotency_key", idempotency_key),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", encode(&v)));
                }
            }
            let (_, v) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/deliveries?{}", q.join("&")),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows = items(&v)
                    .iter()
                    .map(|d| {
                        vec![
                            cell(d, "id"),
                            cell(d, "destination"),
                            cell(d, "status"),
                            cell(d, "attempt_count"),
                            cell(d, "last_status_code"),
                            cell(d, "created_at"),
                            waiting(d),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "id",
                        "destination",
                        "status",
                        "attempts",
                        "last status",
                        "created",
                        "waiting",
                    ],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { remote, action } => dlq(&remote, action).await,
        Command::Messages { remote, action } => messages(&remote, action).await,
        Command::Errors { remote, action } => errors(&remote, action).await,
        Command::Tokens { remote, action } => tokens(&remote, action).await,
        Command::Audit { remote, action } => audit(&remote, action).await,
        Command::RotateMasterKey { server, new_key } => rotate_master_key(server, new_key).await,
        Command::Doctor { server, json } => crate::storage::doctor(server, json).await,
        Command::Migrate { server } => crate::storage::migrate(server).await,
        Command::MigrateStore { from, to } => crate::storage::migrate_store(&from, &to).await,
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The server configuration from defaults, file, environment and flags.
pub fn server_config(args: ServeArgs) -> Result<herald_server::config::Config, String> {
    let mut figment = herald_server::config::Config::figment(args.config.as_deref());
    if let Some(v) = args.listen {
        figment = figment.merge(("listen", v));
    }
    if let Some(v) = args.data_dir {
        figment = figment.merge(("data_dir", v));
    }
    if let Some(v) = args.database_url {
        figment = figment.merge(("database_url", v));
    }
    if let Some(v) = args.log_format {
        figment = figment.merge(("log_format", v));
    }
    let config: herald_server::config::Config = figment
        .extract()
        .map_err(|e| format!("configuration: {e}"))?;
    config.check()?;
    Ok(config)
}

async fn rotate_master_key(args: ServeArgs, new_key: Option<String>) -> Result<ExitCode, String> {
    let config = server_config(args)?;
    let (store, old) = herald_server::open_store(&config).await?;
    let key_file = config
        .master_key
        .is_none()
        .then(|| herald_server::keys::key_file(&config.data_dir));
    let key =
        herald_server::keys::rotate(store.as_ref(), &old, new_key, key_file.as_deref(), "cli")
            .await;
    store.close().await;
    let key = key?;
    match key_file {
        Some(f) => println!(
            "secrets re-sealed; the new master key is in {}",
            f.display()
        ),
        None => println!(
            "secrets re-sealed; set HERALD_MASTER_KEY on every node to the new key:\n{key}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let file = args.config.clone();
    let config = server_config(args)?;
    let logging = crate::logging::init(&config.log_format)?;
    // Start-up consumes the configuration; the recovery hint needs where the store is.
    let recovery = config
        .admin_token
        .is_none()
        .then(|| recovery_command(file.as_deref(), &config));
    let herald = herald_server::start(config).await?;
    println!("Herald is listening on http://{}", herald.addr);
    match (&herald.created_admin_token, recovery) {
        (Some(t), _) => println!("Admin token (shown once; keep it safe): {t}"),
        (None, Some(command)) => println!(
            "This store has an admin token already (printed at its first start). Lost it? \
             Run, as the user Herald runs as: {command}"
        ),
        (None, None) => {} // a fixed admin token (HERALD_ADMIN_TOKEN) is configured
    }
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    eprintln!("herald: shutting down");
    herald.shutdown().await;
    logging.shutdown();
    Ok(ExitCode::SUCCESS)
}

/// The offline command that makes a new admin token for this server's store, as exactly
/// as it can be printed: with the configuration file when there is one, else the data
/// directory (absolute) or the database URL (password masked).
fn recovery_command(
    file: Option<&std::path::Path>,
    config: &herald_server::config::Config,
) -> String {
    let store = match (file, &config.database_url) {
        (Some(f), _) => format!("--config {}", shell_word(&absolute(f).to_string_lossy())),
        (None, Some(url)) => format!(
            "--database-url {}",
            shell_word(&herald_store::location::redact_url(url))
        ),
        (None, None) => format!(
            "--data-dir {}",
            shell_word(&absolute(&config.data_dir).to_string_lossy())
        ),
    };
    let when = match config.database() {
        Ok(herald_store::Location::Postgres(_)) => "(the nodes may keep running)",
        _ => "(stop Herald first: one process writes a SQLite store)",
    };
    format!("herald tokens create recovery --scopes admin {store} {when}")
}

/// A word as a shell reads it back: as it is when plain, else in single quotes.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._:@%+=,-".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A path as an absolute one where possible (the hint must work from any directory).
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn destinations(remote: &Remote, action: DestinationAction) -> Result<ExitCode, String> {
    let api = Api::new(remote)?;
    match action {
        DestinationAction::List => {
            let (_, v) = api.call(Method::GET, "/api/v1/destinations", None).await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows = items(&v)
                    .iter()
                    .map(|d| {
                        vec![
                            cell(d, "name"),
                            cell(d, "kind"),
                            cell(d, "enabled"),
                            cell(d, "paused_until"),
                            cell(d, "disabled_reason"),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "name",
                        "kind",
                        "enabled",
                        "paused until",
                        "disabled because",
                    ],
                    rows,
                );
            }
        }
        DestinationAction::Get { name } => {
            let (_, v) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/destinations/{}", encode(&name)),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                print_destination(&v);
            }
        }
        DestinationAction::Health { name } => {
            let (_, v) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/destinations/{}/health", encode(&name)),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                print_health(&v);
            }
        }
        DestinationAction::Enable { name } => {
            let (_, v) = api
                .call(
                    Method::POST,
                    &format!("/api/v1/destinations/{}/enable", encode(&name)),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                println!("enabled destination {name}");
            }
        }
        DestinationAction::Put { name, file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("reading standard input: {e}"))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
            let (status, v) = api
                .call(
                    Method::PUT,
                    &format!("/api/v1/destinations/{}", encode(&name)),
                    Some(&body),
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                println!(
                    "{} destination {name}",
                    if status.as_u16() == 201 {
                        "created"
                    } else {
                        "updated"
                    }
                );
                if let Some(s) = v.get("generated_secret").and_then(Value::as_str) {
                    println!("signing secret (shown once): {s}");
                }
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
        DestinationAction::Delete { name } => {
            api.call(
                Method::DELETE,
                &format!("/api/v1/destinations/{}", encode(&name)),
                None,
            )
            .await?;
            if !remote.json {
                println!("deleted destination {name}");
            }
        }
        DestinationAction::Test { name } => {
            let (_, v) = api
                .call(
                    Method::POST,
                    &format!("/api/v1/destinations/{}/test", encode(&name)),
                    None,
                )
                .await?;
            let a = &v["attempt"];
            if remote.json {
                println!("{v}");
            } else {
                println!(
                    "outcome {} status {} in {} ms",
                    cell(a, "outcome"),
                    cell(a, "status_code"),
                    cell(a, "duration_ms")
                );
                if a["error"].is_string() {
                    println!("error: {}", cell(a, "error"));
                }
            }
            // A test that did not deliver fails the command, for scripts and CI.
            if a["outcome"] != "delivered" {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn dlq(remote: &Remote, action: DlqAction) -> Result<ExitCode, String> {
    let api = Api::new(remote)?;
    match action {
        DlqAction::List { queue, limit } => {
            let mut path = format!("/api/v1/dlq?limit={limit}");
            if let Some(q) = queue {
                path.push_str(&format!("&queue={}", encode(&q)));
            }
            let (_, v) = api.call(Method::GET, &path, None).await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows = items(&v)
                    .iter()
                    .map(|d| {
                        vec![
                            cell(d, "id"),
                            cell(d, "queue"),
                            cell(d, "event_type"),
                            cell(d, "attempt_count"),
                            cell(d, "last_status_code"),
                            cell(d, "dead_at"),
                            cell(d, "last_error"),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "id",
                        "queue",
                        "event",
                        "attempts",
                        "last status",
                        "dead since",
                        "last error",
                    ],
                    rows,
                );
            }
        }
        DlqAction::Replay {
            queue,
            id,
            all,
            event_type,
            since,
        } => match (queue, id, all) {
            (Some(queue), Some(id), false) => {
                let (_, v) = api
                    .call(
                        Method::POST,
                        &format!("/api/v1/dlq/{}/replay/{}", encode(&queue), encode(&id)),
                        None,
                    )
                    .await?;
                if remote.json {
                    println!("{v}");
                } else {
                    println!("replayed {}", cell(&v, "id"));
                }
            }
            (queue, None, true) => {
                let filter = json!({"event_type": event_type, "since": since});
                replay_all(&api, queue, &filter, remote.json).await?;
            }
            _ => {
                return Err(
                    "give QUEUE and one delivery id, or --all (optionally with a QUEUE)".into(),
                );
            }
        },
        DlqAction::Discard { queue, id } => {
            api.call(
                Method::DELETE,
                &format!("/api/v1/dlq/{}/{}", encode(&queue), encode(&id)),
                None,
            )
            .await?;
            if !remote.json {
                println!("discarded {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald tokens create` against a server.
async fn create_token(remote: &Remote, name: &str, scopes: &[String]) -> Result<ExitCode, String> {
    let api = Api::new(remote)?;
    let (_, v) = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({"name": name, "scopes": scopes})),
        )
        .await?;
    print_created_token(&v, remote.json);
    Ok(ExitCode::SUCCESS)
}

/// A created token as the API answers it (`id`, `name`, `scopes`, `token`).
pub fn print_created_token(v: &Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        let scopes: Vec<&str> = v["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "token {} ({}) created; shown once:\n{}",
            cell(v, "id"),
            scopes.join(", "),
            cell(v, "token")
        );
    }
}

async fn tokens(remote: &Remote, action: TokenAction) -> Result<ExitCode, String> {
    match action {
        // Offline when a store is named: no server is called.
        TokenAction::Create {
            name,
            scopes,
            offline,
        } => {
            return match offline.into_serve_args() {
                Some(store) => {
                    crate::storage::create_token(store, &name, &scopes, remote.json).await
                }
                None => create_token(remote, &name, &scopes).await,
            };
        }
        TokenAction::List => {
            let api = Api::new(remote)?;
            let (_, v) = api.call(Method::GET, "/api/v1/tokens", None).await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows = items(&v)
                    .iter()
                    .map(|t| {
                        vec![
                            cell(t, "id"),
                            cell(t, "name"),
                            words(t, "scopes"),
                            cell(t, "created_at"),
                            cell(t, "last_used_at"),
                            cell(t, "revoked_at"),
                        ]
                    })
                    .collect();
                print(
                    &["id", "name", "scopes", "created", "last used", "revoked"],
                    rows,
                );
            }
        }
        TokenAction::Revoke { id } => {
            Api::new(remote)?
                .call(
                    Method::DELETE,
                    &format!("/api/v1/tokens/{}", encode(&id)),
                    None,
                )
                .await?;
            if !remote.json {
                println!("revoked {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(remote: &Remote, action: AuditAction) -> Result<ExitCode, String> {
    match action {
        AuditAction::Verify {
            file: Some(path),
            public_key,
        } => {
            let f = std::fs::File::open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let mut v = match &public_key {
                Some(k) => ChainVerifier::with_public_key(k),
                None => ChainVerifier::new(),
            };
            for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let entry: AuditEntry = match serde_json::from_str(&line) {
                    Ok(e) => e,
                    Err(e) => {
                        let seq = serde_json::from_str::<Value>(&line)
                            .ok()
                            .and_then(|v| v["seq"].as_i64());
                        return report(
                            remote,
                            v.broken(
                                seq.unwrap_or(-1),
                                format!("line {}: not an audit entry: {e}", i + 1),
                            ),
                        );
                    }
                };
                if let Err(reason) = v.push(&entry) {
                    return report(remote, v.broken(entry.seq, reason));
                }
            }
            report(remote, v.finish())
        }
        AuditAction::Verify { file: None, .. } => {
            let api = Api::new(remote)?;
            let (_, v) = api.call(Method::GET, "/api/v1/audit/verify", None).await?;
            let verification: herald_core::audit::Verification =
                serde_json::from_value(v.clone()).map_err(|e| format!("unexpected answer: {e}"))?;
            report(remote, verification)
        }
        AuditAction::Export { out } => {
            let api = Api::new(remote)?;
            let mut sink: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| format!("cannot create {}: {e}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let mut after = 0i64;
            let mut n = 0u64;
            loop {
                let (_, v) = api
                    .call(
                        Method::GET,
                        &format!("/api/v1/audit?after={after}&limit=1000"),
                        None,
                    )
                    .await?;
                let page = items(&v);
                for e in &page {
                    writeln!(sink, "{e}").map_err(|e| format!("writing: {e}"))?;
                    n += 1;
                }
                match v["next_after"].as_i64() {
                    Some(next) => after = next,
                    None => break,
                }
            }
            sink.flush().map_err(|e| format!("writing: {e}"))?;
            if let Some(p) = out {
                eprintln!("exported {n} audit entries to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report(remote: &Remote, v: herald_core::audit::Verification) -> Result<ExitCode, String> {
    if remote.json {
        println!("{}", serde_json::to_string(&v).unwrap_or_default());
    } else if v.ok {
        println!("audit chain intact: {} entries, head {}", v.entries, v.head);
        match (v.signatures_checked, v.last_checkpoint) {
            (true, Some(last)) => println!(
                "{} signed checkpoints verified; the last covers entries up to seq {}",
                v.checkpoints,
                last - 1
            ),
            (true, None) => println!("no checkpoint yet: nothing is covered by a signature"),
            (false, _) => println!(
                "{} checkpoints found; signatures not checked (give --public-key)",
                v.checkpoints
            ),
        }
    } else {
        println!(
            "audit chain BROKEN at seq {}: {} ({} entries verified before it)",
            v.broken_at.unwrap_or(-1),
            v.reason.clone().unwrap_or_default(),
            v.entries
        );
    }
    Ok(if v.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A file as a message attachment: base64 data, type guessed from the extension.
fn attachment(path: &std::path::Path, inline: bool) -> Result<Value, String> {
    use base64::Engine;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file", path.display()))?;
    let mut a = json!({
        "filename": filename,
        "content_type": herald_core::attachment::guess_content_type(&filename),
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    if inline {
        a["inline"] = json!(true);
    }
    Ok(a)
}

/// Replays every dead delivery of one queue, or of every queue, one queue per request; a
/// progress bar on a terminal, one line per queue otherwise.
async fn replay_all(
    api: &Api,
    queue: Option<String>,
    filter: &Value,
    json_out: bool,
) -> Result<(), String> {
    let queues: Vec<String> = match queue {
        Some(q) => vec![q],
        None => {
            let (_, v) = api.call(Method::GET, "/api/v1/destinations", None).await?;
            items(&v).iter().map(|d| cell(d, "name")).collect()
        }
    };
    let mut progress = crate::progress::Progress::new(queues.len(), json_out);
    let mut total = 0;
    let mut results = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let (_, v) = api
            .call(
                Method::POST,
                &format!("/api/v1/dlq/{}/replay", encode(q)),
                Some(filter),
            )
            .await?;
        let n = v["replayed"].as_u64().unwrap_or(0);
        total += n;
        progress.step(i + 1, &format!("{q}: {n} replayed"));
        results.push(json!({"queue": q, "replayed": n}));
    }
    progress.finish();
    if json_out {
        println!("{}", json!({"items": results, "replayed": total}));
    } else {
        println!("replayed {total} deliveries from {} queue(s)", queues.len());
    }
    Ok(())
}

/// `herald destinations get`: the state first, then every setting on its own line.
fn print_destination(v: &Value) {
    let mut rows = vec![
        ("name".to_string(), cell(v, "name")),
        ("kind".to_string(), cell(v, "kind")),
        ("enabled".to_string(), yes_no(&v["enabled"])),
    ];
    if v["disabled_reason"].is_string() {
        rows.push(("disabled because".into(), cell(v, "disabled_reason")));
    }
    if v["paused_until"].is_string() {
        rows.push(("paused until".into(), cell(v, "paused_until")));
    }
    rows.push(("created".into(), cell(v, "created_at")));
    rows.push(("updated".into(), cell(v, "updated_at")));
    // Shown above, or not settings at all.
    let shown = [
        "name",
        "kind",
        "enabled",
        "disabled_reason",
        "paused_until",
        "created_at",
        "updated_at",
        "warnings",
        "generated_secret",
    ];
    let mut settings = Vec::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        if !shown.contains(&k.as_str()) {
            crate::table::flatten(k, val, &mut settings);
        }
    }
    fields(&rows);
    if !settings.is_empty() {
        println!();
        println!("settings (secrets masked):");
        let settings: Vec<(String, String)> = settings
            .into_iter()
            .map(|(k, v)| (format!("  {k}"), v))
            .collect();
        fields(&settings);
    }
}

/// `herald destinations health`: enabled, circuit, pause, queue and success rate.
fn print_health(v: &Value) {
    let c = &v["circuit"];
    let mut circuit = cell(c, "state");
    let failures = c["consecutive_failures"].as_u64().unwrap_or(0);
    if failures > 0 {
        circuit.push_str(&format!(" ({failures} consecutive failures)"));
    }
    if c["next_probe_at"].is_string() {
        circuit.push_str(&format!("; next probe at {}", cell(c, "next_probe_at")));
    }
    let mut enabled = yes_no(&v["enabled"]);
    if v["disabled_reason"].is_string() {
        enabled = format!("no: {}", cell(v, "disabled_reason"));
    }
    let rate = match v["success_rate_1h"].as_f64() {
        Some(r) => format!(
            "{:.1}% of {} attempts",
            r * 100.0,
            v["attempts_1h"].as_u64().unwrap_or(0)
        ),
        None => "- (no attempts)".into(),
    };
    fields(&[
        ("name".into(), cell(v, "name")),
        ("enabled".into(), enabled),
        ("circuit".into(), circuit),
        ("paused until".into(), cell(v, "paused_until")),
        ("rate limit".into(), cell(v, "rate_limit")),
        ("pending".into(), cell(v, "pending")),
        ("in flight".into(), cell(v, "in_flight")),
        ("dead".into(), cell(v, "dead")),
        ("success (1 h)".into(), rate),
    ]);
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

async fn messages(remote: &Remote, action: MessageAction) -> Result<ExitCode, String> {
    let api = Api::new(remote)?;
    match action {
        MessageAction::Get { id } => {
            let (_, v) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/messages/{}", encode(&id)),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows: Vec<(String, String)> = [
                "id",
                "event_type",
                "severity",
                "title",
                "text",
                "idempotency_key",
                "created_at",
            ]
            .iter()
            .map(|k| (k.to_string(), cell(&v, k)))
            .collect();
            if !v["payload"].is_null() {
                rows.push(("payload".into(), v["payload"].to_string()));
            }
            for (i, a) in v["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                rows.push((
                    format!("attachment {i}"),
                    format!(
                        "{} ({}, {} bytes)",
                        cell(a, "filename"),
                        cell(a, "content_type"),
                        cell(a, "size")
                    ),
                ));
            }
            fields(&rows);
            println!();
            let rows = v["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        cell(d, "id"),
                        cell(d, "destination"),
                        cell(d, "status"),
                        cell(d, "attempt_count"),
                        cell(d, "last_status_code"),
                        waiting(d),
                    ]
                })
                .collect();
            print(
                &[
                    "delivery",
                    "destination",
                    "status",
                    "attempts",
                    "last status",
                    "waiting",
                ],
                rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn errors(remote: &Remote, action: ErrorAction) -> Result<ExitCode, String> {
    let api = Api::new(remote)?;
    match action {
        ErrorAction::List {
            status,
            service,
            limit,
        } => {
            let mut path = format!("/api/v1/error-groups?limit={limit}");
            for (k, v) in [("status", status), ("service", service)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", encode(&v)));
                }
            }
            let (_, v) = api.call(Method::GET, &path, None).await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows = items(&v)
                    .iter()
                    .map(|g| {
                        vec![
                            cell(g, "id"),
                            cell(g, "status"),
                            cell(g, "service"),
                            cell(g, "level"),
                            cell(g, "count"),
                            cell(g, "last_seen"),
                            cell(g, "title"),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "id",
                        "status",
                        "service",
                        "level",
                        "count",
                        "last seen",
                        "title",
                    ],
                    rows,
                );
            }
        }
        ErrorAction::Get { id } => {
            let (_, v) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/error-groups/{}", encode(&id)),
                    None,
                )
                .await?;
            if remote.json {
                println!("{v}");
            } else {
                let rows: Vec<(String, String)> = [
                    "id",
                    "title",
                    "status",
                    "service",
                    "environment",
                    "level",
                    "culprit",
                    "count",
                    "first_seen",
                    "last_seen",
                    "last_alert_at",
                    "resolved_at",
                    "last_message_id",
                ]
                .iter()
                .map(|k| (k.to_string(), cell(&v, k)))
                .collect();
                fields(&rows);
                if !v["last_event"].is_null() {
                    println!("\nlatest report:");
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&v["last_event"]).unwrap_or_default()
                    );
                }
            }
        }
        ErrorAction::Resolve { id } => set_group_status(&api, remote, &id, "resolve").await?,
        ErrorAction::Unresolve { id } => set_group_status(&api, remote, &id, "unresolve").await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald errors resolve|unresolve ID`.
async fn set_group_status(api: &Api, remote: &Remote, id: &str, verb: &str) -> Result<(), String> {
    let (_, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/error-groups/{}/{verb}", encode(id)),
            None,
        )
        .await?;
    if remote.json {
        println!("{v}");
    } else {
        println!(
            "{verb}d {id}: {} is {}",
            cell(&v, "title"),
            cell(&v, "status")
        );
    }
    Ok(())
}
