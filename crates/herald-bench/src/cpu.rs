//! CPU time from `/proc`: of one process (`utime + stime`) and of the whole machine, so a
//! throughput figure can be shown beside who was busy while it was measured.

use std::collections::HashMap;
use std::time::Instant;

/// The unit of `/proc` CPU times (`USER_HZ`), 100 on every Linux architecture.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces), so
/// field `n` of proc(5) is at index `n - 3`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// User plus system CPU time of a process so far, in ticks.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent of a process.
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The command name of a process (`/proc/<pid>/comm`).
pub fn command(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// CPU ticks of a set of processes at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub ticks: HashMap<u32, u64>,
}

impl Sample {
    pub fn of(pids: impl IntoIterator<Item = u32>) -> Self {
        Sample {
            at: Instant::now(),
            ticks: pids
                .into_iter()
                .filter_map(|p| Some((p, process_ticks(p)?)))
                .collect(),
        }
    }

    /// The CPU the processes used since `earlier`, as a share of one core (1.0 = one core
    /// busy). A process that appeared since counts from zero; one that exited since is lost.
    pub fn cores_since(&self, earlier: &Sample) -> f64 {
        let ticks: u64 = self
            .ticks
            .iter()
            .map(|(pid, t)| t.saturating_sub(earlier.ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        let seconds = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        ticks as f64 / TICKS_PER_SECOND / seconds
    }
}

/// The whole machine's CPU ticks so far: (busy, total) over every core, from `/proc/stat`
/// (busy leaves out idle, I/O wait and time stolen by the hypervisor).
pub fn machine() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4] - v[7], total))
}

/// The share of the machine's CPU (every core) that was busy between two [`machine`]
/// readings.
pub fn busy_between(earlier: (u64, u64), later: (u64, u64)) -> f64 {
    let busy = later.0.saturating_sub(earlier.0) as f64;
    let total = later.1.saturating_sub(earlier.1) as f64;
    busy / total
}
