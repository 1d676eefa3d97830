//! `vela vla eval`'s library half on a tiny random checkpoint and a synthetic robomimic file.

use std::path::{Path, PathBuf};

use vela_data::EpisodeWriter as _;
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::eval::{evaluate_dataset, resolve_action_space, DatasetOptions, EvalProgress, EvalStats};
use vela_vla::{LoadOptions, OpenVla, OpenVlaConfig, Preset};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-vla-evaltest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny model and a 2 × 4-step robomimic file named `stack_synth` with an `agentview` camera.
fn setup(name: &str) -> (PathBuf, OpenVla, PathBuf) {
    let dir = tmp(name);
    let model_dir = dir.join("model");
    let cfg = OpenVlaConfig::preset(Preset::TinySingle);
    make_checkpoint_with(&cfg, &model_dir, &MakeOptions { seed: 5, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let model = OpenVla::load(&model_dir, &LoadOptions::default()).unwrap();
    let ds = dir.join("stack.hdf5");
    let meta = vela_data::DatasetMeta { name: "stack_synth".into(), env_args: serde_json::json!({}) };
    let mut w = Box::new(vela_data::robomimic::RobomimicWriter::create(&ds, &meta).unwrap());
    for i in 0..2 {
        w.append(&vela_data::synthetic::episode(i, 4, &["agentview"], 32)).unwrap();
    }
    w.finish().unwrap();
    (dir, model, ds)
}

#[derive(Default)]
struct Lines {
    total: Option<usize>,
    lines: Vec<String>,
    steps: usize,
}

impl EvalProgress for Lines {
    fn start(&mut self, total_steps: usize) {
        self.total = Some(total_steps);
    }
    fn step(&mut self, lines: &[String]) {
        self.steps += 1;
        self.lines.extend_from_slice(lines);
    }
}

fn run(model: &OpenVla, eval_model: Option<&OpenVla>, ds: &Path, opts: &DatasetOptions, save: Option<&Path>) -> vela_vla::Result<(EvalStats, Lines)> {
    let mut reader = vela_data::convert::open(ds, None).unwrap();
    let mut p = Lines::default();
    let s = evaluate_dataset(model, eval_model, reader.as_mut(), ds, opts, save, &mut p)?;
    Ok((s, p))
}

#[test]
fn eval_walks_episodes_and_saves_stats_per_step() {
    let (dir, model, ds) = setup("walk");
    let save = dir.join("stats.json");
    // 6 of the 8 steps: the cap crosses the episode boundary.
    let opts = DatasetOptions { max_steps: Some(6), ..Default::default() };
    let (stats, p) = run(&model, None, &ds, &opts, Some(&save)).unwrap();
    assert_eq!(p.total, Some(6));
    assert_eq!(p.steps, 6);
    assert_eq!(p.lines.len(), 12);
    assert!(p.lines[10].starts_with("step 5  [") && p.lines[10].contains("accuracy") && p.lines[10].contains("fps="), "{}", p.lines[10]);
    assert!(p.lines[11].starts_with("gt   5  ["));
    // Ground truth is in training's gripper convention: episode 1's step 0 is open (-1 → 1).
    assert!(p.lines[9].ends_with("+1.0000]"), "{}", p.lines[9]);
    assert_eq!(stats.error.len(), 6);
    assert!(stats.error.iter().all(|e| e.is_finite() && *e >= 0.0));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&save).unwrap()).unwrap();
    assert_eq!(j["latency"].as_array().unwrap().len(), 6);
    assert_eq!(j["error"].as_array().unwrap().len(), 6);
    assert!(j["quant_error"].as_array().unwrap().is_empty());
    assert_eq!(j["mean"]["timesteps"], 6);
    assert!(j["mean"]["fps"].as_f64().unwrap() > 0.0);
    assert!(j["mean"].get("quant_error").is_none());
    assert!(!dir.join("stats.json.tmp").exists(), "written through a rename");
    assert!(stats.summary().starts_with("timesteps 6  accuracy"));

    // --max-episodes 1 stops after the first episode's 4 steps.
    let (stats, p) = run(&model, None, &ds, &DatasetOptions { max_episodes: Some(1), ..Default::default() }, None).unwrap();
    assert_eq!((stats.error.len(), p.total), (4, Some(4)));

    // --normalized: predictions stay in [-1, 1] and so does the normalised ground truth.
    let (stats, p) = run(&model, None, &ds, &DatasetOptions { normalized: true, max_steps: Some(2), ..Default::default() }, None).unwrap();
    assert_eq!(stats.error.len(), 2);
    assert!(stats.error.iter().all(|e| (0.0..=1.0).contains(e)), "{:?}", stats.error);
    assert!(p.lines.iter().all(|l| !l.contains("nan")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_model_against_itself_has_zero_quantization_error() {
    let (dir, model, ds) = setup("self");
    let opts = DatasetOptions { max_steps: Some(3), action_space: Some("bridge_orig".into()), ..Default::default() };
    let (stats, p) = run(&model, Some(&model), &ds, &opts, None).unwrap();
    assert_eq!(stats.quant_error, vec![0.0; 3]);
    assert_eq!(stats.eval_error, stats.error);
    assert_eq!(stats.mean.quant_error, Some(0.0));
    assert_eq!(p.lines.len(), 9);
    assert!(p.lines[2].starts_with("eval 0  [") && p.lines[2].contains("q_err=0.0000"), "{}", p.lines[2]);
    assert!(stats.summary().contains("quant_error 0.0000"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_inputs_give_errors_naming_what_is_wrong() {
    let (dir, mut model, ds) = setup("errors");
    let err = |opts: DatasetOptions| run(&model, None, &ds, &opts, None).err().expect("fails").to_string();
    let e = err(DatasetOptions { action_space: Some("libero".into()), ..Default::default() });
    assert!(e.contains("`libero` not in norm_stats") && e.contains("bridge_orig"), "{e}");
    let e = err(DatasetOptions { camera: Some("wrist".into()), ..Default::default() });
    assert!(e.contains("stack.hdf5") && e.contains("episode demo_0") && e.contains("no camera `wrist` (has: agentview)"), "{e}");
    let e = err(DatasetOptions { max_episodes: Some(0), ..Default::default() });
    assert!(e.contains("no episodes"), "{e}");

    // With several statistics the dataset's name picks one; without a match the user must.
    let stats = model.config.norm_stats["bridge_orig"].clone();
    model.config.norm_stats.insert("other".into(), stats.clone());
    let e = resolve_action_space(&model, "stack_synth", None).unwrap_err().to_string();
    assert!(e.contains("--action-space") && e.contains("bridge_orig, other"), "{e}");
    model.config.norm_stats.insert("stack_synth".into(), stats);
    assert_eq!(resolve_action_space(&model, "stack_synth", None).unwrap(), "stack_synth");
    assert!(resolve_action_space(&model, "stack_synth", Some("normalized")).unwrap_err().to_string().contains("--normalized"));
    let _ = std::fs::remove_dir_all(dir);
}
