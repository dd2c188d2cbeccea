//! First run and recovery: the first `herald serve` prints an admin token; a later one says
//! how to get in again; `herald tokens create NAME --scopes admin --data-dir DIR` (or
//! `--database-url`) makes an admin token without a server, audited like the API's.

use herald_testkit::process::{HeraldProcess, free_port};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

/// `herald ARGS` with no server settings from the environment but `env`.
fn herald(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for k in [
        "HERALD_URL",
        "HERALD_TOKEN",
        "HERALD_CONFIG",
        "HERALD_DATA_DIR",
        "HERALD_DATABASE_URL",
        "HERALD_LISTEN",
        "HERALD_ADMIN_TOKEN",
        "HERALD_MASTER_KEY",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run herald")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The token an offline `tokens create` printed (its last line).
fn created_token(o: &Output) -> String {
    assert!(o.status.success(), "tokens create failed: {}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    let token = out.lines().last().unwrap_or_default().trim().to_string();
    assert!(token.starts_with("hrld_"), "{out}");
    token
}

/// Waits for the line a start prints after its address: the admin token or the hint.
fn first_run_line(node: &HeraldProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = node
            .stdout()
            .into_iter()
            .find(|l| l.starts_with("Admin token") || l.contains("Lost it?"))
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "herald serve printed neither a token nor the hint: {:?}",
            node.stdout()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("call herald");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The store's audit log holds `token.created` for `id`, by `actor`, and still verifies.
async fn audited(base: &str, token: &str, id: &str, actor: &str) {
    let (status, log) = get(base, token, "/api/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{log}");
    let entry = log["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "token.created" && e["resource"] == id)
        .unwrap_or_else(|| panic!("no token.created for {id}: {log}"));
    assert_eq!(entry["actor"], actor, "{entry}");
    assert_eq!(entry["detail"]["scopes"], serde_json::json!(["admin"]));
    let (_, verification) = get(base, token, "/api/v1/audit/verify").await;
    assert_eq!(verification["ok"], true, "{verification}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_admin_token_is_replaced_offline_and_the_second_start_says_how() {
    herald_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");

    let first = HeraldProcess::spawn_on(bin(), port, dir.path(), &[]);
    let line = first_run_line(&first);
    assert!(line.starts_with("Admin token"), "{line}");

    // While it serves, an offline write to its SQLite store is refused, saying why.
    let refused = herald(
        &[
            "tokens",
            "create",
            "recovery",
            "--scopes",
            "admin",
            "--data-dir",
            &data_dir,
        ],
        &[("HERALD_LISTEN", &listen)],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains(&format!(
            "a Herald answers at http://{listen}: stop it first"
        )),
        "{}",
        text(&refused)
    );
    assert!(first.terminate().success());

    // The operator lost the first token: a new one, with the server stopped.
    let made = herald(
        &[
            "tokens",
            "create",
            "recovery",
            "--scopes",
            "admin",
            "--data-dir",
            &data_dir,
        ],
        &[("HERALD_LISTEN", &listen)],
    );
    let token = created_token(&made);
    assert!(
        text(&made).contains("created; shown once") && text(&made).contains("(admin)"),
        "{}",
        text(&made)
    );

    let second = HeraldProcess::spawn_on(bin(), port, dir.path(), &[]);
    let hint = first_run_line(&second);
    assert!(
        hint.contains(&format!(
            "herald tokens create recovery --scopes admin --data-dir {data_dir}"
        )) && hint.contains("stop Herald first"),
        "{hint}"
    );
    assert!(
        !second.stdout().iter().any(|l| l.contains("hrld_")),
        "a second start prints no token: {:?}",
        second.stdout()
    );
    let (status, tokens) = get(&second.base, &token, "/api/v1/tokens").await;
    assert_eq!(
        status, 200,
        "the recovered token is an admin token: {tokens}"
    );
    let names: Vec<&str> = tokens["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "recovery"]);
    let id = token.split('_').nth(1).unwrap();
    audited(&second.base, &token, id, "cli").await;
}

#[test]
fn offline_token_creation_says_what_is_wrong() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().to_str().unwrap();
    let missing = herald(
        &[
            "tokens",
            "create",
            "x",
            "--scopes",
            "admin",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("no Herald store at") && text(&missing).contains("herald.db"),
        "{}",
        text(&missing)
    );
    assert!(
        !empty.path().join("herald.db").exists(),
        "a mistyped directory gets no new store"
    );

    let scope = herald(
        &[
            "tokens",
            "create",
            "x",
            "--scopes",
            "root",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(!scope.status.success());
    assert!(
        text(&scope).contains("invalid value 'root' for '--scopes <SCOPES>'")
            && text(&scope).contains("[possible values: send, read, admin]"),
        "{}",
        text(&scope)
    );

    let name = herald(
        &[
            "tokens",
            "create",
            " ",
            "--scopes",
            "admin",
            "--data-dir",
            dir,
        ],
        &[],
    );
    assert!(!name.status.success());
    assert!(text(&name).contains("1–128 characters"), "{}", text(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_offline_admin_token_works_while_the_node_runs() {
    let Some(url) = herald_testkit::postgres::fresh_database("offline token").await else {
        return;
    };
    herald_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [
        ("HERALD_DATABASE_URL", url.as_str()),
        ("HERALD_MASTER_KEY", MASTER_KEY),
    ];
    let first = HeraldProcess::spawn_on(bin(), port, dir.path(), &env);
    assert!(first_run_line(&first).starts_with("Admin token"));

    // Postgres takes writes from several processes: no need to stop the node.
    let made = herald(
        &[
            "tokens",
            "create",
            "recovery",
            "--scopes",
            "admin",
            "--database-url",
            &url,
        ],
        &[],
    );
    let token = created_token(&made);
    let (status, body) = get(&first.base, &token, "/api/v1/tokens").await;
    assert_eq!(status, 200, "the running node takes the new token: {body}");
    let id = token.split('_').nth(1).unwrap();
    audited(&first.base, &token, id, "cli").await;
    assert!(first.terminate().success());

    let second = HeraldProcess::spawn_on(bin(), port, dir.path(), &env);
    let hint = first_run_line(&second);
    assert!(
        hint.contains("herald tokens create recovery --scopes admin --database-url postgres://")
            && hint.contains("the nodes may keep running"),
        "{hint}"
    );
}
