//! GGUF quantization of a tiny checkpoint, loading it back and comparing with the dense model.

use std::path::PathBuf;

use image::RgbImage;
use vela_vla::checkpoint::{make_checkpoint_with, MakeOptions, TokenizerSource};
use vela_vla::weights::GgufStore;
use vela_vla::{quantize, LoadOptions, OpenVla, OpenVlaConfig, Preset, Quantization};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vela-vla-qtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quantized_models_load_and_track_the_dense_one() {
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    let dir = tmp("src");
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 11, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let img = RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 128]));
    let dense = OpenVla::load(&dir, &LoadOptions::default()).unwrap();
    let pd = dense.predict_action_stream(&img, "open the drawer", "normalized", |_| {}).unwrap();
    let feats_d = dense.encode_image(&img).unwrap();
    for mode in [Quantization::Q8F16, Quantization::Q4F16] {
        let out = tmp(&mode.to_string());
        let rep = quantize(&dir, mode, &out).unwrap();
        assert!(rep.out_file.exists());
        let store = GgufStore::open(&rep.out_file, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let types = store.tensor_types();
        // hidden 64 is not a multiple of 256, so q4f16 falls back to Q4_0 blocks of 32
        let want = if mode == Quantization::Q8F16 { "Q8_0" } else { "Q4_0" };
        assert_eq!(types["language_model.model.layers.0.self_attn.q_proj.weight"], want);
        assert_eq!(types["language_model.model.norm.weight"], "F32");
        assert_eq!(types["vision_backbone.featurizer.blocks.0.attn.qkv.weight"], "F16");
        let q = OpenVla::load(&out, &LoadOptions { quantization: Some(mode), ..Default::default() }).unwrap();
        let pq = q.predict_action_stream(&img, "open the drawer", "normalized", |_| {}).unwrap();
        assert_eq!(pq.tokens.len(), 7);
        // Vision is F16 in both modes: features stay within f16 rounding of the dense ones.
        let feats_q = q.encode_image(&img).unwrap();
        let rel = ((&feats_q - &feats_d).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
            / feats_d.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
        .sqrt();
        assert!(rel < 1e-2, "{mode}: vision relative error {rel}");
        let diff: f32 = pq.normalized.iter().zip(&pd.normalized).map(|(a, b)| (a - b).abs()).sum::<f32>() / 7.0;
        eprintln!("{mode}: mean |Δ normalized action| vs dense = {diff:.4}, tokens {:?} vs {:?}", pq.tokens, pd.tokens);
        assert!(matches!(Quantization::parse_opt("fp16"), Ok(None)));
        let _ = std::fs::remove_dir_all(out);
    }
    // Not quantized in place yet: a small checkpoint gets its file made at load time.
    assert!(OpenVla::load(&dir, &LoadOptions { quantization: Some(Quantization::Q4F16), ..Default::default() }).is_ok());
    assert!(dir.join(Quantization::Q4F16.file_name()).exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eval_loop_compares_quantized_with_dense_and_reports_progress() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use vela_vla::eval::{evaluate, EvalStats, EvalStep};
    let cfg = OpenVlaConfig::preset(Preset::TinySingle);
    let dir = tmp("eval");
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 3, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let out = dir.join("q8");
    quantize(&dir, Quantization::Q8F16, &out).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let dense = OpenVla::load_with_progress(&dir, &LoadOptions::default(), move |d, t| {
        assert!(d <= t);
        s2.store(d, Ordering::Relaxed);
    })
    .unwrap();
    let total = vela_vla::loader_expectations(&cfg).unwrap().len();
    assert_eq!(seen.load(Ordering::Relaxed), total, "progress reaches the total");
    let q8 = OpenVla::load(&out, &LoadOptions { quantization: Some(Quantization::Q8F16), ..Default::default() }).unwrap();
    let imgs: Vec<RgbImage> = (0..3).map(|k| RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x * k) as u8, y as u8, 7]))).collect();
    let gt = [0.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let steps = imgs.iter().map(|im| EvalStep { image: im, instruction: "stack the red cube", action: &gt });
    let stats_path = dir.join("stats.json");
    let mut lines = Vec::new();
    let stats = evaluate(&q8, Some(&dense), steps, "bridge_orig", |l| lines.push(l.to_string()), Some(&stats_path)).unwrap();
    assert_eq!(stats.error.len(), 3);
    assert_eq!(stats.quant_error.len(), 3);
    assert_eq!(lines.len(), 9);
    assert!(lines[0].starts_with("step 0  ["));
    assert!(lines[1].starts_with("gt   0  ["));
    assert!(lines[2].starts_with("eval 0  ["));
    let back: EvalStats = serde_json::from_str(&std::fs::read_to_string(&stats_path).unwrap()).unwrap();
    assert_eq!(back.error, stats.error);
    assert_eq!(back.quant_error, stats.quant_error);
    assert_eq!(back.mean.timesteps, 3);
    assert!(stats.mean.error.is_finite() && stats.mean.quant_error.unwrap().is_finite());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<OpenVla>();
}

/// A small checkpoint loads quantized without a separate `vela vla quantize`, and a retrained
/// one (same folder, new weights) is quantized again instead of running the stale file.
#[test]
fn small_checkpoints_are_quantized_at_load_time_and_kept_fresh() {
    let cfg = OpenVlaConfig::preset(Preset::Tiny);
    let dir = tmp("auto");
    let make = |seed| make_checkpoint_with(&cfg, &dir, &MakeOptions { seed, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    make(1);
    let opts = LoadOptions { quantization: Some(Quantization::Q8F16), ..Default::default() };
    let gguf = dir.join(Quantization::Q8F16.file_name());
    let stamp = dir.join(format!("{}.source", Quantization::Q8F16.file_name()));
    assert!(!gguf.exists());
    OpenVla::load(&dir, &opts).unwrap();
    assert!(gguf.exists() && stamp.exists());
    let first = std::fs::read(&gguf).unwrap();
    // Loading again reuses the file.
    OpenVla::load(&dir, &opts).unwrap();
    assert_eq!(std::fs::read(&gguf).unwrap(), first);
    make(2);
    OpenVla::load(&dir, &opts).unwrap();
    assert_ne!(std::fs::read(&gguf).unwrap(), first, "new weights, new quantized file");
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".quantize")));
}

/// INT4 keeps the output projection (here the tied embedding, whose last 256 rows score the
/// action bins) at Q6_K and the other Llama matrices at Q4_K; a file stamped by the older
/// quantizer, which made that matrix Q4_K, is made again at load time.
#[test]
fn int4_keeps_the_output_projection_at_q6k_and_remakes_older_files() {
    let cfg = OpenVlaConfig::preset(Preset::Small112);
    assert!(cfg.text_config.tie_word_embeddings && cfg.text_config.hidden_size % 256 == 0);
    let dir = tmp("q6k");
    make_checkpoint_with(&cfg, &dir, &MakeOptions { seed: 3, max_shard_bytes: None, tokenizer: TokenizerSource::None }).unwrap();
    let opts = LoadOptions { quantization: Some(Quantization::Q4F16), ..Default::default() };
    OpenVla::load(&dir, &opts).unwrap();
    let gguf = dir.join(Quantization::Q4F16.file_name());
    let types = |p: &std::path::Path| GgufStore::open(p, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap().tensor_types();
    let t = types(&gguf);
    assert_eq!(t["language_model.model.embed_tokens.weight"], "Q6K");
    assert_eq!(t["language_model.model.layers.0.mlp.down_proj.weight"], "Q4K");
    // A stamp without the quantizer version is an older quantizer's file.
    let stamp = dir.join(format!("{}.source", Quantization::Q4F16.file_name()));
    let digest = std::fs::read_to_string(&stamp).unwrap();
    let old = digest.split(' ').next().unwrap().to_string();
    assert_ne!(old, digest);
    std::fs::write(&stamp, &old).unwrap();
    std::fs::write(&gguf, b"stale").unwrap();
    OpenVla::load(&dir, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(&stamp).unwrap(), digest);
    assert_eq!(types(&gguf)["language_model.model.embed_tokens.weight"], "Q6K");
    let _ = std::fs::remove_dir_all(dir);
}
