//! Success benchmarks on the wire: the studio's live benchmark panel and `vela bench`'s
//! stats files share these types, so the browser reads exactly what the report is made of.

use serde::{Deserialize, Serialize};

/// One finished episode, as the live chart draws it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchEpisode {
    pub seed: u64,
    pub success: bool,
    /// Steps counted from the policy's first action.
    pub steps: u32,
}

/// A benchmark started from the studio. Every progress message carries the whole run, so a
/// tab that joins late (or missed a message) draws the same chart as the others.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// The MimicGen node whose episodes are counted.
    pub node: String,
    pub preset: Option<String>,
    /// Episodes asked for; episode `i` uses seed `seed + i`.
    pub episodes: u64,
    pub seed: u64,
    /// The simulator's horizon: an episode fails after this many steps.
    pub max_steps: u32,
    pub results: Vec<BenchEpisode>,
    pub running: bool,
    pub elapsed_s: f64,
}

impl BenchRun {
    pub fn successes(&self) -> u64 {
        self.results.iter().filter(|e| e.success).count() as u64
    }
}

/// The summary of a stats file (`vela bench --save-stats`), also sent when a studio run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    pub episodes: u64,
    pub successes: u64,
    pub success_pct: f64,
    /// Wilson score 95% interval, in percent.
    pub wilson95_pct: [f64; 2],
    pub mean_steps_success: Option<f64>,
    pub mean_steps_all: Option<f64>,
    pub policy_ms_mean: Option<f64>,
    /// Simulator steps per second over the whole run (all environments together).
    pub fps: f64,
    /// Wall time of the run, summed over resumed sessions.
    pub wall_s: f64,
    pub model: String,
    pub quantization: Option<String>,
    pub machine: String,
    pub complete: bool,
}

/// Wilson score interval for `k` successes in `n` trials at z (1.96 for 95%), as fractions.
/// Unlike the normal approximation it stays inside [0, 1] and is honest for small `n`,
/// which is what a chart that starts at episode one needs.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}
