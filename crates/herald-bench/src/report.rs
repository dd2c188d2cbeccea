//! Figures: runs → median and range, a readable table and JSON.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub runs: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median as a share of the raw ceiling (throughput figures only); with
    /// `ceiling_runs`, the median of each run's share of its own run's ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of_ceiling: Option<f64>,
    /// The raw ceiling measured within each run, when the scenario measures its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_runs: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Figure {
    pub fn new(name: &str, unit: &str, mut runs: Vec<f64>, target: Option<&str>) -> Self {
        runs.retain(|v| v.is_finite());
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Figure {
            name: name.into(),
            unit: unit.into(),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            median: median(runs.clone()),
            runs,
            of_ceiling: None,
            ceiling_runs: None,
            target: target.map(str::to_string),
        }
    }

    /// A throughput figure whose runs each measured their own raw ceiling (`ceilings[i]`
    /// beside `runs[i]`): its share is the median of the runs' shares.
    pub fn against_own_ceiling(
        name: &str,
        unit: &str,
        runs: Vec<f64>,
        ceilings: &[f64],
        target: Option<&str>,
    ) -> Self {
        let shares: Vec<f64> = runs.iter().zip(ceilings).map(|(v, c)| v / c).collect();
        let mut f = Figure::new(name, unit, runs, target);
        f.of_ceiling = Some(median(shares)).filter(|m| m.is_finite());
        f.ceiling_runs = Some(ceilings.to_vec());
        f
    }
}

/// The median of the finite values (NaN when there are none).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: String,
    pub figures: Vec<Figure>,
    /// What a scenario could not measure here, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn print(r: &Results) {
    println!("herald-bench on {}", r.machine);
    println!(
        "{:<50} {:>10} {:>21} {:>9}  {:<11} target",
        "figure", "median", "range", "ceiling", "unit"
    );
    for f in &r.figures {
        let range = format!("{}–{}", fmt(f.min), fmt(f.max));
        let ceil = f
            .of_ceiling
            .map(|c| format!("{:.1}%", c * 100.0))
            .unwrap_or_else(|| "".into());
        println!(
            "{:<50} {:>10} {:>21} {:>9}  {:<11} {}",
            f.name,
            fmt(f.median),
            range,
            ceil,
            f.unit,
            f.target.as_deref().unwrap_or("")
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

pub fn write_json(r: &Results, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
