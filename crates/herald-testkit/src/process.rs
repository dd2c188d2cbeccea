//! The real `herald` binary as a child process, for tests that kill it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `herald serve`.
pub struct HeraldProcess {
    pub child: Child,
    pub base: String,
    /// Every line it printed on standard output so far.
    stdout: Arc<Mutex<Vec<String>>>,
}

impl HeraldProcess {
    /// Starts `bin serve` on a free loopback port with the given data dir and extra env,
    /// and waits until it prints its address.
    pub fn spawn(bin: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_on(bin, free_port(), data_dir, env)
    }

    /// [`spawn`](Self::spawn) on a given port (a restarted node keeps its address).
    pub fn spawn_on(bin: &Path, port: u16, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("HERALD_CONFIG")
            .env_remove("HERALD_DATABASE_URL")
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => {}
                Err(_) if Instant::now() > deadline => panic!("herald did not start within 30 s"),
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("herald exited early: {status}");
                    }
                }
            }
        }
        HeraldProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stdout: lines,
        }
    }

    /// What it printed on standard output so far (its address, the admin token or the
    /// recovery hint), one line each.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`, …) to the process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for herald")
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
