//! Training throughput (samples/s) of `vela train`'s loop for a model size, on synthetic
//! frames (random pixels, random actions: the numbers measure speed, not learning).
//!
//! `cargo run --release -p vela-vla --example train_bench -- --config tiny|small
//!  [--mode lora|full] [--batch-size 8] [--steps 20] [--device cpu] [--out FILE.json]`

use std::collections::BTreeMap;

use vela_data::{DatasetMeta, Episode, Frame};
use vela_vla::rng::SplitMix64;
use vela_vla::train::data::MemoryReader;
use vela_vla::train::{self, Mode, ModelSource, TrainOptions};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let config = arg(&args, "--config", "tiny");
    let mode_s = arg(&args, "--mode", "full");
    let batch: usize = arg(&args, "--batch-size", "8").parse()?;
    let steps: u64 = arg(&args, "--steps", "20").parse()?;
    let device = train::parse_device(&arg(&args, "--device", "cpu"))?;
    let out_json = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let size = vela_vla::OpenVlaConfig::preset(config.parse()?).vision_towers()?[0].image_size as u32;

    let mut rng = SplitMix64::new(1);
    let steps_per_ep = 50;
    let n_eps = ((steps + 2) as usize * batch).div_ceil(steps_per_ep) + 1;
    let episodes = (0..n_eps)
        .map(|e| Episode {
            name: format!("demo_{e}"),
            actions: (0..steps_per_ep).map(|_| std::array::from_fn(|d| if d == 6 { if rng.uniform() < 0.5 { -1.0 } else { 1.0 } } else { rng.uniform() - 0.5 })).collect(),
            images: BTreeMap::from([(
                "agentview".to_string(),
                (0..steps_per_ep).map(|_| Frame { width: size, height: size, rgb: (0..size * size * 3).map(|_| (rng.next_u64() & 0xff) as u8).collect() }).collect(),
            )]),
            instructions: vec!["stack the red block on the green block".into(); steps_per_ep],
            ..Default::default()
        })
        .collect();
    let reader = MemoryReader { meta: DatasetMeta { name: "bench".into(), env_args: serde_json::Value::Null }, episodes };
    let mode = if mode_s == "full" { Mode::Full } else { Mode::Lora { rank: 32, alpha: 16.0, dropout: 0.0 } };
    let out = std::env::temp_dir().join(format!("vela-train-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = TrainOptions { out: out.clone(), max_steps: Some(steps), batch_size: batch, val_split: 0.0, image_aug: true, log_every: 5, save_every: 0, progress: true, ..Default::default() };
    let s = train::train(Box::new(reader), &ModelSource::Config(config.clone()), mode, &opts, &device)?;
    // samples/s of the training loop (data loading, augmentation, forward, backward, AdamW),
    // not counting model set-up and the final export.
    let report = serde_json::json!({
        "bench": "train",
        "config": config,
        "mode": mode_s,
        "batch_size": batch,
        "steps": s.steps,
        "samples_per_sec": s.samples_per_sec,
        "train_secs": s.train_secs,
        "trainable_params": s.trainable_params,
        "total_params": s.total_params,
        "hardware": train::hardware(&device),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = out_json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
