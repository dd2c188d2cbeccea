//! The fault suite: real `herald serve` processes under load from single-message clients
//! while the test breaks what they stand on — a private Postgres terminated, restarted,
//! crashed and started late; a SQLite disk filled up on a small tmpfs; fsync failing with
//! EIO (strace's fault injection); the process SIGKILLed in a loop and SIGSTOPped beyond
//! its lease. Each scenario checks that every acknowledged message reaches the receiver,
//! that duplicates stay within what was in flight, that readiness says "not ready" while
//! the fault lasts, and that the node recovers by itself within 5 s of the fault ending —
//! then prints one `fault:` line for the summary.
//!
//! All traffic goes to 127.0.0.1.

use herald_testkit::faults::{
    Load, PrivatePostgres, Report, is_root, require_tool, saw_not_ready, seen_between, tally,
    wait_recovered,
};
use herald_testkit::postgres::{query_i64, query_strings};
use herald_testkit::process::HeraldProcess;
use herald_testkit::receiver::FakeReceiver;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "hrld_faultsuiteadm_0123456789abcdefABCDEF0123456";
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The most attempts one node runs at once for `hook`.
const HOOK_IN_FLIGHT: usize = 8;
const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(10);

/// The scenarios share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herald"))
}

fn env<'a>(database_url: Option<&'a str>, config: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut env = vec![
        ("HERALD_ADMIN_TOKEN", TOKEN),
        ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
        ("HERALD_MASTER_KEY", MASTER_KEY),
        ("HERALD_CONFIG", config),
    ];
    if let Some(url) = database_url {
        env.push(("HERALD_DATABASE_URL", url));
    }
    env
}

/// A configuration file with the given TOML.
fn config(dir: &Path, toml: &str) -> String {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml).expect("write the configuration");
    path.display().to_string()
}

async fn put_hook(base: &str, rx: &FakeReceiver) {
    let r = reqwest::Client::new()
        .put(format!("{base}/api/v1/destinations/hook"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"kind": "webhook", "url": rx.url("/hook"), "timeout": "2s",
            "max_in_flight": HOOK_IN_FLIGHT, "retry": {"schedule": ["200ms"], "jitter": false}}),
        )
        .send()
        .await
        .expect("put the destination");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Deliveries leased right now (attempting, or leased ahead): what could be sent twice.
async fn in_flight(database_url: &str) -> usize {
    query_i64(
        database_url,
        "SELECT COUNT(*) FROM deliveries WHERE status = 'in_flight' AND $1 = $1",
        0,
    )
    .await as usize
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=ro", data_dir.join("herald.db").display())
}

/// Runs a blocking step (pg_ctl, a process start) without stalling the test's runtime,
/// which also runs the receiver and the clients.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A node's `/metrics` text (it answers while the store is down).
async fn metrics_of(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(r.status().as_u16(), 200, "/metrics answers during a fault");
    r.text().await.unwrap_or_default()
}

/// What the other ingest paths and the dashboard answer now: a Sentry event, a dashboard
/// sign-in (it stores a session) and a list read.
async fn other_routes(base: &str) -> Vec<(&'static str, u16)> {
    let http = reqwest::Client::new();
    let sentry = http
        .post(format!("{base}/api/1/store/?sentry_key={TOKEN}"))
        .json(&json!({"message": "boom", "level": "error", "platform": "python"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let signin = http
        .post(format!("{base}/ui/signin"))
        .header("Origin", base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let read = http
        .get(format!("{base}/api/v1/deliveries"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    vec![
        ("the Sentry ingest", sentry),
        ("the dashboard sign-in", signin),
        ("GET /api/v1/deliveries", read),
    ]
}

/// Waits until every node says it is not ready (or does not answer).
async fn all_not_ready(bases: &[String], within: Duration) {
    for b in bases {
        assert!(
            saw_not_ready(&format!("{b}/readyz"), within).await,
            "{b}/readyz kept answering 200 during the fault"
        );
    }
}

/// Two nodes on a private Postgres, under load; `fault` breaks the database and returns
/// when the fault has ended. The rest is checked and reported here.
async fn postgres_scenario(
    scenario: &str,
    fault: impl AsyncFnOnce(&PrivatePostgres, &str, &[String]),
) {
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let Some(pg) = PrivatePostgres::start(scenario) else {
        return;
    };
    let url = pg.database("faults").await;
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let nodes: Vec<HeraldProcess> = (0..2)
        .map(|i| {
            let d = dir.path().join(format!("node{i}"));
            HeraldProcess::spawn(bin(), &d, &env(Some(&url), &cfg))
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    put_hook(&bases[0], &rx).await;
    let load = Load::start(&bases, TOKEN, "hook", CLIENTS, PACE);
    load.wait_acked(150, Duration::from_secs(30)).await;

    let before = load.seen();
    let leased = in_flight(&url).await;
    fault(&pg, &url, &bases).await;
    let recover_s = wait_recovered(&bases, TOKEN, "hook", &rx, Duration::from_secs(20)).await;
    let during = seen_between(&before, &load.seen());
    for b in &bases {
        let m = metrics_of(b).await;
        assert!(m.contains("herald_store_up 1"), "up again:\n{m}");
        assert!(
            m.contains("herald_store_reconnects_total{connection=\"writer\"}"),
            "the writer's reconnect is counted:\n{m}"
        );
    }
    load.wait_acked(50, Duration::from_secs(20)).await;
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(60)).await;
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: leased + 2 * HOOK_IN_FLIGHT,
        recover_s,
        during,
    }
    .check();
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backends_terminated_mid_load_heal_at_once() {
    postgres_scenario("postgres backends terminated", async |pg, url, _| {
        let n = pg.terminate_backends(url).await;
        assert!(n >= 2, "every node had connections ({n} ended)");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_is_not_ready_then_heals() {
    postgres_scenario("postgres restart", async |pg, _, bases| {
        blocking(|| pg.stop("fast"));
        all_not_ready(bases, Duration::from_secs(5)).await;
        let metrics = metrics_of(&bases[0]).await;
        assert!(
            metrics.contains("herald_store_up 0"),
            "the gauge says the store is down:\n{metrics}"
        );
        for (route, status) in other_routes(&bases[0]).await {
            assert_eq!(status, 503, "{route} answers 503 while the store is down");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        blocking(|| pg.start_again());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_mid_load_is_not_ready_then_heals() {
    postgres_scenario("postgres crash (immediate)", async |pg, _, bases| {
        blocking(|| pg.stop("immediate"));
        all_not_ready(bases, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        blocking(|| pg.start_again());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_postgres_waits_for_it_then_gives_up_with_the_reason() {
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let scenario = "postgres down at start-up";
    let Some(pg) = PrivatePostgres::start(scenario) else {
        return;
    };
    let url = pg.database("faults").await;
    blocking(|| pg.stop("fast"));
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Started while the database is down, it waits (instead of exiting) and serves once
    // the database is up.
    let cfg = config(dir.path(), "");
    let (node_dir, node_url, node_cfg) = (dir.path().join("node"), url.clone(), cfg.clone());
    let node = std::thread::spawn(move || {
        HeraldProcess::spawn(bin(), &node_dir, &env(Some(&node_url), &node_cfg))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !node.is_finished(),
        "the node is still waiting for its database"
    );
    blocking(|| pg.start_again());
    let fault_ended = Instant::now();
    let node = blocking(|| node.join().expect("the node started"));
    let bases = vec![node.base.clone()];
    put_hook(&bases[0], &rx).await;
    wait_recovered(&bases, TOKEN, "hook", &rx, Duration::from_secs(20)).await;
    let recover_s = fault_ended.elapsed().as_secs_f64();
    let load = Load::start(&bases, TOKEN, "hook", CLIENTS, PACE);
    load.wait_acked(100, Duration::from_secs(30)).await;
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(30)).await;
    drop(node);

    // With a short connect_timeout and no database it exits non-zero, saying why.
    blocking(|| pg.stop("fast"));
    let short = config(dir.path(), "[store]\nconnect_timeout = \"2s\"\n");
    let t0 = Instant::now();
    let out = blocking(|| {
        Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("late"))
            .env("HERALD_LOG", "warn")
            .envs(env(Some(&url), &short))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run herald serve")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gives up: {stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "within its connect_timeout"
    );
    assert!(
        stderr.contains("gave up after") && stderr.contains("retrying"),
        "each try is logged and the reason given: {stderr}"
    );
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: 0,
        recover_s,
        during: format!(
            "nothing listening while it waited; with connect_timeout 2s it exited {} after {:.1} s",
            out.status,
            t0.elapsed().as_secs_f64()
        ),
    }
    .check();
}

/// A small tmpfs of the test's own, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes `path` until the file system is full; the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create the ballast");
    let chunk = vec![0x5au8; 64 << 10];
    let mut written = 0;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.sync_all();
    written
}

/// A load on one SQLite node; `fault` breaks it and returns once the fault has ended.
async fn sqlite_scenario(
    scenario: &str,
    data_dir: &Path,
    fault: impl AsyncFnOnce(&HeraldProcess, &Load) -> String,
) {
    herald_server::install_crypto_provider();
    let rx = FakeReceiver::start().await;
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(cfg_dir.path(), "");
    let node = HeraldProcess::spawn(bin(), data_dir, &env(None, &cfg));
    let bases = vec![node.base.clone()];
    put_hook(&bases[0], &rx).await;
    let load = Load::start(&bases, TOKEN, "hook", CLIENTS, PACE);
    load.wait_acked(150, Duration::from_secs(30)).await;

    let before = load.seen();
    let leased = in_flight(&sqlite_url(data_dir)).await;
    let what = fault(&node, &load).await;
    let recover_s = wait_recovered(&bases, TOKEN, "hook", &rx, Duration::from_secs(20)).await;
    let during = format!("{}; {what}", seen_between(&before, &load.seen()));
    load.wait_acked(50, Duration::from_secs(20)).await;
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(60)).await;
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: leased + HOOK_IN_FLIGHT,
        recover_s,
        during,
    }
    .check();
}

/// Waits until the load has seen more answers `status` than in `before`.
async fn load_sees(load: &Load, status: &str, within: Duration) -> bool {
    let before = load.seen().get(status).copied().unwrap_or(0);
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if load.seen().get(status).copied().unwrap_or(0) > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_is_not_ready_and_heals_when_space_returns() {
    let _one = SERIAL.lock().await;
    let scenario = "disk full (tmpfs)";
    if !require_tool(scenario, "root, to mount a tmpfs", is_root()) {
        return;
    }
    let fs = Tmpfs::mount("48m").expect("mount a tmpfs");
    let data = fs.path().join("data");
    let ballast = fs.path().join("ballast");
    sqlite_scenario(scenario, &data, async |node, load| {
        let filled = blocking(|| fill(&ballast));
        let readyz = format!("{}/readyz", node.base);
        all_not_ready(std::slice::from_ref(&node.base), Duration::from_secs(5)).await;
        let body: serde_json::Value = reqwest::get(&readyz).await.unwrap().json().await.unwrap();
        assert_eq!(body["ready"], false, "{body}");
        assert_eq!(body["fault"], "insufficient-storage", "{body}");
        assert!(
            load_sees(load, "507", Duration::from_secs(20)).await,
            "clients are told 507 while the disk is full"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        std::fs::remove_file(&ballast).expect("free the space");
        format!("readyz 503 {}; ballast {} MiB", body["fault"], filled >> 20)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_failing_with_eio_answers_503_and_heals_when_it_stops() {
    let _one = SERIAL.lock().await;
    let scenario = "fsync EIO (strace inject)";
    let strace = herald_testkit::faults::postgres_bin("strace")
        .or_else(|| Some(PathBuf::from("/usr/bin/strace")).filter(|p| p.is_file()));
    if !require_tool(scenario, "strace", strace.is_some()) {
        return;
    }
    let strace = strace.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sqlite_scenario(scenario, dir.path(), async |node, load| {
        // Every fsync of every thread fails from now on, until strace lets go.
        let mut tracer = Command::new(&strace)
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "trace=fsync,fdatasync",
            ])
            .args(["-e", "inject=fsync,fdatasync:error=EIO", "-p"])
            .arg(node.child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start strace");
        all_not_ready(std::slice::from_ref(&node.base), Duration::from_secs(10)).await;
        let readyz = format!("{}/readyz", node.base);
        let body: serde_json::Value = reqwest::get(&readyz).await.unwrap().json().await.unwrap();
        assert_eq!(body["ready"], false, "{body}");
        assert!(
            load_sees(load, "503", Duration::from_secs(10)).await,
            "clients are told 503 while fsync fails"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(tracer.id().to_string())
            .status();
        let _ = blocking(|| tracer.wait());
        format!("readyz 503 \"{}\"", body["reason"].as_str().unwrap_or(""))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_loop_loses_nothing_and_each_restart_serves_at_once() {
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(cfg_dir.path(), "");
    let port = herald_testkit::process::free_port();
    let mut node = HeraldProcess::spawn_on(bin(), port, dir.path(), &env(None, &cfg));
    let bases = vec![node.base.clone()];
    put_hook(&bases[0], &rx).await;
    let load = Load::start(&bases, TOKEN, "hook", CLIENTS, PACE);
    let before = load.seen();
    let (mut leased, mut recover_s) = (0, 0f64);
    for _ in 0..3 {
        load.wait_acked(100, Duration::from_secs(30)).await;
        node.signal("KILL");
        let _ = node.child.wait();
        leased += in_flight(&sqlite_url(dir.path())).await;
        let restarted = Instant::now();
        node = blocking(|| HeraldProcess::spawn_on(bin(), port, dir.path(), &env(None, &cfg)));
        wait_recovered(&bases, TOKEN, "hook", &rx, Duration::from_secs(20)).await;
        recover_s = recover_s.max(restarted.elapsed().as_secs_f64());
    }
    load.wait_acked(50, Duration::from_secs(20)).await;
    let during = seen_between(&before, &load.seen());
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(60)).await;
    Report {
        scenario: "kill -9 loop (3 kills)".into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: leased + 3 * HOOK_IN_FLIGHT,
        recover_s,
        during,
    }
    .check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_beyond_its_lease_is_taken_over_and_rejoins() {
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let scenario = "SIGSTOP beyond the lease";
    let Some(pg) = PrivatePostgres::start(scenario) else {
        return;
    };
    let url = pg.database("faults").await;
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "lease = \"12s\"\n");
    // Each node names its sessions, so the test can see which one holds a lock.
    let node_urls: Vec<String> = (0..2)
        .map(|i| format!("{url}?application_name=herald-n{i}"))
        .collect();
    let nodes: Vec<HeraldProcess> = (0..2)
        .map(|i| {
            HeraldProcess::spawn(
                bin(),
                &dir.path().join(format!("n{i}")),
                &env(Some(&node_urls[i]), &cfg),
            )
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    // Slow answers keep attempts in flight on both nodes at any moment.
    rx.set_default(herald_testkit::receiver::Reply::ok().delay(Duration::from_millis(50)));
    put_hook(&bases[0], &rx).await;
    let load = Load::start(&bases, TOKEN, "hook", 2, PACE);
    load.wait_acked(150, Duration::from_secs(30)).await;

    let before = load.seen();
    // Stop node 0 at the worst instant: inside a transaction holding the audit chain's
    // lock, which every node's commits take. (Stopped anywhere else, the other node only
    // waits for the leases.) Postgres must end that frozen session for the cluster to go on.
    let holds_audit_lock = "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'herald-n0' AND $1 = $1";
    let mut tries = 0;
    loop {
        nodes[0].signal("STOP");
        tries += 1;
        if query_i64(&url, holds_audit_lock, 0).await > 0 {
            break;
        }
        nodes[0].signal("CONT");
        assert!(
            tries < 2000,
            "node 0 never held the audit lock when stopped"
        );
        tokio::time::sleep(Duration::from_millis(3 + tries % 7)).await;
    }
    let stopped = Instant::now();
    let leased = query_strings(&url, "SELECT id FROM deliveries WHERE status = 'in_flight'").await;
    assert!(saw_not_ready(&format!("{}/readyz", bases[0]), Duration::from_secs(3)).await);
    // The other node takes over what was leased — the stopped node's share too — once
    // those leases expire (12 s), while the stopped node is still stopped.
    let ids = leased
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let unsettled = format!(
        "SELECT COUNT(*) FROM deliveries WHERE id IN ({ids}) AND status <> 'delivered' AND $1 = $1"
    );
    // Normally 12.3 s (the lease); the margin is for a machine busy with other work.
    herald_testkit::eventually(
        Duration::from_secs(60),
        "the live node settling the stopped node's leased deliveries",
        || async { (leased.is_empty() || query_i64(&url, &unsettled, 0).await == 0).then_some(()) },
    )
    .await;
    let taken_over = stopped.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(14).saturating_sub(stopped.elapsed())).await;
    nodes[0].signal("CONT");
    let recover_s = wait_recovered(&bases, TOKEN, "hook", &rx, Duration::from_secs(20)).await;
    let during = format!(
        "{}; stopped {:.1} s holding the audit lock (after {tries} tries); the {} deliveries leased at the stop delivered {taken_over:.1} s after it",
        seen_between(&before, &load.seen()),
        stopped.elapsed().as_secs_f64(),
        leased.len()
    );
    load.wait_acked(50, Duration::from_secs(20)).await;
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(60)).await;
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: leased.len() + 2 * HOOK_IN_FLIGHT,
        recover_s,
        during,
    }
    .check();
    drop(nodes);
}

/// Opens `n` raw connections to `addr`.
async fn connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => out.push(s),
            Err(e) => panic!("connecting the flood: {e}"),
        }
    }
    out
}

/// Polls [`closed`] until every socket is closed or `deadline` passes; how many were.
async fn until_closed(socks: &mut [tokio::net::TcpStream], deadline: Instant) -> usize {
    let mut done = vec![false; socks.len()];
    loop {
        for (s, d) in socks.iter_mut().zip(done.iter_mut()) {
            if !*d && closed(std::slice::from_mut(s)).await == 1 {
                *d = true;
            }
        }
        let n = done.iter().filter(|d| **d).count();
        if n == socks.len() || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many of `socks` the server has closed (a read sees the end, or an error), looking
/// without waiting: what has arrived is read, an open socket with nothing to read counts
/// as open.
async fn closed(socks: &mut [tokio::net::TcpStream]) -> usize {
    tokio::task::yield_now().await;
    let mut n = 0;
    let mut buf = [0u8; 4096];
    for s in socks.iter_mut() {
        loop {
            match s.try_read(&mut buf) {
                Ok(0) => {
                    n += 1;
                    break;
                }
                // Bytes (a response, a 408): keep reading to see whether the end follows.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    n += 1;
                    break;
                }
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_idle_floods_do_not_starve_a_normal_client() {
    use tokio::io::AsyncWriteExt;
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let scenario = "slowloris + idle flood";
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (header_timeout, idle_timeout) = (Duration::from_secs(3), Duration::from_secs(8));
    let cfg = config(
        dir.path(),
        "[http]\nheader_timeout = \"3s\"\nidle_timeout = \"8s\"\nmax_connections = 4000\n",
    );
    let node = HeraldProcess::spawn(bin(), &dir.path().join("node"), &env(None, &cfg));
    put_hook(&node.base, &rx).await;
    let addr = node.base.trim_start_matches("http://").to_string();

    // 1 000 clients kept alive after one request each (answered before the next phase)…
    let mut idle = connections(&addr, 1000).await;
    for s in idle.iter_mut() {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
    }
    for s in idle.iter_mut() {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an idle client's request is answered")
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let idle_since = Instant::now();
    // …and 2 000 trickling a header that never ends.
    let mut slow = connections(&addr, 2000).await;
    for s in slow.iter_mut() {
        s.write_all(b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
    }
    let slow_since = Instant::now();
    let trickle = async {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            for s in slow.iter_mut() {
                let _ = s.write_all(b"a").await;
            }
        }
    };

    // Meanwhile a normal client is answered at once.
    let client = async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let health = http
            .get(format!("{}/healthz", node.base))
            .send()
            .await
            .unwrap();
        let healthz = t0.elapsed();
        assert_eq!(health.status().as_u16(), 200);
        let mut acked = std::collections::HashSet::new();
        let mut slowest = Duration::ZERO;
        for i in 0..5 {
            let t0 = Instant::now();
            let r = http
                .post(format!("{}/api/v1/messages", node.base))
                .bearer_auth(TOKEN)
                .json(&json!({"text": format!("during the flood {i}"), "to": ["hook"]}))
                .send()
                .await
                .unwrap();
            slowest = slowest.max(t0.elapsed());
            assert_eq!(r.status().as_u16(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            acked.insert(v["id"].as_str().unwrap().to_string());
        }
        (healthz, slowest, acked)
    };
    let ((healthz, slowest, acked), ()) = tokio::join!(client, trickle);
    assert!(healthz < Duration::from_secs(1), "healthz took {healthz:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a message took {slowest:?}"
    );

    // Trickled headers are closed after the header timeout (counted from the connection's
    // start), while the kept-alive connections, idle for less than the idle timeout, live.
    let slow_closed = until_closed(
        &mut slow,
        slow_since + header_timeout + Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        slow_closed, 2000,
        "every slowloris connection is closed after the header timeout"
    );
    let slow_took = slow_since.elapsed();
    if idle_since.elapsed() + Duration::from_secs(1) < idle_timeout {
        let early = closed(&mut idle).await;
        assert_eq!(
            early, 0,
            "kept-alive connections outlive the header timeout"
        );
    }
    let idle_closed = until_closed(
        &mut idle,
        idle_since + idle_timeout + Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        idle_closed, 1000,
        "idle connections are closed after the idle timeout"
    );
    let idle_took = idle_since.elapsed();
    assert!(
        idle_took >= idle_timeout,
        "not before the idle timeout: {idle_took:?}"
    );
    drop((slow, idle));

    // Beyond the cap, new connections are closed at once and counted.
    let capped_cfg_dir = tempfile::tempdir().unwrap();
    let capped_cfg = config(capped_cfg_dir.path(), "[http]\nmax_connections = 200\n");
    let capped = HeraldProcess::spawn(
        bin(),
        &capped_cfg_dir.path().join("node"),
        &env(None, &capped_cfg),
    );
    let capped_addr = capped.base.trim_start_matches("http://").to_string();
    let mut over = connections(&capped_addr, 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = closed(&mut over).await;
    assert!(
        refused >= 100,
        "{refused} of 300 closed at once over a cap of 200"
    );
    drop(over);
    let ended = Instant::now();
    let metrics = herald_testkit::eventually(
        Duration::from_secs(5),
        "a scrape once the flood ends",
        || async {
            let r = reqwest::get(format!("{}/metrics", capped.base))
                .await
                .ok()?;
            r.text().await.ok()
        },
    )
    .await;
    let recover_s = ended.elapsed().as_secs_f64();
    let rejected_line = metrics
        .lines()
        .find(|l| l.starts_with("herald_http_connections_rejected_total"))
        .unwrap_or_default()
        .to_string();
    assert!(
        !rejected_line.is_empty(),
        "the rejections are counted:\n{metrics}"
    );

    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(20)).await;
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: 0,
        recover_s,
        during: format!(
            "3000 sockets open: healthz in {} ms, slowest message 202 in {} ms; 2000 slowloris closed {:.1} s after opening (header timeout 3 s), 1000 idle {:.1} s after their answer (idle timeout 8 s); over a cap of 200: {refused} of 300 closed at once ({rejected_line})",
            healthz.as_millis(),
            slowest.as_millis(),
            slow_took.as_secs_f64(),
            idle_took.as_secs_f64()
        ),
    }
    .check();
}

/// Runs the `herald` CLI with `args`; (exit success, stdout, stderr).
fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("HERALD_LOG", "warn")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_DATABASE_URL")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_noticed_named_and_refused_never_a_500() {
    use herald_testkit::postgres::execute;
    let _one = SERIAL.lock().await;
    herald_server::install_crypto_provider();
    let scenario = "flipped byte";
    let rx = FakeReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let cfg = config(dir.path(), "");
    let db = data.join("herald.db");
    let rw = format!("sqlite://{}", db.display());

    // A store with some history, stopped cleanly (its WAL folded into the file).
    let node = HeraldProcess::spawn(bin(), &data, &env(None, &cfg));
    put_hook(&node.base, &rx).await;
    let load = Load::start(std::slice::from_ref(&node.base), TOKEN, "hook", 2, PACE);
    load.wait_acked(40, Duration::from_secs(30)).await;
    let (acked, _) = load.stop().await;
    let (lost, duplicates) = tally(&rx, &acked, Duration::from_secs(30)).await;
    assert!(blocking(|| node.terminate()).success());
    execute(&rw, "PRAGMA wal_checkpoint(TRUNCATE)").await;
    let good = std::fs::read(&db).unwrap();

    // (a) A flipped byte in an index page: start-up refuses, the doctor names it.
    let page_size = query_i64(
        &rw,
        "SELECT page_size FROM pragma_page_size() WHERE $1 = $1",
        0,
    )
    .await;
    let root = query_i64(
        &rw,
        "SELECT rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' AND $1 = $1 ORDER BY rootpage LIMIT 1",
        0,
    )
    .await;
    let mut bad = good.clone();
    let at = ((root - 1) * page_size) as usize;
    bad[at] ^= 0xff; // the b-tree page type
    std::fs::write(&db, &bad).unwrap();
    let (started, _, refused) = blocking(|| {
        cli(
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_arg],
            &[
                ("HERALD_ADMIN_TOKEN", TOKEN),
                ("HERALD_MASTER_KEY", MASTER_KEY),
            ],
        )
    });
    assert!(!started, "a damaged database is not served");
    assert!(
        refused.contains("is damaged") && refused.contains("herald doctor"),
        "the refusal says what to run: {refused}"
    );
    let (healthy, report, _) = blocking(|| cli(&["doctor", "--data-dir", &data_arg], &[]));
    assert!(!healthy, "doctor exits 1");
    assert!(report.contains("FAILED integrity"), "{report}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bad,
        "the doctor changed nothing"
    );

    // (b) Audit rows changed or made unreadable: verify names the first one, never a 500.
    std::fs::write(&db, &good).unwrap();
    execute(
        &rw,
        "UPDATE audit_log SET actor = CAST(X'FFFE41' AS TEXT) WHERE seq = 4; UPDATE audit_log SET detail = 'not json' WHERE seq = 6",
    )
    .await;
    let node = HeraldProcess::spawn(bin(), &data, &env(None, &cfg));
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/audit/verify", node.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "a damaged chain is an answer, not an error"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken_at"], 4, "{v}");
    let (verified, printed, _) = blocking(|| {
        cli(
            &["audit", "verify"],
            &[("HERALD_URL", &node.base), ("HERALD_TOKEN", TOKEN)],
        )
    });
    assert!(!verified, "herald audit verify exits non-zero");
    assert!(printed.contains('4'), "names the entry: {printed}");
    let (healthy, report, _) = blocking(|| cli(&["doctor", "--data-dir", &data_arg], &[]));
    assert!(!healthy);
    assert!(report.contains("broken at seq 4"), "{report}");
    assert!(blocking(|| node.terminate()).success());

    // (c) The good copy back: the doctor is content and the node serves within moments.
    std::fs::write(&db, &good).unwrap();
    let _ = std::fs::remove_file(data.join("herald.db-wal"));
    let _ = std::fs::remove_file(data.join("herald.db-shm"));
    let (healthy, report, _) = blocking(|| cli(&["doctor", "--data-dir", &data_arg], &[]));
    assert!(healthy, "{report}");
    let restored = Instant::now();
    let node = blocking(|| HeraldProcess::spawn(bin(), &data, &env(None, &cfg)));
    wait_recovered(
        std::slice::from_ref(&node.base),
        TOKEN,
        "hook",
        &rx,
        Duration::from_secs(20),
    )
    .await;
    Report {
        scenario: scenario.into(),
        acked: acked.len(),
        lost,
        duplicates,
        duplicate_bound: HOOK_IN_FLIGHT,
        recover_s: restored.elapsed().as_secs_f64(),
        during: format!(
            "index page {root} flipped: serve refused, doctor exit 1; audit rows 4 and 6 damaged: verify 200 broken_at {}, audit verify and doctor exit 1",
            v["broken_at"]
        ),
    }
    .check();
}
