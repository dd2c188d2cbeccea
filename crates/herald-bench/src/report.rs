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
    /// Median as a share of the raw ceiling (throughput figures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of_ceiling: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Figure {
    pub fn new(name: &str, unit: &str, mut runs: Vec<f64>, target: Option<&str>) -> Self {
        runs.retain(|v| v.is_finite());
        let mut sorted = runs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = if sorted.is_empty() {
            f64::NAN
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        Figure {
            name: name.into(),
            unit: unit.into(),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs,
            median,
            of_ceiling: None,
            target: target.map(str::to_string),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: String,
    pub figures: Vec<Figure>,
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
        "{:<44} {:>10} {:>21} {:>9}  {:<10} target",
        "figure", "median", "range", "ceiling", "unit"
    );
    for f in &r.figures {
        let range = format!("{}–{}", fmt(f.min), fmt(f.max));
        let ceil = f
            .of_ceiling
            .map(|c| format!("{:.1}%", c * 100.0))
            .unwrap_or_else(|| "".into());
        println!(
            "{:<44} {:>10} {:>21} {:>9}  {:<10} {}",
            f.name,
            fmt(f.median),
            range,
            ceil,
            f.unit,
            f.target.as_deref().unwrap_or("")
        );
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
