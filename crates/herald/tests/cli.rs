//! The `herald` command against a running Herald: what an operator types.

use herald_testkit::herald::TestHerald;
use herald_testkit::receiver::{FakeReceiver, Reply};
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;

fn herald(h: &TestHerald, args: &[&str]) -> Output {
    herald_at(&h.base, &h.token, args)
}

fn herald_at(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_URL", url)
        .env("HERALD_TOKEN", token)
        .output()
        .expect("run herald")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "herald failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_registers_sends_lists_and_replays_from_the_command_line() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(400));
    let h = TestHerald::start().await;
    let spec = h.dir.path().join("hook.json");
    std::fs::write(
        &spec,
        json!({"kind": "webhook", "url": rx.url("/hook")}).to_string(),
    )
    .unwrap();
    let out = stdout(&herald(
        &h,
        &[
            "destinations",
            "put",
            "hook",
            "--file",
            spec.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains("created destination hook") && out.contains("whsec_"),
        "{out}"
    );

    let list: Value =
        serde_json::from_str(&stdout(&herald(&h, &["destinations", "list", "--json"]))).unwrap();
    assert_eq!(list["items"][0]["name"], "hook");
    let table = stdout(&herald(&h, &["destinations", "list"]));
    assert!(
        table.starts_with("NAME") && table.contains("webhook"),
        "{table}"
    );

    let sent: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &[
            "send",
            "배포 실패",
            "--to",
            "hook",
            "--severity",
            "error",
            "--json",
        ],
    )))
    .unwrap();
    let id = sent["deliveries"][0]["id"].as_str().unwrap().to_string();
    h.wait_status(&id, "dead", Duration::from_secs(15)).await;

    let dlq = stdout(&herald(&h, &["dlq", "list", "--queue", "hook"]));
    assert!(dlq.contains(&id), "{dlq}");
    let replayed = stdout(&herald(&h, &["dlq", "replay", "hook", &id]));
    assert!(replayed.contains("replayed"), "{replayed}");
    h.wait_status(&id, "delivered", Duration::from_secs(15))
        .await;
    assert_eq!(
        rx.wait_for(2, Duration::from_secs(5)).await[1].json()["text"],
        "배포 실패"
    );

    let shown = stdout(&herald(&h, &["deliveries", &id]));
    assert!(
        shown.contains("delivered") && shown.contains("permanent"),
        "{shown}"
    );
    let listed: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &["deliveries", "--status", "delivered", "--json"],
    )))
    .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_messages_when_the_server_is_unreachable_or_the_token_wrong() {
    let port = herald_testkit::process::free_port();
    let o = herald_at(
        &format!("http://127.0.0.1:{port}"),
        "x",
        &["destinations", "list"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("cannot reach Herald at http://127.0.0.1:{port}: ")),
        "{o:?}"
    );
    assert!(
        err.to_lowercase().contains("refused"),
        "names the cause: {err}"
    );

    let h = TestHerald::start().await;
    let o = herald_at(&h.base, "hrld_aaaaaaaaaaaa_nope", &["deliveries"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("token was refused"),
        "{o:?}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["deliveries"])
        .env("HERALD_URL", &h.base)
        .env_remove("HERALD_TOKEN")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no token given"),
        "{o:?}"
    );
    let (_, created) = h
        .call(
            reqwest::Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "viewer", "scopes": ["read"]})),
        )
        .await;
    let read = created["token"].as_str().unwrap();
    h.put_destination(
        "hook",
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/"}),
    )
    .await;
    let o = herald_at(&h.base, read, &["dlq", "replay", "--all"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("403 Forbidden: the token is valid but not allowed"),
        "{o:?}"
    );
    let o = herald(&h, &["send", "x", "--to", "nowhere"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("to: unknown destination"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_audit_chain_verifies_offline_and_tampering_is_found_to_the_entry() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    for i in 0..3 {
        h.send(json!({"text": format!("m{i}"), "to": ["hook"]}))
            .await;
    }
    rx.wait_for(3, Duration::from_secs(15)).await;
    let file = h.dir.path().join("chain.jsonl");
    let o = herald(&h, &["audit", "export", "--out", file.to_str().unwrap()]);
    stdout(&o);
    let ok = stdout(&herald(
        &h,
        &["audit", "verify", "--file", file.to_str().unwrap()],
    ));
    assert!(ok.contains("intact"), "{ok}");
    assert!(stdout(&herald(&h, &["audit", "verify"])).contains("intact"));

    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(lines.len() >= 7);
    let mut entry: Value = serde_json::from_str(&lines[3]).unwrap();
    entry["actor"] = json!("someone-else");
    lines[3] = entry.to_string();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let o = herald(&h, &["audit", "verify", "--file", file.to_str().unwrap()]);
    assert!(!o.status.success(), "a broken chain exits non-zero");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("BROKEN at seq {}", entry["seq"])),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_checkpoints_prove_an_export_comes_from_this_herald() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    h.send(json!({"text": "m", "to": ["hook"]})).await;
    rx.wait_for(1, Duration::from_secs(15)).await;
    let (_, cp) = h
        .call(reqwest::Method::POST, "/api/v1/audit/checkpoint", None)
        .await;
    assert!(cp["seq"].is_i64(), "{cp}");
    let (_, again) = h
        .call(reqwest::Method::POST, "/api/v1/audit/checkpoint", None)
        .await;
    assert!(
        again["seq"].is_null(),
        "nothing new since the last checkpoint"
    );
    let (_, key) = h
        .call(reqwest::Method::GET, "/api/v1/audit/public-key", None)
        .await;
    let key = key["public_key"].as_str().unwrap().to_string();
    let (_, v) = h
        .call(reqwest::Method::GET, "/api/v1/audit/verify", None)
        .await;
    assert_eq!(
        (
            v["ok"].clone(),
            v["checkpoints"].clone(),
            v["signatures_checked"].clone()
        ),
        (json!(true), json!(1), json!(true))
    );

    let file = h.dir.path().join("chain.jsonl");
    stdout(&herald(
        &h,
        &["audit", "export", "--out", file.to_str().unwrap()],
    ));
    let out = stdout(&herald(
        &h,
        &[
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--public-key",
            &key,
        ],
    ));
    assert!(out.contains("1 signed checkpoints verified"), "{out}");

    let (other, _) = herald_core::audit::CheckpointSigner::generate();
    let o = herald(
        &h,
        &[
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--public-key",
            &other.public_key(),
        ],
    );
    assert!(
        !o.status.success(),
        "a chain signed by another Herald is refused"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("signature"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_every_secret_usable() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("api", json!({"kind": "http", "url": rx.url("/in"), "headers": {"Authorization": "Bearer inline-secret-value-1234"}})).await;
    let cfg = h.herald.as_ref().unwrap().state.config.as_ref().clone();
    let dir = h.stop().await;
    let key_file = dir.path().join("master.key");
    let before = std::fs::read_to_string(&key_file).unwrap();

    let o = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "rotate-master-key",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .env_remove("HERALD_MASTER_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(before, after, "the key file holds the new key");
    assert!(!dir.path().join("master.key.new").exists());

    let h = TestHerald::start_config(cfg, dir).await;
    h.send(json!({"payload": {"x": 1}, "to": ["api"]})).await;
    let got = rx.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer inline-secret-value-1234")
    );
    let (_, audit) = h
        .call(reqwest::Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    assert!(audit.to_string().contains("master_key.rotated"));
    assert!(
        !audit.to_string().contains("inline-secret-value"),
        "no secret in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_task_sends_a_chart_and_a_report_as_attachments() {
    let rx = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/hook")}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(0..=255u8);
    std::fs::write(&chart, &png).unwrap();
    let report = dir.path().join("주간 보고서.csv");
    std::fs::write(&report, "a,b\n1,2\n").unwrap();
    let out: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &[
            "send",
            "리포트",
            "--to",
            "hook",
            "--attach",
            report.to_str().unwrap(),
            "--attach-inline",
            chart.to_str().unwrap(),
            "--json",
        ],
    )))
    .unwrap();
    let body = rx.wait_for(1, Duration::from_secs(10)).await[0].json();
    let files = body["attachments"].as_array().unwrap();
    assert_eq!(files[0]["filename"], "주간 보고서.csv");
    assert_eq!(files[0]["content_type"], "text/csv");
    assert_eq!(files[1]["filename"], "chart.png");
    assert_eq!(files[1]["content_type"], "image/png");
    assert_eq!(files[1]["inline"], true);
    let id = out["id"].as_str().unwrap();
    let (_, view) = h
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(view["attachments"][1]["size"], png.len());
    let missing = herald(&h, &["send", "x", "--attach", "/nonexistent/file.csv"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/file.csv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_every_queue_shows_progress_and_totals() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::status(400));
    rx.push(Reply::status(400));
    let h = TestHerald::start().await;
    for name in ["alpha", "beta"] {
        h.put_destination(name, json!({"kind": "webhook", "url": rx.url("/")}))
            .await;
    }
    let mut dead = Vec::new();
    for name in ["alpha", "beta"] {
        let id = h
            .send_one(json!({"text": "x", "to": [name], "idempotency_key": format!("key-{name}")}))
            .await;
        h.wait_status(&id, "dead", Duration::from_secs(15)).await;
        dead.push(id);
    }
    let found: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &["deliveries", "--idempotency-key", "key-beta", "--json"],
    )))
    .unwrap();
    assert_eq!(found["items"][0]["id"], dead[1].as_str());

    let o = herald(&h, &["dlq", "replay", "--all"]);
    let out = stdout(&o);
    assert!(
        out.contains("replayed 2 deliveries from 2 queue(s)"),
        "{out}"
    );
    // Not a terminal: one plain progress line per queue, no carriage returns.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[1/2] alpha: 1 replayed") && err.contains("[2/2] beta: 1 replayed"),
        "{err}"
    );
    assert!(!err.contains('\r'));
    for id in &dead {
        h.wait_status(id, "delivered", Duration::from_secs(15))
            .await;
    }
    let again: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &["dlq", "replay", "alpha", "--all", "--json"],
    )))
    .unwrap();
    assert_eq!(again["replayed"], 0);
    assert_eq!(again["items"][0]["queue"], "alpha");
    let o = herald(&h, &["dlq", "replay", "alpha"]);
    assert!(!o.status.success(), "QUEUE alone is ambiguous");
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "_herald()"),
        ("zsh", "#compdef herald"),
        ("fish", "complete -c herald"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("replay") && script.contains("destinations"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_destination_shows_the_attempt_and_fails_when_it_does_not_deliver() {
    let rx = FakeReceiver::start().await;
    rx.push(Reply::ok());
    rx.push(Reply::status(503).body("down"));
    let h = TestHerald::start().await;
    h.put_destination("hook", json!({"kind": "webhook", "url": rx.url("/")}))
        .await;
    let ok = stdout(&herald(&h, &["destinations", "test", "hook"]));
    assert!(ok.contains("outcome delivered status 200"), "{ok}");
    assert_eq!(rx.received()[0].json()["title"], "Herald test message");

    let o = herald(&h, &["destinations", "test", "hook", "--json"]);
    assert!(!o.status.success(), "a test that did not deliver fails");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["attempt"]["status_code"], 503);
    assert_eq!(v["destination"], "hook");
    let o = herald(&h, &["destinations", "test", "nowhere"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"), "{o:?}");
}

#[test]
fn the_version_names_the_release_the_commit_and_the_build_date() {
    let out = stdout(&herald_at("http://127.0.0.1:9", "", &["--version"]));
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!("herald {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    let d: Vec<&str> = date.split('-').collect();
    assert!(
        d.len() == 3 && d[0].len() == 4 && d.iter().all(|p| p.parse::<u32>().is_ok()),
        "{line}"
    );
}

/// `HERALD_ADMIN_TOKEN=` (set but empty) is not taken for unset: `herald serve` refuses to
/// start and names the variable, as it does for a short or repetitive token.
#[test]
fn serve_refuses_an_empty_or_weak_admin_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    for token in ["", "hrld_short", "password1234password1234password1234"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("HERALD_ADMIN_TOKEN", token)
            .env_remove("HERALD_CONFIG")
            .env_remove("HERALD_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run herald");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("herald serve started with HERALD_ADMIN_TOKEN={token:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{token:?}: {err}");
        assert!(err.contains("HERALD_ADMIN_TOKEN"), "{token:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_says_ready_or_why_not() {
    let h = TestHerald::start().await;
    let up = herald_at(&h.base, "", &["healthcheck", "--url", &h.base]);
    assert!(
        stdout(&up).contains(&format!("ready: {}/readyz", h.base)),
        "{up:?}"
    );

    // Nothing listens there: a wildcard `listen` is asked on loopback, and the answer says why.
    let port = herald_testkit::process::free_port();
    let down = herald_at(
        &h.base,
        "",
        &[
            "healthcheck",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--wait",
            "300ms",
        ],
    );
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains(&format!(
            "not ready (waited 300ms): http://127.0.0.1:{port}/readyz"
        )) && err.contains("Connection refused"),
        "{err}"
    );
}
