//! Support for the fault suite: a private Postgres that a test may stop and crash
//! ([`PrivatePostgres`]), a load of single-message clients that keeps what was acknowledged
//! and what it saw ([`Load`]), the count of what reached the receiver ([`tally`]) and the one
//! line every scenario prints ([`Report`]), which the test script gathers into its summary.
//!
//! Everything listens on and talks to 127.0.0.1 only.

use crate::receiver::FakeReceiver;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scenario's result, printed as a `fault:` line.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    /// Messages answered 202.
    pub acked: usize,
    /// Acknowledged messages that never reached the receiver.
    pub lost: usize,
    /// Requests at the receiver beyond one per message.
    pub duplicates: usize,
    /// The bound duplicates must stay within (attempts that could be in flight).
    pub duplicate_bound: usize,
    /// Seconds from the end of the fault until the node(s) were ready and serving again.
    pub recover_s: f64,
    /// What clients saw while the fault lasted, e.g. `202×120 503×40`.
    pub during: String,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Report {
            scenario: scenario.to_string(),
            ..Report::default()
        }
    }

    /// Prints the line and checks the rules every scenario shares: nothing acknowledged
    /// lost, duplicates within the bound, recovery by itself within 5 s.
    pub fn check(&self) {
        println!(
            "fault: {} acked={} lost={} duplicates={} (bound {}) recover_s={:.2} during=[{}]",
            self.scenario,
            self.acked,
            self.lost,
            self.duplicates,
            self.duplicate_bound,
            self.recover_s,
            self.during
        );
        assert_eq!(
            self.lost, 0,
            "{}: acknowledged messages lost",
            self.scenario
        );
        assert!(
            self.duplicates <= self.duplicate_bound,
            "{}: {} duplicates, more than the {} attempts that could be in flight",
            self.scenario,
            self.duplicates,
            self.duplicate_bound
        );
        assert!(
            self.recover_s <= 5.0,
            "{}: took {:.2} s to recover (at most 5 s)",
            self.scenario,
            self.recover_s
        );
    }
}

/// Where the Postgres server binaries are: on `PATH`, or Debian's versioned directory.
pub fn postgres_bin(name: &str) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// Skips a scenario loudly when its tool is missing — except in CI, where it fails.
pub fn require_tool(scenario: &str, tool: &str, found: bool) -> bool {
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{scenario}: {tool} is needed in CI and is not installed");
    }
    eprintln!("\n*** SKIPPED {scenario}: {tool} is not installed ***\n");
    false
}

/// Whether the tests run as root (a tmpfs mount needs it; Postgres refuses it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A Postgres cluster of the test's own (initdb in a temporary directory, a free loopback
/// port, trust auth), so the test can stop, restart and crash it. Stopped when dropped.
pub struct PrivatePostgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    pg_ctl: PathBuf,
    /// Postgres refuses to run as root: as root, commands run as the `postgres` user.
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Initialises and starts a cluster; `None` (after a loud skip) when the server binaries
    /// are not installed outside CI.
    pub fn start(scenario: &str) -> Option<Self> {
        let (initdb, pg_ctl) = (postgres_bin("initdb"), postgres_bin("pg_ctl"));
        if !require_tool(
            scenario,
            "the Postgres server binaries (initdb, pg_ctl)",
            initdb.is_some() && pg_ctl.is_some(),
        ) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("herald-pg-")
            .tempdir()
            .expect("temp dir");
        let as_postgres = is_root();
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        if as_postgres {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown the private Postgres directory to postgres");
        }
        let pg = PrivatePostgres {
            _dir: dir,
            data,
            log,
            port: crate::process::free_port(),
            pg_ctl: pg_ctl.expect("pg_ctl"),
            as_postgres,
        };
        let data = pg.data.display().to_string();
        pg.run(
            initdb.as_deref().expect("initdb"),
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_again();
        Some(pg)
    }

    fn run(&self, bin: &Path, args: &[&str]) {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(
            out.status.success(),
            "{} {:?}: {}{}\nlog: {}",
            bin.display(),
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.data.display().to_string();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        self.run(&self.pg_ctl, &all);
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200",
            self.port
        );
        let log = self.log.display().to_string();
        self.ctl(&["-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
    }

    /// Stops the server: `fast` (clients disconnected, clean) or `immediate` (a crash:
    /// recovery from the WAL at the next start).
    pub fn stop(&self, mode: &str) {
        self.ctl(&["-m", mode, "-w", "-t", "60", "stop"]);
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        crate::postgres::create_database(&self.url("postgres"), name)
            .await
            .expect("create a database on the private Postgres")
    }

    /// Ends every backend connected to `url`'s database (`pg_terminate_backend`), as an
    /// operator or a failover would; returns how many.
    pub async fn terminate_backends(&self, url: &str) -> i64 {
        use sqlx::{AnyConnection, Connection};
        sqlx::any::install_default_drivers();
        let db = url.rsplit('/').next().unwrap_or_default().to_string();
        let mut admin = AnyConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the private Postgres");
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .fetch_one(&mut admin)
        .await
        .expect("terminate backends");
        let _ = admin.close().await;
        n
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&self.pg_ctl);
            c
        } else {
            Command::new(&self.pg_ctl)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Clients sending one message per request, each with its own `Idempotency-Key`, retrying
/// an unanswered or 503/507 request with the same key (on the next node) as a careful
/// client would. Keeps the ids answered 202 and counts every answer by kind.
pub struct Load {
    acked: Arc<Mutex<HashSet<String>>>,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients spread over `bases`, sending to destination `to`, each
    /// pausing `pace` between messages.
    pub fn start(bases: &[String], token: &str, to: &str, clients: usize, pace: Duration) -> Load {
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let tasks = (0..clients)
            .map(|c| {
                let (http, acked, seen, stop) =
                    (http.clone(), acked.clone(), seen.clone(), stop.clone());
                let (bases, token, to) = (bases.to_vec(), token.to_string(), to.to_string());
                tokio::spawn(async move {
                    let mut node = c;
                    let mut i = 0u64;
                    'messages: while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = format!("load-{c}-{i}-{}", std::process::id());
                        let body = json!({"text": format!("client {c} message {i}"), "to": [to]});
                        loop {
                            let base = &bases[node % bases.len()];
                            let answer = http
                                .post(format!("{base}/api/v1/messages"))
                                .bearer_auth(&token)
                                .header("Idempotency-Key", &key)
                                .json(&body)
                                .send()
                                .await;
                            let label = match answer {
                                Ok(r) if r.status().as_u16() == 202 => {
                                    let v: serde_json::Value = match r.json().await {
                                        Ok(v) => v,
                                        Err(_) => {
                                            node += 1;
                                            continue;
                                        }
                                    };
                                    if let Some(id) = v["id"].as_str() {
                                        acked.lock().unwrap().insert(id.to_string());
                                    }
                                    "202".to_string()
                                }
                                Ok(r) => r.status().as_u16().to_string(),
                                Err(e) if e.is_timeout() => "timeout".to_string(),
                                Err(_) => "refused".to_string(),
                            };
                            *seen.lock().unwrap().entry(label.clone()).or_default() += 1;
                            match label.as_str() {
                                "202" => break,
                                // The outcome is unknown or the node is down: the same key again.
                                "503" | "507" | "timeout" | "refused" | "409" => {
                                    node += 1;
                                    if stop.load(Ordering::Relaxed) {
                                        break 'messages;
                                    }
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                other => panic!("the load got an answer no fault excuses: {other}"),
                            }
                        }
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Load {
            acked,
            seen,
            stop,
            tasks,
        }
    }

    /// Ids acknowledged so far.
    pub fn acked(&self) -> HashSet<String> {
        self.acked.lock().unwrap().clone()
    }

    /// Answers so far, by kind (`202`, `503`, `refused`, …).
    pub fn seen(&self) -> BTreeMap<String, u64> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` more messages are acknowledged than now.
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        let target = self.acked.lock().unwrap().len() + n;
        crate::eventually(timeout, "acknowledged messages", || async {
            (self.acked.lock().unwrap().len() >= target).then_some(())
        })
        .await;
    }

    /// Stops the clients (a message being retried is given up: never acknowledged).
    pub async fn stop(self) -> (HashSet<String>, BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            // A client that met an answer no fault excuses (a 500, say) fails the test here.
            if let Err(e) = t.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let acked = self.acked.lock().unwrap().clone();
        let seen = self.seen.lock().unwrap().clone();
        (acked, seen)
    }
}

/// The answers between two [`Load::seen`] snapshots, as `202×120 503×40`.
pub fn seen_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k}×{d}"))
        })
        .collect();
    if parts.is_empty() {
        "no answers".into()
    } else {
        parts.join(" ")
    }
}

/// Waits (up to `timeout`) until every acknowledged id reached the receiver as a
/// `webhook-id`, then returns `(lost, duplicates)`.
pub async fn tally(
    rx: &FakeReceiver,
    acked: &HashSet<String>,
    timeout: Duration,
) -> (usize, usize) {
    let ids = || -> Vec<String> {
        rx.received()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let got = ids();
        let unique: HashSet<&String> = got.iter().collect();
        let lost = acked.iter().filter(|id| !unique.contains(id)).count();
        if lost == 0 || Instant::now() >= deadline {
            // Let stragglers of retried attempts arrive before counting duplicates.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let got = ids();
            let unique: HashSet<&String> = got.iter().collect();
            return (lost, got.len() - unique.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `url` (e.g. a node's `/readyz`) until it answers 200; the seconds it took.
pub async fn wait_ready(url: &str, timeout: Duration) -> f64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().as_u16() == 200
        {
            return t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > timeout {
            return t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status `url` answers now (0 when nothing answers).
pub async fn status_of(url: &str) -> u16 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    match http.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits until every node in `bases` is ready and serves again: `/readyz` is 200 and a
/// fresh message sent through each node is accepted and reaches the receiver. Returns the
/// seconds that took (`timeout` and more if it never happened, which fails the report).
pub async fn wait_recovered(
    bases: &[String],
    token: &str,
    to: &str,
    rx: &FakeReceiver,
    timeout: Duration,
) -> f64 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let t0 = Instant::now();
    let mut pending: Vec<&String> = bases.iter().collect();
    let mut probes: Vec<String> = Vec::new();
    let mut n = 0u64;
    while !pending.is_empty() && t0.elapsed() < timeout {
        let base = pending[0];
        let ready = matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().as_u16() == 200);
        if ready {
            n += 1;
            let sent = http
                .post(format!("{base}/api/v1/messages"))
                .bearer_auth(token)
                .json(&json!({"text": format!("recovery probe {n}"), "to": [to]}))
                .send()
                .await;
            if let Ok(r) = sent
                && r.status().as_u16() == 202
                && let Ok(v) = r.json::<serde_json::Value>().await
                && let Some(id) = v["id"].as_str()
            {
                probes.push(id.to_string());
                pending.remove(0);
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while t0.elapsed() < timeout {
        let got: HashSet<String> = rx
            .received()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect();
        if pending.is_empty() && probes.iter().all(|p| got.contains(p)) {
            return t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t0.elapsed().as_secs_f64().max(timeout.as_secs_f64())
}

/// Polls `url` until it answers anything but 200 (or nothing at all); whether that happened
/// within `timeout`.
pub async fn saw_not_ready(url: &str, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if status_of(url).await != 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
