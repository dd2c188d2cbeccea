//! Crash safety: a real `herald serve` process is SIGKILLed in the middle of a load from
//! concurrent clients and restarted on the same data directory. Every message it
//! acknowledged (202) must reach the receiver.

use herald_testkit::process::HeraldProcess;
use herald_testkit::receiver::FakeReceiver;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "hrld_crashtestadm_0123456789abcdefABCDEF0123456789";
const CLIENTS: usize = 8;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HERALD_ADMIN_TOKEN", TOKEN),
        ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
    ]
}

/// Registers the receiver as webhook destination `hook` with a fixed retry delay.
async fn put_hook(http: &reqwest::Client, base: &str, url: &str, retry: &str) {
    let put = http
        .put(format!("{base}/api/v1/destinations/hook"))
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "webhook", "url": url, "retry": {"schedule": [retry], "jitter": false}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
}

fn spawn(dir: &Path) -> HeraldProcess {
    HeraldProcess::spawn(Path::new(env!("CARGO_BIN_EXE_herald")), dir, &env())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_load_loses_no_acknowledged_message() {
    herald_server::install_crypto_provider();
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(dir.path());
    let http = reqwest::Client::new();
    put_hook(&http, &node.base, &rx.url("/hook"), "200ms").await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, base, acked, stop) =
            (http.clone(), node.base.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let resp = http
                    .post(format!("{base}/api/v1/messages"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"text": format!("client {c} message {i}"), "to": ["hook"]}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_string());
                    }
                    Ok(r) => panic!("unexpected answer {}", r.status()),
                    Err(_) => break, // the server died under us: this message was never acknowledged
                }
            }
        }));
    }
    // Let the load run, deliveries flowing, then kill without warning.
    herald_testkit::eventually(
        Duration::from_secs(30),
        "a few hundred acknowledged messages",
        || async { (acked.lock().unwrap().len() >= 400 && rx.count() >= 50).then_some(()) },
    )
    .await;
    node.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let before_restart = rx.count();

    let _node = spawn(dir.path());
    let received = herald_testkit::eventually(
        Duration::from_secs(60),
        "every acknowledged message at the receiver",
        || async {
            let got: HashSet<String> = rx
                .received()
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            acked.is_subset(&got).then_some(got)
        },
    )
    .await;
    // Let stragglers arrive, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = rx.count();
    let unique = received.len().max(
        rx.received()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect::<HashSet<_>>()
            .len(),
    );
    println!(
        "crash test: acknowledged={} delivered_unique={} requests={} duplicates={} (received before the kill: {before_restart})",
        acked.len(),
        unique,
        total,
        total - unique
    );
    assert!(acked.len() >= 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_nothing_pending_is_lost() {
    herald_server::install_crypto_provider();
    let rx = FakeReceiver::start().await;
    rx.set_default(herald_testkit::receiver::Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(dir.path());
    let http = reqwest::Client::new();
    put_hook(&http, &node.base, &rx.url("/hook"), "300ms").await;
    let sent: serde_json::Value = http
        .post(format!("{}/api/v1/messages", node.base))
        .bearer_auth(TOKEN)
        .json(&json!({"text": "keep me", "to": ["hook"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rx.wait_for(1, Duration::from_secs(15)).await;
    let status = node.terminate();
    assert!(status.success(), "herald exits 0 on SIGTERM: {status}");

    rx.set_default(herald_testkit::receiver::Reply::ok());
    let _node = spawn(dir.path());
    let got = rx.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got[1].header("webhook-id"), sent["id"].as_str());
}
