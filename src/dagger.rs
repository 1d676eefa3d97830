//! `vela dagger`: roll a trained policy out in the simulator and let the scripted expert label
//! every state it reaches (DAgger), written as robomimic HDF5 that `vela train` reads like
//! `vela datagen` output (the labels are the episodes' intended actions).
//!
//! Behaviour cloning from MimicGen demos plateaued for the shipped model: most failures are
//! states no demo visits (hovering beside a cube, a grasp slightly off). These files put the
//! policy's own mistakes into the training set, each with the action that recovers from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vela_data::robomimic::RobomimicWriter;
use vela_data::{DatasetMeta, EpisodeWriter};
use vela_sim::datagen::{seeds, DaggerConfig, DaggerEpisode, DaggerRollout};
use vela_sim::{action_from_model, Camera, Variant};
use vela_vla::batcher::Client;

#[derive(clap::Args)]
pub struct DaggerArgs {
    /// The policy: an OpenVLA-family checkpoint folder (as the presets' `model`). Without it,
    /// `--beta 1`: the expert drives every step, which records plain scripted-expert demos
    /// (noisy actions, clean labels) for training on one teacher.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// fp16 (the checkpoint's weights), q8f16 or q4f16.
    #[arg(long, default_value = "fp16")]
    quantization: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// norm_stats key to un-normalise the policy's actions with (default: the model's first).
    #[arg(long)]
    action_space: Option<String>,
    /// Stack variants to roll out in (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "Stack_D4")]
    tasks: Vec<String>,
    /// Episodes per task; all are kept, failures included (they are the point).
    #[arg(long, default_value_t = 100)]
    episodes: u64,
    /// Step limit of an episode (it also ends on success).
    #[arg(long, default_value_t = 200)]
    max_steps: u32,
    /// Per-step probability of executing the expert's (noisy) action instead of the policy's,
    /// so that rollouts also reach the later subtasks.
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// Std of the Gaussian noise on the expert's executed arm actions.
    #[arg(long, default_value_t = 0.05)]
    action_noise: f64,
    /// The scripted expert's position gain (error ÷ action scale × gain, clipped to ±1; default
    /// 2.5 saturates beyond 2 cm). Lower values give slower, less saturated labels.
    #[arg(long, default_value_t = 2.5)]
    expert_gain: f64,
    /// Folder for `<task>.hdf5` and `dagger_report.json` (created if missing).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    #[arg(long, default_value = "agentview")]
    camera: String,
    #[arg(long, default_value_t = 224)]
    camera_width: u32,
    #[arg(long, default_value_t = 224)]
    camera_height: u32,
    /// Scenes and expert steps derive from this seed and the episode index.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulators, each with its own thread; their frames are batched through one model.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// gzip level for camera frames.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=9))]
    gzip_level: u8,
    /// What the episodes' intended actions (the training labels) hold: `expert`, what the
    /// scripted expert would do in each state (DAgger), or `executed`, the policy's action where
    /// it drove and the expert's before its noise where the expert did (with `--keep successes`:
    /// filtered behaviour cloning on expert-assisted rollouts, whose labels stay mostly in the
    /// policy's own style).
    #[arg(long, default_value = "expert", value_parser = ["expert", "executed"])]
    labels: String,
    /// Which rollouts go into the file: `all` or only `successes`.
    #[arg(long, default_value = "all", value_parser = ["all", "successes"])]
    keep: String,
    /// Start no new rollout after this many minutes (per task); the finished ones are kept.
    /// For leased machines, where a fixed time matters more than a fixed count.
    #[arg(long, value_name = "MIN")]
    time_limit: Option<f64>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
}

/// What one task's rollouts did.
#[derive(serde::Serialize)]
struct TaskReport {
    task: String,
    episodes: u64,
    successes: u64,
    /// Episodes written (all, or the successes with `--keep successes`).
    kept: u64,
    labels: String,
    success_rate: f64,
    steps: u64,
    expert_steps: u64,
    wall_s: f64,
    steps_per_s: f64,
    workers: usize,
    seed: u64,
}

pub fn run(args: DaggerArgs) -> Result<()> {
    ensure!(args.episodes > 0, "--episodes must be at least 1");
    ensure!(args.workers > 0, "--workers must be at least 1");
    ensure!(args.time_limit.is_none_or(|m| m.is_finite() && m > 0.0), "--time-limit must be a positive number of minutes");
    match &args.model {
        Some(m) => ensure!(m.join("config.json").is_file(), "--model {}: no config.json there", m.display()),
        None => ensure!(args.beta == 1.0, "--model is needed unless --beta 1 (the expert drives every step)"),
    }
    let quantization = vela_vla::Quantization::parse_opt(&args.quantization).context("--quantization")?;
    // Fails now, with the build's own explanation, when CUDA is asked of a CPU build.
    vela_vla::device::check_device(&args.device).context("--device")?;
    let tasks: Vec<Variant> = args.tasks.iter().map(|t| t.parse().with_context(|| format!("--tasks {t}"))).collect::<Result<_>>()?;
    ensure!(!tasks.is_empty(), "--tasks is empty");
    let camera: Camera = args.camera.parse().with_context(|| format!("--camera {}", args.camera))?;
    let base = DaggerConfig {
        camera,
        width: args.camera_width,
        height: args.camera_height,
        max_steps: args.max_steps,
        beta: args.beta,
        action_noise: args.action_noise,
        expert_gain: args.expert_gain,
        ..Default::default()
    };
    base.validate().context("invalid flags")?;
    let outputs = crate::datagen::task_outputs(&tasks, &args.output, args.overwrite)?;

    let mut reports = Vec::new();
    for (&variant, path) in tasks.iter().zip(&outputs) {
        let cfg = DaggerConfig { variant, ..base.clone() };
        let r = run_task(&cfg, path, &args, quantization)?;
        println!(
            "{}: {} episodes, policy succeeded in {} ({:.1} %), {} kept, {} steps ({:.0} % by the expert), {:.1} s, {:.0} steps/s -> {}",
            r.task,
            r.episodes,
            r.successes,
            100.0 * r.success_rate,
            r.kept,
            r.steps,
            100.0 * r.expert_steps as f64 / r.steps.max(1) as f64,
            r.wall_s,
            r.steps_per_s,
            path.display()
        );
        reports.push(r);
    }
    let report_path = args.output.join("dagger_report.json");
    let doc = serde_json::json!({
        "benchmark": "dagger",
        "machine": vela_runtime::bench::machine_description(),
        "model": args.model.as_ref().map(|m| m.display().to_string()),
        "quantization": args.quantization,
        "device": args.device,
        "beta": args.beta,
        "max_steps": args.max_steps,
        "tasks": reports,
    });
    std::fs::write(&report_path, serde_json::to_string_pretty(&doc)? + "\n").with_context(|| format!("writing {}", report_path.display()))?;
    println!("wrote {}", report_path.display());
    Ok(())
}

/// `--labels executed`: the policy's own actions where it drove; where the expert drove, its
/// action before the noise (already the intended action there).
fn relabel_executed(ep: &mut DaggerEpisode) {
    let key = vela_data::INTENDED_ACTION_KEY;
    let expert = ep.episode.low_dim.remove(key).expect("rollouts record the expert's labels");
    let data = ep
        .episode
        .actions
        .iter()
        .zip(&ep.by_expert)
        .enumerate()
        .flat_map(|(t, (a, &by_expert))| -> Vec<f64> {
            if by_expert { expert.row(t).to_vec() } else { a.iter().map(|&x| x as f64).collect() }
        })
        .collect();
    ep.episode.low_dim.insert(key.to_string(), vela_data::LowDim { dim: 7, data });
}

fn run_task(cfg: &DaggerConfig, path: &std::path::Path, args: &DaggerArgs, quantization: Option<vela_vla::Quantization>) -> Result<TaskReport> {
    let mut env_args = cfg.env_args(&args.model.as_ref().map_or("none (scripted expert only)".to_string(), |m| m.display().to_string()));
    env_args["datagen"]["labels"] = serde_json::json!(if args.labels == "executed" { "executed: the policy's actions, the expert's before noise on its steps (obs/intended_action)" } else { "scripted expert, before noise (obs/intended_action)" });
    env_args["datagen"]["keep"] = serde_json::json!(args.keep);
    let meta = DatasetMeta { name: cfg.variant.name().to_string(), env_args };
    let mut writer: Box<dyn EpisodeWriter> = Box::new(RobomimicWriter::create(path, &meta)?.with_gzip_level(args.gzip_level));
    let bar = ProgressBar::new(args.episodes).with_prefix(cfg.variant.name());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} rollouts  {msg}  ETA {eta}").expect("valid template"),
    );
    let t0 = Instant::now();
    let deadline = args.time_limit.map(|m| t0 + Duration::from_secs_f64(m * 60.0));
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let workers = args.workers.min(args.episodes as usize);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, DaggerEpisode)>>(2 * workers);
    let (mut done, mut kept, mut successes, mut steps, mut expert_steps) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let outcome = std::thread::scope(|s| -> Result<()> {
        for w in 0..workers {
            let tx = tx.clone();
            let (next, stop, cfg) = (&next, &stop, cfg.clone());
            std::thread::Builder::new()
                .name(format!("dagger-{w}"))
                .spawn_scoped(s, move || {
                    let r = (|| -> Result<()> {
                        let mut rollout = DaggerRollout::new(cfg)?;
                        // No model: the expert drives every step (--beta 1) and the policy is never asked.
                        let client = match &args.model {
                            Some(model) => {
                                let (dir, dev, quant) = (model.clone(), args.device.clone(), args.quantization.clone());
                                let c = Client::join_on(model, quantization, &args.device, workers, Duration::from_millis(20), move || {
                                    vela_vla::cli::load_on(&dir, Some(&quant), &dev, |_, _| {})
                                })
                                .with_context(|| format!("loading {}", model.display()))?;
                                let space = match &args.action_space {
                                    Some(s) => s.clone(),
                                    None => c.model().action_spaces().into_iter().next().unwrap_or_else(|| "normalized".into()),
                                };
                                Some((c, space))
                            }
                            None => None,
                        };
                        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= args.episodes {
                                break;
                            }
                            let ep = rollout.run(seeds::derive(args.seed, seeds::SCENE, i), seeds::derive(args.seed, seeds::TRIAL, i), |img, instruction| {
                                let frame = image::RgbImage::from_raw(img.width, img.height, img.data.clone()).ok_or("frame size does not match its buffer")?;
                                let (client, space) = client.as_ref().ok_or("no policy (--model) to ask")?;
                                let p = client.predict(frame, instruction, space).map_err(|e| e.to_string())?;
                                // A chunked policy's first action is this step's (DAgger asks again every step).
                                let a: [f32; 7] = p.action.get(..7).and_then(|a| a.try_into().ok()).filter(|_| p.action.len() % 7 == 0).ok_or_else(|| format!("the policy gave {} action dims, not 7", p.action.len()))?;
                                Ok(action_from_model(&a, 1.0))
                            })?;
                            if tx.send(Ok((i, ep))).is_err() {
                                break;
                            }
                        }
                        Ok(())
                    })();
                    if let Err(e) = r {
                        let _ = tx.send(Err(e));
                    }
                })
                .context("starting a rollout thread")?;
        }
        drop(tx);
        // Written in episode order, whichever worker finishes first (the batch a frame lands in
        // can still flip a token through float rounding, as in `vela bench --parallel`).
        let mut pending = BTreeMap::new();
        let result = (|| -> Result<()> {
            for r in &rx {
                let (i, ep) = r?;
                pending.insert(i, ep);
                while let Some(mut ep) = pending.remove(&done) {
                    if ep.success || args.keep == "all" {
                        if args.labels == "executed" {
                            relabel_executed(&mut ep);
                        }
                        ep.episode.name = format!("demo_{kept}");
                        writer.append(&ep.episode).with_context(|| format!("writing rollout {done}"))?;
                        kept += 1;
                    }
                    done += 1;
                    successes += ep.success as u64;
                    steps += ep.steps as u64;
                    expert_steps += ep.expert_steps as u64;
                    bar.set_position(done);
                    bar.set_message(format!("policy succeeded {successes}/{done} ({:.0} %)", 100.0 * successes as f64 / done as f64));
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    });
    bar.finish_and_clear();
    outcome?;
    writer.finish()?;
    // Every index handed out was finished, so a deadline leaves a prefix of the episodes.
    ensure!(done == args.episodes || deadline.is_some_and(|d| Instant::now() >= d), "only {done} of {} rollouts finished", args.episodes);
    if done < args.episodes {
        tracing::warn!(task = %cfg.variant, done, asked = args.episodes, "--time-limit reached; kept the finished rollouts");
    }
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(TaskReport {
        task: cfg.variant.name().to_string(),
        episodes: done,
        successes,
        kept,
        labels: args.labels.clone(),
        success_rate: successes as f64 / done.max(1) as f64,
        steps,
        expert_steps,
        wall_s,
        steps_per_s: steps as f64 / wall_s.max(1e-9),
        workers,
        seed: args.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executed_labels_keep_the_policy_steps_and_the_experts_clean_actions() {
        let mut episode = vela_data::Episode::default();
        episode.actions = vec![[0.1; 7], [0.2; 7], [0.3; 7]];
        let expert: Vec<f64> = [[0.9f64; 7], [0.8; 7], [0.7; 7]].concat();
        episode.low_dim.insert(vela_data::INTENDED_ACTION_KEY.into(), vela_data::LowDim { dim: 7, data: expert });
        let mut ep = DaggerEpisode { episode, success: true, steps: 3, expert_steps: 1, by_expert: vec![false, true, false] };
        relabel_executed(&mut ep);
        let labels = &ep.episode.low_dim[vela_data::INTENDED_ACTION_KEY];
        assert_eq!(labels.row(0), [0.1f32 as f64; 7]);
        assert_eq!(labels.row(1), [0.8; 7], "where the expert drove: its action before the noise");
        assert_eq!(labels.row(2), [0.3f32 as f64; 7]);
    }
}
