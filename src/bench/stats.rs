//! The benchmark's JSON file: one record per episode and a summary, plus the statistics.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// The summary and interval live in the protocol crate: the studio sends them to the browser.
pub use vela_runtime::protocol::{wilson, BenchSummary as Summary};

/// One finished episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// Position in the run; the seed is `seed + index`.
    pub index: u64,
    pub seed: u64,
    pub variant: String,
    pub instruction: String,
    /// Colours of the small and the big cube (absent in files from before they were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colours: Option<[String; 2]>,
    /// Steps counted from the policy's first action.
    pub steps: u32,
    pub success: bool,
    /// Frame out → action in, as the simulator saw it; `None` for built-in motions.
    pub policy_ms_mean: Option<f64>,
    pub policy_ms_p95: Option<f64>,
    pub wall_s: f64,
    /// Where the gripper and both cubes ended. Two runs of one seed that took the same
    /// trajectory agree here to the last bit, which is how runs without frames (on dora)
    /// are compared with in-process ones; absent in files from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_positions: Option<FinalPositions>,
    /// The furthest stage of the task reached (`vela_sim::Stage`: start, reached, grasped,
    /// lifted, aligned, stacked); absent in files from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Whether the gripper held the cube that should have stayed put at some step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grasped_other: Option<bool>,
}

/// Episodes by the furthest stage they reached, in task order, and how many grasped the cube
/// that should have stayed put; `None` when no episode recorded a stage.
pub fn stage_counts(episodes: &[EpisodeRecord]) -> Option<(Vec<(&'static str, u64)>, u64)> {
    if episodes.iter().all(|e| e.stage.is_none()) {
        return None;
    }
    let counts = vela_sim::Stage::ALL
        .iter()
        .map(|s| (s.name(), episodes.iter().filter(|e| e.stage.as_deref() == Some(s.name())).count() as u64))
        .collect();
    Some((counts, episodes.iter().filter(|e| e.grasped_other == Some(true)).count() as u64))
}

/// One line for people: "furthest stage: start 3 · reached 10 · … · stacked 32; 4 grasped the other cube".
pub fn stage_line(episodes: &[EpisodeRecord]) -> Option<String> {
    let (counts, other) = stage_counts(episodes)?;
    let parts: Vec<String> = counts.iter().map(|(name, n)| format!("{name} {n}")).collect();
    Some(format!("furthest stage: {}; {other} grasped the other cube", parts.join(" · ")))
}

/// End-of-episode positions, metres in the world frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalPositions {
    pub eef: [f64; 3],
    pub cube_a: [f64; 3],
    pub cube_b: [f64; 3],
}

/// What was run, so a resumed run can refuse a different configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub preset: String,
    pub variant: String,
    pub episodes: u64,
    pub max_steps: u32,
    pub seed: u64,
    pub parallel: usize,
    /// The policy: a model folder, or the node that answers the simulator.
    pub model: String,
    pub quantization: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchStats {
    pub benchmark: String,
    pub config: RunConfig,
    pub summary: Summary,
    pub episodes: Vec<EpisodeRecord>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl BenchStats {
    pub fn new(config: RunConfig, episodes: Vec<EpisodeRecord>, wall_s: f64, machine: String) -> Self {
        let mut episodes = episodes;
        episodes.sort_by_key(|e| e.index);
        let n = episodes.len() as u64;
        let k = episodes.iter().filter(|e| e.success).count() as u64;
        let (lo, hi) = wilson(k, n, 1.96);
        let steps: f64 = episodes.iter().map(|e| e.steps as f64).sum();
        let summary = Summary {
            episodes: n,
            successes: k,
            success_pct: if n > 0 { 100.0 * k as f64 / n as f64 } else { 0.0 },
            wilson95_pct: [100.0 * lo, 100.0 * hi],
            mean_steps_success: mean(episodes.iter().filter(|e| e.success).map(|e| e.steps as f64)),
            mean_steps_all: mean(episodes.iter().map(|e| e.steps as f64)),
            policy_ms_mean: mean(episodes.iter().filter_map(|e| e.policy_ms_mean)),
            fps: if wall_s > 0.0 { steps / wall_s } else { 0.0 },
            wall_s,
            model: config.model.clone(),
            quantization: config.quantization.clone(),
            machine,
            complete: n >= config.episodes,
        };
        BenchStats { benchmark: "success".into(), config, summary, episodes }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a `vela bench` stats file", path.display()))
    }

    /// Writes through a temporary file, so an interrupted write never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 84/100: the reference's INT4 figure; interval from the closed form.
        let (lo, hi) = wilson(84, 100, 1.96);
        assert!((lo - 0.7557).abs() < 1e-3 && (hi - 0.8992).abs() < 1e-3, "{lo} {hi}");
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
        let (lo, hi) = wilson(10, 10, 1.96);
        assert!(hi == 1.0 && (lo - 0.7225).abs() < 1e-3, "{lo}");
    }
}
