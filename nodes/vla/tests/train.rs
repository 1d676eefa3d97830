//! `vela train` on the tiny config with synthetic in-memory episodes whose action is a
//! function of the image: learning, LoRA merging, resume, and errors on bad input.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use vela_data::{DatasetMeta, Episode, Frame};
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::train::data::{Collator, DataOptions, MemoryReader, Sample};
use vela_vla::train::model::TrainModel;
use vela_vla::train::{self, Mode, ModelSource, ParamStore, Params, Source, TrainOptions};
use vela_vla::weights::MemStore;
use vela_vla::{LoadOptions, OpenVla, OpenVlaConfig, Preset};

/// Four scene "classes" (a coloured square in one corner), each with its own action.
const COLOURS: [[u8; 3]; 4] = [[220, 40, 40], [40, 200, 60], [50, 60, 220], [230, 220, 40]];
const ACTIONS: [[f32; 7]; 4] = [
    [0.5, -0.2, 0.1, 0.0, 0.05, -0.1, -1.0],
    [-0.4, 0.3, -0.2, 0.1, -0.05, 0.2, 1.0],
    [0.1, 0.5, 0.3, -0.1, 0.0, 0.0, -1.0],
    [-0.2, -0.5, -0.3, 0.05, 0.1, -0.2, 1.0],
];

fn frame(class: usize, size: u32) -> Frame {
    let mut rgb = vec![128u8; (size * size * 3) as usize];
    let half = size / 2;
    let (ox, oy) = ((class as u32 % 2) * half, (class as u32 / 2) * half);
    for y in oy..oy + half {
        for x in ox..ox + half {
            let i = ((y * size + x) * 3) as usize;
            rgb[i..i + 3].copy_from_slice(&COLOURS[class]);
        }
    }
    Frame { width: size, height: size, rgb }
}

fn dataset(episodes: usize, steps: usize) -> MemoryReader {
    let episodes = (0..episodes)
        .map(|e| {
            let classes: Vec<usize> = (0..steps).map(|t| (e * 7 + t * 3 + t / 2) % 4).collect();
            Episode {
                name: format!("demo_{e}"),
                actions: classes.iter().map(|&c| ACTIONS[c]).collect(),
                images: BTreeMap::from([("agentview".to_string(), classes.iter().map(|&c| frame(c, 32)).collect())]),
                instructions: vec!["stack the red block on the green block".into(); steps],
                ..Default::default()
            }
        })
        .collect();
    MemoryReader { meta: DatasetMeta { name: "synthetic_stack".into(), env_args: serde_json::Value::Null }, episodes }
}

fn tiny_model(dir: &Path) {
    let opts = MakeOptions { seed: 3, max_shard_bytes: None, tokenizer: TokenizerSource::None };
    make_checkpoint_with(&OpenVlaConfig::preset(Preset::Tiny), dir, &opts).unwrap();
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        epochs: 100,
        batch_size: 8,
        lr: 2e-3,
        val_split: 0.2,
        val_max_samples: 32,
        log_every: 10,
        save_every: 0,
        shuffle_episodes: 3,
        ..Default::default()
    }
}

fn mean<'a>(it: impl Iterator<Item = &'a train::Metrics>, f: fn(&train::Metrics) -> f32) -> f32 {
    let v: Vec<f32> = it.map(f).collect();
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn full_training_learns_the_action_and_exports_a_loadable_model() {
    let tmp = tempdir("learn");
    let base = tmp.join("base");
    tiny_model(&base);
    let out = tmp.join("out");
    let o = TrainOptions { max_steps: Some(30), ..opts(&out) };
    let s = train::train(Box::new(dataset(10, 12)), &ModelSource::Dir(base), Mode::Full, &o, &Device::Cpu).unwrap();
    assert_eq!(s.steps, 30);
    let first = mean(s.history[..3].iter(), |m| m.loss);
    let last = mean(s.history[25..].iter(), |m| m.loss);
    let acc = mean(s.history[25..].iter(), |m| m.accuracy);
    assert!(last < first * 0.1, "loss {first} -> {last}");
    assert!(acc > 0.9, "accuracy {acc}");
    assert!(!s.val_history.is_empty(), "validation ran each epoch");
    // The instructions name two colours, so validation also measures how much swapping them
    // moves the first action token's logits.
    let v = s.val_history.last().unwrap();
    let (t, i) = (v.text_sensitivity.expect("text sensitivity measured"), v.image_sensitivity.expect("image sensitivity measured"));
    assert!(t.is_finite() && t > 0.0, "text sensitivity {t}");
    // The frames differ by class, and the model has learned each class's action.
    assert!(i.is_finite() && i > 0.0, "image sensitivity {i}");

    // The export loads through the inference code and knows the dataset's action space.
    for f in ["config.json", "training.json", "training.png", "model.safetensors.index.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let m = OpenVla::load(&out, &LoadOptions::default()).unwrap();
    assert!(m.action_spaces().contains(&"synthetic_stack".to_string()));
    let f = frame(1, 32);
    let img = image::RgbImage::from_raw(32, 32, f.rgb).unwrap();
    let a = m.predict_action(&img, "stack the red block on the green block", "synthetic_stack").unwrap();
    let want = ACTIONS[1];
    for d in 0..6 {
        assert!((a[d] - want[d]).abs() < 0.05, "dim {d}: {a:?} vs {want:?}");
    }
    assert!(a[6] < 0.1, "gripper closed (1 → 0 after remapping): {a:?}");
}

#[test]
fn chunked_training_predicts_several_actions_and_the_first_is_this_steps() {
    let tmp = tempdir("chunk");
    let base = tmp.join("base");
    tiny_model(&base);
    let out = tmp.join("out");
    let o = TrainOptions { max_steps: Some(30), action_chunk: Some(3), ..opts(&out) };
    let s = train::train(Box::new(dataset(10, 12)), &ModelSource::Dir(base.clone()), Mode::Full, &o, &Device::Cpu).unwrap();
    // Accuracy is the first action's: the frame shows its class, so it is learnable; the
    // later two depend on steps the frame does not show and only the loss counts them.
    let acc = mean(s.history[25..].iter(), |m| m.accuracy);
    assert!(acc > 0.9, "first-action accuracy {acc}");
    let cfg = OpenVlaConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!(cfg.vela_action_chunk, Some(3));
    let m = OpenVla::load(&out, &LoadOptions::default()).unwrap();
    assert_eq!(m.action_chunk(), 3);
    let f = frame(2, 32);
    let img = image::RgbImage::from_raw(32, 32, f.rgb).unwrap();
    let instr = "stack the red block on the green block";
    let p = m.predict_action_stream(&img, instr, "synthetic_stack", |_| {}).unwrap();
    assert_eq!((p.action.len(), p.tokens.len()), (21, 21), "three whole actions, un-normalised each");
    let a = m.predict_action(&img, instr, "synthetic_stack").unwrap();
    assert_eq!(&a[..], &p.action[..7], "predict_action gives the current action");
    for d in 0..6 {
        assert!((a[d] - ACTIONS[2][d]).abs() < 0.05, "dim {d}: {a:?} vs {:?}", ACTIONS[2]);
    }
    // A receding horizon of two decodes two actions, the same as the whole chunk's first two,
    // on the single and the batched path.
    m.set_decoded_actions(2);
    let two = m.predict_action_stream(&img, instr, "synthetic_stack", |_| {}).unwrap();
    assert_eq!((two.action.len(), two.tokens.len()), (14, 14));
    assert_eq!(&two.tokens[..], &p.tokens[..14]);
    let batch = m.predict_actions_batch(&[(&img, instr), (&img, instr)], "synthetic_stack").unwrap();
    assert_eq!(&batch[1].tokens[..], &p.tokens[..14]);
    assert_eq!(m.predict_action(&img, instr, "synthetic_stack").unwrap(), a);
    m.set_decoded_actions(0);
    assert_eq!(m.predict_action_stream(&img, instr, "synthetic_stack", |_| {}).unwrap().tokens, p.tokens);
    // Pointing answers are a single action long.
    let o = TrainOptions { max_steps: Some(1), action_chunk: Some(2), pointing: 0.5, ..opts(&tmp.join("bad")) };
    let e = train::train(Box::new(dataset(3, 4)), &ModelSource::Dir(base), Mode::Full, &o, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("--action-chunk"), "{e}");
}

#[test]
fn lora_merge_equals_unmerged() {
    let tmp = tempdir("merge");
    let base = tmp.join("base");
    tiny_model(&base);
    let mode = Mode::Lora { rank: 4, alpha: 8.0, dropout: 0.0 };
    let p = Params::new(Source::Checkpoint(&base), mode, 1, &Device::Cpu).unwrap();
    let cfg = p.config.clone();
    let lora = TrainModel::new(&cfg, Arc::new(ParamStore(p.clone()))).unwrap();
    // Training starts with B = 0; give every adapter a non-zero B so the merge matters.
    let vars = p.vars();
    assert!(vars.iter().any(|(n, _)| n.contains("lm_head.lora_A")), "all-linear includes lm_head");
    assert!(vars.iter().any(|(n, _)| n.contains("attn.qkv.lora_B")), "and the vision towers");
    assert!(vars.iter().all(|(n, _)| n.contains(".lora_")), "only adapters train");
    for (n, v) in &vars {
        if n.ends_with("lora_B.weight") {
            v.set(&(Tensor::randn(0f32, 0.05, v.dims(), &Device::Cpu).unwrap())).unwrap();
        }
    }
    let merged: HashMap<String, Tensor> = p.plan().iter().map(|t| (t.name.clone(), p.merged(&t.name).unwrap())).collect();
    let plain = TrainModel::new(&cfg, Arc::new(MemStore::new(merged))).unwrap();

    let towers = cfg.vision_towers().unwrap();
    let mut acc = vela_data::stats::Accumulator::new(7);
    for a in &ACTIONS {
        acc.push(&vela_data::stats::training_action(a));
    }
    let stats: vela_vla::config::DatasetStats = serde_json::from_value(serde_json::json!({"action": acc.finish(None)})).unwrap();
    let actions = vela_vla::action::ActionTokenizer::new(32000, 256);
    let mut col = Collator::new(Box::new(vela_vla::tokenizer::ByteTokenizer), actions, stats.action, towers, 32000, Device::Cpu);
    let samples: Vec<Sample> = (0..3)
        .map(|c| Sample::new(image::RgbImage::from_raw(28, 28, frame(c, 28).rgb).unwrap(), format!("task {c}"), ACTIONS[c]))
        .collect();
    let b = col.batch(&samples).unwrap();
    // Training normalises the raw bytes on the device; it must give inference's pixel values.
    let want = Tensor::cat(&samples.iter().map(|s| vela_vla::preprocess::pixel_values(&s.image, &col.towers, candle_core::DType::F32, &Device::Cpu).unwrap()).collect::<Vec<_>>(), 0).unwrap();
    let px_diff = (&b.pixels - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(b.pixels.dims(), want.dims());
    assert!(px_diff < 1e-5, "collated pixels differ from inference's by {px_diff}");
    let x = lora.forward(&b.pixels, &b.ids, &b.gather).unwrap();
    let y = plain.forward(&b.pixels, &b.ids, &b.gather).unwrap();
    let diff = (x - &y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = y.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4 * scale.max(1.0), "merged vs unmerged differ by {diff} (scale {scale})");
}

#[test]
fn resume_reproduces_the_uninterrupted_loss_curve() {
    let tmp = tempdir("resume");
    let base = tmp.join("base");
    tiny_model(&base);
    let mode = Mode::Lora { rank: 8, alpha: 8.0, dropout: 0.0 };
    let run = |out: &Path, max: u64, resume: bool| {
        let o = TrainOptions { max_steps: Some(max), resume, image_aug: true, batch_size: 5, ..opts(out) };
        train::train(Box::new(dataset(6, 7)), &ModelSource::Dir(base.clone()), mode.clone(), &o, &Device::Cpu).unwrap()
    };
    // 5 training episodes of 7 steps in chunks of 3 episodes (21 + 14 samples), batches of 5:
    // 7 steps an epoch, and step 12 stops 4 samples into the second chunk of epoch 1, so the
    // resumed loader starts mid-epoch in a later chunk and must draw the same crops there.
    let whole = run(&tmp.join("whole"), 16, false);
    let part = tmp.join("part");
    let first = run(&part, 12, false);
    assert_eq!(first.steps, 12);
    let resumed = run(&part, 16, true);
    assert_eq!(resumed.history.len(), 16);
    for (a, b) in whole.history.iter().zip(&resumed.history) {
        assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss.abs().max(1.0), "step {}: {} vs {}", a.step, a.loss, b.loss);
        assert_eq!(a.accuracy, b.accuracy, "step {}", a.step);
    }
    // Without --resume an existing run is not overwritten.
    let o = TrainOptions { max_steps: Some(16), ..opts(&part) };
    let e = train::train(Box::new(dataset(6, 7)), &ModelSource::Dir(base.clone()), mode, &o, &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("--resume"), "{e}");
    // A resume with different settings is refused.
    let o = TrainOptions { max_steps: Some(16), resume: true, image_aug: true, batch_size: 5, ..opts(&part) };
    let other = Mode::Lora { rank: 4, alpha: 8.0, dropout: 0.0 };
    let e = train::train(Box::new(dataset(6, 7)), &ModelSource::Dir(base), other, &o, &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("mismatch"), "{e}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempdir("bad");
    let base = tmp.join("base");
    tiny_model(&base);
    let mode = Mode::Lora { rank: 2, alpha: 2.0, dropout: 0.0 };
    let o = TrainOptions { max_steps: Some(2), val_split: 0.0, ..opts(&tmp.join("o1")) };

    // A frame whose byte count does not match its size.
    let mut ds = dataset(3, 4);
    ds.episodes[1].images.get_mut("agentview").unwrap()[2].rgb.truncate(10);
    let e = train::train(Box::new(ds), &ModelSource::Dir(base.clone()), mode.clone(), &o, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("demo_1") && e.contains("frame 2"), "{e}");

    // A missing camera.
    let o2 = TrainOptions { camera: Some("wrist".into()), out: tmp.join("o2"), ..o.clone() };
    let e = train::train(Box::new(dataset(3, 4)), &ModelSource::Dir(base.clone()), mode.clone(), &o2, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("wrist") && e.contains("agentview"), "{e}");

    // NaN actions.
    let mut ds = dataset(3, 4);
    ds.episodes[0].actions[1][2] = f32::NAN;
    let o3 = TrainOptions { out: tmp.join("o3"), ..o.clone() };
    let e = train::train(Box::new(ds), &ModelSource::Dir(base.clone()), mode.clone(), &o3, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("demo_0") && e.contains("not finite"), "{e}");

    // A learning-rate factor for tensors that do not exist.
    let o5 = TrainOptions { lr_scale: vec![("vision_tower".into(), 0.5)], out: tmp.join("o5"), ..o.clone() };
    let e = train::train(Box::new(dataset(3, 4)), &ModelSource::Dir(base.clone()), mode.clone(), &o5, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("--lr-scale vision_tower") && e.contains("vision_backbone"), "{e}");

    // A checkpoint whose config.json does not describe its weights.
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    cfg["text_config"]["hidden_size"] = 96.into();
    std::fs::write(base.join("config.json"), cfg.to_string()).unwrap();
    let o4 = TrainOptions { out: tmp.join("o4"), ..o };
    let e = train::train(Box::new(dataset(3, 4)), &ModelSource::Dir(base), mode, &o4, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("does not match") && e.contains("expected shape"), "{e}");
}

#[test]
fn cuda_on_a_cpu_build_is_a_clear_error() {
    if candle_core::utils::cuda_is_available() {
        return;
    }
    let e = train::parse_device("cuda").unwrap_err().to_string();
    assert!(e.contains("--features cuda"), "{e}");
    assert!(train::parse_device("tpu").is_err());
}

#[test]
fn augmentation_keeps_size_and_changes_pixels_deterministically() {
    let img = image::RgbImage::from_raw(32, 32, frame(2, 32).rgb).unwrap();
    let a = vela_vla::train::data::augment(&img, &mut vela_vla::rng::SplitMix64::new(5));
    let b = vela_vla::train::data::augment(&img, &mut vela_vla::rng::SplitMix64::new(5));
    assert_eq!(a.dimensions(), img.dimensions());
    assert_eq!(a, b);
    assert_ne!(a, img);
    // Crops only: inside the coloured square the colour survives exactly.
    let c = vela_vla::train::data::augment_with(&img, &mut vela_vla::rng::SplitMix64::new(5), false);
    assert_eq!(c.get_pixel(8, 24).0, COLOURS[2]);
    assert_ne!(a.get_pixel(8, 24).0, COLOURS[2], "the full augmentation jitters colours");
    let _ = DataOptions { camera: None, instruction: None, image_size: 28, pointing: false, action_chunk: 1 };
}

/// A scratch folder that is removed when the test ends (each holds a few tiny checkpoints and
/// datasets, tens of MB; left behind, CI machines filled their disks).
struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("vela-train-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

#[test]
fn a_time_budget_fixes_the_step_count_and_epochs_are_exported() {
    let tmp = tempdir("budget");
    let base = tmp.join("base");
    tiny_model(&base);
    let out = tmp.join("out");
    // 10 episodes × 6 steps, 8 held for training: 48 samples → 6 steps per epoch.
    // A zero budget ends the run at the calibration step (20 + 40), whatever the machine's
    // pace; the cosine schedule then ends there too.
    let o = TrainOptions { time_budget_secs: Some(0.0), keep_epochs: true, ..opts(&out) };
    let s = train::train(Box::new(dataset(10, 6)), &ModelSource::Dir(base), Mode::Full, &o, &Device::Cpu).unwrap();
    assert_eq!(s.steps, 60);
    assert_eq!(s.epochs_completed, 10);
    for e in 1..=10 {
        let dir = out.join(format!("epochs/epoch-{e:02}"));
        assert!(dir.join("config.json").exists(), "{}", dir.display());
    }
    assert!(!out.join("epochs/epoch-11").exists());
    OpenVla::load(&out.join("epochs/epoch-10"), &LoadOptions::default()).unwrap();
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["budget_steps"], 60);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_model_trained_with_augmentation_is_evaluated_on_the_centre_crop() {
    let tmp = tempdir("aug-crop");
    let base = tmp.join("base");
    tiny_model(&base);
    let out = tmp.join("out");
    let o = TrainOptions { max_steps: Some(2), image_aug: true, ..opts(&out) };
    train::train(Box::new(dataset(4, 4)), &ModelSource::Dir(base.clone()), Mode::Full, &o, &Device::Cpu).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert!((cfg["vela_center_crop"].as_f64().unwrap() - 0.9).abs() < 1e-6, "{}", cfg["vela_center_crop"]);
    let base_cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    assert!(base_cfg.get("vela_center_crop").is_none(), "models trained without augmentation see the whole frame");

    // The loaded model feeds the centre crop to its towers.
    let m = OpenVla::load(&out, &LoadOptions::default()).unwrap();
    let img = image::RgbImage::from_raw(32, 32, frame(3, 32).rgb).unwrap();
    let want = vela_vla::preprocess::pixel_values(&vela_vla::preprocess::center_crop(&img, 0.9), &m.config.vision_towers().unwrap(), candle_core::DType::F32, &Device::Cpu).unwrap();
    let got = m.pixel_values(&img).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-6, "{diff}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn bf16_mixed_precision_learns_and_keeps_f32_weights() {
    let tmp = tempdir("bf16");
    let base = tmp.join("base");
    tiny_model(&base);
    let out = tmp.join("out");
    let o = TrainOptions { max_steps: Some(30), bf16: true, ..opts(&out) };
    let s = train::train(Box::new(dataset(10, 12)), &ModelSource::Dir(base.clone()), Mode::Full, &o, &Device::Cpu).unwrap();
    let first = mean(s.history[..3].iter(), |m| m.loss);
    let last = mean(s.history[25..].iter(), |m| m.loss);
    assert!(last < first * 0.2, "loss {first} -> {last}");
    assert!(mean(s.history[25..].iter(), |m| m.accuracy) > 0.8);
    OpenVla::load(&out, &LoadOptions::default()).unwrap();

    let lora = Mode::Lora { rank: 4, alpha: 8.0, dropout: 0.0 };
    let e = train::train(Box::new(dataset(4, 4)), &ModelSource::Dir(base), lora, &TrainOptions { bf16: true, ..opts(&tmp.join("lora")) }, &Device::Cpu)
        .err()
        .expect("LoRA with bf16 is refused");
    assert!(e.to_string().contains("--full"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn reinit_restarts_only_the_named_tensors() {
    let tmp = tempdir("reinit");
    let base = tmp.join("base");
    tiny_model(&base);
    let fresh = Params::new(Source::Checkpoint(&base), Mode::Full, 1, &Device::Cpu).unwrap();
    let p = Params::new(Source::Checkpoint(&base), Mode::Full, 1, &Device::Cpu).unwrap();
    // Start from weights unlike a fresh init with seed 9 (the checkpoint was made with seed 3).
    let n = p.reinit(&["language_model".into()], 9).unwrap();
    let llm = p.plan().iter().filter(|t| t.name.starts_with("language_model")).count();
    assert!(n > 0 && n <= llm, "{n} of {llm}");
    let cfg = p.config.clone();
    let same = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() == 0.0;
    for spec in p.plan() {
        let now = p.merged(&spec.name).unwrap();
        if spec.name.starts_with("language_model") {
            let want = Tensor::from_vec(vela_vla::checkpoint::init_tensor(&cfg, spec, 9), spec.shape.as_slice(), &Device::Cpu).unwrap();
            assert!(same(&now, &want), "{} restarted", spec.name);
        } else {
            assert!(same(&now, &fresh.merged(&spec.name).unwrap()), "{} kept", spec.name);
        }
    }
    let e = p.reinit(&["no_such_tower".into()], 9).unwrap_err().to_string();
    assert!(e.contains("no_such_tower") && e.contains("vision_backbone"), "{e}");
    let lora = Params::new(Source::Checkpoint(&base), Mode::Lora { rank: 2, alpha: 4.0, dropout: 0.0 }, 1, &Device::Cpu).unwrap();
    assert!(lora.reinit(&["projector".into()], 9).unwrap_err().to_string().contains("--full"));
}
