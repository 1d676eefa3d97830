//! MimicGen-style data generation for the Stack task.
//!
//! A handful of scripted-expert source demos are split into object-centric
//! subtasks (grasp the cube to move; place it on the other one). Each trial
//! resets to a new random scene, picks a source segment per subtask among
//! those whose object pose is nearest, re-expresses its end-effector targets
//! in the new object frame, interpolates into it, and executes it through
//! the OSC_POSE controller with action noise. Only successful trials become
//! episodes. This is the algorithm of NVlabs' MimicGen (`DataGenerator`),
//! not a replay of the expert.
pub mod dagger;
pub mod generate;
pub mod pose;
pub mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vela_data::Episode;

pub use dagger::{expert_labels, DaggerConfig, DaggerEpisode, DaggerRollout};
pub use generate::{replay, GenConfig, Generator, Trial};
pub use pose::Transform;
pub use source::{record_source_demos, SourceDemo, SourceSet, SourceStep};

use crate::error::{Result, SimError};

/// Independent seed streams derived from the one `--seed`, so scenes,
/// per-trial randomness and source demos never share random numbers.
pub mod seeds {
    pub const SCENE: u64 = 1;
    pub const TRIAL: u64 = 2;
    pub const SOURCE: u64 = 3;

    /// SplitMix64 over (seed, stream, index): nearby inputs give unrelated seeds.
    pub fn derive(seed: u64, stream: u64, index: u64) -> u64 {
        let mut z = seed
            .wrapping_add(stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
            .wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Counts so far, passed to the progress callback after every trial.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub tried: u64,
    pub kept: u64,
}

/// What a generation run did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GenReport {
    pub task: String,
    pub episodes_requested: u64,
    pub kept: u64,
    pub tried: u64,
    pub success_rate: f64,
    pub source_demos: usize,
    pub source_rollouts: usize,
    pub steps: u64,
    pub workers: usize,
    pub seed: u64,
    pub wall_s: f64,
    pub episodes_per_min: f64,
}

/// Runs trials on `workers` threads (each with its own env) until `episodes`
/// have succeeded or `max_trials` were tried, handing successful episodes
/// to `sink` in trial order as `demo_0`, `demo_1`, ...
///
/// Trial `i` is fully determined by `(seed, i)` and results are consumed in
/// index order, so the dataset is the same for any number of workers; trials
/// that finish after the last needed success are discarded.
#[allow(clippy::too_many_arguments)]
pub fn generate<S, P>(
    cfg: &GenConfig,
    sources: Arc<SourceSet>,
    seed: u64,
    episodes: u64,
    max_trials: u64,
    workers: usize,
    mut sink: S,
    mut progress: P,
) -> Result<GenReport>
where
    S: FnMut(Episode) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>,
    P: FnMut(Progress),
{
    cfg.validate()?;
    if episodes == 0 || workers == 0 {
        return Err(SimError::InvalidParam {
            name: if episodes == 0 { "episodes" } else { "workers" },
            reason: "must be at least 1".into(),
        });
    }
    let t0 = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut p = Progress::default();
    let mut steps = 0u64;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Trial>>(2 * workers);
    let outcome = std::thread::scope(|s| -> Result<()> {
        for w in 0..workers {
            let tx = tx.clone();
            let (next, stop, sources) = (&next, &stop, Arc::clone(&sources));
            std::thread::Builder::new()
                .name(format!("datagen-{w}"))
                .spawn_scoped(s, move || {
                    let mut gen = match Generator::new(cfg.clone(), sources, seed) {
                        Ok(g) => g,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= max_trials {
                            break;
                        }
                        let r = gen.run(i);
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            break;
                        }
                    }
                })
                .map_err(|e| SimError::Io { path: "datagen worker thread".into(), source: e })?;
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let result = (|| {
            for r in &rx {
                let trial = r?;
                pending.insert(trial.index, trial);
                while let Some(mut t) = pending.remove(&p.tried) {
                    p.tried += 1;
                    if t.success {
                        t.episode.name = format!("demo_{}", p.kept);
                        steps += t.episode.len() as u64;
                        sink(t.episode).map_err(|e| SimError::Output(format!("episode demo_{}: {e}", p.kept)))?;
                        p.kept += 1;
                    }
                    progress(p);
                    if p.kept == episodes {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        // Unblocks workers waiting to send, so the scope can join them.
        drop(rx);
        result
    });
    outcome?;
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(GenReport {
        task: cfg.variant.name().to_string(),
        episodes_requested: episodes,
        kept: p.kept,
        tried: p.tried,
        success_rate: p.kept as f64 / p.tried.max(1) as f64,
        source_demos: sources.demos.len(),
        source_rollouts: sources.tried,
        steps,
        workers,
        seed,
        wall_s,
        episodes_per_min: 60.0 * p.kept as f64 / wall_s.max(1e-9),
    })
}
