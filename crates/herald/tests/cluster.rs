//! A cluster: three real `herald serve` processes on one Postgres database. Messages are
//! spread over every node; a rate limit is measured at the receiver for the whole cluster;
//! then one node is SIGKILLed mid-load and the others take over its leases. Every message a
//! node acknowledged (202) must arrive, with no more duplicates than the dead node had in
//! flight, and the audit chain written by all nodes at once must verify.
//!
//! Runs when `HERALD_TEST_POSTGRES_URL` is set (CI sets it); skips loudly otherwise.

use herald_testkit::process::HeraldProcess;
use herald_testkit::receiver::FakeReceiver;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "hrld_clustertestadm_0123456789abcdefABCDEF012345";
const MASTER_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const CLIENTS: usize = 9;
/// The most attempts one node runs at once for `hook`: the bound on duplicates.
const HOOK_IN_FLIGHT: u32 = 8;

fn spawn(bin: &Path, dir: &Path, url: &str, config: &Path) -> HeraldProcess {
    let config = config.to_string_lossy().to_string();
    HeraldProcess::spawn(
        bin,
        dir,
        &[
            ("HERALD_ADMIN_TOKEN", TOKEN),
            ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("HERALD_MASTER_KEY", MASTER_KEY),
            ("HERALD_DATABASE_URL", url),
            ("HERALD_CONFIG", &config),
        ],
    )
}

async fn put(http: &reqwest::Client, base: &str, name: &str, spec: serde_json::Value) {
    let r = http
        .put(format!("{base}/api/v1/destinations/{name}"))
        .bearer_auth(TOKEN)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn send(http: &reqwest::Client, base: &str, to: &str, text: String) -> Option<String> {
    let r = http
        .post(format!("{base}/api/v1/messages"))
        .bearer_auth(TOKEN)
        .json(&json!({"text": text, "to": [to]}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    assert_eq!(r.status().as_u16(), 202, "a live node accepts");
    let body: serde_json::Value = r.json().await.ok()?;
    body["id"].as_str().map(str::to_string)
}

fn ids_at(rx: &FakeReceiver, path: &str) -> Vec<String> {
    rx.received()
        .iter()
        .filter(|r| r.path == path)
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_postgres_and_lose_nothing_when_one_dies() {
    let Some(url) = herald_testkit::postgres::fresh_database("cluster").await else {
        return;
    };
    herald_server::install_crypto_provider();
    let bin = Path::new(env!("CARGO_BIN_EXE_herald"));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Short leases so the survivors take over quickly (lease = max(lease, timeout + 10 s)).
    let config = dirs[0].path().join("cluster.toml");
    std::fs::write(&config, "lease = \"1s\"\n").unwrap();
    let mut nodes: Vec<Option<HeraldProcess>> = dirs
        .iter()
        .map(|d| Some(spawn(bin, d.path(), &url, &config)))
        .collect();
    let bases: Vec<String> = nodes.iter().flatten().map(|n| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let rx = FakeReceiver::start().await;
    put(
        &http,
        &bases[0],
        "hook",
        json!({"kind": "webhook", "url": rx.url("/hook"), "timeout": "1s",
        "max_in_flight": HOOK_IN_FLIGHT, "retry": {"schedule": ["200ms"], "jitter": false}}),
    )
    .await;
    put(&http, &bases[1], "limited", json!({"kind": "webhook", "url": rx.url("/limited"),
        "rate_limit": {"rate": "20/s", "burst": 2}, "retry": {"schedule": ["200ms"], "jitter": false}})).await;

    // 1. A rate limit holds for the cluster: 60 messages spread over three nodes.
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(
            send(&http, &bases[i % 3], "limited", format!("limited {i}"))
                .await
                .unwrap(),
        );
    }
    let got = rx.wait_for(60, Duration::from_secs(30)).await;
    let times: Vec<_> = got
        .iter()
        .filter(|r| r.path == "/limited")
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 60);
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let busiest = times
        .iter()
        .map(|t0| {
            times
                .iter()
                .filter(|t| **t >= *t0 && t.duration_since(*t0) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    println!(
        "rate limit (cluster of 3): 60 deliveries at 20/s burst 2 took {span:.2} s; busiest second {busiest}"
    );
    // Tokens are spent when a node claims; a send reaches the receiver some milliseconds
    // later, and on a loaded machine that lag varies by up to a few hundred. So a second
    // of arrivals may hold what was claimed over a little more than a second: burst plus
    // the rate over 1.25 s. (Three per-node limits would let about 60 arrive in one.)
    let bound = 2 + (20.0f64 * 1.25).ceil() as usize;
    assert!(
        busiest <= bound,
        "at most burst + rate in any second across the cluster (with {bound} allowing for send lag), got {busiest}"
    );
    assert!(
        span >= (60.0 - 2.0) / 20.0 * 0.9,
        "the cluster delivered faster than the limit allows: {span:.2} s"
    );
    assert_eq!(
        ids_at(&rx, "/limited").iter().collect::<HashSet<_>>().len(),
        60
    );

    // 2. Load over every node, then SIGKILL the second one. A receiver that takes 100 ms
    //    keeps attempts in flight on every node when the kill comes.
    rx.set_default(herald_testkit::receiver::Reply::ok().delay(Duration::from_millis(100)));
    let started = std::time::Instant::now();
    let acked = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let dead = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, bases, acked, stop, dead) = (
            http.clone(),
            bases.clone(),
            acked.clone(),
            stop.clone(),
            dead.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let n = (c + i) % 3;
                if n == 1 && dead.load(Ordering::Relaxed) {
                    continue;
                }
                // A request to the node being killed may fail: it was never acknowledged.
                if let Some(id) =
                    send(&http, &bases[n], "hook", format!("client {c} message {i}")).await
                {
                    acked.lock().unwrap().push((n, id));
                }
            }
        }));
    }
    herald_testkit::eventually(Duration::from_secs(60), "load on every node", || async {
        let a = acked.lock().unwrap();
        let per_node = (0..3)
            .map(|n| a.iter().filter(|(m, _)| *m == n).count())
            .min()
            .unwrap();
        (per_node >= 150 && ids_at(&rx, "/hook").len() >= 100).then_some(())
    })
    .await;
    nodes[1].take().unwrap().kill9();
    dead.store(true, Ordering::Relaxed);
    let killed_at = started.elapsed();
    let kill_ms = herald_core::clock::now_ms();
    // What the dead node had in flight: deliveries leased before the kill and still leased
    // 5 s later (the survivors' 100 ms attempts are long finished; the leases last 11 s).
    let orphans = {
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            herald_testkit::postgres::query_i64(
                &url,
                "SELECT COUNT(*) FROM deliveries WHERE status = 'in_flight' AND updated_at <= $1",
                kill_ms,
            )
            .await
        })
    };
    let at_kill = acked.lock().unwrap().len();
    // The survivors keep accepting while they take over the dead node's work.
    herald_testkit::eventually(
        Duration::from_secs(30),
        "more load after the kill",
        || async { (acked.lock().unwrap().len() >= at_kill + 200).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked: Vec<(usize, String)> = acked.lock().unwrap().clone();
    let want: HashSet<&String> = acked.iter().map(|(_, id)| id).collect();
    herald_testkit::eventually(
        Duration::from_secs(90),
        "every acknowledged message at the receiver",
        || async {
            let got: HashSet<String> = ids_at(&rx, "/hook").into_iter().collect();
            want.iter().all(|id| got.contains(*id)).then_some(())
        },
    )
    .await;
    let recovered_after = started.elapsed() - killed_at;
    let orphans = orphans.await.unwrap() as usize;
    // Attempts the dead node had in flight reached the receiver but were never recorded:
    // the survivors retry them once its leases expire. Count only when nothing is open.
    herald_testkit::eventually(
        Duration::from_secs(90),
        "no delivery left open in the cluster",
        || async {
            for status in ["pending", "in_flight"] {
                let page: serde_json::Value = http
                    .get(format!(
                        "{}/api/v1/deliveries?status={status}&limit=1",
                        bases[0]
                    ))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                if !page["items"].as_array()?.is_empty() {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let settled_after = started.elapsed() - killed_at;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hook = ids_at(&rx, "/hook");
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &hook {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates = hook.len() - counts.len();
    let per_node: Vec<usize> = (0..3)
        .map(|n| acked.iter().filter(|(m, _)| *m == n).count())
        .collect();
    println!(
        "cluster test: acknowledged={} (node1={} node2={} [killed] node3={}) delivered_unique={} requests={} duplicates={} (in flight on the killed node: {orphans}; its max_in_flight {HOOK_IN_FLIGHT}); killed at {:.1} s, every acknowledged message at the receiver {:.1} s later, every delivery settled {:.1} s later (leases of 11 s)",
        acked.len(),
        per_node[0],
        per_node[1],
        per_node[2],
        counts.len(),
        hook.len(),
        duplicates,
        killed_at.as_secs_f64(),
        recovered_after.as_secs_f64(),
        settled_after.as_secs_f64()
    );
    assert!(
        duplicates <= orphans,
        "duplicates ({duplicates}) exceed what the killed node had in flight ({orphans})"
    );

    // 3. One audit chain, written by three nodes at once, verifies.
    let v: serde_json::Value = http
        .get(format!("{}/api/v1/audit/verify", bases[2]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("cluster audit chain: {v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() > acked.len() as u64 * 2);
    for n in nodes.into_iter().flatten() {
        assert!(n.terminate().success());
    }
}
