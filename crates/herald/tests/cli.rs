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
    bare()
        .args(args)
        .env("HERALD_URL", url)
        .env("HERALD_TOKEN", token)
        .output()
        .expect("run herald")
}

/// The command with no Herald settings from the environment or a CLI configuration file.
fn bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env_remove("HERALD_URL")
        .env_remove("HERALD_TOKEN")
        .env_remove("HERALD_PROFILE")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", "/nonexistent");
    c
}

fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "herald succeeded: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The line of a table that mentions `needle`.
fn line_with<'a>(table: &'a str, needle: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle}: {table}"))
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
    let o = bare()
        .args(["deliveries"])
        .env("HERALD_URL", &h.base)
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
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("403 Forbidden: this token lacks the `admin` scope")
            && err.contains("--scopes admin"),
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
    let mut deliveries = Vec::new();
    for i in 0..3 {
        let accepted = h
            .send(json!({"text": format!("m{i}"), "to": ["hook"]}))
            .await;
        deliveries.push(TestHerald::first_delivery(&accepted));
    }
    rx.wait_for(3, Duration::from_secs(15)).await;
    // Received is not yet recorded: the export must hold the three `delivery.delivered`.
    for d in &deliveries {
        h.wait_status(d, "delivered", Duration::from_secs(15)).await;
    }
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
    let accepted = h.send(json!({"text": "m", "to": ["hook"]})).await;
    rx.wait_for(1, Duration::from_secs(15)).await;
    // Checkpoint once the attempt is recorded, or its record is news to the second one.
    h.wait_status(
        &TestHerald::first_delivery(&accepted),
        "delivered",
        Duration::from_secs(15),
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_says_why_it_waits() {
    let paused = FakeReceiver::start().await;
    paused.push(Reply::status(429).header("retry-after", "600"));
    let flaky = FakeReceiver::start().await;
    flaky.set_default(Reply::status(500));
    let gone = FakeReceiver::start().await;
    gone.push(Reply::status(410));
    let limited = FakeReceiver::start().await;
    let h = TestHerald::start().await;
    let later = json!({"schedule": ["1h"], "jitter": false});
    h.put_destination(
        "paused",
        json!({"kind": "webhook", "url": paused.url("/"), "retry": later}),
    )
    .await;
    h.put_destination(
        "flaky",
        json!({"kind": "webhook", "url": flaky.url("/"), "retry": later,
        "circuit_breaker": {"failure_threshold": 1, "cooldown": "1h"}}),
    )
    .await;
    h.put_destination("gone", json!({"kind": "webhook", "url": gone.url("/")}))
        .await;
    h.put_destination(
        "limited",
        json!({"kind": "webhook", "url": limited.url("/"), "rate_limit": "1/h"}),
    )
    .await;

    let p = h.send_one(json!({"text": "p", "to": ["paused"]})).await;
    h.wait_paused("paused", Duration::from_secs(15)).await;
    let f = h.send_one(json!({"text": "f", "to": ["flaky"]})).await;
    herald_testkit::eventually(
        Duration::from_secs(15),
        "flaky's circuit to open",
        || async { (h.health("flaky").await["circuit"]["state"] == "open").then_some(()) },
    )
    .await;
    let first = h.send_one(json!({"text": "g1", "to": ["gone"]})).await;
    h.wait_status(&first, "dead", Duration::from_secs(15)).await;
    herald_testkit::eventually(Duration::from_secs(15), "gone to be disabled", || async {
        (h.destination("gone").await["enabled"] == false).then_some(())
    })
    .await;
    let g = h.send_one(json!({"text": "g2", "to": ["gone"]})).await;
    // One token an hour: one of the two goes, the other waits for the next token.
    let a = h.send_one(json!({"text": "l1", "to": ["limited"]})).await;
    let b = h.send_one(json!({"text": "l2", "to": ["limited"]})).await;
    let (l1, l2) = herald_testkit::eventually(
        Duration::from_secs(15),
        "one delivery to go and the other to wait on the rate limit",
        || async {
            let (da, db) = (h.delivery(&a).await, h.delivery(&b).await);
            let waits = |d: &Value| d["waiting"]["reason"] == "rate_limited";
            match (da["status"].as_str(), db["status"].as_str()) {
                (Some("delivered"), _) if waits(&db) => Some((a.clone(), b.clone())),
                (_, Some("delivered")) if waits(&da) => Some((b.clone(), a.clone())),
                _ => None,
            }
        },
    )
    .await;

    let shown = stdout(&herald(&h, &["deliveries", &p]));
    assert!(
        line_with(&shown, "waiting").contains("paused by Retry-After until 20"),
        "{shown}"
    );
    let json: Value =
        serde_json::from_str(&stdout(&herald(&h, &["deliveries", &p, "--json"]))).unwrap();
    assert_eq!(json["waiting"]["reason"], "paused");
    assert!(json["waiting"]["until"].is_string(), "{json}");

    let table = stdout(&herald(&h, &["deliveries"]));
    assert!(
        table.lines().next().unwrap().ends_with("WAITING"),
        "{table}"
    );
    assert!(
        line_with(&table, &p).contains("paused by Retry-After until"),
        "{table}"
    );
    assert!(
        line_with(&table, &f).contains("circuit open until 20"),
        "{table}"
    );
    assert!(
        line_with(&table, &g).contains("destination disabled: "),
        "{table}"
    );
    assert!(line_with(&table, &l2).contains("rate limited"), "{table}");
    assert!(
        line_with(&table, &l1).ends_with(" -"),
        "a delivered one does not wait: {table}"
    );
    let reason = h.destination("gone").await["disabled_reason"]
        .as_str()
        .unwrap()
        .to_string();
    let one = stdout(&herald(&h, &["deliveries", &g]));
    assert!(
        one.contains(&format!("destination disabled: {reason}")),
        "{one}"
    );

    let health = stdout(&herald(&h, &["destinations", "health", "gone"]));
    assert!(
        line_with(&health, "enabled").contains(&format!("no: {reason}")),
        "{health}"
    );
    let health = stdout(&herald(&h, &["destinations", "health", "flaky"]));
    assert!(
        line_with(&health, "circuit").contains("open (")
            && line_with(&health, "circuit").contains("consecutive failures); next probe at 20"),
        "{health}"
    );
    let enabled = stdout(&herald(&h, &["destinations", "enable", "gone"]));
    assert_eq!(enabled.trim(), "enabled destination gone");
    h.wait_status(&g, "delivered", Duration::from_secs(15))
        .await;
    let after = stdout(&herald(&h, &["deliveries", &g]));
    assert!(!after.contains("waiting"), "{after}");

    let message = h.delivery(&p).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = stdout(&herald(&h, &["messages", "get", &message]));
    assert!(line_with(&m, "text").ends_with(" p"), "{m}");
    assert!(
        line_with(&m, &p).contains("paused by Retry-After until"),
        "{m}"
    );
}

#[test]
fn invalid_values_list_the_valid_ones() {
    let o = bare()
        .args(["deliveries", "--status", "bogus"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(err.contains("'bogus'"), "{err}");
    assert!(
        err.contains(
            "possible values: pending, in_flight, delivered, dead, failed_over, discarded"
        ),
        "{err}"
    );
    let err = stderr(
        &bare()
            .args(["send", "x", "--severity", "loud"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("possible values: info, warning, error, critical"),
        "{err}"
    );
    let err = stderr(
        &bare()
            .args(["errors", "list", "--status", "open"])
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("possible values: unresolved, resolved"),
        "{err}"
    );
    let err = stderr(
        &bare()
            .args(["tokens", "create", "x", "--scopes", "send,root"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("possible values: send, read, admin"), "{err}");
    let err = stderr(
        &bare()
            .args(["deliveries", "--url", "ftp://127.0.0.1:1"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("the scheme must be http or https"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_printed_once_a_403_names_the_scope_and_other_servers_are_summarised() {
    let h = TestHerald::start().await;
    // No scheme: http:// is meant.
    let bare_url = h.base.trim_start_matches("http://").to_string();
    let out = stdout(&herald_at(&bare_url, &h.token, &["destinations", "list"]));
    assert!(out.starts_with("NAME"), "{out}");

    let spec = h.dir.path().join("bad.json");
    std::fs::write(
        &spec,
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/",
            "circuit_breaker": {"failure_threshold": 0, "cooldown": "2d"}})
        .to_string(),
    )
    .unwrap();
    let err = stderr(&herald(
        &h,
        &[
            "destinations",
            "put",
            "bad",
            "--file",
            spec.to_str().unwrap(),
        ],
    ));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0], "herald: 422 Unprocessable Entity: 2 problems",
        "a headline and one line per problem: {err}"
    );
    assert_eq!(lines.len(), 3, "{err}");
    for problem in &lines[1..] {
        assert!(problem.starts_with("  circuit_breaker."), "{err}");
        assert_eq!(
            err.matches(problem.trim()).count(),
            1,
            "printed once: {err}"
        );
    }
    assert_eq!(err.matches("failure_threshold").count(), 1, "{err}");
    assert_eq!(err.matches("cooldown").count(), 1, "{err}");

    let err = stderr(&herald(&h, &["send", "x", "--to", "nowhere"]));
    assert_eq!(err.lines().count(), 1, "one problem, one line: {err}");
    assert!(
        err.contains("422 Unprocessable Entity: to: unknown destination"),
        "{err}"
    );

    let read = h.token("viewer", &["read"]).await;
    let err = stderr(&herald_at(&h.base, &read, &["tokens", "list"]));
    assert!(
        err.contains("this token lacks the `admin` scope")
            && err.contains("herald tokens create NAME --scopes admin"),
        "{err}"
    );
    let sender = h.token("sender", &["send"]).await;
    let err = stderr(&herald_at(&h.base, &sender, &["deliveries"]));
    assert!(
        err.contains("lacks the `read` scope") && err.contains("--scopes read"),
        "{err}"
    );

    let other = FakeReceiver::start().await;
    let page = format!(
        "<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>{}</body></html>",
        "<p>nothing here</p>\n".repeat(200)
    );
    other.set_default(
        Reply::status(404)
            .header("content-type", "text/html")
            .body(page),
    );
    let err = stderr(&herald_at(&other.url(""), "x", &["deliveries"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("404 Not Found from http://127.0.0.1:")
            && err.contains("not an answer from Herald (an HTML page titled \"404 Not Found\")"),
        "{err}"
    );
    assert!(!err.contains("<p>"), "{err}");
    other.set_default(
        Reply::status(200)
            .header("content-type", "text/plain")
            .body("hello from some other service\n".repeat(100)),
    );
    let err = stderr(&herald_at(&other.url(""), "x", &["destinations", "list"]));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("200 OK from")
            && err.contains("text/plain text starting \"hello from some other service\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_and_tokens_read_as_words() {
    let h = TestHerald::start().await;
    h.put_destination("api", json!({"kind": "http", "url": "http://127.0.0.1:9/in",
        "headers": {"Authorization": "Bearer inline-secret-value-1234"}, "retry": {"schedule": ["1s", "5s"]}}))
    .await;
    let out = stdout(&herald(&h, &["destinations", "get", "api"]));
    assert!(!out.trim_start().starts_with('{'), "{out}");
    assert!(line_with(&out, "name").ends_with(" api"), "{out}");
    assert!(line_with(&out, "kind").ends_with(" http"), "{out}");
    assert!(line_with(&out, "enabled").ends_with(" yes"), "{out}");
    assert!(out.contains("settings (secrets masked):"), "{out}");
    assert!(
        line_with(&out, "  url").ends_with(" http://127.0.0.1:9/in"),
        "{out}"
    );
    assert!(
        line_with(&out, "retry.schedule").contains("[\"1s\",\"5s\"]"),
        "{out}"
    );
    assert!(!out.contains("inline-secret-value"), "masked: {out}");
    let json: Value = serde_json::from_str(&stdout(&herald(
        &h,
        &["destinations", "get", "api", "--json"],
    )))
    .unwrap();
    assert_eq!(json["name"], "api");

    h.token("airflow", &["read", "send"]).await;
    let tokens = stdout(&herald(&h, &["tokens", "list"]));
    assert!(
        line_with(&tokens, "airflow").contains("read, send"),
        "{tokens}"
    );
    assert!(!tokens.contains("[\""), "{tokens}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_groups_are_listed_shown_and_resolved() {
    let h = TestHerald::start().await;
    let g = h
        .report_error(json!({"service": "shop", "environment": "production", "level": "error",
            "message": "Internal Server Error: /api/divide",
            "exception": {"type": "ZeroDivisionError", "value": "division by zero", "stacktrace": [
                {"filename": "shop/views.py", "function": "divide", "lineno": 42, "in_app": true}]}}))
        .await["group"]
        .as_str()
        .unwrap()
        .to_string();
    let list = stdout(&herald(&h, &["errors", "list"]));
    assert!(line_with(&list, &g).contains("unresolved"), "{list}");
    let one = stdout(&herald(&h, &["errors", "get", &g]));
    assert!(line_with(&one, "service").ends_with(" shop"), "{one}");
    assert!(one.contains("ZeroDivisionError"), "{one}");
    let done = stdout(&herald(&h, &["errors", "resolve", &g]));
    assert!(
        done.starts_with(&format!("resolved {g}")) && done.contains("is resolved"),
        "{done}"
    );
    let resolved = stdout(&herald(&h, &["errors", "list", "--status", "resolved"]));
    assert!(resolved.contains(&g), "{resolved}");
    let open = stdout(&herald(&h, &["errors", "list", "--status", "unresolved"]));
    assert!(!open.contains(&g), "{open}");
    stdout(&herald(&h, &["errors", "unresolve", &g]));
    assert!(stdout(&herald(&h, &["errors", "list", "--status", "unresolved"])).contains(&g));
    let err = stderr(&herald(&h, &["errors", "get", "grp_nope"]));
    assert!(err.contains("404 Not Found: no error group"), "{err}");
}

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_configuration_file_gives_url_and_token_and_profiles_below_flags_and_env() {
    let h = TestHerald::start().await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/herald");
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{}\n", h.token)).unwrap();
    chmod(&token, 0o600);
    let elsewhere = herald_testkit::process::free_port();
    std::fs::write(
        dir.join("cli.toml"),
        format!(
            "url = \"{}\"\ntoken_file = \"~/.config/herald/token\"\n\n[profiles.other]\nurl = \"127.0.0.1:{elsewhere}\"\n",
            h.base.trim_start_matches("http://")
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = bare();
        c.env("HOME", home.path()).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = stdout(&run(&["destinations", "list"], &[]));
    assert!(
        out.starts_with("NAME"),
        "from ~/.config/herald/cli.toml: {out}"
    );
    // Set to nothing is not set.
    stdout(&run(&["destinations", "list"], &[("HERALD_PROFILE", "")]));

    let err = stderr(&run(&["destinations", "list", "--profile", "other"], &[]));
    assert!(
        err.contains(&format!(
            "cannot reach Herald at http://127.0.0.1:{elsewhere}"
        )),
        "{err}"
    );
    let err = stderr(&run(
        &["destinations", "list"],
        &[("HERALD_PROFILE", "other")],
    ));
    assert!(err.contains(&format!("127.0.0.1:{elsewhere}")), "{err}");
    // A flag beats the profile; the environment beats the file.
    stdout(&run(
        &[
            "destinations",
            "list",
            "--profile",
            "other",
            "--url",
            &h.base,
        ],
        &[],
    ));
    stdout(&run(
        &["destinations", "list", "--profile", "other"],
        &[("HERALD_URL", &h.base)],
    ));
    let err = stderr(&run(
        &["destinations", "list"],
        &[("HERALD_TOKEN", "hrld_aaaaaaaaaaaa_nope")],
    ));
    assert!(err.contains("token was refused"), "{err}");
    let err = stderr(&run(&["destinations", "list", "--profile", "prod"], &[]));
    assert!(
        err.contains("no profile \"prod\" (profiles: other)"),
        "{err}"
    );

    // XDG_CONFIG_HOME wins over ~/.config.
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(xdg.path().join("herald")).unwrap();
    std::fs::write(
        xdg.path().join("herald/cli.toml"),
        format!("url = \"127.0.0.1:{elsewhere}\"\n"),
    )
    .unwrap();
    let err = stderr(&run(
        &["destinations", "list"],
        &[("XDG_CONFIG_HOME", xdg.path().to_str().unwrap())],
    ));
    assert!(err.contains(&format!("127.0.0.1:{elsewhere}")), "{err}");

    // A token file others may read is refused, as ssh refuses such a key.
    chmod(&token, 0o644);
    let err = stderr(&run(&["destinations", "list"], &[]));
    assert!(
        err.contains(&format!(
            "{} holds a token but its permissions 0644",
            token.display()
        )) && err.contains(&format!("chmod 600 {}", token.display())),
        "{err}"
    );
    // A token given outright does not touch the file.
    stdout(&run(
        &["destinations", "list"],
        &[("HERALD_TOKEN", &h.token)],
    ));
}

/// `herald serve` writing into a pipe (a unit's journal, a container log): no colour codes,
/// and fields as values (`status=200`), not Rust's `Some(200)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_into_a_pipe_have_no_colour_codes_and_plain_field_values() {
    use std::io::{BufRead, BufReader};
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = herald_testkit::process::free_port();
    let mut child = bare()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_DATABASE_URL")
        .env_remove("NO_COLOR")
        .env("HERALD_LOG", "info")
        .env("HERALD_ADMIN_TOKEN", herald_testkit::herald::ADMIN_TOKEN)
        .env("HERALD_ALLOW_NETWORKS", "127.0.0.0/8")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.next().unwrap().unwrap().contains("listening on"),
        "herald serve started"
    );
    let base = format!("http://127.0.0.1:{port}");
    let token = herald_testkit::herald::ADMIN_TOKEN;
    let spec = dir.path().join("hook.json");
    std::fs::write(
        &spec,
        json!({"kind": "webhook", "url": rx.url("/")}).to_string(),
    )
    .unwrap();
    stdout(&herald_at(
        &base,
        token,
        &[
            "destinations",
            "put",
            "hook",
            "--file",
            spec.to_str().unwrap(),
        ],
    ));
    stdout(&herald_at(&base, token, &["send", "hi", "--to", "hook"]));
    rx.wait_for(1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("attempt finished"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escape codes: {log:?}");
    let line = line_with(&log, "attempt finished");
    assert!(line.contains("status=200"), "{line}");
    assert!(!line.contains("Some("), "{line}");
    assert!(!line.contains("error="), "no error, no field: {line}");
}
