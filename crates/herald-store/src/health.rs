//! What kind of trouble a database error is, and whether the node's store can commit now.
//!
//! Every `sqlx` error is sorted once, here ([`classify`]): a lost or refused connection and
//! a damaged file are the store's faults, a full disk is its own answer (507), and only the
//! rest — a constraint, a bad statement — is a bug. The writer keeps a [`Health`] that
//! `/readyz`, the `herald_store_up` gauge and the dispatcher read; it turns *down* at the
//! first failed commit of its kind and *up* again at the next commit that succeeds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// The storage fault behind an error, or `None` for an error that is a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The database cannot be reached, or the connection broke.
    Unavailable,
    /// No space left for the database (SQLite `SQLITE_FULL`, Postgres `53100`).
    Full,
    /// The disk failed a read or write (SQLite `SQLITE_IOERR`, e.g. an fsync error).
    Io,
    /// The database file is damaged (SQLite `SQLITE_CORRUPT`/`SQLITE_NOTADB`, Postgres `XX001`).
    Damaged,
}

impl Fault {
    /// A connection that met this fault is reopened before it is used again.
    pub fn breaks_connection(self) -> bool {
        matches!(self, Fault::Unavailable | Fault::Io | Fault::Damaged)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Unavailable => "database unreachable",
            Fault::Full => "disk full",
            Fault::Io => "disk I/O error",
            Fault::Damaged => "database damaged",
        }
    }
}

/// Sorts a database error into a storage fault, or `None` when it is not one.
pub fn classify(e: &sqlx::Error) -> Option<Fault> {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed => Some(Fault::Unavailable),
        E::Database(db) => {
            let code = db.code()?;
            if let Ok(extended) = code.parse::<i64>() {
                // SQLite: the primary result code is the low byte of the extended one.
                return match extended & 0xff {
                    13 => Some(Fault::Full),
                    10 => Some(Fault::Io),
                    11 | 26 => Some(Fault::Damaged),
                    14 | 15 => Some(Fault::Unavailable),
                    _ => None,
                };
            }
            match code.as_ref() {
                "53100" => Some(Fault::Full),
                "XX001" | "XX002" => Some(Fault::Damaged),
                // Connection exceptions, and the server shutting down or not yet accepting.
                c if c.starts_with("08") => Some(Fault::Unavailable),
                "57P01" | "57P02" | "57P03" | "53300" => Some(Fault::Unavailable),
                c if c.starts_with("58") => Some(Fault::Io),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the node's store can commit, as its writer last found.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    /// Why the store is down, and since when (epoch ms).
    reason: Mutex<Option<(Fault, String, i64)>>,
    /// When a commit last succeeded (epoch ms).
    last_commit_ms: AtomicI64,
}

/// A snapshot of [`Health`] for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthState {
    Up,
    Down {
        fault: Fault,
        detail: String,
        since_ms: i64,
    },
}

impl Health {
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    pub fn state(&self) -> HealthState {
        match self.reason.lock().ok().and_then(|r| r.clone()) {
            Some((fault, detail, since_ms)) if !self.is_up() => HealthState::Down {
                fault,
                detail,
                since_ms,
            },
            _ => HealthState::Up,
        }
    }

    /// Epoch ms of the last successful commit (0: none yet).
    pub fn last_commit_ms(&self) -> i64 {
        self.last_commit_ms.load(Ordering::Relaxed)
    }

    /// A commit succeeded: up again (logged once, with how long it was down).
    pub fn commit_succeeded(&self, now_ms: i64) {
        self.last_commit_ms.store(now_ms, Ordering::Relaxed);
        if !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let was = self.reason.lock().ok().and_then(|mut r| r.take());
        metrics::gauge!("herald_store_up").set(1.0);
        if let Some((fault, _, since)) = was {
            tracing::warn!(
                fault = fault.as_str(),
                down_for_ms = now_ms - since,
                "store: recovered, commits succeed again"
            );
        }
    }

    /// A commit failed with a storage fault: down (logged once per outage, and again only
    /// when the kind of fault changes).
    pub fn fault(&self, fault: Fault, detail: &str, now_ms: i64) {
        let mut reason = match self.reason.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let changed = match reason.as_ref() {
            Some((f, _, _)) => *f != fault,
            None => true,
        };
        if changed {
            tracing::error!(fault = fault.as_str(), error = %detail, "store: cannot commit; retrying with backoff until it can");
        }
        let since = match reason.as_ref() {
            Some((_, _, s)) => *s,
            None => now_ms,
        };
        *reason = Some((fault, detail.to_string(), since));
        self.down.store(true, Ordering::Release);
        metrics::gauge!("herald_store_up").set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_unavailable_and_other_errors_are_bugs() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(classify(&io), Some(Fault::Unavailable));
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut),
            Some(Fault::Unavailable)
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), None);
        assert!(Fault::Io.breaks_connection());
        assert!(!Fault::Full.breaks_connection());
    }

    #[tokio::test]
    async fn sqlite_result_codes_are_sorted_by_their_primary_code() {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let e = sqlx::query("SELECT * FROM no_such_table")
            .execute(&mut c)
            .await
            .unwrap_err();
        assert_eq!(classify(&e), None, "a bad statement is a bug, not a fault");
    }

    #[test]
    fn health_goes_down_on_a_fault_and_up_on_the_next_commit() {
        let h = Health::default();
        assert!(h.is_up());
        h.fault(Fault::Full, "database or disk is full", 1_000);
        h.fault(Fault::Full, "database or disk is full", 2_000);
        match h.state() {
            HealthState::Down {
                fault, since_ms, ..
            } => {
                assert_eq!(fault, Fault::Full);
                assert_eq!(since_ms, 1_000, "the outage dates from its first fault");
            }
            HealthState::Up => panic!("down after a fault"),
        }
        h.commit_succeeded(3_000);
        assert_eq!(h.state(), HealthState::Up);
        assert_eq!(h.last_commit_ms(), 3_000);
    }
}
