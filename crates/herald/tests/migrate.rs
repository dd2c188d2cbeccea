//! `herald migrate` and `herald migrate-store`: a SQLite Herald grows into a Postgres one
//! (or, without a Postgres, into another SQLite file) and carries on where it stopped.

use herald_testkit::process::HeraldProcess;
use herald_testkit::receiver::FakeReceiver;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const TOKEN: &str = "hrld_migratetestad_0123456789abcdefABCDEF012345";

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_remove("HERALD_DATABASE_URL")
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("run herald")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn serve(dir: &Path, extra: &[(&str, &str)]) -> HeraldProcess {
    let mut env = vec![
        ("HERALD_ADMIN_TOKEN", TOKEN),
        ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
    ];
    env.extend_from_slice(extra);
    HeraldProcess::spawn(Path::new(env!("CARGO_BIN_EXE_herald")), dir, &env)
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    let r = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_moves_to_a_new_database_and_carries_on() {
    herald_server::install_crypto_provider();
    let rx = FakeReceiver::start().await;
    let http = reqwest::Client::new();
    let old = tempfile::tempdir().unwrap();
    let node = serve(old.path(), &[]);
    let put = http
        .put(format!("{}/api/v1/destinations/hook", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "webhook", "url": rx.url("/hook")}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let mut ids = Vec::new();
    for i in 0..5 {
        let r: Value = http
            .post(format!("{}/api/v1/messages", node.base))
            .bearer_auth(TOKEN)
            .json(&json!({"text": format!("before the move {i}"), "to": ["hook"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    rx.wait_for(5, Duration::from_secs(15)).await;
    assert!(node.terminate().success());

    let target = match herald_testkit::postgres::fresh_database("migratestore").await {
        Some(url) => url,
        None => format!("sqlite://{}", old.path().join("moved.db").display()),
    };
    let from = format!("sqlite://{}", old.path().join("herald.db").display());

    // The schema can be applied ahead of the first node.
    let migrated = herald(&["migrate", "--database-url", &target]);
    assert!(migrated.status.success(), "{}", text(&migrated));
    assert!(
        text(&migrated).contains("schema at version"),
        "{}",
        text(&migrated)
    );

    let copied = herald(&["migrate-store", "--from", &from, "--to", &target]);
    let out = text(&copied);
    assert!(copied.status.success(), "{out}");
    assert!(out.contains("audit chain verified"), "{out}");
    assert!(
        out.contains("messages") && out.contains("deliveries"),
        "{out}"
    );
    println!("migrate-store: {}", out.lines().last().unwrap_or_default());

    // A second copy into the now non-empty target is refused, and nothing is written.
    let again = herald(&["migrate-store", "--from", &from, "--to", &target]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    let bad = herald(&[
        "migrate-store",
        "--from",
        "mysql://u:pw@h/db",
        "--to",
        &target,
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("--from") && !text(&bad).contains("pw@"),
        "{}",
        text(&bad)
    );

    // The new database serves the old messages, and new ones chain on.
    let key = std::fs::read_to_string(old.path().join("master.key")).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let node = serve(
        fresh.path(),
        &[
            ("HERALD_DATABASE_URL", target.as_str()),
            ("HERALD_MASTER_KEY", key.trim()),
        ],
    );
    for id in &ids {
        let m = get(&http, format!("{}/api/v1/messages/{id}", node.base)).await;
        assert_eq!(m["deliveries"][0]["status"], "delivered", "{m}");
    }
    let sent = http
        .post(format!("{}/api/v1/messages", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"text": "after the move", "to": ["hook"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 202);
    rx.wait_for(6, Duration::from_secs(15)).await;
    let v = get(&http, format!("{}/api/v1/audit/verify", node.base)).await;
    assert_eq!(v["ok"], true, "{v}");
    assert!(node.terminate().success());

    // A node started with another master key is refused, with the reason.
    let wrong = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &target,
        ])
        .arg("--data-dir")
        .arg(fresh.path().join("other"))
        .env(
            "HERALD_MASTER_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("master key does not match"),
        "{}",
        text(&wrong)
    );
}
